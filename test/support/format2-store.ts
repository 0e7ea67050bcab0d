/*
 * Writes a metadata file the way thinvol did before 2026-11-30 (lmdb-js's prebuilt LMDB, data
 * format 2), for the conversion test: `PREBUILDS_ONLY=1 node format2-store.js FILE SEED [hold]`.
 * With `hold` it keeps the file open (as a running daemon does) until its stdin closes.
 */
import * as lmdb from 'lmdb';
import { LMDB_DATABASES, lmdbDbOptions, MAX_DBS } from '../../src/store/lmdb-schema';
import { format2Records } from './format2-records';

function main(file: string, seed: number, hold: boolean): void {
  const env = lmdb.open({ path: file, noSubdir: true, maxDbs: MAX_DBS, mapSize: 1024 ** 3 });
  const records = format2Records(seed);
  env.transactionSync(() => {
    for (const d of LMDB_DATABASES) {
      const db = env.openDB<unknown, lmdb.Key>(lmdbDbOptions(d));
      for (const [key, value] of records[d.name] ?? []) db.putSync(key as lmdb.Key, value);
    }
  });
  process.stdout.write(`written ${(lmdb as unknown as { version: { versionString: string } }).version.versionString}\n`);
  if (hold) {
    env.get('anything');
    process.stdin.resume();
    process.stdin.on('end', () => { void env.close().then(() => process.exit(0)); });
  } else {
    void env.close();
  }
}

main(process.argv[2] ?? '', Number(process.argv[3]), process.argv[4] === 'hold');
