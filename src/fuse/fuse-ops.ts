import type { BackendSet } from '../backend/backend-set';
import { checkFileSize, type Pool } from '../pool/pool';
import { BLOCK, MAX_VOLUME_BYTES, type Holder, type SnapshotRecord, type VolumeRecord } from '../store/records';
import { constants } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { errnoOf, FsError } from '../util/errors';
import { logger } from '../util/log';
import { VolumeIo } from '../volume/volume-io';

const debug = logger('fuse');

const SERVE_RETRY_MS = 10;
/** A write waiting for space looks this often (space may come from another process: backend add, delete). */
const FULL_POLL_MS = 250;

const O_ACCMODE = 3;
const O_TRUNC = 0o1000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
/** fallocate(2) modes (linux/falloc.h). */
const FALLOC_FL_KEEP_SIZE = 0x01;
const FALLOC_FL_PUNCH_HOLE = 0x02;
const FALLOC_FL_ZERO_RANGE = 0x10;
const ZEROS = Buffer.alloc(BLOCK);
const SEEK_DATA = 3;
const SEEK_HOLE = 4;
/** SEEK_DATA/SEEK_HOLE look at the map this much at a time, so that a far answer costs no huge list. */
const SEEK_WINDOW = 2 ** 30;

const floorB = (n: number): number => Math.floor(n / BLOCK) * BLOCK;
const ceilB = (n: number): number => Math.ceil(n / BLOCK) * BLOCK;

type Cb<T = void> = T extends void ? (err: number) => void : (err: number, value?: T) => void;

interface Stat {
  mode: number; uid: number; gid: number; size: number; nlink: number;
  blocks: number; blksize: number; mtime: Date; atime: Date; ctime: Date;
}

interface Handle { io: VolumeIo; writable: boolean }
interface OpenVolume { io: VolumeIo; handles: number; writers: number }

/** Told when a volume gains its first writer in this daemon and before its last writer closes (auto reclaim listens). */
export interface WriterWatcher {
  opened(io: VolumeIo): void;
  closing(io: VolumeIo): void;
}

/**
 * Turns any failure into the negative errno the kernel gets. An EIO (a backend failed, or an
 * error nobody expected) is always logged: the guest sees only the errno, the admin needs why.
 */
function negErrno(op: string, err: unknown): number {
  const errno = errnoOf(err) ?? constants.errno.EIO;
  if (errno === constants.errno.EIO) console.error(`thinvol: ${op} failed: ${err instanceof Error ? err.stack : String(err)}`);
  else debug('%s: %s', op, err instanceof Error ? err.message : String(err));
  return -errno;
}

/** read and write answer with the byte count (or a negative errno) as the callback's only argument. */
function runCount(op: string, cb: (n: number) => void, fn: () => Promise<number>): void {
  Promise.resolve().then(fn).then((n) => cb(n), (err: unknown) => cb(negErrno(op, err)));
}

/** A write or fallocate range: EINVAL if negative, EFBIG if it ends past the largest volume. */
function checkRange(offset: number, length: number): void {
  if (!(offset >= 0)) throw new FsError('EINVAL', `offset ${offset}`);
  if (offset + length > MAX_VOLUME_BYTES) throw new FsError('EFBIG', `[${offset}, +${length}) ends past the largest volume (${MAX_VOLUME_BYTES} bytes)`);
}

function run<T>(op: string, cb: (err: number, value?: T) => void, fn: () => Promise<T> | T): void {
  Promise.resolve().then(fn).then((v) => cb(0, v), (err: unknown) => cb(negErrno(op, err)));
}

/**
 * The FUSE adapter: one directory holding one regular file per volume. It checks names,
 * handles and ranges once here; the volume data path below trusts them.
 */
export class FuseOps {
  readonly #handles = new Map<number, Handle>();
  readonly #open = new Map<number, OpenVolume>();
  /** Users of each served volume: handles plus internal uses, including those still waiting to start. */
  readonly #serveRefs = new Map<number, number>();
  #nextFd = 1;
  #queued = 0;

  /** `watcher` is set once, before the mount serves requests. */
  watcher: WriterWatcher | undefined;

  constructor(private readonly pool: Pool, private readonly backends: BackendSet, private readonly holder: Holder, private readonly daemonId: string) {}

  /** Writes waiting for space (the pool is full, in queue mode). */
  get queuedWrites(): number {
    return this.#queued;
  }

  /** Files open through the mount (not counting internal uses). */
  get handleCount(): number {
    return this.#handles.size;
  }

  get openVolumes(): Iterable<OpenVolume> {
    return this.#open.values();
  }

  #volume(path: string): VolumeRecord {
    const name = path.slice(1);
    const v = name.includes('/') || name === '' ? undefined : this.pool.findVolume(name);
    if (!v || v.name !== name) {
      if (this.#snapshotAt(path)) throw new FsError('EROFS', `${name} is a snapshot: read-only (delete it with thinvol snapshot delete)`);
      throw new FsError('ENOENT', `no volume at ${path}`);
    }
    return v;
  }

  /** The snapshot file `/VOLUME@NAME`, if that is what `path` names. */
  #snapshotAt(path: string): { volume: VolumeRecord; snapshot: SnapshotRecord } | undefined {
    const name = path.slice(1);
    return name.includes('/') ? undefined : this.pool.findSnapshot(name);
  }

  /** A snapshot reads as a read-only copy of its volume's file as it was. */
  #snapshotStat(v: VolumeRecord, s: SnapshotRecord): Stat {
    const t = new Date(s.createdAt);
    return { mode: S_IFREG | (v.mode & 0o444), uid: v.uid, gid: v.gid, size: s.sizeBytes, nlink: 1, blocks: 0, blksize: BLOCK, mtime: t, atime: t, ctime: t };
  }

  #stat(v: VolumeRecord): Stat {
    const t = new Date(v.mtimeMs);
    return {
      mode: S_IFREG | v.mode, uid: v.uid, gid: v.gid, size: v.sizeBytes, nlink: 1,
      blocks: Math.ceil(v.allocatedBytes / 512), blksize: BLOCK, mtime: t, atime: t, ctime: t,
    };
  }

  #handle(fd: number): Handle {
    const h = this.#handles.get(fd);
    if (!h) throw new FsError('EBADF', `no open handle ${fd}`);
    return h;
  }

  /**
   * Opens a volume for this daemon (a handle, or a short internal use): takes the write claim,
   * and registers the daemon as serving it, waiting while a layout change moves one of its ranges.
   */
  async #acquire(v: { id: number }, writable: boolean): Promise<OpenVolume> {
    if (writable) this.pool.claim(v.id, this.holder);
    this.#serveRefs.set(v.id, (this.#serveRefs.get(v.id) ?? 0) + 1);
    try {
      if (!this.#open.has(v.id)) while (!this.pool.registry.serve(this.daemonId, v.id)) await sleep(SERVE_RETRY_MS);
    } catch (err) {
      this.#unserve(v.id);
      if (writable && !this.#open.get(v.id)?.writers) this.pool.unclaim(v.id, this.holder);
      throw err;
    }
    let ov = this.#open.get(v.id);
    if (!ov) {
      ov = { io: new VolumeIo(this.pool, this.backends, this.holder, v.id), handles: 0, writers: 0 };
      this.#open.set(v.id, ov);
    }
    if (writable && ov.writers === 0) {
      ov.io.writerHere = true;
      this.watcher?.opened(ov.io);
    }
    ov.io.refresh();
    ov.handles++;
    if (writable) ov.writers++;
    return ov;
  }

  /** Drops a user; the last writer commits and hands back the volume's reservations before the claim goes. */
  async #unref(volume: number, writable: boolean): Promise<void> {
    const ov = this.#open.get(volume);
    try {
      if (ov) {
        ov.handles--;
        if (writable) ov.writers--;
        if (writable && ov.writers === 0) {
          this.watcher?.closing(ov.io);
          await ov.io.close();
          ov.io.writerHere = false;
        }
        if (ov.handles === 0 && this.#open.get(volume) === ov) this.#open.delete(volume);
      }
    } finally {
      if (writable && (ov?.writers ?? 0) === 0) this.pool.unclaim(volume, this.holder);
      this.#unserve(volume);
    }
  }

  #unserve(volume: number): void {
    const refs = (this.#serveRefs.get(volume) ?? 1) - 1;
    if (refs > 0) this.#serveRefs.set(volume, refs);
    else {
      this.#serveRefs.delete(volume);
      this.pool.registry.unserve(this.daemonId, volume);
    }
  }

  /** Runs `fn` on a volume that may not be open. */
  async #withVolume<T>(v: VolumeRecord, writable: boolean, fn: (io: VolumeIo) => Promise<T>): Promise<T> {
    const ov = await this.#acquire(v, writable);
    try {
      return await fn(ov.io);
    } finally {
      await this.#unref(v.id, writable);
    }
  }

  async #openHandle(v: { id: number }, writable: boolean): Promise<number> {
    const ov = await this.#acquire(v, writable);
    const fd = this.#nextFd++;
    this.#handles.set(fd, { io: ov.io, writable });
    return fd;
  }

  /** The data path of a volume this daemon has open. */
  ioOf(volume: number): VolumeIo | undefined {
    return this.#open.get(volume)?.io;
  }

  ops(): Record<string, unknown> {
    return {
      init: (cb: Cb) => cb(0),
      statfs: (_path: string, cb: Cb<object>) => run('statfs', cb, () => this.#statfs()),
      getattr: (path: string, cb: Cb<Stat>) => run('getattr', cb, () => {
        if (path === '/') {
          const t = new Date(this.pool.superblock().createdAt);
          return { mode: S_IFDIR | 0o755, uid: 0, gid: 0, size: 4096, nlink: 2, blocks: 8, blksize: BLOCK, mtime: t, atime: t, ctime: t };
        }
        const snap = this.#snapshotAt(path);
        if (snap) return this.#snapshotStat(snap.volume, snap.snapshot);
        const v = this.#volume(path);
        const io = this.#open.get(v.id)?.io;
        return this.#stat(io ? { ...v, sizeBytes: io.size() } : v);
      }),
      readdir: (path: string, cb: Cb<string[]>) => run('readdir', cb, () => {
        if (path !== '/') throw new FsError('ENOTDIR', `${path} is not a directory`);
        const volumes = this.pool.volumeList();
        const names = new Map(volumes.map((v) => [v.id, v.name]));
        return [...volumes.map((v) => v.name), ...this.pool.snapshotList().map((s) => `${names.get(s.volume) ?? `id:${s.volume}`}@${s.name}`)];
      }),
      open: (path: string, flags: number, cb: Cb<number>) => run('open', cb, async () => {
        const writable = (flags & O_ACCMODE) !== 0;
        const snap = this.#snapshotAt(path);
        if (snap) {
          if (writable) throw new FsError('EROFS', `${path.slice(1)} is a snapshot: read-only`);
          return this.#openHandle(snap.snapshot, false);
        }
        const v = this.#volume(path);
        const fd = await this.#openHandle(v, writable);
        debug('open %s flags %o -> fd %d', path, flags, fd);
        // Both bindings ask for atomic O_TRUNC: the truncation comes here, where the caller's
        // own handle is known, rather than as a truncate by path that cannot tell it apart.
        if (writable && flags & O_TRUNC) {
          const h = this.#handle(fd);
          try {
            if (h.io.size() > 0) {
              this.#refuseShrinkInUse(v, 1);
              await h.io.truncate(0);
            }
          } catch (err) {
            this.#handles.delete(fd);
            await this.#unref(v.id, true);
            throw err;
          }
        }
        return fd;
      }),
      create: (path: string, mode: number, cb: Cb<number>) => run('create', cb, () => {
        const name = path.slice(1);
        if (name.includes('/')) throw new FsError('EACCES', 'volumes live at the top of the mount only');
        // Private whatever the caller's umask (the mount is allow_other): share with chmod.
        const v = this.pool.createVolume(name, 0, mode & 0o700);
        debug('create %s -> volume %d', name, v.id);
        return this.#openHandle(v, true);
      }),
      release: (_path: string, fd: number, cb: Cb) => run('release', cb, () => {
        const h = this.#handle(fd);
        this.#handles.delete(fd);
        return this.#unref(h.io.id, h.writable);
      }),
      read: (_path: string, fd: number, buf: Buffer, len: number, pos: number, cb: (n: number) => void) => runCount('read', cb, () => this.#handle(fd).io.read(buf, len, pos)),
      write: (_path: string, fd: number, buf: Buffer, len: number, pos: number, cb: (n: number) => void) => runCount('write', cb, () => {
        const h = this.#handle(fd);
        if (!h.writable) throw new FsError('EBADF', `handle ${fd} is read-only`);
        checkRange(pos, len);
        return this.#writeWhenFull(h.io, buf.subarray(0, len), pos);
      }),
      flush: (_path: string, _fd: number, cb: Cb) => cb(0),
      fsync: (_path: string, _datasync: number, fd: number, cb: Cb) => run('fsync', cb, () => this.#handle(fd).io.commit()),
      truncate: (path: string, size: number, cb: Cb) => run('truncate', cb, () => {
        const v = this.#volume(path);
        checkFileSize(size);
        if (size < (this.#open.get(v.id)?.io.size() ?? v.sizeBytes)) this.#refuseShrinkInUse(v, 0);
        return this.#withVolume(v, true, (io) => io.truncate(size));
      }),
      ftruncate: (_path: string, fd: number, size: number, cb: Cb) => run('ftruncate', cb, () => {
        const h = this.#handle(fd);
        if (!h.writable) throw new FsError('EBADF', `handle ${fd} is read-only`);
        checkFileSize(size);
        const v = this.pool.volumeById(h.io.id);
        if (v && size < h.io.size()) this.#refuseShrinkInUse(v, 1);
        return h.io.truncate(size);
      }),
      unlink: (path: string, cb: Cb) => run('unlink', cb, () => {
        const v = this.#volume(path);
        if (this.#open.has(v.id)) throw new FsError('EBUSY', `volume ${v.name} is open`);
        const other = this.pool.claimant(v.id);
        if (other) throw new FsError('EBUSY', `volume ${v.name} is in use by pid ${other.pid}`);
        this.pool.deleteVolume(v.id);
        debug('unlink %s: volume %d deleted', path, v.id);
      }),
      rename: (src: string, dest: string, cb: Cb) => run('rename', cb, () => {
        const v = this.#volume(src);
        const to = dest.slice(1);
        if (to.includes('/')) throw new FsError('EACCES', 'volumes live at the top of the mount only');
        this.pool.renameVolume(v.name, to);
      }),
      chmod: (path: string, mode: number, cb: Cb) => run('chmod', cb, () => this.pool.updateVolume(this.#volume(path).id, { mode: mode & 0o7777 })),
      chown: (path: string, uid: number, gid: number, cb: Cb) => run('chown', cb, () => {
        const v = this.#volume(path);
        this.pool.updateVolume(v.id, { uid: uid === 0xffffffff ? v.uid : uid, gid: gid === 0xffffffff ? v.gid : gid });
      }),
      utimens: (path: string, _atime: number, mtime: number, cb: Cb) => run('utimens', cb, () => {
        this.pool.updateVolume(this.#volume(path).id, { mtimeMs: mtime > 1e15 ? Math.floor(mtime / 1e6) : mtime });
      }),
      // Only the libfuse3 binding calls this (fuse-native has no fallocate).
      fallocate: (_path: string, fd: number, mode: number, offset: number, length: number, cb: Cb) => run('fallocate', cb, () => {
        const h = this.#handle(fd);
        if (!h.writable) throw new FsError('EBADF', `handle ${fd} is read-only`);
        return this.#fallocate(h.io, mode, offset, length);
      }),
      // Only the libfuse3 binding calls this, and the kernel sends only SEEK_DATA and SEEK_HOLE.
      lseek: (_path: string, fd: number, offset: number, whence: number, cb: Cb<number>) => run('lseek', cb, () => this.#seek(this.#handle(fd).io, offset, whence)),
    };
  }

  /**
   * SEEK_DATA / SEEK_HOLE from the volume's map, uncommitted writes and discards included: data
   * is what is mapped, in whole 4 KiB blocks; the end of the volume counts as a hole.
   */
  #seek(io: VolumeIo, offset: number, whence: number): number {
    if (whence !== SEEK_DATA && whence !== SEEK_HOLE) throw new FsError('EINVAL', `lseek: whence ${whence}`);
    if (!(offset >= 0)) throw new FsError('EINVAL', `lseek: offset ${offset}`);
    const size = io.size();
    if (offset >= size) throw new FsError('ENXIO', `lseek: offset ${offset} is at or past the end (${size})`);
    let pos = offset;
    for (let w = offset; w < size; w += SEEK_WINDOW) {
      const we = Math.min(size, w + SEEK_WINDOW);
      for (const e of io.mapped(w, we)) {
        if (whence === SEEK_DATA) return Math.max(e.vstart, offset);
        if (e.vstart > pos) return pos;
        pos = Math.max(pos, e.vstart + e.len);
      }
      if (whence === SEEK_HOLE && pos < we) return pos;
    }
    if (whence === SEEK_DATA) throw new FsError('ENXIO', `lseek: no data at or after ${offset}`);
    return size;
  }

  /**
   * fallocate(2). A loop device turns a discard into PUNCH_HOLE|KEEP_SIZE and write-zeroes into
   * ZERO_RANGE (or a punch); both give the whole blocks back and zero the partial ones in place.
   */
  async #fallocate(io: VolumeIo, mode: number, offset: number, length: number): Promise<void> {
    if (!(length > 0)) throw new FsError('EINVAL', `fallocate: length ${length}`);
    checkRange(offset, length);
    const end = offset + length;
    if (mode === (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)) {
      await this.#zeroRange(io, offset, Math.min(end, io.size()));
      return;
    }
    if (mode === FALLOC_FL_ZERO_RANGE || mode === (FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE)) {
      if (!(mode & FALLOC_FL_KEEP_SIZE) && end > io.size()) await io.truncate(end);
      await this.#zeroRange(io, offset, Math.min(end, io.size()));
      return;
    }
    // Mode 0 (or KEEP_SIZE alone) is preallocation. A thin volume has nothing to gain from it:
    // reserving backend space up front is what thin provisioning avoids, and unwritten ranges
    // read as zeros already. EOPNOTSUPP makes posix_fallocate(3) write zeros instead, which
    // allocate nothing here (all-zero blocks are skipped). Collapse, insert and unshare are
    // not supported either.
    throw new FsError('EOPNOTSUPP', `fallocate mode 0x${mode.toString(16)} is not supported`);
  }

  /** Unmaps the whole blocks of [start, end) (VolumeIo.discard) and writes zeros over the partial ones at its edges. */
  async #zeroRange(io: VolumeIo, start: number, end: number): Promise<void> {
    if (end <= start) return;
    const a = ceilB(start);
    const b = floorB(end);
    if (b <= a) {
      await this.#writeZeros(io, start, end);
      return;
    }
    await io.discard(a, b);
    if (start < a) await this.#writeZeros(io, start, a);
    if (end > b) await this.#writeZeros(io, b, end);
  }

  /** Zeros over [start, end), less than two blocks: in place where mapped, nothing where a hole is. */
  async #writeZeros(io: VolumeIo, start: number, end: number): Promise<void> {
    for (let pos = start; pos < end; pos += BLOCK) await io.write(ZEROS.subarray(0, Math.min(BLOCK, end - pos)), pos);
  }

  /**
   * Snapshot `name` of a volume, taken by this daemon when it serves the volume: in-flight
   * writes finish, new ones wait, what is uncommitted is committed, then the top layer is frozen.
   */
  async snapshot(volume: string, name: string): Promise<SnapshotRecord> {
    const v = this.pool.volume(volume);
    const ov = this.#open.get(v.id);
    if (!ov) return this.pool.createSnapshot(v.id, name, true);
    const writer = this.pool.claimant(v.id);
    if (writer && !ov.io.writerHere) throw new FsError('EAGAIN', `volume "${v.name}" is written by pid ${writer.pid}, not this daemon`);
    return ov.io.takeSnapshot(name);
  }

  /** Runs `fn` on a volume by name, opening it for this daemon if it is not open (a cold reclaim). */
  withVolume<T>(name: string, writable: boolean, fn: (io: VolumeIo) => Promise<T>): Promise<T> {
    return this.#withVolume(this.pool.volume(name), writable, fn);
  }

  /**
   * A write that finds the pool full waits for space in queue mode (`pool set --when-full`),
   * holding no lock meanwhile: reads, overwrites, discards, reclaim and commits go on. It is
   * retried whole when space appears (a backend added, a delete, a discard, a reclaim) and
   * fails with ENOSPC after the policy's timeout. Retrying the parts already written rewrites
   * them with the same bytes.
   */
  async #writeWhenFull(io: VolumeIo, data: Buffer, pos: number): Promise<number> {
    let deadline: number | undefined;
    let returned = false;
    for (;;) {
      try {
        return await io.write(data, pos);
      } catch (err) {
        if (!(err instanceof FsError) || err.code !== 'ENOSPC') throw err;
        const policy = this.pool.spacePolicy();
        if (policy.whenFull === 'error') throw err;
        deadline ??= Date.now() + policy.fullTimeoutS * 1000;
        if (Date.now() >= deadline) throw err;
        // Space this daemon's volumes hold in reserve is what a waiting write needs first.
        const before = this.pool.usage().freeBytes;
        if (!returned) {
          returned = true;
          for (const ov of this.#open.values()) ov.io.returnReserve();
          if (this.pool.usage().freeBytes > before) continue;
        }
        // Journal writes may take from the reserve meanwhile: space counts as appearing when it
        // grows past the lowest seen, not past what there was when this write began to wait.
        let lowest = before;
        this.#queued++;
        try {
          for (;;) {
            await sleep(FULL_POLL_MS);
            const free = this.pool.usage().freeBytes;
            if (Date.now() >= deadline || free > lowest) break;
            lowest = free;
          }
        } finally {
          this.#queued--;
        }
      }
    }
  }

  /**
   * A shrink pulls the end out from under whoever else has the volume open (a loop device's
   * filesystem becomes unreadable): refused with EBUSY while any handle but the caller's own
   * (`own`: 0 or 1) is open here, or another process serves or writes the volume.
   */
  #refuseShrinkInUse(v: VolumeRecord, own: number): void {
    let handles = 0;
    for (const h of this.#handles.values()) if (h.io.id === v.id) handles++;
    const why = handles > own ? 'open elsewhere' : this.pool.openElsewhere(v.id, { daemonId: this.daemonId, holder: this.holder });
    if (why) throw new FsError('EBUSY', `cannot shrink volume ${v.name}: it is ${why}`);
  }

  #statfs(): object {
    const { capacityBytes: capacity, freeBytes: free, reserveBytes: reserve } = this.pool.spaceState();
    // statfs counts are 32-bit here: grow the fragment size until the block count fits.
    let frsize = BLOCK;
    while (capacity / frsize >= 2 ** 32) frsize *= 2;
    const files = this.pool.volumeList().length;
    return {
      bsize: BLOCK, frsize, blocks: Math.floor(capacity / frsize), bfree: Math.floor(free / frsize), bavail: Math.floor(Math.max(0, free - reserve) / frsize),
      files, ffree: 1_000_000, favail: 1_000_000, fsid: 0, flag: 0, namemax: 128,
    };
  }
}
