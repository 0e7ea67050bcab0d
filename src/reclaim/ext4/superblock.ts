import { crc32cRaw } from './crc';
import { Parsed, accept, refuse } from '../parsed';

export const EXT4_SUPERBLOCK_OFFSET = 1024;
export const EXT4_SUPERBLOCK_SIZE = 1024;
export const EXT4_MAGIC = 0xef53;
/** Offset of s_magic inside the superblock (volume byte 1080). */
export const EXT4_MAGIC_OFFSET = 0x38;

export const COMPAT_HAS_JOURNAL = 0x0004;
export const COMPAT_SPARSE_SUPER2 = 0x0200;
export const COMPAT_FAST_COMMIT = 0x0400;

export const INCOMPAT_COMPRESSION = 0x0001;
export const INCOMPAT_FILETYPE = 0x0002;
export const INCOMPAT_RECOVER = 0x0004;
export const INCOMPAT_JOURNAL_DEV = 0x0008;
export const INCOMPAT_META_BG = 0x0010;
export const INCOMPAT_EXTENTS = 0x0040;
export const INCOMPAT_64BIT = 0x0080;
export const INCOMPAT_MMP = 0x0100;
export const INCOMPAT_FLEX_BG = 0x0200;
export const INCOMPAT_EA_INODE = 0x0400;
export const INCOMPAT_DIRDATA = 0x1000;
export const INCOMPAT_CSUM_SEED = 0x2000;
export const INCOMPAT_LARGEDIR = 0x4000;
export const INCOMPAT_INLINE_DATA = 0x8000;
export const INCOMPAT_ENCRYPT = 0x10000;
export const INCOMPAT_CASEFOLD = 0x20000;

/** Incompat features whose on-disk effects on allocation metadata this reader handles. */
const KNOWN_INCOMPAT =
  INCOMPAT_FILETYPE | INCOMPAT_RECOVER | INCOMPAT_META_BG | INCOMPAT_EXTENTS | INCOMPAT_64BIT | INCOMPAT_MMP |
  INCOMPAT_FLEX_BG | INCOMPAT_EA_INODE | INCOMPAT_DIRDATA | INCOMPAT_CSUM_SEED | INCOMPAT_LARGEDIR |
  INCOMPAT_INLINE_DATA | INCOMPAT_ENCRYPT | INCOMPAT_CASEFOLD;

export const RO_COMPAT_SPARSE_SUPER = 0x0001;
export const RO_COMPAT_GDT_CSUM = 0x0010;
export const RO_COMPAT_HAS_SNAPSHOT = 0x0080;
export const RO_COMPAT_BIGALLOC = 0x0200;
export const RO_COMPAT_METADATA_CSUM = 0x0400;

/**
 * Read-only-compatible features known not to change what a block bitmap bit means. Others
 * (bigalloc, snapshots, anything newer) are refused: a reader that only reads can still be
 * wrong about which blocks are free.
 */
const KNOWN_RO_COMPAT =
  RO_COMPAT_SPARSE_SUPER | 0x0002 /* LARGE_FILE */ | 0x0004 /* BTREE_DIR */ | 0x0008 /* HUGE_FILE */ |
  RO_COMPAT_GDT_CSUM | 0x0020 /* DIR_NLINK */ | 0x0040 /* EXTRA_ISIZE */ | 0x0100 /* QUOTA */ |
  RO_COMPAT_METADATA_CSUM | 0x0800 /* REPLICA */ | 0x1000 /* READONLY */ | 0x2000 /* PROJECT */ |
  0x4000 /* SHARED_BLOCKS */ | 0x8000 /* VERITY */ | 0x10000 /* ORPHAN_PRESENT */;

export interface Ext4Superblock {
  blockSize: number;
  blocksCount: number;
  firstDataBlock: number;
  blocksPerGroup: number;
  inodesPerGroup: number;
  inodesCount: number;
  inodeSize: number;
  featureCompat: number;
  featureIncompat: number;
  featureRoCompat: number;
  reservedGdtBlocks: number;
  journalInum: number;
  journalDev: number;
  journalUuidSet: boolean;
  /** Copy of the journal inode's i_block (60 bytes), when s_jnl_backup_type says so. */
  journalBlocksBackup: Buffer | null;
  descSize: number;
  descsPerBlock: number;
  firstMetaBg: number;
  backupBgs: [number, number];
  mmpBlock: number;
  groupCount: number;
  /** Group descriptor blocks right after the superblock (non-meta_bg layout, or the first s_first_meta_bg). */
  gdtBlocks: number;
  /** Seed of all metadata checksums (metadata_csum). */
  csumSeed: number;
  uuid: Buffer;
  is64: boolean;
  metaBg: boolean;
  flexBg: boolean;
  metadataCsum: boolean;
  gdtCsum: boolean;
  sparseSuper: boolean;
  sparseSuper2: boolean;
  hasJournal: boolean;
  needsRecovery: boolean;
}

function isPow2(n: number): boolean {
  return n > 0 && (n & (n - 1)) === 0;
}

/** True when the 1024 superblock bytes carry the ext2/3/4 magic. */
export function hasExt4Magic(sb: Buffer): boolean {
  return sb.length >= EXT4_MAGIC_OFFSET + 2 && sb.readUInt16LE(EXT4_MAGIC_OFFSET) === EXT4_MAGIC;
}

/** Parses and validates the primary superblock (the 1024 bytes at volume offset 1024). */
export function parseSuperblock(sb: Buffer): Parsed<Ext4Superblock> {
  if (sb.length < EXT4_SUPERBLOCK_SIZE) return refuse(`superblock is ${sb.length} bytes, need ${EXT4_SUPERBLOCK_SIZE}`);
  if (!hasExt4Magic(sb)) return refuse(`no ext4 magic 0xEF53 at superblock offset 0x38`);
  const revLevel = sb.readUInt32LE(0x4c);
  const featureCompat = revLevel >= 1 ? sb.readUInt32LE(0x5c) : 0;
  const featureIncompat = revLevel >= 1 ? sb.readUInt32LE(0x60) : 0;
  const featureRoCompat = revLevel >= 1 ? sb.readUInt32LE(0x64) : 0;

  if (featureIncompat & INCOMPAT_JOURNAL_DEV) return refuse('volume is an external journal device (INCOMPAT_JOURNAL_DEV), not a filesystem');
  const unknownIncompat = featureIncompat & ~KNOWN_INCOMPAT;
  if (unknownIncompat) return refuse(`unknown or unsupported incompat features 0x${unknownIncompat.toString(16)}`);
  if (featureRoCompat & RO_COMPAT_BIGALLOC) return refuse('bigalloc is not supported: bitmap bits would be clusters');
  const unknownRo = featureRoCompat & ~KNOWN_RO_COMPAT;
  if (unknownRo) return refuse(`unknown or unsupported ro_compat features 0x${unknownRo.toString(16)}`);

  const metadataCsum = (featureRoCompat & RO_COMPAT_METADATA_CSUM) !== 0;
  if (metadataCsum) {
    const type = sb.readUInt8(0x175);
    if (type !== 1) return refuse(`metadata_csum with unknown checksum type ${type}`);
    const stored = sb.readUInt32LE(0x3fc);
    const computed = crc32cRaw(0xffffffff, sb.subarray(0, 0x3fc));
    if (stored !== computed) return refuse(`superblock checksum mismatch (stored 0x${stored.toString(16)}, computed 0x${computed.toString(16)})`);
  }

  const logBlockSize = sb.readUInt32LE(0x18);
  if (logBlockSize > 6) return refuse(`s_log_block_size ${logBlockSize} gives a block size above 64 KiB`);
  const blockSize = 1024 << logBlockSize;
  if (sb.readUInt32LE(0x1c) !== logBlockSize) return refuse('cluster size differs from block size without bigalloc');
  const is64 = (featureIncompat & INCOMPAT_64BIT) !== 0;
  const blocksCount = sb.readUInt32LE(0x04) + (is64 ? sb.readUInt32LE(0x150) * 2 ** 32 : 0);
  const firstDataBlock = sb.readUInt32LE(0x14);
  if (firstDataBlock !== (blockSize === 1024 ? 1 : 0)) return refuse(`s_first_data_block ${firstDataBlock} does not fit block size ${blockSize}`);
  const blocksPerGroup = sb.readUInt32LE(0x20);
  if (blocksPerGroup < 256 || blocksPerGroup > blockSize * 8 || blocksPerGroup % 8 !== 0) {
    return refuse(`s_blocks_per_group ${blocksPerGroup} out of range for block size ${blockSize}`);
  }
  if (sb.readUInt32LE(0x24) !== blocksPerGroup) return refuse('s_clusters_per_group differs from s_blocks_per_group without bigalloc');
  if (blocksCount <= firstDataBlock) return refuse(`s_blocks_count ${blocksCount} leaves no groups`);
  if (blocksCount > Number.MAX_SAFE_INTEGER / blockSize) return refuse(`s_blocks_count ${blocksCount} too large`);
  const inodesPerGroup = sb.readUInt32LE(0x28);
  if (inodesPerGroup === 0 || inodesPerGroup > blockSize * 8) return refuse(`s_inodes_per_group ${inodesPerGroup} out of range`);
  const inodeSize = revLevel >= 1 ? sb.readUInt16LE(0x58) : 128;
  if (inodeSize < 128 || inodeSize > blockSize || !isPow2(inodeSize)) return refuse(`s_inode_size ${inodeSize} invalid`);
  const groupCount = Math.ceil((blocksCount - firstDataBlock) / blocksPerGroup);
  const inodesCount = sb.readUInt32LE(0x00);
  if (inodesCount !== groupCount * inodesPerGroup) {
    return refuse(`s_inodes_count ${inodesCount} != ${groupCount} groups x ${inodesPerGroup} inodes per group`);
  }

  let descSize = 32;
  if (is64) {
    descSize = sb.readUInt16LE(0xfe);
    if (descSize < 64 || descSize > 1024 || !isPow2(descSize)) return refuse(`s_desc_size ${descSize} invalid for a 64bit filesystem`);
  }
  const descsPerBlock = blockSize / descSize;
  const metaBg = (featureIncompat & INCOMPAT_META_BG) !== 0;
  const firstMetaBg = sb.readUInt32LE(0x104);
  const tableBlocks = Math.ceil(groupCount / descsPerBlock);
  if (metaBg && firstMetaBg > tableBlocks) return refuse(`s_first_meta_bg ${firstMetaBg} beyond the ${tableBlocks} descriptor blocks`);
  const gdtBlocks = metaBg ? firstMetaBg : tableBlocks;
  const reservedGdtBlocks = sb.readUInt16LE(0xce);
  if (reservedGdtBlocks > blockSize / 4) return refuse(`s_reserved_gdt_blocks ${reservedGdtBlocks} too large`);
  if (firstDataBlock + 1 + gdtBlocks + reservedGdtBlocks > Math.min(blocksPerGroup, blocksCount)) {
    return refuse('superblock and group descriptor table do not fit in group 0');
  }

  const uuid = Buffer.from(sb.subarray(0x68, 0x78));
  const csumSeed = featureIncompat & INCOMPAT_CSUM_SEED ? sb.readUInt32LE(0x270) : crc32cRaw(0xffffffff, uuid);
  const journalUuidSet = sb.subarray(0xd0, 0xe0).some((b) => b !== 0);
  const jnlBackupType = sb.readUInt8(0xfd);
  const mmp = (featureIncompat & INCOMPAT_MMP) !== 0;
  return accept({
    blockSize,
    blocksCount,
    firstDataBlock,
    blocksPerGroup,
    inodesPerGroup,
    inodesCount,
    inodeSize,
    featureCompat,
    featureIncompat,
    featureRoCompat,
    reservedGdtBlocks,
    journalInum: sb.readUInt32LE(0xe0),
    journalDev: sb.readUInt32LE(0xe4),
    journalUuidSet,
    journalBlocksBackup: jnlBackupType === 1 ? Buffer.from(sb.subarray(0x10c, 0x10c + 60)) : null,
    descSize,
    descsPerBlock,
    firstMetaBg,
    backupBgs: [sb.readUInt32LE(0x24c), sb.readUInt32LE(0x250)],
    mmpBlock: mmp ? sb.readUInt32LE(0x168) + sb.readUInt32LE(0x16c) * 2 ** 32 : 0,
    groupCount,
    gdtBlocks,
    csumSeed,
    uuid,
    is64,
    metaBg,
    flexBg: (featureIncompat & INCOMPAT_FLEX_BG) !== 0,
    metadataCsum,
    gdtCsum: (featureRoCompat & RO_COMPAT_GDT_CSUM) !== 0,
    sparseSuper: (featureRoCompat & RO_COMPAT_SPARSE_SUPER) !== 0,
    sparseSuper2: (featureCompat & COMPAT_SPARSE_SUPER2) !== 0,
    hasJournal: (featureCompat & COMPAT_HAS_JOURNAL) !== 0,
    needsRecovery: (featureIncompat & INCOMPAT_RECOVER) !== 0,
  });
}
