import { expect } from 'chai';
import { runPowerCutModel } from '../support/power-cut-model';

describe('power-cut model: metadata and data after a cut at any moment (memory store and backends)', () => {
  const base = Number(process.env.THINVOL_SEED ?? Date.now() % 1e9);

  it('acknowledged writes survive, nothing shows bytes it was not given, check is clean (seeded workloads)', async function () {
    this.timeout(120_000);
    console.log(`      seeds ${base}..${base + 5} (THINVOL_SEED=${base} to replay)`);
    let cuts = 0;
    let sectors = 0;
    for (let seed = base; seed < base + 6; seed++) {
      const r = await runPowerCutModel({ seed, steps: 250, cuts: 40 });
      cuts += r.cutsChecked;
      sectors += r.sectorsChecked;
      expect(r.failures, r.failures.join('\n')).to.deep.equal([]);
    }
    console.log(`      ${cuts} cut states checked, ${sectors} sectors verified`);
  });

  it('finds lost writes when the disk ignores flushes (the model can fail)', async function () {
    this.timeout(60_000);
    let found = 0;
    for (let seed = base; seed < base + 3; seed++) found += (await runPowerCutModel({ seed, steps: 250, cuts: 40, brokenFlush: true })).failures.length;
    expect(found).to.be.greaterThan(0);
  });
});
