import { promises as fs, constants } from 'node:fs';
import { basename } from 'node:path';
import { DATA_START, encodeLabel, LABEL_BYTES, parseLabel, type BackendLabel } from './backend-label';
import { lockFile } from '../native/flock';
import { FsError, fsErrorFrom } from '../util/errors';
import { BLOCK } from '../store/records';

export interface BackendSpec { path: string; sizeBytes?: number }

/** What identifies a file or device whatever path names it. */
export interface BackendIdentity { dev: number; ino: number; rdev: number }

export function sameIdentity(a: BackendIdentity, b: BackendIdentity): boolean {
  return a.rdev !== 0 || b.rdev !== 0 ? a.rdev === b.rdev : a.dev === b.dev && a.ino === b.ino;
}

export async function identityOf(path: string): Promise<BackendIdentity | undefined> {
  const st = await fs.stat(path).catch(() => undefined);
  if (!st) return undefined;
  return { dev: st.dev, ino: st.ino, rdev: st.isBlockDevice() ? st.rdev : 0 };
}

export interface ProbedBackend { path: string; kind: 'file' | 'block'; capacityBytes: number; identity: BackendIdentity; label: BackendLabel | undefined }

/**
 * Makes a backend exist and checks it may be used: a regular file is created sparse at SIZE (or
 * used at its current size), a block device is used whole. Refused: a file or device another
 * process holds locked (a running pool), a block device in use (mounted), one that holds data
 * at its start without being a thinvol backend. A thinvol label is returned for the caller to
 * judge. capacityBytes is the data space after the label, rounded down to 4 KiB.
 */
/** A block device's size now, from sysfs (it may have grown since it was added). */
export async function blockDeviceBytes(p: string): Promise<number> {
  const sectors = await fs.readFile(`/sys/class/block/${basename(await fs.realpath(p))}/size`, 'utf8')
    .catch(() => { throw new FsError('EINVAL', `backend ${p}: size of block device unknown`); });
  return Number(sectors) * 512;
}

export async function probeBackend(spec: BackendSpec): Promise<ProbedBackend> {
  const p = spec.path;
  const st = await fs.stat(p).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw fsErrorFrom(err, `cannot use backend ${p}`);
  });
  let kind: 'file' | 'block';
  let size: number;
  if (st?.isBlockDevice()) {
    if (spec.sizeBytes !== undefined) throw new FsError('EINVAL', `cannot use backend ${p}: a block device is used whole, drop ":SIZE"`);
    const bytes = await blockDeviceBytes(p);
    // O_EXCL on a block device fails while it is mounted or claimed by another exclusive user.
    const probe = await fs.open(p, constants.O_RDONLY | constants.O_EXCL).catch((err: NodeJS.ErrnoException) => {
      throw new FsError('EBUSY', `cannot use backend ${p}: ${err.code === 'EBUSY' ? 'the device is in use (mounted, or claimed by another program)' : err.message}`);
    });
    await probe.close();
    kind = 'block';
    size = bytes;
  } else {
    if (st && !st.isFile()) throw new FsError('EINVAL', `cannot use backend ${p}: not a regular file or block device`);
    if (!st && spec.sizeBytes === undefined) throw new FsError('ENOENT', `backend ${p} does not exist; give a size to create it (${p}:10G)`);
    if (st && spec.sizeBytes === undefined && st.size < BLOCK) throw new FsError('EINVAL', `cannot use backend ${p}: file is empty; give a size (${p}:10G)`);
    if (st && spec.sizeBytes !== undefined && st.size > spec.sizeBytes) throw new FsError('EINVAL', `backend ${p} is already ${st.size} bytes, larger than the ${spec.sizeBytes} asked for`);
    kind = 'file';
    size = spec.sizeBytes ?? st?.size ?? 0;
  }
  const capacityBytes = Math.floor(size / BLOCK) * BLOCK - DATA_START;
  if (capacityBytes < DATA_START) throw new FsError('EBUSY', `backend ${p}: too small, it needs at least 2M (the first 1M holds its label)`);
  const fh = await fs.open(p, constants.O_RDWR | (kind === 'file' ? constants.O_CREAT : 0), 0o600)
    .catch((err: unknown) => { throw fsErrorFrom(err, `cannot ${st ? 'open' : 'create'} backend ${p}`); });
  try {
    if (!lockFile(fh.fd, 'exclusive', false)) throw new FsError('EBUSY', `cannot use backend ${p}: another process holds it (a pool using it is running)`);
    if (kind === 'file' && spec.sizeBytes !== undefined) await fh.truncate(spec.sizeBytes);
    const head = Buffer.alloc(LABEL_BYTES);
    await fh.read(head, 0, LABEL_BYTES, 0);
    const parsed = parseLabel(head);
    if (!parsed.ok && !parsed.foreign) throw new FsError('EINVAL', `cannot use backend ${p}: ${parsed.reason}`);
    if (!parsed.ok) {
      const start = Buffer.alloc(DATA_START);
      await fh.read(start, 0, DATA_START, 0);
      if (start.some((x) => x !== 0)) {
        throw new FsError('EEXIST', `cannot use backend ${p}: it holds data at its start and is not a thinvol backend; if it may be overwritten, clear its first megabyte first (dd if=/dev/zero of=${p} bs=1M count=1 conv=notrunc)`);
      }
    }
    const stNow = await fh.stat();
    return { path: p, kind, capacityBytes, identity: { dev: stNow.dev, ino: stNow.ino, rdev: stNow.isBlockDevice() ? stNow.rdev : 0 }, label: parsed.ok ? parsed.label : undefined };
  } finally {
    await fh.close();
  }
}

/** Writes a backend's label, durably, before the pool records the backend. */
export async function writeLabel(path: string, label: BackendLabel): Promise<void> {
  const fh = await fs.open(path, constants.O_RDWR);
  try {
    await fh.write(encodeLabel(label), 0, LABEL_BYTES, 0);
    await fh.datasync();
  } finally {
    await fh.close();
  }
}
