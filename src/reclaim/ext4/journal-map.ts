import { crc32cRaw, le32Bytes } from './crc';
import { Extent, parseExtentNode } from './extent-tree';
import { JournalInode } from './journal-inode';
import { Parsed, accept, refuse } from '../parsed';
import { Ext4Superblock } from './superblock';

/** A contiguous piece of the journal: journal blocks [lblk, lblk+len) live at fs blocks [pblk, pblk+len). */
export interface JournalRun { lblk: number; pblk: number; len: number }

export interface JournalMap {
  /** Journal blocks, in order, covering [0, blocks) without holes. */
  runs: JournalRun[];
  blocks: number;
  /** Extent-tree blocks of the journal inode (metadata, never free). */
  treeBlocks: number[];
}

/** Most extent-tree blocks followed: far more than any journal needs (a 1 GiB journal has under 100 extents). */
const MAX_TREE_BLOCKS = 4096;

export type ReadFsBlock = (block: number) => Promise<Buffer>;

/**
 * Maps the journal inode's extent tree to physical runs, reading index/leaf blocks through
 * readBlock. Refuses holes, unwritten extents, blocks outside the filesystem and trees that
 * do not descend properly.
 */
export async function mapJournal(sb: Ext4Superblock, ino: number, inode: JournalInode, readBlock: ReadFsBlock): Promise<Parsed<JournalMap>> {
  const blocks = Math.floor(inode.sizeBytes / sb.blockSize);
  if (blocks < 2) return refuse(`journal inode size ${inode.sizeBytes} holds fewer than 2 blocks`);
  if (blocks > sb.blocksCount) return refuse(`journal inode size ${inode.sizeBytes} exceeds the filesystem`);
  const inodeSeed = crc32cRaw(crc32cRaw(sb.csumSeed, le32Bytes(ino)), le32Bytes(inode.generation));
  const root = parseExtentNode(inode.iblock);
  if (!root.ok) return refuse(`journal inode extent root: ${root.reason}`);
  const extents: Extent[] = [];
  const treeBlocks: number[] = [];
  const stack = [root.value];
  while (stack.length > 0) {
    const node = stack.pop();
    if (node === undefined) break;
    if ('extents' in node) {
      extents.push(...node.extents);
      if (extents.length > blocks) return refuse('journal extent tree has more extents than journal blocks');
      continue;
    }
    for (let i = node.children.length - 1; i >= 0; i--) {
      const child = node.children[i];
      if (child === undefined) continue;
      if (child.child < sb.firstDataBlock || child.child >= sb.blocksCount) {
        return refuse(`journal extent index points at block ${child.child} outside the filesystem`);
      }
      if (treeBlocks.length >= MAX_TREE_BLOCKS) return refuse(`journal extent tree has more than ${MAX_TREE_BLOCKS} blocks`);
      treeBlocks.push(child.child);
      const parsed = parseExtentNode(await readBlock(child.child), sb.metadataCsum ? inodeSeed : null);
      if (!parsed.ok) return refuse(`journal extent block ${child.child}: ${parsed.reason}`);
      if (parsed.value.depth !== node.depth - 1) {
        return refuse(`journal extent block ${child.child} has depth ${parsed.value.depth}, expected ${node.depth - 1}`);
      }
      stack.push(parsed.value);
    }
  }
  extents.sort((a, b) => a.lblk - b.lblk);
  const runs: JournalRun[] = [];
  let next = 0;
  for (const e of extents) {
    if (next >= blocks) break;
    if (e.unwritten) return refuse(`journal extent at journal block ${e.lblk} is unwritten`);
    if (e.len === 0) continue;
    if (e.lblk !== next) return refuse(`journal has a hole or overlap at journal block ${next} (next extent starts at ${e.lblk})`);
    if (e.pblk < sb.firstDataBlock || e.pblk + e.len > sb.blocksCount) {
      return refuse(`journal extent at fs block ${e.pblk} (+${e.len}) lies outside the filesystem`);
    }
    const len = Math.min(e.len, blocks - next);
    runs.push({ lblk: next, pblk: e.pblk, len });
    next += len;
  }
  if (next < blocks) return refuse(`journal extents cover ${next} of ${blocks} journal blocks`);
  return accept({ runs, blocks, treeBlocks });
}
