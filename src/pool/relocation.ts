import type { Move, Run } from '../store/records';
import type { Allocator } from './allocator';
import type { Layers } from './layers';
import type { SpaceMap } from './space-map';
import type { VolumeMap } from './volume-map';

/** A batch's map no longer looks as it did when it was planned, or a daemon let go of it. */
export class StaleBatch extends Error {}

/**
 * The metadata side of moving extents for a layout change. Space a change owns (new runs
 * being written, old runs waiting for every daemon to switch) is kept as a reservation under
 * `owner` ("change:ID"), so the checker counts it and a crash leaks nothing. Made by
 * Pool.relocation().
 */
export class Relocation {
  constructor(private readonly alloc: Allocator, private readonly space: SpaceMap, private readonly map: VolumeMap, private readonly layers: Layers, readonly owner: string) {}

  /** Takes `want` bytes on one backend, in as few runs as it can. Inside a transaction. */
  reserveOn(backend: number, volumeId: number, want: number): Run[] {
    const got: Run[] = [];
    for (let need = want; need > 0;) {
      const r = this.space.take(backend, need);
      // Throwing aborts the caller's transaction, and with it the runs taken so far.
      if (!r) throw new StaleBatch(`backend ${backend} has no room for ${want} bytes`);
      this.alloc.adjustBackend(backend, 0, r.len);
      this.alloc.addReservation(this.owner, r, volumeId);
      got.push(r);
      need -= r.len;
    }
    return got;
  }

  /**
   * Points each move's range of map layer `volumeId` (a volume's, or one a snapshot shares: every
   * view through it sees the new run) at its new run; the old runs stay reserved by the change.
   * Throws StaleBatch if any range is no longer mapped where the move says; inside the
   * caller's transaction, which the throw aborts, so nothing changes. Returns the volume's new
   * map generation.
   */
  apply(volumeId: number, moves: Move[]): number {
    for (const m of moves) {
      const now = this.map.lookup(volumeId, m.vstart, m.len);
      const e = now[0];
      if (now.length !== 1 || !e || e.vstart !== m.vstart || e.len !== m.len || e.backend !== m.from.backend || e.boff !== m.from.boff) {
        throw new StaleBatch(`volume ${volumeId} [${m.vstart},+${m.len}) changed while it was being moved`);
      }
      if (!m.to) throw new Error(`move of volume ${volumeId} at ${m.vstart} has no destination`);
      this.map.remove(volumeId, m.vstart, m.len);
      this.map.insert(volumeId, { vstart: m.vstart, len: m.len, backend: m.to.backend, boff: m.to.boff });
      this.alloc.takePending(this.owner, { backend: m.to.backend, start: m.to.boff, len: m.len });
      this.alloc.addReservation(this.owner, { backend: m.from.backend, start: m.from.boff, len: m.len }, volumeId);
      this.alloc.adjustBackend(m.from.backend, -m.len, m.len);
      this.alloc.adjustBackend(m.to.backend, m.len, -m.len);
    }
    const generation = this.layers.bumpGeneration(volumeId);
    if (generation === undefined) throw new StaleBatch(`map layer ${volumeId} was deleted while being moved`);
    return generation;
  }

  /** The reverse of apply(): the ranges point at their old runs again. */
  revert(volumeId: number, moves: Move[]): number {
    return this.apply(volumeId, moves.map((m) => ({ vstart: m.vstart, len: m.len, from: m.to ?? m.from, to: m.from })));
  }

  /** Returns everything the change owns to the free table: a batch's old runs once all switched, or its new runs when it is abandoned. */
  freeAll(): number {
    let total = 0;
    for (const { run } of this.alloc.reservations(this.owner)) {
      this.alloc.takePending(this.owner, run);
      this.space.give(run);
      this.alloc.adjustBackend(run.backend, 0, -run.len);
      total += run.len;
    }
    return total;
  }
}
