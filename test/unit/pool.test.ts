import { expect } from 'chai';
import { checkPool } from '../../src/check/check-pool';
import type { Pool } from '../../src/pool/pool';
import type { Holder } from '../../src/store/records';
import type { MemoryStore } from '../../src/store/memory-store';
import { MemoryPool } from '../support/memory-pool';

const MiB = 2 ** 20;

describe('pool metadata: map, free space table, reservations, checker', () => {
  let pool: Pool;
  let store: MemoryStore;
  let me: Holder;
  /** Where backend data starts (after the label area). */
  let D: number;
  beforeEach(() => {
    const mp = MemoryPool.create(64 * MiB, 32 * MiB);
    pool = mp.pool;
    store = mp.store;
    me = mp.holder;
    D = pool.backend(1).dataStart;
  });

  const write = (vol: number, vstart: number, len: number, hint?: { backend: number; at: number }): void => {
    let v = vstart;
    const pieces = pool.reserve(me, vol, len, hint).map((run) => {
      const p = { vstart: v, run };
      v += run.len;
      return p;
    });
    pool.commitChanges(me, vol, { removes: [], inserts: pieces, released: [], reclaimedBytes: 0 });
  };

  const unmap = (vol: number, start: number, len: number): void =>
    pool.commitChanges(me, vol, { removes: [{ start, end: start + len }], inserts: [], released: [], reclaimedBytes: 0 });

  it('allocates on the backend with most free space and merges adjacent extents', () => {
    const v = pool.createVolume('a', 1024 * MiB);
    write(v.id, 0, MiB);
    write(v.id, MiB, MiB, { backend: 1, at: D + MiB });
    const map = pool.mapOf(v.id);
    expect(map).to.deep.equal([{ vstart: 0, len: 2 * MiB, backend: 1, boff: D }]);
    expect(pool.volume('a').allocatedBytes).to.equal(2 * MiB);
    expect(checkPool(pool).clean).to.equal(true);
  });

  it('lookup clips extents to the asked range', () => {
    const v = pool.createVolume('a', 1024 * MiB);
    write(v.id, 8192, 16384);
    expect(pool.map.lookup(v.id, 12288, 4096)).to.deep.equal([{ vstart: 12288, len: 4096, backend: 1, boff: D + 4096 }]);
    expect(pool.map.lookup(v.id, 0, 8192)).to.deep.equal([]);
  });

  it('unmapping the middle of an extent splits it and frees exactly that run, coalesced', () => {
    const v = pool.createVolume('a', 1024 * MiB);
    write(v.id, 0, 4 * MiB);
    unmap(v.id, MiB, MiB);
    expect(pool.volume('a').allocatedBytes).to.equal(3 * MiB);
    expect(pool.mapOf(v.id)).to.deep.equal([
      { vstart: 0, len: MiB, backend: 1, boff: D },
      { vstart: 2 * MiB, len: 2 * MiB, backend: 1, boff: D + 2 * MiB },
    ]);
    unmap(v.id, 0, 4 * MiB);
    expect([...pool.space.runs(1)]).to.deep.equal([{ backend: 1, start: D, len: 64 * MiB }]);
    expect(checkPool(pool).clean).to.equal(true);
  });

  it('a full pool refuses with ENOSPC and changes nothing', () => {
    const v = pool.createVolume('a', 1024 * MiB);
    expect(() => pool.reserve(me, v.id, 97 * MiB)).to.throw(/full/);
    expect(pool.backendList().map((b) => b.reservedBytes)).to.deep.equal([0, 0]);
    expect(checkPool(pool).clean).to.equal(true);
  });

  it('reservations of a dead process go back to the free table', () => {
    const v = pool.createVolume('a', 1024 * MiB);
    const dead: Holder = { ...me, pid: 999_999_999 };
    pool.reserve(dead, v.id, 3 * MiB);
    expect(checkPool(pool).reservedRuns).to.equal(1);
    expect(pool.recoverStaleReservations()).to.equal(3 * MiB);
    const r = checkPool(pool);
    expect(r.clean).to.equal(true);
    expect(r.reservedRuns).to.equal(0);
  });

  it('the checker finds space both free and mapped, and wrong counters', () => {
    const v = pool.createVolume('a', 1024 * MiB);
    write(v.id, 0, MiB);
    store.txn(() => store.free.put([1, D], 4096));
    const r = checkPool(pool);
    expect(r.clean).to.equal(false);
    expect(r.errors.join('\n')).to.match(/overlap/);
    store.txn(() => {
      store.free.remove([1, D]);
      store.volumes.put(v.id, { ...pool.volume('a'), allocatedBytes: 1 });
    });
    expect(checkPool(pool).errors.join('\n')).to.match(/allocatedBytes says 1/);
  });

  it('deleting a volume frees everything it held', () => {
    const v = pool.createVolume('a', 1024 * MiB);
    write(v.id, 0, 5 * MiB);
    write(v.id, 100 * MiB, 40 * MiB);
    pool.deleteVolume(v.id);
    expect(pool.backendList().reduce((s, b) => s + b.allocatedBytes, 0)).to.equal(0);
    expect(checkPool(pool).clean).to.equal(true);
  });
});
