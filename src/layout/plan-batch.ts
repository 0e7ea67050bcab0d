import { BLOCK, type BackendRecord, type Extent, type Move, type Run } from '../store/records';

export interface BatchLimits {
  /** Most bytes moved per batch: they are copied while the range is held. */
  bytes: number;
  /** Longest volume range held by one batch. */
  span: number;
}

export interface PlannedBatch { volume: number; start: number; end: number; moves: Move[]; bytes: number }

export type PlacedExtent = Extent & { volume: number };

/**
 * The next batch: the first extent that needs to move and the ones after it in the same
 * volume, as long as they fit the limits. Extents in between that stay put are held too.
 */
export function planBatch(extents: Iterable<PlacedExtent>, needsMove: (e: PlacedExtent) => boolean, limits: BatchLimits): PlannedBatch | undefined {
  let batch: PlannedBatch | undefined;
  for (const e of extents) {
    if (!needsMove(e)) continue;
    if (!batch) batch = { volume: e.volume, start: e.vstart, end: e.vstart, moves: [], bytes: 0 };
    else if (e.volume !== batch.volume || e.vstart - batch.start >= limits.span) break;
    const room = Math.min(limits.bytes - batch.bytes, batch.start + limits.span - e.vstart);
    const len = Math.min(e.len, Math.floor(room / BLOCK) * BLOCK);
    if (len <= 0) break;
    batch.moves.push({ vstart: e.vstart, len, from: { backend: e.backend, boff: e.boff } });
    batch.bytes += len;
    batch.end = e.vstart + len;
    if (len < e.len || batch.bytes >= limits.bytes) break;
  }
  return batch;
}

export interface RebalanceStep { from: number; to: number; bytes: number }

/**
 * Rebalance evens out the fraction of each backend in use: the fullest backend (relative to
 * its share) gives to the emptiest. Nothing is left to do when no move would be larger than
 * `minMove`.
 */
export function rebalanceStep(backends: BackendRecord[], minMove: number): RebalanceStep | undefined {
  const usable = backends.filter((b) => b.draining !== true && b.capacityBytes > 0);
  const used = usable.reduce((n, b) => n + b.allocatedBytes, 0);
  const capacity = usable.reduce((n, b) => n + b.capacityBytes, 0);
  if (usable.length < 2 || capacity === 0) return undefined;
  const excess = (b: BackendRecord): number => b.allocatedBytes - (b.capacityBytes * used) / capacity;
  const sorted = [...usable].sort((x, y) => excess(y) - excess(x));
  const from = sorted[0]!;
  const to = sorted[sorted.length - 1]!;
  const free = to.capacityBytes - to.allocatedBytes - to.reservedBytes;
  const bytes = Math.floor(Math.min(excess(from), -excess(to), free) / BLOCK) * BLOCK;
  return bytes >= minMove ? { from: from.id, to: to.id, bytes } : undefined;
}

/** Splits the planned moves over the new runs, in order. */
export function assignRuns(planned: Move[], runs: Run[]): Move[] {
  const out: Move[] = [];
  let ri = 0;
  let used = 0;
  for (const m of planned) {
    let off = 0;
    while (off < m.len) {
      const r = runs[ri]!;
      const len = Math.min(m.len - off, r.len - used);
      out.push({ vstart: m.vstart + off, len, from: { backend: m.from.backend, boff: m.from.boff + off }, to: { backend: r.backend, boff: r.start + used } });
      off += len;
      used += len;
      if (used === r.len) { ri++; used = 0; }
    }
  }
  return out;
}
