/**
 * Long power-cut model run: many seeded workloads, many cut points each, both the flushed-only
 * and the reordered disk. `node dist/scripts/soak/power-cut.js --workloads 200`. No root needed.
 */
import yargs from 'yargs';
import { runPowerCutModel } from '../../test/support/power-cut-model';

async function main(): Promise<void> {
  const a = await yargs(process.argv.slice(2))
    .option('workloads', { type: 'number', default: 200 })
    .option('steps', { type: 'number', default: 400 })
    .option('cuts', { type: 'number', default: 60, describe: 'cut points per workload (each checked twice: flushed-only, reordered)' })
    .option('seed', { type: 'number', default: Date.now() % 1e9 })
    .strict().parseAsync();
  const totals = { workloads: 0, events: 0, commits: 0, cutsChecked: 0, sectorsChecked: 0, failures: 0 };
  const started = Date.now();
  for (let w = 0; w < a.workloads; w++) {
    const r = await runPowerCutModel({ seed: a.seed + w, steps: a.steps, cuts: a.cuts });
    totals.workloads++;
    totals.events += r.events;
    totals.commits += r.commits;
    totals.cutsChecked += r.cutsChecked;
    totals.sectorsChecked += r.sectorsChecked;
    totals.failures += r.failures.length;
    for (const f of r.failures.slice(0, 5)) console.log(`  ${f}`);
    if ((w + 1) % 20 === 0) console.log(`  ${w + 1} workloads, ${totals.cutsChecked} cuts checked, ${totals.failures} failures`);
  }
  console.log(JSON.stringify({ seed: a.seed, ...totals, minutes: +((Date.now() - started) / 60000).toFixed(1) }));
  process.exitCode = totals.failures > 0 ? 1 : 0;
}

void main();
