import { expect } from 'chai';
import { checkPool } from '../../src/check/check-pool';
import { DEFAULT_SPACE_POLICY, reserveBytes, spaceLevel } from '../../src/pool/space-policy';
import { BLOCK } from '../../src/store/records';
import { MemoryPool } from '../support/memory-pool';

const MiB = 2 ** 20;
const GiB = 2 ** 30;

describe('the journal reserve', () => {
  it('is sized 1% of capacity, at least 16 MiB, at most 1 GiB, at most an eighth of a small pool; or as set, in whole blocks', () => {
    const p = DEFAULT_SPACE_POLICY;
    expect(reserveBytes(p, 320 * MiB)).to.equal(16 * MiB);
    expect(reserveBytes(p, 64 * MiB)).to.equal(8 * MiB);
    expect(reserveBytes(p, 10 * GiB)).to.equal(Math.floor((10 * GiB) / 100 / BLOCK) * BLOCK);
    expect(reserveBytes(p, 1000 * GiB)).to.equal(GiB);
    expect(reserveBytes({ ...p, reserve: { bytes: 5 * MiB + 100 } }, 320 * MiB)).to.equal(5 * MiB);
    expect(reserveBytes({ ...p, reserve: { pct: 10 } }, 320 * MiB)).to.equal(32 * MiB);
    expect(reserveBytes({ ...p, reserve: { bytes: 0 } }, 320 * MiB)).to.equal(0);
  });

  it('counts as out of space for ordinary writes: the level is outOfSpace once only the reserve is free', () => {
    const cap = 320 * MiB;
    expect(spaceLevel(DEFAULT_SPACE_POLICY, cap, 16 * MiB + BLOCK, 0)).to.equal('lowSpace');
    expect(spaceLevel(DEFAULT_SPACE_POLICY, cap, 16 * MiB + BLOCK - 1, 0)).to.equal('outOfSpace');
    expect(spaceLevel({ ...DEFAULT_SPACE_POLICY, reserve: { bytes: 0 } }, cap, BLOCK, 0)).to.equal('critical');
  });

  it('ordinary writes stop short of it; writes inside the guest journal take from it, exactly what they need; check is clean', async () => {
    const mp = MemoryPool.create(64 * MiB);
    const reserve = reserveBytes(mp.pool.spacePolicy(), 64 * MiB);
    expect(reserve).to.equal(8 * MiB);
    const io = mp.io(mp.pool.createVolume('g', GiB).id);
    io.journal = [{ start: 512 * MiB, end: 544 * MiB }];
    const data = Buffer.alloc(MiB, 0x5a);
    let written = 0;
    const err = await (async () => {
      for (;; written += MiB) await io.write(data, written);
    })().catch((e: unknown) => e);
    expect(err).to.have.property('code', 'ENOSPC');
    await io.commit();
    io.returnReserve();
    const free = mp.pool.usage().freeBytes;
    expect(free).to.be.at.least(reserve);
    expect(free - reserve).to.be.below(MiB);
    // Outside the journal: refused. Inside: served from the reserve, block by block as asked.
    const outside = await io.write(data.subarray(0, BLOCK), 600 * MiB).catch((e: unknown) => e);
    expect(outside).to.have.property('code', 'ENOSPC');
    await io.write(data.subarray(0, 3 * BLOCK), 512 * MiB);
    expect(mp.pool.usage().freeBytes).to.equal(free - 3 * BLOCK);
    const across = await io.write(data.subarray(0, 2 * BLOCK), 544 * MiB - BLOCK).catch((e: unknown) => e);
    expect(across, 'a write reaching past the journal').to.have.property('code', 'ENOSPC');
    await io.commit();
    const back = Buffer.alloc(3 * BLOCK);
    await io.read(back, back.length, 512 * MiB);
    expect(back.equals(data.subarray(0, 3 * BLOCK))).to.equal(true);
    // The reserve is the last of the pool: once it is gone, journal writes get ENOSPC too.
    let journalErr: unknown;
    for (let at = 513 * MiB; at < 544 * MiB && journalErr === undefined; at += MiB) journalErr = await io.write(data, at).then(() => undefined, (e: unknown) => e);
    expect(journalErr).to.have.property('code', 'ENOSPC');
    await io.close();
    expect(mp.pool.usage().freeBytes).to.be.below(MiB);
    expect(checkPool(mp.pool).clean).to.equal(true);
  });
});
