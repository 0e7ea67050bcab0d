import { hostname } from 'node:os';
import { BackendSet } from '../../src/backend/backend-set';
import { MemoryBackend } from '../../src/backend/memory-backend';
import { checkPool } from '../../src/check/check-pool';
import { assignRuns, planBatch } from '../../src/layout/plan-batch';
import { Pool } from '../../src/pool/pool';
import { StaleBatch } from '../../src/pool/relocation';
import { MemoryStore, type Change } from '../../src/store/memory-store';
import { BLOCK, type Holder, type Move } from '../../src/store/records';
import { FsError } from '../../src/util/errors';
import { VolumeIo } from '../../src/volume/volume-io';
import { mulberry32 } from './prng';

/*
 * The power-cut model. A seeded workload (writes, fsyncs, periodic commits, discards, shrinks,
 * deletes, layout moves) runs the real pool and data path over a memory store and memory
 * backends that record every backend write, every flush and every metadata commit. Then, for
 * many cut points, the state a disk would hold after a power cut there is rebuilt: metadata =
 * the commits before the cut (a store commit is atomic and durable when it returns); backends
 * = the writes a later flush of the same backend covered, plus, in the reordering mode, a
 * random subset of the other writes' 512-byte sectors (disks reorder). That state is mounted
 * (dead daemon's reservations recovered) and checked: `check` clean, and every sector of every
 * volume holds a value some history allows: the last acknowledged (fsynced) value or a later
 * one, zeros only where that is allowed, never another volume's bytes.
 */

const SECTOR = 512;
/** Where backend data starts: a label area, as on real backends, so that offsets are tested. */
const DATA_START = 64 * 1024;
const ZERO_SECTOR = Buffer.alloc(SECTOR);
const MiB = 2 ** 20;

type Event =
  | { kind: 'write'; backend: number; pos: number; data: Buffer }
  | { kind: 'flush'; backend: number }
  | { kind: 'commit' };

/** One thing done to some sectors of a volume: a value they may hold afterwards. */
interface SectorOp { index: number; seq: number; zero: boolean; failed: boolean }

interface AckEvent { at: number; m: VolumeModel; sectors: Map<number, number> }

interface VolumeModel {
  uid: number;
  name: string;
  io: VolumeIo;
  /** Ops per sector, in order. */
  ops: Map<number, SectorOp[]>;
  opCount: number;
}

export interface ModelOptions {
  seed: number;
  steps: number;
  cuts: number;
  /** A disk that ignores flushes: the model must then find lost acknowledged writes. */
  brokenFlush?: boolean;
}

export interface ModelResult { events: number; commits: number; cutsChecked: number; sectorsChecked: number; failures: string[] }

/** Sector content: volume uid, sector index and op sequence, repeated. Deterministic and unmistakable. */
function stamp(uid: number, sector: number, seq: number): Buffer {
  const b = Buffer.alloc(SECTOR);
  for (let o = 0; o < SECTOR; o += 16) {
    b.writeUInt32LE(uid, o);
    b.writeUInt32LE(sector, o + 4);
    b.writeUInt32LE(seq, o + 8);
    b.writeUInt32LE(0x7468696e, o + 12);
  }
  return b;
}

class Recorder {
  readonly events: Event[] = [];
  readonly commitLog: Change[][] = [];

  attach(store: MemoryStore, disks: Map<number, MemoryBackend>, brokenFlush: boolean): void {
    store.onCommit = (changes) => {
      this.commitLog.push(changes);
      this.events.push({ kind: 'commit' });
    };
    for (const [id, d] of disks) {
      d.onWrite = (pos, data) => this.events.push({ kind: 'write', backend: id, pos, data });
      d.onFlush = () => { if (!brokenFlush) this.events.push({ kind: 'flush', backend: id }); };
    }
  }
}

/** Runs one seeded workload and checks `cuts` cut points in each mode. */
export async function runPowerCutModel(o: ModelOptions): Promise<ModelResult> {
  const rnd = mulberry32(o.seed);
  const int = (n: number): number => Math.floor(rnd() * n);
  // The workload's daemon is dead after the cut: a pid that cannot exist.
  const holder: Holder = { pid: 2 ** 30 + 7, startTime: 1, host: hostname() };
  const store = new MemoryStore();
  const backendBytes = [8 * MiB, 8 * MiB];
  const pool = Pool.init('/power-cut-model', store, backendBytes.map((n, i) => ({ path: `memory:${i + 1}`, kind: 'file', dataStart: DATA_START, capacityBytes: n - DATA_START })));
  const disks = new Map(pool.backendList().map((b) => [b.id, new MemoryBackend(b.dataStart + b.capacityBytes)]));
  const backends = new BackendSet((id) => pool.backend(id), async (r) => disks.get(r.id)!);
  const rec = new Recorder();
  const initialCommits = [...store.commits];
  rec.attach(store, disks, o.brokenFlush === true);

  const volumes: VolumeModel[] = [];
  const dead: VolumeModel[] = [];
  let seq = 0;
  let made = 0;
  const addVolume = (): void => {
    const name = `v${++made}`;
    const v = pool.createVolume(name, (2 + int(3)) * MiB);
    volumes.push({ uid: v.id, name, io: new VolumeIo(pool, backends, holder, v.id), ops: new Map(), opCount: 0 });
  };
  const record = (m: VolumeModel, firstSector: number, sectors: number, zero: boolean, s: number, failed = false): void => {
    const index = m.opCount++;
    for (let i = firstSector; i < firstSector + sectors; i++) {
      let list = m.ops.get(i);
      if (!list) m.ops.set(i, (list = []));
      list.push({ index, seq: s, zero, failed });
    }
  };
  /** Each fsync acknowledges every op of its volume recorded before it: per sector, the last one that did not fail. */
  const ackEvents: AckEvent[] = [];
  const acknowledge = (m: VolumeModel): void => {
    const sectors = new Map<number, number>();
    for (const [sector, list] of m.ops) {
      for (let i = list.length - 1; i >= 0; i--) {
        if (!list[i]!.failed) { sectors.set(sector, list[i]!.index); break; }
      }
    }
    ackEvents.push({ at: rec.events.length, m, sectors });
  };

  addVolume();
  addVolume();
  for (let step = 0; step < o.steps; step++) {
    const m = volumes[int(volumes.length)]!;
    const size = m.io.size();
    const r = rnd();
    if (r < 0.5) {
      const sectors = 1 + int(r < 0.1 ? 256 : 24);
      const first = int(Math.max(1, size / SECTOR - sectors));
      const s = ++seq;
      const zero = rnd() < 0.1;
      const data = zero ? Buffer.alloc(sectors * SECTOR) : Buffer.concat(Array.from({ length: sectors }, (_, i) => stamp(m.uid, first + i, s)));
      let failed = false;
      try {
        await m.io.write(data, first * SECTOR);
      } catch (err) {
        if (!(err instanceof FsError) || err.code !== 'ENOSPC') throw err;
        failed = true;
      }
      record(m, first, sectors, zero, s, failed);
    } else if (r < 0.62) {
      await m.io.commit();
      acknowledge(m);
    } else if (r < 0.7) {
      for (const v of volumes) await v.io.commit();
    } else if (r < 0.8) {
      const blocks = Math.floor(size / BLOCK);
      const a = int(blocks);
      const b = Math.min(blocks, a + 1 + int(64));
      await m.io.discard(a * BLOCK, b * BLOCK, { reclaim: true });
      record(m, (a * BLOCK) / SECTOR, ((b - a) * BLOCK) / SECTOR, true, ++seq);
    } else if (r < 0.85) {
      const to = (1 + int(4)) * MiB + int(8) * SECTOR;
      if (to < size) record(m, Math.ceil(to / SECTOR), Math.ceil(size / SECTOR) - Math.ceil(to / SECTOR), true, ++seq);
      await m.io.truncate(to);
      acknowledge(m);
    } else if (r < 0.9) {
      await layoutMove(pool, backends, m, int);
    } else if (r < 0.94) {
      await m.io.close();
      m.io = new VolumeIo(pool, backends, holder, m.uid);
    } else if (r < 0.97 && volumes.length > 1) {
      await m.io.close();
      pool.deleteVolume(m.uid);
      volumes.splice(volumes.indexOf(m), 1);
      dead.push(m);
      addVolume();
    }
  }

  const result: ModelResult = { events: rec.events.length, commits: rec.commitLog.length, cutsChecked: 0, sectorsChecked: 0, failures: [] };
  const all = [...volumes, ...dead];
  for (let c = 0; c < o.cuts; c++) {
    const at = int(rec.events.length + 1);
    for (const reorder of [false, true]) {
      const where = `seed ${o.seed}, cut after event ${at} of ${rec.events.length}${reorder ? ', reordered' : ''}`;
      const problems = await checkCut(rec, initialCommits, backendBytes, at, reorder ? rnd : undefined, all, ackEvents, result);
      result.cutsChecked++;
      for (const p of problems.slice(0, 5)) result.failures.push(`${where}: ${p}`);
      if (result.failures.length > 20) return result;
    }
  }
  return result;
}

/** A layout change's batch as the controller runs it, minus the sockets: hold (lock, commit), copy, flush, apply, free. */
async function layoutMove(pool: Pool, backends: BackendSet, m: VolumeModel, int: (n: number) => number): Promise<void> {
  const extents = [...pool.map.extents(m.uid)].map((e) => ({ ...e, volume: m.uid }));
  if (extents.length === 0) return;
  const pick = extents[int(extents.length)]!;
  const to = pick.backend === 1 ? 2 : 1;
  const planned = planBatch(extents.filter((e) => e.vstart >= pick.vstart), (e) => e.backend !== to, { bytes: 256 * 1024, span: 1024 * 1024 });
  if (!planned) return;
  const reloc = pool.relocation('change:1');
  const unlock = await m.io.lock.acquire(planned.start, planned.end, true);
  try {
    await m.io.commit();
    let moves: Move[];
    try {
      moves = pool.txn(() => assignRuns(planned.moves, reloc.reserveOn(to, m.uid, planned.bytes)));
    } catch (err) {
      if (err instanceof StaleBatch) return;
      throw err;
    }
    for (const mv of moves) {
      const buf = Buffer.alloc(mv.len);
      await (await backends.get(mv.from.backend)).read(buf, 0, mv.len, mv.from.boff);
      await (await backends.get(mv.to!.backend)).write(buf, 0, mv.len, mv.to!.boff);
    }
    await backends.flushAll();
    try {
      pool.txn(() => reloc.apply(m.uid, moves));
    } catch (err) {
      if (!(err instanceof StaleBatch)) throw err;
    }
  } finally {
    unlock();
  }
  pool.txn(() => reloc.freeAll());
}

async function checkCut(
  rec: Recorder, initialCommits: Change[][], backendBytes: number[], at: number, reorder: (() => number) | undefined,
  volumes: VolumeModel[], ackEvents: AckEvent[], result: ModelResult,
): Promise<string[]> {
  const problems: string[] = [];
  const events = rec.events.slice(0, at);
  const commits = events.filter((e) => e.kind === 'commit').length;
  const store = MemoryStore.replay([...initialCommits, ...rec.commitLog], initialCommits.length + commits);
  const disks = backendBytes.map((n) => Buffer.alloc(n));
  const lastFlush = new Map<number, number>();
  events.forEach((e, i) => { if (e.kind === 'flush') lastFlush.set(e.backend, i); });
  events.forEach((e, i) => {
    if (e.kind !== 'write') return;
    const disk = disks[e.backend - 1]!;
    if (i < (lastFlush.get(e.backend) ?? -1)) {
      e.data.copy(disk, e.pos);
    } else if (reorder) {
      for (let s = 0; s < e.data.length; s += SECTOR) if (reorder() < 0.5) e.data.copy(disk, e.pos + s, s, Math.min(e.data.length, s + SECTOR));
    }
  });

  const pool = new Pool('/power-cut-model', store);
  const mounted = new Map(disks.map((d, i) => [i + 1, new MemoryBackend(d)]));
  pool.recoverStaleReservations();
  const check = checkPool(pool);
  if (!check.clean) problems.push(`check: ${check.errors.slice(0, 3).join('; ')}`);
  const backends = new BackendSet((id) => pool.backend(id), async (r) => mounted.get(r.id)!);

  const acked = new Map<VolumeModel, Map<number, number>>();
  for (const a of ackEvents) {
    if (a.at > at) continue;
    let map = acked.get(a.m);
    if (!map) acked.set(a.m, (map = new Map()));
    for (const [sector, index] of a.sectors) if (index > (map.get(sector) ?? -1)) map.set(sector, index);
  }

  for (const v of pool.volumeList()) {
    const m = volumes.find((x) => x.uid === v.id);
    if (!m) { problems.push(`volume ${v.name} (id ${v.id}) exists but the workload never made it`); continue; }
    const io = new VolumeIo(pool, backends, { pid: 1, startTime: 0, host: 'check' }, v.id);
    const buf = Buffer.alloc(v.sizeBytes);
    await io.read(buf, v.sizeBytes, 0);
    const ackedHere = acked.get(m) ?? new Map<number, number>();
    for (let sector = 0; sector * SECTOR < v.sizeBytes; sector++) {
      result.sectorsChecked++;
      const got = buf.subarray(sector * SECTOR, Math.min(v.sizeBytes, (sector + 1) * SECTOR));
      const ops = m.ops.get(sector);
      if (!ops) {
        if (!got.equals(ZERO_SECTOR.subarray(0, got.length))) problems.push(`volume ${v.name} sector ${sector}: never written, but holds bytes of volume ${got.readUInt32LE(0)} sector ${got.readUInt32LE(4)}`);
        continue;
      }
      const lastAcked = ackedHere.get(sector);
      const allowed = lastAcked === undefined ? ops : ops.filter((op) => op.index >= lastAcked);
      const zeroOk = lastAcked === undefined || allowed.some((op) => op.zero);
      if (got.equals(ZERO_SECTOR.subarray(0, got.length))) {
        if (!zeroOk) problems.push(`volume ${v.name} sector ${sector}: zeros, but an fsynced write (op ${lastAcked}) put data there`);
        continue;
      }
      const uid = got.readUInt32LE(0);
      const s = got.readUInt32LE(8);
      const ok = allowed.some((op) => !op.zero && op.seq === s) && got.equals(stamp(m.uid, sector, s).subarray(0, got.length));
      if (!ok) {
        problems.push(uid !== m.uid || got.readUInt32LE(4) !== sector
          ? `volume ${v.name} sector ${sector}: shows bytes of volume ${uid} sector ${got.readUInt32LE(4)} (op seq ${s})`
          : `volume ${v.name} sector ${sector}: holds op seq ${s}, not allowed here (last fsynced op ${lastAcked ?? 'none'})`);
      }
    }
  }
  return problems;
}
