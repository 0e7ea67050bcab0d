import { resolve } from 'node:path';
import type { BackendSpec } from '../backend/backend-probe';
import { FsError } from '../util/errors';
import { parseSize } from '../util/size';

/** "PATH[:SIZE]" as given on the command line. */
export function parseBackendSpec(text: string): BackendSpec {
  const m = /^(.+?)(?::([0-9.]+[a-zA-Z]*))?$/.exec(text);
  if (!m || m[1] === undefined) throw new FsError('EINVAL', `bad backend "${text}": expected PATH or PATH:SIZE`);
  const path = resolve(m[1]);
  if (m[2] === undefined) return { path };
  try {
    return { path, sizeBytes: parseSize(m[2]) };
  } catch (err) {
    throw new FsError('EINVAL', `bad backend "${text}": ${(err as Error).message}`);
  }
}
