import { constants } from 'node:os';
import type { Fuse3Constants, Fuse3InitInfo, OnRequest, ReplySink } from '../native/fuse3';
import { initInfo } from '../native/fuse3';

/**
 * Turns libfuse3 low-level requests (node ids) into calls of the path-based handler object that
 * fuse-native also serves (FuseOps.ops()), and sends the replies: one FUSE adapter, two bindings.
 * The handler API is fuse-native's: callbacks with a negative errno (or 0), except read and write,
 * which call back with the byte count or a negative errno.
 *
 * The file system is flat (thinvol's mount: one directory, one file per volume), so a node id
 * stands for a name in the root; the root is node 1.
 */

const ROOT = 1;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const E = constants.errno;
/** fuse-native passes "leave unchanged" as (uid_t)-1. */
const KEEP_ID = 0xffffffff;
const RENAME_NOREPLACE = 1;

type Handler = (...args: unknown[]) => void;

/** What a stat from a handler may hold (fuse-native's getattr result). */
interface HandlerStat {
  mode?: number; uid?: number; gid?: number; size?: number; nlink?: number; blocks?: number; blksize?: number;
  atime?: Date | number; mtime?: Date | number; ctime?: Date | number;
}

interface Inode { readonly ino: number; name: string; named: boolean; nlookup: number }

/**
 * Node ids: one per volume name, made when the name is first seen (lookup, readdir, create),
 * kept across renames, never reused. The kernel's lookup count keeps an unlinked node alive
 * until it forgets it; a named node stays (the same name keeps its node id).
 */
export class InodeTable {
  readonly #byIno = new Map<number, Inode>();
  readonly #byName = new Map<string, Inode>();
  #next = ROOT + 1;

  /** The path a node id stands for now; undefined if it is unknown or no longer has a name. */
  path(ino: number): string | undefined {
    if (ino === ROOT) return '/';
    const i = this.#byIno.get(ino);
    return i?.named ? `/${i.name}` : undefined;
  }

  /** The path a node id had last, for operations on an open handle (the handle is what counts). */
  lastPath(ino: number): string {
    if (ino === ROOT) return '/';
    const i = this.#byIno.get(ino);
    return i ? `/${i.name}` : '';
  }

  nodeFor(name: string): Inode {
    let i = this.#byName.get(name);
    if (!i) {
      i = { ino: this.#next++, name, named: true, nlookup: 0 };
      this.#byName.set(name, i);
      this.#byIno.set(i.ino, i);
    }
    return i;
  }

  /** A lookup (or create) answered with this name: the kernel holds one more reference. */
  looked(name: string): Inode {
    const i = this.nodeFor(name);
    i.nlookup++;
    return i;
  }

  forget(ino: number, n: number): void {
    const i = this.#byIno.get(ino);
    if (!i) return;
    i.nlookup = Math.max(0, i.nlookup - n);
    if (i.nlookup === 0 && !i.named) this.#byIno.delete(ino);
  }

  /** The name is gone (unlinked, or a lookup found nothing there). */
  unlinked(name: string): void {
    const i = this.#byName.get(name);
    if (!i) return;
    this.#byName.delete(name);
    i.named = false;
    if (i.nlookup === 0) this.#byIno.delete(i.ino);
  }

  renamed(from: string, to: string): void {
    const i = this.#byName.get(from);
    this.unlinked(to);
    if (!i) return;
    this.#byName.delete(from);
    i.name = to;
    this.#byName.set(to, i);
  }

  /** Node ids known (named or still referenced by the kernel). */
  get size(): number {
    return this.#byIno.size;
  }

  lookups(ino: number): number {
    return this.#byIno.get(ino)?.nlookup ?? 0;
  }
}

export interface AdapterOptions {
  /** Seconds the kernel may cache a name's node id / a node's attributes (libfuse 2's defaults: 1). */
  entryTimeout?: number;
  attrTimeout?: number;
  /** Where a line about a misbehaving handler goes (default console.error). */
  log?: (line: string) => void;
  onInit?: (info: Fuse3InitInfo) => void;
}

/** An errno from what a handler called back with: 0 for success, else positive. */
function errnoOf(err: unknown): number {
  if (err === 0 || err === null || err === undefined) return 0;
  if (typeof err === 'number' && Number.isInteger(err) && err !== 0) return Math.abs(err);
  return E.EIO;
}

function msOf(t: Date | number | undefined): number {
  if (t instanceof Date) return t.getTime();
  return typeof t === 'number' ? t : 0;
}

type Req = (id: number, ino: number, fh: number, off: number, size: number, flags: number, mode: number,
  name: string | undefined, arg: Buffer | Float64Array | string | undefined) => void;

export class LowLevelAdapter {
  readonly inodes = new InodeTable();
  /** Settles with the session loop's result once the kernel side ended (OP_ENDED). */
  readonly ended: Promise<number>;
  #resolveEnded!: (rc: number) => void;
  #session: ReplySink | undefined;
  readonly #byOp: (Req | undefined)[] = [];
  /** Open directory handles: the listing taken at offset 0, served to the following readdirs. */
  readonly #dirs = new Map<number, string[] | undefined>();
  #nextDir = 1;
  readonly #entryTimeout: number;
  readonly #attrTimeout: number;
  readonly #log: (line: string) => void;

  constructor(private readonly handlers: Record<string, unknown>, private readonly c: Fuse3Constants, private readonly opts: AdapterOptions = {}) {
    this.ended = new Promise((resolve) => { this.#resolveEnded = resolve; });
    this.#entryTimeout = opts.entryTimeout ?? 1;
    this.#attrTimeout = opts.attrTimeout ?? 1;
    this.#log = opts.log ?? ((line) => console.error(line));
    const { OP } = c;
    const table: [number, Req][] = [
      [OP.INIT, (_id, _ino, _fh, _off, _size, _flags, _mode, _name, arg) => this.#init(arg)],
      [OP.ENDED, (_id, _ino, _fh, _off, _size, flags) => this.#resolveEnded(flags)],
      [OP.FORGET, (_id, ino, _fh, _off, size) => this.inodes.forget(ino, size)],
      [OP.LOOKUP, (id, parent, _fh, _off, _size, _flags, _mode, name) => this.#lookup(id, parent, name ?? '')],
      [OP.GETATTR, (id, ino) => this.#getattr(id, ino)],
      [OP.SETATTR, (id, ino, fh, _off, size, flags, _mode, _name, arg) => this.#setattr(id, ino, fh, size, flags, arg as Float64Array)],
      [OP.OPEN, (id, ino, _fh, _off, _size, flags) => this.#open(id, ino, flags)],
      [OP.CREATE, (id, parent, _fh, _off, _size, flags, mode, name) => this.#create(id, parent, name ?? '', mode, flags)],
      [OP.READ, (id, ino, fh, off, size) => this.#read(id, ino, fh, off, size)],
      [OP.WRITE, (id, ino, fh, off, size, _flags, _mode, _name, arg) => this.#write(id, ino, fh, off, size, arg as Buffer)],
      [OP.FLUSH, (id, ino, fh) => this.#simple(id, 'flush', [this.inodes.lastPath(ino), fh], E.ENOSYS)],
      [OP.RELEASE, (id, ino, fh) => this.#simple(id, 'release', [this.inodes.lastPath(ino), fh], 0)],
      [OP.FSYNC, (id, ino, fh, _off, _size, flags) => this.#simple(id, 'fsync', [this.inodes.lastPath(ino), flags, fh], E.ENOSYS)],
      [OP.OPENDIR, (id, ino) => this.#opendir(id, ino)],
      [OP.READDIR, (id, _ino, fh, off) => this.#readdir(id, fh, off)],
      [OP.RELEASEDIR, (id, _ino, fh) => { this.#dirs.delete(fh); this.#reply().replyErr(id, 0); }],
      [OP.STATFS, (id) => this.#statfs(id)],
      [OP.UNLINK, (id, parent, _fh, _off, _size, _flags, _mode, name) => this.#unlink(id, parent, name ?? '')],
      [OP.RENAME, (id, parent, newParent, _off, _size, flags, _mode, name, arg) => this.#rename(id, parent, name ?? '', newParent, String(arg), flags)],
      [OP.FALLOCATE, (id, ino, fh, off, size, flags) => this.#simple(id, 'fallocate', [this.inodes.lastPath(ino), fh, flags, off, size], E.ENOSYS)],
      [OP.LSEEK, (id, ino, fh, off, _size, flags) => this.#lseek(id, ino, fh, off, flags)],
    ];
    for (const [op, fn] of table) this.#byOp[op] = fn;
  }

  /** Requests are queued in C until the JavaScript turn after mount() returns, so attach right after it. */
  attach(session: ReplySink): void {
    this.#session = session;
  }

  /** The function C calls for every request. */
  readonly onRequest: OnRequest = (op, id, ino, fh, off, size, flags, mode, name, arg) => {
    const fn = this.#byOp[op];
    if (!fn) {
      if (id !== 0) this.#reply().replyErr(id, E.ENOSYS);
      return;
    }
    try {
      fn(id, ino, fh, off, size, flags, mode, name, arg);
    } catch (err) {
      // A bug in the adapter itself: answer (EIO) rather than leave the kernel waiting.
      this.#log(`thinvol: fuse3: op ${op} failed: ${err instanceof Error ? err.stack : String(err)}`);
      if (id !== 0) this.#reply().replyErr(id, E.EIO);
    }
  };

  #reply(): ReplySink {
    if (!this.#session) throw new Error('LowLevelAdapter: a request arrived before attach()');
    return this.#session;
  }

  /**
   * Calls handler `name` with `args` and a callback; the callback runs `done` once (a second
   * call is logged and ignored). A missing handler, or one that throws, calls back with
   * -ENOSYS or -EIO.
   */
  #call(name: string, args: unknown[], done: (...res: unknown[]) => void): void {
    let called = false;
    const cb = (...res: unknown[]): void => {
      if (called) {
        this.#log(`thinvol: fuse3: the ${name} handler called back twice; ignored`);
        return;
      }
      called = true;
      done(...res);
    };
    const fn = this.handlers[name] as Handler | undefined;
    if (typeof fn !== 'function') {
      cb(-E.ENOSYS);
      return;
    }
    try {
      fn.call(this.handlers, ...args, cb);
    } catch (err) {
      this.#log(`thinvol: fuse3: the ${name} handler threw: ${err instanceof Error ? err.stack : String(err)}`);
      if (!called) cb(-E.EIO);
    }
  }

  /** #call as a promise of [errno, value]. */
  #invoke(name: string, args: unknown[]): Promise<[number, unknown]> {
    return new Promise((resolve) => this.#call(name, args, (err, value) => resolve([errnoOf(err), value])));
  }

  /** Ops answered with an errno only; `missing` answers them when the handler does not exist. */
  #simple(id: number, name: string, args: unknown[], missing: number): void {
    if (typeof this.handlers[name] !== 'function') {
      this.#reply().replyErr(id, missing);
      return;
    }
    this.#call(name, args, (err) => this.#reply().replyErr(id, errnoOf(err)));
  }

  #stat(ino: number, st: HandlerStat): Float64Array {
    const { STAT } = this.c;
    const a = new Float64Array(STAT.length);
    a[STAT.ino] = ino;
    a[STAT.mode] = st.mode ?? 0;
    a[STAT.nlink] = st.nlink ?? 1;
    a[STAT.uid] = st.uid ?? 0;
    a[STAT.gid] = st.gid ?? 0;
    a[STAT.size] = st.size ?? 0;
    a[STAT.blocks] = st.blocks ?? 0;
    a[STAT.blksize] = st.blksize ?? 4096;
    a[STAT.atimeMs] = msOf(st.atime);
    a[STAT.mtimeMs] = msOf(st.mtime);
    a[STAT.ctimeMs] = msOf(st.ctime);
    return a;
  }

  #init(arg: unknown): void {
    if (arg instanceof Float64Array) this.opts.onInit?.(initInfo(arg));
    if (typeof this.handlers.init === 'function') this.#call('init', [], () => undefined);
  }

  #lookup(id: number, parent: number, name: string): void {
    if (parent !== ROOT) {
      this.#reply().replyErr(id, E.ENOENT);
      return;
    }
    this.#call('getattr', [`/${name}`], (err, st) => {
      const e = errnoOf(err);
      if (e !== 0) {
        if (e === E.ENOENT) this.inodes.unlinked(name);
        this.#reply().replyErr(id, e);
        return;
      }
      const node = this.inodes.looked(name);
      if (this.#reply().replyEntry(id, this.#stat(node.ino, st as HandlerStat), this.#entryTimeout, this.#attrTimeout) !== 0) {
        // The kernel did not take the entry (the request was interrupted): no reference to count.
        this.inodes.forget(node.ino, 1);
      }
    });
  }

  #getattr(id: number, ino: number): void {
    const path = this.inodes.path(ino);
    if (path === undefined) {
      this.#reply().replyErr(id, E.ENOENT);
      return;
    }
    this.#call('getattr', [path], (err, st) => {
      const e = errnoOf(err);
      if (e !== 0) this.#reply().replyErr(id, e);
      else this.#reply().replyAttr(id, this.#stat(ino, st as HandlerStat), this.#attrTimeout);
    });
  }

  /** In libfuse 2's order: mode, owner, size, times; then the new attributes. */
  #setattr(id: number, ino: number, fh: number, size: number, toSet: number, a: Float64Array): void {
    const path = this.inodes.path(ino);
    if (path === undefined) {
      this.#reply().replyErr(id, E.ENOENT);
      return;
    }
    const S = this.c.SETATTR;
    const [mode = 0, uid = 0, gid = 0, atimeMs = 0, mtimeMs = 0] = a;
    const steps = async (): Promise<number> => {
      let e: number;
      if (toSet & S.MODE && (e = (await this.#invoke('chmod', [path, mode]))[0]) !== 0) return e;
      if (toSet & (S.UID | S.GID)) {
        e = (await this.#invoke('chown', [path, toSet & S.UID ? uid : KEEP_ID, toSet & S.GID ? gid : KEEP_ID]))[0];
        if (e !== 0) return e;
      }
      if (toSet & S.SIZE) {
        const byHandle = fh >= 0 && typeof this.handlers.ftruncate === 'function';
        e = (await this.#invoke(byHandle ? 'ftruncate' : 'truncate', byHandle ? [path, fh, size] : [path, size]))[0];
        if (e !== 0) return e;
      }
      if (toSet & (S.ATIME | S.MTIME | S.ATIME_NOW | S.MTIME_NOW)) {
        const now = Date.now();
        let cur: HandlerStat = {};
        if ((toSet & (S.ATIME | S.ATIME_NOW)) === 0 || (toSet & (S.MTIME | S.MTIME_NOW)) === 0) {
          const [ge, st] = await this.#invoke('getattr', [path]);
          if (ge !== 0) return ge;
          cur = st as HandlerStat;
        }
        const at = toSet & S.ATIME_NOW ? now : toSet & S.ATIME ? atimeMs : msOf(cur.atime);
        const mt = toSet & S.MTIME_NOW ? now : toSet & S.MTIME ? mtimeMs : msOf(cur.mtime);
        if ((e = (await this.#invoke('utimens', [path, at, mt]))[0]) !== 0) return e;
      }
      return 0;
    };
    steps().then((e) => {
      if (e !== 0) {
        this.#reply().replyErr(id, e);
        return;
      }
      this.#call('getattr', [path], (err, st) => {
        const ge = errnoOf(err);
        if (ge !== 0) this.#reply().replyErr(id, ge);
        else this.#reply().replyAttr(id, this.#stat(ino, st as HandlerStat), this.#attrTimeout);
      });
    }, (err: unknown) => {
      this.#log(`thinvol: fuse3: setattr failed: ${String(err)}`);
      this.#reply().replyErr(id, E.EIO);
    });
  }

  #open(id: number, ino: number, flags: number): void {
    const path = this.inodes.path(ino);
    if (path === undefined) {
      this.#reply().replyErr(id, E.ENOENT);
      return;
    }
    if (ino === ROOT) {
      this.#reply().replyErr(id, E.EISDIR);
      return;
    }
    this.#call('open', [path, flags], (err, fd) => {
      const e = errnoOf(err);
      if (e !== 0) this.#reply().replyErr(id, e);
      else if (typeof fd !== 'number' || !Number.isSafeInteger(fd) || fd < 0) this.#reply().replyErr(id, E.EIO);
      else if (this.#reply().replyOpen(id, fd, 0) !== 0) this.#call('release', [path, fd], () => undefined);
    });
  }

  #create(id: number, parent: number, name: string, mode: number, _flags: number): void {
    if (parent !== ROOT) {
      this.#reply().replyErr(id, E.ENOENT);
      return;
    }
    const path = `/${name}`;
    this.#call('create', [path, mode], (err, fd) => {
      const e = errnoOf(err);
      if (e !== 0) {
        this.#reply().replyErr(id, e);
        return;
      }
      if (typeof fd !== 'number' || !Number.isSafeInteger(fd) || fd < 0) {
        this.#reply().replyErr(id, E.EIO);
        return;
      }
      this.#call('getattr', [path], (gerr, st) => {
        const ge = errnoOf(gerr);
        if (ge !== 0) {
          // Created and opened but not answerable: close the handle again, as libfuse 2 does.
          this.#call('release', [path, fd], () => this.#reply().replyErr(id, ge));
          return;
        }
        const node = this.inodes.looked(name);
        if (this.#reply().replyCreate(id, this.#stat(node.ino, st as HandlerStat), this.#entryTimeout, this.#attrTimeout, fd, 0) !== 0) {
          this.inodes.forget(node.ino, 1);
          this.#call('release', [path, fd], () => undefined);
        }
      });
    });
  }

  /**
   * The reply Buffer is JavaScript's own (not memory C frees), so a handler that fills it late,
   * after a reply or a session teardown, writes into memory that is still its.
   */
  #read(id: number, ino: number, fh: number, off: number, size: number): void {
    const buf = Buffer.allocUnsafe(size);
    this.#call('read', [this.inodes.lastPath(ino), fh, buf, size, off], (n) => {
      if (typeof n === 'number' && n >= 0) this.#reply().replyBuf(id, buf, Math.min(n, size));
      else this.#reply().replyErr(id, errnoOf(n));
    });
  }

  /** `buf` is the request's own copy of the data (C copied it out of libfuse's receive buffer). */
  #write(id: number, ino: number, fh: number, off: number, size: number, buf: Buffer): void {
    this.#call('write', [this.inodes.lastPath(ino), fh, buf, size, off], (n) => {
      if (typeof n === 'number' && n >= 0) this.#reply().replyWrite(id, Math.min(n, size));
      else this.#reply().replyErr(id, errnoOf(n));
    });
  }

  #opendir(id: number, ino: number): void {
    if (ino !== ROOT) {
      this.#reply().replyErr(id, this.inodes.path(ino) === undefined ? E.ENOENT : E.ENOTDIR);
      return;
    }
    const fh = this.#nextDir++;
    this.#dirs.set(fh, undefined);
    if (this.#reply().replyOpen(id, fh, 0) !== 0) this.#dirs.delete(fh);
  }

  #readdir(id: number, fh: number, off: number): void {
    const send = (list: string[]): void => {
      const a = new Float64Array(list.length * 2);
      list.forEach((name, i) => {
        const dot = i < 2;
        a[2 * i] = dot ? ROOT : this.inodes.nodeFor(name).ino;
        a[2 * i + 1] = dot ? S_IFDIR : S_IFREG;
      });
      this.#reply().replyReaddir(id, list, a);
    };
    const list = this.#dirs.get(fh);
    if (list && off > 0) {
      send(list);
      return;
    }
    this.#call('readdir', ['/'], (err, names) => {
      const e = errnoOf(err);
      if (e !== 0) {
        this.#reply().replyErr(id, e);
        return;
      }
      const valid = Array.isArray(names) ? names.filter((n): n is string => typeof n === 'string' && n !== '' && n !== '.' && n !== '..' && !n.includes('/')) : [];
      const full = ['.', '..', ...valid];
      if (this.#dirs.has(fh)) this.#dirs.set(fh, full);
      send(full);
    });
  }

  #statfs(id: number): void {
    this.#call('statfs', ['/'], (err, v) => {
      const e = errnoOf(err);
      if (e !== 0) {
        this.#reply().replyErr(id, e);
        return;
      }
      const { STATFS } = this.c;
      const s = (v ?? {}) as Partial<Record<keyof typeof STATFS, number>>;
      const a = new Float64Array(STATFS.length);
      for (const k of ['bsize', 'frsize', 'blocks', 'bfree', 'bavail', 'files', 'ffree', 'favail', 'fsid', 'flag', 'namemax'] as const) a[STATFS[k]] = s[k] ?? 0;
      this.#reply().replyStatfs(id, a);
    });
  }

  #unlink(id: number, parent: number, name: string): void {
    if (parent !== ROOT) {
      this.#reply().replyErr(id, E.ENOENT);
      return;
    }
    this.#call('unlink', [`/${name}`], (err) => {
      const e = errnoOf(err);
      if (e === 0) this.inodes.unlinked(name);
      this.#reply().replyErr(id, e);
    });
  }

  /** rename(2) flags: RENAME_NOREPLACE is checked here; RENAME_EXCHANGE and whiteouts are refused. */
  #rename(id: number, parent: number, name: string, newParent: number, newName: string, flags: number): void {
    if (parent !== ROOT || newParent !== ROOT) {
      this.#reply().replyErr(id, E.ENOENT);
      return;
    }
    if ((flags & ~RENAME_NOREPLACE) !== 0) {
      this.#reply().replyErr(id, E.EINVAL);
      return;
    }
    const go = (): void => this.#call('rename', [`/${name}`, `/${newName}`], (err) => {
      const e = errnoOf(err);
      if (e === 0) this.inodes.renamed(name, newName);
      this.#reply().replyErr(id, e);
    });
    if (!(flags & RENAME_NOREPLACE)) {
      go();
      return;
    }
    this.#call('getattr', [`/${newName}`], (err) => {
      const e = errnoOf(err);
      if (e === 0) this.#reply().replyErr(id, E.EEXIST);
      else if (e === E.ENOENT) go();
      else this.#reply().replyErr(id, e);
    });
  }

  #lseek(id: number, ino: number, fh: number, off: number, whence: number): void {
    if (typeof this.handlers.lseek !== 'function') {
      this.#reply().replyErr(id, E.ENOSYS);
      return;
    }
    this.#call('lseek', [this.inodes.lastPath(ino), fh, off, whence], (err, pos) => {
      const e = errnoOf(err);
      if (e !== 0) this.#reply().replyErr(id, e);
      else if (typeof pos !== 'number' || !Number.isSafeInteger(pos) || pos < 0) this.#reply().replyErr(id, E.EIO);
      else this.#reply().replyLseek(id, pos);
    });
  }
}
