import { closeSync, constants, openSync } from 'node:fs';
import { lockFile, unlockFile, type LockMode } from '../native/flock';

/** Longer than any open, close or commit takes; a holder stopped this long is a broken pool. */
const GATE_WAIT_MS = 60_000;
const POLL_MS = 1;
const sleeper = new Int32Array(new SharedArrayBuffer(4));

/**
 * A reader-writer lock shared by every process of a pool: commits take it shared, opening and
 * closing the store exclusive. Two flocked files: the gate itself, and a turnstile in front of
 * it that an opener closes first, so that a stream of commits from busy daemons cannot starve
 * it (flock grants new shared locks while an exclusive one waits). The kernel drops a killed
 * holder's locks. Waits poll, so that a holder stopped for a minute becomes a clear error.
 */
export class OpenGate {
  readonly #gate: number;
  readonly #turnstile: number;

  constructor(readonly path: string) {
    this.#gate = openSync(path, constants.O_RDWR | constants.O_CREAT, 0o600);
    try {
      this.#turnstile = openSync(`${path}-turnstile`, constants.O_RDWR | constants.O_CREAT, 0o600);
    } catch (err) {
      closeSync(this.#gate);
      throw err;
    }
  }

  shared<T>(fn: () => T): T {
    this.#take(this.#turnstile, 'shared');
    try {
      this.#take(this.#gate, 'shared');
    } finally {
      unlockFile(this.#turnstile);
    }
    try {
      return fn();
    } finally {
      unlockFile(this.#gate);
    }
  }

  exclusive<T>(fn: () => T): T {
    this.#enter();
    try {
      return fn();
    } finally {
      this.#leave();
    }
  }

  async exclusiveAsync<T>(fn: () => Promise<T> | T): Promise<T> {
    this.#enter();
    try {
      return await fn();
    } finally {
      this.#leave();
    }
  }

  close(): void {
    closeSync(this.#gate);
    closeSync(this.#turnstile);
  }

  #enter(): void {
    this.#take(this.#turnstile, 'exclusive');
    try {
      this.#take(this.#gate, 'exclusive');
    } catch (err) {
      unlockFile(this.#turnstile);
      throw err;
    }
  }

  #leave(): void {
    unlockFile(this.#gate);
    unlockFile(this.#turnstile);
  }

  #take(fd: number, mode: LockMode): void {
    const until = Date.now() + GATE_WAIT_MS;
    while (!lockFile(fd, mode, false)) {
      if (Date.now() > until) {
        throw new Error(`pool metadata: another thinvol process has held ${this.path} for over ${GATE_WAIT_MS / 1000} s (is one stopped?)`);
      }
      Atomics.wait(sleeper, 0, 0, POLL_MS);
    }
  }
}
