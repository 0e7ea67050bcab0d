import { constants } from 'node:os';

export type Errno = keyof typeof constants.errno;

const isErrno = (code: unknown): code is Errno => typeof code === 'string' && code in constants.errno;

/**
 * thinvol's error: a message for people (the CLI prints it as one line) and an errno for
 * programs (the FUSE adapter answers the kernel with it), kept apart, with the cause chained.
 */
export class FsError extends Error {
  readonly errno: number;
  constructor(readonly code: Errno, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.errno = constants.errno[code];
  }
}

/** A layout controller found another controller holding its lease: it must stop, not fail the change. */
export class LeaseLost extends FsError {
  constructor(message: string) {
    super('EAGAIN', message);
  }
}

/** The errno an error stands for: its own for FsError and Node system errors, else undefined (a bug: EIO). */
export function errnoOf(err: unknown): number | undefined {
  if (err instanceof FsError) return err.errno;
  const code = (err as { code?: unknown } | null)?.code;
  return isErrno(code) ? constants.errno[code] : undefined;
}

/** Wraps a Node system error in an FsError with the same errno and a message that says what was being done. */
export function fsErrorFrom(err: unknown, what: string): FsError {
  const code = (err as { code?: unknown } | null)?.code;
  return new FsError(isErrno(code) ? code : 'EIO', `${what}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
}
