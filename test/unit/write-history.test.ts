import { expect } from 'chai';
import { WriteHistory } from '../../src/reclaim/write-history';

const K = 1024;

describe('write history', () => {
  it('judges each 64 KiB chunk by its own last write, so a rewritten neighbour does not hold back a freed block', () => {
    const h = new WriteHistory();
    h.record(0, 256 * K);
    h.record(70 * K, 74 * K);
    const pieces = [...h.pieces(32 * K, 200 * K)];
    expect(pieces).to.deep.equal([
      { start: 32 * K, end: 64 * K, seq: 1 },
      { start: 64 * K, end: 128 * K, seq: 2 },
      { start: 128 * K, end: 192 * K, seq: 1 },
      { start: 192 * K, end: 200 * K, seq: 1 },
    ]);
    expect(h.lastWrite(0, 64 * K)).to.equal(1);
    expect(h.lastWrite(0, 65 * K)).to.equal(2);
    expect(h.lastWrite(300 * K, 400 * K)).to.equal(0);
  });

  it('stays bounded and never reports a dropped chunk as written earlier than it was', () => {
    const h = new WriteHistory();
    for (let c = 0; c < 10_000; c++) h.record(c * 64 * K, c * 64 * K + 4 * K);
    // 8,192 chunks are kept; chunk 1,807 was the last one dropped, at sequence 1,808.
    expect(h.lastWrite(0, 4 * K)).to.equal(1_808);
    expect(h.lastWrite(1_807 * 64 * K, 1_808 * 64 * K)).to.equal(1_808);
    expect(h.lastWrite(1_808 * 64 * K, 1_809 * 64 * K)).to.equal(1_809);
    expect(h.lastWrite(2 ** 40, 2 ** 40 + 4 * K)).to.equal(1_808);
  });
});
