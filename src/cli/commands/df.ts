import type { Argv } from 'yargs';
import type { Pool } from '../../pool/pool';
import type { SpaceLevel } from '../../store/records';
import { formatSize } from '../../util/size';
import { withPool, type GlobalArgs } from '../context';
import { emit, table } from '../output';

export function poolUsage(pool: Pool): {
  capacityBytes: number; allocatedBytes: number; reservedBytes: number; freeBytes: number; freeingBytes: number; provisionedBytes: number;
  backends: { id: number; path: string; capacityBytes: number; allocatedBytes: number; freeBytes: number }[];
  volumes: { id: number; name: string; sizeBytes: number; allocatedBytes: number; exclusiveBytes: number; reclaimedBytes: number; snapshots: number }[];
  reclaimedBytes: number;
  space: SpaceView;
} {
  const backends = pool.backendList().map((b) => ({ id: b.id, path: b.path, capacityBytes: b.capacityBytes, allocatedBytes: b.allocatedBytes, reservedBytes: b.reservedBytes, freeBytes: b.capacityBytes - b.allocatedBytes - b.reservedBytes }));
  const snapshots = pool.snapshotList();
  // allocatedBytes: what a volume maps, blocks shared with its snapshots included (the pool's counts each block once); exclusiveBytes: what deleting it gives back.
  const volumes = pool.volumeList().map((v) => ({
    id: v.id, name: v.name, sizeBytes: v.sizeBytes, allocatedBytes: pool.mappedBytes(v.id, v.sizeBytes), exclusiveBytes: pool.exclusiveBytes(v.id),
    reclaimedBytes: v.reclaimedBytes ?? 0, snapshots: snapshots.filter((s) => s.volume === v.id).length,
  }));
  const sum = <T>(xs: T[], f: (x: T) => number): number => xs.reduce((s, x) => s + f(x), 0);
  return {
    capacityBytes: sum(backends, (b) => b.capacityBytes),
    allocatedBytes: sum(backends, (b) => b.allocatedBytes),
    reservedBytes: sum(backends, (b) => b.reservedBytes),
    freeBytes: sum(backends, (b) => b.freeBytes),
    // Discarded in a daemon, not committed yet: still allocated above, free within a second.
    freeingBytes: sum(pool.registry.list(), (d) => d.freeingBytes ?? 0),
    provisionedBytes: sum(volumes, (v) => v.sizeBytes),
    reclaimedBytes: sum(volumes, (v) => v.reclaimedBytes),
    backends,
    volumes,
    space: spaceView(pool),
  };
}

/** The pool's space level (ok, lowSpace, critical, outOfSpace) with its thresholds, for df and status. */
export interface SpaceView { level: SpaceLevel; freeBytes: number; reserveBytes: number; lowWaterBytes: number; criticalBytes: number; queuedWrites: number; whenFull: 'queue' | 'error'; fullTimeoutS: number }

export function spaceView(pool: Pool): SpaceView {
  const s = pool.spaceState();
  return { level: s.level, freeBytes: s.freeBytes, reserveBytes: s.reserveBytes, lowWaterBytes: s.lowWaterBytes, criticalBytes: s.criticalBytes, queuedWrites: s.queuedWrites, whenFull: s.policy.whenFull, fullTimeoutS: s.policy.fullTimeoutS };
}

export function spaceLine(s: SpaceView): string {
  const state = s.level === 'ok' ? 'ok' : s.level === 'lowSpace' ? 'LOW' : s.level === 'critical' ? 'CRITICAL' : 'OUT OF SPACE';
  return `space: ${state} (free ${formatSize(s.freeBytes)}, of it ${formatSize(s.reserveBytes)} reserved for guest journals; low-water ${formatSize(s.lowWaterBytes)}, critical ${formatSize(s.criticalBytes)}; when full: ${s.whenFull === 'queue' ? `writes wait up to ${s.fullTimeoutS} s` : 'writes fail'})${s.queuedWrites > 0 ? `, ${s.queuedWrites} write(s) waiting for space` : ''}`;
}

export function dfCommand(y: Argv<GlobalArgs>): Argv<GlobalArgs> {
  return y.command('df', 'the free space table: capacity, allocation and provisioning of the pool, its backends and volumes', (c) => c,
    (a) => withPool(a, (pool) => {
      const u = poolUsage(pool);
      const pct = (n: number, d: number): string => (d === 0 ? '-' : `${((100 * n) / d).toFixed(1)}%`);
      emit(a.json, u, () => [
        `pool ${pool.dir}: capacity ${formatSize(u.capacityBytes)}, allocated ${formatSize(u.allocatedBytes)} (${pct(u.allocatedBytes, u.capacityBytes)}), free ${formatSize(u.freeBytes)}${u.freeingBytes > 0 ? ` (+${formatSize(u.freeingBytes)} being freed)` : ''}${u.reservedBytes > 0 ? `, reserved by open volumes ${formatSize(u.reservedBytes)}` : ''}, provisioned ${formatSize(u.provisionedBytes)} (${pct(u.provisionedBytes, u.capacityBytes)} of capacity), reclaimed so far ${formatSize(u.reclaimedBytes)}`,
        spaceLine(u.space),
        '',
        ...table([['BACKEND', 'PATH', 'CAPACITY', 'ALLOCATED', 'FREE'], ...u.backends.map((b) => [String(b.id), b.path, formatSize(b.capacityBytes), formatSize(b.allocatedBytes), formatSize(b.freeBytes)])]),
        '',
        ...table([['VOLUME', 'NAME', 'SIZE', 'ALLOCATED', 'EXCLUSIVE', 'SNAPSHOTS', 'RECLAIMED'], ...u.volumes.map((v) => [String(v.id), v.name, formatSize(v.sizeBytes), formatSize(v.allocatedBytes), formatSize(v.exclusiveBytes), String(v.snapshots), formatSize(v.reclaimedBytes)])]),
      ]);
    }));
}
