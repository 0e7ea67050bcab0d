import { Parsed, accept, refuse } from '../parsed';

export const EXT4_EXTENTS_FL = 0x00080000;
const S_IFMT = 0xf000;
const S_IFREG = 0x8000;

export interface JournalInode {
  sizeBytes: number;
  flags: number;
  generation: number;
  /** The 60-byte i_block area: extent root, or legacy block pointers. */
  iblock: Buffer;
}

/** Parses the fields of the journal inode this reader needs from its on-disk bytes. */
export function parseJournalInode(raw: Buffer): Parsed<JournalInode> {
  if (raw.length < 128) return refuse(`inode record of ${raw.length} bytes is shorter than 128`);
  const mode = raw.readUInt16LE(0x00);
  if ((mode & S_IFMT) !== S_IFREG) return refuse(`journal inode mode 0o${mode.toString(8)} is not a regular file`);
  const flags = raw.readUInt32LE(0x20);
  if ((flags & EXT4_EXTENTS_FL) === 0) return refuse('journal inode does not use extents (legacy block map not supported)');
  return accept({
    sizeBytes: raw.readUInt32LE(0x04) + raw.readUInt32LE(0x6c) * 2 ** 32,
    flags,
    generation: raw.readUInt32LE(0x64),
    iblock: Buffer.from(raw.subarray(0x28, 0x28 + 60)),
  });
}
