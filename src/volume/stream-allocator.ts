import type { Placement, Pool } from '../pool/pool';
import type { Holder, Run } from '../pool/records';
import { logger } from '../util/log';

const debug = logger('alloc');

const MAX_RESERVATION = 64 * 1024 * 1024;

interface Cursor { next: number; lastEnd: { backend: number; at: number } | undefined }

/**
 * Adaptive allocation for one volume. A write that continues where the stream's previous
 * allocation ended is served from a reservation that doubles with each continuation (up to
 * 64 MiB), so a stream gets one long contiguous backend run even while other writes and other
 * volumes allocate. Any other write gets exactly what it needs (scattered small writes such as
 * mkfs's get small allocations); if the next write continues it, a new stream starts there.
 */
export class StreamAllocator {
  #stream: Cursor = { next: -1, lastEnd: undefined };
  #candidate: Cursor = { next: -1, lastEnd: undefined };
  #grow = 0;
  #res: Run | undefined;

  constructor(private readonly pool: Pool, private readonly holder: Holder, private readonly volumeId: number) {}

  place(vstart: number, len: number): Placement[] {
    if (vstart !== this.#stream.next && vstart === this.#candidate.next) {
      this.#returnReservation();
      this.#stream = this.#candidate;
      this.#candidate = { next: -1, lastEnd: undefined };
    }
    const sequential = vstart === this.#stream.next;
    const out = sequential ? this.#placeStream(vstart, len) : this.#placeExact(vstart, len, this.#candidate.lastEnd);
    const last = out[out.length - 1]?.run;
    const cursor = { next: vstart + len, lastEnd: last && { backend: last.backend, at: last.start + last.len } };
    if (sequential) this.#stream = cursor;
    else this.#candidate = cursor;
    debug('vol %d place [%d,+%d) %s -> %o', this.volumeId, vstart, len, sequential ? 'stream' : 'exact', out.map((p) => p.run));
    return out;
  }

  /** Hands back the unused part of the stream reservation (on close and at exit). */
  returnReservation(): void {
    this.#returnReservation();
    this.#stream = { next: -1, lastEnd: undefined };
  }

  #placeExact(vstart: number, len: number, hint: Cursor['lastEnd']): Placement[] {
    const out: Placement[] = [];
    let v = vstart;
    for (const run of this.pool.reserve(this.holder, this.volumeId, len, hint)) {
      out.push({ vstart: v, run });
      v += run.len;
    }
    return out;
  }

  #placeStream(vstart: number, len: number): Placement[] {
    this.#grow = Math.min(Math.max(this.#grow * 2, len), MAX_RESERVATION);
    const out: Placement[] = [];
    let v = vstart;
    let need = len;
    if (this.#res && this.pool.backend(this.#res.backend).draining === true) this.#returnReservation();
    if (this.#res) {
      const r = this.#res;
      const take = Math.min(need, r.len);
      out.push({ vstart: v, run: { backend: r.backend, start: r.start, len: take } });
      this.#res = take === r.len ? undefined : { backend: r.backend, start: r.start + take, len: r.len - take };
      v += take;
      need -= take;
    }
    if (need === 0) return out;
    const spare: Run[] = [];
    let runs: Run[];
    try {
      runs = this.pool.reserve(this.holder, this.volumeId, Math.max(need, this.#grow), this.#stream.lastEnd, MAX_RESERVATION);
    } catch (err) {
      try {
        runs = this.pool.reserve(this.holder, this.volumeId, need, this.#stream.lastEnd);
      } catch {
        this.pool.unreserve(this.holder, out.map((p) => p.run));
        throw err;
      }
    }
    for (const r of runs) {
      if (need === 0) { spare.push(r); continue; }
      const take = Math.min(need, r.len);
      out.push({ vstart: v, run: { backend: r.backend, start: r.start, len: take } });
      v += take;
      need -= take;
      if (take < r.len) this.#res = { backend: r.backend, start: r.start + take, len: r.len - take };
    }
    this.pool.unreserve(this.holder, spare);
    return out;
  }

  #returnReservation(): void {
    if (!this.#res) return;
    const r = this.#res;
    this.#res = undefined;
    this.pool.unreserve(this.holder, [r]);
  }
}
