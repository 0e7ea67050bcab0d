import type { Placement, Pool } from '../pool/pool';
import type { Holder, Run } from '../store/records';
import { logger } from '../util/log';

const debug = logger('alloc');

const MAX_STREAM_RESERVATION = 64 * 1024 * 1024;
const FIRST_SCATTER_CHUNK = 256 * 1024;
const MAX_SCATTER_CHUNK = 4 * 1024 * 1024;

interface Cursor { next: number; lastEnd: { backend: number; at: number } | undefined }

const noCursor = (): Cursor => ({ next: -1, lastEnd: undefined });

/** Reserved runs handed out from the front. */
class Reserve {
  runs: Run[] = [];

  get bytes(): number {
    return this.runs.reduce((n, r) => n + r.len, 0);
  }

  get front(): Run | undefined {
    return this.runs[0];
  }

  take(len: number): Run[] {
    const out: Run[] = [];
    while (len > 0) {
      const r = this.runs[0]!;
      const n = Math.min(len, r.len);
      out.push({ backend: r.backend, start: r.start, len: n });
      if (n === r.len) this.runs.shift();
      else this.runs[0] = { backend: r.backend, start: r.start + n, len: r.len - n };
      len -= n;
    }
    return out;
  }

  drain(): Run[] {
    return this.runs.splice(0);
  }

  /** Removes what lies beyond the first `max` bytes and returns it. */
  trimTo(max: number): Run[] {
    const out: Run[] = [];
    let excess = this.bytes - max;
    while (excess > 0) {
      const r = this.runs[this.runs.length - 1]!;
      const n = Math.min(excess, r.len);
      out.push({ backend: r.backend, start: r.start + r.len - n, len: n });
      if (n === r.len) this.runs.pop();
      else this.runs[this.runs.length - 1] = { backend: r.backend, start: r.start, len: r.len - n };
      excess -= n;
    }
    return out;
  }
}

/**
 * Adaptive allocation for one volume, from space reserved ahead so that most writes need no
 * metadata transaction (each one is a synced commit). A write that continues where the stream's
 * previous allocation ended is served from a stream reservation that doubles with each refill
 * (from the scatter chunk's size up to 64 MiB), so a stream gets one long contiguous backend
 * run even while other writes and volumes allocate. Any other write gets exactly what it
 * needs, packed into a scatter chunk (256 KiB doubling to 4 MiB), so mkfs's scattered writes
 * take little space; if the next write continues one of them, a stream starts there (taking
 * the rest of the scatter chunk's run when it lies right behind), and what the old stream had
 * left over becomes scatter space. So a guest's writeback, sequential runs with small gaps,
 * alternates between two reserved runs instead of asking the pool twice per gap.
 */
export class StreamAllocator {
  #stream = noCursor();
  #candidate = noCursor();
  #streamGrow = 0;
  #scatterChunk = FIRST_SCATTER_CHUNK;
  readonly #streamRes = new Reserve();
  readonly #scatterRes = new Reserve();

  constructor(private readonly pool: Pool, private readonly holder: Holder, private readonly volumeId: number) {}

  /** Space held in reserve for this volume, not yet written. */
  get reservedBytes(): number {
    return this.#streamRes.bytes + this.#scatterRes.bytes;
  }

  place(vstart: number, len: number): Placement[] {
    if (vstart !== this.#stream.next && vstart === this.#candidate.next) this.#promoteCandidate();
    const sequential = vstart === this.#stream.next;
    const runs = sequential ? this.#fromStream(len) : this.#fromScatter(len);
    const out: Placement[] = [];
    let v = vstart;
    for (const run of runs) {
      out.push({ vstart: v, run });
      v += run.len;
    }
    const last = runs[runs.length - 1];
    const cursor = { next: vstart + len, lastEnd: last && { backend: last.backend, at: last.start + last.len } };
    if (sequential) this.#stream = cursor;
    else this.#candidate = cursor;
    debug('vol %d place [%d,+%d) %s -> %o', this.volumeId, vstart, len, sequential ? 'stream' : 'exact', runs);
    return out;
  }

  /**
   * Exactly [vstart, vstart+len), from the pool's journal reserve if need be: for a write into
   * the guest's journal that ordinary allocation refused. Nothing is reserved ahead (the
   * reserve is shared), and the streams' cursors stay as they were.
   */
  placeFromReserve(vstart: number, len: number): Placement[] {
    const out: Placement[] = [];
    let v = vstart;
    for (const run of this.pool.reserveForJournal(this.holder, this.volumeId, len)) {
      out.push({ vstart: v, run });
      v += run.len;
    }
    debug('vol %d place [%d,+%d) from the journal reserve -> %o', this.volumeId, vstart, len, out);
    return out;
  }

  /** Hands back everything reserved and not written (on close, or when a backend is drained). */
  returnReservation(): void {
    const runs = [...this.#streamRes.drain(), ...this.#scatterRes.drain()];
    this.#stream = noCursor();
    this.#streamGrow = 0;
    this.pool.unreserve(this.holder, runs);
  }

  /** Reserved space on a backend that is being drained goes back at once. */
  onDraining(): void {
    if ([...this.#streamRes.runs, ...this.#scatterRes.runs].some((r) => this.pool.backend(r.backend).draining === true)) this.returnReservation();
  }

  #promoteCandidate(): void {
    const leftover = this.#streamRes.drain();
    this.#stream = this.#candidate;
    this.#candidate = noCursor();
    this.#streamGrow = 0;
    const front = this.#scatterRes.front;
    const end = this.#stream.lastEnd;
    if (front && end && front.backend === end.backend && front.start === end.at) this.#streamRes.runs = [this.#scatterRes.runs.shift()!];
    this.#scatterRes.runs.push(...leftover);
    this.pool.unreserve(this.holder, this.#scatterRes.trimTo(MAX_STREAM_RESERVATION));
  }

  #fromStream(len: number): Run[] {
    if (this.#streamRes.bytes < len) {
      this.#streamGrow = Math.min(Math.max(this.#streamGrow * 2, len, this.#scatterChunk), MAX_STREAM_RESERVATION);
      const need = len - this.#streamRes.bytes;
      const hint = this.#tail(this.#streamRes) ?? this.#stream.lastEnd;
      this.#streamRes.runs.push(...this.#reserve(need, Math.max(need, this.#streamGrow), hint, MAX_STREAM_RESERVATION));
    }
    return this.#streamRes.take(len);
  }

  #fromScatter(len: number): Run[] {
    const short = len - this.#scatterRes.bytes;
    if (short > 0) {
      this.#scatterRes.runs.push(...this.#reserve(short, Math.max(short, this.#scatterChunk), undefined));
      this.#scatterChunk = Math.min(this.#scatterChunk * 2, MAX_SCATTER_CHUNK);
    }
    return this.#scatterRes.take(len);
  }

  /** Where a reserve's last run ends: the place to continue contiguously. */
  #tail(res: Reserve): { backend: number; at: number } | undefined {
    const last = res.runs[res.runs.length - 1];
    return last && { backend: last.backend, at: last.start + last.len };
  }

  /** `want` bytes if the pool has them, else exactly `need`; ENOSPC from the pool if not even that. */
  #reserve(need: number, want: number, hint: { backend: number; at: number } | undefined, room = want): Run[] {
    try {
      return this.pool.reserve(this.holder, this.volumeId, want, hint, room);
    } catch (err) {
      if (want === need) throw err;
      return this.pool.reserve(this.holder, this.volumeId, need, hint);
    }
  }
}
