import { xfsChecksumOk } from '../../util/crc32c';
import { type Parsed, accept, refuse } from '../parsed';
import { type XfsSuperblock, agLength } from './superblock';

export const XFS_AGF_MAGIC = 0x58414746;
export const XFS_AGFL_MAGIC = 0x5841464c;
const AGF_CRC_OFFSET = 0xd8;
const AGFL_CRC_OFFSET = 0x20;
const AGFL_HEADER_BYTES = 36;
/** Short-form btree header of a v5 filesystem. */
export const BTREE_HDR_BYTES = 56;

export interface Agf {
  agno: number;
  length: number;
  bnoRoot: number;
  cntRoot: number;
  bnoLevels: number;
  cntLevels: number;
  flFirst: number;
  flLast: number;
  flCount: number;
  freeBlocks: number;
  longest: number;
  lsn: bigint;
}

/** Entries an AGFL sector holds. */
export function agflSize(sb: XfsSuperblock): number {
  return Math.floor((sb.sectSize - AGFL_HEADER_BYTES) / 4);
}

/** Deepest free-space btree an AG of this size can hold (xfs_btree_compute_maxlevels with minimum fill). */
export function allocBtreeMaxLevels(sb: XfsSuperblock): number {
  const leafMin = Math.floor((sb.blockSize - BTREE_HDR_BYTES) / 8 / 2);
  const nodeMin = Math.floor((sb.blockSize - BTREE_HDR_BYTES) / 12 / 2);
  let n = Math.ceil(Math.ceil((sb.agBlocks + 1) / 2) / Math.max(1, leafMin));
  let levels = 1;
  while (n > 1 && levels < 32) {
    n = Math.ceil(n / Math.max(2, nodeMin));
    levels++;
  }
  return levels;
}

/**
 * Parses and validates the AGF sector of AG `agno`. `checkCrc` is false for an image rebuilt
 * from the log: logged copies carry the CRC of an older write, the kernel recomputes it on writeback.
 */
export function parseAgf(buf: Buffer, sb: XfsSuperblock, agno: number, checkCrc: boolean): Parsed<Agf> {
  const where = `AGF of AG ${agno}`;
  if (buf.length < sb.sectSize) return refuse(`${where}: short read`);
  if (buf.readUInt32BE(0) !== XFS_AGF_MAGIC) return refuse(`${where}: bad magic 0x${buf.readUInt32BE(0).toString(16)}`);
  if (checkCrc && !xfsChecksumOk(buf, sb.sectSize, AGF_CRC_OFFSET)) return refuse(`${where}: CRC mismatch`);
  if (buf.readUInt32BE(4) !== 1) return refuse(`${where}: unknown version ${buf.readUInt32BE(4)}`);
  if (buf.readUInt32BE(8) !== agno) return refuse(`${where}: sequence number ${buf.readUInt32BE(8)} names another AG`);
  if (!buf.subarray(0x40, 0x50).equals(sb.metaUuid)) return refuse(`${where}: uuid differs from the superblock's`);
  const agf: Agf = {
    agno,
    length: buf.readUInt32BE(0x0c),
    bnoRoot: buf.readUInt32BE(0x10),
    cntRoot: buf.readUInt32BE(0x14),
    bnoLevels: buf.readUInt32BE(0x1c),
    cntLevels: buf.readUInt32BE(0x20),
    flFirst: buf.readUInt32BE(0x28),
    flLast: buf.readUInt32BE(0x2c),
    flCount: buf.readUInt32BE(0x30),
    freeBlocks: buf.readUInt32BE(0x34),
    longest: buf.readUInt32BE(0x38),
    lsn: buf.readBigUInt64BE(0xd0),
  };
  if (agf.length !== agLength(sb, agno)) return refuse(`${where}: length ${agf.length} differs from the geometry's ${agLength(sb, agno)}`);
  for (const root of [agf.bnoRoot, agf.cntRoot]) {
    if (root === 0 || root >= agf.length) return refuse(`${where}: btree root ${root} outside the AG`);
  }
  const maxLevels = allocBtreeMaxLevels(sb);
  for (const levels of [agf.bnoLevels, agf.cntLevels]) {
    if (levels < 1 || levels > maxLevels) return refuse(`${where}: btree height ${levels} outside 1..${maxLevels}`);
  }
  const size = agflSize(sb);
  if (agf.flFirst >= size || agf.flLast >= size || agf.flCount > size) {
    return refuse(`${where}: free list indexes ${agf.flFirst}..${agf.flLast} (count ${agf.flCount}) exceed the AGFL's ${size} slots`);
  }
  if (agf.flCount > 0 && (agf.flFirst + agf.flCount - 1) % size !== agf.flLast) {
    return refuse(`${where}: free list count ${agf.flCount} does not match first ${agf.flFirst} and last ${agf.flLast}`);
  }
  if (agf.freeBlocks > agf.length || agf.longest > agf.freeBlocks) {
    return refuse(`${where}: free counters (free ${agf.freeBlocks}, longest ${agf.longest}) exceed the AG`);
  }
  return accept(agf);
}

/** Parses the AGFL sector and returns the AG blocks the free list holds (allocated, not in the bnobt). */
export function parseAgfl(buf: Buffer, sb: XfsSuperblock, agf: Agf, checkCrc: boolean): Parsed<number[]> {
  const where = `AGFL of AG ${agf.agno}`;
  if (buf.length < sb.sectSize) return refuse(`${where}: short read`);
  if (buf.readUInt32BE(0) !== XFS_AGFL_MAGIC) return refuse(`${where}: bad magic 0x${buf.readUInt32BE(0).toString(16)}`);
  if (checkCrc && !xfsChecksumOk(buf, sb.sectSize, AGFL_CRC_OFFSET)) return refuse(`${where}: CRC mismatch`);
  if (buf.readUInt32BE(4) !== agf.agno) return refuse(`${where}: sequence number ${buf.readUInt32BE(4)} names another AG`);
  if (!buf.subarray(8, 24).equals(sb.metaUuid)) return refuse(`${where}: uuid differs from the superblock's`);
  const size = agflSize(sb);
  const blocks: number[] = [];
  for (let i = 0; i < agf.flCount; i++) {
    const bno = buf.readUInt32BE(AGFL_HEADER_BYTES + ((agf.flFirst + i) % size) * 4);
    if (bno === 0 || bno >= agf.length) return refuse(`${where}: entry ${bno} outside the AG`);
    blocks.push(bno);
  }
  return accept(blocks);
}
