import { expect } from 'chai';
import { DEFAULT_SPACE_POLICY, spaceLevel, thresholdBytes, worse } from '../../src/pool/space-policy';

const MiB = 2 ** 20;

describe('space policy', () => {
  it('thresholds are a share of capacity or a size', () => {
    expect(thresholdBytes({ pct: 10 }, 1000 * MiB)).to.equal(100 * MiB);
    expect(thresholdBytes({ pct: 2.5 }, 1000)).to.equal(25);
    expect(thresholdBytes({ bytes: 7 * MiB }, 1000 * MiB)).to.equal(7 * MiB);
  });

  it('levels follow free space against the thresholds; a waiting write means out of space whatever is free', () => {
    const cap = 1000 * MiB;
    const p = DEFAULT_SPACE_POLICY;
    expect(spaceLevel(p, cap, 100 * MiB, 0)).to.equal('ok');
    expect(spaceLevel(p, cap, 100 * MiB - 1, 0)).to.equal('lowSpace');
    expect(spaceLevel(p, cap, 20 * MiB, 0)).to.equal('lowSpace');
    expect(spaceLevel(p, cap, 20 * MiB - 1, 0)).to.equal('critical');
    expect(spaceLevel(p, cap, 4095, 0)).to.equal('outOfSpace');
    expect(spaceLevel(p, cap, 500 * MiB, 1)).to.equal('outOfSpace');
    expect(spaceLevel(p, 0, 0, 0)).to.equal('outOfSpace');
  });

  it('a crossing is a move to a worse level', () => {
    expect(worse('lowSpace', 'ok')).to.equal(true);
    expect(worse('outOfSpace', 'lowSpace')).to.equal(true);
    expect(worse('ok', 'critical')).to.equal(false);
    expect(worse('critical', 'critical')).to.equal(false);
  });
});
