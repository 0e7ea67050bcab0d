import { spawn } from 'node:child_process';
import type { Pool } from '../pool/pool';
import { formatThreshold, worse } from '../pool/space-policy';
import type { SpaceLevel } from '../store/records';
import { formatSize } from '../util/size';

/**
 * Watches how full the pool is (at every heartbeat): each daemon logs the level when it changes;
 * the one that records a downward crossing first runs the low-space hook, so the hook runs once
 * per crossing whatever the number of daemons.
 */
export class SpaceMonitor {
  #seen: SpaceLevel = 'ok';

  constructor(private readonly pool: Pool) {}

  check(): void {
    const s = this.pool.spaceState();
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
}
