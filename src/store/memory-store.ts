import { compareKeys } from './key-order';
import type { MetaStore, Tables } from './meta-store';
import type { Key, RangeOptions, Table } from './table';

/** One change a committed transaction made: the value after it (undefined = removed). */
export interface Change { table: keyof Tables; key: Key; value: unknown }

const copy = <T>(v: T): T => (Buffer.isBuffer(v) ? (Buffer.from(v) as T) : structuredClone(v));

class MemoryTable<K extends Key, V> implements Table<K, V> {
  /** Sorted by key. */
  readonly #rows: { key: K; value: V }[] = [];

  constructor(private readonly name: keyof Tables, private readonly store: MemoryStore) {}

  get(key: K): V | undefined {
    const i = this.#find(key);
    const row = this.#rows[i];
    return row && compareKeys(row.key, key) === 0 ? copy(row.value) : undefined;
  }

  put(key: K, value: V): void {
    this.#set(key, copy(value));
  }

  remove(key: K): void {
    this.#set(key, undefined);
  }

  getRange(options: RangeOptions<K> = {}): Iterable<{ key: K; value: V }> {
    return this.#select(options).map((r) => ({ key: copy(r.key), value: copy(r.value) }));
  }

  getKeys(options: RangeOptions<K> = {}): Iterable<K> {
    return this.#select(options).map((r) => copy(r.key));
  }

  /** Writes without logging: undo and replay. */
  apply(key: K, value: V | undefined): V | undefined {
    const i = this.#find(key);
    const row = this.#rows[i];
    const hit = row !== undefined && compareKeys(row.key, key) === 0;
    const before = hit ? row.value : undefined;
    if (value === undefined) {
      if (hit) this.#rows.splice(i, 1);
    } else if (hit) {
      row.value = value;
    } else {
      this.#rows.splice(i, 0, { key: copy(key), value });
    }
    return before;
  }

  #set(key: K, value: V | undefined): void {
    this.store.logWrite(this.name, key, this.apply(key, value), value);
  }

  /** Index of the first row with a key >= `key`. */
  #find(key: Key): number {
    let lo = 0;
    let hi = this.#rows.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (compareKeys(this.#rows[mid]!.key, key) < 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Materialized, so that callers may change the table while they walk the result. */
  #select({ start, end, reverse = false, limit = Infinity }: RangeOptions<K>): { key: K; value: V }[] {
    const out: { key: K; value: V }[] = [];
    if (!reverse) {
      for (let i = start === undefined ? 0 : this.#find(start); i < this.#rows.length && out.length < limit; i++) {
        const r = this.#rows[i]!;
        if (end !== undefined && compareKeys(r.key, end) >= 0) break;
        out.push(r);
      }
      return out;
    }
    let i = this.#rows.length - 1;
    if (start !== undefined) {
      i = this.#find(start);
      if (i >= this.#rows.length || compareKeys(this.#rows[i]!.key, start) > 0) i--;
    }
    for (; i >= 0 && out.length < limit; i--) {
      const r = this.#rows[i]!;
      if (end !== undefined && compareKeys(r.key, end) <= 0) break;
      out.push(r);
    }
    return out;
  }
}

/**
 * The reference implementation of the metadata store, in memory: for unit tests, and for the
 * power-cut model, which replays a prefix of its commit log to rebuild what a disk would hold.
 */
export class MemoryStore implements MetaStore {
  readonly meta: Tables['meta'] = this.#table('meta');
  readonly backends: Tables['backends'] = this.#table('backends');
  readonly volumes: Tables['volumes'] = this.#table('volumes');
  readonly names: Tables['names'] = this.#table('names');
  readonly map: Tables['map'] = this.#table('map');
  readonly free: Tables['free'] = this.#table('free');
  readonly pending: Tables['pending'] = this.#table('pending');
  readonly claims: Tables['claims'] = this.#table('claims');
  readonly daemons: Tables['daemons'] = this.#table('daemons');
  readonly changes: Tables['changes'] = this.#table('changes');
  readonly leases: Tables['leases'] = this.#table('leases');
  readonly layers: Tables['layers'] = this.#table('layers');
  readonly snapshots: Tables['snapshots'] = this.#table('snapshots');
  /** Every committed transaction's changes, in commit order. */
  readonly commits: Change[][] = [];
  /** Called after each commit (the recorder of the power-cut model listens here). */
  onCommit: ((changes: Change[]) => void) | undefined;
  #undo: { table: keyof Tables; key: Key; before: unknown }[] | undefined;
  #changes: Change[] = [];
  #closed = false;

  #table<K extends Key, V>(name: keyof Tables): MemoryTable<K, V> {
    return new MemoryTable<K, V>(name, this);
  }

  /** A store holding the state after the first `n` commits of `log`. */
  static replay(log: readonly Change[][], n = log.length): MemoryStore {
    const s = new MemoryStore();
    for (const commit of log.slice(0, n)) {
      for (const c of commit) s.#tableOf(c.table).apply(c.key, copy(c.value));
      s.commits.push(commit);
    }
    return s;
  }

  txn<T>(fn: () => T): T {
    if (this.#closed) throw new Error('the metadata store is closed');
    if (this.#undo) return fn();
    this.#undo = [];
    this.#changes = [];
    try {
      const result = fn();
      const changes = this.#changes;
      this.commits.push(changes);
      this.onCommit?.(changes);
      return result;
    } catch (err) {
      for (const u of this.#undo.reverse()) this.#tableOf(u.table).apply(u.key, u.before);
      throw err;
    } finally {
      this.#undo = undefined;
    }
  }

  logWrite(table: keyof Tables, key: Key, before: unknown, after: unknown): void {
    if (!this.#undo) throw new Error(`write to ${table} outside a transaction`);
    this.#undo.push({ table, key: copy(key), before });
    this.#changes.push({ table, key: copy(key), value: after === undefined ? undefined : copy(after) });
  }

  freshView(): void {}

  async close(): Promise<void> {
    this.#closed = true;
  }

  #tableOf(name: keyof Tables): MemoryTable<Key, unknown> {
    return this[name] as unknown as MemoryTable<Key, unknown>;
  }
}
