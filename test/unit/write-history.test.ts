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
    // Each time 8,705 chunks (8,192 + 512 slack + 1) are known, the oldest 513 are dropped: after
    // writes 8,705, 9,218 and 9,731. Chunk 1,538 was the last one dropped, at sequence 1,539.
    expect(h.lastWrite(0, 4 * K)).to.equal(1_539);
    expect(h.lastWrite(1_538 * 64 * K, 1_539 * 64 * K)).to.equal(1_539);
    expect(h.lastWrite(1_539 * 64 * K, 1_540 * 64 * K)).to.equal(1_540);
    expect(h.lastWrite(2 ** 40, 2 ** 40 + 4 * K)).to.equal(1_539);
    for (let c = 10_000; c < 30_000; c++) h.record(c * 64 * K, c * 64 * K + 4 * K);
    // At most 8,704 chunks are known; the newest 8,192 always are.
    const floor = h.lastWrite(0, 4 * K);
    expect(floor).to.be.within(30_000 - 8_704, 30_000 - 8_192);
    expect(h.lastWrite((30_000 - 8_192) * 64 * K, (30_000 - 8_191) * 64 * K)).to.equal(30_000 - 8_191);
  });
});
