import { existsSync } from 'node:fs';
import { dirname } from 'node:path';
import * as lmdb from 'lmdb';
import type { Database, RootDatabase } from 'lmdb';
import { FsError } from '../util/errors';
import { logger } from '../util/log';
import { lmdbFileFormat } from './lmdb-format';
import { LMDB_DATABASES, lmdbDbOptions, lmdbEnvOptions } from './lmdb-schema';
import type { MetaStore, Tables } from './meta-store';
import type { Key, RangeOptions, Table } from './table';

const debug = logger('store');

/** Thrown when the store shows an older state than one this process committed. */
export class MetadataRollback extends Error {}

class LmdbTable<K extends Key, V> implements Table<K, V> {
  constructor(private readonly db: Database<V, K>, private readonly store: LmdbStore) {}

  get(key: K): V | undefined {
    return this.db.get(key);
  }

  put(key: K, value: V): void {
    this.store.assertInTxn();
    this.db.putSync(key, value);
  }

  remove(key: K): void {
    this.store.assertInTxn();
    this.db.removeSync(key);
  }

  getRange(options: RangeOptions<K> = {}): Iterable<{ key: K; value: V }> {
    return this.db.getRange(options);
  }

  getKeys(options: RangeOptions<K> = {}): Iterable<K> {
    return this.db.getKeys(options);
  }
}

/**
 * Refuses to run on lmdb-js's bundled LMDB 0.9.90 (data format 2): several processes committing
 * to one environment corrupt its free-page list (the multi-process store test and
 * scripts/soak/store.ts hit assertions in mdb_freelist_save and MDB_NOTFOUND from mdb_page_alloc),
 * and it resets the lock file's last transaction id in every process that opens the
 * environment. `npm install` builds lmdb-js against its copy of upstream LMDB 0.9.29 instead
 * (package.json, build:lmdb); this catches an install that skipped that step.
 */
function assertUpstreamLmdb(): void {
  // lmdb-js exports the version of the LMDB it loaded; its types omit it.
  const lmdbVersion = (lmdb as unknown as { version: { major: number; minor: number; patch: number; versionString: string } }).version;
  if (lmdbVersion.major !== 0 || lmdbVersion.minor !== 9 || lmdbVersion.patch >= 90) {
    throw new FsError('ENOTSUP', `lmdb-js loaded ${lmdbVersion.versionString}, not the upstream LMDB 0.9 thinvol uses (its free-page list breaks when several processes commit); run: npm run build:lmdb`);
  }
}

/** An existing file in lmdb-js's data format 2 gets a one-line error that says how to convert it. */
function assertFormat1(file: string): void {
  if (existsSync(file) && lmdbFileFormat(file) === 2) {
    throw new FsError('EPROTO', `pool metadata ${file} is in the format thinvol used before 2026-11-30; convert it once (stop the pool's daemons first): thinvol --pool ${dirname(file)} pool convert-metadata`);
  }
}

/**
 * The pool's metadata in one LMDB environment, opened by every process that uses the pool.
 * LMDB itself serializes writers across processes (a robust mutex in the lock file, so a killed
 * writer's transaction is aborted) and gives each reader a snapshot.
 *
 * Every commit is synced (no noSync, no overlappingSync): LMDB writes the pages, fdatasyncs,
 * then writes the meta page synchronously, and only then makes the commit visible. So a commit
 * other processes can see is on disk, and after a power cut the store is the state of the last
 * commit that returned. Commits are few: the data path batches its map changes (see volume/), so
 * the sync cost is paid at fsync and at the periodic commit.
 *
 * Each transaction also checks that the store is not older than this process's own last
 * commit, so a rollback of any cause is seen the moment it happens, not weeks later.
 */
export class LmdbStore implements MetaStore {
  readonly meta: Tables['meta'];
  readonly backends: Tables['backends'];
  readonly volumes: Tables['volumes'];
  readonly names: Tables['names'];
  readonly map: Tables['map'];
  readonly free: Tables['free'];
  readonly pending: Tables['pending'];
  readonly claims: Tables['claims'];
  readonly daemons: Tables['daemons'];
  readonly changes: Tables['changes'];
  readonly leases: Tables['leases'];
  readonly layers: Tables['layers'];
  readonly snapshots: Tables['snapshots'];
  readonly #env: RootDatabase;
  readonly #commits: Database<number, string>;
  #depth = 0;
  #lastCommit = 0;
  #closed = false;

  /** `synced: false` is for tests only: fast commits widen the windows the multi-process test aims at. */
  constructor(readonly file: string, opts: { synced?: boolean } = {}) {
    assertUpstreamLmdb();
    assertFormat1(file);
    this.#env = lmdb.open(lmdbEnvOptions(file, opts.synced !== false));
    const dbs = new Map(LMDB_DATABASES.map((d) => [d.name, this.#env.openDB(lmdbDbOptions(d))]));
    // The casts name each table's key and value types; the schema list carries the encodings.
    const table = <K extends Key, V>(name: keyof Tables): LmdbTable<K, V> => new LmdbTable<K, V>(dbs.get(name) as unknown as Database<V, K>, this);
    this.#commits = dbs.get('commits') as unknown as Database<number, string>;
    this.meta = table('meta');
    this.backends = table('backends');
    this.volumes = table('volumes');
    this.names = table('names');
    this.map = table('map');
    this.free = table('free');
    this.pending = table('pending');
    this.claims = table('claims');
    this.daemons = table('daemons');
    this.changes = table('changes');
    this.leases = table('leases');
    this.layers = table('layers');
    this.snapshots = table('snapshots');
  }

  txn<T>(fn: () => T): T {
    if (this.#closed) throw new Error(`the metadata store ${this.file} is closed`);
    if (this.#depth > 0) return fn();
    this.#depth++;
    try {
      let count = 0;
      const result = this.#env.transactionSync(() => {
        const seen = this.#commits.get('count') ?? 0;
        if (seen < this.#lastCommit) {
          throw new MetadataRollback(`pool metadata ${this.file} went back from commit ${this.#lastCommit} (made by this process) to ${seen}: a committed transaction was lost; stop using the pool and run thinvol check`);
        }
        const r = fn();
        count = seen + 1;
        this.#commits.putSync('count', count);
        return r;
      });
      // Only a commit that succeeded is one this process made: LMDB can refuse the commit itself
      // (a full map, an I/O error), and counting it would make every later transaction fail as a rollback.
      this.#lastCommit = count;
      return result;
    } finally {
      this.#depth--;
    }
  }

  assertInTxn(): void {
    if (this.#depth === 0) throw new Error('metadata write outside a transaction');
  }

  freshView(): void {
    this.#env.resetReadTxn();
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#env.close();
    debug('closed %s', this.file);
  }
}
