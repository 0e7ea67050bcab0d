import { getSystemErrorMap } from 'node:util';
import { nativeAddon } from './addon';

export type IoFlusher = { ok: true; inherited: boolean } | { ok: false; code: string };

/**
 * Marks the calling thread (the JavaScript thread) as an I/O flusher, PR_SET_IO_FLUSHER: the
 * kernel's memory reclaim then never makes it wait for writeback, which through a loop device
 * over this daemon's own mount could be waiting for itself. Threads it starts later and child
 * processes (across exec) inherit the flag, so a process that sets it before it spawns the
 * daemon covers all of the daemon's threads. Needs CAP_SYS_RESOURCE; `inherited` says the flag
 * was already set when setting it failed.
 */
export function setIoFlusher(): IoFlusher {
  const n = nativeAddon();
  const errno = n.setIoFlusher();
  if (errno === 0) return { ok: true, inherited: false };
  if (n.ioFlusher() === 1) return { ok: true, inherited: true };
  return { ok: false, code: getSystemErrorMap().get(-errno)?.[0] ?? `errno ${errno}` };
}
