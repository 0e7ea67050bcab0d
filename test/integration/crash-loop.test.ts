import { expect } from 'chai';
import { runCrashLoop } from '../support/crash-loop';
import { Sandbox } from '../support/sandbox';

describe('crash loop: daemons killed -9 at random moments beside CLI commands (killed too)', () => {
  const sb = new Sandbox();
  before(async () => { await sb.createPool('b1:2G'); });
  after(() => sb.cleanup());

  it('every fsynced write reads back, nothing else changed, check clean after every round', async function () {
    this.timeout(600_000);
    const seed = Number(process.env.THINVOL_SEED ?? Date.now() % 1e9);
    const r = await runCrashLoop(sb, { rounds: 8, seed, volumeBytes: 128 * 2 ** 20, cli: true, secondDaemon: true });
    console.log(`      seed ${seed}: ${r.rounds} rounds, ${r.writes} writes, ${r.fsyncs} fsyncs, ${r.fsyncedWritesVerified} fsynced writes verified, ${(r.bytesVerified / 2 ** 20).toFixed(0)} MiB read back, ${r.cliRuns} CLI runs (${r.cliKilled} killed)`);
    expect(r.mismatches, r.mismatches.join('\n')).to.deep.equal([]);
    expect(r.checkFailures, r.checkFailures.join('\n')).to.deep.equal([]);
    expect(r.fsyncedWritesVerified).to.be.greaterThan(0);
  });
});
