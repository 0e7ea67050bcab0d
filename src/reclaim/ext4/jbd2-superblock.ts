import { crc32cRaw } from './crc';
import { Parsed, accept, refuse } from '../parsed';

export const JBD2_MAGIC = 0xc03b3998;
export const JBD2_DESCRIPTOR_BLOCK = 1;
export const JBD2_COMMIT_BLOCK = 2;
export const JBD2_SUPERBLOCK_V1 = 3;
export const JBD2_SUPERBLOCK_V2 = 4;
export const JBD2_REVOKE_BLOCK = 5;

export const JBD2_COMPAT_CHECKSUM = 0x1;
export const JBD2_INCOMPAT_REVOKE = 0x01;
export const JBD2_INCOMPAT_64BIT = 0x02;
export const JBD2_INCOMPAT_ASYNC_COMMIT = 0x04;
export const JBD2_INCOMPAT_CSUM_V2 = 0x08;
export const JBD2_INCOMPAT_CSUM_V3 = 0x10;
export const JBD2_INCOMPAT_FAST_COMMIT = 0x20;
const KNOWN_INCOMPAT =
  JBD2_INCOMPAT_REVOKE | JBD2_INCOMPAT_64BIT | JBD2_INCOMPAT_ASYNC_COMMIT | JBD2_INCOMPAT_CSUM_V2 |
  JBD2_INCOMPAT_CSUM_V3 | JBD2_INCOMPAT_FAST_COMMIT;
const JBD2_CRC32C_CHKSUM = 4;
const JBD2_MIN_JOURNAL_BLOCKS = 1024;
const JBD2_DEFAULT_FAST_COMMIT_BLOCKS = 256;

export interface Jbd2Superblock {
  version: 1 | 2;
  blockSize: number;
  maxLen: number;
  first: number;
  /** End (exclusive) of the regular log; the fast-commit area, if any, lies past it. */
  last: number;
  sequence: number;
  /** Log block of the oldest live transaction; 0 when the journal is empty. */
  start: number;
  errno: number;
  featureCompat: number;
  featureIncompat: number;
  uuid: Buffer;
  /** Seed of descriptor, tag and commit checksums (v2/v3). */
  csumSeed: number;
  csumV1: boolean;
  csumV2: boolean;
  csumV3: boolean;
  is64: boolean;
  asyncCommit: boolean;
  fastCommitBlocks: number;
}

/**
 * Parses journal block 0. fsBlockSize and journalBlocks (the journal inode's size in blocks)
 * bound the geometry it may claim.
 */
export function parseJbd2Superblock(buf: Buffer, fsBlockSize: number, journalBlocks: number): Parsed<Jbd2Superblock> {
  if (buf.length < 1024) return refuse(`journal superblock is ${buf.length} bytes, need 1024`);
  const magic = buf.readUInt32BE(0);
  if (magic !== JBD2_MAGIC) return refuse(`journal superblock magic 0x${magic.toString(16)} is not 0xC03B3998`);
  const type = buf.readUInt32BE(4);
  if (type !== JBD2_SUPERBLOCK_V1 && type !== JBD2_SUPERBLOCK_V2) return refuse(`journal superblock block type ${type} is not 3 or 4`);
  const version = type === JBD2_SUPERBLOCK_V2 ? 2 : 1;
  const featureCompat = version === 2 ? buf.readUInt32BE(0x24) : 0;
  const featureIncompat = version === 2 ? buf.readUInt32BE(0x28) : 0;
  const featureRoCompat = version === 2 ? buf.readUInt32BE(0x2c) : 0;
  const unknown = featureIncompat & ~KNOWN_INCOMPAT;
  if (unknown) return refuse(`journal has unknown incompat features 0x${unknown.toString(16)}`);
  if (featureRoCompat) return refuse(`journal has unknown ro_compat features 0x${featureRoCompat.toString(16)}`);
  const csumV2 = (featureIncompat & JBD2_INCOMPAT_CSUM_V2) !== 0;
  const csumV3 = (featureIncompat & JBD2_INCOMPAT_CSUM_V3) !== 0;
  const csumV1 = (featureCompat & JBD2_COMPAT_CHECKSUM) !== 0;
  if (csumV2 && csumV3) return refuse('journal claims checksum v2 and v3 at once');
  if (csumV1 && (csumV2 || csumV3)) return refuse('journal claims checksum v1 and v2/v3 at once');
  if (csumV2 || csumV3) {
    const ctype = buf.readUInt8(0x50);
    if (ctype !== JBD2_CRC32C_CHKSUM) return refuse(`journal checksum type ${ctype} is not crc32c`);
    const stored = buf.readUInt32BE(0xfc);
    const copy = Buffer.from(buf.subarray(0, 1024));
    copy.writeUInt32BE(0, 0xfc);
    const computed = crc32cRaw(0xffffffff, copy);
    if (stored !== computed) return refuse(`journal superblock checksum mismatch (stored 0x${stored.toString(16)}, computed 0x${computed.toString(16)})`);
  }
  const blockSize = buf.readUInt32BE(0x0c);
  if (blockSize !== fsBlockSize) return refuse(`journal block size ${blockSize} differs from filesystem block size ${fsBlockSize}`);
  const maxLen = buf.readUInt32BE(0x10);
  if (maxLen > journalBlocks) return refuse(`journal s_maxlen ${maxLen} exceeds the journal inode's ${journalBlocks} blocks`);
  const fastCommit = (featureIncompat & JBD2_INCOMPAT_FAST_COMMIT) !== 0;
  const fastCommitBlocks = fastCommit ? buf.readUInt32BE(0x54) || JBD2_DEFAULT_FAST_COMMIT_BLOCKS : 0;
  if (maxLen < JBD2_MIN_JOURNAL_BLOCKS || maxLen - JBD2_MIN_JOURNAL_BLOCKS < fastCommitBlocks) {
    return refuse(`journal too short: s_maxlen ${maxLen} with ${fastCommitBlocks} fast-commit blocks`);
  }
  const last = maxLen - fastCommitBlocks;
  const first = buf.readUInt32BE(0x14);
  if (first === 0 || first >= last) return refuse(`journal s_first ${first} outside the log [1, ${last})`);
  const start = buf.readUInt32BE(0x1c);
  if (start !== 0 && (start < first || start >= last)) return refuse(`journal s_start ${start} outside the log [${first}, ${last})`);
  const uuid = Buffer.from(buf.subarray(0x30, 0x40));
  return accept({
    version,
    blockSize,
    maxLen,
    first,
    last,
    sequence: buf.readUInt32BE(0x18),
    start,
    errno: buf.readInt32BE(0x20),
    featureCompat,
    featureIncompat,
    uuid,
    csumSeed: crc32cRaw(0xffffffff, uuid),
    csumV1,
    csumV2,
    csumV3,
    is64: (featureIncompat & JBD2_INCOMPAT_64BIT) !== 0,
    asyncCommit: (featureIncompat & JBD2_INCOMPAT_ASYNC_COMMIT) !== 0,
    fastCommitBlocks,
  });
}
