import type { DatabaseOptions, RootDatabaseOptionsWithPath } from 'lmdb';
import type { Tables } from './meta-store';

/**
 * The named LMDB databases of a pool's metadata file and their encodings: the tables, plus
 * `commits` (the rollback tripwire's counter). Opening the store and converting an old store
 * both go by this list, so a table added here is one the conversion copies.
 */
export interface LmdbDatabase { name: keyof Tables | 'commits'; keyEncoding?: 'ordered-binary' | 'binary'; encoding?: 'binary' }

export const LMDB_DATABASES: readonly LmdbDatabase[] = [
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

/**
 * How thinvol opens a metadata environment (the store, and the conversion writing a new one).
 * Commits are synced unless `synced` is false (tests only); permissionsMode (lmdb-js passes it
 * to mdb_env_open; its types omit it) keeps the metadata private.
 */
export function lmdbEnvOptions(path: string, synced = true): RootDatabaseOptionsWithPath & { permissionsMode: number } {
  return { path, noSubdir: true, noSync: !synced, overlappingSync: false, maxDbs: MAX_DBS, mapSize: 64 * 1024 ** 3, permissionsMode: 0o600 };
}

/** openDB's options for one database, with its encodings. */
export function lmdbDbOptions(d: LmdbDatabase): DatabaseOptions & { name: string } {
  return { name: d.name, ...(d.keyEncoding ? { keyEncoding: d.keyEncoding } : {}), ...(d.encoding ? { encoding: d.encoding } : {}) };
}
