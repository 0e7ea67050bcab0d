import { promises as fs } from 'node:fs';
import { basename } from 'node:path';
import type { Probe } from './report';
import { run } from './proc';

/** What to watch while a job runs; each part is optional. */
export interface ProbeSpec {
  /** The server process: its main thread (tid = pid) and the whole process. */
  pid?: number;
  /** Its FUSE connection number (the mount's minor device number), for /sys/fs/fuse/connections/N/waiting. */
  fuseConn?: number;
  /** The loop device the job drives (/dev/loopN). */
  loopDev?: string;
}

const CONNECTIONS = '/sys/fs/fuse/connections';
let clockTicks: number | undefined;

async function ticksPerSecond(): Promise<number> {
  clockTicks ??= Number((await run('getconf', ['CLK_TCK'])).stdout.trim()) || 100;
  return clockTicks;
}

/** utime + stime (clock ticks) from a /proc stat line. */
async function cpuTicks(statFile: string): Promise<number | undefined> {
  try {
    const s = await fs.readFile(statFile, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return Number(f[11]) + Number(f[12]);
  } catch {
    return undefined;
  }
}

/** [ios, sectors] read plus written so far, from /sys/block/loopN/stat. */
async function loopCounters(dev: string): Promise<[number, number] | undefined> {
  try {
    const f = (await fs.readFile(`/sys/block/${basename(dev)}/stat`, 'utf8')).trim().split(/\s+/).map(Number);
    return [(f[0] ?? 0) + (f[4] ?? 0), (f[2] ?? 0) + (f[6] ?? 0)];
  } catch {
    return undefined;
  }
}

/** The FUSE connection number of a mount: the minor number of its anonymous device. */
export async function fuseConnOf(path: string): Promise<number> {
  const dev = (await fs.stat(path)).dev;
  return (dev & 0xff) | ((dev >> 12) & 0xfff00);
}

/**
 * Mounts the fusectl filesystem if it is not mounted (for the waiting counters); returns the
 * undo, or undefined when there is nothing to undo.
 */
export async function ensureFusectl(): Promise<(() => Promise<void>) | undefined> {
  const mounts = await fs.readFile('/proc/mounts', 'utf8');
  if (mounts.split('\n').some((l) => l.split(' ')[1] === CONNECTIONS)) return undefined;
  const r = await run('mount', ['-t', 'fusectl', 'none', CONNECTIONS], { allowFail: true });
  if (r.code !== 0) return undefined;
  return async () => { await run('umount', [CONNECTIONS], { allowFail: true }); };
}

/** Runs fn while sampling what spec names; returns its result and the probe. */
export async function probed<T>(spec: ProbeSpec, fn: () => Promise<T>): Promise<{ result: T; probe: Probe }> {
  const hz = await ticksPerSecond();
  const main0 = spec.pid !== undefined ? await cpuTicks(`/proc/${spec.pid}/task/${spec.pid}/stat`) : undefined;
  const proc0 = spec.pid !== undefined ? await cpuTicks(`/proc/${spec.pid}/stat`) : undefined;
  const loop0 = spec.loopDev !== undefined ? await loopCounters(spec.loopDev) : undefined;
  const samples: number[] = [];
  let sampling = spec.fuseConn !== undefined;
  const sampler = (async () => {
    while (sampling) {
      try {
        samples.push(Number((await fs.readFile(`${CONNECTIONS}/${spec.fuseConn}/waiting`, 'utf8')).trim()));
      } catch {
        sampling = false;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  const t0 = process.hrtime.bigint();
  let result: T;
  try {
    result = await fn();
  } finally {
    sampling = false;
    await sampler;
  }
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const probe: Probe = {};
  const pct = (a: number | undefined, b: number | undefined): number | undefined => (a !== undefined && b !== undefined ? ((b - a) / hz / seconds) * 100 : undefined);
  if (spec.pid !== undefined) {
    const m = pct(main0, await cpuTicks(`/proc/${spec.pid}/task/${spec.pid}/stat`));
    const p = pct(proc0, await cpuTicks(`/proc/${spec.pid}/stat`));
    if (m !== undefined) probe.mainBusyPct = m;
    if (p !== undefined) probe.processCpuPct = p;
  }
  if (samples.length > 0) probe.fuseWaiting = samples.reduce((a, b) => a + b, 0) / samples.length;
  const loop1 = spec.loopDev !== undefined ? await loopCounters(spec.loopDev) : undefined;
  if (loop0 && loop1 && loop1[0] > loop0[0]) probe.loopReqKiB = ((loop1[1] - loop0[1]) * 512) / (loop1[0] - loop0[0]) / 1024;
  return { result, probe };
}
