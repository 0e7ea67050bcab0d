import type { Argv } from 'yargs';
import { REPORT_TIMEOUT_MS } from '../../control/timing';
import { LayoutController } from '../../layout/controller';
import type { ChangeRecord, ChangeRequest } from '../../store/records';
import type { Pool } from '../../pool/pool';
import { FsError } from '../../util/errors';
import { formatSize, parseSize } from '../../util/size';
import { withPool, type GlobalArgs } from '../context';
import { emit } from '../output';

export interface ChangeArgs { timeout: number; batch: string }

/** Options every layout-changing command takes. */
export function changeOptions<T>(c: Argv<T>): Argv<T & ChangeArgs> {
  return c
    .option('timeout', { type: 'number', default: REPORT_TIMEOUT_MS / 1000, describe: 'seconds a mount daemon has to report each step before it is fenced (its volumes are then left as they are)' })
    .option('batch', { type: 'string', default: '4M', describe: 'most bytes moved per batch; the range is held while they are copied' });
}

export function summarize(c: ChangeRecord): string[] {
  const rate = c.copyMs > 0 ? `${formatSize(Math.round((c.bytesCopied / c.copyMs) * 1000))}/s` : '-';
  const lines = [`change ${c.id} (${c.title}): ${c.state}: ${c.batchesDone} batches, ${formatSize(c.bytesCopied)} copied (copy rate ${rate}), longest hold ${c.maxHoldMs} ms${c.resumes > 0 ? `, resumed ${c.resumes}x` : ''}`];
  for (const f of c.fenced) lines.push(`  fenced: daemon pid ${f.pid}: ${f.reason}`);
  if (c.outcome) lines.push(`  ${c.outcome}`);
  return lines;
}

/** Runs a change as this process's controller; Ctrl-C stops it after the current batch. */
export async function runChange(a: GlobalArgs & ChangeArgs, request: (pool: Pool) => ChangeRequest): Promise<void> {
  if (!(a.timeout > 0)) throw new FsError('EINVAL', `bad --timeout ${a.timeout}: must be a positive number of seconds`);
  const batch = parseSize(a.batch);
  if (batch < 4096 || batch % 4096 !== 0) throw new FsError('EINVAL', `bad --batch ${a.batch}: must be a multiple of 4 KiB`);
  let stop = false;
  const onSignal = (): void => { stop = true; };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const change = await withPool(a, (pool) => new LayoutController(pool, {
      timeoutMs: a.timeout * 1000,
      limits: { bytes: batch, span: Math.max(batch * 4, 64 * 1024 * 1024) },
      stop: () => stop,
    }).run(request(pool)));
    emit(a.json, change, () => summarize(change));
    if (change.state !== 'done') process.exitCode = 3;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

export function layoutCommands(y: Argv<GlobalArgs>): Argv<GlobalArgs> {
  return y
    .command('migrate <volume>', 'move a volume\'s extents (or a range of them) to one backend, online', (c) => changeOptions(c
      .positional('volume', { type: 'string', demandOption: true })
      .option('to', { type: 'string', demandOption: true, describe: 'backend id or path' })
      .option('offset', { type: 'string', default: '0', describe: 'start of the range to move' })
      .option('length', { type: 'string', describe: 'length of the range (default: to the end)' })),
    (a) => runChange(a, (pool) => {
      const v = pool.volume(a.volume);
      const offset = parseSize(a.offset);
      const length = a.length === undefined ? Number.MAX_SAFE_INTEGER : parseSize(a.length);
      if (offset % 4096 !== 0 || (a.length !== undefined && length % 4096 !== 0)) throw new FsError('EINVAL', '--offset and --length must be multiples of 4 KiB');
      return { kind: 'migrate', volume: v.id, to: pool.findBackend(a.to).id, offset, length };
    }))
    .command('rebalance', 'move extents so that every backend is filled to the same fraction (after backend add)', (c) => changeOptions(c),
      (a) => runChange(a, () => ({ kind: 'rebalance' })));
}
