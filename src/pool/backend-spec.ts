import { promises as fs, constants } from 'node:fs';
import { basename, resolve } from 'node:path';
import { parseSize } from '../util/size';
import { UserError } from '../util/errors';
import { BLOCK } from './records';

export interface BackendSpec { path: string; sizeBytes?: number }

/** "PATH[:SIZE]" as given on the command line. */
export function parseBackendSpec(text: string): BackendSpec {
  const m = /^(.+?)(?::([0-9.]+[a-zA-Z]*))?$/.exec(text);
  if (!m || m[1] === undefined) throw new UserError(`bad backend "${text}": expected PATH or PATH:SIZE`);
  const path = resolve(m[1]);
  if (m[2] === undefined) return { path };
  try {
    return { path, sizeBytes: parseSize(m[2]) };
  } catch (err) {
    throw new UserError(`bad backend "${text}": ${(err as Error).message}`);
  }
}

/**
 * Makes the backend exist: a regular file is created sparse at SIZE (or used at its current size);
 * a block device is used whole. Returns kind and usable capacity (rounded down to 4 KiB).
 */
export async function prepareBackend(spec: BackendSpec): Promise<{ kind: 'file' | 'block'; capacityBytes: number }> {
  const st = await fs.stat(spec.path).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw new UserError(`cannot use backend ${spec.path}: ${err.message}`);
  });
  if (st?.isBlockDevice()) {
    const sectors = await fs.readFile(`/sys/class/block/${basename(await fs.realpath(spec.path))}/size`, 'utf8')
      .catch(() => { throw new UserError(`cannot use backend ${spec.path}: size of block device unknown`); });
    if (spec.sizeBytes !== undefined) throw new UserError(`cannot use backend ${spec.path}: a block device is used whole, drop ":SIZE"`);
    return { kind: 'block', capacityBytes: floorBlock(Number(sectors) * 512) };
  }
  if (st && !st.isFile()) throw new UserError(`cannot use backend ${spec.path}: not a regular file or block device`);
  if (!st && spec.sizeBytes === undefined) throw new UserError(`backend ${spec.path} does not exist; give a size to create it (${spec.path}:10G)`);
  if (st && spec.sizeBytes === undefined) {
    if (st.size < BLOCK) throw new UserError(`cannot use backend ${spec.path}: file is empty; give a size (${spec.path}:10G)`);
    return { kind: 'file', capacityBytes: floorBlock(st.size) };
  }
  const size = spec.sizeBytes ?? 0;
  if (size < 1024 * 1024) throw new UserError(`backend ${spec.path}: size must be at least 1M`);
  if (st && st.size > size) throw new UserError(`backend ${spec.path} is already ${st.size} bytes, larger than the ${size} asked for`);
  const fh = await fs.open(spec.path, constants.O_RDWR | constants.O_CREAT, 0o600)
    .catch((err: Error) => { throw new UserError(`cannot create backend ${spec.path}: ${err.message}`); });
  try {
    await fh.truncate(size);
  } finally {
    await fh.close();
  }
  return { kind: 'file', capacityBytes: floorBlock(size) };
}

function floorBlock(n: number): number {
  return Math.floor(n / BLOCK) * BLOCK;
}
