import { constants } from 'node:os';

const E = constants.errno;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;

type Cb = (err: number, value?: unknown) => void;
type CountCb = (n: number) => void;

/**
 * A flat in-memory file system with fuse-native's handler API (what FuseOps.ops() returns), for
 * tests of the bindings without a pool. `hold` parks chosen reads unanswered; `throwOn` makes a
 * name's reads throw; `stats` counts what arrived.
 */
export class MemFs {
  readonly files = new Map<string, Buffer>();
  readonly handles = new Map<number, string>();
  #nextFd = 1;
  readonly stats = { inFlight: 0, maxInFlight: 0, maxWrite: 0, maxRead: 0, writes: 0, reads: 0 };
  /** Reads of this file are parked here instead of answered (to test teardown with requests pending). */
  holdReadsOf: string | undefined;
  readonly held: { buf: Buffer; cb: CountCb }[] = [];
  /** Reads of this file throw inside the handler. */
  throwOn: string | undefined;
  /** Answer reads and writes this many ms later (so that many are in flight). */
  delayMs = 0;

  #later(fn: () => void): void {
    this.stats.inFlight++;
    this.stats.maxInFlight = Math.max(this.stats.maxInFlight, this.stats.inFlight);
    const done = (): void => { this.stats.inFlight--; fn(); };
    if (this.delayMs > 0) setTimeout(done, this.delayMs);
    else setImmediate(done);
  }

  ops(): Record<string, unknown> {
    return {
      getattr: (path: string, cb: Cb) => {
        if (path === '/') return cb(0, { mode: S_IFDIR | 0o755, nlink: 2, size: 4096, mtime: new Date(), atime: new Date(), ctime: new Date() });
        const f = this.files.get(path.slice(1));
        if (!f) return cb(-E.ENOENT);
        const t = new Date(1_700_000_000_000);
        return cb(0, { mode: S_IFREG | 0o644, nlink: 1, size: f.length, blocks: Math.ceil(f.length / 512), blksize: 4096, mtime: t, atime: t, ctime: t });
      },
      readdir: (_path: string, cb: Cb) => cb(0, [...this.files.keys()]),
      statfs: (_path: string, cb: Cb) => cb(0, { bsize: 4096, frsize: 4096, blocks: 1000, bfree: 500, bavail: 500, files: this.files.size, ffree: 100, favail: 100, fsid: 0, flag: 0, namemax: 255 }),
      open: (path: string, flags: number, cb: Cb) => {
        if (!this.files.has(path.slice(1))) return cb(-E.ENOENT);
        // The binding asks for atomic O_TRUNC: the truncation is the handler's.
        if (flags & 0o1000) this.files.set(path.slice(1), Buffer.alloc(0));
        const fd = this.#nextFd++;
        this.handles.set(fd, path.slice(1));
        return cb(0, fd);
      },
      create: (path: string, _mode: number, cb: Cb) => {
        this.files.set(path.slice(1), Buffer.alloc(0));
        const fd = this.#nextFd++;
        this.handles.set(fd, path.slice(1));
        cb(0, fd);
      },
      release: (_path: string, fd: number, cb: Cb) => cb(this.handles.delete(fd) ? 0 : -E.EBADF),
      flush: (_path: string, _fd: number, cb: Cb) => cb(0),
      fsync: (_path: string, _datasync: number, _fd: number, cb: Cb) => cb(0),
      read: (_path: string, fd: number, buf: Buffer, len: number, pos: number, cb: CountCb) => {
        const name = this.handles.get(fd);
        if (name === undefined) return cb(-E.EBADF);
        if (name === this.throwOn) throw new Error(`MemFs: reads of ${name} throw`);
        this.stats.reads++;
        this.stats.maxRead = Math.max(this.stats.maxRead, len);
        if (name === this.holdReadsOf) {
          this.held.push({ buf, cb });
          return undefined;
        }
        return this.#later(() => {
          const f = this.files.get(name) ?? Buffer.alloc(0);
          const n = Math.max(0, Math.min(len, f.length - pos));
          f.copy(buf, 0, pos, pos + n);
          cb(n);
        });
      },
      write: (_path: string, fd: number, buf: Buffer, len: number, pos: number, cb: CountCb) => {
        const name = this.handles.get(fd);
        if (name === undefined) return cb(-E.EBADF);
        this.stats.writes++;
        this.stats.maxWrite = Math.max(this.stats.maxWrite, len);
        return this.#later(() => {
          let f = this.files.get(name) ?? Buffer.alloc(0);
          if (pos + len > f.length) {
            const g = Buffer.alloc(pos + len);
            f.copy(g);
            f = g;
          }
          buf.copy(f, pos, 0, len);
          this.files.set(name, f);
          cb(len);
        });
      },
      truncate: (path: string, size: number, cb: Cb) => this.#resize(path.slice(1), size, cb),
      ftruncate: (_path: string, fd: number, size: number, cb: Cb) => this.#resize(this.handles.get(fd) ?? '', size, cb),
      unlink: (path: string, cb: Cb) => cb(this.files.delete(path.slice(1)) ? 0 : -E.ENOENT),
      rename: (from: string, to: string, cb: Cb) => {
        const f = this.files.get(from.slice(1));
        if (!f) return cb(-E.ENOENT);
        this.files.delete(from.slice(1));
        this.files.set(to.slice(1), f);
        for (const [fd, n] of this.handles) if (n === from.slice(1)) this.handles.set(fd, to.slice(1));
        return cb(0);
      },
      chmod: (_path: string, _mode: number, cb: Cb) => cb(0),
      utimens: (_path: string, _a: number, _m: number, cb: Cb) => cb(0),
    };
  }

  #resize(name: string, size: number, cb: Cb): void {
    const f = this.files.get(name);
    if (!f) return cb(-E.ENOENT);
    const g = Buffer.alloc(size);
    f.copy(g, 0, 0, Math.min(size, f.length));
    this.files.set(name, g);
    return cb(0);
  }
}
