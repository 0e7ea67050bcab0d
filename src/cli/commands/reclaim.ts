import type { Argv } from 'yargs';
import { controlRequest } from '../../control/control-client';
import { controlSocketPath } from '../../control/control-server';
import { selfHolder } from '../../pool/holder';
import { coldReclaim, type ReclaimReport } from '../../reclaim/reclaimer';
import { formatSize } from '../../util/size';
import { VolumeIo } from '../../volume/volume-io';
import { withPool, type GlobalArgs } from '../context';
import { emit } from '../output';

export function reclaimCommand(y: Argv<GlobalArgs>): Argv<GlobalArgs> {
  return y.command('reclaim <volume>', 'give back blocks the guest filesystem (ext4 or XFS) has freed, read from its journal/log; works while it is mounted through a loop device', (c) => c
    .positional('volume', { type: 'string', demandOption: true })
    .option('dry-run', { type: 'boolean', default: false, describe: 'report what would be released, release nothing' }),
  (a) => withPool(a, async (pool) => {
    const v = pool.volume(a.volume);
    const writer = pool.claimant(v.id);
    let report: ReclaimReport;
    if (writer) {
      report = await controlRequest(controlSocketPath(pool.runDir, writer.pid), { op: 'reclaim', volume: v.name, dryRun: a['dry-run'] });
    } else {
      const holder = selfHolder();
      pool.claim(v.id, holder);
      const backends = pool.backendSet();
      const io = new VolumeIo(pool, backends, holder, v.id);
      try {
        report = await coldReclaim(io, a['dry-run']);
      } finally {
        await io.close();
        pool.unclaim(v.id, holder);
        await backends.closeAll();
      }
    }
    emit(a.json, report, () => report.ok
      ? [
        `${report.volume}: ${report.fs}, ${report.examinedBlocks} blocks of ${report.blockSize} bytes examined`,
        `  free in the guest's committed view: ${formatSize(report.guestFreeBytes)}; of it allocated in the pool: ${formatSize(report.candidateBytes)}`,
        `  ${report.dryRun ? 'would release' : 'released'}: ${formatSize(report.dryRun ? report.candidateBytes - report.keptRecentBytes : report.releasedBytes)}`,
        `  kept: ${formatSize(report.keptRecentBytes)} written too recently (waiting for the guest's journal to commit past them)`,
        ...report.notes.map((n) => `  note: ${n}`),
      ]
      : [`${report.volume}: nothing released: ${report.reason ?? 'unknown reason'}`]);
  }));
}
