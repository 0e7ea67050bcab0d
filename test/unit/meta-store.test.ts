import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LmdbStore } from '../../src/store/lmdb-store';
import { MemoryStore } from '../../src/store/memory-store';
import type { MetaStore } from '../../src/store/meta-store';
import { mulberry32 } from '../support/prng';

/** One conformance suite for both stores: LMDB is the product, memory the reference the model tests run on. */
for (const kind of ['lmdb', 'memory'] as const) {
  describe(`metadata store conformance: ${kind}`, () => {
    let dir: string;
    let store: MetaStore;
    beforeEach(() => {
      dir = mkdtempSync(join(tmpdir(), 'thinvol-store-'));
      store = kind === 'lmdb' ? new LmdbStore(join(dir, 'pool.lmdb')) : new MemoryStore();
    });
    afterEach(async () => {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    });

    it('writes only inside a transaction; a throw aborts every write of it', () => {
      expect(() => store.names.put('a', 1)).to.throw(/outside a transaction/);
      store.txn(() => store.names.put('a', 1));
      expect(() => store.txn(() => {
        store.names.put('a', 2);
        store.names.put('b', 3);
        throw new Error('abort');
      })).to.throw('abort');
      expect(store.names.get('a')).to.equal(1);
      expect(store.names.get('b')).to.equal(undefined);
    });

    it('a nested transaction joins the outer one', () => {
      expect(() => store.txn(() => {
        store.txn(() => store.names.put('inner', 1));
        throw new Error('abort');
      })).to.throw('abort');
      expect(store.names.get('inner')).to.equal(undefined);
    });

    it('orders tuple and byte-string keys as LMDB does; ranges forward and reverse, with limits', () => {
      store.txn(() => {
        for (const [b, s] of [[2, 0], [1, 4096], [1, 0], [1, 8192], [3, 5]] as const) store.free.put([b, s], s + 1);
        for (const k of ['01', '0102', '02', 'ff']) store.map.put(Buffer.from(k, 'hex'), Buffer.from(k, 'hex'));
      });
      expect([...store.free.getKeys()]).to.deep.equal([[1, 0], [1, 4096], [1, 8192], [2, 0], [3, 5]]);
      expect([...store.free.getKeys({ start: [1, 4096], end: [2, 0] })]).to.deep.equal([[1, 4096], [1, 8192]]);
      expect([...store.free.getKeys({ start: [1, 5000], end: [1, -1], reverse: true })]).to.deep.equal([[1, 4096], [1, 0]]);
      expect([...store.free.getKeys({ start: [1, 4096], end: [1, -1], reverse: true, limit: 1 })]).to.deep.equal([[1, 4096]]);
      expect([...store.free.getRange({ start: [2, 0] })].map((r) => r.value)).to.deep.equal([1, 6]);
      expect([...store.map.getKeys()].map((k) => k.toString('hex'))).to.deep.equal(['01', '0102', '02', 'ff']);
      expect([...store.map.getKeys({ start: Buffer.from('0101', 'hex'), end: Buffer.from('02', 'hex') })].map((k) => k.toString('hex'))).to.deep.equal(['0102']);
    });

    it('agrees with a plain model under random puts, removes and range reads (seeded)', () => {
      const seed = Number(process.env.THINVOL_SEED ?? Date.now() % 1e9);
      const rnd = mulberry32(seed);
      const model = new Map<string, number>();
      for (let t = 0; t < 200; t++) {
        store.txn(() => {
          for (let i = 0; i < 10; i++) {
            const key: [number, number] = [Math.floor(rnd() * 4), Math.floor(rnd() * 50) * 4096];
            if (rnd() < 0.3) { store.free.remove(key); model.delete(key.join()); } else { store.free.put(key, t); model.set(key.join(), t); }
          }
        });
        const b = Math.floor(rnd() * 4);
        const at = Math.floor(rnd() * 50) * 4096;
        const want = [...model.keys()].map((k) => k.split(',').map(Number) as [number, number]).filter(([x, y]) => x === b && y <= at).sort((p, q) => q[1] - p[1])[0];
        const [got] = store.free.getKeys({ start: [b, at], end: [b, -1], reverse: true, limit: 1 });
        expect(got, `seed ${seed}`).to.deep.equal(want);
      }
      const all = [...store.free.getRange()].map((r) => `${r.key.join()}=${r.value}`);
      const expected = [...model.entries()].map(([k, v]) => [k.split(',').map(Number), v] as const).sort((p, q) => p[0][0]! - q[0][0]! || p[0][1]! - q[0][1]!).map(([k, v]) => `${k.join()}=${v}`);
      expect(all, `seed ${seed}`).to.deep.equal(expected);
    });

    it('values read are copies: changing one changes nothing stored', () => {
      store.txn(() => store.claims.put(1, { pid: 5, startTime: 6, host: 'h' }));
      const v = store.claims.get(1)!;
      v.pid = 99;
      expect(store.claims.get(1)!.pid).to.equal(5);
    });
  });
}
