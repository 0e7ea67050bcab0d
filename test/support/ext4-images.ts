import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { FileHandle, open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ByteRange, VolumeReader } from '../../src/reclaim/planner';

const execFileP = promisify(execFile);

/** Runs a command, failing with its stderr; codes in okCodes also count as success. */
export async function sh(cmd: string, args: string[], okCodes: number[] = [0]): Promise<string> {
  try {
    const { stdout } = await execFileP(cmd, args, { maxBuffer: 256 << 20 });
    return stdout;
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string };
    if (typeof err.code === 'number' && okCodes.includes(err.code)) return err.stdout ?? '';
    throw new Error(`${cmd} ${args.join(' ')} failed (${String(err.code)}): ${err.stderr ?? String(e)}`);
  }
}

/** A VolumeReader over a file or an in-memory buffer; counts reads. */
export class TestVolume implements VolumeReader {
  reads = 0;
  constructor(private readonly data: Buffer) {}
  get sizeBytes(): number {
    return this.data.length;
  }
  async read(offset: number, len: number): Promise<Buffer> {
    this.reads++;
    const out = Buffer.alloc(len);
    if (offset < this.data.length) this.data.copy(out, 0, offset, Math.min(this.data.length, offset + len));
    return out;
  }
}

/** A VolumeReader over an image file of any size, read on demand; counts reads. */
export class FileVolume implements VolumeReader {
  reads = 0;
  private constructor(
    private readonly fh: FileHandle,
    readonly sizeBytes: number,
  ) {}

  static async open(path: string): Promise<FileVolume> {
    const fh = await open(path, 'r');
    return new FileVolume(fh, (await fh.stat()).size);
  }

  async read(offset: number, len: number): Promise<Buffer> {
    this.reads++;
    const out = Buffer.alloc(len);
    if (offset < this.sizeBytes) await this.fh.read(out, 0, Math.min(len, this.sizeBytes - offset), offset);
    return out;
  }

  close(): Promise<void> {
    return this.fh.close();
  }
}

export async function loadImage(path: string): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const st = await fh.stat();
    const buf = Buffer.alloc(st.size);
    await fh.read(buf, 0, st.size, 0);
    return buf;
  } finally {
    await fh.close();
  }
}

/** A temp dir with a mount point; cleanup() unmounts whatever is still mounted and removes it. */
export class Workdir {
  readonly dir = mkdtempSync(join(tmpdir(), 'thinvol-ext4-'));
  readonly mnt = join(this.dir, 'mnt');
  #mounted = false;

  constructor() {
    mkdirSync(this.mnt);
  }

  path(name: string): string {
    return join(this.dir, name);
  }

  async mkfs(name: string, sizeMiB: number, args: string[]): Promise<string> {
    const img = this.path(name);
    await sh('truncate', ['-s', `${sizeMiB}M`, img]);
    await sh('mkfs.ext4', ['-q', '-F', ...args, img]);
    return img;
  }

  async mount(img: string, opts: string): Promise<void> {
    await sh('mount', ['-t', 'ext4', '-o', `loop,${opts}`, img, this.mnt]);
    this.#mounted = true;
  }

  async umount(): Promise<void> {
    if (!this.#mounted) return;
    await sh('umount', [this.mnt]);
    this.#mounted = false;
  }

  async cleanup(): Promise<void> {
    try {
      await this.umount();
    } finally {
      rmSync(this.dir, { recursive: true, force: true });
    }
  }
}

export interface BlockRange { start: number; count: number }

/** Free blocks per dumpe2fs (home bitmaps of the image as it is on disk). */
export async function dumpe2fsFree(img: string): Promise<BlockRange[]> {
  const out = await sh('dumpe2fs', [img]);
  const runs: BlockRange[] = [];
  for (const line of out.split('\n')) {
    const m = /^\s+Free blocks: (.*)$/.exec(line);
    if (m === null || m[1] === undefined) continue;
    for (const part of m[1].split(',')) {
      const t = part.trim();
      if (t === '') continue;
      const [a, b] = t.split('-').map(Number);
      if (a === undefined || Number.isNaN(a)) continue;
      runs.push({ start: a, count: (b ?? a) - a + 1 });
    }
  }
  return mergeBlockRanges(runs);
}

/**
 * Free blocks of a sparse copy of img after e2fsck: with journalOnly, the journal replay
 * alone (the committed view, exactly); otherwise a full forced check, which also frees
 * blocks no inode owns (orphans, interrupted truncates).
 */
export async function fsckFree(w: Workdir, img: string, journalOnly: boolean): Promise<BlockRange[]> {
  const copy = w.path('truth.img');
  await sh('cp', ['--sparse=always', img, copy]);
  try {
    await sh('e2fsck', journalOnly ? ['-y', '-E', 'journal_only', copy] : ['-fy', copy], [0, 1, 2]);
    return await dumpe2fsFree(copy);
  } finally {
    rmSync(copy, { force: true });
  }
}

export function mergeBlockRanges(runs: BlockRange[]): BlockRange[] {
  const sorted = [...runs].sort((a, b) => a.start - b.start);
  const out: BlockRange[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last !== undefined && r.start <= last.start + last.count) last.count = Math.max(last.count, r.start + r.count - last.start);
    else out.push({ ...r });
  }
  return out;
}

export function byteRangesToBlocks(ranges: ByteRange[], blockSize: number): BlockRange[] {
  return ranges.map((r) => ({ start: r.offset / blockSize, count: r.len / blockSize }));
}

export function countBlocks(runs: BlockRange[]): number {
  return runs.reduce((n, r) => n + r.count, 0);
}

/** Blocks in a but not in b (both merged). */
export function blocksNotIn(a: BlockRange[], b: BlockRange[]): BlockRange[] {
  const out: BlockRange[] = [];
  let j = 0;
  for (const r of a) {
    let s = r.start;
    const e = r.start + r.count;
    while (j < b.length && (b[j] as BlockRange).start + (b[j] as BlockRange).count <= s) j++;
    let k = j;
    while (s < e && k < b.length && (b[k] as BlockRange).start < e) {
      const x = b[k] as BlockRange;
      if (x.start > s) out.push({ start: s, count: x.start - s });
      s = Math.max(s, x.start + x.count);
      k++;
    }
    if (s < e) out.push({ start: s, count: e - s });
  }
  return out;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export interface GroupInfo { group: number; first: number; last: number; blockBitmap: number; freeBlocks: number }

/** Per-group layout and recorded free count per dumpe2fs (home metadata, no journal replay). */
export async function dumpe2fsGroups(img: string): Promise<GroupInfo[]> {
  const out = await sh('dumpe2fs', [img]);
  const groups: GroupInfo[] = [];
  let cur: Partial<GroupInfo> | undefined;
  for (const line of out.split('\n')) {
    const g = /^Group (\d+): \(Blocks (\d+)-(\d+)/.exec(line);
    if (g !== null) {
      cur = { group: Number(g[1]), first: Number(g[2]), last: Number(g[3]) };
      continue;
    }
    if (cur === undefined) continue;
    const bb = /^\s+Block bitmap at (\d+)/.exec(line);
    if (bb !== null) cur.blockBitmap = Number(bb[1]);
    const fb = /^\s+(\d+) free blocks,/.exec(line);
    if (fb !== null) {
      cur.freeBlocks = Number(fb[1]);
      if (cur.blockBitmap === undefined) throw new Error(`dumpe2fs: group ${String(cur.group)} has no block bitmap line`);
      groups.push(cur as GroupInfo);
      cur = undefined;
    }
  }
  return groups;
}

/** Physical blocks holding the data of a file, per debugfs. */
export async function fileBlocks(img: string, path: string): Promise<number[]> {
  const out = await sh('debugfs', ['-R', `blocks ${path}`, img]);
  return out.split(/\s+/).filter((t) => t !== '').map(Number);
}
