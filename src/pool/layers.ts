import type { MetaStore } from '../store/meta-store';
import { HOLE_BACKEND, type Extent, type LayerRecord } from '../store/records';
import { clip, type VolumeMap } from './volume-map';

/** Entries handled per step when a whole layer is freed or merged: bounds the memory, whatever the map's size. */
const STEP = 4096;
/** hideBelow looks at this much of the layers below at a time (a discard of a whole volume). */
const WINDOW = 2 ** 30;

/** The parts of [start, end) that `list` (sorted, clipped to it) does not cover. */
function gaps(list: Extent[], start: number, end: number): [number, number][] {
  const out: [number, number][] = [];
  let pos = start;
  for (const e of list) {
    if (e.vstart > pos) out.push([pos, e.vstart]);
    pos = Math.max(pos, e.vstart + e.len);
  }
  if (pos < end) out.push([pos, end]);
  return out;
}

const isHole = (e: Extent): boolean => e.backend === HOLE_BACKEND;

/**
 * Map layers and the sharing of blocks between them. A volume's writes go to its top layer;
 * a snapshot freezes the top (it becomes the snapshot's layer) and gives the volume a new,
 * empty top above it; a clone is a new top above a snapshot's layer. A view (volume or
 * snapshot) reads its top, then each layer below through the gaps; hole entries (backend 0)
 * hide what lies below them. Every block belongs to exactly one layer entry, so a block is
 * counted once however many views share it, and moving it (a layout change) moves it for all.
 *
 * References are counted per layer (LayerRecord.children, plus its owner): an owner gone and
 * no child left frees the layer; one child left merges the layer into it (what the child
 * hides is freed, the rest moves up), so chains stay as deep as the snapshots that exist.
 * All mutations run inside the caller's transaction; `release` gives a freed run back.
 */
export class Layers {
  constructor(private readonly store: MetaStore, private readonly map: VolumeMap, private readonly release: (e: Extent) => void) {}

  record(id: number): LayerRecord | undefined {
    return this.store.layers.get(id);
  }

  /** The layers a view with top `top` reads, top first. */
  chain(top: number): number[] {
    const out = [top];
    for (let p = this.store.layers.get(top)?.parent; p !== undefined; p = this.store.layers.get(p)?.parent) {
      if (out.includes(p)) throw new Error(`map layers corrupt: layer ${p} lies below itself`);
      out.push(p);
    }
    return out;
  }

  /**
   * What [start, end) reads through `chain`: data extents in order, clipped, those from below
   * the top marked shared. Hole entries are not returned: they only hide.
   */
  resolve(chain: readonly number[], start: number, end: number): Extent[] {
    const top = this.map.lookup(chain[0]!, start, end - start);
    if (chain.length === 1) return top.some(isHole) ? top.filter((e) => !isHole(e)) : top;
    const out = top.filter((e) => !isHole(e));
    let todo = gaps(top, start, end);
    for (let depth = 1; depth < chain.length && todo.length > 0; depth++) {
      // One lookup over the span of the gaps, walked against them: a lookup per gap costs
      // too much when the layer above is fragmented (df over a million entries).
      const found = this.map.lookup(chain[depth]!, todo[0]![0], todo[todo.length - 1]![1] - todo[0]![0]);
      const next: [number, number][] = [];
      let i = 0;
      for (const [s, t] of todo) {
        while (i < found.length && found[i]!.vstart + found[i]!.len <= s) i++;
        const inGap: Extent[] = [];
        for (let j = i; j < found.length && found[j]!.vstart < t; j++) inGap.push(clip(found[j]!, s, t));
        for (const e of inGap) if (!isHole(e)) out.push({ ...e, shared: true });
        next.push(...gaps(inGap, s, t));
      }
      todo = next;
    }
    return out.sort((x, y) => x.vstart - y.vstart);
  }

  /** Makes hole entries in `top` over whatever the layers below it show in [start, end) (that range of `top` is empty). */
  hideBelow(chain: readonly number[], start: number, end: number): void {
    if (chain.length < 2) return;
    for (let w = start; w < end; w += WINDOW) {
      for (const e of this.resolve(chain.slice(1), w, Math.min(end, w + WINDOW))) this.map.insert(chain[0]!, { vstart: e.vstart, len: e.len, backend: HOLE_BACKEND, boff: e.vstart });
    }
  }

  /** A new layer above `parent` (or a root layer), owned by `owner`. */
  add(id: number, parent: number | undefined, owner: number): void {
    if (parent !== undefined) this.#adjustChildren(parent, +1);
    this.store.layers.put(id, { id, ...(parent === undefined ? {} : { parent }), children: 0, owner });
  }

  /** `layer` (a volume's top) now belongs to snapshot `owner` and is frozen. */
  setOwner(layer: number, owner: number | undefined): void {
    const { owner: _old, ...rec } = this.store.layers.get(layer) ?? { id: layer, children: 0 };
    this.store.layers.put(layer, owner === undefined ? rec : { ...rec, owner });
  }

  /**
   * The owner of `layer` is gone (a volume deleted or reverted, a snapshot deleted): the layer is
   * freed, merged into its one child, or kept for its children. Returns the bytes freed.
   */
  dropOwner(layer: number): number {
    this.setOwner(layer, undefined);
    return this.#settle(layer);
  }

  /**
   * Bytes dropOwner(layer) would free, computed without changing anything. `ownBytes`: the
   * layer's data bytes when the caller keeps count (a volume's top), saving a scan.
   */
  wouldFree(layer: number, ownBytes?: number): number {
    return this.#simulate(layer, undefined, ownBytes);
  }

  /** Bytes of data (hole entries not counted) a layer maps. */
  bytes(layer: number): number {
    let n = 0;
    for (const e of this.map.extents(layer)) if (!isHole(e)) n += e.len;
    return n;
  }

  /**
   * A map layer's generation, bumped by every layout change applied to it: kept on the volume
   * record for a volume never snapshotted (its id is its layer), else on the layer record.
   * Undefined when no such layer exists.
   */
  generation(layer: number): number | undefined {
    const rec = this.store.layers.get(layer);
    if (rec) return rec.generation ?? 0;
    const v = this.store.volumes.get(layer);
    return v && v.layer === undefined ? (v.generation ?? 0) : undefined;
  }

  /** Bumps the generation (inside a transaction); undefined when the layer no longer exists. */
  bumpGeneration(layer: number): number | undefined {
    const g = this.generation(layer);
    if (g === undefined) return undefined;
    const rec = this.store.layers.get(layer);
    if (rec) this.store.layers.put(layer, { ...rec, generation: g + 1 });
    else this.store.volumes.put(layer, { ...this.store.volumes.get(layer)!, generation: g + 1 });
    return g + 1;
  }

  /** Layers whose parent is `layer`. */
  children(layer: number): number[] {
    const out: number[] = [];
    for (const { value } of this.store.layers.getRange()) if (value.parent === layer) out.push(value.id);
    return out;
  }

  /** Frees or merges an unowned layer according to its children; then its parent, if it lost a child. */
  #settle(layer: number): number {
    const rec = this.store.layers.get(layer);
    if (rec?.owner !== undefined) return 0;
    const children = rec?.children ?? 0;
    if (children >= 2) return 0;
    if (children === 1) return this.#mergeIntoChild(layer);
    let freed = this.#empty(layer);
    this.store.layers.remove(layer);
    if (rec?.parent !== undefined) {
      this.#adjustChildren(rec.parent, -1);
      freed += this.#settle(rec.parent);
    }
    return freed;
  }

  /** What #settle would free if `gone` (a child of `layer`, or its owner when undefined) went away. */
  #simulate(layer: number, gone: number | undefined, ownBytes?: number): number {
    const rec = this.store.layers.get(layer);
    if (gone !== undefined && rec?.owner !== undefined) return 0;
    const left = this.children(layer).filter((c) => c !== gone);
    if (left.length >= 2) return 0;
    if (left.length === 1) return this.#hiddenBy(layer, left[0]!);
    return (ownBytes ?? this.bytes(layer)) + (rec?.parent === undefined ? 0 : this.#simulate(rec.parent, layer));
  }

  /** Data bytes of `layer` that `child`'s own entries (data or holes) hide. */
  #hiddenBy(layer: number, child: number): number {
    let n = 0;
    for (const e of this.map.extents(layer)) {
      if (isHole(e)) continue;
      for (const c of this.map.lookup(child, e.vstart, e.len)) n += c.len;
    }
    return n;
  }

  /** Removes every entry of `layer`, releasing the data. */
  #empty(layer: number): number {
    let freed = 0;
    for (;;) {
      const batch = this.#firstEntries(layer);
      if (batch.length === 0) return freed;
      for (const e of batch) {
        this.map.remove(layer, e.vstart, e.len);
        if (!isHole(e)) {
          this.release(e);
          freed += e.len;
        }
      }
    }
  }

  /**
   * Moves what `layer` shows through its only child into the child, frees what the child hides,
   * and puts the child where `layer` was. Views through the child read the same bytes before
   * and after; a daemon that looked the child up before the merge finds the moved entries
   * there at its next lookup (and frees them at its commit if it wrote over them meanwhile).
   */
  #mergeIntoChild(layer: number): number {
    const [child] = this.children(layer);
    if (child === undefined) throw new Error(`map layers corrupt: layer ${layer} counts a child it does not have`);
    let freed = 0;
    let moved = 0;
    for (;;) {
      const batch = this.#firstEntries(layer);
      if (batch.length === 0) break;
      for (const e of batch) {
        this.map.remove(layer, e.vstart, e.len);
        const cover = this.map.lookup(child, e.vstart, e.len);
        for (const c of cover) {
          if (!isHole(e)) {
            this.release({ vstart: c.vstart, len: c.len, backend: e.backend, boff: e.boff + (c.vstart - e.vstart) });
            freed += c.len;
          }
        }
        for (const [s, t] of gaps(cover, e.vstart, e.vstart + e.len)) {
          this.map.insert(child, { vstart: s, len: t - s, backend: e.backend, boff: isHole(e) ? s : e.boff + (s - e.vstart) });
          if (!isHole(e)) moved += t - s;
        }
      }
    }
    const rec = this.store.layers.get(layer);
    const c = this.store.layers.get(child)!;
    const { parent: _p, ...rest } = c;
    this.store.layers.put(child, rec?.parent === undefined ? rest : { ...rest, parent: rec.parent });
    this.store.layers.remove(layer);
    if (moved > 0 && c.owner !== undefined) {
      const v = this.store.volumes.get(c.owner);
      if (v && (v.layer ?? v.id) === child) this.store.volumes.put(v.id, { ...v, allocatedBytes: v.allocatedBytes + moved });
    }
    return freed;
  }

  #firstEntries(layer: number): Extent[] {
    const out: Extent[] = [];
    for (const e of this.map.extents(layer)) {
      out.push(e);
      if (out.length === STEP) break;
    }
    return out;
  }

  #adjustChildren(layer: number, by: number): void {
    const rec = this.store.layers.get(layer) ?? { id: layer, children: 0 };
    if (rec.children + by < 0) throw new Error(`map layers corrupt: layer ${layer} would have ${rec.children + by} children`);
    this.store.layers.put(layer, { ...rec, children: rec.children + by });
  }
}
