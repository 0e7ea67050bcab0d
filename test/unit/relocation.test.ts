import { expect } from 'chai';
import { checkPool } from '../../src/check/check-pool';
import { processStartTime, selfHolder } from '../../src/pool/holder';
import type { Pool } from '../../src/pool/pool';
import type { MemoryStore } from '../../src/store/memory-store';
import { MemoryPool } from '../support/memory-pool';
import type { Move } from '../../src/store/records';
import { Relocation, StaleBatch } from '../../src/pool/relocation';

const MiB = 2 ** 20;

describe('relocation metadata and the controller lease', () => {
  let pool: Pool;
  let store: MemoryStore;
  let vol: number;
  /** Where backend data starts (after the label area). */
  let D: number;
  beforeEach(() => {
    const mp = MemoryPool.create(64 * MiB, 64 * MiB);
    pool = mp.pool;
    store = mp.store;
    D = pool.backend(1).dataStart;
    vol = pool.createVolume('v', 256 * MiB).id;
    const me = selfHolder();
    const runs = pool.reserve(me, vol, 8 * MiB, { backend: 1, at: D });
    const inserts = runs.map((run, i) => ({ vstart: runs.slice(0, i).reduce((n, r) => n + r.len, 0), run }));
    pool.commitChanges(me, vol, { removes: [], inserts, released: [], reclaimedBytes: 0 });
  });

  const plan = (reloc: Relocation, len: number): Move[] => pool.txn(() => {
    const [run] = reloc.reserveOn(2, vol, len);
    return [{ vstart: 0, len, from: { backend: 1, boff: D }, to: { backend: 2, boff: run!.start } }];
  });

  it('apply points the range at the new run, keeps the old one reserved until freed, bumps the generation; check stays clean throughout', () => {
    const reloc = pool.relocation('change:1');
    const moves = plan(reloc, 2 * MiB);
    expect(checkPool(pool).clean).to.equal(true);
    const g = pool.txn(() => reloc.apply(vol, moves));
    expect(g).to.equal(1);
    expect(pool.mapOf(vol)[0]).to.include({ vstart: 0, len: 2 * MiB, backend: 2 });
    expect(pool.backend(1)).to.include({ allocatedBytes: 6 * MiB, reservedBytes: 2 * MiB });
    expect(checkPool(pool).clean).to.equal(true);
    pool.txn(() => reloc.freeAll());
    expect(pool.backend(1)).to.include({ allocatedBytes: 6 * MiB, reservedBytes: 0 });
    expect(pool.volumeById(vol)?.allocatedBytes).to.equal(8 * MiB);
    expect(checkPool(pool).clean).to.equal(true);
  });

  it('apply refuses, changing nothing, when the range was unmapped or rewritten meanwhile; revert restores the old map', () => {
    const reloc = pool.relocation('change:2');
    const moves = plan(reloc, MiB);
    pool.commitChanges(selfHolder(), vol, { removes: [{ start: 0, end: 4096 }], inserts: [], released: [], reclaimedBytes: 0 });
    expect(() => pool.txn(() => reloc.apply(vol, moves))).to.throw(StaleBatch);
    expect(pool.mapOf(vol).every((e) => e.backend === 1)).to.equal(true);
    pool.txn(() => reloc.freeAll());
    expect(checkPool(pool).clean).to.equal(true);

    const again = plan(reloc, 4 * MiB).map((m) => ({ ...m, vstart: 4 * MiB, from: { backend: 1, boff: D + 4 * MiB } }));
    pool.txn(() => reloc.apply(vol, again));
    const g = pool.txn(() => reloc.revert(vol, again));
    expect(g).to.equal(2);
    expect(pool.mapOf(vol).every((e) => e.backend === 1)).to.equal(true);
    pool.txn(() => reloc.freeAll());
    expect(checkPool(pool).clean, checkPool(pool).errors.join('\n')).to.equal(true);
  });

  it('a daemon restarting does not take the reservations of a change', () => {
    const reloc = pool.relocation('change:3');
    plan(reloc, MiB);
    expect(pool.recoverStaleReservations()).to.equal(0);
    expect(pool.backend(2).reservedBytes).to.equal(MiB);
  });

  it('one controller at a time: refused while a live holder renews the lease; a rerun resumes, another request interrupts', () => {
    const log = pool.changes;
    const first = log.begin({ kind: 'drain', backend: 1 }).change;
    const init = `${selfHolder().host}:1:${processStartTime(1)}`;
    const lease = (renewedAt: number): void => store.txn(() => { store.leases.put('controller', { holder: init, pid: 1, change: first.id, renewedAt }); });
    lease(Date.now());
    expect(() => log.begin({ kind: 'drain', backend: 1 })).to.throw(/another layout change is running: change 1 \(drain backend 1\) by pid 1/);
    lease(Date.now() - 60_000);
    const resumed = log.begin({ kind: 'drain', backend: 1 });
    expect(resumed).to.deep.include({ resumed: true });
    expect(resumed.change).to.include({ id: first.id, resumes: 1 });
    lease(Date.now() - 60_000);
    const other = log.begin({ kind: 'rebalance' });
    expect(other.change.id).to.equal(first.id + 1);
    expect(other.interrupted?.state).to.equal('interrupted');
  });
});
