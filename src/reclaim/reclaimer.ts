import { BLOCK } from '../store/records';
import { logger } from '../util/log';
import type { VolumeIo } from '../volume/volume-io';
import { planExt4 } from './ext4/plan-ext4';
import { CommitPoints } from './commit-points';
import { JOURNAL_HEAD_BYTES, type ByteRange, type Planner, type PlanResult, type VolumeReader } from './planner';
import { WriteHistory } from './write-history';
import { planXfs } from './xfs/plan-xfs';

const debug = logger('reclaim');

export interface ReclaimReport {
  volume: string;
  fs: 'ext4' | 'xfs' | 'none';
  ok: boolean;
  reason?: string;
  dryRun: boolean;
  blockSize: number;
  examinedBlocks: number;
  /** Bytes the guest holds free in its committed view. */
  guestFreeBytes: number;
  /** Of those, bytes that were allocated in the pool: the candidates. */
  candidateBytes: number;
  releasedBytes: number;
  /** Candidates kept because they were written too recently (rule R2/R3: not enough commits since). */
  keptRecentBytes: number;
  notes: string[];
}

/** `tid`: the last committed jbd2 transaction the scan saw (ext4 only). */
interface Scan { seq: number; commits: number; tid?: number }

/** Where the last scan found an ext4 journal, to spot commit records in writes as they arrive. */
interface JournalWatch { journal: ByteRange[]; blockSize: number; tid: number; tidOf: (head: Buffer) => number | undefined }

/** A commit record more than this many transactions past the last scan is not believed (ignoring one is safe). */
const MAX_TID_AHEAD = 2 ** 20;

/** Asks each filesystem planner in turn; the first that recognises the volume answers. */
export async function plan(reader: VolumeReader): Promise<PlanResult> {
  const ext4 = await planExt4(reader);
  if (ext4.ok || ext4.fs !== 'none') return ext4;
  const xfs = await planXfs(reader);
  if (xfs.ok || xfs.fs !== 'none') return xfs;
  return { ok: false, fs: 'none', reason: 'no ext4 or XFS filesystem found on the volume' };
}

/**
 * Reclaim for one volume served by this process. Every write is recorded in a WriteHistory;
 * every scan records (write sequence at its start, commits seen so far). A block free in the
 * committed view of scan i is released only if its last write w is old enough: the first
 * scan j started after w must have seen at least two commits fewer than scan i. At j's start
 * at most the committing and the running transaction were open, so whatever allocated the
 * block before w has committed by scan i and would show it used (release rule R1-R3).
 *
 * ext4 gives a finer bound, which a full pool needs: once a scan has found the journal, each
 * commit record is noted as its write arrives. jbd2 writes commit records one at a time in tid
 * order, each only after the one before completed, so if the first commit record to arrive
 * after w names tid t, every transaction committed before w was older than t, at most t and
 * t + 1 were open, and the allocation behind w is committed once tid t + 1 is. That releases
 * a file written and fsync'd just before the pool filled as soon as the guest commits its
 * delete, with no further commit needed; a guest whose every other write waits for space makes
 * none. The release itself runs under the volume's range lock after re-checking that no write
 * came in since the scan started (R4). A cold volume (no guest can have it mounted) needs no history.
 */
export class Reclaimer {
  readonly history = new WriteHistory();
  readonly #scans: Scan[] = [];
  readonly #points = new CommitPoints();
  #watch: JournalWatch | undefined;
  #commits = 0;
  #lastMark: number | undefined;
  #running: Promise<ReclaimReport> | undefined;

  constructor(private readonly io: VolumeIo, private readonly cold: boolean, private readonly planner: Planner = plan) {}

  /**
   * Told of every write this process accepts, before its data moves (`data` is only read here,
   * during the call): records it in the history and notes the commit records it carries.
   */
  written(start: number, end: number, data: Buffer, offset: number): void {
    this.history.record(start, end);
    const w = this.#watch;
    if (w === undefined) return;
    const last = offset + data.length;
    for (const r of w.journal) {
      const lo = Math.max(r.offset, offset);
      const hi = Math.min(r.offset + r.len, last);
      for (let p = r.offset + Math.ceil((lo - r.offset) / w.blockSize) * w.blockSize; p + JOURNAL_HEAD_BYTES <= hi; p += w.blockSize) {
        const tid = w.tidOf(data.subarray(p - offset, p - offset + JOURNAL_HEAD_BYTES));
        if (tid === undefined) continue;
        const ahead = (tid - w.tid) | 0;
        if (ahead <= 0 || ahead >= MAX_TID_AHEAD) continue;
        this.#points.add(this.history.seq, tid);
        debug('commit record of transaction %d in write %d', tid, this.history.seq);
      }
    }
  }

  run(dryRun: boolean): Promise<ReclaimReport> {
    if (!this.#running) this.#running = this.#run(dryRun).finally(() => { this.#running = undefined; });
    return this.#running;
  }

  async #run(dryRun: boolean): Promise<ReclaimReport> {
    const v = this.io.record();
    const seq = this.history.seq;
    const reader: VolumeReader = {
      sizeBytes: v.sizeBytes,
      read: async (offset, len) => {
        const buf = Buffer.alloc(len);
        await this.io.read(buf, len, offset);
        return buf;
      },
    };
    const result = await this.planner(reader);
    const report: ReclaimReport = {
      volume: v.name, fs: result.fs, ok: result.ok, dryRun, blockSize: 0, examinedBlocks: 0,
      guestFreeBytes: 0, candidateBytes: 0, releasedBytes: 0, keptRecentBytes: 0, notes: [],
    };
    if (!result.ok) {
      this.#watch = undefined;
      report.reason = result.reason;
      debug('%s: nothing released: %s', v.name, result.reason);
      return report;
    }
    if (this.#lastMark === undefined || result.commit.seq > this.#lastMark) {
      this.#commits += this.#lastMark === undefined ? 0 : result.commit.exact ? result.commit.seq - this.#lastMark : 1;
      this.#lastMark = result.commit.seq;
    }
    this.io.journal = result.journal.map((r) => ({ start: r.offset, end: r.offset + r.len }));
    const tid = result.commit.exact ? result.commit.seq : undefined;
    this.#watch = tid !== undefined && result.commitRecord !== undefined
      ? { journal: result.journal, blockSize: result.blockSize, tid, tidOf: result.commitRecord }
      : undefined;
    const scan: Scan = { seq, commits: this.#commits, ...(tid !== undefined ? { tid } : {}) };
    this.#scans.push(scan);
    while (this.#scans.length > 64) this.#scans.shift();
    Object.assign(report, { blockSize: result.blockSize, examinedBlocks: result.examinedBlocks, notes: result.notes });

    const releasable: ByteRange[] = [];
    for (const r of result.free) {
      report.guestFreeBytes += r.len;
      const start = Math.ceil(r.offset / BLOCK) * BLOCK;
      const end = Math.floor((r.offset + r.len) / BLOCK) * BLOCK;
      if (end <= start) continue;
      for (const e of this.io.mapped(start, end)) {
        report.candidateBytes += e.len;
        for (const p of this.#oldPieces(e.vstart, e.vstart + e.len, scan)) {
          const last = releasable[releasable.length - 1];
          if (last && last.offset + last.len === p.offset) last.len += p.len;
          else releasable.push(p);
        }
      }
    }
    report.keptRecentBytes = report.candidateBytes - releasable.reduce((n, r) => n + r.len, 0);
    if (!dryRun) {
      for (const r of releasable) report.releasedBytes += await this.#release(r, seq);
    } else {
      report.releasedBytes = 0;
    }
    debug('%s (%s, committed %d, scan at write %d): guest free %d, candidates %d, released %d, kept (recent writes) %d', v.name, result.fs,
      result.commit.seq, seq, report.guestFreeBytes, report.candidateBytes, report.releasedBytes, report.keptRecentBytes);
    return report;
  }

  /** The parts of [start, end) whose last write is old enough, judged chunk by chunk. */
  *#oldPieces(start: number, end: number, now: Scan): Generator<ByteRange> {
    if (this.cold) {
      yield { offset: start, len: end - start };
      return;
    }
    for (const p of this.history.pieces(start, end)) {
      if (this.#oldEnough(p.seq, now)) yield { offset: p.start, len: p.end - p.start };
    }
  }

  /** Whether a last write `w` (0 = none since the daemon started) is old enough by `now`. */
  #oldEnough(w: number, now: Scan): boolean {
    if (w === 0) return true;
    const after = this.#scans.find((s) => s.seq >= w);
    if (after !== undefined && now.commits >= after.commits + 2) return true;
    const t = this.#points.firstAfter(w);
    return t !== undefined && now.tid !== undefined && ((now.tid - t) | 0) >= 1;
  }

  /** R4: under the range lock, nothing written there since the scan began. */
  #release(r: ByteRange, scanSeq: number): Promise<number> {
    const stillValid = (): boolean => this.cold || this.history.lastWrite(r.offset, r.offset + r.len) <= scanSeq;
    return this.io.discard(r.offset, r.offset + r.len, { stillValid, reclaim: true });
  }
}

/** Reclaim for a volume nobody serves for writing: the caller holds its claim, so no guest can have it mounted. */
export async function coldReclaim(io: VolumeIo, dryRun: boolean): Promise<ReclaimReport> {
  const report = await new Reclaimer(io, true).run(dryRun);
  await io.commit();
  return report;
}
