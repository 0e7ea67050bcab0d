import type { FreeKey } from '../store/meta-store';
import type { Table } from '../store/table';
import type { Run } from '../store/records';

/**
 * The free space table: per backend, free runs keyed [backend, start] -> length, kept
 * coalesced. Functions here run inside the caller's write transaction.
 */
export class SpaceMap {
  constructor(private readonly db: Table<FreeKey, number>) {}

  /** Free run containing `offset`, if any. */
  containing(backend: number, offset: number): Run | undefined {
    for (const { key, value } of this.db.getRange({ start: [backend, offset], end: [backend, -1], reverse: true, limit: 1 })) {
      const [, start] = key;
      if (start + value > offset) return { backend, start, len: value };
    }
    return undefined;
  }

  /** Takes up to `want` bytes starting exactly at `offset`; returns what it got (maybe 0). */
  takeAt(backend: number, offset: number, want: number): Run | undefined {
    const run = this.containing(backend, offset);
    if (!run) return undefined;
    const len = Math.min(want, run.start + run.len - offset);
    this.remove(run, offset, len);
    return { backend, start: offset, len };
  }

  /**
   * First fit: the lowest run of at least `room` bytes (default `want`), else the largest run;
   * `want` bytes are cut from its start. A stream asks for more room than it takes now so that
   * it can keep growing in place.
   */
  take(backend: number, want: number, room = want): Run | undefined {
    let largest: Run | undefined;
    for (const { key, value } of this.db.getRange({ start: [backend, 0], end: [backend + 1, 0]})) {
      const run = { backend, start: key[1], len: value };
      if (run.len >= room) { largest = run; break; }
      if (!largest || run.len > largest.len) largest = run;
    }
    if (!largest) return undefined;
    const len = Math.min(want, largest.len);
    this.remove(largest, largest.start, len);
    return { backend, start: largest.start, len };
  }

  /** Returns a run to the table, merging with its neighbours. */
  give(run: Run): void {
    let { start, len } = run;
    const before = this.containing(run.backend, start - 1);
    if (before && before.start + before.len === start) {
      start = before.start;
      len += before.len;
    } else if (before) {
      throw new Error(`free table corrupt: backend ${run.backend} run at ${run.start} overlaps free run at ${before.start}`);
    }
    const after = this.db.get([run.backend, run.start + run.len]);
    if (after !== undefined) {
      this.db.remove([run.backend, run.start + run.len]);
      len += after;
    }
    this.db.put([run.backend, start], len);
  }

  *runs(backend?: number): Iterable<Run> {
    const range = backend === undefined ? {} : { start: [backend, 0] as FreeKey, end: [backend + 1, 0] as FreeKey };
    for (const { key, value } of this.db.getRange(range)) yield { backend: key[0], start: key[1], len: value };
  }

  private remove(run: Run, offset: number, len: number): void {
    this.db.remove([run.backend, run.start]);
    if (offset > run.start) this.db.put([run.backend, run.start], offset - run.start);
    const end = offset + len;
    const runEnd = run.start + run.len;
    if (end < runEnd) this.db.put([run.backend, end], runEnd - end);
  }
}
