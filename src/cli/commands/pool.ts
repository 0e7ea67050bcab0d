import { resolve } from 'node:path';
import type { Argv } from 'yargs';
import { parseBackendSpec } from '../parse-backend';
import { Pool } from '../../pool/pool';
import { convertFormat2 } from '../../store/convert-format2';
import { formatThreshold, reserveBytes } from '../../pool/space-policy';
import type { SpacePolicy, Threshold } from '../../store/records';
import { FsError } from '../../util/errors';
import { formatSize, parseSize } from '../../util/size';
import { withPool, type GlobalArgs } from '../context';
import { emit } from '../output';

/** `10%` or a size such as `20G`. */
function thresholdArg(text: string, what: string): Threshold {
  const pct = /^(\d+(?:\.\d+)?)%$/.exec(text.trim());
  if (pct) {
    const n = Number(pct[1]);
    if (n > 100) throw new FsError('EINVAL', `bad ${what} ${text}: a percentage is at most 100%`);
    return { pct: n };
  }
  try {
    return { bytes: parseSize(text) };
  } catch {
    throw new FsError('EINVAL', `bad ${what} ${text}: give a percentage of the pool's capacity (10%) or a size (20G)`);
  }
}

function policyLines(p: SpacePolicy, capacityBytes: number): string[] {
  return [
    `  reserve:      ${formatSize(reserveBytes(p, capacityBytes))} kept back for writes into guests' journals${p.reserve === undefined ? ' (default: 1% of capacity, 16 MiB-1 GiB)' : ` (${formatThreshold(p.reserve)})`}`,
    `  low-water:    ${formatThreshold(p.lowWater)} free`,
    `  critical:     ${formatThreshold(p.critical)} free`,
    `  when full:    ${p.whenFull === 'queue' ? `writes wait up to ${p.fullTimeoutS} s for space, then fail with ENOSPC` : 'writes fail at once with ENOSPC'}`,
    `  on low space: ${p.onLowSpace ?? '(no hook)'}`,
  ];
}

export function poolCommand(y: Argv<GlobalArgs>): Argv<GlobalArgs> {
  return y.command('pool', 'create a pool, or set what it does as it fills', (b) => b
    .command('create', 'make a new pool in --pool DIR', (c) => c
      .option('backend', { type: 'string', array: true, demandOption: true, describe: 'PATH[:SIZE]: a file (created sparse at SIZE, e.g. 10G) or a block device (used whole); repeat for several' }),
    async (a) => {
      const pool = await Pool.create(a.pool, a.backend.map(parseBackendSpec));
      try {
        const backends = pool.backendList();
        emit(a.json, { pool: pool.dir, backends }, () => [
          `created pool ${pool.dir}`,
          ...backends.map((bk) => `  backend ${bk.id}: ${bk.path} (${bk.kind}, ${formatSize(bk.capacityBytes)})`),
        ]);
      } finally {
        await pool.close();
      }
    })
    .command('convert-metadata', "rewrite the metadata of a pool made before 2026-11-30 in the current format (once, with the pool's daemons stopped); the old file is kept as pool.lmdb.format2", (c) => c,
      async (a) => {
        const r = await convertFormat2(Pool.metaFile(resolve(a.pool)));
        emit(a.json, { pool: resolve(a.pool), ...r }, () => [
          `converted the metadata of pool ${resolve(a.pool)}: ${r.records} records`,
          `  the old file is kept as ${r.backup}; remove it once the pool works`,
        ]);
      })
    .command('set', 'low-space thresholds, their hook, and what a write does when the pool is full; with no option, shows them', (c) => c
      .option('low-water', { type: 'string', describe: 'free space below which the pool is low: PCT% of capacity or a SIZE (default 10%)' })
      .option('critical', { type: 'string', describe: 'free space below which it is critical (default 2%)' })
      .option('when-full', { choices: ['queue', 'error'] as const, describe: 'queue: a write needing new space waits for space (default); error: it fails at once with ENOSPC' })
      .option('full-timeout', { type: 'number', describe: 'seconds a queued write waits before it fails with ENOSPC (default 60)' })
      .option('reserve', { type: 'string', describe: "space kept back from ordinary allocation for writes into guests' journals, so that a full guest can commit the deletes that free space: PCT% of capacity or a SIZE (default 1%, at least 16M, at most 1G); 0 turns it off" })
      .option('on-low-space', { type: 'string', describe: 'command run (sh -c) once per crossing into low, critical or out of space; env: THINVOL_POOL, THINVOL_LEVEL, THINVOL_FREE_BYTES, THINVOL_CAPACITY_BYTES, THINVOL_LOW_WATER_BYTES, THINVOL_CRITICAL_BYTES; "" removes it' }),
    (a) => withPool(a, (pool) => {
      const change: Partial<SpacePolicy> = {};
      if (a.lowWater !== undefined) change.lowWater = thresholdArg(a.lowWater, '--low-water');
      if (a.critical !== undefined) change.critical = thresholdArg(a.critical, '--critical');
      if (a.whenFull !== undefined) change.whenFull = a.whenFull;
      if (a.reserve !== undefined) change.reserve = thresholdArg(a.reserve, '--reserve');
      if (a.fullTimeout !== undefined) {
        if (!Number.isInteger(a.fullTimeout) || a.fullTimeout < 0) throw new FsError('EINVAL', `bad --full-timeout ${a.fullTimeout}: give whole seconds, 0 or more`);
        change.fullTimeoutS = a.fullTimeout;
      }
      const policy = Object.keys(change).length > 0 || a.onLowSpace !== undefined ? pool.setSpacePolicy(change, a.onLowSpace) : pool.spacePolicy();
      emit(a.json, policy, () => [`pool ${pool.dir}:`, ...policyLines(policy, pool.usage().capacityBytes)]);
    }))
    .demandCommand(1, 'say which: pool create|set'), () => undefined);
}
