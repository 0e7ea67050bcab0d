import * as path from 'node:path';

/** What the native addon's first module, thinvol_native (native/addon.c, built by binding.gyp), exports. */
export interface NativeAddon {
  /** flock(2), retried on EINTR: 0, or the positive errno. Throws TypeError unless both are int32. */
  readonly flock: (fd: number, op: number) => number;
  /** getsockopt(SO_PEERCRED): [errno, pid, uid, gid], errno 0 on success. */
  readonly peerCredentials: (fd: number) => [number, number, number, number];
  readonly LOCK_SH: number;
  readonly LOCK_EX: number;
  readonly LOCK_UN: number;
  readonly LOCK_NB: number;
  /** prctl(PR_SET_IO_FLUSHER, 1) for the calling thread: 0, or the positive errno. */
  readonly setIoFlusher: () => number;
  /** prctl(PR_GET_IO_FLUSHER): 1 or 0, or the negative errno. */
  readonly ioFlusher: () => number;
  /** preadv2(RWF_NOWAIT) into buf[bufOffset, bufOffset + len): bytes read, or the negative errno (-EAGAIN: not cached). */
  readonly preadNowait: (fd: number, buf: Buffer, bufOffset: number, len: number, pos: number) => number;
}

/** This file compiles to dist/src/native/addon.js, three levels below the repo root. */
const REPO_ROOT = path.resolve(__dirname, '..', '..', '..');

/** The addon's modules: thinvol_native (always built) and thinvol_fuse3 (where libfuse3-dev was found). */
export type AddonModule = 'thinvol_native' | 'thinvol_fuse3';

/**
 * Where a module of the addon is loaded from: the directory $THINVOL_NATIVE_BUILD (relative to
 * the repo root, or absolute) if set, else build/Release, where node-gyp puts it.
 */
export function addonPath(module: AddonModule = 'thinvol_native'): string {
  const dir = process.env.THINVOL_NATIVE_BUILD || path.join('build', 'Release');
  return path.resolve(REPO_ROOT, dir, `${module}.node`);
}

let loaded: NativeAddon | undefined;

/** The addon, loaded on first use, so that importing this module never fails. */
export function nativeAddon(): NativeAddon {
  loaded ??= load(addonPath());
  return loaded;
}

function load(file: string): NativeAddon {
  const exports = requireModule(file);
  if (!isNativeAddon(exports)) {
    throw new Error(`thinvol's native addon is out of date: run npm run build (${file})`);
  }
  return exports;
}

/** require() of a module of the addon, with one clear line when it was never built. */
export function requireModule(file: string): unknown {
  try {
    return require(file) as unknown;
  } catch (err: unknown) {
    if (err instanceof Error && (err as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND') {
      throw new Error(`thinvol's native addon is not built: run npm run build (no ${file})`);
    }
    throw err;
  }
}

function isNativeAddon(x: unknown): x is NativeAddon {
  if (typeof x !== 'object' || x === null) return false;
  const m = x as Record<string, unknown>;
  return typeof m.flock === 'function' && typeof m.peerCredentials === 'function' && typeof m.setIoFlusher === 'function' && typeof m.ioFlusher === 'function' &&
    typeof m.preadNowait === 'function' &&
    ['LOCK_SH', 'LOCK_EX', 'LOCK_UN', 'LOCK_NB'].every((k) => typeof m[k] === 'number');
}
