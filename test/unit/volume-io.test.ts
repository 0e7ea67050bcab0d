import { expect } from 'chai';
import { checkPool } from '../../src/check/check-pool';
import { BLOCK } from '../../src/store/records';
import { MAX_PENDING_ENTRIES, type VolumeIo } from '../../src/volume/volume-io';
import { MemoryPool } from '../support/memory-pool';
import { mulberry32 } from '../support/prng';

const MiB = 2 ** 20;

const fill = (len: number, byte: number): Buffer => Buffer.alloc(len, byte);

async function readAll(io: VolumeIo, offset: number, len: number): Promise<Buffer> {
  const buf = Buffer.alloc(len, 0xee);
  await io.read(buf, len, offset);
  return buf;
}

/** Counts the pool's reservation transactions (the reservation table changed, the map not) until stop(). */
function countReservations(mp: MemoryPool): { stop: () => number } {
  let n = 0;
  mp.store.onCommit = (changes) => {
    const tables = new Set(changes.map((c) => c.table));
    if (tables.has('pending') && !tables.has('map')) n++;
  };
  return { stop: () => { mp.store.onCommit = undefined; return n; } };
}

describe('volume data path (memory backends)', () => {
  it('reads back what was written, holes as zeros, and allocates nothing for zeros', async () => {
    const mp = MemoryPool.create(64 * MiB);
    const v = mp.pool.createVolume('a', 256 * MiB).id;
    const io = mp.io(v);
    await io.write(fill(10_000, 7), 5000);
    await io.write(Buffer.alloc(2 * MiB), 8 * MiB);
    const got = Buffer.alloc(20_000);
    await io.read(got, 20_000, 0);
    expect(got.subarray(0, 5000).every((x) => x === 0)).to.equal(true);
    expect(got.subarray(5000, 15_000).every((x) => x === 7)).to.equal(true);
    expect(got.subarray(15_000).every((x) => x === 0)).to.equal(true);
    expect(io.mapped(0, 256 * MiB).reduce((n, e) => n + e.len, 0)).to.equal(3 * BLOCK);
    await io.close();
    expect(checkPool(mp.pool).clean).to.equal(true);
  });

  it('allocates a block whose only data lies inside it, its first and last bytes zero', async () => {
    const mp = MemoryPool.create(64 * MiB);
    const io = mp.io(mp.pool.createVolume('a', 256 * MiB).id);
    const data = Buffer.alloc(4 * BLOCK);
    data[BLOCK + 1] = 9; // block 1: zero at both ends
    data[3 * BLOCK + BLOCK / 2] = 5; // block 3, likewise
    await io.write(data, 0);
    expect(io.mapped(0, 4 * BLOCK).map((e) => [e.vstart, e.len])).to.deep.equal([[BLOCK, BLOCK], [3 * BLOCK, BLOCK]]);
    expect((await readAll(io, 0, 4 * BLOCK)).equals(data)).to.equal(true);
    await io.close();
    expect(checkPool(mp.pool).clean).to.equal(true);
  });

  it('keeps new map entries in memory until commit, which flushes the backends first', async () => {
    const mp = MemoryPool.create(64 * MiB);
    const v = mp.pool.createVolume('a', 256 * MiB).id;
    const io = mp.io(v);
    const events: string[] = [];
    mp.disks.get(1)!.onFlush = () => events.push('flush');
    mp.store.onCommit = (changes) => { if (changes.some((c) => c.table === 'map')) events.push('map commit'); };
    await io.write(fill(MiB, 1), 0);
    expect(mp.pool.mapOf(v)).to.deep.equal([]);
    expect(io.mapped(0, MiB)).to.have.length(1);
    expect(io.dirty).to.equal(true);
    await io.commit();
    expect(events).to.deep.equal(['flush', 'map commit']);
    expect(mp.pool.mapOf(v)).to.have.length(1);
    expect(mp.pool.volume('a').allocatedBytes).to.equal(MiB);
    expect(io.dirty).to.equal(false);
    await io.close();
    expect(checkPool(mp.pool).clean).to.equal(true);
  });

  it('a write that completes while a commit flushes goes into the next commit', async () => {
    const mp = MemoryPool.create(64 * MiB);
    const v = mp.pool.createVolume('a', 256 * MiB).id;
    const io = mp.io(v);
    await io.write(fill(BLOCK, 1), 0);
    const disk = mp.disks.get(1)!;
    let letFlushGo!: () => void;
    const flushStarted = new Promise<void>((started) => {
      disk.onFlush = () => started();
    });
    const realFlush = disk.flush.bind(disk);
    disk.flush = async () => { await realFlush(); await new Promise<void>((r) => { letFlushGo = r; }); };
    const committing = io.commit();
    await flushStarted;
    await io.write(fill(BLOCK, 2), 64 * BLOCK);
    letFlushGo();
    await committing;
    expect(mp.pool.mapOf(v).map((e) => e.vstart)).to.deep.equal([0]);
    expect(io.mapped(0, MiB).map((e) => e.vstart)).to.deep.equal([0, 64 * BLOCK]);
    disk.flush = realFlush;
    await io.commit();
    expect(mp.pool.mapOf(v).map((e) => e.vstart)).to.deep.equal([0, 64 * BLOCK]);
    await io.close();
    expect(checkPool(mp.pool).clean).to.equal(true);
  });

  it('discard reads as zeros at once; its space stays mapped in the store until the commit frees it', async () => {
    const mp = MemoryPool.create(64 * MiB);
    const v = mp.pool.createVolume('a', 256 * MiB).id;
    const io = mp.io(v);
    await io.write(fill(4 * MiB, 9), 0);
    await io.commit();
    const freeBefore = mp.pool.backend(1).capacityBytes - mp.pool.backend(1).allocatedBytes - mp.pool.backend(1).reservedBytes;
    expect(await io.discard(MiB, 3 * MiB, { reclaim: true })).to.equal(2 * MiB);
    expect((await readAll(io, 0, 4 * MiB)).subarray(MiB, 3 * MiB).every((x) => x === 0)).to.equal(true);
    const io2 = mp.io(v);
    const fresh = Buffer.alloc(MiB);
    await io2.read(fresh, MiB, MiB);
    expect(fresh.every((x) => x === 9), 'another reader of the store still sees the committed data').to.equal(true);
    expect(mp.pool.volume('a').allocatedBytes).to.equal(4 * MiB);
    await io.commit();
    expect(mp.pool.volume('a').allocatedBytes).to.equal(2 * MiB);
    expect(mp.pool.volume('a').reclaimedBytes).to.equal(2 * MiB);
    const b = mp.pool.backend(1);
    expect(b.capacityBytes - b.allocatedBytes - b.reservedBytes).to.equal(freeBefore + 2 * MiB);
    await io.close();
    expect(checkPool(mp.pool).clean).to.equal(true);
  });

  it('discarding pieces that were never committed gives their space back, and a new write there allocates anew', async () => {
    const mp = MemoryPool.create(64 * MiB);
    const v = mp.pool.createVolume('a', 256 * MiB).id;
    const io = mp.io(v);
    await io.write(fill(MiB, 3), 0);
    expect(await io.discard(0, MiB)).to.equal(MiB);
    await io.write(fill(BLOCK, 4), 0);
    await io.close();
    expect(mp.pool.mapOf(v).reduce((n, e) => n + e.len, 0)).to.equal(BLOCK);
    expect((await readAll(io, 0, 2 * BLOCK)).equals(Buffer.concat([fill(BLOCK, 4), Buffer.alloc(BLOCK)]))).to.equal(true);
    expect(mp.pool.backend(1).reservedBytes).to.equal(0);
    expect(checkPool(mp.pool).clean).to.equal(true);
  });

  it('a discard whose guard fails under the lock gives nothing back', async () => {
    const mp = MemoryPool.create(64 * MiB);
    const v = mp.pool.createVolume('a', 256 * MiB).id;
    const io = mp.io(v);
    await io.write(fill(MiB, 3), 0);
    expect(await io.discard(0, MiB, { stillValid: () => false })).to.equal(0);
    expect(io.mapped(0, MiB)).to.have.length(1);
    await io.close();
  });

  it('truncate shrinks durably (tail of the last block zeroed) and grows with zeros', async () => {
    const mp = MemoryPool.create(64 * MiB);
    const v = mp.pool.createVolume('a', 8 * MiB).id;
    const io = mp.io(v);
    await io.write(fill(8 * MiB, 5), 0);
    await io.truncate(MiB + 100);
    expect(mp.pool.volume('a').sizeBytes).to.equal(MiB + 100);
    expect(mp.pool.volume('a').allocatedBytes).to.equal(MiB + BLOCK);
    await io.truncate(2 * MiB);
    const got = await readAll(io, MiB, MiB);
    expect(got.subarray(0, 100).every((x) => x === 5)).to.equal(true);
    expect(got.subarray(100).every((x) => x === 0)).to.equal(true);
    await io.close();
    expect(checkPool(mp.pool).clean).to.equal(true);
  });

  it('a write past the end grows the size, committed with the data', async () => {
    const mp = MemoryPool.create(64 * MiB);
    const v = mp.pool.createVolume('a', 0).id;
    const io = mp.io(v);
    await io.write(fill(3000, 1), 10_000);
    expect(io.size()).to.equal(13_000);
    expect(mp.pool.volume('a').sizeBytes).to.equal(0);
    await io.commit();
    expect(mp.pool.volume('a').sizeBytes).to.equal(13_000);
    await io.close();
  });

  it('a stream lands in one contiguous run while scattered writes stay small', async () => {
    const mp = MemoryPool.create(512 * MiB);
    const a = mp.pool.createVolume('a', 1024 * MiB).id;
    const b = mp.pool.createVolume('b', 1024 * MiB).id;
    const ia = mp.io(a);
    const ib = mp.io(b);
    for (let i = 0; i < 128; i++) {
      await ia.write(fill(MiB, 1), i * MiB);
      await ib.write(fill(BLOCK, 2), (i * 7919 % 1000) * MiB);
    }
    await ia.close();
    await ib.close();
    // The first write is placed exactly (it might be scattered); the stream starts with the second.
    expect(mp.pool.mapOf(a).length).to.be.at.most(2);
    expect(mp.pool.volume('b').allocatedBytes).to.equal(128 * BLOCK);
    expect(mp.pool.backend(1).reservedBytes).to.equal(0);
    expect(checkPool(mp.pool).clean).to.equal(true);
  });

  it('writeback of runs with small gaps reserves a chunk at a time, not twice per gap', async () => {
    const mp = MemoryPool.create(512 * MiB);
    const v = mp.pool.createVolume('a', 1024 * MiB).id;
    const io = mp.io(v);
    const model = Buffer.alloc(64 * MiB);
    const reservations = countReservations(mp);
    // What ext4's writeback of many small files sends: runs of 64 KiB writes, 8 KiB gaps between runs.
    const gaps = 200;
    let at = 0;
    for (let g = 0; g < gaps; g++) {
      for (let w = 0; w < 4; w++, at += 64 * 1024) {
        await io.write(fill(64 * 1024, 1 + (g % 250)), at);
        model.fill(1 + (g % 250), at, at + 64 * 1024);
      }
      at += 8 * 1024;
    }
    await io.commit();
    // 50 MiB written: a dozen 4 MiB chunks and the streams' own refills; twice per gap was 400.
    expect(reservations.stop(), 'reservation transactions').to.be.below(gaps / 5);
    expect((await readAll(io, 0, 64 * MiB)).equals(model)).to.equal(true);
    await io.close();
    expect(mp.pool.backend(1).reservedBytes).to.equal(0);
    expect(mp.pool.volume('a').allocatedBytes).to.equal(gaps * 256 * 1024);
    expect(checkPool(mp.pool).clean, checkPool(mp.pool).errors.join('\n')).to.equal(true);
  });

  it('a new stream refills by at least a scatter chunk, not by the size of its writes', async () => {
    const mp = MemoryPool.create(512 * MiB);
    const v = mp.pool.createVolume('a', 1024 * MiB).id;
    const io = mp.io(v);
    const reservations = countReservations(mp);
    // Runs of 8 MiB in 16 KiB writes, 8 KiB gaps between them: each run is a new stream.
    const runs = 16;
    let at = 0;
    for (let r = 0; r < runs; r++, at += 8 * 1024) {
      for (let w = 0; w < 512; w++, at += 16 * 1024) await io.write(fill(16 * 1024, 1 + r), at);
    }
    await io.commit();
    // 128 MiB written: doubling from 16 KiB after each gap made 146; from the chunk size, 43.
    expect(reservations.stop(), 'reservation transactions').to.be.below(runs * 4);
    await io.close();
    expect(mp.pool.backend(1).reservedBytes).to.equal(0);
    expect(checkPool(mp.pool).clean, checkPool(mp.pool).errors.join('\n')).to.equal(true);
  });

  it('commits by itself when the uncommitted entries reach the memory bound', async () => {
    const mp = MemoryPool.create(512 * MiB);
    const v = mp.pool.createVolume('a', 4096 * MiB).id;
    const io = mp.io(v);
    for (let i = 0; i <= MAX_PENDING_ENTRIES; i++) await io.write(fill(BLOCK, 1), i * 2 * BLOCK);
    expect(mp.pool.mapOf(v).length).to.be.greaterThan(0);
    await io.close();
    expect(checkPool(mp.pool).clean).to.equal(true);
  });

  it('a big commit goes in several transactions (a snapshot in the last one), and one that failed midway is finished by the next', async () => {
    const mp = MemoryPool.create(64 * MiB);
    const v = mp.pool.createVolume('a', 16 * MiB).id;
    const io = mp.io(v);
    io.writerHere = true;
    const model = Buffer.alloc(16 * MiB);
    const scatter = async (pieces: number, byte: number): Promise<void> => {
      for (let i = 0; i < pieces; i++) {
        await io.write(fill(BLOCK, byte), i * 2 * BLOCK);
        model.fill(byte, i * 2 * BLOCK, i * 2 * BLOCK + BLOCK);
      }
    };
    await scatter(1200, 1);
    await io.discard(0, 200 * BLOCK);
    model.fill(0, 0, 200 * BLOCK);
    const txns: string[][] = [];
    mp.store.onCommit = (changes) => {
      const tables = [...new Set(changes.map((c) => c.table))].sort();
      if (tables.includes('map') && txns.push(tables) === 2) throw new Error('cut');
    };
    expect(await io.commit().then(() => 'committed', (err: Error) => err.message)).to.equal('cut');
    mp.store.onCommit = undefined;
    expect(checkPool(mp.pool).clean, 'after the failed commit').to.equal(true);
    expect((await readAll(io, 0, 16 * MiB)).equals(model), 'read while a part is uncommitted').to.equal(true);
    await scatter(600, 2);
    txns.length = 0;
    mp.store.onCommit = (changes) => { txns.push([...new Set(changes.map((c) => c.table))].sort()); };
    const snap = await io.takeSnapshot('s');
    mp.store.onCommit = undefined;
    expect(txns.length, 'transactions of the commit').to.be.greaterThan(2);
    expect(txns.slice(0, -1).some((t) => t.includes('snapshots')), 'the snapshot before the last part').to.equal(false);
    expect(txns[txns.length - 1], 'the last part').to.include.members(['map', 'snapshots']);
    expect(checkPool(mp.pool).clean, checkPool(mp.pool).errors.join('\n')).to.equal(true);
    expect((await readAll(mp.io(snap.id), 0, 16 * MiB)).equals(model), 'the snapshot, from the store').to.equal(true);
    await io.close();
    expect((await readAll(mp.io(v), 0, 16 * MiB)).equals(model), 'the volume, from the store').to.equal(true);
  });

  it('random writes, discards and commits agree with a byte model (seeded)', async () => {
    const seed = Number(process.env.THINVOL_SEED ?? Date.now() % 1e9);
    console.log(`      seed ${seed} (THINVOL_SEED=${seed} to replay)`);
    const rnd = mulberry32(seed);
    const size = 8 * MiB;
    const mp = MemoryPool.create(16 * MiB);
    const v = mp.pool.createVolume('a', size).id;
    const io = mp.io(v);
    const model = Buffer.alloc(size);
    for (let step = 0; step < 400; step++) {
      const r = rnd();
      if (r < 0.6) {
        const off = Math.floor(rnd() * (size - 70_000));
        const len = 1 + Math.floor(rnd() * 70_000);
        const data = rnd() < 0.2 ? Buffer.alloc(len) : Buffer.alloc(len, 1 + Math.floor(rnd() * 250));
        await io.write(data, off);
        data.copy(model, off);
      } else if (r < 0.8) {
        const s = Math.floor(rnd() * (size / BLOCK - 32)) * BLOCK;
        const e = s + (1 + Math.floor(rnd() * 32)) * BLOCK;
        await io.discard(s, e);
        model.fill(0, s, e);
      } else {
        await io.commit();
      }
    }
    const got = Buffer.alloc(size);
    await io.read(got, size, 0);
    expect(got.equals(model), `seed ${seed}`).to.equal(true);
    await io.close();
    const again = Buffer.alloc(size);
    await mp.io(v).read(again, size, 0);
    expect(again.equals(model), `seed ${seed}: after commit, from the store`).to.equal(true);
    expect(checkPool(mp.pool).clean, checkPool(mp.pool).errors.join('\n')).to.equal(true);
  });
});
