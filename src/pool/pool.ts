import { chmodSync, existsSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { FsError } from '../util/errors';
import { randomUUID } from 'node:crypto';
import { DATA_START } from '../backend/backend-label';
import { BackendSet } from '../backend/backend-set';
import { FileBackend } from '../backend/file-backend';
import { blockDeviceBytes, identityOf, probeBackend, sameIdentity, writeLabel, type BackendSpec, type ProbedBackend } from '../backend/backend-probe';
import { LmdbStore } from '../store/lmdb-store';
import type { MetaStore } from '../store/meta-store';
import { BLOCK, HOLE_BACKEND, MAX_VOLUME_BYTES, type BackendRecord, type Extent, type DaemonRecord, type Holder, type LayerRecord, type Run, type SnapshotRecord, type SpaceLevel, type SpacePolicy, type Superblock, type VolumeRecord } from '../store/records';
import { Allocator, type VolumeChanges } from './allocator';
import { ChangeLog } from './change-log';
import { Claims } from './claims';
import { holderId } from './holder';
import { Layers } from './layers';
import { Registry } from './registry';
import { Relocation } from './relocation';
import { SpaceMap } from './space-map';
import { DEFAULT_SPACE_POLICY, formatThreshold, reserveBytes, spaceLevel, thresholdBytes } from './space-policy';
import { VolumeMap } from './volume-map';

export type { Placement, VolumeChanges, VRange } from './allocator';

/** mappedBytes looks at this much of a view at a time: its memory stays bounded. */
const MAP_WINDOW = 2 ** 30;

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$/;

export function checkVolumeName(name: string): void {
  if (!NAME_RE.test(name)) throw new FsError('EINVAL', `bad volume name "${name}": use 1-128 letters, digits, '.', '_', '+', '-', not starting with a symbol`);
}

/** Sizes given on the command line: whole 512-byte sectors, so loop devices see all of it. */
export function checkVolumeSize(size: number): void {
  if (!Number.isSafeInteger(size) || size <= 0 || size % 512 !== 0) {
    throw new FsError('EINVAL', `bad volume size ${size}: must be a positive multiple of 512 bytes`);
  }
  checkFileSize(size);
}

/** Any size a volume may have (a file created through the mount starts at 0). */
export function checkFileSize(size: number): void {
  if (!Number.isSafeInteger(size) || size < 0) throw new FsError('EINVAL', `bad volume size ${size}`);
  if (size > MAX_VOLUME_BYTES) throw new FsError('EFBIG', `bad volume size ${size}: the largest volume is ${MAX_VOLUME_BYTES} bytes (4 PiB)`);
}

export interface SpaceState {
  level: SpaceLevel;
  capacityBytes: number;
  freeBytes: number;
  queuedWrites: number;
  /** Kept back for writes into guests' journals: ordinary allocation stops this much short of full. */
  reserveBytes: number;
  lowWaterBytes: number;
  criticalBytes: number;
  policy: SpacePolicy;
}

export interface BackendInit { path: string; kind: 'file' | 'block'; dataStart: number; capacityBytes: number }

/**
 * The pool: a facade of verbs over its metadata (superblock, backends, volumes, claims, the
 * map and free space table through the allocator, the daemon registry, the change log),
 * kept consistent by doing every change that touches two tables in one transaction. The
 * store itself stays inside.
 */
export class Pool {
  readonly space: SpaceMap;
  readonly map: VolumeMap;
  readonly registry: Registry;
  readonly changes: ChangeLog;
  readonly layers: Layers;
  readonly #store: MetaStore;
  readonly #alloc: Allocator;
  readonly #claims: Claims;

  constructor(readonly dir: string, store: MetaStore) {
    this.#store = store;
    this.space = new SpaceMap(store.free);
    this.map = new VolumeMap(store.map);
    this.registry = new Registry(store, (id) => this.#readers(id));
    this.changes = new ChangeLog(store, dir);
    this.#alloc = new Allocator(store, this.space, this.map, dir, () => this.layers);
    this.layers = new Layers(store, this.map, (e) => this.#alloc.release(e));
    this.#claims = new Claims(store);
  }

  /** Runs `fn` as one transaction of the pool's metadata (durable when it returns). */
  txn<T>(fn: () => T): T {
    return this.#store.txn(fn);
  }

  /** Drops this process's read snapshot, so that the next read sees every committed change. */
  freshView(): void {
    this.#store.freshView();
  }

  /** The metadata side of one layout change's moves, its space reserved under `owner`. */
  relocation(owner: string): Relocation {
    return new Relocation(this.#alloc, this.space, this.map, this.layers, owner);
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
    // Private: the metadata names volumes and backends, the run directory holds control sockets.
    mkdirSync(join(abs, 'run'), { recursive: true, mode: 0o700 });
    chmodSync(abs, 0o700);
    return Pool.init(abs, new LmdbStore(Pool.metaFile(abs)), probed.map((p) => ({ path: p.path, kind: p.kind, dataStart: DATA_START, capacityBytes: p.capacityBytes })), uuid);
  }

  /** Writes a new pool's superblock and backends (ids 1, 2, ...) into an empty store. */
  static init(dir: string, store: MetaStore, backends: BackendInit[], uuid: string = randomUUID()): Pool {
    const pool = new Pool(dir, store);
    store.txn(() => {
      store.meta.put('super', { format: 3, uuid, createdAt: Date.now(), nextVolumeId: 1, nextBackendId: 1 });
      for (const b of backends) pool.#insertBackend(b);
    });
    return pool;
  }

  static open(dir: string): Pool {
    const abs = resolve(dir);
    if (!existsSync(Pool.metaFile(abs))) throw new FsError('ENOENT', `no pool at ${abs} (create one with: thinvol --pool ${abs} pool create --backend FILE:SIZE)`);
    mkdirSync(join(abs, 'run'), { recursive: true, mode: 0o700 });
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
    const sb = this.#store.meta.get('super');
    const format = sb?.format as number | undefined;
    if (format === 1 || format === 2) throw new FsError('EINVAL', `pool ${this.dir} was made by a development version of thinvol (format ${format}, before backend labels); create a new pool`);
    if (!sb || sb.format !== 3) throw new Error(`pool ${this.dir}: superblock missing or of an unknown format`);
    return sb;
  }

  close(): Promise<void> {
    return this.#store.close();
  }

  // Space: how full the pool is, and what it does when full.

  spacePolicy(): SpacePolicy {
    return this.superblock().space ?? DEFAULT_SPACE_POLICY;
  }

  /** Changes the policy; `onLowSpace` "" removes the hook. The critical level must lie below the low-water mark. */
  setSpacePolicy(change: Omit<Partial<SpacePolicy>, 'onLowSpace'>, onLowSpace?: string): SpacePolicy {
    return this.#store.txn(() => {
      const sb = this.superblock();
      const { onLowSpace: oldHook, ...rest } = { ...(sb.space ?? DEFAULT_SPACE_POLICY), ...change };
      const hook = onLowSpace === undefined ? oldHook : onLowSpace || undefined;
      const space: SpacePolicy = hook === undefined ? rest : { ...rest, onLowSpace: hook };
      const capacity = this.usage().capacityBytes;
      if (thresholdBytes(space.critical, capacity) > thresholdBytes(space.lowWater, capacity)) {
        throw new FsError('EINVAL', `the critical level (${formatThreshold(space.critical)}) must not lie above the low-water mark (${formatThreshold(space.lowWater)})`);
      }
      if (space.reserve !== undefined && thresholdBytes(space.reserve, capacity) > capacity / 2) {
        throw new FsError('EINVAL', `the journal reserve (${formatThreshold(space.reserve)}) must not exceed half the pool's capacity (${capacity} bytes)`);
      }
      this.#store.meta.put('super', { ...sb, space });
      return space;
    });
  }

  /** Data space of all backends, and what of it is free (neither allocated nor reserved). */
  usage(): { capacityBytes: number; freeBytes: number } {
    let capacityBytes = 0;
    let freeBytes = 0;
    for (const b of this.backendList()) {
      capacityBytes += b.capacityBytes;
      freeBytes += b.capacityBytes - b.allocatedBytes - b.reservedBytes;
    }
    return { capacityBytes, freeBytes };
  }

  /** The free space, the thresholds in bytes, writes waiting in live daemons, and the level. */
  spaceState(): SpaceState {
    const policy = this.spacePolicy();
    const { capacityBytes, freeBytes } = this.usage();
    const queuedWrites = this.registry.list().reduce((n, d) => n + (d.queuedWrites ?? 0), 0);
    return {
      level: spaceLevel(policy, capacityBytes, freeBytes, queuedWrites), capacityBytes, freeBytes, queuedWrites, reserveBytes: reserveBytes(policy, capacityBytes),
      lowWaterBytes: thresholdBytes(policy.lowWater, capacityBytes), criticalBytes: thresholdBytes(policy.critical, capacityBytes), policy,
    };
  }

  /** Records `level` as the pool's announced level; returns the previous one if it changed (the caller announces the crossing). */
  announceSpaceLevel(level: SpaceLevel): SpaceLevel | undefined {
    if ((this.superblock().spaceLevel ?? 'ok') === level) return undefined;
    return this.#store.txn(() => {
      const sb = this.superblock();
      const prev = sb.spaceLevel ?? 'ok';
      if (prev === level) return undefined;
      this.#store.meta.put('super', { ...sb, spaceLevel: level });
      return prev;
    });
  }

  // Backends

  backendList(): BackendRecord[] {
    return Array.from(this.#store.backends.getRange(), ({ value }) => value);
  }

  backend(id: number): BackendRecord {
    const b = this.#store.backends.get(id);
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
    this.#store.txn(() => {
      const b = this.backend(id);
      if (draining && !this.backendList().some((o) => o.id !== id && o.draining !== true)) {
        throw new FsError('EBUSY', `backend ${id} is the pool's only backend not draining: add another before draining it`);
      }
      this.#store.backends.put(id, { ...b, draining });
    });
  }

  /** Takes an empty backend out of the pool. */
  /**
   * Grows a backend online to `capacityBytes` of data space (a file is extended, sparse), or for
   * a block device to what the device now holds. The new tail joins the free table in the same
   * transaction that records the capacity. Only growth: shrink a pool by draining a backend.
   */
  async growBackend(id: number, capacityBytes: number | undefined): Promise<BackendRecord> {
    const b = this.backend(id);
    let target: number;
    if (b.kind === 'block') {
      if (capacityBytes !== undefined) throw new FsError('EINVAL', `backend ${id} is a block device, used whole: grow the device, then run backend resize ${id} without a size to take the new space`);
      target = Math.floor(((await blockDeviceBytes(b.path)) - b.dataStart) / BLOCK) * BLOCK;
    } else {
      if (capacityBytes === undefined) throw new FsError('EINVAL', `backend ${id} is a file: give its new size`);
      target = Math.floor(capacityBytes / BLOCK) * BLOCK;
    }
    if (target < b.capacityBytes) throw new FsError('EINVAL', `backend ${id} holds ${b.capacityBytes} bytes of data space; it can only grow (to shrink the pool, drain a backend onto the others)`);
    if (target === b.capacityBytes) return b;
    if (b.kind === 'file') {
      const fb = await FileBackend.open(b, this.superblock().uuid);
      try {
        await fb.growTo(b.dataStart + target);
      } finally {
        await fb.close();
      }
    }
    return this.#store.txn(() => {
      const rec = this.backend(id);
      if (rec.capacityBytes !== b.capacityBytes) throw new FsError('EAGAIN', `backend ${id} changed size meanwhile; run the command again`);
      const grown = { ...rec, capacityBytes: target };
      this.#store.backends.put(id, grown);
      this.space.give({ backend: id, start: rec.dataStart + rec.capacityBytes, len: target - rec.capacityBytes });
      return grown;
    });
  }

  setAutoextend(id: number, autoextend: BackendRecord['autoextend']): BackendRecord {
    return this.#store.txn(() => {
      const { autoextend: _old, ...rec } = this.backend(id);
      if (autoextend !== undefined && rec.kind !== 'file') throw new FsError('EINVAL', `backend ${id} is a block device: only file backends can grow by themselves`);
      const next = autoextend === undefined ? rec : { ...rec, autoextend };
      this.#store.backends.put(id, next);
      return next;
    });
  }

  async removeBackend(id: number): Promise<BackendRecord> {
    const b = this.#store.txn(() => {
      const rec = this.backend(id);
      if (rec.allocatedBytes > 0 || rec.reservedBytes > 0) {
        throw new FsError('EBUSY', `backend ${id} (${rec.path}) still holds ${rec.allocatedBytes + rec.reservedBytes} bytes: move them off first with thinvol backend drain ${id}`);
      }
      if (this.backendList().length === 1) throw new FsError('EBUSY', `backend ${id} is the pool's last backend`);
      for (const r of [...this.space.runs(id)]) this.#store.free.remove([id, r.start]);
      this.#store.backends.remove(id);
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
      for (const own of [Pool.metaFile(this.dir), `${Pool.metaFile(this.dir)}-lock`]) {
        const o = await identityOf(own);
        if (o && sameIdentity(id, o)) throw new FsError('EBUSY', `cannot use backend ${spec.path}: it is the pool's own metadata file ${own}`);
      }
    }
    const p = await probeBackend(spec);
    const sb = this.superblock();
    if (p.label && (p.label.poolUuid !== sb.uuid || this.#store.backends.get(p.label.backendId) !== undefined)) {
      throw new FsError('EBUSY', `cannot use backend ${p.path}: it belongs to thinvol pool ${p.label.poolUuid} (backend ${p.label.backendId})`);
    }
    await writeLabel(p.path, { poolUuid: sb.uuid, backendId: sb.nextBackendId });
    return this.#store.txn(() => {
      if (this.superblock().nextBackendId !== sb.nextBackendId) throw new FsError('EAGAIN', 'another backend was added meanwhile; run the command again');
      return this.#insertBackend({ path: p.path, kind: p.kind, dataStart: DATA_START, capacityBytes: p.capacityBytes });
    });
  }

  #insertBackend(b: BackendInit): BackendRecord {
    const sb = this.superblock();
    const rec: BackendRecord = { id: sb.nextBackendId, path: b.path, kind: b.kind, dataStart: b.dataStart, capacityBytes: b.capacityBytes, allocatedBytes: 0, reservedBytes: 0 };
    this.#store.meta.put('super', { ...sb, nextBackendId: sb.nextBackendId + 1 });
    this.#store.backends.put(rec.id, rec);
    this.space.give({ backend: rec.id, start: b.dataStart, len: b.capacityBytes });
    return rec;
  }

  // Volumes

  volumeList(): VolumeRecord[] {
    return Array.from(this.#store.volumes.getRange(), ({ value }) => value);
  }

  /**
   * A volume by name, or by id written `id:N`. Never a guess: a name made of digits is a name
   * (before, `volume delete 2` deleted the volume whose id was 2 when none was named "2").
   */
  findVolume(ref: string): VolumeRecord | undefined {
    const byId = /^id:(\d+)$/.exec(ref);
    if (byId) return this.#store.volumes.get(Number(byId[1]));
    const id = this.#store.names.get(ref);
    return id === undefined ? undefined : this.#store.volumes.get(id);
  }

  volume(ref: string): VolumeRecord {
    const v = this.findVolume(ref);
    if (!v) throw new FsError('ENOENT', `no volume "${ref}" in pool ${this.dir}${/^\d+$/.test(ref) ? ` (to name a volume by its id, write id:${ref})` : ''}`);
    return v;
  }

  /** The volume id the name index holds for `name` (check compares it with the records). */
  nameIndex(name: string): number | undefined {
    return this.#store.names.get(name);
  }

  volumeById(id: number): VolumeRecord | undefined {
    return this.#store.volumes.get(id);
  }

  createVolume(name: string, sizeBytes: number, mode = 0o600): VolumeRecord {
    checkVolumeName(name);
    checkFileSize(sizeBytes);
    return this.#store.txn(() => {
      if (this.#store.names.get(name) !== undefined) throw new FsError('EEXIST', `volume "${name}" already exists`);
      const now = Date.now();
      const v: VolumeRecord = { id: this.#newIds(1), name, sizeBytes, allocatedBytes: 0, mode, uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, createdAt: now, mtimeMs: now };
      this.#store.volumes.put(v.id, v);
      this.#store.names.put(name, v.id);
      return v;
    });
  }

  renameVolume(from: string, to: string): VolumeRecord {
    checkVolumeName(to);
    return this.#store.txn(() => {
      const v = this.volume(from);
      if (this.#store.names.get(to) !== undefined) throw new FsError('EEXIST', `volume "${to}" already exists`);
      this.#store.names.remove(v.name);
      this.#store.names.put(to, v.id);
      const renamed = { ...v, name: to };
      this.#store.volumes.put(v.id, renamed);
      return renamed;
    });
  }

  updateVolume(id: number, change: Partial<Pick<VolumeRecord, 'mode' | 'uid' | 'gid' | 'mtimeMs'>>): void {
    this.#store.txn(() => {
      const v = this.#store.volumes.get(id);
      if (v) this.#store.volumes.put(id, { ...v, ...change });
    });
  }

  /** Deletes a volume; refused while snapshots of it exist (they name it). Returns the bytes freed. */
  deleteVolume(id: number): number {
    return this.#store.txn(() => {
      const v = this.#store.volumes.get(id);
      if (!v) throw new FsError('ENOENT', `volume ${id} vanished`);
      const snaps = this.snapshotList(id);
      if (snaps.length > 0) throw new FsError('EBUSY', `volume "${v.name}" has ${snaps.length} snapshot(s) (${snaps.map((x) => `${v.name}@${x.name}`).join(', ')}): delete them first, or clone one to keep it`);
      this.#store.volumes.remove(id);
      this.#store.names.remove(v.name);
      this.#store.claims.remove(id);
      return this.layers.dropOwner(v.layer ?? v.id);
    });
  }

  // Snapshots and clones (see Layers): a snapshot freezes the volume's top layer.

  /** Ids of the volumes and snapshots that read map layer `layer`. */
  readersOf(layer: number): number[] {
    const out: number[] = [];
    for (const v of this.volumeList()) if (this.chainOf(v.id).includes(layer)) out.push(v.id);
    for (const s of this.snapshotList()) if (this.layers.chain(s.layer).includes(layer)) out.push(s.id);
    return out;
  }

  /** Live daemons serving any volume or snapshot that reads map layer `layer` (a layout change holds them all). */
  servingLayer(layer: number): DaemonRecord[] {
    const found = new Map<string, DaemonRecord>();
    for (const id of this.readersOf(layer)) for (const d of this.registry.serving(id)) found.set(d.id, d);
    return [...found.values()];
  }

  /** The layers a volume or snapshot id reads (just itself when it names neither: a volume being created). */
  #readers(id: number): number[] {
    return this.#store.volumes.get(id) || this.#store.snapshots.get(id) ? this.chainOf(id) : [id];
  }

  /** Takes `n` consecutive ids for volumes, snapshots and map layers (one id space); inside a transaction. Returns the first. */
  #newIds(n: number): number {
    const sb = this.superblock();
    this.#store.meta.put('super', { ...sb, nextVolumeId: sb.nextVolumeId + n });
    return sb.nextVolumeId;
  }

  /** The layers a volume or snapshot reads, top first. */
  chainOf(id: number): number[] {
    const v = this.#store.volumes.get(id);
    if (v) return v.layer === undefined ? [v.id] : this.layers.chain(v.layer);
    const s = this.#store.snapshots.get(id);
    if (s) return this.layers.chain(s.layer);
    throw new FsError('ENOENT', `no volume or snapshot with id ${id}`);
  }

  layerList(): LayerRecord[] {
    return Array.from(this.#store.layers.getRange(), ({ value }) => value);
  }

  snapshotById(id: number): SnapshotRecord | undefined {
    return this.#store.snapshots.get(id);
  }

  /** Snapshots of one volume (or all), oldest first. */
  snapshotList(volumeId?: number): SnapshotRecord[] {
    const all = Array.from(this.#store.snapshots.getRange(), ({ value }) => value);
    return volumeId === undefined ? all : all.filter((x) => x.volume === volumeId);
  }

  /** A snapshot named `VOLUME@NAME`, or undefined. */
  findSnapshot(ref: string): { volume: VolumeRecord; snapshot: SnapshotRecord } | undefined {
    const at = ref.indexOf('@');
    if (at <= 0) return undefined;
    const volume = this.findVolume(ref.slice(0, at));
    const snapshot = volume && this.snapshotList(volume.id).find((x) => x.name === ref.slice(at + 1));
    return volume && snapshot ? { volume, snapshot } : undefined;
  }

  snapshot(ref: string): { volume: VolumeRecord; snapshot: SnapshotRecord } {
    const found = this.findSnapshot(ref);
    if (!found) throw new FsError('ENOENT', ref.includes('@') ? `no snapshot "${ref}" in pool ${this.dir} (see thinvol snapshot list)` : `bad snapshot name "${ref}": write VOLUME@NAME`);
    return found;
  }

  /**
   * Freezes the volume's top layer as snapshot `name` and gives the volume a new empty top:
   * constant time, nothing copied. The caller is the one writer of the volume with nothing
   * uncommitted (its daemon), or has made sure nobody has it open: `ifUnused` checks that inside
   * the transaction.
   */
  createSnapshot(volumeId: number, name: string, ifUnused: boolean): SnapshotRecord {
    checkVolumeName(name);
    return this.#store.txn(() => {
      const v = this.#store.volumes.get(volumeId);
      if (!v) throw new FsError('ENOENT', `volume ${volumeId} vanished`);
      if (this.snapshotList(v.id).some((x) => x.name === name)) throw new FsError('EEXIST', `snapshot ${v.name}@${name} already exists`);
      if (ifUnused) {
        const why = this.openElsewhere(v.id);
        if (why) throw new FsError('EAGAIN', `volume "${v.name}" is ${why}`);
      }
      const snapId = this.#newIds(2);
      const newTop = snapId + 1;
      const top = v.layer ?? v.id;
      this.layers.setOwner(top, snapId);
      this.layers.add(newTop, top, v.id);
      const snap: SnapshotRecord = { id: snapId, name, volume: v.id, layer: top, sizeBytes: v.sizeBytes, createdAt: Date.now() };
      this.#store.snapshots.put(snapId, snap);
      this.#store.volumes.put(v.id, { ...v, layer: newTop, allocatedBytes: 0 });
      return snap;
    });
  }

  /** Deletes a snapshot (refused while open through a mount); returns the bytes freed. */
  deleteSnapshot(id: number): number {
    return this.#store.txn(() => {
      const s = this.#store.snapshots.get(id);
      if (!s) throw new FsError('ENOENT', `snapshot ${id} vanished`);
      const d = this.registry.serving(id)[0];
      if (d) throw new FsError('EBUSY', `snapshot ${s.name} is open through the mount at ${d.mountpoint} (pid ${d.pid})`);
      this.#store.snapshots.remove(id);
      return this.layers.dropOwner(s.layer);
    });
  }

  /** A new writable volume that starts as the snapshot and shares its blocks. */
  cloneVolume(snapshotId: number, name: string, mode = 0o600): VolumeRecord {
    checkVolumeName(name);
    return this.#store.txn(() => {
      const s = this.#store.snapshots.get(snapshotId);
      if (!s) throw new FsError('ENOENT', `snapshot ${snapshotId} vanished`);
      if (this.#store.names.get(name) !== undefined) throw new FsError('EEXIST', `volume "${name}" already exists`);
      const id = this.#newIds(2);
      const top = id + 1;
      const now = Date.now();
      const v: VolumeRecord = { id, name, sizeBytes: s.sizeBytes, allocatedBytes: 0, mode, uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, createdAt: now, mtimeMs: now, layer: top };
      this.layers.add(top, s.layer, id);
      this.#store.volumes.put(id, v);
      this.#store.names.put(name, id);
      return v;
    });
  }

  /** Puts a volume back to one of its snapshots (refused while open anywhere); returns the bytes freed. */
  revertVolume(volumeId: number, snapshotId: number): number {
    return this.#store.txn(() => {
      const v = this.#store.volumes.get(volumeId);
      const s = this.#store.snapshots.get(snapshotId);
      if (!v || !s) throw new FsError('ENOENT', 'volume or snapshot vanished');
      if (s.volume !== v.id) throw new FsError('EINVAL', `snapshot ${s.name} is not a snapshot of volume "${v.name}"`);
      const why = this.openElsewhere(v.id);
      if (why) throw new FsError('EBUSY', `cannot revert volume "${v.name}": it is ${why}`);
      const top = this.#newIds(1);
      this.layers.add(top, s.layer, v.id);
      this.#store.volumes.put(v.id, { ...v, layer: top, allocatedBytes: 0, sizeBytes: s.sizeBytes, mtimeMs: Date.now() });
      return this.layers.dropOwner(v.layer ?? v.id);
    });
  }

  /** Bytes a volume or snapshot reads as data (shared blocks included); scans its map a window at a time. */
  mappedBytes(id: number, sizeBytes: number): number {
    const chain = this.chainOf(id);
    const v = this.#store.volumes.get(id);
    if (v && chain.length === 1) return v.allocatedBytes;
    let n = 0;
    for (let w = 0; w < sizeBytes; w += MAP_WINDOW) for (const e of this.layers.resolve(chain, w, Math.min(sizeBytes, w + MAP_WINDOW))) n += e.len;
    return n;
  }

  /** What deleting a volume or snapshot would give back to the free table. */
  exclusiveBytes(id: number): number {
    const v = this.#store.volumes.get(id);
    if (v) return this.layers.wouldFree(v.layer ?? v.id, v.allocatedBytes);
    const s = this.#store.snapshots.get(id);
    if (!s) throw new FsError('ENOENT', `no volume or snapshot with id ${id}`);
    return this.layers.wouldFree(s.layer);
  }

  // Claims: one writer per volume across all daemons of the pool.

  claim(volumeId: number, holder: Holder): void {
    this.#claims.claim(volumeId, holder);
  }

  unclaim(volumeId: number, holder: Holder): void {
    this.#claims.unclaim(volumeId, holder);
  }

  claimant(volumeId: number): Holder | undefined {
    return this.#claims.claimant(volumeId);
  }

  /**
   * Why a volume is open in some other process, or undefined: a writer's claim, or a daemon
   * serving it (maybe read-only, as `losetup -r` has it). `self` (a daemon asking) is not counted.
   */
  openElsewhere(volumeId: number, self?: { daemonId: string; holder: Holder }): string | undefined {
    const writer = this.claimant(volumeId);
    if (writer && (!self || holderId(writer) !== holderId(self.holder))) return `open for writing by pid ${writer.pid}`;
    const d = this.registry.serving(volumeId).find((r) => r.id !== self?.daemonId);
    return d && `open through the mount at ${d.mountpoint} (pid ${d.pid})`;
  }

  // Allocation: reserve (free -> reservation), write the data, then commit (reservation -> map).

  /** Ordinary allocation: it leaves the journal reserve free. */
  reserve(holder: Holder, volumeId: number, want: number, hint?: { backend: number; at: number }, room = want): Run[] {
    const keepBack = reserveBytes(this.spacePolicy(), this.usage().capacityBytes);
    return this.#alloc.reserve(holder, volumeId, want, hint, room, keepBack);
  }

  /** Exactly `len` bytes that may come out of the journal reserve: for a write into a guest's journal. */
  reserveForJournal(holder: Holder, volumeId: number, len: number): Run[] {
    return this.#alloc.reserve(holder, volumeId, len);
  }

  unreserve(holder: Holder, runs: Run[]): void {
    this.#alloc.unreserve(holder, runs);
  }

  commitChanges(holder: Holder, volumeId: number, c: VolumeChanges): void {
    this.#alloc.commitChanges(holder, volumeId, c);
  }

  recoverStaleReservations(): number {
    return this.#alloc.recoverStaleReservations();
  }

  reservations(): Iterable<{ holder: string; run: Run; volumeId: number }> {
    return this.#alloc.reservations();
  }

  mostFreeBackend(): number | undefined {
    return this.#alloc.mostFreeBackend();
  }

  /** What a volume or snapshot maps, as it reads it (shared extents marked). */
  mapOf(id: number): Extent[] {
    const chain = this.chainOf(id);
    if (chain.length === 1) return [...this.map.extents(chain[0]!)].filter((e) => e.backend !== HOLE_BACKEND);
    const size = this.volumeById(id)?.sizeBytes ?? this.snapshotById(id)?.sizeBytes ?? 0;
    return this.layers.resolve(chain, 0, Math.ceil(size / BLOCK) * BLOCK);
  }
}
