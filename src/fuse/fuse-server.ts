import Fuse from 'fuse-native';
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { getSystemErrorMap, promisify } from 'node:util';
import { loadFuse3, type Fuse3Config, type Fuse3InitInfo, type Fuse3Module, type Fuse3Session } from '../native/fuse3';
import { findMount } from '../daemon/mountpoint';
import { logger } from '../util/log';
import { LowLevelAdapter } from './lowlevel-adapter';

const debug = logger('fuse');

/** Which library serves a mount: libfuse3 through our own addon, or libfuse 2.9 through fuse-native. */
export type FuseBinding = 'libfuse3' | 'libfuse2';
export const FUSE_BINDINGS: readonly FuseBinding[] = ['libfuse3', 'libfuse2'];

/** One mounted FUSE session serving a handler object (FuseOps.ops()), whichever the binding. */
export interface FuseServer {
  readonly binding: FuseBinding;
  /** A line for the log: the binding, its library version, what it negotiated. */
  describe(): string;
  /**
   * Settles once the kernel side is gone (unmounted or aborted) and no request can arrive any
   * more. fuse-native tells nothing of the kind: for libfuse2 it never settles, and the daemon
   * watches the mount table instead.
   */
  readonly ended: Promise<void>;
  /**
   * Once the kernel side ended: waits up to graceMs for the handlers' outstanding answers,
   * answers EIO to the rest (nobody waits for them any more), and frees the session. A
   * handler that answers later is ignored. Does nothing for libfuse2.
   */
  close(graceMs?: number): Promise<void>;
}

export interface ServeOptions {
  /** The mount's source as /proc/mounts shows it: the pool directory. */
  fsname: string;
  /** libfuse3 only: let the kernel cache writes (FUSE_CAP_WRITEBACK_CACHE); see fuse3Config. */
  writebackCache?: boolean;
}

/** A libfuse 3 option value: backslash and comma escaped (fuse_opt's own escaping). */
export function escapeOption(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/,/g, '\\,');
}

/** Request size: 1 MiB is libfuse 3.14's receive buffer, and the kernel's default max_pages_limit. */
const MAX_IO = 1 << 20;
const READ_AHEAD_KB = 1024;
const WAIT_STEP_MS = 10;

/** Mount options for libfuse3; fuse-native's defaults, plus what it could not ask for. */
export function fuse3Args(fsname: string): string[] {
  return ['thinvol', '-o', ['allow_other', 'default_permissions', `fsname=${escapeOption(fsname)}`, 'subtype=thinvol', `max_read=${MAX_IO}`].join(',')];
}

/**
 * What INIT negotiates. Async direct I/O lets a direct-I/O loop device have many requests in
 * flight. 512 background requests (the kernel's default is 12), more than a loop device's queue
 * holds (128), so that writes waiting in the daemon for space (a full pool) never fill the
 * kernel's background slots: with 64, 64 waiting data writes stopped the loop worker in
 * fuse_get_req and the guest's journal writes behind them never arrived. One of
 * libfuse 3's defaults is dropped: AUTO_INVAL_DATA (every commit changes mtime, and the page
 * cache of a volume would be dropped each time). ATOMIC_O_TRUNC stays: open handles O_TRUNC.
 * writebackCache: buffered writes (a loop device without --direct-io) stay in the kernel's page
 * cache and reach the daemon later, in batches, instead of one synchronous request per write;
 * fsync (and close) still sends them all before the daemon's commit.
 */
export function fuse3Config(m: Fuse3Module, writebackCache = false): Fuse3Config {
  return {
    maxWrite: MAX_IO, maxRead: MAX_IO, maxReadahead: MAX_IO, maxBackground: 512, congestionThreshold: 384,
    wantCaps: m.CAP.ASYNC_DIO | m.CAP.ATOMIC_O_TRUNC | (writebackCache ? m.CAP.WRITEBACK_CACHE : 0),
    dropCaps: m.CAP.AUTO_INVAL_DATA | (writebackCache ? 0 : m.CAP.WRITEBACK_CACHE),
  };
}

class Fuse3Server implements FuseServer {
  readonly binding = 'libfuse3';
  readonly ended: Promise<void>;
  init: Fuse3InitInfo | undefined;
  /** The mount's st_dev ("0:N"), to recognise our own entry in the mount table. */
  dev = '';
  #closed = false;

  constructor(private readonly m: Fuse3Module, private readonly mnt: string, readonly adapter: LowLevelAdapter, private readonly session: Fuse3Session) {
    this.ended = adapter.ended.then((rc) => { if (rc !== 0) debug('libfuse3 session loop ended with %d', rc); });
  }

  describe(): string {
    const i = this.init;
    const dio = i && (i.want & this.m.CAP.ASYNC_DIO) !== 0 ? ', async_dio' : '';
    const wb = i && (i.want & this.m.CAP.WRITEBACK_CACHE) !== 0 ? ', writeback_cache' : '';
    return `libfuse3 ${this.m.libfuseVersion} (low-level, thinvol addon${i ? `; protocol 7.${i.protoMinor}, max_write ${i.maxWrite}${dio}${wb}, max_background ${i.maxBackground}` : ''})`;
  }

  async close(graceMs = 10_000): Promise<void> {
    if (this.#closed) return;
    await this.ended;
    const deadline = Date.now() + graceMs;
    while (this.session.pending() > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, WAIT_STEP_MS));
    const left = this.session.pending();
    if (left > 0) console.error(`thinvol: ${left} FUSE request(s) still unanswered ${graceMs} ms after the unmount; answered EIO`);
    const rc = this.session.destroy();
    if (rc !== 0) throw new Error(`fuse3 destroy: errno ${rc}`);
    this.#closed = true;
    // An aborted connection (not an unmount) leaves our entry behind, answering ENOTCONN.
    const entry = await findMount(this.mnt);
    if (this.dev !== '' && entry?.dev === this.dev) {
      await promisify(execFile)('fusermount', ['-uz', this.mnt]).catch((err: unknown) => console.error(`thinvol: could not remove the dead mount at ${this.mnt}: ${String(err)}`));
    }
  }
}

class FuseNativeServer implements FuseServer {
  readonly binding = 'libfuse2';
  readonly ended = new Promise<void>(() => undefined);
  describe(): string {
    return 'libfuse2 (fuse-native, high-level libfuse 2.9)';
  }
  async close(): Promise<void> {
    // fuse-native has no teardown to wait for; its thread goes with the process.
  }
}

/**
 * Mounts with libfuse3 and starts serving `handlers`. Also raises the mount's read-ahead to
 * 1 MiB (the kernel starts a FUSE mount at 128 KiB whatever INIT says), so that sequential
 * buffered reads arrive as 1 MiB requests.
 */
export async function serveLibfuse3(mnt: string, handlers: Record<string, unknown>, opts: ServeOptions): Promise<FuseServer> {
  const loaded = loadFuse3();
  if (!('module' in loaded)) throw new Error(`the libfuse3 binding is not usable: ${loaded.reason}`);
  const m = loaded.module;
  let server: Fuse3Server | undefined;
  const adapter = new LowLevelAdapter(handlers, m, {
    onInit: (info) => {
      if (server) server.init = info;
      debug('libfuse3 INIT: protocol %d.%d, max_write %d, want 0x%s', info.protoMajor, info.protoMinor, info.maxWrite, info.want.toString(16));
    },
  });
  const s = m.mount(mnt, fuse3Args(opts.fsname), fuse3Config(m, opts.writebackCache === true), adapter.onRequest);
  if (typeof s === 'number') {
    const code = getSystemErrorMap().get(-s)?.[0] ?? `errno ${s}`;
    throw new Error(`libfuse3 could not mount ${mnt}: ${code}${s === 22 ? ' (options refused)' : ''}; libfuse's own message, if any, is above`);
  }
  adapter.attach(s);
  server = new Fuse3Server(m, mnt, adapter, s);
  const entry = await findMount(mnt);
  if (entry?.fstype === 'fuse.thinvol') {
    server.dev = entry.dev;
    const file = `/sys/class/bdi/${entry.dev}/read_ahead_kb`;
    await fs.writeFile(file, `${READ_AHEAD_KB}\n`).catch((err: unknown) => debug('cannot raise %s: %s', file, String(err)));
  }
  return server;
}

/** Mounts with fuse-native (libfuse 2.9). */
export async function serveLibfuse2(mnt: string, handlers: Record<string, unknown>, opts: ServeOptions): Promise<FuseServer> {
  const fuse = new Fuse(mnt, handlers, {
    // fsname smuggles libfuse 2 options fuse-native has no field for; a comma in the pool path
    // would smuggle more, so refuse it. hard_remove: without it libfuse renames an open file to
    // .fuse_hidden* on unlink instead of asking (the rename fails with EINVAL, not EBUSY).
    // atomic_o_trunc: open(O_TRUNC) reaches open, which knows the caller's own handle.
    fsname: `${refuseComma(opts.fsname)},big_writes,max_write=131072,hard_remove,atomic_o_trunc,max_background=64,congestion_threshold=48`,
    subtype: 'thinvol',
    allowOther: true,
    defaultPermissions: true,
    // Block storage hangs rather than fails when a backend is slow, like a hard NFS mount:
    // an ETIMEDOUT reaching a guest filesystem would make it abort its journal.
    timeout: false,
  });
  // fuse-native turns on libfuse's own debug output whenever DEBUG contains '*'.
  const saved = process.env.DEBUG;
  delete process.env.DEBUG;
  try {
    await new Promise<void>((resolve, reject) => fuse.mount((err) => (err ? reject(err) : resolve())));
  } finally {
    if (saved !== undefined) process.env.DEBUG = saved;
  }
  return new FuseNativeServer();
}

function refuseComma(fsname: string): string {
  if (fsname.includes(',')) throw new Error(`libfuse2 cannot mount a pool whose path has a comma (${fsname}); use --fuse libfuse3`);
  return fsname;
}

export function serve(binding: FuseBinding, mnt: string, handlers: Record<string, unknown>, opts: ServeOptions): Promise<FuseServer> {
  return binding === 'libfuse3' ? serveLibfuse3(mnt, handlers, opts) : serveLibfuse2(mnt, handlers, opts);
}

/**
 * The binding to use: the one asked for, except that libfuse3 falls back to libfuse2 when its
 * part of the addon is not built or not loadable; `warning` then says so in one line.
 */
export function chooseBinding(wanted: FuseBinding): { binding: FuseBinding; warning?: string } {
  if (wanted === 'libfuse2') return { binding: 'libfuse2' };
  const loaded = loadFuse3();
  if ('module' in loaded) return { binding: 'libfuse3' };
  return { binding: 'libfuse2', warning: `the libfuse3 binding is not usable (${loaded.reason}); serving with libfuse2 (fuse-native) instead` };
}
