import { spawn } from 'node:child_process';
import { openSync, closeSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Argv } from 'yargs';
import { runMountDaemon, type DaemonReady } from '../../daemon/mount-daemon';
import { FUSE_BINDINGS, type FuseBinding } from '../../fuse/fuse-server';
import { setIoFlusher } from '../../native/io-flusher';
import { findMount, prepareMountpoint, unmountStrict } from '../../daemon/mountpoint';
import { holderAlive } from '../../pool/holder';
import { Pool } from '../../pool/pool';
import { FsError } from '../../util/errors';
import { withPool, type GlobalArgs } from '../context';
import { emit } from '../output';

/**
 * Node 20 can deadlock at exit when a background TurboFan job waits for a garbage collection the
 * exiting main thread never runs (nodejs/node#54918; seen here as a CLI process that finished
 * its work and never exited). Optimizing on the main thread removes the background job; bin/thinvol
 * passes the same flag.
 */
const NO_BACKGROUND_OPTIMIZER = ['--no-concurrent-recompilation'];

/**
 * The daemon's garbage is request-shaped: buffers and closures that live for one callback,
 * and the Buffers' native memory is only freed when a scavenge finds them dead. A 1 MiB
 * young generation and slow old-generation growth halve its anonymous memory under
 * scattered writes (docs/benchmarks.md); the live heap is ~10 MiB, so the extra GCs are cheap.
 */
const DAEMON_V8_FLAGS = ['--max-semi-space-size=1', '--heap-growing-percent=10', ...NO_BACKGROUND_OPTIMIZER];

/** Starts the daemon in the background and returns once it serves the mountpoint (or failed). */
async function mountInBackground(a: GlobalArgs, mnt: string, autoReclaim: boolean, fuse: FuseBinding, writebackCache: boolean): Promise<{ pid: number } & DaemonReady> {
  const log = join(resolve(a.pool), 'run', 'daemon.log');
  const fd = openSync(log, 'a', 0o600);
  // Set here, before the spawn, the I/O-flusher flag reaches every thread of the daemon (child
  // processes inherit it); the daemon can only set it on threads it starts afterwards. Without
  // CAP_SYS_RESOURCE this fails, and the daemon says so in its log.
  setIoFlusher();
  const child = spawn(process.execPath, [...DAEMON_V8_FLAGS, process.argv[1] ?? '', '--pool', a.pool, 'mount', mnt, '--foreground', '--fuse', fuse, ...(autoReclaim ? [] : ['--no-auto-reclaim']),
    ...(writebackCache ? ['--writeback-cache'] : [])], {
    detached: true, stdio: ['ignore', fd, fd, 'ipc'], env: process.env,
  });
  closeSync(fd);
  return new Promise((res, rej) => {
    child.once('message', (m: { ready?: DaemonReady; error?: string }) => {
      if (m.ready) {
        child.disconnect();
        child.unref();
        res({ pid: child.pid ?? 0, ...m.ready });
      } else rej(new FsError('EIO', m.error ?? 'mount failed'));
    });
    child.once('exit', (code) => rej(new FsError('EIO', `mount daemon exited with status ${code ?? '?'} before mounting; see ${log}`)));
  });
}

export function mountCommand(y: Argv<GlobalArgs>): Argv<GlobalArgs> {
  return y
    .command('mount <mountpoint>', 'serve the pool\'s volumes as files under MOUNTPOINT (runs a daemon in the background)', (c) => c
      .positional('mountpoint', { type: 'string', demandOption: true })
      .option('foreground', { type: 'boolean', default: false, describe: 'stay in the foreground until unmounted' })
      .option('auto-reclaim', { type: 'boolean', default: true, describe: 'give back blocks the guest ext4/XFS freed, a few seconds after its journal commits them (--no-auto-reclaim to turn off)' })
      .option('writeback-cache', { type: 'boolean', default: false, describe: 'libfuse3: let the kernel cache buffered writes (a loop device without --direct-io) until fsync; faster, but a killed daemon loses unsynced writes still in that cache' })
      .option('fuse', { choices: FUSE_BINDINGS, default: 'libfuse3' as FuseBinding, describe: 'FUSE binding: libfuse3 (low-level, many requests in flight, discard and SEEK_DATA) or libfuse2 (fuse-native); libfuse3 falls back to libfuse2 with a warning if its part of the addon is not built' }),
    async (a) => {
      if (a.foreground) {
        const pool = Pool.open(a.pool);
        const tell = (m: object): void => { if (process.send) process.send(m); };
        try {
          await runMountDaemon(pool, a.mountpoint, { autoReclaim: a['auto-reclaim'], fuse: a.fuse, writebackCache: a['writeback-cache'] }, (ready) => {
            tell({ ready });
            if (process.connected) process.disconnect();
          });
        } catch (err) {
          tell({ error: (err as Error).message });
          throw err;
        }
        // fuse-native's session thread keeps the event loop alive after the kernel unmounted.
        process.exit(0);
      }
      await Pool.open(a.pool).close();
      const mnt = await prepareMountpoint(a.mountpoint);
      const { pid, binding, warning } = await mountInBackground(a, mnt, a['auto-reclaim'], a.fuse, a['writeback-cache']);
      if (warning) process.stderr.write(`thinvol: warning: ${warning}\n`);
      emit(a.json, { mountpoint: mnt, pid, pool: resolve(a.pool), binding }, () => [`mounted pool ${resolve(a.pool)} at ${mnt} (daemon pid ${pid}, ${binding})`]);
    })
    .command('umount <mountpoint>', 'unmount (refused while a loop device or process uses a volume) and stop its daemon', (c) => c
      .positional('mountpoint', { type: 'string', demandOption: true }),
    async (a) => {
      const mnt = resolve(a.mountpoint);
      const m = await findMount(mnt);
      if (!m || m.fstype !== 'fuse.thinvol') throw new FsError('ENOENT', `${mnt} is not a thinvol mount`);
      // The mount's source is the pool that serves it, whatever --pool says.
      const daemons = await withPool({ ...a, pool: m.source }, (pool) => pool.registry.list().filter((d) => d.mountpoint === mnt));
      await unmountStrict(mnt);
      for (const d of daemons) {
        for (let i = 0; i < 300 && holderAlive(d); i++) await sleep(100);
        if (holderAlive(d)) throw new FsError('ETIMEDOUT', `unmounted ${mnt}, but daemon pid ${d.pid} did not exit within 30 s`);
      }
      emit(a.json, { unmounted: mnt }, () => [`unmounted ${mnt}`]);
    });
}
