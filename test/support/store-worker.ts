/*
 * A process that uses a pool's metadata store the way thinvol's processes do, for the
 * multi-process store test: `long` commits in a loop (a daemon), `short` opens, commits once
 * and closes (a CLI command), `reader` opens, reads and closes (thinvol df). Each commit it
 * makes is reported on stdout after it returns, so the parent can check that none is lost.
 */
import { LmdbStore } from '../../src/store/lmdb-store';

const [mode = '', file = '', name = '', seconds = '0'] = process.argv.slice(2);

function main(): void {
  // Unsynced commits are many times faster: the races this test looks for get many more chances.
  const store = new LmdbStore(file, { synced: process.env.THINVOL_STORE_SYNCED !== '0' });
  if (mode === 'long') {
    const until = Date.now() + Number(seconds) * 1000;
    let n = 0;
    let slowest = 0;
    while (Date.now() < until) {
      const t = Date.now();
      store.txn(() => {
        const key = `long:${name}`;
        const c = store.names.get(key) ?? 0;
        store.names.put(key, c + 1);
        store.names.put(`long:${name}:${c + 1}`, c + 1);
      });
      n++;
      slowest = Math.max(slowest, Date.now() - t);
      if (n % 50 === 0) process.stdout.write(`committed ${n}\n`);
    }
    process.stdout.write(`committed ${n}\nslowest ${slowest}\n`);
  } else if (mode === 'short') {
    store.txn(() => store.names.put(`short:${name}`, 1));
    process.stdout.write('committed 1\n');
  } else if (mode === 'reader') {
    let n = 0;
    for (const _ of store.names.getRange()) n++;
    process.stdout.write(`read ${n}\n`);
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
  void store.close().then(() => process.exit(0));
}

main();
