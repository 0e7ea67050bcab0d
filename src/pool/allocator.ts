import type { MetaStore } from '../store/meta-store';
import { HOLE_BACKEND, type BackendRecord, type Extent, type Holder, type Run } from '../store/records';
import { FsError } from '../util/errors';
import { logger } from '../util/log';
import { holderAlive, holderId, parseHolderId } from './holder';
import type { SpaceMap } from './space-map';
import type { Layers } from './layers';
import type { VolumeMap } from './volume-map';

const debug = logger('alloc');

/** A placement: which backend and where, with the piece of the volume it will hold. */
export interface Placement { vstart: number; run: Run }

/** A range of a volume, in bytes. */
export interface VRange { start: number; end: number }

/**
 * What a volume's data path changed since its last commit, applied by `commitChanges` in one
 * transaction, in this order: unmap `removes` (their space goes back to the free table), map
 * `inserts` (written pieces of this holder's reservations), give back `released` reservations.
 */
export interface VolumeChanges {
  removes: VRange[];
  inserts: Placement[];
  released: Run[];
  sizeBytes?: number;
  reclaimedBytes: number;
  mtimeMs?: number;
}

/** `runs` sorted by backend and start, those that continue each other joined (overlapping ones are kept apart). */
function adjacentRunsJoined(runs: Run[]): Run[] {
  const sorted = [...runs].sort((a, b) => a.backend - b.backend || a.start - b.start);
  const out: Run[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && last.backend === r.backend && last.start + last.len === r.start) last.len += r.len;
    else out.push({ ...r });
  }
  return out;
}

/**
 * Space between the free table, reservations and the map: reserve (free -> a holder's
 * reservation), commit (reservation -> map), unmap (map -> free), with the backend and volume
 * counters moved in the same transaction. A reservation belongs to a process (or a layout
 * change); a dead process's reservations go back to the free table.
 */
export class Allocator {
  constructor(private readonly store: MetaStore, private readonly space: SpaceMap, private readonly map: VolumeMap, private readonly dir: string, private readonly layers: () => Layers) {}

  /**
   * Takes `want` bytes of backend space for `holder`, preferring to continue at `hint` so that
   * streams stay contiguous, else on the backend with most free space, in the lowest free run
   * with at least `room` bytes (else the largest). All or nothing. `keepBack` bytes of the free
   * space must stay free afterwards (the journal reserve; 0 for a write that may use it).
   */
  reserve(holder: Holder, volumeId: number, want: number, hint?: { backend: number; at: number }, room = want, keepBack = 0): Run[] {
    const hid = holderId(holder);
    return this.store.txn(() => {
      if (keepBack > 0 && this.freeBytes() - want < keepBack) throw new FsError('ENOSPC', `pool ${this.dir} is full: ${want} bytes wanted, the rest is its journal reserve`);
      const got: Run[] = [];
      let need = want;
      if (hint && this.store.backends.get(hint.backend)?.draining !== true) {
        const r = this.space.takeAt(hint.backend, hint.at, need);
        if (r) {
          this.adjustBackend(r.backend, 0, r.len);
          got.push(r);
          need -= r.len;
        }
      }
      while (need > 0) {
        const b = this.mostFreeBackend();
        const r = b === undefined ? undefined : this.space.take(b, need, Math.max(need, room));
        if (!r) throw new FsError('ENOSPC', `pool ${this.dir} is full: ${want} bytes wanted`);
        this.adjustBackend(r.backend, 0, r.len);
        got.push(r);
        need -= r.len;
      }
      for (const r of got) this.store.pending.put([hid, r.backend, r.start], { len: r.len, volumeId });
      debug('reserve vol %d %d bytes -> %o', volumeId, want, got);
      return got;
    });
  }

  /**
   * Applies a volume's batched changes in one transaction (see VolumeChanges). Durable when it
   * returns, so the runs it unmaps may be handed out at once; the caller has flushed the data
   * of every inserted piece before calling.
   */
  commitChanges(holder: Holder, volumeId: number, c: VolumeChanges): void {
    const hid = holderId(holder);
    this.store.txn(() => {
      const v = this.store.volumes.get(volumeId);
      if (!v) throw new FsError('ENOENT', `volume ${volumeId} was deleted while being written`);
      const top = v.layer ?? v.id;
      // Layered (snapshotted or cloned): what the top unmaps may still show from below, and what
      // it maps may lie over hole entries, or over entries a snapshot delete merged into it.
      const chain = v.layer === undefined ? [top] : this.layers().chain(top);
      let removed = 0;
      for (const r of c.removes) {
        removed += this.unmap(top, r.start, r.end - r.start);
        this.layers().hideBelow(chain, r.start, r.end);
      }
      let added = 0;
      const perBackend = new Map<number, number>();
      for (const p of c.inserts) {
        removed += this.#releaseData(this.map.insert(top, { vstart: p.vstart, len: p.run.len, backend: p.run.backend, boff: p.run.start }, v.layer !== undefined));
        perBackend.set(p.run.backend, (perBackend.get(p.run.backend) ?? 0) + p.run.len);
        added += p.run.len;
      }
      // Scattered writes take consecutive pieces of one reservation: taken as whole runs and
      // counted once per backend, instead of a reservation and a backend record rewritten per piece.
      for (const r of adjacentRunsJoined(c.inserts.map((p) => p.run))) this.takePending(hid, r);
      for (const [backend, bytes] of perBackend) this.adjustBackend(backend, bytes, -bytes);
      for (const r of c.released) this.#giveBack(hid, r);
      const now = this.store.volumes.get(volumeId)!;
      this.store.volumes.put(volumeId, {
        ...now,
        allocatedBytes: now.allocatedBytes + added - removed,
        sizeBytes: c.sizeBytes ?? now.sizeBytes,
        mtimeMs: c.mtimeMs ?? now.mtimeMs,
        ...(c.reclaimedBytes > 0 ? { reclaimedBytes: (now.reclaimedBytes ?? 0) + c.reclaimedBytes } : {}),
      });
      if (removed > 0 || added > 0) debug('commit vol %d: %d bytes mapped, %d unmapped, %d pieces', volumeId, added, removed, c.inserts.length);
    });
  }

  /** Gives back reserved runs that were not used. */
  unreserve(holder: Holder, runs: Run[]): void {
    if (runs.length === 0) return;
    const hid = holderId(holder);
    this.store.txn(() => {
      for (const r of runs) this.#giveBack(hid, r);
    });
  }

  /** Returns reservations of processes that no longer exist (a crashed daemon) to the free table. */
  recoverStaleReservations(): number {
    let total = 0;
    this.store.txn(() => {
      for (const { key, value } of [...this.store.pending.getRange()]) {
        // Reservations of a layout change belong to it, not to a process; it resolves them.
        const h = parseHolderId(key[0]);
        if (!h || holderAlive(h)) continue;
        this.store.pending.remove(key);
        this.space.give({ backend: key[1], start: key[2], len: value.len });
        this.adjustBackend(key[1], 0, -value.len);
        total += value.len;
      }
    });
    if (total > 0) debug('recovered %d bytes reserved by dead processes', total);
    return total;
  }

  /** Records `run` as reserved by `owner` (a layout change); inside a transaction. */
  addReservation(owner: string, run: Run, volumeId: number): void {
    this.store.pending.put([owner, run.backend, run.start], { len: run.len, volumeId });
  }

  /** Every reservation: who holds it, where, how long. */
  *reservations(owner?: string): Iterable<{ holder: string; run: Run; volumeId: number }> {
    const range = owner === undefined ? {} : { start: [owner, 0, 0] as [string, number, number], end: [owner, Number.MAX_SAFE_INTEGER, 0] as [string, number, number] };
    for (const { key, value } of [...this.store.pending.getRange(range)]) yield { holder: key[0], run: { backend: key[1], start: key[2], len: value.len }, volumeId: value.volumeId };
  }

  /** Removes `run` from the reservations of `hid` (it may span adjacent ones); inside a transaction. */
  takePending(hid: string, run: Run): void {
    const end = run.start + run.len;
    for (let pos = run.start; pos < end;) {
      const [hit] = this.store.pending.getRange({ start: [hid, run.backend, pos], end: [hid, run.backend, -1], reverse: true, limit: 1 });
      if (!hit || hit.key[2] + hit.value.len <= pos) throw new Error(`reservation missing for backend ${run.backend} [${pos},${end}) of ${hid}`);
      const start = hit.key[2];
      const recEnd = start + hit.value.len;
      this.store.pending.remove(hit.key);
      if (start < pos) this.store.pending.put(hit.key, { ...hit.value, len: pos - start });
      if (recEnd > end) this.store.pending.put([hid, run.backend, end], { ...hit.value, len: recEnd - end });
      pos = Math.min(recEnd, end);
    }
  }

  /**
   * Unmaps [offset, offset+len) of a map layer, its data's space back to the free table (hole
   * entries just go); inside a transaction. Returns the data bytes freed; the owner's counter
   * is the caller's.
   */
  unmap(layer: number, offset: number, len: number): number {
    const total = this.#releaseData(this.map.remove(layer, offset, len));
    if (total > 0) debug('unmap layer %d [%d,+%d): %d bytes freed', layer, offset, len, total);
    return total;
  }

  /** Gives the data extents of `unmapped` back (hole entries just went); returns their bytes. */
  #releaseData(unmapped: Extent[]): number {
    let total = 0;
    for (const e of unmapped) {
      if (e.backend === HOLE_BACKEND) continue;
      this.release(e);
      total += e.len;
    }
    return total;
  }

  /** Gives a mapped run's space back to the free table; inside a transaction. */
  release(e: Extent): void {
    this.space.give({ backend: e.backend, start: e.boff, len: e.len });
    this.adjustBackend(e.backend, -e.len, 0);
  }

  /** Moves counters of backend `id`; inside a transaction. */
  adjustBackend(id: number, allocated: number, reserved: number): void {
    const b = this.store.backends.get(id);
    if (!b) throw new Error(`backend ${id} missing from pool ${this.dir}`);
    this.store.backends.put(id, { ...b, allocatedBytes: b.allocatedBytes + allocated, reservedBytes: b.reservedBytes + reserved });
  }

  /** Space neither allocated nor reserved, over all backends. */
  freeBytes(): number {
    let free = 0;
    for (const { value: b } of this.store.backends.getRange()) free += b.capacityBytes - b.allocatedBytes - b.reservedBytes;
    return free;
  }

  /** The backend new space goes to: the one with most free space, draining ones excluded. */
  mostFreeBackend(): number | undefined {
    let best: BackendRecord | undefined;
    for (const { value: b } of this.store.backends.getRange()) {
      if (b.draining === true) continue;
      const free = b.capacityBytes - b.allocatedBytes - b.reservedBytes;
      if (free > 0 && (!best || free > best.capacityBytes - best.allocatedBytes - best.reservedBytes)) best = b;
    }
    return best?.id;
  }

  /** Takes `run` out of `hid`'s reservations and back to the free table; inside a transaction. */
  #giveBack(hid: string, r: Run): void {
    this.takePending(hid, r);
    this.space.give(r);
    this.adjustBackend(r.backend, 0, -r.len);
  }
}
