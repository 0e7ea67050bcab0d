import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import type { Holder } from '../store/records';

/** Process start time in clock ticks since boot (field 22 of /proc/PID/stat), or undefined if gone or a zombie. */
export function processStartTime(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (fields[0] === 'Z' || fields[0] === 'X') return undefined;
    return Number(fields[19]);
  } catch {
    return undefined;
  }
}

export function selfHolder(): Holder {
  const startTime = processStartTime(process.pid);
  if (startTime === undefined) throw new Error('cannot read /proc/self/stat: thinvol needs Linux /proc');
  return { pid: process.pid, startTime, host: hostname() };
}

export function holderId(h: Holder): string {
  return `${h.host}:${h.pid}:${h.startTime}`;
}

/** A holder is alive when a process with its pid and start time exists on this host. */
export function holderAlive(h: Holder): boolean {
  return h.host === hostname() && processStartTime(h.pid) === h.startTime;
}

export function parseHolderId(id: string): Holder | undefined {
  const m = /^(.*):(\d+):(\d+)$/.exec(id);
  if (!m || m[1] === undefined) return undefined;
  return { host: m[1], pid: Number(m[2]), startTime: Number(m[3]) };
}
