import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { FsError } from '../util/errors';

const execFileP = promisify(execFile);

/** A line of /proc/self/mountinfo; `dev` is the file system's st_dev as "major:minor". */
export interface MountEntry { mountpoint: string; fstype: string; source: string; dev: string }

function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

export async function mounts(): Promise<MountEntry[]> {
  const text = await fs.readFile('/proc/self/mountinfo', 'utf8');
  return text.split('\n').filter(Boolean).map((line) => {
    const [pre, post = ''] = line.split(' - ');
    const f = (pre ?? '').split(' ');
    const g = post.split(' ');
    return { mountpoint: unescapeMount(f[4] ?? ''), fstype: g[0] ?? '', source: unescapeMount(g[1] ?? ''), dev: f[2] ?? '' };
  });
}

export async function findMount(mountpoint: string): Promise<MountEntry | undefined> {
  const abs = resolve(mountpoint);
  return (await mounts()).reverse().find((m) => m.mountpoint === abs);
}

/**
 * Checks a mountpoint is a usable empty spot; a thinvol mount left behind by a crashed daemon
 * (ENOTCONN, or ECONNABORTED when requests were in flight as it died) is detached first.
 */
export async function prepareMountpoint(mountpoint: string): Promise<string> {
  const abs = resolve(mountpoint);
  if (abs.includes(',')) throw new FsError('EINVAL', `mountpoint ${abs}: commas are not allowed in the path`);
  const existing = await findMount(abs);
  if (existing) {
    // A name nobody uses is looked up by the server: a stat of the mountpoint itself may be
    // answered from the kernel's attribute cache even when the server is gone.
    const probe = join(abs, `.thinvol-probe-${randomBytes(8).toString('hex')}`);
    const stale = await fs.stat(probe).then(() => false, (err: NodeJS.ErrnoException) => err.code === 'ENOTCONN' || err.code === 'ECONNABORTED');
    if (!stale) throw new FsError('EBUSY', `mountpoint ${abs} is busy: ${existing.fstype} from ${existing.source} is mounted there`);
    await execFileP('fusermount', ['-uz', abs]).catch(() => execFileP('umount', ['-l', abs]));
  }
  const st = await fs.stat(abs).catch(() => undefined);
  if (!st) throw new FsError('ENOENT', `mountpoint ${abs} does not exist (create it with: mkdir -p ${abs})`);
  if (!st.isDirectory()) throw new FsError('ENOTDIR', `mountpoint ${abs} is not a directory`);
  return abs;
}

/** Unmounts without detaching lazily: refuses (with the reason) while something still uses the mount. */
export async function unmountStrict(mountpoint: string): Promise<void> {
  try {
    await execFileP('fusermount', ['-u', mountpoint]);
  } catch (err) {
    const msg = String((err as { stderr?: string }).stderr ?? (err as Error).message).trim();
    if (/busy/i.test(msg)) throw new FsError('EBUSY', `cannot unmount ${mountpoint}: it is busy (a loop device or process still uses a volume; detach with losetup -d first)`);
    throw new FsError('EINVAL', `cannot unmount ${mountpoint}: ${msg}`);
  }
}
