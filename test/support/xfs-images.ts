import { execFile } from 'node:child_process';
import { closeSync, existsSync, fstatSync, mkdirSync, mkdtempSync, openSync, readSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { ByteRange, VolumeReader } from '../../src/reclaim/planner';

const execFileP = promisify(execFile);

/** Runs a command and returns its stdout; fails with its stderr on a non-zero exit. */
export async function sh(cmd: string, args: string[], env: Record<string, string> = {}): Promise<string> {
  try {
    const { stdout } = await execFileP(cmd, args, { env: { ...process.env, ...env }, maxBuffer: 64 << 20 });
    return stdout;
  } catch (err: unknown) {
    const e = err as { stderr?: string; message?: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${(e.stderr ?? e.message ?? '').trim()}`);
  }
}

function toolOnPath(name: string): boolean {
  return (process.env.PATH ?? '').split(':').some((d) => existsSync(join(d, name)));
}

/** Image tests need root (loop mounts) and xfsprogs. */
export const canMakeXfs = toolOnPath('mkfs.xfs') && toolOnPath('xfs_db');
export const canMountXfs = canMakeXfs && process.getuid?.() === 0 && existsSync('/dev/loop-control');

/** mkfs.xfs refuses logs under 64 MiB unless it believes it runs under fstests. */
export const SMALL_LOG_ENV = { TEST_DEV: '/dev/null', TEST_DIR: '/tmp', QA_CHECK_FS: '1' };

export interface XfsGeometry {
  blockSize: number;
  agBlocks: number;
  agCount: number;
}

/** A temp directory of images and mount points; `cleanup()` unmounts what is left and removes it all. */
export class XfsWorkdir {
  readonly dir = mkdtempSync(join(tmpdir(), 'thinvol-xfs-'));
  readonly #mounted = new Set<string>();

  path(name: string): string {
    return join(this.dir, name);
  }

  async mkfs(name: string, sizeMiB: number, args: string[] = [], env: Record<string, string> = {}): Promise<string> {
    const img = this.path(name);
    await sh('truncate', ['-s', `${sizeMiB}M`, img]);
    await sh('mkfs.xfs', ['-q', '-f', ...args, img], env);
    return img;
  }

  /** Loop-mounts `img`, runs `fn`, and always unmounts (the loop device goes with it: autoclear). */
  async mounted<T>(img: string, fn: (mnt: string) => Promise<T>, options = ''): Promise<T> {
    const mnt = `${img}.mnt`;
    mkdirSync(mnt, { recursive: true });
    await sh('mount', ['-o', options ? `loop,${options}` : 'loop', img, mnt]);
    this.#mounted.add(mnt);
    try {
      return await fn(mnt);
    } finally {
      await this.#umount(mnt);
    }
  }

  async #umount(mnt: string): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        await sh('umount', [mnt]);
        this.#mounted.delete(mnt);
        return;
      } catch (err: unknown) {
        if (attempt >= 10) throw err;
        await new Promise((r) => setTimeout(r, 300));
      }
    }
  }

  /** Copies an image (also while it is mounted: call after `sync`). */
  async copy(img: string, name: string): Promise<string> {
    const dst = this.path(name);
    await sh('cp', ['--sparse=always', img, dst]);
    return dst;
  }

  async cleanup(): Promise<void> {
    for (const mnt of [...this.#mounted]) await this.#umount(mnt).catch(() => undefined);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export async function xfsGeometry(img: string): Promise<XfsGeometry> {
  const out = await sh('xfs_db', ['-r', '-c', 'sb 0', '-c', 'print blocksize agblocks agcount', img]);
  const field = (n: string): number => Number(/(\d+)/.exec(out.split('\n').find((l) => l.startsWith(`${n} =`)) ?? '')?.[1]);
  return { blockSize: field('blocksize'), agBlocks: field('agblocks'), agCount: field('agcount') };
}

/** An AGF field as xfs_db prints it. */
export async function agfField(img: string, agno: number, name: string): Promise<number> {
  const out = await sh('xfs_db', ['-r', '-c', `agf ${agno}`, '-c', `print ${name}`, img]);
  return Number(/=\s*(\d+)/.exec(out)?.[1]);
}

/** Merges sorted-or-not ranges into sorted, non-overlapping, non-adjacent ones. */
export function mergeRanges(ranges: ByteRange[]): ByteRange[] {
  const out: ByteRange[] = [];
  for (const r of [...ranges].sort((a, b) => a.offset - b.offset)) {
    const last = out[out.length - 1];
    if (last && r.offset <= last.offset + last.len) last.len = Math.max(last.len, r.offset + r.len - last.offset);
    else out.push({ ...r });
  }
  return out;
}

export function totalBytes(ranges: ByteRange[]): number {
  return ranges.reduce((a, r) => a + r.len, 0);
}

/** Bytes of `inner` that `outer` does not cover (both sorted and merged). */
export function uncoveredBytes(inner: ByteRange[], outer: ByteRange[]): number {
  let missing = 0;
  let j = 0;
  for (const r of inner) {
    let at = r.offset;
    const end = r.offset + r.len;
    while (at < end) {
      while (j < outer.length && (outer[j] as ByteRange).offset + (outer[j] as ByteRange).len <= at) j++;
      const o = outer[j];
      if (!o || o.offset >= end) {
        missing += end - at;
        break;
      }
      if (o.offset > at) missing += o.offset - at;
      at = Math.min(end, o.offset + o.len);
    }
  }
  return missing;
}

/**
 * The free set by the filesystem's own tools: `xfs_db freesp -d` (bnobt extents plus the AGFL
 * blocks it counts as free) minus the AGFL entries, so exactly the bnobt's free extents.
 * Run on an unmounted image whose log is clean.
 */
export async function xfsDbFree(img: string): Promise<ByteRange[]> {
  const geo = await xfsGeometry(img);
  const out = await sh('xfs_db', ['-r', '-c', 'freesp -d', img]);
  const agfl = new Set<number>();
  for (let ag = 0; ag < geo.agCount; ag++) {
    const first = await agfField(img, ag, 'flfirst');
    const count = await agfField(img, ag, 'flcount');
    const list = await sh('xfs_db', ['-r', '-c', `agfl ${ag}`, '-c', 'print bno', img]);
    const slots = new Map<number, number>();
    for (const m of list.matchAll(/(\d+):(\d+)/g)) slots.set(Number(m[1]), Number(m[2]));
    const size = Number(/bno\[0-(\d+)\]/.exec(list)?.[1]) + 1;
    for (let i = 0; i < count; i++) {
      const bno = slots.get((first + i) % size);
      if (bno !== undefined) agfl.add(ag * geo.agBlocks + bno);
    }
  }
  const ranges: ByteRange[] = [];
  for (const line of out.split('\n')) {
    const m = /^\s*(\d+)\s+(\d+)\s+(\d+)\s*$/.exec(line);
    if (!m) continue;
    const linear = Number(m[1]) * geo.agBlocks + Number(m[2]);
    const len = Number(m[3]);
    if (len === 1 && agfl.has(linear)) continue;
    ranges.push({ offset: linear * geo.blockSize, len: len * geo.blockSize });
  }
  return mergeRanges(ranges);
}

/**
 * Ground truth for a snapshot taken while mounted: a copy replayed by the kernel (mount and
 * unmount), checked clean by `xfs_repair -n`, then read with xfs_db.
 */
export async function replayedTruth(work: XfsWorkdir, snapshot: string): Promise<{ free: ByteRange[]; bnoLevels: number[] }> {
  const copy = await work.copy(snapshot, `${snapshot.split('/').pop() ?? 'img'}.truth`);
  await work.mounted(copy, async () => undefined, 'nouuid');
  await sh('xfs_repair', ['-n', copy]);
  const free = await xfsDbFree(copy);
  const { agCount } = await xfsGeometry(copy);
  const bnoLevels: number[] = [];
  for (let ag = 0; ag < agCount; ag++) bnoLevels.push(await agfField(copy, ag, 'bnolevel'));
  rmSync(copy, { force: true });
  return { free, bnoLevels };
}

/** A volume backed by an image file; counts the reads the planner issues. */
export class FileVolume implements VolumeReader {
  readonly sizeBytes: number;
  reads = 0;
  readonly #fd: number;

  constructor(path: string) {
    this.#fd = openSync(path, 'r');
    this.sizeBytes = fstatSync(this.#fd).size;
  }

  async read(offset: number, len: number): Promise<Buffer> {
    this.reads++;
    const buf = Buffer.alloc(len);
    if (offset < this.sizeBytes) readSync(this.#fd, buf, 0, Math.min(len, this.sizeBytes - offset), offset);
    return buf;
  }

  close(): void {
    closeSync(this.#fd);
  }
}

/** A volume held in memory (sparse: only the chunks written exist). */
export class MemoryVolume implements VolumeReader {
  constructor(readonly sizeBytes: number, readonly fill: (offset: number, out: Buffer) => void) {}

  async read(offset: number, len: number): Promise<Buffer> {
    const out = Buffer.alloc(len);
    this.fill(offset, out);
    return out;
  }
}
