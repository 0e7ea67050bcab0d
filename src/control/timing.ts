/*
 * The timing of the protocol between the layout controller and the mount daemons, in one
 * place, with the invariants that tie the numbers together (checked at load time below).
 */

/** A daemon records a heartbeat this often. */
export const HEARTBEAT_MS = 1_000;

/** `status` calls a daemon late when its heartbeat is older than this. */
export const LATE_MS = 3_000;

/** Default time a daemon has to report a step (hold, apply, release) before it is fenced (`--timeout`). */
export const REPORT_TIMEOUT_MS = 5_000;

/**
 * A hold the controller neither finishes nor abandons in this time is broken by the daemon, so
 * a stopped controller cannot stall the guest for long. Breaking is safe: the hold record goes
 * first, and a controller applies a batch only while every hold record of it is still there.
 */
export const HOLD_LIMIT_MS = 10_000;

/** A controller that has not renewed its lease for this long has lost it (it may be stopped). */
export const LEASE_MS = 15_000;

/**
 * A request line that has begun must end within this, or the client is dropped: a client that
 * drips a line byte by byte holds nothing for long. (Idle time between lines is not limited: a
 * controller keeps its connection for a whole change.)
 */
export const LINE_TIMEOUT_MS = 5_000;

/** Default wait for an answer to a one-off request (reclaim of a large volume can take a while). */
export const REQUEST_TIMEOUT_MS = 120_000;

// Late means several heartbeats were missed; a hold outlives a report timeout (else holds would
// break while the controller waits for the other daemons); a lease outlives a hold (a controller
// renews it at every step, so a live one never loses it while its daemons still hold).
if (!(HEARTBEAT_MS * 2 <= LATE_MS && REPORT_TIMEOUT_MS < HOLD_LIMIT_MS && HOLD_LIMIT_MS < LEASE_MS)) {
  throw new Error('control/timing.ts: the timing invariants do not hold');
}
