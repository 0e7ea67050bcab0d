/**
 * Long multi-process store run: long-lived writers, short-lived writers and readers, a third
 * of them killed -9. `node dist/scripts/soak/store.js --seconds 600`. No root needed.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import yargs from 'yargs';
import { runStoreProcesses } from '../../test/support/store-processes';

async function main(): Promise<void> {
  const a = await yargs(process.argv.slice(2))
    .option('seconds', { type: 'number', default: 600, describe: 'per mode (unsynced, then synced commits)' })
    .option('seed', { type: 'number', default: Date.now() % 1e9 })
    .option('long-writers', { type: 'number', default: 2, describe: 'processes committing in a loop for the whole run (daemons)' })
    .option('parallel', { type: 'number', default: 4, describe: 'short-lived writers and readers at once (CLI commands)' })
    .option('mode', { choices: ['both', 'unsynced', 'synced'] as const, default: 'both' as const, describe: 'unsynced commits are many more per second; synced is how the product runs' })
    .strict().parseAsync();
  let failed = false;
  const modes = a.mode === 'both' ? [false, true] : [a.mode === 'synced'];
  for (const synced of modes) {
    const dir = mkdtempSync(join(tmpdir(), 'thinvol-soak-store-'));
    try {
      const r = await runStoreProcesses({ dir, seconds: a.seconds, longWriters: a['long-writers'], parallel: a.parallel, seed: a.seed, synced });
      console.log(JSON.stringify({ synced, seed: a.seed, seconds: a.seconds, ...r, problems: r.problems.length }));
      for (const p of r.problems.slice(0, 20)) console.log(`  ${p}`);
      failed ||= r.problems.length > 0;
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  process.exitCode = failed ? 1 : 0;
}

void main();
