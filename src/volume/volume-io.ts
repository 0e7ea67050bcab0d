import type { BackendSet } from '../backend/backend-set';
import type { Placement, Pool, VRange } from '../pool/pool';
import { BLOCK, MAX_VOLUME_BYTES, type Extent, type Holder, type SnapshotRecord, type VolumeRecord } from '../store/records';
import { FsError } from '../util/errors';
import { PendingChanges } from './pending-changes';
import { RangeLock } from './range-lock';
import { StreamAllocator } from './stream-allocator';

const ZERO = Buffer.alloc(1024 * 1024);

/** Uncommitted map entries a volume may hold before a write waits for a commit: bounds memory. */
export const MAX_PENDING_ENTRIES = 16_384;

/** Map entries per commit transaction: ~20 ms of B-tree work and synced commit on the daemon's thread. */
const COMMIT_PART_ENTRIES = 512;

const yieldToRequests = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * Whether buf[start, end) is all zero bytes. Written data is rarely zero and then rarely at
 * both ends of a block: those two bytes answer without the compare, whose two Buffer views per
 * block cost ~40 us per MiB written into holes (the JavaScript thread's time, measured).
 */
function isZero(buf: Buffer, start: number, end: number): boolean {
  if (start < end && (buf[start] !== 0 || buf[end - 1] !== 0)) return false;
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
  /** Commits asked for and not finished. */
  #committing = 0;
  /** When the last commit started (Date.now()). */
  lastCommitAt = Date.now();
  /** The committed size, read once: only this volume's writer changes it while it is open here (see refresh). */
  #committedSize: number | undefined;
  /**
   * Told of every accepted write, under its range lock, before the data moves: the 4 KiB-aligned
   * span it touches and the data itself (valid during the call only).
   */
  onWrite: ((start: number, end: number, data: Buffer, offset: number) => void) | undefined;
  /**
   * Set while this process holds the volume's write claim: then only this process moves its top
   * layer (a snapshot through it), so the layer chain may be kept. A reader elsewhere looks it
   * up each time: the writer may snapshot meanwhile.
   */
  writerHere = false;
  /** The image when `id` names a snapshot: read-only, its size fixed. */
  readonly image: SnapshotRecord | undefined;
  #chain: number[] | undefined;
  /**
   * Where the guest keeps its journal (ext4) or log (XFS), sorted, as reclaim last found it:
   * new space for writes wholly inside may come from the pool's journal reserve, so that a
   * full guest can still commit the deletes that free space.
   */
  journal: VRange[] = [];

  /** `id`: a volume's, or a snapshot's (read-only). */
  constructor(private readonly pool: Pool, private readonly backends: BackendSet, private readonly holder: Holder, readonly id: number) {
    this.#alloc = new StreamAllocator(pool, holder, id);
    this.image = pool.volumeById(id) ? undefined : pool.snapshotById(id);
  }

  record(): VolumeRecord {
    const v = this.pool.volumeById(this.id);
    if (!v) throw new FsError('ENOENT', `volume ${this.id} no longer exists`);
    return v;
  }

  /** The size as this data path sees it (a write past the end grows it before the commit). */
  size(): number {
    if (this.image) return this.image.sizeBytes;
    this.#committedSize ??= this.record().sizeBytes;
    return this.#pending.sizeBytes ?? this.#committedSize;
  }

  /** Forgets the cached size (a new open: the volume may have been resized from outside meanwhile). */
  refresh(): void {
    if (this.#pending.sizeBytes === undefined) this.#committedSize = undefined;
    this.#chain = undefined;
  }

  /** The layers this view reads, top first. Layers below only ever merge away, so a kept chain stays right for them. */
  #layers(): number[] {
    if (!this.writerHere && !this.image) return this.pool.chainOf(this.id);
    this.#chain ??= this.pool.chainOf(this.id);
    return this.#chain;
  }

  /** Whether this view reads map layer `layer` (looked up afresh: a layout change asks). */
  reads(layer: number): boolean {
    return this.pool.chainOf(this.id).includes(layer);
  }

  #refuseReadOnly(): void {
    if (this.image) throw new FsError('EROFS', `snapshot ${this.image.name} is read-only`);
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

  /** Map entries written since the last commit started. */
  get pendingEntries(): number {
    return this.#pending.size;
  }

  /** A commit is under way or queued. */
  get committing(): boolean {
    return this.#committing > 0;
  }

  /** Mapped extents of [start, end), clipped, in order, including what is not committed yet; those of layers below the top are marked shared. */
  mapped(start: number, end: number): Extent[] {
    return this.#pending.view(this.pool.layers.resolve(this.#layers(), start, end), start, end);
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
    this.#refuseReadOnly();
    const len = buf.length;
    const a = floorB(offset);
    const b = ceilB(offset + len);
    const release = await this.lock.acquire(a, b, true);
    try {
      this.onWrite?.(a, b, buf, offset);
      const io: Promise<void>[] = [];
      let pos = a;
      const holes: [number, number][] = [];
      const shared: Extent[] = [];
      for (const e of this.mapped(a, b)) {
        if (e.vstart > pos) holes.push([pos, e.vstart]);
        pos = e.vstart + e.len;
        if (e.shared) {
          shared.push(e);
          continue;
        }
        const s = Math.max(e.vstart, offset);
        const t = Math.min(e.vstart + e.len, offset + len);
        if (t > s) io.push(this.backends.get(e.backend).then((be) => be.write(buf, s - offset, t - s, e.boff + (s - e.vstart))));
      }
      if (pos < b) holes.push([pos, b]);
      const placed: Placement[] = [];
      try {
        for (const [s, t] of holes.flatMap(([s, t]) => this.#nonZeroRuns(buf, offset, s, t))) placed.push(...this.#place(s, t));
        for (const p of placed) io.push(this.#writePlacement(buf, offset, p));
        for (const e of shared) io.push(this.#copyOnWrite(buf, offset, e, placed));
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
   * A write over blocks a snapshot shares: they go to new space (the old blocks stay as they
   * are, mapped by the snapshot); the parts of the first and last block the write does not
   * cover are copied from the old ones first. Zero blocks are written too: skipping them would
   * show the old data.
   */
  async #copyOnWrite(buf: Buffer, offset: number, e: Extent, placed: Placement[]): Promise<void> {
    const end = e.vstart + e.len;
    let data = buf;
    let dataAt = offset;
    if (e.vstart < offset || end > offset + buf.length) {
      data = Buffer.allocUnsafe(e.len);
      dataAt = e.vstart;
      await (await this.backends.get(e.backend)).read(data, 0, e.len, e.boff);
      const s = Math.max(e.vstart, offset);
      const t = Math.min(end, offset + buf.length);
      buf.copy(data, s - e.vstart, s - offset, t - offset);
    }
    // A guest journal a snapshot shares is copied on write too: that may take from the reserve.
    const pieces = this.#place(e.vstart, end);
    placed.push(...pieces);
    await Promise.all(pieces.map((p) => this.#writePlacement(data, dataAt, p)));
  }

  /**
   * Unmaps the whole blocks of [start, end) (discard, reclaim, shrink): they read as zeros at
   * once and their space is freed by the next commit. Returns the bytes that were mapped.
   */
  async discard(start: number, end: number, opts: DiscardOptions = {}): Promise<number> {
    this.#refuseReadOnly();
    const a = ceilB(start);
    const b = floorB(end);
    if (b <= a) return 0;
    const release = await this.lock.acquire(a, b, true);
    try {
      if (opts.stillValid && !opts.stillValid()) return 0;
      const mapped = this.mapped(a, b);
      if (mapped.length === 0) return 0;
      // Blocks a snapshot shares stay allocated: the commit hides them from this volume only.
      const bytes = mapped.reduce((n, e) => n + (e.shared ? 0 : e.len), 0);
      this.#pending.discard(a, b, bytes);
      if (opts.reclaim === true) this.#pending.addReclaimed(bytes);
      return bytes;
    } finally {
      release();
    }
  }

  /** Shrinks or grows, durably; a partial last block is zeroed past the new end so that growing later reads zeros. */
  async truncate(size: number): Promise<void> {
    this.#refuseReadOnly();
    const old = this.size();
    const a = floorB(Math.min(size, old));
    const release = await this.lock.acquire(a, Math.max(ceilB(old), ceilB(size)), true);
    try {
      if (size < old && size % BLOCK !== 0) {
        const tail = ceilB(size) - size;
        const placed: Placement[] = [];
        for (const e of this.mapped(floorB(size), ceilB(size))) {
          if (e.shared) await this.#copyOnWrite(ZERO.subarray(0, tail), size, e, placed);
          else await (await this.backends.get(e.backend)).write(ZERO, 0, tail, e.boff + (size - e.vstart));
        }
        for (const p of placed) this.#pending.insert(p);
      }
      if (size < old) this.#pending.discard(ceilB(size), ceilB(old), this.mapped(ceilB(size), ceilB(old)).reduce((n, e) => n + (e.shared ? 0 : e.len), 0));
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
    return this.#inOrder(() => this.#commitNow(() => undefined));
  }

  /** Runs a commit after those asked for before it. */
  #inOrder<T>(fn: () => Promise<T>): Promise<T> {
    this.#committing++;
    const done = this.#commits.then(fn).finally(() => { this.#committing--; });
    this.#commits = done.then(() => undefined, () => undefined);
    return done;
  }

  /** Commits what is pending, and runs `atEnd` (a metadata change) in the transaction of the last part. */
  async #commitNow<T>(atEnd: () => T): Promise<T> {
    this.lastCommitAt = Date.now();
    this.#pending.freeze();
    await this.backends.flushAll();
    // A transaction runs on this thread, its synced commit included, and every request waits
    // meanwhile: a second of scattered first writes in one transaction stalled writes ~250 ms.
    // In parts, requests are served between them; a crash between parts keeps a subset of
    // writes no fsync covered yet, as a disk's volatile cache may.
    for (let c = this.#pending.next(COMMIT_PART_ENTRIES); c; c = this.#pending.next(COMMIT_PART_ENTRIES)) {
      const part = c;
      const end = this.pool.txn(() => {
        this.pool.commitChanges(this.holder, this.id, part);
        return this.#pending.isLast(part) ? { result: atEnd() } : undefined;
      });
      if (part.sizeBytes !== undefined) this.#committedSize = part.sizeBytes;
      this.#pending.committedPart(part);
      if (end) return end.result;
      await yieldToRequests();
    }
    return atEnd();
  }

  /**
   * Freezes the volume as snapshot `name` once the writes in flight are done and committed (new
   * ones wait meanwhile), in the transaction of the commit's last part. The backends are flushed
   * first (and much uncommitted committed) while writes go on, so that the flush and commit under
   * the lock, which stop the volume's I/O, cover little.
   */
  async takeSnapshot(name: string): Promise<SnapshotRecord> {
    this.#refuseReadOnly();
    if (this.#pending.size >= COMMIT_PART_ENTRIES) await this.commit();
    else await this.backends.flushAll();
    const release = await this.lock.acquire(0, MAX_VOLUME_BYTES, true);
    try {
      const snap = await this.#inOrder(() => this.#commitNow(() => this.pool.createSnapshot(this.id, name, false)));
      this.#chain = undefined;
      return snap;
    } finally {
      release();
    }
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
