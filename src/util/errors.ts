import { constants } from 'node:os';

export type Errno = keyof typeof constants.errno;

/** An error meant for the FUSE boundary: carries the errno the kernel should see. */
export class FsError extends Error {
  readonly errno: number;
  constructor(readonly code: Errno, message: string) {
    super(message);
    this.errno = constants.errno[code];
  }
}

/** A refusal that the CLI prints as one line and turns into a non-zero exit. */
export class UserError extends Error {}
