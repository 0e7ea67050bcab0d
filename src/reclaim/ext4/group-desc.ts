import { crc16, crc32cRaw, le32Bytes } from './crc';
import { inodeTableBlocks } from './group-geometry';
import { Parsed, accept, refuse } from '../parsed';
import { Ext4Superblock } from './superblock';

export const BG_INODE_UNINIT = 0x1;
export const BG_BLOCK_UNINIT = 0x2;

export interface GroupDesc {
  blockBitmap: number;
  inodeBitmap: number;
  inodeTable: number;
  flags: number;
  /** Stored block bitmap checksum: 16 bits with 32-byte descriptors, 32 bits otherwise. */
  blockBitmapCsum: number;
  /** bg_free_blocks_count: free bitmap bits (clusters; blocks without bigalloc) the filesystem records for the group. */
  freeBlocksCount: number;
  /** Width of the stored free count: 16 bits with 32-byte descriptors, 32 otherwise. */
  freeBlocksCountBits: 16 | 32;
  /** BLOCK_UNINIT, honoured only when descriptors are checksummed (as the kernel does). */
  blockUninit: boolean;
}

const CHECKSUM_OFFSET = 0x1e;

/** The checksum the descriptor of group g must carry, or null when descriptors are not checksummed. */
export function groupDescChecksum(sb: Ext4Superblock, g: number, desc: Buffer): number | null {
  if (sb.metadataCsum) {
    const zeroed = Buffer.from(desc.subarray(0, sb.descSize));
    zeroed.writeUInt16LE(0, CHECKSUM_OFFSET);
    return crc32cRaw(crc32cRaw(sb.csumSeed, le32Bytes(g)), zeroed) & 0xffff;
  }
  if (sb.gdtCsum) {
    let c = crc16(0xffff, sb.uuid);
    c = crc16(c, le32Bytes(g));
    c = crc16(c, desc.subarray(0, CHECKSUM_OFFSET));
    if (sb.is64 && CHECKSUM_OFFSET + 2 < sb.descSize) c = crc16(c, desc.subarray(CHECKSUM_OFFSET + 2, sb.descSize));
    return c;
  }
  return null;
}

/** Parses the descriptor of group g (descSize bytes) and checks its checksum and placement. */
export function parseGroupDesc(sb: Ext4Superblock, g: number, desc: Buffer): Parsed<GroupDesc> {
  if (desc.length < sb.descSize) return refuse(`descriptor of group ${g} is ${desc.length} bytes, need ${sb.descSize}`);
  const expected = groupDescChecksum(sb, g, desc);
  const stored = desc.readUInt16LE(CHECKSUM_OFFSET);
  if (expected !== null && expected !== stored) {
    return refuse(`group ${g} descriptor checksum mismatch (stored 0x${stored.toString(16)}, computed 0x${expected.toString(16)})`);
  }
  const wide = sb.descSize >= 64;
  const hi = (off: number): number => (wide ? desc.readUInt32LE(off) * 2 ** 32 : 0);
  const blockBitmap = desc.readUInt32LE(0x00) + hi(0x20);
  const inodeBitmap = desc.readUInt32LE(0x04) + hi(0x24);
  const inodeTable = desc.readUInt32LE(0x08) + hi(0x28);
  const flags = desc.readUInt16LE(0x12);
  const blockBitmapCsum = desc.readUInt16LE(0x18) + (wide ? desc.readUInt16LE(0x38) * 0x10000 : 0);
  const freeBlocksCount = desc.readUInt16LE(0x0c) + (wide ? desc.readUInt16LE(0x2c) * 0x10000 : 0);
  const itBlocks = inodeTableBlocks(sb);
  const inFs = (b: number, n: number): boolean => b >= sb.firstDataBlock && b + n <= sb.blocksCount;
  if (!inFs(blockBitmap, 1)) return refuse(`group ${g} block bitmap at ${blockBitmap} lies outside the filesystem`);
  if (!inFs(inodeBitmap, 1)) return refuse(`group ${g} inode bitmap at ${inodeBitmap} lies outside the filesystem`);
  if (!inFs(inodeTable, itBlocks)) return refuse(`group ${g} inode table at ${inodeTable} lies outside the filesystem`);
  if (!sb.flexBg) {
    const first = sb.firstDataBlock + g * sb.blocksPerGroup;
    const end = Math.min(first + sb.blocksPerGroup, sb.blocksCount);
    const inGroup = (b: number, n: number): boolean => b >= first && b + n <= end;
    if (!inGroup(blockBitmap, 1) || !inGroup(inodeBitmap, 1) || !inGroup(inodeTable, itBlocks)) {
      return refuse(`group ${g} metadata lies outside the group without flex_bg`);
    }
  }
  return accept({
    blockBitmap,
    inodeBitmap,
    inodeTable,
    flags,
    blockBitmapCsum,
    freeBlocksCount,
    freeBlocksCountBits: wide ? 32 : 16,
    blockUninit: (flags & BG_BLOCK_UNINIT) !== 0 && (sb.metadataCsum || sb.gdtCsum),
  });
}
