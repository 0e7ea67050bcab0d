import type { BackendSet } from '../backend/backend-set';
import type { Placement, Pool } from '../pool/pool';
import { BLOCK, type Holder, type VolumeRecord } from '../pool/records';
import { FsError } from '../util/errors';
import type { WriteHistory } from '../reclaim/write-history';
import { RangeLock } from './range-lock';
import { StreamAllocator } from './stream-allocator';

const ZERO = Buffer.alloc(1024 * 1024);

function isZero(buf: Buffer, start: number, end: number): boolean {
  for (let s = start; s < end; s += ZERO.length) {
    const e = Math.min(end, s + ZERO.length);
    if (!buf.subarray(s, e).equals(ZERO.subarray(0, e - s))) return false;
  }
  return true;
}

const floorB = (n: number): number => Math.floor(n / BLOCK) * BLOCK;
const ceilB = (n: number): number => Math.ceil(n / BLOCK) * BLOCK;

/**
 * The data path of one volume: translates byte ranges through the map, reads holes as zeros,
 * allocates for writes into holes (skipping all-zero blocks), and orders everything on a
 * range lock. Offsets reaching here were checked by the FUSE adapter.
 */
export class VolumeIo {
  readonly lock = new RangeLock();
  readonly #alloc: StreamAllocator;
  #written = false;
  /** Set while reclaim runs for this volume: every accepted write is recorded in it. */
  history: WriteHistory | undefined;

  constructor(private readonly pool: Pool, private readonly backends: BackendSet, private readonly holder: Holder, readonly id: number) {
    this.#alloc = new StreamAllocator(pool, holder, id);
  }

  record(): VolumeRecord {
    const v = this.pool.volumeById(this.id);
    if (!v) throw new FsError('ENOENT', `volume ${this.id} no longer exists`);
    return v;
  }

  async read(buf: Buffer, len: number, offset: number): Promise<number> {
    const size = this.record().sizeBytes;
    if (offset >= size) return 0;
    const n = Math.min(len, size - offset);
    const release = await this.lock.acquire(floorB(offset), ceilB(offset + n), false);
    try {
      let pos = offset;
      const reads: Promise<void>[] = [];
      for (const e of this.pool.map.lookup(this.id, offset, n)) {
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
      this.#written = true;
      this.history?.record(a, b);
      const io: Promise<void>[] = [];
      let pos = a;
      const holes: [number, number][] = [];
      for (const e of this.pool.map.lookup(this.id, a, b - a)) {
        if (e.vstart > pos) holes.push([pos, e.vstart]);
        const s = Math.max(e.vstart, offset);
        const t = Math.min(e.vstart + e.len, offset + len);
        if (t > s) io.push(this.backends.get(e.backend).then((be) => be.write(buf, s - offset, t - s, e.boff + (s - e.vstart))));
        pos = e.vstart + e.len;
      }
      if (pos < b) holes.push([pos, b]);
      const fills = holes.flatMap(([s, t]) => this.#nonZeroRuns(buf, offset, s, t));
      const placed = this.#place(fills);
      try {
        for (const p of placed) io.push(this.#writePlacement(buf, offset, p));
        await Promise.all(io);
      } catch (err) {
        this.pool.unreserve(this.holder, placed.map((p) => p.run));
        throw err;
      }
      if (placed.length > 0) this.pool.commit(this.holder, this.id, placed);
      if (offset + len > this.record().sizeBytes) this.pool.resizeVolume(this.id, offset + len);
      return len;
    } finally {
      release();
    }
  }

  /** Shrinks or grows; a partial last block is zeroed past the new end so that growing later reads zeros. */
  async truncate(size: number): Promise<void> {
    const old = this.record().sizeBytes;
    const a = floorB(Math.min(size, old));
    const release = await this.lock.acquire(a, Math.max(ceilB(old), ceilB(size)), true);
    try {
      if (size < old && size % BLOCK !== 0) {
        const tail = ceilB(size) - size;
        for (const e of this.pool.map.lookup(this.id, size, tail)) {
          await (await this.backends.get(e.backend)).write(ZERO, 0, e.len, e.boff);
        }
      }
      this.pool.resizeVolume(this.id, size);
    } finally {
      release();
    }
  }

  async fsync(): Promise<void> {
    await this.backends.flushAll();
    await this.pool.store.sync();
  }

  /** Gives back the stream reservation (a backend it lies on is being drained). */
  dropReservation(): void {
    this.#alloc.returnReservation();
  }

  /** Called when the last handle closes. */
  close(): void {
    this.#alloc.returnReservation();
    if (this.#written) {
      this.#written = false;
      this.pool.updateVolume(this.id, { mtimeMs: Date.now() });
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

  #place(runs: [number, number][]): Placement[] {
    const placed: Placement[] = [];
    try {
      for (const [s, t] of runs) placed.push(...this.#alloc.place(s, t - s));
    } catch (err) {
      this.pool.unreserve(this.holder, placed.map((p) => p.run));
      throw err;
    }
    return placed;
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
