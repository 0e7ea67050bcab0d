import { crc32cUpdate } from '../../util/crc32c';
import { type Parsed, accept, refuse } from '../parsed';

export const XLOG_HEADER_MAGIC = 0xfeedbabe;
export const BB = 512;
/** Bytes of data whose first words one header block saves (XLOG_HEADER_CYCLE_SIZE). */
const CYCLE_SIZE = 32768;
const CYCLE_WORDS = 64;
const MAX_RECORD_BYTES = 262144;
/** sizeof(struct xlog_rec_header) on 64-bit kernels: the bytes the record CRC covers. */
const REC_HEADER_CRC_BYTES = 0x148;
/** sizeof(struct xlog_rec_ext_header): xh_cycle plus 64 saved words. */
const EXT_HEADER_CRC_BYTES = 4 + CYCLE_WORDS * 4;

export interface LogRecordHeader {
  cycle: number;
  version: number;
  /** Bytes of data after the header blocks. */
  len: number;
  lsnCycle: number;
  lsnBlock: number;
  tailCycle: number;
  tailBlock: number;
  crc: number;
  numLogOps: number;
  /** 1 = little-endian item formats, 2 = big-endian. */
  fmt: number;
  uuid: Buffer;
  /** In-core log buffer size, bounds how far a record can reach. */
  size: number;
  /** Header blocks before the data (extended headers with big log buffers). */
  hblks: number;
  /** Data blocks after the header blocks. */
  dataBBs: number;
}

/** The cycle number a log block was last written in: the header's h_cycle, else the stamped first word. */
export function bbCycle(buf: Buffer, offset: number): number {
  const first = buf.readUInt32BE(offset);
  return first === XLOG_HEADER_MAGIC ? buf.readUInt32BE(offset + 4) : first;
}

/** Parses the record header block at `bb[0, 512)`; checks only what does not need the record's data. */
export function parseRecordHeader(bb: Buffer): Parsed<LogRecordHeader> {
  if (bb.length < BB) return refuse('log record header is short');
  if (bb.readUInt32BE(0) !== XLOG_HEADER_MAGIC) return refuse('no log record magic');
  const version = bb.readUInt32BE(8);
  if (version !== 1 && version !== 2) return refuse(`unknown log record version ${version}`);
  const len = bb.readUInt32BE(0x0c);
  if (len > MAX_RECORD_BYTES) return refuse(`log record length ${len} exceeds ${MAX_RECORD_BYTES}`);
  const cycle = bb.readUInt32BE(4);
  const lsnCycle = bb.readUInt32BE(0x10);
  const lsnBlock = bb.readUInt32BE(0x14);
  if (cycle === 0 || lsnCycle !== cycle) return refuse(`log record cycle ${cycle} disagrees with its LSN cycle ${lsnCycle}`);
  const fmt = bb.readUInt32BE(0x12c);
  if (fmt !== 1 && fmt !== 2) return refuse(`unknown log record format ${fmt}`);
  let size = bb.readUInt32BE(0x140);
  if (version === 1) size = CYCLE_SIZE;
  if (size < CYCLE_SIZE || size > MAX_RECORD_BYTES || size % BB !== 0) return refuse(`log buffer size ${size} is invalid`);
  const hblks = version === 2 && size > CYCLE_SIZE ? Math.ceil(size / CYCLE_SIZE) : 1;
  const dataBBs = Math.ceil(len / BB);
  if (Math.ceil(len / CYCLE_SIZE) > hblks) return refuse(`log record length ${len} needs more than its ${hblks} header blocks`);
  return accept({
    cycle, version, len, lsnCycle, lsnBlock,
    tailCycle: bb.readUInt32BE(0x18),
    tailBlock: bb.readUInt32BE(0x1c),
    crc: bb.readUInt32LE(0x20),
    numLogOps: bb.readUInt32BE(0x28),
    fmt,
    uuid: Buffer.from(bb.subarray(0x130, 0x140)),
    size, hblks, dataBBs,
  });
}

/** Checks h_crc over the header, the extended headers and the still-stamped data (xlog_cksum). */
export function recordCrcOk(hdr: LogRecordHeader, headerBBs: Buffer, data: Buffer): boolean {
  const first = Buffer.from(headerBBs.subarray(0, REC_HEADER_CRC_BYTES));
  first.writeUInt32LE(0, 0x20);
  let c = crc32cUpdate(0xffffffff, first);
  const xheads = Math.ceil(hdr.len / CYCLE_SIZE);
  for (let i = 1; i < xheads; i++) c = crc32cUpdate(c, headerBBs.subarray(i * BB, i * BB + EXT_HEADER_CRC_BYTES));
  c = crc32cUpdate(c, data.subarray(0, hdr.len));
  return (~c >>> 0) === hdr.crc;
}

/** Returns a copy of the record data with the first word of every block restored from the headers' saved cycle data. */
export function unpackRecordData(hdr: LogRecordHeader, headerBBs: Buffer, data: Buffer): Buffer {
  const out = Buffer.from(data.subarray(0, hdr.dataBBs * BB));
  for (let i = 0; i < hdr.dataBBs; i++) {
    const j = Math.floor(i / CYCLE_WORDS);
    const k = i % CYCLE_WORDS;
    const saved = j === 0 ? headerBBs.readUInt32BE(0x2c + k * 4) : headerBBs.readUInt32BE(j * BB + 4 + k * 4);
    out.writeUInt32BE(saved, i * BB);
  }
  return out.subarray(0, hdr.len);
}
