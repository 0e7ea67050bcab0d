import { BlockRun } from './block-runs';
import { crc32cRaw } from './crc';
import { GroupDesc } from './group-desc';
import { baseMetaBlocks, groupBlockCount, groupFirstBlock, inodeTableBlocks } from './group-geometry';
import { Ext4Superblock } from './superblock';

/** With metadata_csum: does the bitmap match the checksum its descriptor carries? Always true otherwise. */
export function blockBitmapChecksumOk(sb: Ext4Superblock, desc: GroupDesc, bitmap: Buffer): boolean {
  if (!sb.metadataCsum) return true;
  const bytes = sb.blocksPerGroup / 8;
  if (bitmap.length < bytes) return false;
  const crc = crc32cRaw(sb.csumSeed, bitmap.subarray(0, bytes));
  const mask = sb.descSize >= 64 ? 0xffffffff : 0xffff;
  return ((crc & mask) >>> 0) === desc.blockBitmapCsum;
}

function setBits(bitmap: Buffer, from: number, to: number): void {
  for (let i = Math.max(0, from); i < to && i < bitmap.length * 8; i++) {
    bitmap[i >> 3] = (bitmap[i >> 3] as number) | (1 << (i & 7));
  }
}

/**
 * The bitmap the kernel builds for a BLOCK_UNINIT group (ext4_init_block_bitmap): the base
 * metadata at the group's start, plus its own bitmaps and inode table when they lie inside it.
 */
export function synthesizeUninitBitmap(sb: Ext4Superblock, g: number, desc: GroupDesc): Buffer {
  const bitmap = Buffer.alloc(sb.blocksPerGroup / 8);
  const first = groupFirstBlock(sb, g);
  const count = groupBlockCount(sb, g);
  setBits(bitmap, 0, baseMetaBlocks(sb, g));
  const mark = (block: number, n: number): void => {
    if (block >= first && block < first + count) setBits(bitmap, block - first, Math.min(block - first + n, count));
  };
  mark(desc.blockBitmap, 1);
  mark(desc.inodeBitmap, 1);
  mark(desc.inodeTable, inodeTableBlocks(sb));
  setBits(bitmap, count, sb.blocksPerGroup);
  return bitmap;
}

/**
 * Whether `bitmapFree` clear bits agree with the free count the group's descriptor records,
 * compared in the width the descriptor stores it in. Both are in bitmap bits (clusters).
 */
export function freeCountAgrees(bitmapFree: number, desc: GroupDesc): boolean {
  return bitmapFree % 2 ** desc.freeBlocksCountBits === desc.freeBlocksCount;
}

/** Runs of clear bits among the first nbits of bitmap, as blocks starting at firstBlock. */
export function freeRuns(bitmap: Buffer, nbits: number, firstBlock: number): BlockRun[] {
  const runs: BlockRun[] = [];
  const limit = Math.min(nbits, bitmap.length * 8);
  let runStart = -1;
  let i = 0;
  while (i < limit) {
    const byte = bitmap[i >> 3] as number;
    if ((i & 7) === 0 && i + 8 <= limit && (byte === 0xff || byte === 0x00)) {
      if (byte === 0xff && runStart >= 0) {
        runs.push({ start: firstBlock + runStart, count: i - runStart });
        runStart = -1;
      } else if (byte === 0x00 && runStart < 0) {
        runStart = i;
      }
      i += 8;
      continue;
    }
    const used = (byte >> (i & 7)) & 1;
    if (used && runStart >= 0) {
      runs.push({ start: firstBlock + runStart, count: i - runStart });
      runStart = -1;
    } else if (!used && runStart < 0) {
      runStart = i;
    }
    i++;
  }
  if (runStart >= 0) runs.push({ start: firstBlock + runStart, count: limit - runStart });
  return runs;
}
