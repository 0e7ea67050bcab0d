import { crc32cRaw } from './crc';
import { Parsed, accept, refuse } from '../parsed';

export const EXTENT_MAGIC = 0xf30a;
export const EXT4_MAX_EXTENT_DEPTH = 5;
const INIT_MAX_LEN = 32768;

export interface Extent { lblk: number; pblk: number; len: number; unwritten: boolean }
export interface ExtentIndex { lblk: number; child: number }

export type ExtentNode =
  | { depth: 0; extents: Extent[] }
  | { depth: number; children: ExtentIndex[] };

/**
 * Parses one extent-tree node: the 60-byte root in i_block, or a tree block. A tree block
 * (checksumSeed given) carries a crc32c tail after eh_max entries, checked when the seed is not null.
 */
export function parseExtentNode(buf: Buffer, checksumSeed: number | null = null): Parsed<ExtentNode> {
  if (buf.length < 12) return refuse(`extent node of ${buf.length} bytes is shorter than its header`);
  const magic = buf.readUInt16LE(0);
  if (magic !== EXTENT_MAGIC) return refuse(`extent header magic 0x${magic.toString(16)} is not 0xF30A`);
  const entries = buf.readUInt16LE(2);
  const max = buf.readUInt16LE(4);
  const depth = buf.readUInt16LE(6);
  if (depth > EXT4_MAX_EXTENT_DEPTH) return refuse(`extent tree depth ${depth} exceeds ${EXT4_MAX_EXTENT_DEPTH}`);
  if (max === 0 || 12 + max * 12 > buf.length) return refuse(`extent node eh_max ${max} does not fit in ${buf.length} bytes`);
  if (entries > max) return refuse(`extent node has ${entries} entries but room for ${max}`);
  if (checksumSeed !== null) {
    const tail = 12 + max * 12;
    if (tail + 4 > buf.length) return refuse('extent block has no room for its checksum tail');
    const stored = buf.readUInt32LE(tail);
    const computed = crc32cRaw(checksumSeed, buf.subarray(0, tail));
    if (stored !== computed) return refuse(`extent block checksum mismatch (stored 0x${stored.toString(16)}, computed 0x${computed.toString(16)})`);
  }
  if (depth === 0) {
    const extents: Extent[] = [];
    for (let i = 0; i < entries; i++) {
      const p = 12 + i * 12;
      const rawLen = buf.readUInt16LE(p + 4);
      const unwritten = rawLen > INIT_MAX_LEN;
      extents.push({
        lblk: buf.readUInt32LE(p),
        len: unwritten ? rawLen - INIT_MAX_LEN : rawLen,
        pblk: buf.readUInt16LE(p + 6) * 2 ** 32 + buf.readUInt32LE(p + 8),
        unwritten,
      });
    }
    return accept({ depth: 0, extents });
  }
  const children: ExtentIndex[] = [];
  for (let i = 0; i < entries; i++) {
    const p = 12 + i * 12;
    children.push({ lblk: buf.readUInt32LE(p), child: buf.readUInt16LE(p + 8) * 2 ** 32 + buf.readUInt32LE(p + 4) });
  }
  return accept({ depth, children });
}
