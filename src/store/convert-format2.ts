import { spawn } from 'node:child_process';
import { closeSync, existsSync, fsyncSync, linkSync, openSync, renameSync, rmSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import * as lmdb from 'lmdb';
import { FsError } from '../util/errors';
import { FrameReader } from './format2-frames';
import { lmdbFileFormat } from './lmdb-format';
import { LMDB_DATABASES, lmdbEnvOptions } from './lmdb-schema';

export interface ConvertResult { records: number; backup: string }

const DUMP = join(__dirname, 'format2-dump.js');
const BATCH = 10_000;

const sameFile = (a: string, b: string): boolean => {
  const x = statSync(a);
  const y = statSync(b);
  return x.dev === y.dev && x.ino === y.ino;
};

/**
 * Rewrites a metadata file in lmdb-js's data format 2 (thinvol before 2026-11-30) as upstream
 * LMDB's format 1, record for record. A child process reads the old file with lmdb-js's
 * prebuilt LMDB (format2-dump.ts); this process writes `<file>.converting`, then keeps the old
 * file as `<file>.format2` (a hard link) and renames the new one over `<file>`. Killed at any
 * point, the pool is either the old file or the new one, and running it again finishes the job.
 */
export async function convertFormat2(file: string): Promise<ConvertResult> {
  if (!existsSync(file)) throw new FsError('ENOENT', `no pool metadata at ${file}`);
  const format = lmdbFileFormat(file);
  if (format === 1) throw new FsError('EALREADY', `pool metadata ${file} is already in the current format`);
  if (format !== 2) throw new FsError('EINVAL', `${file} is not an LMDB file thinvol knows`);
  const backup = `${file}.format2`;
  if (existsSync(backup) && !sameFile(file, backup)) throw new FsError('EEXIST', `${backup} exists (an earlier conversion's copy?): move it away first`);
  const tmp = `${file}.converting`;
  for (const f of [tmp, `${tmp}-lock`]) rmSync(f, { force: true });

  const env = lmdb.open(lmdbEnvOptions(tmp));
  let records = 0;
  try {
    const dbs = LMDB_DATABASES.map((d) => env.openDB<Buffer, Buffer>({ name: d.name, keyEncoding: 'binary', encoding: 'binary' }));
    const child = spawn(process.execPath, [DUMP, file], { env: { ...process.env, PREBUILDS_ONLY: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });
    const reader = new FrameReader();
    let batch: { db: number; key: Buffer; value: Buffer }[] = [];
    let end: number | undefined;
    let err = '';
    const flush = (): void => {
      const b = batch;
      batch = [];
      env.transactionSync(() => {
        for (const r of b) {
          const db = dbs[r.db];
          if (!db) throw new FsError('EIO', `reading ${file}: a record names database ${r.db}, which thinvol does not have`);
          db.putSync(r.key, r.value);
        }
      });
      records += b.length;
    };
    child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    const exit = new Promise<number | null>((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (code) => resolve(code));
    });
    for await (const chunk of child.stdout as AsyncIterable<Buffer>) {
      for (const f of reader.push(chunk)) {
        if ('end' in f) end = f.end;
        else batch.push(f);
      }
      if (batch.length >= BATCH) flush();
    }
    const code = await exit;
    if (code === 3) throw new FsError('EBUSY', err.trim());
    if (code !== 0) throw new FsError('EIO', `reading ${file} in the old format failed: ${err.trim() || `exit ${String(code)}`}`);
    flush();
    if (end !== records || reader.pending > 0) throw new FsError('EIO', `reading ${file}: the dump ended early (${records} records, ${end ?? 'no'} announced)`);
  } catch (e) {
    await env.close();
    rmSync(tmp, { force: true });
    rmSync(`${tmp}-lock`, { force: true });
    throw e;
  }
  await env.close();

  if (!existsSync(backup)) linkSync(file, backup);
  // Before the rename: once the new file is in place, a process that opens it may create a new
  // lock file, which must not then be removed. The old one is in the old format; the open gate
  // of earlier versions is gone.
  for (const f of [`${tmp}-lock`, `${file}-lock`, `${file}-gate`, `${file}-gate-turnstile`]) rmSync(f, { force: true });
  renameSync(tmp, file);
  const dir = openSync(dirname(file), 'r');
  try {
    fsyncSync(dir);
  } finally {
    closeSync(dir);
  }
  return { records, backup };
}
