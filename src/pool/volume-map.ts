import type { Table } from '../store/table';
import { BLOCK, type Extent } from '../store/records';

/*
 * Entries are packed binary, not msgpack, because the map is what grows with random writes
 * (one entry per scattered extent) and its pages are what a daemon keeps mapped: key = volume
 * (u32) + first block (u48), value = length in blocks (u48) + backend (u16) + backend block (u48).
 */
const KEY_BYTES = 10;
const VALUE_BYTES = 14;
const MAX_BLOCKS = 2 ** 48;

function blocks(bytes: number, what: string): number {
  const n = bytes / BLOCK;
  if (!Number.isInteger(n) || n < 0 || n >= MAX_BLOCKS) throw new Error(`map: ${what} ${bytes} is not a whole number of 4 KiB blocks below 2^48`);
  return n;
}

function key(volume: number, block: number): Buffer {
  const k = Buffer.allocUnsafe(KEY_BYTES);
  k.writeUInt32BE(volume, 0);
  k.writeUIntBE(Math.min(block, MAX_BLOCKS - 1), 4, 6);
  return k;
}

/** Sorts before every key of the volume. */
function prefix(volume: number): Buffer {
  const k = Buffer.allocUnsafe(4);
  k.writeUInt32BE(volume, 0);
  return k;
}

function encode(e: Extent): Buffer {
  const v = Buffer.allocUnsafe(VALUE_BYTES);
  v.writeUIntBE(blocks(e.len, 'length'), 0, 6);
  v.writeUInt16BE(e.backend, 6);
  v.writeUIntBE(blocks(e.boff, 'backend offset'), 8, 6);
  return v;
}

function decode(k: Buffer, v: Buffer): Extent & { volume: number } {
  return { volume: k.readUInt32BE(0), vstart: k.readUIntBE(4, 6) * BLOCK, len: v.readUIntBE(0, 6) * BLOCK, backend: v.readUInt16BE(6), boff: v.readUIntBE(8, 6) * BLOCK };
}

/**
 * The map: per volume, extents keyed [volume, vstart] -> {len, backend, boff}, never
 * overlapping, merged when adjacent in both address spaces, all 4 KiB aligned. Reads are
 * synchronous lookups; mutations run inside the caller's write transaction.
 */
export class VolumeMap {
  constructor(private readonly db: Table<Buffer, Buffer>) {}

  /** Extents overlapping [offset, offset+len), clipped to it, in order. */
  lookup(volume: number, offset: number, len: number): Extent[] {
    const end = offset + len;
    const out: Extent[] = [];
    const prev = this.startingAtOrBefore(volume, offset);
    if (prev && prev.vstart + prev.len > offset) out.push(clip(prev, offset, end));
    const from = Math.floor(offset / BLOCK) + 1;
    const to = Math.ceil(end / BLOCK);
    // A range inside one block (most requests: 4 KiB) needs no second cursor.
    if (from < to) for (const e of this.#range(volume, from, to)) out.push(clip(e, offset, end));
    return out;
  }

  /**
   * Records a new extent. The range must be unmapped, unless `over`: then what it held is
   * removed first and returned. One cursor finds both an overlap and the entry to merge with.
   */
  insert(volume: number, e: Extent, over = false): Extent[] {
    let { vstart, len, boff } = e;
    let prev = this.startingAtOrBefore(volume, vstart + len - 1);
    let displaced: Extent[] = [];
    if (prev && prev.vstart + prev.len > vstart) {
      if (!over) throw new Error(`map corrupt: volume ${volume} extent at ${prev.vstart} overlaps insert at ${vstart}`);
      displaced = this.remove(volume, vstart, len);
      prev = this.startingAtOrBefore(volume, vstart - 1);
    }
    if (prev && prev.vstart + prev.len === vstart && prev.backend === e.backend && prev.boff + prev.len === boff) {
      vstart = prev.vstart;
      boff = prev.boff;
      len += prev.len;
    }
    const nextKey = key(volume, blocks(e.vstart + e.len, 'offset'));
    const raw = this.db.get(nextKey);
    const next = raw && decode(nextKey, raw);
    if (next && next.backend === e.backend && next.boff === e.boff + e.len) {
      this.db.remove(nextKey);
      len += next.len;
    }
    this.#put(volume, { vstart, len, backend: e.backend, boff });
    return displaced;
  }

  /** Unmaps [offset, offset+len) and returns the backend runs it held. */
  remove(volume: number, offset: number, len: number): Extent[] {
    const end = offset + len;
    const hit = this.lookup(volume, offset, len);
    const prev = this.startingAtOrBefore(volume, offset);
    if (prev && prev.vstart < offset && prev.vstart + prev.len > offset) {
      this.#put(volume, { vstart: prev.vstart, len: offset - prev.vstart, backend: prev.backend, boff: prev.boff });
      if (prev.vstart + prev.len > end) {
        const cut = end - prev.vstart;
        this.#put(volume, { vstart: end, len: prev.len - cut, backend: prev.backend, boff: prev.boff + cut });
      }
    }
    for (const e of [...this.#range(volume, Math.ceil(offset / BLOCK), Math.ceil(end / BLOCK))]) {
      this.db.remove(key(volume, e.vstart / BLOCK));
      if (e.vstart + e.len > end) {
        const cut = end - e.vstart;
        this.#put(volume, { vstart: end, len: e.len - cut, backend: e.backend, boff: e.boff + cut });
      }
    }
    return hit;
  }

  *extents(volume: number): Iterable<Extent> {
    for (const { vstart, len, backend, boff } of this.#range(volume, 0, MAX_BLOCKS)) yield { vstart, len, backend, boff };
  }

  /** Every extent from [volume, offset] on, through the following volumes, the first clipped at offset. */
  *from(volume: number, offset: number): Iterable<Extent & { volume: number }> {
    const prev = this.startingAtOrBefore(volume, offset);
    if (prev && prev.vstart + prev.len > offset) yield { volume, ...clip(prev, offset, prev.vstart + prev.len) };
    for (const { key: k, value } of this.db.getRange({ start: key(volume, Math.floor(offset / BLOCK) + 1) })) yield decode(k, value);
  }

  *all(): Iterable<Extent & { volume: number }> {
    for (const { key: k, value } of this.db.getRange()) yield decode(k, value);
  }

  private startingAtOrBefore(volume: number, offset: number): Extent | undefined {
    if (offset < 0) return undefined;
    for (const { key: k, value } of this.db.getRange({ start: key(volume, Math.floor(offset / BLOCK)), end: prefix(volume), reverse: true, limit: 1 })) {
      const { vstart, len, backend, boff } = decode(k, value);
      return { vstart, len, backend, boff };
    }
    return undefined;
  }

  /** Extents of one volume starting in blocks [from, to). */
  *#range(volume: number, from: number, to: number): Iterable<Extent> {
    for (const { key: k, value } of this.db.getRange({ start: key(volume, from), end: key(volume, to) })) {
      const { vstart, len, backend, boff } = decode(k, value);
      yield { vstart, len, backend, boff };
    }
  }

  #put(volume: number, e: Extent): void {
    this.db.put(key(volume, blocks(e.vstart, 'offset')), encode(e));
  }
}

/** `e` cut to [start, end) (hole entries keep boff = vstart). */
export function clip(e: Extent, start: number, end: number): Extent {
  const s = Math.max(e.vstart, start);
  const t = Math.min(e.vstart + e.len, end);
  return { vstart: s, len: t - s, backend: e.backend, boff: e.boff + (s - e.vstart) };
}
