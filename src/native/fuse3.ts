import { addonPath, requireModule } from './addon';

/**
 * The raw libfuse3 low-level binding (module thinvol_fuse3, native/fuse3.c). C packages each
 * kernel request and calls onRequest on the JavaScript thread without answering it; JavaScript
 * answers through the session's reply methods. src/fuse/lowlevel-adapter.ts is the only user.
 */

/** Request kinds (values from C). INIT, FORGET and ENDED are notifications: id 0, no reply. */
export type OpName = 'INIT' | 'ENDED' | 'FORGET' | 'LOOKUP' | 'GETATTR' | 'SETATTR' | 'OPEN' | 'CREATE' | 'READ' | 'WRITE'
  | 'FLUSH' | 'RELEASE' | 'FSYNC' | 'OPENDIR' | 'READDIR' | 'RELEASEDIR' | 'STATFS' | 'UNLINK' | 'RENAME' | 'FALLOCATE' | 'LSEEK';

/** Index of each field in the Float64Array a stat travels in; `length` is the array's length. */
export type StatLayout = Record<'ino' | 'mode' | 'nlink' | 'uid' | 'gid' | 'size' | 'blocks' | 'blksize' | 'atimeMs' | 'mtimeMs' | 'ctimeMs' | 'length', number>;
export type StatfsLayout = Record<'bsize' | 'frsize' | 'blocks' | 'bfree' | 'bavail' | 'files' | 'ffree' | 'favail' | 'fsid' | 'flag' | 'namemax' | 'length', number>;
export type SetattrBits = Record<'MODE' | 'UID' | 'GID' | 'SIZE' | 'ATIME' | 'MTIME' | 'ATIME_NOW' | 'MTIME_NOW', number>;
export type OpenFlags = Record<'DIRECT_IO' | 'KEEP_CACHE' | 'NONSEEKABLE', number>;
export type CapBits = Record<'ASYNC_READ' | 'ASYNC_DIO' | 'ATOMIC_O_TRUNC' | 'AUTO_INVAL_DATA' | 'WRITEBACK_CACHE' | 'PARALLEL_DIROPS'
  | 'SPLICE_READ' | 'SPLICE_WRITE' | 'HANDLE_KILLPRIV' | 'READDIRPLUS', number>;

/** The numbering C and TypeScript share. */
export interface Fuse3Constants {
  readonly OP: Readonly<Record<OpName, number>>;
  readonly STAT: Readonly<StatLayout>;
  readonly STATFS: Readonly<StatfsLayout>;
  readonly SETATTR: Readonly<SetattrBits>;
  readonly OPEN: Readonly<OpenFlags>;
  readonly CAP: Readonly<CapBits>;
}

/**
 * Called once per request, on the JavaScript thread. What each op fills (see native/fuse3.c):
 *   LOOKUP ino=parent,name   FORGET ino,size=nlookup   GETATTR ino,fh (-1: none)   STATFS ino
 *   SETATTR ino,fh,size,flags=to_set,arg=Float64Array[mode,uid,gid,atimeMs,mtimeMs]
 *   OPEN/OPENDIR ino,flags   CREATE ino=parent,name,mode,flags   READ ino,fh,off,size
 *   WRITE ino,fh,off,size,arg=Buffer (the request's own copy)   FLUSH/RELEASEDIR ino,fh
 *   RELEASE ino,fh,flags   FSYNC ino,fh,flags=datasync   READDIR ino,fh,off,size   UNLINK ino=parent,name
 *   RENAME ino=parent,name,fh=new parent,arg=new name,flags   FALLOCATE ino,fh,off,size=length,flags=mode
 *   LSEEK ino,fh,off,flags=whence   INIT arg=Float64Array (Fuse3InitInfo's order)   ENDED flags=loop result
 */
export type OnRequest = (op: number, id: number, ino: number, fh: number, off: number, size: number, flags: number, mode: number,
  name: string | undefined, arg: Buffer | Float64Array | string | undefined) => void;

/**
 * Each reply method answers the pending request `id` and returns 0 when it was sent, the
 * positive errno when libfuse could not send it (the kernel no longer waits for it), or -1 when
 * no request with that id is pending (answered already, or the session was destroyed).
 */
export interface ReplySink {
  replyErr(id: number, errno: number): number;
  replyEntry(id: number, stat: Float64Array, entryTimeout: number, attrTimeout: number): number;
  replyCreate(id: number, stat: Float64Array, entryTimeout: number, attrTimeout: number, fh: number, openFlags: number): number;
  replyAttr(id: number, stat: Float64Array, attrTimeout: number): number;
  replyOpen(id: number, fh: number, openFlags: number): number;
  /** The first n bytes of buf; fuse_reply_buf copies them into the kernel before returning. */
  replyBuf(id: number, buf: Buffer, n: number): number;
  replyWrite(id: number, n: number): number;
  replyStatfs(id: number, statfs: Float64Array): number;
  replyLseek(id: number, offset: number): number;
  /** The whole listing; C sends the entries from the request's offset that fit its size. */
  replyReaddir(id: number, names: string[], inoModes: Float64Array): number;
  /** Requests waiting for a reply. */
  pending(): number;
}

export interface Fuse3Session extends ReplySink {
  /**
   * After OP_ENDED was delivered: answers EIO to what is still pending, unmounts if the kernel
   * has not (lazily), frees the session. 0, or EBUSY before OP_ENDED. Idempotent.
   */
  destroy(): number;
}

export interface Fuse3Config {
  maxWrite: number;
  /** Must equal the max_read=N mount option (0 without one). */
  maxRead: number;
  maxReadahead: number;
  maxBackground: number;
  congestionThreshold: number;
  /** FUSE_CAP_* to turn on where the kernel offers them. */
  wantCaps: number;
  /** FUSE_CAP_* to turn off (libfuse turns some on by default). */
  dropCaps: number;
}

export interface Fuse3Module extends Fuse3Constants {
  /** The session, or a positive errno: EINVAL for options libfuse refused, else why the mount failed. */
  mount(mountpoint: string, args: string[], config: Fuse3Config, onRequest: OnRequest): Fuse3Session | number;
  readonly libfuseVersion: string;
}

/** What INIT negotiated, in the order of the INIT notification's Float64Array. */
export interface Fuse3InitInfo {
  protoMajor: number; protoMinor: number; capable: number; want: number; maxWrite: number; maxRead: number;
  maxReadahead: number; maxBackground: number; congestionThreshold: number;
}

export function initInfo(a: Float64Array): Fuse3InitInfo {
  const [protoMajor = 0, protoMinor = 0, capable = 0, want = 0, maxWrite = 0, maxRead = 0, maxReadahead = 0, maxBackground = 0, congestionThreshold = 0] = a;
  return { protoMajor, protoMinor, capable, want, maxWrite, maxRead, maxReadahead, maxBackground, congestionThreshold };
}

let cached: { module: Fuse3Module } | { reason: string } | undefined;

/**
 * The libfuse3 binding, or why it cannot be used: not built (no libfuse3-dev when the addon
 * was built), or not loadable (libfuse3.so.3 missing). Loaded once.
 */
export function loadFuse3(): { module: Fuse3Module } | { reason: string } {
  cached ??= tryLoad();
  return cached;
}

function tryLoad(): { module: Fuse3Module } | { reason: string } {
  const file = addonPath('thinvol_fuse3');
  let m: unknown;
  try {
    m = requireModule(file);
  } catch (err) {
    const msg = (err as Error).message;
    return { reason: /not built/.test(msg) ? `not built (was libfuse3-dev installed when the addon was built? ${file})` : msg.split('\n')[0] ?? msg };
  }
  const x = m as Partial<Fuse3Module>;
  if (typeof x.mount !== 'function' || typeof x.OP !== 'object' || typeof x.STAT !== 'object') return { reason: `out of date: run npm run build (${file})` };
  return { module: x as Fuse3Module };
}
