/**
 * Long crash loop (issue 9's acceptance): daemons killed -9 at random moments beside CLI commands
 * (some killed too), every round verified. `node dist/scripts/soak/crash-loop.js --rounds 100`.
 * Needs root, FUSE and losetup like the integration tests.
 */
import yargs from 'yargs';
import { runCrashLoop } from '../../test/support/crash-loop';
import { Sandbox } from '../../test/support/sandbox';

async function main(): Promise<void> {
  const a = await yargs(process.argv.slice(2))
    .option('rounds', { type: 'number', default: 100 })
    .option('seed', { type: 'number', default: Date.now() % 1e9 })
    .option('size', { type: 'number', default: 256, describe: 'volume size in MiB' })
    .strict().parseAsync();
  const sb = new Sandbox();
  const started = Date.now();
  const stop = (): void => { void sb.cleanup().finally(() => process.exit(130)); };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    await sb.createPool(`b1:${a.size * 3}M`);
    console.log(`crash loop: ${a.rounds} rounds, seed ${a.seed}, two ${a.size} MiB volumes on two daemons, CLI commands alongside`);
    const r = await runCrashLoop(sb, { rounds: a.rounds, seed: a.seed, volumeBytes: a.size * 2 ** 20, cli: true, secondDaemon: true, log: (l) => console.log(`  ${l}`) });
    console.log(JSON.stringify({ ...r, mismatches: r.mismatches.length, checkFailures: r.checkFailures.length, minutes: +((Date.now() - started) / 60000).toFixed(1) }));
    for (const m of [...r.mismatches, ...r.checkFailures].slice(0, 20)) console.log(`  ${m}`);
    process.exitCode = r.mismatches.length + r.checkFailures.length > 0 ? 1 : 0;
  } finally {
    await sb.cleanup();
  }
}

void main();
