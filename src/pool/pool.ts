import { existsSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { FsError, UserError } from '../util/errors';
import { logger } from '../util/log';
import { prepareBackend, type BackendSpec } from './backend-spec';
import { holderAlive, holderId, parseHolderId } from './holder';
import { PoolStore } from './pool-store';
import { Registry } from './registry';
import { BLOCK, type BackendRecord, type Extent, type Holder, type Run, type Superblock, type VolumeRecord } from './records';
import { SpaceMap } from './space-map';
import { VolumeMap } from './volume-map';

const debug = logger('alloc');

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$/;

export function checkVolumeName(name: string): void {
  if (!NAME_RE.test(name)) throw new UserError(`bad volume name "${name}": use 1-128 letters, digits, '.', '_', '+', '-', not starting with a symbol`);
}

/** Sizes given on the command line: whole 512-byte sectors, so loop devices see all of it. */
export function checkVolumeSize(size: number): void {
  if (!Number.isSafeInteger(size) || size <= 0 || size % 512 !== 0) {
    throw new UserError(`bad volume size ${size}: must be a positive multiple of 512 bytes`);
  }
}

function checkFileSize(size: number): void {
  if (!Number.isSafeInteger(size) || size < 0) throw new FsError('EINVAL', `bad volume size ${size}`);
}

/** A placement: which backend and where, with the piece of the volume it will hold. */
export interface Placement { vstart: number; run: Run }

/**
 * Pool metadata: superblock, backends, volumes, map and free space table, kept consistent
 * by doing every change that touches two of them in one transaction.
 */
export class Pool {
  readonly space: SpaceMap;
  readonly map: VolumeMap;
  readonly registry: Registry;

  private constructor(readonly dir: string, readonly store: PoolStore) {
    this.space = new SpaceMap(store.free);
    this.map = new VolumeMap(store.map);
    this.registry = new Registry(store);
  }

  static metaFile(dir: string): string {
    return join(dir, 'pool.lmdb');
  }

  static async create(dir: string, specs: BackendSpec[]): Promise<Pool> {
    const abs = resolve(dir);
    if (specs.length === 0) throw new UserError('pool create needs at least one --backend PATH[:SIZE]');
    if (existsSync(Pool.metaFile(abs))) throw new UserError(`pool ${abs} already exists`);
    const seen = new Set<string>();
    for (const s of specs) {
      if (seen.has(s.path)) throw new UserError(`backend ${s.path} given twice`);
      seen.add(s.path);
    }
    const prepared: { spec: BackendSpec; kind: 'file' | 'block'; capacityBytes: number }[] = [];
    for (const s of specs) prepared.push({ spec: s, ...(await prepareBackend(s)) });
    mkdirSync(join(abs, 'run'), { recursive: true });
    const pool = new Pool(abs, new PoolStore(Pool.metaFile(abs)));
    pool.store.txn(() => {
      pool.store.meta.put('super', { format: 2, createdAt: Date.now(), nextVolumeId: 1, nextBackendId: 1 });
      for (const p of prepared) pool.insertBackend(p.spec.path, p.kind, p.capacityBytes);
    });
    await pool.store.sync();
    return pool;
  }

  static open(dir: string): Pool {
    const abs = resolve(dir);
    if (!existsSync(Pool.metaFile(abs))) throw new UserError(`no pool at ${abs} (create one with: thinvol --pool ${abs} pool create --backend FILE:SIZE)`);
    mkdirSync(join(abs, 'run'), { recursive: true });
    return new Pool(abs, new PoolStore(Pool.metaFile(abs)));
  }

  get runDir(): string {
    return join(this.dir, 'run');
  }

  superblock(): Superblock {
    const sb = this.store.meta.get('super');
    if ((sb?.format as number | undefined) === 1) throw new UserError(`pool ${this.dir} was made by a development version of thinvol (format 1, before the packed map); create a new pool`);
    if (!sb || sb.format !== 2) throw new Error(`pool ${this.dir}: superblock missing or of an unknown format`);
    return sb;
  }

  close(): Promise<void> {
    return this.store.close();
  }

  // Backends

  backendList(): BackendRecord[] {
    return [...this.store.backends.getRange({}).map(({ value }) => value)];
  }

  backend(id: number): BackendRecord {
    const b = this.store.backends.get(id);
    if (!b) throw new Error(`backend ${id} missing from pool ${this.dir}`);
    return b;
  }

  /** A backend named by its id or its path. */
  findBackend(idOrPath: string): BackendRecord {
    const b = this.backendList().find((r) => r.path === resolve(idOrPath) || (/^\d+$/.test(idOrPath) && r.id === Number(idOrPath)));
    if (!b) throw new UserError(`no backend "${idOrPath}" in pool ${this.dir} (see thinvol backend list)`);
    return b;
  }

  setDraining(id: number, draining: boolean): void {
    this.store.txn(() => {
      const b = this.backend(id);
      if (draining && !this.backendList().some((o) => o.id !== id && o.draining !== true)) {
        throw new UserError(`backend ${id} is the pool's only backend not draining: add another before draining it`);
      }
      this.store.backends.put(id, { ...b, draining });
    });
  }

  /** Takes an empty backend out of the pool. */
  async removeBackend(id: number): Promise<BackendRecord> {
    const b = this.store.txn(() => {
      const rec = this.backend(id);
      if (rec.allocatedBytes > 0 || rec.reservedBytes > 0) {
        throw new UserError(`backend ${id} (${rec.path}) still holds ${rec.allocatedBytes + rec.reservedBytes} bytes: move them off first with thinvol backend drain ${id}`);
      }
      if (this.backendList().length === 1) throw new UserError(`backend ${id} is the pool's last backend`);
      for (const r of [...this.space.runs(id)]) this.store.free.remove([id, r.start]);
      this.store.backends.remove(id);
      return rec;
    });
    await this.store.sync();
    return b;
  }

  async addBackend(spec: BackendSpec): Promise<BackendRecord> {
    if (this.backendList().some((b) => b.path === spec.path)) throw new UserError(`backend ${spec.path} is already in the pool`);
    const p = await prepareBackend(spec);
    const rec = this.store.txn(() => this.insertBackend(spec.path, p.kind, p.capacityBytes));
    await this.store.sync();
    return rec;
  }

  private insertBackend(path: string, kind: 'file' | 'block', capacityBytes: number): BackendRecord {
    const sb = this.superblock();
    const rec: BackendRecord = { id: sb.nextBackendId, path, kind, capacityBytes, allocatedBytes: 0, reservedBytes: 0 };
    this.store.meta.put('super', { ...sb, nextBackendId: sb.nextBackendId + 1 });
    this.store.backends.put(rec.id, rec);
    this.space.give({ backend: rec.id, start: 0, len: capacityBytes });
    return rec;
  }

  // Volumes

  volumeList(): VolumeRecord[] {
    return [...this.store.volumes.getRange({}).map(({ value }) => value)];
  }

  findVolume(nameOrId: string): VolumeRecord | undefined {
    const id = this.store.names.get(nameOrId);
    if (id !== undefined) return this.store.volumes.get(id);
    return /^\d+$/.test(nameOrId) ? this.store.volumes.get(Number(nameOrId)) : undefined;
  }

  volume(nameOrId: string): VolumeRecord {
    const v = this.findVolume(nameOrId);
    if (!v) throw new UserError(`no volume "${nameOrId}" in pool ${this.dir}`);
    return v;
  }

  volumeById(id: number): VolumeRecord | undefined {
    return this.store.volumes.get(id);
  }

  createVolume(name: string, sizeBytes: number, mode = 0o600): VolumeRecord {
    checkVolumeName(name);
    checkFileSize(sizeBytes);
    return this.store.txn(() => {
      if (this.store.names.get(name) !== undefined) throw new UserError(`volume "${name}" already exists`);
      const sb = this.superblock();
      const now = Date.now();
      const v: VolumeRecord = { id: sb.nextVolumeId, name, sizeBytes, allocatedBytes: 0, mode, uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, createdAt: now, mtimeMs: now };
      this.store.meta.put('super', { ...sb, nextVolumeId: sb.nextVolumeId + 1 });
      this.store.volumes.put(v.id, v);
      this.store.names.put(name, v.id);
      return v;
    });
  }

  renameVolume(from: string, to: string): VolumeRecord {
    checkVolumeName(to);
    return this.store.txn(() => {
      const v = this.volume(from);
      if (this.store.names.get(to) !== undefined) throw new UserError(`volume "${to}" already exists`);
      this.store.names.remove(v.name);
      this.store.names.put(to, v.id);
      const renamed = { ...v, name: to };
      this.store.volumes.put(v.id, renamed);
      return renamed;
    });
  }

  updateVolume(id: number, change: Partial<Pick<VolumeRecord, 'mode' | 'uid' | 'gid' | 'mtimeMs'>>): void {
    this.store.txn(() => {
      const v = this.store.volumes.get(id);
      if (v) this.store.volumes.put(id, { ...v, ...change });
    });
  }

  /**
   * Sets the size; shrinking unmaps whole blocks past the new end. The caller zeroes the tail
   * of a partial last block (that needs backend I/O) before calling.
   */
  resizeVolume(id: number, sizeBytes: number): VolumeRecord {
    checkFileSize(sizeBytes);
    return this.store.txn(() => {
      const v = this.store.volumes.get(id);
      if (!v) throw new FsError('ENOENT', `volume ${id} vanished`);
      const keep = Math.ceil(sizeBytes / BLOCK) * BLOCK;
      if (keep < v.sizeBytes) this.unmapInTxn(id, keep, Math.ceil(v.sizeBytes / BLOCK) * BLOCK - keep);
      const resized = { ...this.store.volumes.get(id)!, sizeBytes, mtimeMs: Date.now() };
      this.store.volumes.put(id, resized);
      return resized;
    });
  }

  deleteVolume(id: number): void {
    this.store.txn(() => {
      const v = this.store.volumes.get(id);
      if (!v) throw new FsError('ENOENT', `volume ${id} vanished`);
      this.unmapInTxn(id, 0, Number.MAX_SAFE_INTEGER - BLOCK);
      this.store.volumes.remove(id);
      this.store.names.remove(v.name);
      this.store.claims.remove(id);
    });
  }

  addReclaimed(volumeId: number, bytes: number): void {
    this.store.txn(() => {
      const v = this.store.volumes.get(volumeId);
      if (v) this.store.volumes.put(volumeId, { ...v, reclaimedBytes: (v.reclaimedBytes ?? 0) + bytes });
    });
  }

  /** Unmaps [offset, offset+len) of a volume and returns its space to the free table. */
  unmap(volumeId: number, offset: number, len: number): number {
    return this.store.txn(() => this.unmapInTxn(volumeId, offset, len));
  }

  private unmapInTxn(volumeId: number, offset: number, len: number): number {
    const freed = this.map.remove(volumeId, offset, len);
    let total = 0;
    const perBackend = new Map<number, number>();
    for (const e of freed) {
      this.space.give({ backend: e.backend, start: e.boff, len: e.len });
      perBackend.set(e.backend, (perBackend.get(e.backend) ?? 0) + e.len);
      total += e.len;
    }
    for (const [id, n] of perBackend) this.adjustBackend(id, -n, 0);
    const v = this.store.volumes.get(volumeId);
    if (v && total > 0) this.store.volumes.put(volumeId, { ...v, allocatedBytes: v.allocatedBytes - total });
    if (total > 0) debug('unmap vol %d [%d,+%d): %d bytes freed', volumeId, offset, len, total);
    return total;
  }

  // Claims: one writer per volume across all daemons of the pool.

  /** Takes the write claim of a volume for `holder`; refused while another live process holds it. */
  claim(volumeId: number, holder: Holder): void {
    this.store.txn(() => {
      const cur = this.store.claims.get(volumeId);
      if (cur && holderId(cur) !== holderId(holder) && holderAlive(cur)) {
        throw new FsError('EBUSY', `volume ${volumeId} is being written by another thinvol process (pid ${cur.pid})`);
      }
      this.store.claims.put(volumeId, holder);
    });
  }

  unclaim(volumeId: number, holder: Holder): void {
    this.store.txn(() => {
      const cur = this.store.claims.get(volumeId);
      if (cur && holderId(cur) === holderId(holder)) this.store.claims.remove(volumeId);
    });
  }

  /** The live process holding a volume's write claim, if any. */
  claimant(volumeId: number): Holder | undefined {
    const cur = this.store.claims.get(volumeId);
    return cur && holderAlive(cur) ? cur : undefined;
  }

  // Allocation: reserve (free -> pending), write the data, then commit (pending -> map).

  /**
   * Takes `want` bytes of backend space for `holder`, preferring to continue at `hint` so that
   * streams stay contiguous, else on the backend with most free space, in the lowest free run
   * with at least `room` bytes (else the largest). All or nothing.
   */
  reserve(holder: Holder, volumeId: number, want: number, hint?: { backend: number; at: number }, room = want): Run[] {
    const hid = holderId(holder);
    return this.store.txn(() => {
      const got: Run[] = [];
      let need = want;
      if (hint && this.store.backends.get(hint.backend)?.draining !== true) {
        const r = this.space.takeAt(hint.backend, hint.at, need);
        if (r) {
          this.adjustBackend(r.backend, 0, r.len);
          got.push(r);
          need -= r.len;
        }
      }
      while (need > 0) {
        const b = this.mostFreeBackend();
        const r = b === undefined ? undefined : this.space.take(b, need, Math.max(need, room));
        if (!r) {
          for (const g of got) {
            this.space.give(g);
            this.adjustBackend(g.backend, 0, -g.len);
          }
          throw new FsError('ENOSPC', `pool ${this.dir} is full: ${want} bytes wanted`);
        }
        this.adjustBackend(r.backend, 0, r.len);
        got.push(r);
        need -= r.len;
      }
      for (const r of got) this.store.pending.put([hid, r.backend, r.start], { len: r.len, volumeId });
      debug('reserve vol %d %d bytes -> %o', volumeId, want, got);
      return got;
    });
  }

  /** Maps written pieces; each piece lies inside a reservation of `holder`. */
  commit(holder: Holder, volumeId: number, pieces: Placement[]): void {
    const hid = holderId(holder);
    this.store.txn(() => {
      let total = 0;
      for (const p of pieces) {
        this.takePending(hid, p.run);
        this.map.insert(volumeId, { vstart: p.vstart, len: p.run.len, backend: p.run.backend, boff: p.run.start });
        this.adjustBackend(p.run.backend, p.run.len, -p.run.len);
        total += p.run.len;
      }
      const v = this.store.volumes.get(volumeId);
      if (!v) throw new FsError('ENOENT', `volume ${volumeId} was deleted while being written`);
      this.store.volumes.put(volumeId, { ...v, allocatedBytes: v.allocatedBytes + total });
    });
  }

  /** Gives back reserved runs that were not used. */
  unreserve(holder: Holder, runs: Run[]): void {
    if (runs.length === 0) return;
    const hid = holderId(holder);
    this.store.txn(() => {
      for (const r of runs) {
        this.takePending(hid, r);
        this.space.give(r);
        this.adjustBackend(r.backend, 0, -r.len);
      }
    });
  }

  /** Returns reservations of processes that no longer exist (a crashed daemon) to the free table. */
  recoverStaleReservations(): number {
    let total = 0;
    this.store.txn(() => {
      for (const { key, value } of [...this.store.pending.getRange({})]) {
        // Reservations of a layout change belong to it, not to a process; it resolves them.
        const h = parseHolderId(key[0]);
        if (!h || holderAlive(h)) continue;
        this.store.pending.remove(key);
        this.space.give({ backend: key[1], start: key[2], len: value.len });
        this.adjustBackend(key[1], 0, -value.len);
        total += value.len;
      }
    });
    if (total > 0) debug('recovered %d bytes reserved by dead processes', total);
    return total;
  }

  /** Removes `run` from reservation `hid`; inside a transaction. */
  takePending(hid: string, run: Run): void {
    for (const { key, value } of this.store.pending.getRange({ start: [hid, run.backend, run.start], end: [hid, run.backend, -1], reverse: true, limit: 1 })) {
      const start = key[2];
      const end = start + value.len;
      if (run.start + run.len > end) break;
      this.store.pending.remove(key);
      if (run.start > start) this.store.pending.put(key, { ...value, len: run.start - start });
      if (run.start + run.len < end) this.store.pending.put([hid, run.backend, run.start + run.len], { ...value, len: end - run.start - run.len });
      return;
    }
    throw new Error(`reservation missing for backend ${run.backend} [${run.start},+${run.len}) of ${hid}`);
  }

  /** Moves counters of backend `id`; inside a transaction. */
  adjustBackend(id: number, allocated: number, reserved: number): void {
    const b = this.backend(id);
    this.store.backends.put(id, { ...b, allocatedBytes: b.allocatedBytes + allocated, reservedBytes: b.reservedBytes + reserved });
  }

  /** The backend new space goes to: the one with most free space, draining ones excluded. */
  mostFreeBackend(): number | undefined {
    let best: BackendRecord | undefined;
    for (const b of this.backendList()) {
      if (b.draining === true) continue;
      const free = b.capacityBytes - b.allocatedBytes - b.reservedBytes;
      if (free > 0 && (!best || free > best.capacityBytes - best.allocatedBytes - best.reservedBytes)) best = b;
    }
    return best?.id;
  }

  mapOf(volumeId: number): Extent[] {
    return [...this.map.extents(volumeId)];
  }
}
