import type { Key } from './table';

const rank = (k: Key): number => (typeof k === 'number' ? 0 : typeof k === 'string' ? 1 : Buffer.isBuffer(k) ? 2 : 3);

/**
 * The order LMDB's key encodings give: numbers by value, strings by code point (our keys are
 * ASCII, where UTF-16 and UTF-8 order agree), byte strings bytewise, tuples element by element
 * with a shorter prefix first.
 */
export function compareKeys(a: Key, b: Key): number {
  const ra = rank(a);
  const rb = rank(b);
  if (ra !== rb) return ra - rb;
  if (typeof a === 'number') return a - (b as number);
  if (typeof a === 'string') return a < (b as string) ? -1 : a > (b as string) ? 1 : 0;
  if (Buffer.isBuffer(a)) return Buffer.compare(a, b as Buffer);
  const x = a as (number | string)[];
  const y = b as (number | string)[];
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const c = compareKeys(x[i]!, y[i]!);
    if (c !== 0) return c;
  }
  return x.length - y.length;
}
