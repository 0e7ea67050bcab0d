import { open, type Database, type RootDatabase, type RootDatabaseOptionsWithPath } from 'lmdb';
import { logger } from '../util/log';
import type { MetaStore, Tables } from './meta-store';
import { OpenGate } from './open-gate';
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
 * The pool's metadata in one LMDB environment, opened by every process that uses the pool.
 *
 * Two settings carry the integrity rules:
 * - Every commit is synced (no noSync, no overlappingSync): LMDB writes the pages, fdatasyncs,
 *   then writes the meta page synchronously, and only then makes the commit visible. So a
 *   commit other processes can see is on disk, and after a power cut the store is the state
 *   of the last commit that returned. Commits are few: the data path batches its map changes
 *   (see volume/), so the sync cost is paid at fsync and at the periodic commit.
 * - lmdb-js's LMDB fork resets the shared "last committed transaction" in the lock file from
 *   the meta page it read while opening, in every process that opens the environment
 *   (upstream LMDB does that only for the first, exclusive opener). A commit by another
 *   process in between is then overwritten by the next one: lost, or worse. So opening and
 *   closing take an exclusive `flock` on `<file>-gate`, and every write transaction a shared
 *   one: no process commits while another opens or closes. A killed process's flock goes
 *   with it.
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
  readonly #gate: OpenGate;
  readonly #env: RootDatabase;
  readonly #commits: Database<number, string>;
  #depth = 0;
  #lastCommit = 0;
  #closed = false;

  /** `synced: false` is for tests only: fast commits widen the windows the multi-process test aims at. */
  constructor(readonly file: string, opts: { synced?: boolean } = {}) {
    this.#gate = new OpenGate(`${file}-gate`);
    try {
      const opened = this.#gate.exclusive(() => {
        // permissionsMode (lmdb-js passes it to mdb_env_open; its types omit it): the metadata is private.
        const options: RootDatabaseOptionsWithPath & { permissionsMode: number } = {
          path: file, noSubdir: true, noSync: opts.synced === false, overlappingSync: false, maxDbs: 16, mapSize: 64 * 1024 ** 3, permissionsMode: 0o600,
        };
        const env = open(options);
        const db = <K extends Key, V>(name: string, keyEncoding?: 'ordered-binary' | 'binary', encoding?: 'binary'): LmdbTable<K, V> =>
          new LmdbTable<K, V>(env.openDB<V, K>({ name, ...(keyEncoding ? { keyEncoding } : {}), ...(encoding ? { encoding } : {}) }), this);
        return {
          env,
          commits: env.openDB<number, string>({ name: 'commits' }),
          tables: {
            meta: db('meta'),
            backends: db('backends', 'ordered-binary'),
            volumes: db('volumes', 'ordered-binary'),
            names: db('names'),
            map: db('map', 'binary', 'binary'),
            free: db('free', 'ordered-binary'),
            pending: db('pending', 'ordered-binary'),
            claims: db('claims', 'ordered-binary'),
            daemons: db('daemons'),
            changes: db('changes', 'ordered-binary'),
            leases: db('leases'),
            layers: db('layers', 'ordered-binary'),
            snapshots: db('snapshots', 'ordered-binary'),
          } as Tables,
        };
      });
      this.#env = opened.env;
      this.#commits = opened.commits;
      ({ meta: this.meta, backends: this.backends, volumes: this.volumes, names: this.names, map: this.map, free: this.free,
        pending: this.pending, claims: this.claims, daemons: this.daemons, changes: this.changes, leases: this.leases, layers: this.layers, snapshots: this.snapshots } = opened.tables);
    } catch (err) {
      this.#gate.close();
      throw err;
    }
  }

  txn<T>(fn: () => T): T {
    if (this.#closed) throw new Error(`the metadata store ${this.file} is closed`);
    if (this.#depth > 0) return fn();
    return this.#gate.shared(() => {
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
        // Only a commit that succeeded is one this process made: LMDB can refuse the commit
        // itself (seen: MDB_BAD_TXN from lmdb-js's freelist code), and counting it then made
        // every later transaction of the process fail as a rollback.
        this.#lastCommit = count;
        return result;
      } finally {
        this.#depth--;
      }
    });
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
    await this.#gate.exclusiveAsync(() => this.#env.close());
    this.#gate.close();
    debug('closed %s', this.file);
  }
}
