import { expect } from 'chai';
import { checkPool } from '../../src/check/check-pool';
import { MemoryPool } from '../support/memory-pool';

const MiB = 2 ** 20;

/** A pool with two volumes' data committed, for the damage generator to break. */
async function populated(): Promise<MemoryPool> {
  const mp = MemoryPool.create(64 * MiB, 64 * MiB);
  for (const name of ['a', 'b']) {
    const io = mp.io(mp.pool.createVolume(name, 256 * MiB).id);
    for (let i = 0; i < 16; i++) await io.write(Buffer.alloc(64 * 1024, 1 + i), i * 3 * MiB);
    await io.close();
  }
  return mp;
}

type Damage = (mp: MemoryPool) => void;

/** Each kind of damage check must see, done directly in the store as a bug or a bad disk would. */
const damages: [string, Damage, RegExp][] = [
  ['a lost map entry (counters untouched)', (mp) => {
    const [e] = mp.pool.mapOf(1);
    mp.store.txn(() => mp.pool.map.remove(1, e!.vstart, e!.len));
  }, /allocatedBytes says .* the map holds|leaked/],
  ['a map entry pointing into free space', (mp) => {
    const free = [...mp.pool.space.runs(1)][0]!;
    mp.store.txn(() => mp.pool.map.insert(1, { vstart: 200 * MiB, len: 4096, backend: 1, boff: free.start }));
  }, /overlap/],
  ['two volumes mapping the same run', (mp) => {
    const e = mp.pool.mapOf(1)[0]!;
    mp.store.txn(() => mp.pool.map.insert(2, { vstart: 200 * MiB, len: e.len, backend: e.backend, boff: e.boff }));
  }, /overlap/],
  ['a free run lost', (mp) => {
    const r = [...mp.pool.space.runs(2)][0]!;
    mp.store.txn(() => mp.store.free.remove([2, r.start]));
  }, /leaked/],
  ['a reservation without its counter', (mp) => {
    const r = [...mp.pool.space.runs(1)][0]!;
    mp.store.txn(() => {
      mp.store.free.remove([1, r.start]);
      mp.store.free.put([1, r.start + 4096], r.len - 4096);
      mp.store.pending.put(['h:1:1', 1, r.start], { len: 4096, volumeId: 1 });
    });
  }, /reservedBytes says 0/],
  ['a broken name index', (mp) => {
    mp.store.txn(() => mp.store.names.put('a', 2));
  }, /name index/],
  ['an extent past the volume end', (mp) => {
    const v = mp.pool.volume('a');
    mp.store.txn(() => mp.store.volumes.put(v.id, { ...v, sizeBytes: MiB }));
  }, /lies past the end/],
];

describe('check: recompute and diff, against a damage generator', () => {
  it('a healthy pool is clean', async () => {
    expect(checkPool((await populated()).pool).clean).to.equal(true);
  });
  for (const [what, damage, finding] of damages) {
    it(`finds ${what}`, async () => {
      const mp = await populated();
      damage(mp);
      const r = checkPool(mp.pool);
      expect(r.clean).to.equal(false);
      expect(r.errors.join('\n')).to.match(finding);
    });
  }
});
