import { expect } from 'chai';
import { checkPool } from '../../src/check/check-pool';
import { LayoutController } from '../../src/layout/controller';
import type { ChangeRequest } from '../../src/store/records';
import { MemoryPool } from '../support/memory-pool';
import { mulberry32 } from '../support/prng';

const MiB = 2 ** 20;

/** Two volumes with seeded data on backend 1 of a three-backend memory pool; no daemon serves them. */
async function setup(seed: number): Promise<{ mp: MemoryPool; data: Map<number, Buffer> }> {
  const mp = MemoryPool.create(64 * MiB, 64 * MiB, 64 * MiB);
  const rnd = mulberry32(seed);
  const data = new Map<number, Buffer>();
  mp.store.txn(() => { for (const id of [2, 3]) mp.store.backends.put(id, { ...mp.pool.backend(id), draining: true }); });
  for (const name of ['a', 'b']) {
    const v = mp.pool.createVolume(name, 32 * MiB).id;
    const buf = Buffer.alloc(32 * MiB);
    const io = mp.io(v);
    for (let i = 0; i < 40; i++) {
      const off = Math.floor(rnd() * 31) * MiB + Math.floor(rnd() * 256) * 4096;
      const piece = Buffer.alloc(64 * 1024 * (1 + Math.floor(rnd() * 4)), 1 + Math.floor(rnd() * 250));
      await io.write(piece, off);
      piece.copy(buf, off);
    }
    await io.close();
    data.set(v, buf);
  }
  mp.store.txn(() => { for (const id of [2, 3]) mp.store.backends.put(id, { ...mp.pool.backend(id), draining: false }); });
  return { mp, data };
}

async function run(mp: MemoryPool, request: ChangeRequest, stopAfter = Infinity): Promise<string> {
  let batches = 0;
  const c = await new LayoutController(mp.pool, {
    timeoutMs: 1000, limits: { bytes: 256 * 1024, span: 4 * MiB }, backends: mp.backends,
    stop: () => batches++ >= stopAfter,
  }).run(request);
  return c.state;
}

async function sameData(mp: MemoryPool, data: Map<number, Buffer>): Promise<boolean> {
  for (const [v, want] of data) {
    const got = Buffer.alloc(want.length);
    await mp.io(v).read(got, got.length, 0);
    if (!got.equals(want)) return false;
  }
  return true;
}

describe('layout controller batches over memory backends (no daemon serving)', () => {
  it('drain moves everything off a backend in small batches; data and check unchanged', async () => {
    const { mp, data } = await setup(1);
    expect(mp.pool.backend(1).allocatedBytes).to.be.greaterThan(4 * MiB);
    expect(await run(mp, { kind: 'drain', backend: 1 })).to.equal('done');
    expect(mp.pool.backend(1)).to.include({ allocatedBytes: 0, reservedBytes: 0 });
    expect(await sameData(mp, data)).to.equal(true);
    expect(checkPool(mp.pool).clean, checkPool(mp.pool).errors.join('\n')).to.equal(true);
  });

  it('a change stopped midway is finished by running it again, and each byte moves once', async () => {
    const { mp, data } = await setup(2);
    const before = mp.pool.backend(1).allocatedBytes;
    expect(await run(mp, { kind: 'drain', backend: 1 }, 3)).to.equal('interrupted');
    expect(mp.pool.backend(1).allocatedBytes).to.be.within(1, before - 1);
    expect(await run(mp, { kind: 'drain', backend: 1 })).to.equal('done');
    const [second, first] = mp.pool.changes.recent(2);
    expect(first?.state).to.equal('interrupted');
    expect((first?.bytesCopied ?? 0) + (second?.bytesCopied ?? 0)).to.equal(before);
    expect(await sameData(mp, data)).to.equal(true);
    expect(checkPool(mp.pool).clean).to.equal(true);
  });

  it('migrate moves exactly the asked range of one volume; rebalance evens the backends out', async () => {
    const { mp, data } = await setup(3);
    expect(await run(mp, { kind: 'migrate', volume: 1, to: 2, offset: 8 * MiB, length: 8 * MiB })).to.equal('done');
    for (const e of mp.pool.mapOf(1)) {
      const inside = e.vstart >= 8 * MiB && e.vstart + e.len <= 16 * MiB;
      expect(e.backend === 2, `extent at ${e.vstart}`).to.equal(inside);
    }
    expect(await run(mp, { kind: 'rebalance' })).to.equal('done');
    const used = mp.pool.backendList().map((b) => b.allocatedBytes);
    expect(Math.max(...used) - Math.min(...used)).to.be.at.most(512 * 1024);
    expect(await sameData(mp, data)).to.equal(true);
    expect(checkPool(mp.pool).clean).to.equal(true);
  });
});
