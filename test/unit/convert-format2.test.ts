import { expect } from 'chai';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as lmdb from 'lmdb';
import { convertFormat2 } from '../../src/store/convert-format2';
import { LMDB_FORMAT_HEAD, lmdbFormat } from '../../src/store/lmdb-format';
import { LmdbStore } from '../../src/store/lmdb-store';
import type { Tables } from '../../src/store/meta-store';
import type { Key } from '../../src/store/table';
import { format2Records } from '../support/format2-records';

const WRITER = join(__dirname, '..', 'support', 'format2-store.js');
const THINVOL = join(__dirname, '..', '..', '..', 'bin', 'thinvol');
const head = (file: string): Buffer => readFileSync(file).subarray(0, LMDB_FORMAT_HEAD);
const digest = (file: string): string => createHash('sha256').update(readFileSync(file)).digest('hex');

function writeFormat2(file: string, seed: number): void {
  const r = spawnSync(process.execPath, [WRITER, file, String(seed)], { env: { ...process.env, PREBUILDS_ONLY: '1' }, encoding: 'utf8' });
  expect(r.status, r.stderr).to.equal(0);
  expect(r.stdout).to.match(/written LMDB 0\.9\.90/);
}

describe('pool metadata in the format thinvol used before 2026-11-30 (lmdb-js LMDB 0.9.90): refused in one line, converted record for record', () => {
  const seed = Number(process.env.THINVOL_SEED ?? Date.now() % 1e9);
  let dir: string;
  let file: string;
  before(() => {
    console.log(`      seed ${seed} (THINVOL_SEED=${seed} to replay)`);
    dir = mkdtempSync(join(tmpdir(), 'thinvol-format2-'));
    file = join(dir, 'pool.lmdb');
    writeFormat2(file, seed);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('a new store is upstream LMDB format 1; the old file reads as format 2; anything else is unknown', async () => {
    const fresh = join(dir, 'fresh.lmdb');
    await new LmdbStore(fresh).close();
    expect(lmdbFormat(head(fresh))).to.equal(1);
    expect(lmdbFormat(head(file))).to.equal(2);
    expect(lmdbFormat(Buffer.alloc(LMDB_FORMAT_HEAD, 0xde))).to.equal('unknown');
    expect(lmdbFormat(head(fresh).subarray(0, 20))).to.equal('unknown');
  });

  it("with lmdb-js's prebuilt LMDB loaded (an install that skipped build:lmdb) every command refuses in one line and touches nothing", () => {
    const before = digest(file);
    const r = spawnSync(THINVOL, ['--pool', dir, 'df'], { env: { ...process.env, PREBUILDS_ONLY: '1' }, encoding: 'utf8' });
    expect(r.status).to.equal(1);
    expect(r.stderr).to.match(/^thinvol: lmdb-js loaded LMDB 0\.9\.90[^\n]*, not the upstream LMDB 0\.9 thinvol uses \(its free-page list breaks when several processes commit\); run: npm run build:lmdb\n$/);
    expect(digest(file)).to.equal(before);
  });

  it('opening the old file fails with one line that names the conversion, and changes nothing', () => {
    const before = digest(file);
    expect(() => new LmdbStore(file)).to.throw(`in the format thinvol used before 2026-11-30; convert it once (stop the pool's daemons first): thinvol --pool ${dir} pool convert-metadata`);
    expect(digest(file)).to.equal(before);
  });

  it('conversion refuses while another process has the old file open, and changes nothing', async () => {
    const holder = spawn(process.execPath, [WRITER, file, String(seed), 'hold'], { env: { ...process.env, PREBUILDS_ONLY: '1' }, stdio: ['pipe', 'pipe', 'inherit'] });
    try {
      await new Promise<void>((resolve) => holder.stdout.on('data', (d: Buffer) => { if (d.toString().includes('written')) resolve(); }));
      const before = digest(file);
      let err: unknown;
      await convertFormat2(file).catch((e: unknown) => { err = e; });
      expect(err).to.include({ code: 'EBUSY' });
      expect((err as Error).message).to.equal(`pool metadata ${file} is open in process ${holder.pid}: stop the pool's daemons and commands first`);
      expect(digest(file)).to.equal(before);
      expect(existsSync(`${file}.converting`)).to.equal(false);
      expect(existsSync(`${file}.format2`)).to.equal(false);
    } finally {
      holder.stdin.end();
      await new Promise((resolve) => holder.on('close', resolve));
    }
  });

  it('thinvol pool convert-metadata copies every record of every table, keeps the old file, and the store opens and commits', async () => {
    const expected = format2Records(seed);
    const total = Object.values(expected).reduce((n, r) => n + r.length, 0);
    const r = spawnSync(THINVOL, ['--pool', dir, 'pool', 'convert-metadata'], { encoding: 'utf8' });
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stdout).to.equal(`converted the metadata of pool ${dir}: ${total} records\n  the old file is kept as ${file}.format2; remove it once the pool works\n`);
    expect(lmdbFormat(head(file))).to.equal(1);
    expect(lmdbFormat(head(`${file}.format2`))).to.equal(2);

    const store = new LmdbStore(file);
    try {
      for (const [name, records] of Object.entries(expected)) {
        if (name === 'commits') continue;
        const table = store[name as keyof Tables] as unknown as { get(k: Key): unknown; getKeys(): Iterable<Key> };
        expect([...table.getKeys()].length, name).to.equal(records.length);
        for (const [k, v] of records) expect(table.get(k as Key), `${name} ${JSON.stringify(k)}`).to.deep.equal(v);
      }
      store.txn(() => store.names.put('after-conversion', 1));
    } finally {
      await store.close();
    }
    const env = lmdb.open({ path: file, noSubdir: true, maxDbs: 16, readOnly: true });
    try {
      expect(env.openDB<number, string>({ name: 'commits' }).get('count')).to.equal(31_338);
    } finally {
      await env.close();
    }

    const again = spawnSync(THINVOL, ['--pool', dir, 'pool', 'convert-metadata'], { encoding: 'utf8' });
    expect(again.status).to.equal(1);
    expect(again.stderr).to.equal(`thinvol: pool metadata ${file} is already in the current format\n`);
  });
});
