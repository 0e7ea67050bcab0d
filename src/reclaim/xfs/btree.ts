import { BTREE_HDR_BYTES } from './agf';
import { xfsChecksumOk } from '../../util/crc32c';
import { type Parsed, accept, refuse } from '../parsed';
import type { XfsSuperblock } from './superblock';

export const XFS_ABTB_CRC_MAGIC = 0x41423342;
export const XFS_ABTC_CRC_MAGIC = 0x41423343;
export const NULL_AGBLOCK = 0xffffffff;
const BTREE_CRC_OFFSET = 0x34;

export interface FreeExtent {
  /** AG block where the extent starts. */
  start: number;
  blocks: number;
}

export interface AllocBtreeBlock {
  level: number;
  leftSib: number;
  rightSib: number;
  lsn: bigint;
  /** Leaf records (level 0), else empty. */
  records: FreeExtent[];
  /** Child pointers (AG blocks) of a node, else empty. */
  ptrs: number[];
}

export interface AllocBtreeBlockPlace {
  magic: number;
  agno: number;
  agbno: number;
  /** Disk address in 512-byte units that bb_blkno must name. */
  daddr: number;
  level: number;
  agLength: number;
  /** False for an image rebuilt from the log, whose stored CRC is stale until writeback. */
  checkCrc: boolean;
}

function btreeName(magic: number): string {
  return magic === XFS_ABTB_CRC_MAGIC ? 'bnobt' : 'cntbt';
}

/** Parses one v5 short-form free-space btree block (bnobt or cntbt) and checks it belongs where it was found. */
export function parseAllocBtreeBlock(buf: Buffer, sb: XfsSuperblock, place: AllocBtreeBlockPlace): Parsed<AllocBtreeBlock> {
  const where = `${btreeName(place.magic)} block ${place.agbno} of AG ${place.agno}`;
  const bs = sb.blockSize;
  if (buf.length < bs) return refuse(`${where}: short read`);
  const magic = buf.readUInt32BE(0);
  if (magic !== place.magic) return refuse(`${where}: bad magic 0x${magic.toString(16)}`);
  if (place.checkCrc && !xfsChecksumOk(buf, bs, BTREE_CRC_OFFSET)) return refuse(`${where}: CRC mismatch`);
  const level = buf.readUInt16BE(4);
  const numRecs = buf.readUInt16BE(6);
  if (level !== place.level) return refuse(`${where}: level ${level}, expected ${place.level}`);
  if (Number(buf.readBigUInt64BE(0x10)) !== place.daddr) return refuse(`${where}: bb_blkno names another block`);
  if (!buf.subarray(0x20, 0x30).equals(sb.metaUuid)) return refuse(`${where}: uuid differs from the superblock's`);
  if (buf.readUInt32BE(0x30) !== place.agno) return refuse(`${where}: owner ${buf.readUInt32BE(0x30)} is another AG`);
  const leftSib = buf.readUInt32BE(8);
  const rightSib = buf.readUInt32BE(12);
  for (const sib of [leftSib, rightSib]) {
    if (sib !== NULL_AGBLOCK && (sib === 0 || sib >= place.agLength)) return refuse(`${where}: sibling ${sib} outside the AG`);
  }
  const block: AllocBtreeBlock = { level, leftSib, rightSib, lsn: buf.readBigUInt64BE(0x18), records: [], ptrs: [] };
  if (level === 0) {
    const maxRecs = Math.floor((bs - BTREE_HDR_BYTES) / 8);
    if (numRecs > maxRecs) return refuse(`${where}: ${numRecs} records exceed the maximum ${maxRecs}`);
    for (let i = 0; i < numRecs; i++) {
      const start = buf.readUInt32BE(BTREE_HDR_BYTES + i * 8);
      const blocks = buf.readUInt32BE(BTREE_HDR_BYTES + i * 8 + 4);
      if (blocks === 0 || start === 0 || start + blocks > place.agLength) {
        return refuse(`${where}: record ${i} (${start}+${blocks}) outside the AG`);
      }
      block.records.push({ start, blocks });
    }
  } else {
    const maxRecs = Math.floor((bs - BTREE_HDR_BYTES) / 12);
    if (numRecs === 0 || numRecs > maxRecs) return refuse(`${where}: ${numRecs} pointers outside 1..${maxRecs}`);
    const ptrBase = BTREE_HDR_BYTES + maxRecs * 8;
    for (let i = 0; i < numRecs; i++) {
      const ptr = buf.readUInt32BE(ptrBase + i * 4);
      if (ptr === 0 || ptr >= place.agLength) return refuse(`${where}: pointer ${i} (${ptr}) outside the AG`);
      block.ptrs.push(ptr);
    }
  }
  return accept(block);
}
