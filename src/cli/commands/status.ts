import { setTimeout as sleep } from 'node:timers/promises';
import type { Argv } from 'yargs';
import { LATE_MS } from '../../control/timing';
import type { Pool } from '../../pool/pool';
import type { ChangeRecord } from '../../store/records';
import { leaseLive } from '../../pool/registry';
import { formatSize } from '../../util/size';
import { withPool, type GlobalArgs } from '../context';
import { emit, table } from '../output';
import { spaceLine, spaceView, type SpaceView } from './df';

/** A snapshot a daemon serves, by its file name in the mount. */
function snapshotName(pool: Pool, id: number): string | undefined {
  const s = pool.snapshotById(id);
  return s && `${pool.volumeById(s.volume)?.name ?? `id:${s.volume}`}@${s.name}`;
}
import { summarize } from './layout';

const BAR = 30;

interface StatusDaemon { id: string; pid: number; mountpoint: string; binding: string; health: string; heartbeatAgeMs: number; epoch: number; volumes: string[]; holds: number; queuedWrites: number; fenced?: { change: number; reason: string } }
interface Status { space: SpaceView; daemons: StatusDaemon[]; controller?: { pid: number; change: number }; running?: ChangeRecord; changes: ChangeRecord[] }

function snapshot(pool: Pool): Status {
  const daemons = pool.registry.list().map((d) => ({
    id: d.id, pid: d.pid, mountpoint: d.mountpoint, binding: d.binding ?? 'libfuse2', health: pool.registry.health(d, LATE_MS), heartbeatAgeMs: Date.now() - d.heartbeatAt,
    epoch: d.epoch, volumes: d.volumes.map((v) => pool.volumeById(v)?.name ?? snapshotName(pool, v) ?? String(v)), holds: d.holds.length, queuedWrites: d.queuedWrites ?? 0,
    ...(d.fenced ? { fenced: { change: d.fenced.change, reason: d.fenced.reason } } : {}),
  }));
  const lease = pool.changes.lease();
  const changes = pool.changes.recent(10);
  const live = leaseLive(lease);
  const running = live ? changes.find((c) => c.id === lease.change) : undefined;
  return { space: spaceView(pool), daemons, ...(live ? { controller: { pid: lease.pid, change: lease.change } } : {}), ...(running ? { running } : {}), changes };
}

function bar(done: number, total: number): string {
  const f = total > 0 ? Math.min(1, done / total) : 1;
  const n = Math.round(f * BAR);
  return `[${'#'.repeat(n)}${'.'.repeat(BAR - n)}] ${(f * 100).toFixed(0).padStart(3)}%`;
}

function render(s: Status): string[] {
  const lines = [spaceLine(s.space), '', 'DAEMONS'];
  if (s.daemons.length === 0) lines.push('  none');
  else {
    lines.push(...table([['PID', 'MOUNTPOINT', 'BINDING', 'HEALTH', 'HEARTBEAT', 'EPOCH', 'HOLDS', 'WAITING', 'VOLUMES'],
      ...s.daemons.map((d) => [String(d.pid), d.mountpoint, d.binding, d.fenced ? `fenced (change ${d.fenced.change}: ${d.fenced.reason})` : d.health, `${(d.heartbeatAgeMs / 1000).toFixed(1)} s ago`, String(d.epoch), String(d.holds), String(d.queuedWrites), d.volumes.join(',') || '-'])]).map((l) => `  ${l}`));
  }
  lines.push('', 'CHANGE IN PROGRESS');
  const c = s.running;
  if (!c) lines.push('  none');
  else {
    lines.push(`  change ${c.id}: ${c.title} (controller pid ${c.controllerPid}), phase ${c.phase}${c.batch ? ` on volume ${c.batch.volume} [${c.batch.start},${c.batch.end})` : ''}`);
    lines.push(`  ${bar(c.bytesCopied, c.bytesTotal)} ${formatSize(c.bytesCopied)} of ${formatSize(c.bytesTotal)}, ${c.batchesDone} batches done, ${c.batchesAborted} aborted, longest hold ${c.maxHoldMs} ms`);
    for (const r of c.reports.slice(-6)) lines.push(`  report: pid ${r.pid} ${r.phase} ${r.ok ? 'ok' : 'FAILED'} in ${r.ms} ms${r.note ? `: ${r.note}` : ''}`);
    for (const f of c.fenced) lines.push(`  fenced: pid ${f.pid}: ${f.reason}`);
  }
  lines.push('', 'RECENT CHANGES');
  const done = s.changes.filter((x) => x.id !== c?.id);
  if (done.length === 0) lines.push('  none');
  for (const x of done) lines.push(...summarize(x).map((l) => `  ${l}`));
  return lines;
}

export function statusCommand(y: Argv<GlobalArgs>): Argv<GlobalArgs> {
  return y.command('status', 'mount daemons of the pool and their health, the layout change in progress and recent ones', (c) => c
    .option('watch', { type: 'boolean', default: false, describe: 'redraw every half second until Ctrl-C (with --json: one object per line)' }),
  (a) => withPool(a, async (pool) => {
    if (!a.watch) {
      const s = snapshot(pool);
      emit(a.json, s, () => render(s));
      return;
    }
    let stop = false;
    const onSignal = (): void => { stop = true; };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    while (!stop) {
      const s = snapshot(pool);
      process.stdout.write(a.json ? `${JSON.stringify(s)}\n` : `\x1b[H\x1b[2J${render(s).join('\n')}\n`);
      await sleep(500);
    }
  }));
}
