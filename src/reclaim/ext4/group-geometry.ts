import { Ext4Superblock } from './superblock';

/** First block of group g. */
export function groupFirstBlock(sb: Ext4Superblock, g: number): number {
  return sb.firstDataBlock + g * sb.blocksPerGroup;
}

/** Blocks in group g (the last group may be short). */
export function groupBlockCount(sb: Ext4Superblock, g: number): number {
  return Math.min(sb.blocksPerGroup, sb.blocksCount - groupFirstBlock(sb, g));
}

function isPowerOf(n: number, base: number): boolean {
  let v = base;
  while (v < n) v *= base;
  return v === n;
}

/** Whether group g holds a superblock backup (and, outside meta_bg, a GDT copy). */
export function hasSuperBackup(sb: Ext4Superblock, g: number): boolean {
  if (g === 0) return true;
  if (sb.sparseSuper2) return g === sb.backupBgs[0] || g === sb.backupBgs[1];
  if (g === 1 || !sb.sparseSuper) return true;
  if (g % 2 === 0) return false;
  return isPowerOf(g, 3) || isPowerOf(g, 5) || isPowerOf(g, 7);
}

function inMetaBgRange(sb: Ext4Superblock, g: number): boolean {
  return sb.metaBg && g >= sb.firstMetaBg * sb.descsPerBlock;
}

/**
 * Blocks at the start of group g taken by the superblock backup, the group descriptor
 * table (or its meta_bg block) and the reserved GDT blocks: the kernel's
 * ext4_num_base_meta_clusters().
 */
export function baseMetaBlocks(sb: Ext4Superblock, g: number): number {
  const sup = hasSuperBackup(sb, g);
  let n = sup ? 1 : 0;
  if (!inMetaBgRange(sb, g)) {
    if (sup) n += sb.gdtBlocks + sb.reservedGdtBlocks;
  } else {
    const first = Math.floor(g / sb.descsPerBlock) * sb.descsPerBlock;
    if (g === first || g === first + 1 || g === first + sb.descsPerBlock - 1) n += 1;
  }
  return n;
}

/** Where the (primary) descriptor of group g lives: fs block and byte offset inside it. */
export function descriptorLocation(sb: Ext4Superblock, g: number): { block: number; offset: number } {
  const index = Math.floor(g / sb.descsPerBlock);
  const offset = (g % sb.descsPerBlock) * sb.descSize;
  if (!sb.metaBg || index < sb.firstMetaBg) return { block: sb.firstDataBlock + 1 + index, offset };
  const first = index * sb.descsPerBlock;
  return { block: groupFirstBlock(sb, first) + (hasSuperBackup(sb, first) ? 1 : 0), offset };
}

/** Blocks one inode table occupies. */
export function inodeTableBlocks(sb: Ext4Superblock): number {
  return Math.ceil((sb.inodesPerGroup * sb.inodeSize) / sb.blockSize);
}
