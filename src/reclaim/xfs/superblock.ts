import { xfsChecksumOk } from '../../util/crc32c';
import { type Parsed, accept, refuse } from '../parsed';

export const XFS_SB_MAGIC = 0x58465342;

const VERSION_5 = 5;
const SB_CRC_OFFSET = 0xe0;
/** The primary superblock sector is at most this large (XFS_MAX_SECTORSIZE). */
export const XFS_SB_READ_BYTES = 32768;

const INCOMPAT_FTYPE = 0x1;
const INCOMPAT_SPINODES = 0x2;
const INCOMPAT_META_UUID = 0x4;
const INCOMPAT_BIGTIME = 0x8;
const INCOMPAT_NEEDSREPAIR = 0x10;
const INCOMPAT_NREXT64 = 0x20;
const INCOMPAT_EXCHRANGE = 0x40;
const INCOMPAT_PARENT = 0x80;
/** Incompat features that change nothing the planner reads (AG headers, alloc btrees, log format). */
const INCOMPAT_UNDERSTOOD =
  INCOMPAT_FTYPE | INCOMPAT_SPINODES | INCOMPAT_META_UUID | INCOMPAT_BIGTIME | INCOMPAT_NREXT64 | INCOMPAT_EXCHRANGE | INCOMPAT_PARENT;
/** LOG_XATTRS and LOG_EXCHRANGE only add intent item types, which the planner skips. */
const LOG_INCOMPAT_UNDERSTOOD = 0x1 | 0x2;

export interface XfsSuperblock {
  blockSize: number;
  blockLog: number;
  sectSize: number;
  dblocks: number;
  agBlocks: number;
  agCount: number;
  agBlkLog: number;
  /** FSB-encoded start of the internal log. */
  logStart: number;
  logBlocks: number;
  /** The uuid stamped into log record headers. */
  uuid: Buffer;
  /** The uuid stamped into metadata blocks (sb_meta_uuid with META_UUID, else sb_uuid). */
  metaUuid: Buffer;
  lsn: bigint;
}

function isPowerOfTwo(n: number): boolean {
  return n > 0 && (n & (n - 1)) === 0;
}

/**
 * Parses and validates the primary superblock (sector 0 of AG 0). Refuses v4 filesystems,
 * realtime devices, external logs and features that change the structures the planner reads.
 */
export function parseSuperblock(buf: Buffer): Parsed<XfsSuperblock> {
  if (buf.length < 512) return refuse('superblock sector is shorter than 512 bytes');
  if (buf.readUInt32BE(0) !== XFS_SB_MAGIC) return refuse("no XFS superblock magic 'XFSB' at offset 0");
  const version = buf.readUInt16BE(0x64) & 0xf;
  if (version === 4) return refuse('XFS v4 (non-CRC) filesystem is not supported: its log and metadata carry no checksums');
  if (version !== VERSION_5) return refuse(`unknown XFS superblock version ${version}`);

  const blockSize = buf.readUInt32BE(0x04);
  const sectSize = buf.readUInt16BE(0x66);
  const blockLog = buf.readUInt8(0x78);
  const sectLog = buf.readUInt8(0x79);
  if (!isPowerOfTwo(sectSize) || sectSize < 512 || sectSize > XFS_SB_READ_BYTES || 2 ** sectLog !== sectSize) {
    return refuse(`invalid sector size ${sectSize} (sectlog ${sectLog})`);
  }
  if (buf.length < sectSize) return refuse('superblock sector was not read in full');
  if (!xfsChecksumOk(buf, sectSize, SB_CRC_OFFSET)) return refuse('superblock CRC mismatch');
  if (!isPowerOfTwo(blockSize) || blockSize < 512 || blockSize > 65536 || 2 ** blockLog !== blockSize || blockSize < sectSize) {
    return refuse(`invalid block size ${blockSize} (blocklog ${blockLog})`);
  }

  const incompat = buf.readUInt32BE(0xd8);
  if (incompat & INCOMPAT_NEEDSREPAIR) return refuse('filesystem is flagged NEEDSREPAIR');
  const unknownIncompat = incompat & ~INCOMPAT_UNDERSTOOD;
  if (unknownIncompat) return refuse(`unsupported incompat features 0x${(unknownIncompat >>> 0).toString(16)}`);
  const logIncompat = buf.readUInt32BE(0xdc);
  const unknownLogIncompat = logIncompat & ~LOG_INCOMPAT_UNDERSTOOD;
  if (unknownLogIncompat) return refuse(`unsupported log incompat features 0x${(unknownLogIncompat >>> 0).toString(16)}`);
  if (buf.readUInt8(0x7e) !== 0) return refuse('filesystem creation is still in progress (sb_inprogress set)');

  const dblocks = Number(buf.readBigUInt64BE(0x08));
  const rblocks = buf.readBigUInt64BE(0x10);
  const rextents = buf.readBigUInt64BE(0x18);
  if (rblocks !== 0n || rextents !== 0n) return refuse('filesystem has a realtime device, which is not supported');
  const logStart = Number(buf.readBigUInt64BE(0x30));
  if (logStart === 0) return refuse('filesystem uses an external log, which is not in the volume');

  const agBlocks = buf.readUInt32BE(0x54);
  const agCount = buf.readUInt32BE(0x58);
  const logBlocks = buf.readUInt32BE(0x60);
  const agBlkLog = buf.readUInt8(0x7c);
  if (agBlocks < 8 || agCount === 0) return refuse(`invalid AG geometry: ${agCount} AGs of ${agBlocks} blocks`);
  if (agBlkLog !== Math.ceil(Math.log2(agBlocks)) || agBlkLog > 31) {
    return refuse(`sb_agblklog ${agBlkLog} does not match ${agBlocks} blocks per AG`);
  }
  if (!Number.isSafeInteger(dblocks) || dblocks > agCount * agBlocks || dblocks <= (agCount - 1) * agBlocks) {
    return refuse(`sb_dblocks ${dblocks} does not fit ${agCount} AGs of ${agBlocks} blocks`);
  }
  const logAg = Math.floor(logStart / 2 ** agBlkLog);
  const logAgbno = logStart % 2 ** agBlkLog;
  if (logBlocks < 2 || logAg >= agCount || logAgbno + logBlocks > agBlocks || logAg * agBlocks + logAgbno + logBlocks > dblocks) {
    return refuse(`internal log (start ${logStart}, ${logBlocks} blocks) lies outside its AG`);
  }

  const uuid = Buffer.from(buf.subarray(0x20, 0x30));
  const metaUuid = incompat & INCOMPAT_META_UUID ? Buffer.from(buf.subarray(0xf8, 0x108)) : uuid;
  return accept({
    blockSize, blockLog, sectSize, dblocks, agBlocks, agCount, agBlkLog, logStart, logBlocks, uuid, metaUuid,
    lsn: buf.readBigUInt64BE(0xf0),
  });
}

/** Linear filesystem block of an FSB-encoded block number (AG number << agblklog | AG block). */
export function fsbToLinear(sb: XfsSuperblock, fsb: number): number {
  const shift = 2 ** sb.agBlkLog;
  return Math.floor(fsb / shift) * sb.agBlocks + (fsb % shift);
}

/** Blocks in AG `agno` (the last AG may be short). */
export function agLength(sb: XfsSuperblock, agno: number): number {
  return Math.min(sb.agBlocks, sb.dblocks - agno * sb.agBlocks);
}
