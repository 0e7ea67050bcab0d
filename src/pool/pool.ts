import { existsSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { FsError } from '../util/errors';
import { logger } from '../util/log';
import { randomUUID } from 'node:crypto';
import { DATA_START } from '../backend/backend-label';
import { BackendSet } from '../backend/backend-set';
import { FileBackend } from '../backend/file-backend';
import { identityOf, probeBackend, sameIdentity, writeLabel, type BackendSpec, type ProbedBackend } from '../backend/backend-probe';
import { holderAlive, holderId, parseHolderId } from './holder';
import { LmdbStore } from '../store/lmdb-store';
import type { MetaStore } from '../store/meta-store';
import { Registry } from './registry';
import { BLOCK, type BackendRecord, type Extent, type Holder, type Run, type Superblock, type VolumeRecord } from '../store/records';
import { SpaceMap } from './space-map';
import { VolumeMap } from './volume-map';

const debug = logger('alloc');

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$/;

export function checkVolumeName(name: string): void {
  if (!NAME_RE.test(name)) throw new FsError('EINVAL', `bad volume name "${name}": use 1-128 letters, digits, '.', '_', '+', '-', not starting with a symbol`);
}

/** Sizes given on the command line: whole 512-byte sectors, so loop devices see all of it. */
export function checkVolumeSize(size: number): void {
  if (!Number.isSafeInteger(size) || size <= 0 || size % 512 !== 0) {
    throw new FsError('EINVAL', `bad volume size ${size}: must be a positive multiple of 512 bytes`);
  }
}

function checkFileSize(size: number): void {
  if (!Number.isSafeInteger(size) || size < 0) throw new FsError('EINVAL', `bad volume size ${size}`);
}

/** A placement: which backend and where, with the piece of the volume it will hold. */
export interface Placement { vstart: number; run: Run }

/** A range of a volume, in bytes. */
export interface VRange { start: number; end: number }

/**
 * What a volume's data path changed since its last commit, applied by `commitChanges` in one
 * transaction, in this order: unmap `removes` (their space goes back to the free table), map
 * `inserts` (written pieces of this holder's reservations), give back `released` reservations.
 */
export interface VolumeChanges {
  removes: VRange[];
  inserts: Placement[];
  released: Run[];
  sizeBytes?: number;
  reclaimedBytes: number;
  mtimeMs?: number;
}

export interface BackendInit { path: string; kind: 'file' | 'block'; dataStart: number; capacityBytes: number }

/**
 * Pool metadata: superblock, backends, volumes, map and free space table, kept consistent
 * by doing every change that touches two of them in one transaction.
 */
export class Pool {
  readonly space: SpaceMap;
  readonly map: VolumeMap;
  readonly registry: Registry;

  constructor(readonly dir: string, readonly store: MetaStore) {
    this.space = new SpaceMap(store.free);
    this.map = new VolumeMap(store.map);
    this.registry = new Registry(store);
  }

  static metaFile(dir: string): string {
    return join(dir, 'pool.lmdb');
  }

  /** Makes a pool: its backends are probed, labelled, then recorded in a new store. */
  static async create(dir: string, specs: BackendSpec[]): Promise<Pool> {
    const abs = resolve(dir);
    if (specs.length === 0) throw new FsError('EINVAL', 'pool create needs at least one --backend PATH[:SIZE]');
    if (existsSync(Pool.metaFile(abs))) throw new FsError('EEXIST', `pool ${abs} already exists`);
    const probed: ProbedBackend[] = [];
    for (const s of specs) {
      const p = await probeBackend(s);
      const twin = probed.find((o) => sameIdentity(o.identity, p.identity));
      if (twin) throw new FsError('EEXIST', `backend ${p.path} is the same ${p.kind === 'block' ? 'device' : 'file'} as ${twin.path}`);
      if (p.label) throw new FsError('EBUSY', `cannot use backend ${p.path}: it belongs to thinvol pool ${p.label.poolUuid} (backend ${p.label.backendId})`);
      probed.push(p);
    }
    const uuid = randomUUID();
    for (const [i, p] of probed.entries()) await writeLabel(p.path, { poolUuid: uuid, backendId: i + 1 });
    mkdirSync(join(abs, 'run'), { recursive: true });
    return Pool.init(abs, new LmdbStore(Pool.metaFile(abs)), probed.map((p) => ({ path: p.path, kind: p.kind, dataStart: DATA_START, capacityBytes: p.capacityBytes })), uuid);
  }

  /** Writes a new pool's superblock and backends (ids 1, 2, ...) into an empty store. */
  static init(dir: string, store: MetaStore, backends: BackendInit[], uuid: string = randomUUID()): Pool {
    const pool = new Pool(dir, store);
    store.txn(() => {
      store.meta.put('super', { format: 3, uuid, createdAt: Date.now(), nextVolumeId: 1, nextBackendId: 1 });
      for (const b of backends) pool.insertBackend(b);
    });
    return pool;
  }

  static open(dir: string): Pool {
    const abs = resolve(dir);
    if (!existsSync(Pool.metaFile(abs))) throw new FsError('ENOENT', `no pool at ${abs} (create one with: thinvol --pool ${abs} pool create --backend FILE:SIZE)`);
    mkdirSync(join(abs, 'run'), { recursive: true });
    return new Pool(abs, new LmdbStore(Pool.metaFile(abs)));
  }

  /** The pool's backends for one process's I/O, each opened (and its label checked) on first use. */
  backendSet(): BackendSet {
    const uuid = this.superblock().uuid;
    return new BackendSet((id) => this.backend(id), (r) => FileBackend.open(r, uuid));
  }

  get runDir(): string {
    return join(this.dir, 'run');
  }

  superblock(): Superblock {
    const sb = this.store.meta.get('super');
    const format = sb?.format as number | undefined;
    if (format === 1 || format === 2) throw new FsError('EINVAL', `pool ${this.dir} was made by a development version of thinvol (format ${format}, before backend labels); create a new pool`);
    if (!sb || sb.format !== 3) throw new Error(`pool ${this.dir}: superblock missing or of an unknown format`);
    return sb;
  }

  close(): Promise<void> {
    return this.store.close();
  }

  // Backends

  backendList(): BackendRecord[] {
    return Array.from(this.store.backends.getRange(), ({ value }) => value);
  }

  backend(id: number): BackendRecord {
    const b = this.store.backends.get(id);
    if (!b) throw new Error(`backend ${id} missing from pool ${this.dir}`);
    return b;
  }

  /** A backend named by its id or its path. */
  findBackend(idOrPath: string): BackendRecord {
    const b = this.backendList().find((r) => r.path === resolve(idOrPath) || (/^\d+$/.test(idOrPath) && r.id === Number(idOrPath)));
    if (!b) throw new FsError('ENOENT', `no backend "${idOrPath}" in pool ${this.dir} (see thinvol backend list)`);
    return b;
  }

  setDraining(id: number, draining: boolean): void {
    this.store.txn(() => {
      const b = this.backend(id);
      if (draining && !this.backendList().some((o) => o.id !== id && o.draining !== true)) {
        throw new FsError('EBUSY', `backend ${id} is the pool's only backend not draining: add another before draining it`);
      }
      this.store.backends.put(id, { ...b, draining });
    });
  }

  /** Takes an empty backend out of the pool. */
  async removeBackend(id: number): Promise<BackendRecord> {
    const b = this.store.txn(() => {
      const rec = this.backend(id);
      if (rec.allocatedBytes > 0 || rec.reservedBytes > 0) {
        throw new FsError('EBUSY', `backend ${id} (${rec.path}) still holds ${rec.allocatedBytes + rec.reservedBytes} bytes: move them off first with thinvol backend drain ${id}`);
      }
      if (this.backendList().length === 1) throw new FsError('EBUSY', `backend ${id} is the pool's last backend`);
      for (const r of [...this.space.runs(id)]) this.store.free.remove([id, r.start]);
      this.store.backends.remove(id);
      return rec;
    });
    return b;
  }

  /** Adds a backend: refused when it is one the pool has (by any path), a file of the pool's own, or another pool's. */
  async addBackend(spec: BackendSpec): Promise<BackendRecord> {
    const id = await identityOf(spec.path);
    if (id) {
      for (const b of this.backendList()) {
        const other = await identityOf(b.path);
        if (b.path === spec.path || (other && sameIdentity(id, other))) throw new FsError('EEXIST', `backend ${spec.path} is already in the pool as backend ${b.id} (${b.path})`);
      }
      for (const own of [Pool.metaFile(this.dir), `${Pool.metaFile(this.dir)}-lock`, `${Pool.metaFile(this.dir)}-gate`]) {
        const o = await identityOf(own);
        if (o && sameIdentity(id, o)) throw new FsError('EBUSY', `cannot use backend ${spec.path}: it is the pool's own metadata file ${own}`);
      }
    }
    const p = await probeBackend(spec);
    const sb = this.superblock();
    if (p.label && (p.label.poolUuid !== sb.uuid || this.store.backends.get(p.label.backendId) !== undefined)) {
      throw new FsError('EBUSY', `cannot use backend ${p.path}: it belongs to thinvol pool ${p.label.poolUuid} (backend ${p.label.backendId})`);
    }
    await writeLabel(p.path, { poolUuid: sb.uuid, backendId: sb.nextBackendId });
    return this.store.txn(() => {
      if (this.superblock().nextBackendId !== sb.nextBackendId) throw new FsError('EAGAIN', 'another backend was added meanwhile; run the command again');
      return this.insertBackend({ path: p.path, kind: p.kind, dataStart: DATA_START, capacityBytes: p.capacityBytes });
    });
  }

  private insertBackend(b: BackendInit): BackendRecord {
    const sb = this.superblock();
    const rec: BackendRecord = { id: sb.nextBackendId, path: b.path, kind: b.kind, dataStart: b.dataStart, capacityBytes: b.capacityBytes, allocatedBytes: 0, reservedBytes: 0 };
    this.store.meta.put('super', { ...sb, nextBackendId: sb.nextBackendId + 1 });
    this.store.backends.put(rec.id, rec);
    this.space.give({ backend: rec.id, start: b.dataStart, len: b.capacityBytes });
    return rec;
  }

  // Volumes

  volumeList(): VolumeRecord[] {
    return Array.from(this.store.volumes.getRange(), ({ value }) => value);
  }

  findVolume(nameOrId: string): VolumeRecord | undefined {
    const id = this.store.names.get(nameOrId);
    if (id !== undefined) return this.store.volumes.get(id);
    return /^\d+$/.test(nameOrId) ? this.store.volumes.get(Number(nameOrId)) : undefined;
  }

  volume(nameOrId: string): VolumeRecord {
    const v = this.findVolume(nameOrId);
    if (!v) throw new FsError('ENOENT', `no volume "${nameOrId}" in pool ${this.dir}`);
    return v;
  }

  volumeById(id: number): VolumeRecord | undefined {
    return this.store.volumes.get(id);
  }

  createVolume(name: string, sizeBytes: number, mode = 0o600): VolumeRecord {
    checkVolumeName(name);
    checkFileSize(sizeBytes);
    return this.store.txn(() => {
      if (this.store.names.get(name) !== undefined) throw new FsError('EEXIST', `volume "${name}" already exists`);
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
      if (this.store.names.get(to) !== undefined) throw new FsError('EEXIST', `volume "${to}" already exists`);
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

  /** Unmaps [offset, offset+len) of a volume, its space back to the free table; inside a transaction. */
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

  /**
   * Applies a volume's batched changes in one transaction (see VolumeChanges). Durable when it
   * returns, so the runs it unmaps may be handed out at once; the caller has flushed the data
   * of every inserted piece before calling.
   */
  commitChanges(holder: Holder, volumeId: number, c: VolumeChanges): void {
    const hid = holderId(holder);
    this.store.txn(() => {
      const v = this.store.volumes.get(volumeId);
      if (!v) throw new FsError('ENOENT', `volume ${volumeId} was deleted while being written`);
      let removed = 0;
      for (const r of c.removes) removed += this.unmapInTxn(volumeId, r.start, r.end - r.start);
      let added = 0;
      for (const p of c.inserts) {
        this.takePending(hid, p.run);
        this.map.insert(volumeId, { vstart: p.vstart, len: p.run.len, backend: p.run.backend, boff: p.run.start });
        this.adjustBackend(p.run.backend, p.run.len, -p.run.len);
        added += p.run.len;
      }
      for (const r of c.released) this.#giveBack(hid, r);
      const now = this.store.volumes.get(volumeId)!;
      this.store.volumes.put(volumeId, {
        ...now,
        allocatedBytes: now.allocatedBytes + added,
        sizeBytes: c.sizeBytes ?? now.sizeBytes,
        mtimeMs: c.mtimeMs ?? now.mtimeMs,
        ...(c.reclaimedBytes > 0 ? { reclaimedBytes: (now.reclaimedBytes ?? 0) + c.reclaimedBytes } : {}),
      });
      if (removed > 0 || added > 0) debug('commit vol %d: %d bytes mapped, %d unmapped, %d pieces', volumeId, added, removed, c.inserts.length);
    });
  }

  /** Gives back reserved runs that were not used. */
  unreserve(holder: Holder, runs: Run[]): void {
    if (runs.length === 0) return;
    const hid = holderId(holder);
    this.store.txn(() => {
      for (const r of runs) this.#giveBack(hid, r);
    });
  }

  #giveBack(hid: string, r: Run): void {
    this.takePending(hid, r);
    this.space.give(r);
    this.adjustBackend(r.backend, 0, -r.len);
  }

  /** Returns reservations of processes that no longer exist (a crashed daemon) to the free table. */
  recoverStaleReservations(): number {
    let total = 0;
    this.store.txn(() => {
      for (const { key, value } of [...this.store.pending.getRange()]) {
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

  /** Removes `run` from the reservations of `hid` (it may span adjacent ones); inside a transaction. */
  takePending(hid: string, run: Run): void {
    const end = run.start + run.len;
    for (let pos = run.start; pos < end;) {
      const [hit] = this.store.pending.getRange({ start: [hid, run.backend, pos], end: [hid, run.backend, -1], reverse: true, limit: 1 });
      if (!hit || hit.key[2] + hit.value.len <= pos) throw new Error(`reservation missing for backend ${run.backend} [${pos},${end}) of ${hid}`);
      const start = hit.key[2];
      const recEnd = start + hit.value.len;
      this.store.pending.remove(hit.key);
      if (start < pos) this.store.pending.put(hit.key, { ...hit.value, len: pos - start });
      if (recEnd > end) this.store.pending.put([hid, run.backend, end], { ...hit.value, len: recEnd - end });
      pos = Math.min(recEnd, end);
    }
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
