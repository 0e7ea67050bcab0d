import { promises as fs } from 'node:fs';
import { FuseOps } from '../fuse/fuse-ops';
import { chooseBinding, serve, type FuseBinding, type FuseServer } from '../fuse/fuse-server';
import { setIoFlusher } from '../native/io-flusher';
import { holderId, selfHolder } from '../pool/holder';
import type { Pool } from '../pool/pool';
import { controlSocketPath, startControlServer } from '../control/control-server';
import { HEARTBEAT_MS } from '../control/timing';
import { logger } from '../util/log';
import { findMount, mounts, prepareMountpoint, unmountStrict } from './mountpoint';
import { HoldService } from './hold-service';
import { ReclaimService } from './reclaim-service';
import { SpaceMonitor } from './space-monitor';

const debug = logger('daemon');

/** Batched map changes are committed this often: what a crash without fsync can lose (like dm-thin's commit period). */
const COMMIT_INTERVAL_MS = 1000;
/**
 * ... and sooner once this many map entries wait, so that a commit someone waits for (a
 * snapshot, an fsync) finds little left to flush and apply.
 */
const EARLY_COMMIT_ENTRIES = 512;
const COMMIT_CHECK_MS = 100;
const WATCH_INTERVAL_MS = 1000;
const RECLAIM_INTERVAL_MS = 2000;

export interface DaemonOptions {
  autoReclaim: boolean;
  /** The FUSE binding asked for; libfuse3 falls back to libfuse2 (with a warning) if unusable. */
  fuse: FuseBinding;
  /** libfuse3: the kernel caches buffered writes until fsync, close or its writeback (README, Durability). */
  writebackCache?: boolean;
}

/** What the daemon tells whoever started it once it serves. */
export interface DaemonReady { binding: FuseBinding; warning?: string }

/** Answers the handlers still owe once the kernel side is gone are waited for this long. */
const SHUTDOWN_GRACE_MS = 10_000;

/** Whether this process still holds a /dev/fuse descriptor (libfuse 2 closes its own when the connection ends). */
async function fuseDeviceOpen(): Promise<boolean> {
  for (const fd of await fs.readdir('/proc/self/fd')) {
    if (await fs.readlink(`/proc/self/fd/${fd}`).then((t) => t === '/dev/fuse', () => false)) return true;
  }
  return false;
}

/**
 * Serves a pool at a mountpoint until it is unmounted (thinvol umount, umount, fusermount -u)
 * or the process gets SIGTERM/SIGINT while nothing uses the mount.
 */
export async function runMountDaemon(pool: Pool, mountpoint: string, options: DaemonOptions, onReady: (r: DaemonReady) => void): Promise<void> {
  const mnt = await prepareMountpoint(mountpoint);
  const { binding, warning } = chooseBinding(options.fuse);
  if (warning) console.error(`thinvol: warning: ${warning}`);
  if (options.writebackCache === true && binding !== 'libfuse3') console.error('thinvol: warning: --writeback-cache needs the libfuse3 binding; ignored');
  const flusher = setIoFlusher();
  if (!flusher.ok) console.error(`thinvol: PR_SET_IO_FLUSHER refused (${flusher.code}; it needs CAP_SYS_RESOURCE): memory reclaim may wait on this daemon's own writeback`);
  const holder = selfHolder();
  const daemonId = holderId(holder);
  pool.recoverStaleReservations();
  const backends = pool.backendSet();
  // A missing, foreign or truncated backend refuses the mount rather than failing the guest's I/O later.
  for (const b of pool.backendList()) await backends.get(b.id);
  const ops = new FuseOps(pool, backends, holder, daemonId);
  const space = new SpaceMonitor(pool);
  const reclaim = new ReclaimService(ops);
  // Write histories are kept whether or not reclaim runs by itself: `thinvol reclaim` needs them.
  ops.watcher = reclaim;
  const holds = new HoldService(pool, daemonId, () => [...ops.openVolumes].map((ov) => ov.io));
  const sockPath = controlSocketPath(pool.runDir, process.pid);
  pool.registry.register(holder, mnt, sockPath, binding);
  const control = await startControlServer(sockPath, async (req, conn) => {
    if (req.op === 'reclaim') return reclaim.reclaim(req.volume, req.dryRun);
    if (req.op === 'snapshot') return ops.snapshot(req.volume, req.name);
    return holds.handle(req, conn);
  }, (await fs.stat(pool.dir)).uid);
  let server: FuseServer;
  try {
    server = await serve(binding, mnt, ops.ops(), { fsname: pool.dir, writebackCache: options.writebackCache === true });
  } catch (err) {
    control.close();
    pool.registry.unregister(daemonId);
    await fs.rm(sockPath, { force: true });
    throw err;
  }
  const ourDev = (await findMount(mnt))?.dev;
  console.log(`thinvol: serving ${pool.dir} at ${mnt} (pid ${process.pid}) with ${server.describe()}, auto reclaim ${options.autoReclaim ? 'on' : 'off'}`);

  let stopping = false;
  const done = new Promise<void>((resolve) => {
    const commitTimer = setInterval(() => {
      const now = Date.now();
      for (const { io } of ops.openVolumes) {
        if (!io.dirty || io.committing || (io.pendingEntries < EARLY_COMMIT_ENTRIES && now - io.lastCommitAt < COMMIT_INTERVAL_MS)) continue;
        io.commit().catch((err: unknown) => console.error(`thinvol: periodic commit of volume ${io.id} failed: ${String(err)}`));
      }
    }, COMMIT_CHECK_MS);
    let reclaiming = false;
    const reclaimTimer = setInterval(() => {
      if (!options.autoReclaim || reclaiming) return;
      reclaiming = true;
      reclaim.scanWritten().finally(() => { reclaiming = false; });
    }, RECLAIM_INTERVAL_MS);
    const heartbeatTimer = setInterval(() => {
      try {
        let freeing = 0;
        for (const ov of ops.openVolumes) freeing += ov.io.freeingBytes;
        const fence = pool.registry.heartbeat(daemonId, freeing, ops.queuedWrites);
        if (fence) console.error(`thinvol: this daemon was fenced by change ${fence.change} (${fence.reason}); re-registered`);
        space.check();
      } catch (err) {
        console.error(`thinvol: heartbeat failed: ${String(err)}`);
      }
    }, HEARTBEAT_MS);
    // libfuse3 tells when the kernel side is gone (a lazily detached mount keeps serving its
    // users until then); fuse-native does not, so for it the mount table is watched: the mount
    // is ours by its device number (something mounted over it hides it but it still serves).
    // Once detached (umount -l) it is served until the kernel ends the connection, which
    // libfuse 2 answers by closing its /dev/fuse descriptor (the last RELEASE may be lost then).
    server.ended.then(() => finish(), () => undefined);
    let detachedLogged = false;
    const watchTimer = setInterval(() => {
      if (server.binding !== 'libfuse2' || !ourDev) return;
      (async () => {
        if ((await mounts()).some((m) => m.dev === ourDev && m.fstype === 'fuse.thinvol')) return;
        if (ops.handleCount === 0 || !(await fuseDeviceOpen())) finish();
        else if (!detachedLogged) {
          detachedLogged = true;
          console.error(`thinvol: ${mnt} was detached; serving its ${ops.handleCount} open handle(s) until they close`);
        }
      })().catch(() => undefined);
    }, WATCH_INTERVAL_MS);
    const finish = (): void => {
      if (stopping) return;
      stopping = true;
      clearInterval(commitTimer);
      clearInterval(watchTimer);
      clearInterval(reclaimTimer);
      clearInterval(heartbeatTimer);
      resolve();
    };
    const onSignal = (sig: string): void => {
      debug('%s: unmounting %s', sig, mnt);
      // libfuse3: the session's end (which follows the unmount) finishes.
      unmountStrict(mnt).then(() => { if (server.binding === 'libfuse2') finish(); }, (err: unknown) => console.error(`thinvol: ${sig} ignored: ${(err as Error).message}`));
    };
    process.on('SIGTERM', () => onSignal('SIGTERM'));
    process.on('SIGINT', () => onSignal('SIGINT'));
  });
  onReady({ binding, ...(warning ? { warning } : {}) });
  await done;
  debug('unmounted; shutting down');
  // No request can arrive now; let the handlers finish theirs before the volumes close.
  await server.close(SHUTDOWN_GRACE_MS);
  holds.releaseAll();
  for (const ov of [...ops.openVolumes]) await ov.io.close();
  await backends.flushAll();
  await backends.closeAll();
  control.close();
  pool.registry.unregister(daemonId);
  await pool.close();
  await fs.rm(sockPath, { force: true });
}
