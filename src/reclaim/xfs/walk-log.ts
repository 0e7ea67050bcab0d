import type { ChunkedReader } from './chunked-reader';
import { BB, type LogRecordHeader, bbCycle, parseRecordHeader, recordCrcOk, unpackRecordData } from './log-record';
import { type CommittedTransaction, TransactionAssembler } from './log-transactions';
import { type Parsed, accept, refuse } from '../parsed';
import { type XfsSuperblock, fsbToLinear } from './superblock';

/** Log buffers the kernel may have in flight; torn writes are tolerated only within their reach (XLOG_MAX_ICLOGS). */
const MAX_ICLOGS = 8;
const SCAN_BBS = 8192;
/** A record has at most 8 header blocks and 256 KiB of data. */
const MAX_HEADER_BBS = 8;
const MAX_DATA_BBS = 512;
const UNMOUNT_CLIENT = 0xaa;
const UNMOUNT_FLAG = 0x20;

export interface LogSummary {
  logBBs: number;
  /** Physical BB where the next record will be written. */
  head: number;
  /** Physical BB of the oldest record recovery would need. */
  tail: number;
  /** The last record is an unmount record: nothing to replay. */
  clean: boolean;
  /** Records and committed transactions walked between tail and head. */
  records: number;
  transactions: number;
  /** Transactions started but not committed before the head (ignored). */
  uncommitted: number;
  /** LSN (cycle * 2^32 + block) of the record holding the last commit, else of the last record. */
  commitLsn: number;
  /** LSN of the last intact record: no home metadata may carry a newer one. */
  headLsn: number;
  /** BBs before the head ignored as a torn write. */
  tornBBs: number;
}

export interface WalkLogOptions {
  /** Bound on bytes held for transactions being reassembled. */
  maxTransactionBytes: number;
  /** Buffer types whose logged data the caller needs. */
  blftKept: ReadonlySet<number>;
  /** Called for each committed transaction in commit order; a refusal stops the walk. */
  onCommit: (t: CommittedTransaction) => Parsed<null>;
}

interface LogRecord {
  hdr: LogRecordHeader;
  data: Buffer;
  bbs: number;
}

/** The internal log as a circular array of 512-byte blocks. */
class LogArea {
  constructor(readonly reader: ChunkedReader, readonly startByte: number, readonly bbs: number) {}

  async read(bb: number, count: number): Promise<Buffer> {
    const first = ((bb % this.bbs) + this.bbs) % this.bbs;
    const n1 = Math.min(count, this.bbs - first);
    const a = await this.reader.read(this.startByte + first * BB, n1 * BB);
    if (n1 === count) return a;
    const b = await this.reader.read(this.startByte, (count - n1) * BB);
    return Buffer.concat([a, b]);
  }
}

function isUnmountRecord(hdr: LogRecordHeader, data: Buffer): boolean {
  return hdr.numLogOps === 1 && data.length >= 12 && data.readUInt8(8) === UNMOUNT_CLIENT && (data.readUInt8(9) & UNMOUNT_FLAG) !== 0;
}

/** Reads and checks the whole record whose header is at physical BB `bb`; refuses torn or foreign records. */
async function readRecord(log: LogArea, sb: XfsSuperblock, bb: number): Promise<Parsed<LogRecord>> {
  const first = await log.read(bb, 1);
  const h = parseRecordHeader(first);
  if (!h.ok) return refuse(h.reason);
  const hdr = h.value;
  if (hdr.lsnBlock !== bb) return refuse(`record at BB ${bb} names BB ${hdr.lsnBlock}`);
  if (!hdr.uuid.equals(sb.uuid)) return refuse(`record at BB ${bb} belongs to another filesystem`);
  const bbs = hdr.hblks + hdr.dataBBs;
  if (bbs > log.bbs) return refuse(`record at BB ${bb} is longer than the log`);
  const all = await log.read(bb, bbs);
  const headerBBs = all.subarray(0, hdr.hblks * BB);
  const raw = all.subarray(hdr.hblks * BB);
  const data = unpackRecordData(hdr, headerBBs, raw);
  if (!recordCrcOk(hdr, headerBBs, raw) && !(hdr.crc === 0 && isUnmountRecord(hdr, data))) {
    return refuse(`record at BB ${bb} fails its CRC`);
  }
  return accept({ hdr, data, bbs });
}

async function findHead(log: LogArea): Promise<Parsed<{ head: number; headCycle: number }>> {
  const c0 = bbCycle(await log.read(0, 1), 0);
  const cLast = bbCycle(await log.read(log.bbs - 1, 1), 0);
  if (c0 === 0) return refuse('log has never been written (cycle 0 at its first block)');
  let target: number;
  if (c0 === cLast) target = cLast - 1;
  else if (c0 === cLast + 1) target = cLast;
  else return refuse(`log cycles ${c0} at the start and ${cLast} at the end cannot be ordered`);
  for (let at = 0; at < log.bbs; at += SCAN_BBS) {
    const n = Math.min(SCAN_BBS, log.bbs - at);
    const buf = await log.read(at, n);
    for (let i = 0; i < n; i++) {
      if (bbCycle(buf, i * BB) === target) {
        const head = at + i;
        return accept({ head, headCycle: head === 0 ? cLast : c0 });
      }
    }
  }
  if (c0 !== cLast) return refuse('log head not found');
  return accept({ head: 0, headCycle: cLast });
}

/**
 * Finds the head and tail of the internal log, checks every record in between and feeds the
 * committed transactions to `onCommit` in commit order (xlog_find_head/xlog_find_tail and
 * xlog_do_recovery_pass). Torn writes are tolerated only within the last log buffers.
 */
export async function walkLog(sb: XfsSuperblock, reader: ChunkedReader, opts: WalkLogOptions): Promise<Parsed<LogSummary>> {
  const logBBs = (sb.logBlocks * sb.blockSize) / BB;
  const log = new LogArea(reader, fsbToLinear(sb, sb.logStart) * sb.blockSize, logBBs);
  const found = await findHead(log);
  if (!found.ok) return refuse(found.reason);
  const { head } = found.value;

  let last: LogRecord | undefined;
  let lastBB = 0;
  let skipped = 0;
  const maxBack = Math.min(logBBs, (MAX_ICLOGS + 1) * (MAX_HEADER_BBS + MAX_DATA_BBS));
  for (let back = 1; back <= maxBack; back++) {
    const bb = (head - back + logBBs) % logBBs;
    if (!parseRecordHeader(await log.read(bb, 1)).ok) continue;
    const rec = await readRecord(log, sb, bb);
    if (rec.ok && rec.value.bbs <= back) {
      last = rec.value;
      lastBB = bb;
      skipped = back - rec.value.bbs;
      break;
    }
  }
  if (!last) return refuse(`no intact log record within ${maxBack} blocks before the head at BB ${head}`);
  const tornWindow = MAX_ICLOGS * (last.hdr.hblks + last.hdr.size / BB);
  if (skipped > tornWindow) return refuse(`log has ${skipped} damaged blocks before its head, more than a torn write`);

  const lastStart = last.hdr.lsnCycle * logBBs + lastBB;
  const lastEnd = lastStart + last.bbs;
  const lastLsn = last.hdr.lsnCycle * 2 ** 32 + lastBB;
  // The head comes from cycle stamps, and one damaged stamp inside the live log looks like a
  // head: everything after it would be dropped, and blocks that later records allocate would
  // read as free. A real head has no intact record with a newer LSN after it (torn in-flight
  // log buffers fail their CRC); one found means the log is damaged.
  for (let ahead = 0; ahead < maxBack; ahead++) {
    const bb = (lastEnd + ahead) % logBBs;
    const hdr = parseRecordHeader(await log.read(bb, 1));
    if (!hdr.ok || hdr.value.lsnCycle * 2 ** 32 + bb <= lastLsn) continue;
    if ((await readRecord(log, sb, bb)).ok) return refuse(`intact log record at BB ${bb} lies after the head found at BB ${head}: the log is damaged`);
  }
  const summary: LogSummary = {
    logBBs, head: lastEnd % logBBs, tail: lastEnd % logBBs, clean: false, records: 0, transactions: 0, uncommitted: 0,
    commitLsn: lastLsn, headLsn: lastLsn, tornBBs: skipped,
  };
  if (isUnmountRecord(last.hdr, last.data)) {
    summary.clean = true;
    return accept(summary);
  }
  if (last.hdr.tailBlock >= logBBs) return refuse(`tail block ${last.hdr.tailBlock} lies outside the log`);
  const tailStart = last.hdr.tailCycle * logBBs + last.hdr.tailBlock;
  if (tailStart > lastStart || lastEnd - tailStart > logBBs) {
    return refuse(`tail LSN ${last.hdr.tailCycle}/${last.hdr.tailBlock} is inconsistent with the last record at ${last.hdr.lsnCycle}/${lastBB}`);
  }
  summary.tail = last.hdr.tailBlock;

  const assembler = new TransactionAssembler(opts.maxTransactionBytes, opts.blftKept);
  let pos = tailStart;
  while (pos < lastEnd) {
    const bb = pos % logBBs;
    const cycle = Math.floor(pos / logBBs);
    const rec = pos === lastStart ? accept(last) : await readRecord(log, sb, bb);
    if (!rec.ok) return refuse(`log record at BB ${bb} between tail and head is damaged: ${rec.reason}`);
    const { hdr, data, bbs } = rec.value;
    if (hdr.lsnCycle !== cycle) return refuse(`log record at BB ${bb} has cycle ${hdr.lsnCycle}, expected ${cycle}`);
    if (pos + bbs > lastEnd) return refuse(`log record at BB ${bb} overlaps the last record`);
    const lsn = cycle * 2 ** 32 + bb;
    const done = assembler.addRecord(data, hdr.numLogOps, lsn, hdr.fmt === 1);
    if (!done.ok) return refuse(`log record at BB ${bb}: ${done.reason}`);
    for (const t of done.value) {
      const applied = opts.onCommit(t);
      if (!applied.ok) return refuse(applied.reason);
      summary.transactions++;
      summary.commitLsn = t.commitLsn;
    }
    summary.records++;
    pos += bbs;
  }
  summary.uncommitted = assembler.openCount;
  return accept(summary);
}
