/** A run of filesystem blocks. */
export interface BlockRun { start: number; count: number }

/** Sorts runs and joins overlapping or adjacent ones. */
export function mergeRuns(runs: BlockRun[]): BlockRun[] {
  const sorted = runs.filter((r) => r.count > 0).sort((a, b) => a.start - b.start);
  const out: BlockRun[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last !== undefined && r.start <= last.start + last.count) {
      last.count = Math.max(last.count, r.start + r.count - last.start);
    } else {
      out.push({ start: r.start, count: r.count });
    }
  }
  return out;
}

/** Blocks of `from` not in `remove`; both sorted and merged. */
export function subtractRuns(from: BlockRun[], remove: BlockRun[]): BlockRun[] {
  const out: BlockRun[] = [];
  let j = 0;
  for (const r of from) {
    let start = r.start;
    const end = r.start + r.count;
    while (j < remove.length && (remove[j] as BlockRun).start + (remove[j] as BlockRun).count <= start) j++;
    let k = j;
    while (start < end && k < remove.length) {
      const x = remove[k] as BlockRun;
      if (x.start >= end) break;
      if (x.start > start) out.push({ start, count: x.start - start });
      start = Math.max(start, x.start + x.count);
      k++;
    }
    if (start < end) out.push({ start, count: end - start });
  }
  return out;
}
