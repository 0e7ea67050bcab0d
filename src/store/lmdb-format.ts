import { closeSync, openSync, readSync } from 'node:fs';

/**
 * Which LMDB data format a metadata file is in, from its first meta page. Format 1 is upstream
 * LMDB 0.9 (what thinvol uses); format 2 is lmdb-js's LMDB 0.9.90 fork, which thinvol used before
 * 2026-11-30: its page header is 8 bytes longer, so the meta record starts at 24, not 16.
 */
export type LmdbFormat = 1 | 2 | 'unknown';

const MAGIC = 0xbeefc0de;

export function lmdbFormat(head: Buffer): LmdbFormat {
  for (const [at, format] of [[16, 1], [24, 2]] as const) {
    if (head.length >= at + 8 && head.readUInt32LE(at) === MAGIC && (head.readUInt32LE(at + 4) & 0xffff) === format) return format;
  }
  return 'unknown';
}

/** Bytes `lmdbFormat` needs from the start of the file. */
export const LMDB_FORMAT_HEAD = 32;

/** The format of a metadata file on disk, from its first bytes. */
export function lmdbFileFormat(file: string): LmdbFormat {
  const head = Buffer.alloc(LMDB_FORMAT_HEAD);
  const fd = openSync(file, 'r');
  try {
    readSync(fd, head, 0, head.length, 0);
  } finally {
    closeSync(fd);
  }
  return lmdbFormat(head);
}
