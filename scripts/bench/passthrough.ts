/**
 * A minimal fuse-native filesystem: a directory holding one file, /data, whose reads and writes go
 * straight to a backing file with fs.read/fs.write. Mounted with the same options as the thinvol
 * daemon, it shows the ceiling fuse-native itself puts on a Node FUSE data path.
 *
 * Usage: node passthrough.js BACKING_FILE MOUNTDIR   (prints "ready" once mounted; SIGTERM unmounts)
 */
import Fuse from 'fuse-native';
import { fdatasync, fstat, ftruncate, openSync, read, write, constants, closeSync } from 'node:fs';

export const PASSTHROUGH_FILE = 'data';

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;

interface Stat {
  mode: number; uid: number; gid: number; size: number; nlink: number;
  blocks: number; blksize: number; mtime: Date; atime: Date; ctime: Date;
}

/** Node reports errno as a negative number on its errors; fuse-native wants a negative errno. */
function errnoOf(err: NodeJS.ErrnoException): number {
  return -Math.abs(err.errno ?? 5);
}

function main(): void {
  const [backing, mnt] = process.argv.slice(2);
  if (!backing || !mnt) {
    console.error('usage: passthrough BACKING_FILE MOUNTDIR');
    process.exit(2);
  }
  const fd = openSync(backing, constants.O_RDWR);
  const path = `/${PASSTHROUGH_FILE}`;
  const now = new Date();

  const ops: Record<string, unknown> = {
    init: (cb: (err: number) => void) => cb(0),
    getattr: (p: string, cb: (err: number, st?: Stat) => void) => {
      if (p === '/') {
        cb(0, { mode: S_IFDIR | 0o755, uid: 0, gid: 0, size: 4096, nlink: 2, blocks: 8, blksize: 4096, mtime: now, atime: now, ctime: now });
        return;
      }
      if (p !== path) { cb(-2); return; }
      fstat(fd, (err, st) => {
        if (err) { cb(errnoOf(err)); return; }
        cb(0, { mode: S_IFREG | 0o600, uid: 0, gid: 0, size: st.size, nlink: 1, blocks: st.blocks, blksize: 4096, mtime: st.mtime, atime: st.atime, ctime: st.ctime });
      });
    },
    readdir: (p: string, cb: (err: number, names?: string[]) => void) => (p === '/' ? cb(0, [PASSTHROUGH_FILE]) : cb(-20)),
    open: (p: string, _flags: number, cb: (err: number, fd?: number) => void) => (p === path ? cb(0, 1) : cb(-2)),
    release: (_p: string, _fd: number, cb: (err: number) => void) => cb(0),
    flush: (_p: string, _fd: number, cb: (err: number) => void) => cb(0),
    read: (_p: string, _h: number, buf: Buffer, len: number, pos: number, cb: (n: number) => void) => {
      read(fd, buf, 0, len, pos, (err, n) => cb(err ? errnoOf(err) : n));
    },
    write: (_p: string, _h: number, buf: Buffer, len: number, pos: number, cb: (n: number) => void) => {
      write(fd, buf, 0, len, pos, (err, n) => cb(err ? errnoOf(err) : n));
    },
    fsync: (_p: string, _datasync: number, _h: number, cb: (err: number) => void) => {
      fdatasync(fd, (err) => cb(err ? errnoOf(err) : 0));
    },
    truncate: (p: string, size: number, cb: (err: number) => void) => {
      if (p !== path) { cb(-2); return; }
      ftruncate(fd, size, (err) => cb(err ? errnoOf(err) : 0));
    },
    ftruncate: (_p: string, _h: number, size: number, cb: (err: number) => void) => {
      ftruncate(fd, size, (err) => cb(err ? errnoOf(err) : 0));
    },
  };

  const fuse = new Fuse(mnt, ops, {
    // The same option string and timeout as src/daemon/mount-daemon.ts.
    fsname: `${backing},big_writes,max_write=131072,max_background=64,congestion_threshold=48`,
    subtype: 'benchpt',
    allowOther: true,
    defaultPermissions: true,
    timeout: false,
  });
  const saved = process.env.DEBUG;
  delete process.env.DEBUG;
  fuse.mount((err) => {
    if (saved !== undefined) process.env.DEBUG = saved;
    if (err) {
      console.error(`passthrough: mount failed: ${err.message}`);
      process.exit(1);
    }
    process.stdout.write('ready\n');
  });
  const stop = (): void => {
    fuse.unmount(() => {
      closeSync(fd);
      // fuse-native's session thread keeps the event loop alive after the unmount.
      process.exit(0);
    });
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

if (require.main === module) main();
