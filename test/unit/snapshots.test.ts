import { expect } from 'chai';
import { checkPool } from '../../src/check/check-pool';
import { LayoutController } from '../../src/layout/controller';
import { BLOCK } from '../../src/store/records';
import type { VolumeIo } from '../../src/volume/volume-io';
import { MemoryPool } from '../support/memory-pool';
import { mulberry32 } from '../support/prng';

const MiB = 2 ** 20;
const SIZE = 2 * MiB;

async function readAll(io: VolumeIo, len: number): Promise<Buffer> {
  const buf = Buffer.alloc(len, 0xee);
  await io.read(buf, len, 0);
  return buf;
}

function expectClean(mp: MemoryPool, when: string): void {
  const r = checkPool(mp.pool);
  expect(r.errors, `check ${when}`).to.deep.equal([]);
}

/** An open volume as a daemon has it: the writer, keeping its layer chain. */
function writer(mp: MemoryPool, id: number): VolumeIo {
  const io = mp.io(id);
  io.writerHere = true;
  return io;
}

describe('snapshots and clones (memory backends)', () => {
  it('a snapshot is taken without copying a map entry, reads as the volume did, and keeps its blocks when the volume is overwritten, discarded and grown', async () => {
    const mp = MemoryPool.create(64 * MiB);
    const v = mp.pool.createVolume('a', SIZE).id;
    const io = writer(mp, v);
    await io.write(Buffer.alloc(SIZE, 1), 0);
    await io.commit();
    const mapWrites: number[] = [];
    mp.store.onCommit = (changes) => mapWrites.push(changes.filter((c) => c.table === 'map').length);
    const snap = await io.takeSnapshot('s1');
    expect(mapWrites, 'map entries written by the snapshot').to.deep.equal([0]);
    mp.store.onCommit = undefined;
    const allocated = (): number => mp.pool.backendList().reduce((n, b) => n + b.allocatedBytes, 0);
    const before = allocated();
    await io.write(Buffer.alloc(100, 2), 4000);
    await io.discard(MiB, SIZE);
    await io.commit();
    const s = mp.io(snap.id);
    expect((await readAll(s, SIZE)).every((b) => b === 1), 'the snapshot').to.equal(true);
    const now = await readAll(io, SIZE);
    expect(now.subarray(0, 4000).every((b) => b === 1)).to.equal(true);
    expect(now.subarray(4000, 4100).every((b) => b === 2)).to.equal(true);
    expect(now.subarray(4100, 2 * BLOCK).every((b) => b === 1), 'the rest of the blocks copied on write').to.equal(true);
    expect(now.subarray(MiB).every((b) => b === 0), 'discarded').to.equal(true);
    expect(allocated(), 'two blocks copied on write, nothing freed by the discard').to.equal(before + 2 * BLOCK);
    expect(mp.pool.exclusiveBytes(snap.id), 'what only the snapshot holds').to.equal(MiB + 2 * BLOCK);
    expect(mp.pool.exclusiveBytes(v)).to.equal(2 * BLOCK);
    expect(mp.pool.mappedBytes(v, SIZE)).to.equal(MiB);
    expect(await s.write(Buffer.alloc(BLOCK), 0).then(() => 'written', (err: Error) => err.message)).to.match(/read-only/);
    await io.truncate(SIZE - 1000);
    await io.truncate(SIZE);
    expectClean(mp, 'after the writes');
    expect(mp.pool.deleteSnapshot(snap.id)).to.equal(MiB + 2 * BLOCK);
    expect(mp.pool.layerList().map((l) => [l.id, l.parent, l.children]), 'the snapshot layer merged into the volume').to.deep.equal([[mp.pool.volume('a').layer, undefined, 0]]);
    const after = await readAll(io, SIZE);
    expect(after.equals(now)).to.equal(true);
    expectClean(mp, 'after the delete');
  });

  it('a snapshot waits for the write in flight and takes it', async () => {
    const mp = MemoryPool.create(64 * MiB);
    const v = mp.pool.createVolume('a', SIZE).id;
    const io = writer(mp, v);
    const w = io.write(Buffer.alloc(BLOCK, 9), 0);
    const snap = await io.takeSnapshot('s');
    await w;
    expect((await readAll(mp.io(snap.id), BLOCK)).every((b) => b === 9)).to.equal(true);
    expectClean(mp, 'after');
  });

  it('refuses what would lose a snapshot or break one: a duplicate name, deleting a volume that has snapshots', async () => {
    const mp = MemoryPool.create(64 * MiB);
    const v = mp.pool.createVolume('a', SIZE).id;
    mp.pool.createSnapshot(v, 's', true);
    expect(() => mp.pool.createSnapshot(v, 's', true)).to.throw(/already exists/);
    expect(() => mp.pool.createSnapshot(v, 'bad@name', true)).to.throw(/bad volume name/);
    expect(() => mp.pool.deleteVolume(v)).to.throw(/has 1 snapshot/);
    expect(() => mp.pool.snapshot('a')).to.throw(/write VOLUME@NAME/);
    expect(() => mp.pool.snapshot('a@nope')).to.throw(/no snapshot "a@nope"/);
  });

  for (const seed of [1, 2, 3, 4]) {
    it(`random life of volumes, snapshots and clones against a model: reads, check, and deletes that give back exactly their exclusive bytes (seed ${seed})`, async () => {
      console.log(`      seed ${seed} (replay: SNAP_TRACE=1 prints each step, SNAP_VERIFY_EACH=1 verifies after each)`);
      const rnd = mulberry32(seed);
      const int = (n: number): number => Math.floor(rnd() * n);
      const mp = MemoryPool.create(48 * MiB, 48 * MiB);
      const volumes = new Map<number, { io: VolumeIo; model: Buffer; name: string }>();
      const snaps = new Map<number, { volume: number; model: Buffer; name: string }>();
      let n = 0;
      const first = mp.pool.createVolume('v0', SIZE).id;
      volumes.set(first, { io: writer(mp, first), model: Buffer.alloc(SIZE), name: 'v0' });
      const pick = <T>(m: Map<number, T>): [number, T] | undefined => [...m.entries()][int(m.size)];

      for (let step = 0; step < 300; step++) {
        const what = int(100);
        const vol = pick(volumes);
        if (!vol) break;
        const [vid, v] = vol;
        const at = `step ${step} (op ${what})`;
        const trace = (m: string): void => { if (process.env.SNAP_TRACE === '1') console.log(`${step} ${v.name}(${vid}) ${m}`); };
        if (what < 45) {
          const off = int(4) === 0 ? int(SIZE / BLOCK) * BLOCK : int(SIZE - 1);
          const len = 1 + int(Math.min(64 * 1024, SIZE - off) - 1);
          const data = int(5) === 0 ? Buffer.alloc(len) : Buffer.from(Array.from({ length: len }, () => int(256)));
          trace(`write ${off}+${len}`);
          await v.io.write(data, off);
          data.copy(v.model, off);
        } else if (what < 55) {
          const a = int(SIZE / BLOCK) * BLOCK;
          const b = a + (1 + int(64)) * BLOCK;
          trace(`discard ${a}-${Math.min(b, SIZE)}`);
          await v.io.discard(a, Math.min(b, SIZE));
          v.model.fill(0, a, Math.min(b, SIZE));
        } else if (what < 65) {
          trace('commit');
          await v.io.commit();
        } else if (what < 75) {
          const s = await v.io.takeSnapshot(`s${n++}`);
          snaps.set(s.id, { volume: vid, model: Buffer.from(v.model), name: s.name });
          trace(`snapshot ${s.name} id ${s.id} layer ${s.layer}`);
        } else if (what < 82 && snaps.size > 0) {
          const [sid, s] = pick(snaps)!;
          const name = `c${n++}`;
          const c = mp.pool.cloneVolume(sid, name);
          volumes.set(c.id, { io: writer(mp, c.id), model: Buffer.from(s.model), name });
          trace(`clone ${name} id ${c.id} of ${sid}`);
        } else if (what < 90 && snaps.size > 0) {
          const [sid] = pick(snaps)!;
          const free = mp.pool.usage().freeBytes;
          const excl = mp.pool.exclusiveBytes(sid);
          trace(`delete snapshot ${sid}`);
          const freed = mp.pool.deleteSnapshot(sid);
          snaps.delete(sid);
          expect(freed, `${at}: freed = exclusive`).to.equal(excl);
          expect(mp.pool.usage().freeBytes - free, `${at}: free space grew by it`).to.equal(freed);
        } else if (what < 95) {
          const mine = [...snaps.entries()].filter(([, s]) => s.volume === vid);
          if (mine.length > 0) {
            const [sid, s] = mine[int(mine.length)]!;
            await v.io.close();
            trace(`revert to ${sid}`);
            mp.pool.revertVolume(vid, sid);
            volumes.set(vid, { io: writer(mp, vid), model: Buffer.from(s.model), name: v.name });
          }
        } else if (volumes.size > 1 && ![...snaps.values()].some((s) => s.volume === vid)) {
          await v.io.close();
          const free = mp.pool.usage().freeBytes;
          const excl = mp.pool.exclusiveBytes(vid);
          trace('delete');
          const freed = mp.pool.deleteVolume(vid);
          volumes.delete(vid);
          expect(freed, `${at}: freed = exclusive`).to.equal(excl);
          expect(mp.pool.usage().freeBytes - free, `${at}: free space grew by it`).to.equal(freed);
        }
        if (step % 25 === 24 || process.env.SNAP_VERIFY_EACH === '1') {
          for (const [id, x] of volumes) expect((await readAll(x.io, SIZE)).equals(x.model), `${at}: volume ${x.name} (id ${id})`).to.equal(true);
          for (const [id, s] of snaps) expect((await readAll(mp.io(id), SIZE)).equals(s.model), `${at}: snapshot ${s.name}`).to.equal(true);
          for (const x of volumes.values()) await x.io.commit();
          expectClean(mp, at);
        }
      }
      for (const x of volumes.values()) await x.io.close();
      for (const [id, s] of snaps) expect((await readAll(mp.io(id), SIZE)).equals(s.model), `end: snapshot ${s.name}`).to.equal(true);
      for (const id of snaps.keys()) mp.pool.deleteSnapshot(id);
      for (const id of volumes.keys()) mp.pool.deleteVolume(id);
      expect(mp.pool.usage().freeBytes, 'all given back').to.equal(96 * MiB);
      expect(mp.pool.layerList()).to.deep.equal([]);
      expectClean(mp, 'end');
    });
  }

  it('a drain moves each shared run once and keeps it shared: the pool allocates the same bytes, every view reads the same, check is clean', async () => {
    const mp = MemoryPool.create(64 * MiB, 64 * MiB);
    mp.store.txn(() => mp.store.backends.put(2, { ...mp.pool.backend(2), draining: true }));
    const v = mp.pool.createVolume('a', SIZE).id;
    const io = writer(mp, v);
    const rnd = mulberry32(7);
    const img = Buffer.from(Array.from({ length: SIZE }, () => Math.floor(rnd() * 256)));
    await io.write(img, 0);
    const s1 = await io.takeSnapshot('s1');
    await io.write(Buffer.alloc(64 * 1024, 5), 128 * 1024);
    const s2 = await io.takeSnapshot('s2');
    const clone = mp.pool.cloneVolume(s1.id, 'c');
    const cio = writer(mp, clone.id);
    await cio.write(Buffer.alloc(8192, 6), 4096);
    await io.write(Buffer.alloc(4096, 7), MiB);
    await io.close();
    await cio.close();
    const views = [v, s1.id, s2.id, clone.id];
    const before = await Promise.all(views.map((id) => readAll(mp.io(id), SIZE)));
    mp.store.txn(() => mp.store.backends.put(2, { ...mp.pool.backend(2), draining: false }));
    const allocated = (): number => mp.pool.backendList().reduce((n, b) => n + b.allocatedBytes, 0);
    const total = allocated();
    expect(mp.pool.backend(1).allocatedBytes).to.equal(total);
    const c = await new LayoutController(mp.pool, { timeoutMs: 1000, limits: { bytes: 256 * 1024, span: 4 * MiB }, backends: mp.backends, stop: () => false }).run({ kind: 'drain', backend: 1 });
    expect(c.state).to.equal('done');
    expect(mp.pool.backend(1).allocatedBytes).to.equal(0);
    expect(allocated(), 'shared runs moved once').to.equal(total);
    for (const [i, id] of views.entries()) expect((await readAll(mp.io(id), SIZE)).equals(before[i]!), `view ${id}`).to.equal(true);
    expectClean(mp, 'after the drain');
  });

  it('check tells a leaked layer from an over-counted one', () => {
    const mp = MemoryPool.create(64 * MiB);
    const v = mp.pool.createVolume('a', SIZE).id;
    const s = mp.pool.createSnapshot(v, 's', true);
    const top = mp.pool.volume('a').layer!;
    mp.store.txn(() => mp.store.layers.put(s.layer, { ...mp.store.layers.get(s.layer)!, children: 0 }));
    const r1 = checkPool(mp.pool);
    expect(r1.overCounts.join('\n')).to.match(new RegExp(`layer ${s.layer} counts 0 layers above it, 1 lie there`));
    expect(r1.leaks).to.deep.equal([]);
    mp.store.txn(() => mp.store.layers.put(s.layer, { ...mp.store.layers.get(s.layer)!, children: 3 }));
    const r2 = checkPool(mp.pool);
    expect(r2.leaks.join('\n')).to.match(/counts 3 layers above it, 1 lie there: it would never be freed/);
    expect(r2.overCounts).to.deep.equal([]);
    expect(top).to.be.a('number');
  });
});
