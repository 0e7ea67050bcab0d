import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VolumeMap } from '../../src/pool/volume-map';
import { LmdbStore } from '../../src/store/lmdb-store';
import { BLOCK } from '../../src/store/records';
import { mulberry32 } from '../support/prng';

describe('VolumeMap against a block-by-block model', () => {
  let dir: string;
  let store: LmdbStore;
  let map: VolumeMap;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'thinvol-unit-'));
    store = new LmdbStore(join(dir, 'pool.lmdb'));
    map = new VolumeMap(store.map);
  });
  after(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('lookup, insert (with merging) and remove agree with the model over 3,000 random operations on 3 volumes', () => {
    const float = mulberry32(7);
    const rnd = (n: number): number => Math.floor(float() * n);
    const SPAN = 512;
    const model = new Map<string, string>();
    const at = (v: number, blk: number): string | undefined => model.get(`${v}:${blk}`);
    let nextBoff = 0;
    for (let op = 0; op < 3000; op++) {
      const v = 1 + rnd(3);
      const start = rnd(SPAN);
      const len = 1 + rnd(24);
      const ext = [...map.extents(v)];
      const before = ext[rnd(ext.length + 1)];
      if (before && rnd(3) === 0) {
        // Fill the gap right before an extent, continuing its backend run: a merge with the next entry.
        let n = 0;
        const end = before.vstart / BLOCK;
        while (n < 8 && end - n - 1 >= 0 && at(v, end - n - 1) === undefined && before.boff - (n + 1) * BLOCK >= 0) n++;
        if (n === 0) continue;
        const vstart = (end - n) * BLOCK;
        const boff = before.boff - n * BLOCK;
        store.txn(() => map.insert(v, { vstart, len: n * BLOCK, backend: before.backend, boff }));
        for (let i = 0; i < n; i++) model.set(`${v}:${end - n + i}`, `${before.backend}@${boff / BLOCK + i}`);
      } else if (rnd(3) > 0) {
        let n = 0;
        while (n < len && start + n < SPAN && at(v, start + n) === undefined) n++;
        if (n === 0) continue;
        const backend = 1 + rnd(2);
        // Half of the inserts continue the previous backend run, so that merges happen.
        const boff = rnd(2) === 0 ? nextBoff : nextBoff + BLOCK;
        store.txn(() => map.insert(v, { vstart: start * BLOCK, len: n * BLOCK, backend, boff }));
        for (let i = 0; i < n; i++) model.set(`${v}:${start + i}`, `${backend}@${boff / BLOCK + i}`);
        nextBoff = boff + n * BLOCK;
      } else {
        const removed = store.txn(() => map.remove(v, start * BLOCK, len * BLOCK));
        let got = 0;
        for (const e of removed) got += e.len / BLOCK;
        let want = 0;
        for (let i = 0; i < len; i++) if (model.delete(`${v}:${start + i}`)) want++;
        expect(got, `remove ${v} [${start},+${len})`).to.equal(want);
      }
      const qs = rnd(SPAN * BLOCK);
      const ql = 1 + rnd(40 * BLOCK);
      for (const e of map.lookup(v, qs, ql)) {
        expect(e.vstart).to.be.at.least(qs);
        expect(e.vstart + e.len).to.be.at.most(qs + ql);
        for (let b = Math.floor(e.vstart / BLOCK); b * BLOCK < e.vstart + e.len; b++) {
          expect(at(v, b), `block ${b} of volume ${v}`).to.equal(`${e.backend}@${Math.floor((e.boff + (b * BLOCK - e.vstart)) / BLOCK)}`);
        }
      }
    }
    for (const v of [1, 2, 3]) {
      const blocks = [...map.extents(v)].reduce((n, e) => n + e.len / BLOCK, 0);
      expect(blocks).to.equal([...model.keys()].filter((k) => k.startsWith(`${v}:`)).length);
      const ext = [...map.extents(v)];
      for (let i = 1; i < ext.length; i++) {
        const a = ext[i - 1]!;
        const b = ext[i]!;
        expect(a.vstart + a.len).to.be.at.most(b.vstart);
        const mergeable = a.vstart + a.len === b.vstart && a.backend === b.backend && a.boff + a.len === b.boff;
        expect(mergeable, `unmerged neighbours at ${b.vstart}`).to.equal(false);
      }
    }
  });

  it('refuses an extent that is not made of whole 4 KiB blocks', () => {
    expect(() => store.txn(() => map.insert(9, { vstart: 100, len: BLOCK, backend: 1, boff: 0 }))).to.throw(/whole number of 4 KiB blocks/);
    expect([...map.extents(9)]).to.have.length(0);
  });
});
