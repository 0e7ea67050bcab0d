import { getSystemErrorMap } from 'node:util';
import { constants } from 'node:os';
import { nativeAddon } from './addon';

/**
 * flock(2) locks: advisory, whole-file, held by an open file description (so two open()s of one
 * file conflict even within one process, and a forked child sharing the descriptor shares the
 * lock). The kernel drops the lock when the last descriptor on it closes, including when the
 * holding process dies.
 */
export type LockMode = 'shared' | 'exclusive';

/** A system call that failed: `code` is the errno's name ('EBADF'), `errno` its positive number. */
export class SyscallError extends Error {
  readonly code: string;
  constructor(readonly syscall: string, readonly errno: number, detail: string) {
    const [code, description] = getSystemErrorMap().get(-errno) ?? [`errno ${errno}`, 'unknown error'];
    super(`${syscall}(${detail}): ${code} (${description})`);
    this.code = code;
  }
}

/**
 * Takes a lock on fd. With wait, blocks this thread (and so the event loop) until the lock is
 * granted; without, returns false at once if another open file description holds a conflicting
 * lock. Calling it again on a locked fd converts the lock to `mode`. Throws SyscallError
 * otherwise (EBADF, ENOLCK, ...).
 */
export function lockFile(fd: number, mode: LockMode, wait: boolean): boolean {
  const native = nativeAddon();
  let op: number;
  if (mode === 'shared') op = native.LOCK_SH;
  else if (mode === 'exclusive') op = native.LOCK_EX;
  else throw new TypeError(`lockFile: mode must be 'shared' or 'exclusive', not ${String(mode)}`);
  if (!wait) op |= native.LOCK_NB;
  const errno = native.flock(fd, op);
  if (errno === 0) return true;
  if (!wait && errno === constants.errno.EWOULDBLOCK) return false;
  throw new SyscallError('flock', errno, `${fd}, ${mode}${wait ? '' : ', no wait'}`);
}

/** Releases fd's lock (nothing to do if it holds none). Throws SyscallError (EBADF, ...). */
export function unlockFile(fd: number): void {
  const native = nativeAddon();
  const errno = native.flock(fd, native.LOCK_UN);
  if (errno !== 0) throw new SyscallError('flock', errno, `${fd}, unlock`);
}
