import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Pool } from '../../src/pool/pool';
import { BLOCK } from '../../src/pool/records';
import { mulberry32 } from './prng';

describe('VolumeMap against a block-by-block model', () => {
  let dir: string;
  let pool: Pool;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'thinvol-unit-'));
    pool = await Pool.create(join(dir, 'p'), [{ path: join(dir, 'b1'), sizeBytes: 1024 * 1024 }]);
  });
  after(async () => {
    await pool.close();
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
      const ext = [...pool.map.extents(v)];
      const before = ext[rnd(ext.length + 1)];
      if (before && rnd(3) === 0) {
        // Fill the gap right before an extent, continuing its backend run: a merge with the next entry.
        let n = 0;
        const end = before.vstart / BLOCK;
        while (n < 8 && end - n - 1 >= 0 && at(v, end - n - 1) === undefined && before.boff - (n + 1) * BLOCK >= 0) n++;
        if (n === 0) continue;
        const vstart = (end - n) * BLOCK;
        const boff = before.boff - n * BLOCK;
        pool.store.txn(() => pool.map.insert(v, { vstart, len: n * BLOCK, backend: before.backend, boff }));
        for (let i = 0; i < n; i++) model.set(`${v}:${end - n + i}`, `${before.backend}@${boff / BLOCK + i}`);
      } else if (rnd(3) > 0) {
        let n = 0;
        while (n < len && start + n < SPAN && at(v, start + n) === undefined) n++;
        if (n === 0) continue;
        const backend = 1 + rnd(2);
        // Half of the inserts continue the previous backend run, so that merges happen.
        const boff = rnd(2) === 0 ? nextBoff : nextBoff + BLOCK;
        pool.store.txn(() => pool.map.insert(v, { vstart: start * BLOCK, len: n * BLOCK, backend, boff }));
        for (let i = 0; i < n; i++) model.set(`${v}:${start + i}`, `${backend}@${boff / BLOCK + i}`);
        nextBoff = boff + n * BLOCK;
      } else {
        const removed = pool.store.txn(() => pool.map.remove(v, start * BLOCK, len * BLOCK));
        let got = 0;
        for (const e of removed) got += e.len / BLOCK;
        let want = 0;
        for (let i = 0; i < len; i++) if (model.delete(`${v}:${start + i}`)) want++;
        expect(got, `remove ${v} [${start},+${len})`).to.equal(want);
      }
      const qs = rnd(SPAN * BLOCK);
      const ql = 1 + rnd(40 * BLOCK);
      for (const e of pool.map.lookup(v, qs, ql)) {
        expect(e.vstart).to.be.at.least(qs);
        expect(e.vstart + e.len).to.be.at.most(qs + ql);
        for (let b = Math.floor(e.vstart / BLOCK); b * BLOCK < e.vstart + e.len; b++) {
          expect(at(v, b), `block ${b} of volume ${v}`).to.equal(`${e.backend}@${Math.floor((e.boff + (b * BLOCK - e.vstart)) / BLOCK)}`);
        }
      }
    }
    for (const v of [1, 2, 3]) {
      const blocks = [...pool.map.extents(v)].reduce((n, e) => n + e.len / BLOCK, 0);
      expect(blocks).to.equal([...model.keys()].filter((k) => k.startsWith(`${v}:`)).length);
      const ext = [...pool.map.extents(v)];
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
    expect(() => pool.store.txn(() => pool.map.insert(9, { vstart: 100, len: BLOCK, backend: 1, boff: 0 }))).to.throw(/whole number of 4 KiB blocks/);
    expect([...pool.map.extents(9)]).to.have.length(0);
  });
});
