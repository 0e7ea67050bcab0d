/** Keys the stores order: numbers, strings, byte strings, and tuples of them (compared element by element). */
export type Key = number | string | Buffer | (number | string)[];

/**
 * A key range as LMDB reads it: `start` inclusive, `end` exclusive; with `reverse` the walk goes
 * down from `start` (inclusive) to `end` (exclusive).
 */
export interface RangeOptions<K extends Key> { start?: K; end?: K; reverse?: boolean; limit?: number }

/** One named table of the metadata store. Writes only inside `MetaStore.txn`. */
export interface Table<K extends Key, V> {
  get(key: K): V | undefined;
  put(key: K, value: V): void;
  remove(key: K): void;
  getRange(options?: RangeOptions<K>): Iterable<{ key: K; value: V }>;
  getKeys(options?: RangeOptions<K>): Iterable<K>;
}
