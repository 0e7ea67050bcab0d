import type { BackendSet } from '../backend/backend-set';
import type { Placement, Pool, VRange } from '../pool/pool';
import { BLOCK, type Extent, type Holder, type VolumeRecord } from '../store/records';
import { FsError } from '../util/errors';
import { PendingChanges } from './pending-changes';
import { RangeLock } from './range-lock';
import { StreamAllocator } from './stream-allocator';

const ZERO = Buffer.alloc(1024 * 1024);

/** Uncommitted map entries a volume may hold before a write waits for a commit: bounds memory. */
export const MAX_PENDING_ENTRIES = 16_384;

function isZero(buf: Buffer, start: number, end: number): boolean {
  for (let s = start; s < end; s += ZERO.length) {
    const e = Math.min(end, s + ZERO.length);
    if (!buf.subarray(s, e).equals(ZERO.subarray(0, e - s))) return false;
  }
  return true;
}

const floorB = (n: number): number => Math.floor(n / BLOCK) * BLOCK;
const ceilB = (n: number): number => Math.ceil(n / BLOCK) * BLOCK;

export interface DiscardOptions {
  /** Checked under the range lock: false = give nothing back (something changed since the caller decided). */
  stillValid?: () => boolean;
  /** Count the bytes as given back by reclaim. */
  reclaim?: boolean;
}

/**
 * The data path of one volume, and the only door to its blocks: translates byte ranges through
 * the map, reads holes as zeros, allocates for writes into holes (skipping all-zero blocks),
 * discards ranges, and orders everything on a range lock. Map changes are batched in memory
 * and committed by commit(), the durability point (fsync, the daemon's periodic commit, a
 * hold): backends are flushed first, so a durable map entry never points at data that is not.
 * Offsets reaching here were checked by the caller.
 */
export class VolumeIo {
  readonly lock = new RangeLock();
  readonly #alloc: StreamAllocator;
  readonly #pending = new PendingChanges();
  #commits: Promise<void> = Promise.resolve();
  /** The committed size, read once: only this volume's writer changes it while it is open here (see refresh). */
  #committedSize: number | undefined;
  /** Told of every accepted write, under its range lock, before the data moves. */
  onWrite: ((start: number, end: number) => void) | undefined;
  /**
   * Where the guest keeps its journal (ext4) or log (XFS), sorted, as reclaim last found it:
   * new space for writes wholly inside may come from the pool's journal reserve, so that a
   * full guest can still commit the deletes that free space.
   */
  journal: VRange[] = [];

  constructor(private readonly pool: Pool, private readonly backends: BackendSet, private readonly holder: Holder, readonly id: number) {
    this.#alloc = new StreamAllocator(pool, holder, id);
  }

  record(): VolumeRecord {
    const v = this.pool.volumeById(this.id);
    if (!v) throw new FsError('ENOENT', `volume ${this.id} no longer exists`);
    return v;
  }

  /** The size as this data path sees it (a write past the end grows it before the commit). */
  size(): number {
    this.#committedSize ??= this.record().sizeBytes;
    return this.#pending.sizeBytes ?? this.#committedSize;
  }

  /** Forgets the cached size (a new open: the volume may have been resized from outside meanwhile). */
  refresh(): void {
    if (this.#pending.sizeBytes === undefined) this.#committedSize = undefined;
  }

  /** Mapped bytes discarded that the next commit gives back. */
  get freeingBytes(): number {
    return this.#pending.freeingBytes;
  }

  /**
   * True when map changes wait for a commit: what the periodic commit is for. Overwrites of
   * mapped blocks change only the mtime; they need no commit (and no flush) until fsync.
   */
  get dirty(): boolean {
    return this.#pending.mapChanged;
  }

  /** Mapped extents of [start, end), clipped, in order, including what is not committed yet. */
  mapped(start: number, end: number): Extent[] {
    return this.#pending.view(this.pool.map.lookup(this.id, start, end - start), start, end);
  }

  async read(buf: Buffer, len: number, offset: number): Promise<number> {
    const size = this.size();
    if (offset >= size) return 0;
    const n = Math.min(len, size - offset);
    const release = await this.lock.acquire(floorB(offset), ceilB(offset + n), false);
    try {
      let pos = offset;
      const reads: Promise<void>[] = [];
      for (const e of this.mapped(offset, offset + n)) {
        if (e.vstart > pos) buf.fill(0, pos - offset, e.vstart - offset);
        reads.push(this.backends.get(e.backend).then((b) => b.read(buf, e.vstart - offset, e.len, e.boff)));
        pos = e.vstart + e.len;
      }
      if (pos < offset + n) buf.fill(0, pos - offset, n);
      await Promise.all(reads);
      return n;
    } finally {
      release();
    }
  }

  async write(buf: Buffer, offset: number): Promise<number> {
    const len = buf.length;
    const a = floorB(offset);
    const b = ceilB(offset + len);
    const release = await this.lock.acquire(a, b, true);
    try {
      this.onWrite?.(a, b);
      const io: Promise<void>[] = [];
      let pos = a;
      const holes: [number, number][] = [];
      for (const e of this.mapped(a, b)) {
        if (e.vstart > pos) holes.push([pos, e.vstart]);
        const s = Math.max(e.vstart, offset);
        const t = Math.min(e.vstart + e.len, offset + len);
        if (t > s) io.push(this.backends.get(e.backend).then((be) => be.write(buf, s - offset, t - s, e.boff + (s - e.vstart))));
        pos = e.vstart + e.len;
      }
      if (pos < b) holes.push([pos, b]);
      const placed: Placement[] = [];
      try {
        for (const [s, t] of holes.flatMap(([s, t]) => this.#nonZeroRuns(buf, offset, s, t))) placed.push(...this.#place(s, t));
        for (const p of placed) io.push(this.#writePlacement(buf, offset, p));
        await Promise.all(io);
      } catch (err) {
        await Promise.allSettled(io);
        this.#pending.release(placed.map((p) => p.run));
        throw err;
      }
      for (const p of placed) this.#pending.insert(p);
      if (offset + len > this.size()) this.#pending.setSize(offset + len);
      this.#pending.touch(Date.now());
    } finally {
      release();
    }
    if (this.#pending.size > MAX_PENDING_ENTRIES) await this.commit();
    return len;
  }

  /**
   * Unmaps the whole blocks of [start, end) (discard, reclaim, shrink): they read as zeros at
   * once and their space is freed by the next commit. Returns the bytes that were mapped.
   */
  async discard(start: number, end: number, opts: DiscardOptions = {}): Promise<number> {
    const a = ceilB(start);
    const b = floorB(end);
    if (b <= a) return 0;
    const release = await this.lock.acquire(a, b, true);
    try {
      if (opts.stillValid && !opts.stillValid()) return 0;
      const bytes = this.mapped(a, b).reduce((n, e) => n + e.len, 0);
      if (bytes === 0) return 0;
      this.#pending.discard(a, b, bytes);
      if (opts.reclaim === true) this.#pending.addReclaimed(bytes);
      return bytes;
    } finally {
      release();
    }
  }

  /** Shrinks or grows, durably; a partial last block is zeroed past the new end so that growing later reads zeros. */
  async truncate(size: number): Promise<void> {
    const old = this.size();
    const a = floorB(Math.min(size, old));
    const release = await this.lock.acquire(a, Math.max(ceilB(old), ceilB(size)), true);
    try {
      if (size < old && size % BLOCK !== 0) {
        const tail = ceilB(size) - size;
        for (const e of this.mapped(size, size + tail)) await (await this.backends.get(e.backend)).write(ZERO, 0, e.len, e.boff);
      }
      if (size < old) this.#pending.discard(ceilB(size), ceilB(old), this.mapped(ceilB(size), ceilB(old)).reduce((n, e) => n + e.len, 0));
      this.#pending.setSize(size);
      this.#pending.touch(Date.now());
    } finally {
      release();
    }
    await this.commit();
  }

  /**
   * The durability point: every write that completed before this call, and the map entries
   * pointing at its data, are on disk when it resolves. Commits run one at a time, in order.
   */
  commit(): Promise<void> {
    const done = this.#commits.then(() => this.#commitNow());
    this.#commits = done.catch(() => undefined);
    return done;
  }

  async #commitNow(): Promise<void> {
    const layers = this.#pending.freeze();
    await this.backends.flushAll();
    if (layers.length === 0) return;
    this.pool.txn(() => {
      for (const c of layers) this.pool.commitChanges(this.holder, this.id, c);
    });
    const sized = layers.findLast((c) => c.sizeBytes !== undefined);
    if (sized) this.#committedSize = sized.sizeBytes;
    this.#pending.committed(layers.length);
  }

  /** Gives back the reserved space (a backend it lies on is being drained). */
  dropReservation(): void {
    this.#alloc.onDraining();
  }

  /** Gives back the reserved space not yet written (the pool is full: another volume may need it). */
  returnReserve(): void {
    this.#alloc.returnReservation();
  }

  /** Called when the last writer closes: commits, then hands back what is reserved. */
  async close(): Promise<void> {
    await this.commit();
    this.#alloc.returnReservation();
  }

  /** New space for [s, t): ordinary allocation, else (the pool full) the journal reserve if the range lies in the guest's journal. */
  #place(s: number, t: number): Placement[] {
    try {
      return this.#alloc.place(s, t - s);
    } catch (err) {
      if (!(err instanceof FsError) || err.code !== 'ENOSPC' || !this.journal.some((r) => r.start <= s && t <= r.end)) throw err;
      return this.#alloc.placeFromReserve(s, t - s);
    }
  }

  /** Block-aligned runs inside hole [s, t) whose data (the part of the write in them) is not all zero. */
  #nonZeroRuns(buf: Buffer, offset: number, s: number, t: number): [number, number][] {
    const runs: [number, number][] = [];
    for (let blk = s; blk < t; blk += BLOCK) {
      const ds = Math.max(blk, offset) - offset;
      const de = Math.min(blk + BLOCK, offset + buf.length) - offset;
      if (de <= ds || isZero(buf, ds, de)) continue;
      const last = runs[runs.length - 1];
      if (last && last[1] === blk) last[1] = blk + BLOCK;
      else runs.push([blk, blk + BLOCK]);
    }
    return runs;
  }

  /** Writes a whole newly allocated piece: the caller's bytes, zeros around them. */
  async #writePlacement(buf: Buffer, offset: number, p: Placement): Promise<void> {
    const be = await this.backends.get(p.run.backend);
    const { vstart } = p;
    const len = p.run.len;
    if (vstart >= offset && vstart + len <= offset + buf.length) {
      await be.write(buf, vstart - offset, len, p.run.start);
      return;
    }
    const tmp = Buffer.alloc(len);
    const s = Math.max(vstart, offset);
    const t = Math.min(vstart + len, offset + buf.length);
    buf.copy(tmp, s - vstart, s - offset, t - offset);
    await be.write(tmp, 0, len, p.run.start);
  }
}
