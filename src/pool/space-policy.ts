import { BLOCK, type SpaceLevel, type SpacePolicy, type Threshold } from '../store/records';

/**
 * What a pool does as it fills: like dm-thin's low-water mark and no_space_timeout, with LVM's
 * monitor replaced by a hook. Defaults: low at 10% free, critical at 2%, writes queue for 60 s.
 */
export const DEFAULT_SPACE_POLICY: SpacePolicy = { lowWater: { pct: 10 }, critical: { pct: 2 }, whenFull: 'queue', fullTimeoutS: 60 };

export function thresholdBytes(t: Threshold, capacityBytes: number): number {
  return 'pct' in t ? Math.floor((capacityBytes * t.pct) / 100) : t.bytes;
}

export function formatThreshold(t: Threshold): string {
  return 'pct' in t ? `${t.pct}%` : `${t.bytes} bytes`;
}

/** Levels from best to worst: a crossing is a move to a later one. */
const ORDER: readonly SpaceLevel[] = ['ok', 'lowSpace', 'critical', 'outOfSpace'];

export function worse(a: SpaceLevel, b: SpaceLevel): boolean {
  return ORDER.indexOf(a) > ORDER.indexOf(b);
}

/**
 * The pool's level from its free space (not allocated, not reserved). Out of space: less than a
 * block free, or writes waiting for space somewhere.
 */
export function spaceLevel(policy: SpacePolicy, capacityBytes: number, freeBytes: number, queuedWrites: number): SpaceLevel {
  if (freeBytes < BLOCK || queuedWrites > 0) return 'outOfSpace';
  if (freeBytes < thresholdBytes(policy.critical, capacityBytes)) return 'critical';
  if (freeBytes < thresholdBytes(policy.lowWater, capacityBytes)) return 'lowSpace';
  return 'ok';
}
