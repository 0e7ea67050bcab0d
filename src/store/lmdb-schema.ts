import type { Tables } from './meta-store';

/**
 * The named LMDB databases of a pool's metadata file and their encodings: the tables, plus
 * `commits` (the rollback tripwire's counter). Opening the store and converting an old store
 * both go by this list, so a table added here is one the conversion copies.
 */
export const LMDB_DATABASES: readonly { name: keyof Tables | 'commits'; keyEncoding?: 'ordered-binary' | 'binary'; encoding?: 'binary' }[] = [
  { name: 'meta' },
  { name: 'backends', keyEncoding: 'ordered-binary' },
  { name: 'volumes', keyEncoding: 'ordered-binary' },
  { name: 'names' },
  { name: 'map', keyEncoding: 'binary', encoding: 'binary' },
  { name: 'free', keyEncoding: 'ordered-binary' },
  { name: 'pending', keyEncoding: 'ordered-binary' },
  { name: 'claims', keyEncoding: 'ordered-binary' },
  { name: 'daemons' },
  { name: 'changes', keyEncoding: 'ordered-binary' },
  { name: 'leases' },
  { name: 'layers', keyEncoding: 'ordered-binary' },
  { name: 'snapshots', keyEncoding: 'ordered-binary' },
  { name: 'commits' },
];

/** Enough for every database above and a few more, so that an older build can open a newer file. */
export const MAX_DBS = 16;
