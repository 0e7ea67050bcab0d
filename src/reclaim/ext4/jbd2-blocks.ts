import { be32Bytes, crc32BeRaw, crc32cRaw } from './crc';
import { JBD2_COMMIT_BLOCK, JBD2_MAGIC, Jbd2Superblock } from './jbd2-superblock';
import { Parsed, accept, refuse } from '../parsed';

export const TAG_FLAG_ESCAPE = 0x1;
export const TAG_FLAG_SAME_UUID = 0x2;
export const TAG_FLAG_LAST_TAG = 0x8;

/** Size of struct commit_header: the part of a commit block the kernel accepts on its own. */
const COMMIT_HEADER_BYTES = 60;
const JBD2_CRC32_CHKSUM = 1;
const JBD2_CRC32_CHKSUM_SIZE = 4;

export interface Jbd2Header { magic: number; blockType: number; sequence: number }

export interface Jbd2Tag {
  /** Filesystem block the logged copy belongs to. */
  block: number;
  flags: number;
  /** Stored data checksum: 32 bits (v3), 16 bits (v2), null without per-tag checksums. */
  checksum: number | null;
}

/** The 12-byte header of a journal metadata block, or null when the magic is absent. */
export function parseJbd2Header(block: Buffer): Jbd2Header | null {
  if (block.length < 12) return null;
  const magic = block.readUInt32BE(0);
  if (magic !== JBD2_MAGIC) return null;
  return { magic, blockType: block.readUInt32BE(4), sequence: block.readUInt32BE(8) };
}

/** The transaction id a journal block names if it is a commit block (its first 12 bytes suffice). */
export function commitRecordTid(head: Buffer): number | undefined {
  const h = parseJbd2Header(head);
  return h !== null && h.blockType === JBD2_COMMIT_BLOCK ? h.sequence : undefined;
}

function hasTail(jsb: Jbd2Superblock): boolean {
  return jsb.csumV2 || jsb.csumV3;
}

/** Bytes per tag (journal_tag_bytes), not counting the optional 16-byte UUID. */
export function tagBytes(jsb: Jbd2Superblock): number {
  if (jsb.csumV3) return 16;
  return 12 + (jsb.csumV2 ? 2 : 0) - (jsb.is64 ? 0 : 4);
}

/** Descriptor and revoke blocks end with a crc32c tail under csum v2/v3; true when absent or matching. */
export function blockTailOk(jsb: Jbd2Superblock, block: Buffer): boolean {
  if (!hasTail(jsb)) return true;
  if (block.length < 16) return false;
  const at = block.length - 4;
  const stored = block.readUInt32BE(at);
  const copy = Buffer.from(block);
  copy.writeUInt32BE(0, at);
  return crc32cRaw(jsb.csumSeed, copy) === stored;
}

/** The tags of a descriptor block, in order; each names the log block that follows it. */
export function parseDescriptorTags(jsb: Jbd2Superblock, block: Buffer): Jbd2Tag[] {
  const size = tagBytes(jsb);
  const limit = block.length - (hasTail(jsb) ? 4 : 0);
  const tags: Jbd2Tag[] = [];
  let p = 12;
  while (p + size <= limit) {
    const flags = block.readUInt16BE(p + 6);
    const lo = block.readUInt32BE(p);
    const hi = jsb.is64 ? block.readUInt32BE(p + 8) : 0;
    const checksum = jsb.csumV3 ? block.readUInt32BE(p + 12) : jsb.csumV2 ? block.readUInt16BE(p + 4) : null;
    tags.push({ block: hi * 2 ** 32 + lo, flags, checksum });
    p += size + (flags & TAG_FLAG_SAME_UUID ? 0 : 16);
    if (flags & TAG_FLAG_LAST_TAG) break;
  }
  return tags;
}

/** Whether the logged copy (as stored, still escaped) matches its tag's checksum; true without v2/v3. */
export function tagChecksumOk(jsb: Jbd2Superblock, tag: Jbd2Tag, sequence: number, data: Buffer): boolean {
  if (tag.checksum === null) return true;
  const crc = crc32cRaw(crc32cRaw(jsb.csumSeed, be32Bytes(sequence)), data);
  return jsb.csumV3 ? crc === tag.checksum : (crc & 0xffff) === tag.checksum;
}

/** The filesystem block as it is to be replayed: the escaped magic restored. */
export function unescapeLogged(tag: Jbd2Tag, data: Buffer): Buffer {
  const copy = Buffer.from(data);
  if (tag.flags & TAG_FLAG_ESCAPE) copy.writeUInt32BE(JBD2_MAGIC, 0);
  return copy;
}

/** Filesystem blocks a revoke block revokes. */
export function parseRevokeRecords(jsb: Jbd2Superblock, block: Buffer): Parsed<number[]> {
  if (block.length < 16) return refuse('revoke block shorter than its header');
  const count = block.readUInt32BE(12);
  const max = block.length - (hasTail(jsb) ? 4 : 0);
  if (count < 16 || count > max) return refuse(`revoke block r_count ${count} outside [16, ${max}]`);
  const recordBytes = jsb.is64 ? 8 : 4;
  const records: number[] = [];
  for (let p = 16; p + recordBytes <= count; p += recordBytes) {
    records.push(jsb.is64 ? block.readUInt32BE(p) * 2 ** 32 + block.readUInt32BE(p + 4) : block.readUInt32BE(p));
  }
  return accept(records);
}

/**
 * Checks a commit block. v2/v3: crc32c of the block (or, as recent kernels accept for a torn
 * commit block, of its 60-byte header followed by zeros). v1: the crc32_be of the
 * transaction's descriptor and data blocks, or the all-zero "no checksum" form.
 */
export function commitBlockOk(jsb: Jbd2Superblock, block: Buffer, v1Crc: number): boolean {
  if (block.length < COMMIT_HEADER_BYTES) return false;
  const stored = block.readUInt32BE(0x10);
  if (jsb.csumV2 || jsb.csumV3) {
    const copy = Buffer.from(block);
    copy.writeUInt32BE(0, 0x10);
    if (crc32cRaw(jsb.csumSeed, copy) === stored) return true;
    copy.fill(0, COMMIT_HEADER_BYTES);
    return crc32cRaw(jsb.csumSeed, copy) === stored;
  }
  if (jsb.csumV1) {
    const type = block.readUInt8(0x0c);
    const size = block.readUInt8(0x0d);
    if (type === JBD2_CRC32_CHKSUM && size === JBD2_CRC32_CHKSUM_SIZE && stored === v1Crc) return true;
    return type === 0 && size === 0 && stored === 0;
  }
  return true;
}

/** Folds one descriptor or data block into a v1 transaction checksum. */
export function v1ChecksumAdd(crc: number, block: Buffer): number {
  return crc32BeRaw(crc, block);
}
