import Fuse from 'fuse-native';
import { promises as fs } from 'node:fs';
import { FuseOps } from '../fuse/fuse-ops';
import { holderId, selfHolder } from '../pool/holder';
import type { Pool } from '../pool/pool';
import { controlSocketPath, startControlServer } from '../control/control-server';
import { HEARTBEAT_MS } from '../control/timing';
import { logger } from '../util/log';
import { findMount, prepareMountpoint, unmountStrict } from './mountpoint';
import { HoldService } from './hold-service';
import { ReclaimService } from './reclaim-service';

const debug = logger('daemon');

/** Batched map changes are committed this often: what a crash without fsync can lose (like dm-thin's commit period). */
const COMMIT_INTERVAL_MS = 1000;
const WATCH_INTERVAL_MS = 1000;
const RECLAIM_INTERVAL_MS = 2000;

export interface DaemonOptions { autoReclaim: boolean }

function mountFuse(fuse: Fuse): Promise<void> {
  // fuse-native turns on libfuse's own debug output whenever DEBUG contains '*'.
  const saved = process.env.DEBUG;
  delete process.env.DEBUG;
  return new Promise<void>((resolve, reject) => fuse.mount((err) => (err ? reject(err) : resolve())))
    .finally(() => { if (saved !== undefined) process.env.DEBUG = saved; });
}

/**
 * Serves a pool at a mountpoint until it is unmounted (thinvol umount, umount, fusermount -u)
 * or the process gets SIGTERM/SIGINT while nothing uses the mount.
 */
export async function runMountDaemon(pool: Pool, mountpoint: string, options: DaemonOptions, onReady: () => void): Promise<void> {
  const mnt = await prepareMountpoint(mountpoint);
  const holder = selfHolder();
  const daemonId = holderId(holder);
  pool.recoverStaleReservations();
  const backends = pool.backendSet();
  // A missing, foreign or truncated backend refuses the mount rather than failing the guest's I/O later.
  for (const b of pool.backendList()) await backends.get(b.id);
  const ops = new FuseOps(pool, backends, holder, daemonId);
  const reclaim = new ReclaimService(ops);
  // Write histories are kept whether or not reclaim runs by itself: `thinvol reclaim` needs them.
  ops.watcher = reclaim;
  const holds = new HoldService(pool, daemonId, (v) => ops.ioOf(v), () => [...ops.openVolumes].map((ov) => ov.io));
  const fuse = new Fuse(mnt, ops.ops(), {
    fsname: `${pool.dir},big_writes,max_write=131072,max_background=64,congestion_threshold=48`,
    subtype: 'thinvol',
    allowOther: true,
    defaultPermissions: true,
    // Block storage hangs rather than fails when a backend is slow, like a hard NFS mount:
    // an ETIMEDOUT reaching a guest filesystem would make it abort its journal.
    timeout: false,
  });
  const sockPath = controlSocketPath(pool.runDir, process.pid);
  pool.registry.register(holder, mnt, sockPath);
  const control = await startControlServer(sockPath, async (req, conn) => {
    if (req.op === 'reclaim') return reclaim.reclaim(req.volume, req.dryRun);
    return holds.handle(req, conn);
  }, (await fs.stat(pool.dir)).uid);
  try {
    await mountFuse(fuse);
  } catch (err) {
    control.close();
    pool.registry.unregister(daemonId);
    await fs.rm(sockPath, { force: true });
    throw err;
  }
  debug('serving %s at %s (pid %d), auto reclaim %s', pool.dir, mnt, process.pid, options.autoReclaim ? 'on' : 'off');

  let stopping = false;
  const done = new Promise<void>((resolve) => {
    const commitTimer = setInterval(() => {
      for (const ov of ops.openVolumes) {
        if (ov.io.dirty) ov.io.commit().catch((err: unknown) => console.error(`thinvol: periodic commit of volume ${ov.io.id} failed: ${String(err)}`));
      }
    }, COMMIT_INTERVAL_MS);
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
        const fence = pool.registry.heartbeat(daemonId, freeing);
        if (fence) console.error(`thinvol: this daemon was fenced by change ${fence.change} (${fence.reason}); re-registered`);
      } catch (err) {
        console.error(`thinvol: heartbeat failed: ${String(err)}`);
      }
    }, HEARTBEAT_MS);
    const watchTimer = setInterval(() => {
      findMount(mnt).then((m) => { if (!m || m.fstype !== 'fuse.thinvol') finish(); }, () => undefined);
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
      unmountStrict(mnt).then(finish, (err: unknown) => console.error(`thinvol: ${sig} ignored: ${(err as Error).message}`));
    };
    process.on('SIGTERM', () => onSignal('SIGTERM'));
    process.on('SIGINT', () => onSignal('SIGINT'));
  });
  onReady();
  await done;
  debug('unmounted; shutting down');
  holds.releaseAll();
  for (const ov of [...ops.openVolumes]) await ov.io.close();
  await backends.flushAll();
  await backends.closeAll();
  control.close();
  pool.registry.unregister(daemonId);
  await pool.close();
  await fs.rm(sockPath, { force: true });
}
