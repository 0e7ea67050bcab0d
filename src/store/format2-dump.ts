/*
 * Run by convert-format2.ts with PREBUILDS_ONLY=1, so that lmdb-js loads its prebuilt LMDB
 * 0.9.90 (data format 2) instead of the upstream LMDB thinvol builds: reads every database of an
 * old metadata file, raw, and writes it to stdout in frames (format2-frames.ts). Exits 3 with a
 * one-line message when another process has the file open.
 */
import * as lmdb from 'lmdb';
import { writeSync } from 'node:fs';
import { LMDB_DATABASES, MAX_DBS } from './lmdb-schema';
import { endFrame, recordFrame } from './format2-frames';

const IN_USE = 3;

function otherUsers(list: string): number[] {
  const pids = [...list.matchAll(/^\s*(\d+)\s/gm)].map((m) => Number(m[1])).filter((pid) => pid !== process.pid);
  return [...new Set(pids)].filter((pid) => {
    try {
      process.kill(pid, 0);
      return true;
    } catch (err) {
      return (err as NodeJS.ErrnoException).code === 'EPERM';
    }
  });
}

function main(file: string): void {
  const env = lmdb.open({ path: file, noSubdir: true, readOnly: true, maxDbs: MAX_DBS });
  const users = otherUsers(env.readerList());
  if (users.length > 0) {
    process.stderr.write(`pool metadata ${file} is open in process ${users.join(', ')}: stop the pool's daemons and commands first\n`);
    process.exit(IN_USE);
  }
  let count = 0;
  for (const [index, d] of LMDB_DATABASES.entries()) {
    // undefined: a database this store never had (it predates the table).
    const db: lmdb.Database<Buffer, Buffer> | undefined = env.openDB<Buffer, Buffer>({ name: d.name, keyEncoding: 'binary', encoding: 'binary' });
    if (!db) continue;
    for (const { key, value } of db.getRange()) {
      writeSync(1, recordFrame(index, key, value));
      count++;
    }
  }
  writeSync(1, endFrame(count));
  void env.close();
}

main(process.argv[2] ?? '');
