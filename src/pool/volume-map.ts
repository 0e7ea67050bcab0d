import type { Database } from 'lmdb';
import type { MapKey } from './pool-store';
import type { Extent, MapValue } from './records';

/**
 * The map: per volume, extents keyed [volume, vstart] -> {len, backend, boff}, never
 * overlapping, merged when adjacent in both address spaces. Reads are synchronous lookups;
 * mutations run inside the caller's write transaction.
 */
export class VolumeMap {
  constructor(private readonly db: Database<MapValue, MapKey>) {}

  /** Extents overlapping [offset, offset+len), clipped to it, in order. */
  lookup(volume: number, offset: number, len: number): Extent[] {
    const end = offset + len;
    const out: Extent[] = [];
    const prev = this.startingAtOrBefore(volume, offset);
    if (prev && prev.vstart + prev.len > offset) out.push(clip(prev, offset, end));
    for (const { key, value } of this.db.getRange({ start: [volume, offset + 1], end: [volume, end] })) {
      out.push(clip({ vstart: key[1], ...value }, offset, end));
    }
    return out;
  }

  /** Records a new extent; the range must be unmapped. */
  insert(volume: number, e: Extent): void {
    let { vstart, len, boff } = e;
    const prev = this.startingAtOrBefore(volume, vstart - 1);
    if (prev && prev.vstart + prev.len > vstart) throw new Error(`map corrupt: volume ${volume} extent at ${prev.vstart} overlaps insert at ${vstart}`);
    if (prev && prev.vstart + prev.len === vstart && prev.backend === e.backend && prev.boff + prev.len === boff) {
      vstart = prev.vstart;
      boff = prev.boff;
      len += prev.len;
    }
    const nextKey: MapKey = [volume, e.vstart + e.len];
    const next = this.db.get(nextKey);
    if (next && next.backend === e.backend && next.boff === e.boff + e.len) {
      this.db.remove(nextKey);
      len += next.len;
    }
    this.db.put([volume, vstart], { len, backend: e.backend, boff });
  }

  /** Unmaps [offset, offset+len) and returns the backend runs it held. */
  remove(volume: number, offset: number, len: number): Extent[] {
    const end = offset + len;
    const hit = this.lookup(volume, offset, len);
    const prev = this.startingAtOrBefore(volume, offset);
    if (prev && prev.vstart < offset && prev.vstart + prev.len > offset) {
      this.db.put([volume, prev.vstart], { len: offset - prev.vstart, backend: prev.backend, boff: prev.boff });
      if (prev.vstart + prev.len > end) {
        const cut = end - prev.vstart;
        this.db.put([volume, end], { len: prev.vstart + prev.len - end, backend: prev.backend, boff: prev.boff + cut });
      }
    }
    for (const { key, value } of [...this.db.getRange({ start: [volume, offset], end: [volume, end] })]) {
      this.db.remove(key);
      if (key[1] + value.len > end) {
        const cut = end - key[1];
        this.db.put([volume, end], { len: value.len - cut, backend: value.backend, boff: value.boff + cut });
      }
    }
    return hit;
  }

  *extents(volume: number): Iterable<Extent> {
    for (const { key, value } of this.db.getRange({ start: [volume, 0], end: [volume + 1, 0], snapshot: false })) {
      yield { vstart: key[1], ...value };
    }
  }

  /** Every extent from [volume, offset] on, through the following volumes, the first clipped at offset. */
  *from(volume: number, offset: number): Iterable<Extent & { volume: number }> {
    const prev = this.startingAtOrBefore(volume, offset);
    if (prev && prev.vstart + prev.len > offset) yield { volume, ...clip(prev, offset, prev.vstart + prev.len) };
    for (const { key, value } of this.db.getRange({ start: [volume, offset + 1], snapshot: false })) yield { volume: key[0], vstart: key[1], ...value };
  }

  *all(): Iterable<Extent & { volume: number }> {
    for (const { key, value } of this.db.getRange({ snapshot: false })) yield { volume: key[0], vstart: key[1], ...value };
  }

  private startingAtOrBefore(volume: number, offset: number): Extent | undefined {
    if (offset < 0) return undefined;
    for (const { key, value } of this.db.getRange({ start: [volume, offset], end: [volume, -1], reverse: true, limit: 1 })) {
      return { vstart: key[1], ...value };
    }
    return undefined;
  }
}

function clip(e: Extent, start: number, end: number): Extent {
  const s = Math.max(e.vstart, start);
  const t = Math.min(e.vstart + e.len, end);
  return { vstart: s, len: t - s, backend: e.backend, boff: e.boff + (s - e.vstart) };
}
