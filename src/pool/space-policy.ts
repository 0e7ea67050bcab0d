import { BLOCK, type SpaceLevel, type SpacePolicy, type Threshold } from '../store/records';

/**
 * What a pool does as it fills: like dm-thin's low-water mark and no_space_timeout, with LVM's
 * monitor replaced by a hook. Defaults: low at 10% free, critical at 2%, writes queue for 60 s.
 */
export const DEFAULT_SPACE_POLICY: SpacePolicy = { lowWater: { pct: 10 }, critical: { pct: 2 }, whenFull: 'queue', fullTimeoutS: 60 };

export function thresholdBytes(t: Threshold, capacityBytes: number): number {
  return 'pct' in t ? Math.floor((capacityBytes * t.pct) / 100) : t.bytes;
}

const MiB = 2 ** 20;
/** The default reserve: 1% of capacity, at least 16 MiB, at most 1 GiB, never more than an eighth of a small pool. */
const RESERVE_PCT = 1;
const RESERVE_MIN = 16 * MiB;
const RESERVE_MAX = 1024 * MiB;

/**
 * Bytes kept back from ordinary allocation so that a full guest can still write its journal
 * (and so commit the deletes that free space). What one guest needs to commit a delete is its
 * next few journal transactions, not the whole journal: the journal is mapped as it is first
 * written, once around, and a delete's transactions are a few MiB. 16 MiB covers several
 * guests at once; 1% scales with the number of guests a bigger pool serves.
 */
export function reserveBytes(policy: SpacePolicy, capacityBytes: number): number {
  const bytes = policy.reserve !== undefined
    ? thresholdBytes(policy.reserve, capacityBytes)
    : Math.min(Math.max(thresholdBytes({ pct: RESERVE_PCT }, capacityBytes), RESERVE_MIN), RESERVE_MAX, Math.floor(capacityBytes / 8));
  return Math.floor(bytes / BLOCK) * BLOCK;
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
 * block free beyond the journal reserve, or writes waiting for space somewhere.
 */
export function spaceLevel(policy: SpacePolicy, capacityBytes: number, freeBytes: number, queuedWrites: number): SpaceLevel {
  if (freeBytes - reserveBytes(policy, capacityBytes) < BLOCK || queuedWrites > 0) return 'outOfSpace';
  if (freeBytes < thresholdBytes(policy.critical, capacityBytes)) return 'critical';
  if (freeBytes < thresholdBytes(policy.lowWater, capacityBytes)) return 'lowSpace';
  return 'ok';
}
