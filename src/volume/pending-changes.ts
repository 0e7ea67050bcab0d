import type { Placement, VolumeChanges } from '../pool/pool';
import type { Extent, Run } from '../store/records';

interface Layer extends VolumeChanges { count: number; freeingBytes: number }

const emptyLayer = (): Layer => ({ removes: [], inserts: [], released: [], reclaimedBytes: 0, count: 0, freeingBytes: 0 });

const isEmpty = (l: Layer): boolean =>
  l.inserts.length === 0 && l.removes.length === 0 && l.released.length === 0 && l.sizeBytes === undefined && l.mtimeMs === undefined && l.reclaimedBytes === 0;

/** Index of the first element whose end lies past `at` (elements sorted, not overlapping). */
function firstEndingAfter<T>(list: T[], at: number, end: (x: T) => number): number {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (end(list[mid]!) <= at) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

const pEnd = (p: Placement): number => p.vstart + p.run.len;

function clipPlacement(p: Placement, s: number, t: number): Placement {
  return { vstart: s, run: { backend: p.run.backend, start: p.run.start + (s - p.vstart), len: t - s } };
}

function subtract(list: Extent[], s: number, t: number): Extent[] {
  const out: Extent[] = [];
  for (const e of list) {
    const end = e.vstart + e.len;
    if (end <= s || e.vstart >= t) { out.push(e); continue; }
    if (e.vstart < s) out.push({ ...e, len: s - e.vstart });
    if (end > t) out.push({ ...e, vstart: t, len: end - t, boff: e.boff + (t - e.vstart) });
  }
  return out;
}

/**
 * A volume's map changes that are not committed yet: what the data path wrote into new space
 * and what it discarded since the last commit. Reads and writes see the map through them.
 * A commit first freezes the open layer (so that only pieces whose data was written before it
 * started go in), flushes the backends, then commits the frozen layers in order, a big one in
 * parts; writes go on meanwhile into a new open layer. Discarded space stays mapped in the
 * store until the commit that unmaps it is durable, so nothing freed can be handed out before then.
 */
export class PendingChanges {
  readonly #frozen: Layer[] = [];
  #open: Layer = emptyLayer();

  /** Entries in the open layer: the memory this holds. */
  get size(): number {
    return this.#open.count;
  }

  /** Nothing to commit. */
  get empty(): boolean {
    return this.#frozen.length === 0 && isEmpty(this.#open);
  }

  /** Map or size changes wait (an mtime alone can wait for the next commit or the close). */
  get mapChanged(): boolean {
    const l = this.#open;
    return this.#frozen.length > 0 || l.inserts.length > 0 || l.removes.length > 0 || l.released.length > 0 || l.sizeBytes !== undefined || l.reclaimedBytes > 0;
  }

  /** Mapped bytes discarded and not committed yet: the next commit gives them back. */
  get freeingBytes(): number {
    return [...this.#frozen, this.#open].reduce((n, l) => n + l.freeingBytes, 0);
  }

  /** The volume size set since the last commit, if any. */
  get sizeBytes(): number | undefined {
    return this.#open.sizeBytes ?? this.#frozen.findLast((l) => l.sizeBytes !== undefined)?.sizeBytes;
  }

  /** The committed extents of [start, end) as the data path sees them (clipped, in order). */
  view(committed: Extent[], start: number, end: number): Extent[] {
    let list = committed;
    for (const layer of [...this.#frozen, this.#open]) {
      for (let i = firstEndingAfter(layer.removes, start, (r) => r.end); i < layer.removes.length && layer.removes[i]!.start < end; i++) {
        list = subtract(list, layer.removes[i]!.start, layer.removes[i]!.end);
      }
      let added = false;
      for (let i = firstEndingAfter(layer.inserts, start, pEnd); i < layer.inserts.length && layer.inserts[i]!.vstart < end; i++) {
        const p = clipPlacement(layer.inserts[i]!, Math.max(start, layer.inserts[i]!.vstart), Math.min(end, pEnd(layer.inserts[i]!)));
        // A copy on write lies over what a snapshot shares; anything else over a hole.
        list = [...subtract(list, p.vstart, p.vstart + p.run.len), { vstart: p.vstart, len: p.run.len, backend: p.run.backend, boff: p.run.start }];
        added = true;
      }
      if (added) list.sort((x, y) => x.vstart - y.vstart);
    }
    return list;
  }

  /** Records a piece written into new space (into a hole of the current view, or over blocks a snapshot shares). */
  insert(p: Placement): void {
    const list = this.#open.inserts;
    const i = firstEndingAfter(list, p.vstart, pEnd);
    const prev = list[i - 1];
    if (prev && pEnd(prev) === p.vstart && prev.run.backend === p.run.backend && prev.run.start + prev.run.len === p.run.start) {
      prev.run = { ...prev.run, len: prev.run.len + p.run.len };
      return;
    }
    list.splice(i, 0, { vstart: p.vstart, run: { ...p.run } });
    this.#open.count++;
  }

  /** Unmaps [start, end), where `bytes` are mapped: pieces not yet committed are given back, committed ones unmapped at the commit. */
  discard(start: number, end: number, bytes: number): void {
    const layer = this.#open;
    layer.freeingBytes += bytes;
    const kept: Placement[] = [];
    for (const p of layer.inserts) {
      const e = pEnd(p);
      if (e <= start || p.vstart >= end) { kept.push(p); continue; }
      if (p.vstart < start) kept.push(clipPlacement(p, p.vstart, start));
      layer.released.push(clipPlacement(p, Math.max(start, p.vstart), Math.min(end, e)).run);
      if (e > end) kept.push(clipPlacement(p, end, e));
    }
    layer.inserts = kept;
    const removes = layer.removes;
    let s = start;
    let t = end;
    const i = firstEndingAfter(removes, start - 1, (r) => r.end);
    let j = i;
    while (j < removes.length && removes[j]!.start <= end) {
      s = Math.min(s, removes[j]!.start);
      t = Math.max(t, removes[j]!.end);
      j++;
    }
    removes.splice(i, j - i, { start: s, end: t });
    layer.count = layer.inserts.length + removes.length;
  }

  /** Gives back space taken for a write that failed. */
  release(runs: Run[]): void {
    this.#open.released.push(...runs);
  }

  setSize(sizeBytes: number): void {
    this.#open.sizeBytes = sizeBytes;
  }

  touch(mtimeMs: number): void {
    this.#open.mtimeMs = mtimeMs;
  }

  addReclaimed(bytes: number): void {
    this.#open.reclaimedBytes += bytes;
  }

  /** Starts a commit: the open layer joins the frozen ones, which the commit takes part by part (next, committedPart). */
  freeze(): void {
    if (!isEmpty(this.#open)) {
      this.#frozen.push(this.#open);
      this.#open = emptyLayer();
    }
  }

  /**
   * What the commit applies next: the oldest frozen layer, or, when it holds more than
   * `maxEntries` map entries, its removes and the inserts first in backend order (scattered
   * writes took consecutive pieces of a reservation, so a part takes whole runs of it); its
   * released runs, size and mtime go with its last part. Undefined when all is committed.
   */
  next(maxEntries: number): VolumeChanges | undefined {
    const l = this.#frozen[0];
    if (!l) return undefined;
    if (l.removes.length + l.inserts.length <= maxEntries) return l;
    const byRun = [...l.inserts].sort((a, b) => a.run.backend - b.run.backend || a.run.start - b.run.start);
    return { removes: l.removes, inserts: byRun.slice(0, Math.max(1, maxEntries - l.removes.length)), released: [], reclaimedBytes: 0 };
  }

  /** Whether `part` (from next()) is all that is left to commit. */
  isLast(part: VolumeChanges): boolean {
    return this.#frozen.length === 1 && part === this.#frozen[0];
  }

  /** The part next() returned is durable now: it leaves the frozen layers (reads find it in the store). */
  committedPart(part: VolumeChanges): void {
    const l = this.#frozen[0]!;
    if (part === l) {
      this.#frozen.shift();
      return;
    }
    const done = new Set(part.inserts);
    l.inserts = l.inserts.filter((p) => !done.has(p));
    if (part.removes.length > 0) {
      l.removes = [];
      l.freeingBytes = 0;
    }
    l.count = l.inserts.length;
  }
}
