import { expect } from 'chai';
import { planBatch, rebalanceStep, type PlacedExtent } from '../../src/layout/plan-batch';
import type { BackendRecord } from '../../src/store/records';

const K = 4096;
const M = 1024 * 1024;

const ext = (volume: number, vstart: number, len: number, backend: number, boff = vstart): PlacedExtent => ({ volume, vstart, len, backend, boff });
const onBackend = (b: number) => (e: PlacedExtent): boolean => e.backend === b;

describe('planBatch()', () => {
  const limits = { bytes: 4 * M, span: 16 * M };

  it('starts at the first extent that must move and skips (but spans) those that stay', () => {
    const b = planBatch([ext(1, 0, 64 * K, 2), ext(1, 64 * K, 8 * K, 1), ext(1, 80 * K, 8 * K, 2), ext(1, 96 * K, 4 * K, 1)], onBackend(1), limits);
    expect(b).to.deep.include({ volume: 1, start: 64 * K, end: 100 * K, bytes: 12 * K });
    expect(b?.moves.map((m) => [m.vstart, m.len, m.from.backend])).to.deep.equal([[64 * K, 8 * K, 1], [96 * K, 4 * K, 1]]);
  });

  it('never crosses into another volume', () => {
    const b = planBatch([ext(1, 0, 8 * K, 1), ext(2, 0, 8 * K, 1)], onBackend(1), limits);
    expect(b?.volume).to.equal(1);
    expect(b?.moves).to.have.length(1);
  });

  it('cuts a large extent at the byte limit, on a block boundary, keeping the backend offset in step', () => {
    const b = planBatch([ext(3, 4 * M, 100 * M, 1, 40 * M)], onBackend(1), limits)!;
    expect(b.moves).to.deep.equal([{ vstart: 4 * M, len: 4 * M, from: { backend: 1, boff: 40 * M } }]);
    expect(b.end).to.equal(8 * M);
  });

  it('stops at the span limit even when few bytes move', () => {
    const many = Array.from({ length: 100 }, (_, i) => ext(1, i * M, K, 1));
    const b = planBatch(many, onBackend(1), limits)!;
    expect(b.end - b.start).to.be.at.most(limits.span);
    expect(b.moves).to.have.length(16);
    for (const m of b.moves) expect(m.vstart % K).to.equal(0);
  });

  it('finds nothing when nothing must move', () => {
    expect(planBatch([ext(1, 0, M, 2)], onBackend(1), limits)).to.equal(undefined);
    expect(planBatch([], onBackend(1), limits)).to.equal(undefined);
  });
});

describe('rebalanceStep()', () => {
  const be = (id: number, capacityBytes: number, allocatedBytes: number, draining = false): BackendRecord => ({ id, path: `/b${id}`, kind: 'file', dataStart: 0, capacityBytes, allocatedBytes, reservedBytes: 0, ...(draining ? { draining } : {}) });

  it('moves from the fullest to the emptiest backend, relative to capacity', () => {
    expect(rebalanceStep([be(1, 2048 * M, 1024 * M), be(2, 2048 * M, 0)], 4 * M)).to.deep.equal({ from: 1, to: 2, bytes: 512 * M });
    expect(rebalanceStep([be(1, 1024 * M, 600 * M), be(2, 3072 * M, 600 * M)], 4 * M)).to.deep.equal({ from: 1, to: 2, bytes: 300 * M });
  });

  it('stops when the imbalance is below one move, ignores draining backends', () => {
    expect(rebalanceStep([be(1, 1024 * M, 101 * M), be(2, 1024 * M, 99 * M)], 4 * M)).to.equal(undefined);
    expect(rebalanceStep([be(1, 1024 * M, 500 * M), be(2, 1024 * M, 0, true)], 4 * M)).to.equal(undefined);
  });
});
