import { spawn } from 'node:child_process';
import { statfs } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Pool } from '../pool/pool';
import { formatThreshold, worse } from '../pool/space-policy';
import type { SpaceLevel } from '../store/records';
import { FsError } from '../util/errors';
import { formatSize } from '../util/size';

/**
 * Watches how full the pool is (at every heartbeat): each daemon logs the level when it changes;
 * the one that records a downward crossing first runs the low-space hook, so the hook runs once
 * per crossing whatever the number of daemons.
 */
export class SpaceMonitor {
  #seen: SpaceLevel = 'ok';
  #extending = false;
  /** Backends whose file system had no room at the last try (said once, until it has again). */
  readonly #noRoom = new Set<number>();

  constructor(private readonly pool: Pool) {}

  check(): void {
    const s = this.pool.spaceState();
    if (s.level !== 'ok' && !this.#extending) {
      this.#extending = true;
      this.#autoextend().finally(() => { this.#extending = false; });
    }
    if (s.level !== this.#seen) {
      console.error(`thinvol: pool space ${s.level}: ${formatSize(s.freeBytes)} free of ${formatSize(s.capacityBytes)} ` +
        `(low-water ${formatThreshold(s.policy.lowWater)}, critical ${formatThreshold(s.policy.critical)})${s.queuedWrites > 0 ? `, ${s.queuedWrites} write(s) waiting for space` : ''}`);
      this.#seen = s.level;
    }
    const from = this.pool.announceSpaceLevel(s.level);
    const hook = s.policy.onLowSpace;
    if (from === undefined || !worse(s.level, from) || !hook) return;
    const env = {
      ...process.env, THINVOL_POOL: this.pool.dir, THINVOL_LEVEL: s.level, THINVOL_FREE_BYTES: String(s.freeBytes),
      THINVOL_CAPACITY_BYTES: String(s.capacityBytes), THINVOL_LOW_WATER_BYTES: String(s.lowWaterBytes), THINVOL_CRITICAL_BYTES: String(s.criticalBytes),
    };
    const child = spawn('sh', ['-c', hook], { env, stdio: ['ignore', 'inherit', 'inherit'] });
    child.on('error', (err) => console.error(`thinvol: low-space hook could not run: ${err.message}`));
    child.on('exit', (code, signal) => { if (code !== 0) console.error(`thinvol: low-space hook exited ${code ?? signal}`); });
  }

  /**
   * Below the low-water mark: grows one autoextend backend by its step (up to its max), if the
   * file system holding it has that much room. One step per heartbeat until the pool is above
   * the mark again; several daemons may try at once, one wins each step.
   */
  async #autoextend(): Promise<void> {
    for (const b of this.pool.backendList()) {
      const ae = b.autoextend;
      if (!ae || b.draining === true || b.capacityBytes >= ae.maxBytes) continue;
      const grow = Math.min(ae.stepBytes, ae.maxBytes - b.capacityBytes);
      const host = await statfs(dirname(b.path)).catch(() => undefined);
      if (!host || host.bavail * host.bsize < grow) {
        if (!this.#noRoom.has(b.id)) console.error(`thinvol: cannot autoextend backend ${b.id} (${b.path}) by ${formatSize(grow)}: its file system has ${host ? formatSize(host.bavail * host.bsize) : 'unknown'} free`);
        this.#noRoom.add(b.id);
        continue;
      }
      this.#noRoom.delete(b.id);
      try {
        const r = await this.pool.growBackend(b.id, b.capacityBytes + grow);
        console.error(`thinvol: autoextended backend ${b.id} (${b.path}) from ${formatSize(b.capacityBytes)} to ${formatSize(r.capacityBytes)} of data space`);
      } catch (err) {
        if (!(err instanceof FsError && err.code === 'EAGAIN')) console.error(`thinvol: autoextend of backend ${b.id} failed: ${String(err)}`);
      }
      return;
    }
  }
}
