import { type Parsed, accept, refuse } from '../parsed';

export const XFS_BLF_CHUNK = 128;
export const XFS_BLF_CANCEL = 0x2;
export const BLFT_BTREE = 4;
export const BLFT_AGF = 5;
export const BLFT_AGFL = 6;
/** XFS_BLF_DATAMAP_SIZE: map words for the largest (64 KiB) buffer. */
const MAX_MAP_WORDS = 16;
const MAX_BUFFER_BBS = 128;

export interface BufLogFormat {
  flags: number;
  /** Buffer type (BLFT), from bits 11-15 of the flags. */
  blft: number;
  /** Disk address of the buffer in 512-byte units. */
  daddr: number;
  /** Buffer length in 512-byte units. */
  lenBBs: number;
  /** Logged 128-byte chunks, as ascending runs [first chunk, chunk count]. */
  runs: Array<[number, number]>;
}

/** Parses region 0 of a buffer log item (xfs_buf_log_format, in the writer's byte order). */
export function parseBufLogFormat(region: Buffer, littleEndian: boolean): Parsed<BufLogFormat> {
  if (region.length < 0x14) return refuse(`buffer log format of ${region.length} bytes is too short`);
  const u16 = (o: number): number => (littleEndian ? region.readUInt16LE(o) : region.readUInt16BE(o));
  const u32 = (o: number): number => (littleEndian ? region.readUInt32LE(o) : region.readUInt32BE(o));
  const flags = u16(4);
  const lenBBs = u16(6);
  const blkno = littleEndian ? region.readBigInt64LE(8) : region.readBigInt64BE(8);
  const mapSize = u32(0x10);
  if (lenBBs === 0 || lenBBs > MAX_BUFFER_BBS) return refuse(`buffer log item length ${lenBBs} BBs is invalid`);
  if (blkno < 0n || blkno > BigInt(Number.MAX_SAFE_INTEGER)) return refuse('buffer log item address is invalid');
  if (mapSize > MAX_MAP_WORDS || region.length < 0x14 + mapSize * 4) return refuse(`buffer log item map of ${mapSize} words is invalid`);
  const chunks = (lenBBs * 512) / XFS_BLF_CHUNK;
  const runs: Array<[number, number]> = [];
  let runStart = -1;
  for (let bit = 0; bit < mapSize * 32; bit++) {
    const set = (u32(0x14 + (bit >>> 5) * 4) >>> (bit & 31)) & 1;
    if (set && bit >= chunks) return refuse(`buffer log item maps chunk ${bit} beyond its ${chunks} chunks`);
    if (set && runStart < 0) runStart = bit;
    if (!set && runStart >= 0) {
      runs.push([runStart, bit - runStart]);
      runStart = -1;
    }
  }
  if (runStart >= 0) runs.push([runStart, mapSize * 32 - runStart]);
  return accept({ flags, blft: flags >>> 11, daddr: Number(blkno), lenBBs, runs });
}

/**
 * Copies the logged chunks of `regions` (data regions 1..n of the item) into `target` and marks
 * them in `known` (one byte per chunk), as xlog_recover_do_reg_buffer does: each region fills
 * the next set bits of the map, a run may be split over several regions.
 */
export function applyBufRegions(fmt: BufLogFormat, regions: readonly Buffer[], target: Buffer, known: Uint8Array): Parsed<null> {
  const chunks: number[] = [];
  for (const [first, count] of fmt.runs) for (let c = first; c < first + count; c++) chunks.push(c);
  let next = 0;
  for (const region of regions) {
    if (region.length === 0 || region.length % XFS_BLF_CHUNK !== 0) return refuse(`logged buffer region of ${region.length} bytes is not whole chunks`);
    const n = region.length / XFS_BLF_CHUNK;
    for (let i = 0; i < n; i++) {
      const chunk = chunks[next + i];
      if (chunk === undefined) return refuse('logged buffer has more data than its map names');
      if (i > 0 && chunk !== (chunks[next + i - 1] as number) + 1) return refuse('logged buffer region spans two runs of its map');
      region.copy(target, chunk * XFS_BLF_CHUNK, i * XFS_BLF_CHUNK, (i + 1) * XFS_BLF_CHUNK);
      known[chunk] = 1;
    }
    next += n;
  }
  if (next !== chunks.length) return refuse(`logged buffer supplies ${next} of the ${chunks.length} chunks its map names`);
  return accept(null);
}

export interface ExtentFreeItem {
  /** EFI: efi_id; EFD: the id of the EFI it completes. */
  id: bigint;
  /** FSB-encoded start and length of each extent. */
  extents: Array<{ fsb: number; blocks: number }>;
}

/** Parses an EFI or EFD format region; picks the 64-bit (16-byte) or packed 32-bit (12-byte) extent layout by length. */
export function parseExtentFreeItem(region: Buffer, littleEndian: boolean): Parsed<ExtentFreeItem> {
  if (region.length < 16) return refuse(`extent free item of ${region.length} bytes is too short`);
  const n = littleEndian ? region.readUInt32LE(4) : region.readUInt32BE(4);
  const id = littleEndian ? region.readBigUInt64LE(8) : region.readBigUInt64BE(8);
  let stride: number;
  if (region.length === 16 + 16 * n) stride = 16;
  else if (region.length === 16 + 12 * n) stride = 12;
  else return refuse(`extent free item of ${region.length} bytes does not hold ${n} extents`);
  const extents: ExtentFreeItem['extents'] = [];
  for (let i = 0; i < n; i++) {
    const o = 16 + i * stride;
    const fsb = littleEndian ? region.readBigUInt64LE(o) : region.readBigUInt64BE(o);
    const blocks = littleEndian ? region.readUInt32LE(o + 8) : region.readUInt32BE(o + 8);
    extents.push({ fsb: Number(fsb), blocks });
  }
  return accept({ id, extents });
}
