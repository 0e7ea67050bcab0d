import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runStoreProcesses } from '../support/store-processes';

describe('metadata store shared by many processes (daemons and CLI commands), some killed', () => {
  const dirs: string[] = [];
  after(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

  for (const synced of [false, true]) {
    it(`loses no committed transaction, hangs and crashes nowhere (${synced ? 'synced commits, as the product runs' : 'unsynced commits: many more of them, to widen the races'})`, async function () {
      this.timeout(180_000);
      const seed = Number(process.env.THINVOL_SEED ?? Date.now() % 1e9);
      const dir = mkdtempSync(join(tmpdir(), 'thinvol-store-'));
      dirs.push(dir);
      const r = await runStoreProcesses({ dir, seconds: 15, longWriters: 2, parallel: 4, seed, synced });
      console.log(`      seed ${seed}: ${r.longCommits} commits by 2 long-lived writers, ${r.shortCommitted} of ${r.shortStarted} short-lived writers committed (${r.shortKilled} killed), ${r.readers} readers, slowest commit ${r.slowestCommitMs} ms`);
      expect(r.problems, r.problems.join('\n')).to.deep.equal([]);
      expect(r.longCommits).to.be.greaterThan(1000);
      expect(r.shortCommitted).to.be.greaterThan(20);
      expect(r.shortKilled).to.be.greaterThan(5);
    });
  }
});
