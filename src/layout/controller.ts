import type { BackendSet } from '../backend/backend-set';
import { ControlSession, controlRequest } from '../control/control-client';
import type { Request } from '../control/protocol';
import type { Pool } from '../pool/pool';
import { HOLE_BACKEND, type BatchRecord, type ChangeRecord, type ChangeRequest, type DaemonRecord, type DaemonReport, type Move } from '../store/records';
import { Relocation, StaleBatch } from '../pool/relocation';
import { FsError, LeaseLost } from '../util/errors';
import { logger } from '../util/log';
import type { ChangeLog } from '../pool/change-log';
import { withoutBatch } from '../pool/change-log';
import { assignRuns, planBatch, rebalanceStep, type BatchLimits, type PlacedExtent, type PlannedBatch } from './plan-batch';

const debug = logger('layout');

export interface ControllerOptions {
  /** How long a daemon has to report each step (and how stale a heartbeat may be) before it is fenced. */
  timeoutMs: number;
  limits: BatchLimits;
  /** Set to stop after the current batch (the change stays resumable). */
  stop?: () => boolean;
  /** The backends to copy through (default: the pool's files). */
  backends?: BackendSet;
}

interface Participant { daemon: DaemonRecord; session: ControlSession; heldAt: number }

interface Scope { needs: (e: PlacedExtent) => boolean; to: number | undefined; bytes: number }

const MAX_REPORTS = 32;
const MAX_PASSES = 4;

/**
 * Runs one layout change (migrate, drain, rebalance) batch by batch through the daemons that
 * serve the affected volumes: HOLD the range, COPY to new extents, APPLY the new map generation
 * (every daemon switches to it and reports), RELEASE held I/O, and only then free the old
 * extents. A daemon that does not report in time is fenced and its volumes are left alone.
 */
export class LayoutController {
  readonly #log: ChangeLog;
  readonly #backends: BackendSet;
  #change!: ChangeRecord;
  #cursor: [number, number] = [0, 0];
  #wrapped = false;

  constructor(private readonly pool: Pool, private readonly opts: ControllerOptions) {
    this.#log = pool.changes;
    this.#backends = opts.backends ?? pool.backendSet();
  }

  async run(request: ChangeRequest): Promise<ChangeRecord> {
    this.#check(request);
    const { change, resumed } = this.#log.begin(request);
    this.#change = change;
    this.#cursor = this.#origin();
    try {
      if (request.kind === 'drain') this.pool.setDraining(request.backend, true);
      this.#recover(resumed);
      this.#update((c) => ({ ...c, bytesTotal: c.bytesCopied + this.#remaining() }));
      for (let passes = 1; ;) {
        if (this.opts.stop?.()) return this.#finish('interrupted', 'stopped on request; run the same command again to resume');
        const planned = this.#next();
        if (planned) {
          await this.#runBatch(planned);
          continue;
        }
        // Writes that raced with the drain may have landed behind the cursor: look again.
        if (request.kind !== 'drain' || passes++ >= MAX_PASSES || this.#remaining() === 0) break;
        this.#wrapped = false;
      }
      if (request.kind === 'drain') await this.#dropReservations();
      const skipped = this.#change.skippedVolumes;
      if (skipped.length > 0) {
        const names = skipped.map((v) => this.pool.volumeById(v)?.name ?? String(v)).join(', ');
        return this.#finish('partial', `volumes ${names} kept their allocation: a daemon serving them was fenced; run it again once the daemon has re-registered`);
      }
      return this.#finish('done', this.#doneNote(request));
    } catch (err) {
      if (err instanceof LeaseLost) throw err;
      this.#finish('failed', `failed: ${err instanceof Error ? err.message : String(err)}`);
      throw err;
    } finally {
      this.#log.end();
      await this.#backends.closeAll();
    }
  }

  #check(r: ChangeRequest): void {
    const backends = this.pool.backendList();
    if (r.kind === 'drain') {
      const b = this.pool.backend(r.backend);
      const room = backends.filter((o) => o.id !== b.id && o.draining !== true).reduce((n, o) => n + o.capacityBytes - o.allocatedBytes - o.reservedBytes, 0);
      if (room < b.allocatedBytes) throw new FsError('ENOSPC', `cannot drain backend ${b.id}: it holds ${b.allocatedBytes} bytes, the other backends have ${room} bytes free`);
    }
    if (r.kind === 'migrate') {
      const to = this.pool.backend(r.to);
      if (to.draining === true) throw new FsError('EINVAL', `backend ${to.id} is being drained; migrate to another one`);
    }
  }

  /** A batch left by a controller that died: the map is consistent either way; what the change still owns goes back. */
  #recover(resumed: boolean): void {
    const reloc = this.pool.relocation(`change:${this.#change.id}`);
    this.#update((c) => {
      const freed = reloc.freeAll();
      const applied = c.batch?.state === 'applied' ? c.batch : undefined;
      if (freed > 0 || c.batch) debug('change %d: recovered batch %d (%s), %d bytes given back', c.id, c.batch?.seq ?? 0, c.batch?.state ?? '-', freed);
      return {
        ...withoutBatch(c),
        batchesAborted: c.batchesAborted + (c.batch && !applied ? 1 : 0),
        batchesDone: c.batchesDone + (applied ? 1 : 0),
        bytesCopied: c.bytesCopied + (applied ? applied.moves.reduce((n, m) => n + m.len, 0) : 0),
      };
    });
    if (resumed) debug('change %d resumed after %d batches, %d bytes copied', this.#change.id, this.#change.batchesDone, this.#change.bytesCopied);
  }

  #update(edit: (c: ChangeRecord) => ChangeRecord): void {
    this.#change = this.#log.update(this.#change.id, edit);
  }

  #finish(state: ChangeRecord['state'], outcome: string): ChangeRecord {
    this.#update((c) => ({ ...withoutBatch(c), state, phase: 'finished', finishedAt: Date.now(), outcome }));
    return this.#change;
  }

  #doneNote(r: ChangeRequest): string {
    if (r.kind !== 'drain') return 'done';
    const b = this.pool.backend(r.backend);
    return b.allocatedBytes === 0 && b.reservedBytes === 0
      ? `backend ${b.id} is empty; take it out with: thinvol backend remove ${b.id}`
      : `backend ${b.id} still holds ${b.allocatedBytes + b.reservedBytes} bytes written during the drain; run it again`;
  }

  // Planning

  /** What still has to move, where it goes and how much per batch, from the current counters (once per batch). */
  #scope(): Scope | undefined {
    const r = this.#change.request;
    const skip = new Set(this.#change.skippedVolumes);
    const { bytes } = this.opts.limits;
    switch (r.kind) {
      case 'drain': return { needs: (e) => e.backend === r.backend && !skip.has(e.volume), to: this.pool.mostFreeBackend(), bytes };
      case 'migrate': return { needs: (e) => e.backend !== r.to && e.backend !== HOLE_BACKEND && !skip.has(e.volume), to: r.to, bytes };
      case 'rebalance': {
        const step = rebalanceStep(this.pool.backendList(), bytes);
        return step && { needs: (e) => e.backend === step.from && !skip.has(e.volume), to: step.to, bytes: Math.min(bytes, step.bytes) };
      }
    }
  }

  /** Where a scan starts: the migrated range (in the volume's top layer), or the whole map (every layer, shared ones moved once). */
  #origin(): [number, number] {
    const r = this.#change.request;
    return r.kind === 'migrate' ? [this.#migrateLayer(r.volume), r.offset] : [0, 0];
  }

  #migrateLayer(volume: number): number {
    const v = this.pool.volumeById(volume);
    return v?.layer ?? volume;
  }

  /** The map from a position on; for a migrate, only the asked range of its volume, clipped to it. */
  *#extents(volume: number, offset: number): Iterable<PlacedExtent> {
    const r = this.#change.request;
    if (r.kind !== 'migrate') {
      yield* this.pool.map.from(volume, offset);
      return;
    }
    const end = r.offset + r.length;
    for (const e of this.pool.map.from(volume, offset)) {
      if (e.volume !== this.#migrateLayer(r.volume) || e.vstart >= end) return;
      yield { ...e, len: Math.min(e.len, end - e.vstart) };
    }
  }

  #remaining(): number {
    const r = this.#change.request;
    const scope = this.#scope();
    if (!scope) return 0;
    if (r.kind === 'drain') return this.pool.backend(r.backend).allocatedBytes;
    if (r.kind === 'rebalance') return rebalanceStep(this.pool.backendList(), this.opts.limits.bytes)?.bytes ?? 0;
    let n = 0;
    for (const e of this.#extents(...this.#origin())) if (scope.needs(e)) n += e.len;
    return n;
  }

  /** The next batch, scanning the map from where the last one ended and wrapping around once. */
  #next(): { planned: PlannedBatch; to: number } | undefined {
    const scope = this.#scope();
    if (!scope) return undefined;
    if (scope.to === undefined) throw new FsError('ENOSPC', 'no backend has room for the data being moved');
    const limits = { ...this.opts.limits, bytes: scope.bytes };
    const [volume, offset] = this.#cursor;
    let planned = planBatch(this.#extents(volume, offset), scope.needs, limits);
    if (!planned && !this.#wrapped) {
      this.#wrapped = true;
      planned = planBatch(this.#extents(...this.#origin()), scope.needs, limits);
    }
    if (!planned) return undefined;
    if (planned.volume !== volume || planned.start < offset) this.#wrapped = true;
    this.#cursor = [planned.volume, planned.end];
    return { planned, to: scope.to };
  }

  // One batch

  async #runBatch({ planned, to }: { planned: PlannedBatch; to: number }): Promise<void> {
    const id = this.#change.id;
    const reloc = this.pool.relocation(`change:${id}`);
    const serving = this.#arm(planned);
    if (!serving) return;
    const batch = this.#change.batch!;
    const parts: Participant[] = serving.map((d) => ({ daemon: d, session: new ControlSession(d.socket), heldAt: Date.now() }));
    try {
      // HOLD
      const held = await this.#ask(parts, 'hold', { op: 'hold', change: id, seq: batch.seq, volume: batch.volume, start: batch.start, end: batch.end });
      if (held.length > 0) return this.#abort(reloc, parts, held, 'did not hold', batch.volume);
      // COPY
      const moves = this.#allocate(reloc, planned, to);
      const t0 = Date.now();
      await this.#copy(moves);
      const copyMs = Date.now() - t0;
      // APPLY
      let generation: number;
      try {
        generation = this.pool.txn(() => {
          this.#log.assertLease(id);
          this.#assertStillHeld(batch, serving);
          const g = reloc.apply(batch.volume, moves);
          this.#change = this.#log.updateInTxn(id, (c) => ({ ...c, phase: 'apply', batch: { ...batch, moves, state: 'applied' } }));
          return g;
        });
      } catch (err) {
        if (!(err instanceof StaleBatch)) throw err;
        return this.#abort(reloc, parts, [], err.message, batch.volume);
      }
      const notApplied = await this.#ask(parts, 'apply', { op: 'apply', change: id, seq: batch.seq, volume: batch.volume, generation });
      if (notApplied.length > 0 && this.#rollback(reloc, batch, moves, serving)) {
        const ok = parts.filter((p) => !notApplied.includes(p));
        await this.#ask(ok, 'apply', { op: 'apply', change: id, seq: batch.seq, volume: batch.volume, generation: generation + 1 });
        return this.#abort(reloc, parts, notApplied, 'did not apply', batch.volume);
      }
      // A daemon that did not report but still holds the range will see the new map when it lets go.
      if (notApplied.length > 0) this.#fence(notApplied, 'did not apply', batch.volume);
      // RELEASE: held I/O continues on the new map.
      await this.#ask(parts.filter((p) => !notApplied.includes(p)), 'release', { op: 'release', change: id, seq: batch.seq });
      const longest = Math.max(0, ...parts.map((p) => Date.now() - p.heldAt));
      // The apply commit was durable when it returned: the old extents may be reused now.
      this.pool.txn(() => {
        reloc.freeAll();
        this.#change = this.#log.updateInTxn(id, (c) => ({
          ...withoutBatch(c), phase: 'release', batchesDone: c.batchesDone + 1, bytesCopied: c.bytesCopied + planned.bytes, copyMs: c.copyMs + copyMs, maxHoldMs: Math.max(c.maxHoldMs, longest),
        }));
      });
      debug('change %d batch %d: volume %d [%d,%d) %d bytes moved, copy %d ms, held %d ms', id, batch.seq, batch.volume, batch.start, batch.end, planned.bytes, copyMs, longest);
    } finally {
      for (const p of parts) p.session.close();
    }
  }

  /** Records the batch and the daemons that must hold it, in the same transaction in which a daemon would start serving the volume. */
  #arm(planned: PlannedBatch): DaemonRecord[] | undefined {
    const now = Date.now();
    return this.pool.txn(() => {
      const serving = this.pool.servingLayer(planned.volume);
      const late = serving.filter((d) => !d.fenced && now - d.heartbeatAt > this.opts.timeoutMs)
        .map((d) => ({ daemon: d.id, pid: d.pid, reason: `no heartbeat for ${((now - d.heartbeatAt) / 1000).toFixed(1)} s`, at: now }));
      for (const f of late) {
        this.pool.registry.fence(f.daemon, { change: this.#change.id, at: now, reason: f.reason });
        console.error(`thinvol: daemon pid ${f.pid}: ${f.reason}: fenced; its volumes keep their allocation`);
      }
      if (late.length > 0 || serving.some((d) => d.fenced)) {
        this.#change = this.#log.updateInTxn(this.#change.id, (c) => ({ ...c, skippedVolumes: [...c.skippedVolumes, planned.volume], fenced: [...c.fenced, ...late] }));
        return undefined;
      }
      const batch: BatchRecord = { seq: this.#change.nextSeq, volume: planned.volume, start: planned.start, end: planned.end, moves: planned.moves, daemons: serving.map((d) => d.id), state: 'holding', startedAt: now };
      this.#change = this.#log.updateInTxn(this.#change.id, (c) => ({ ...c, phase: 'hold', nextSeq: c.nextSeq + 1, batch }));
      return serving;
    });
  }

  /** Sends a request to every participant; returns those that failed (no answer in time, or an error). */
  async #ask(parts: Participant[], phase: DaemonReport['phase'], request: Request): Promise<Participant[]> {
    const sent = Date.now();
    const results = await Promise.allSettled(parts.map((p) => p.session.request(request, this.opts.timeoutMs)));
    const failed: Participant[] = [];
    const reports: DaemonReport[] = results.map((r, i) => {
      const p = parts[i]!;
      if (r.status === 'rejected') failed.push(p);
      const note = r.status === 'rejected' ? String((r.reason as Error).message) : undefined;
      return { daemon: p.daemon.id, pid: p.daemon.pid, phase, ms: Date.now() - sent, at: Date.now(), ok: r.status === 'fulfilled', ...(note ? { note } : {}) };
    });
    if (reports.length > 0) this.#update((c) => ({ ...c, reports: [...c.reports, ...reports].slice(-MAX_REPORTS) }));
    return failed;
  }

  #allocate(reloc: Relocation, planned: PlannedBatch, to: number): Move[] {
    return this.pool.txn(() => {
      const runs = reloc.reserveOn(to, planned.volume, planned.bytes);
      const moves = assignRuns(planned.moves, runs);
      this.#change = this.#log.updateInTxn(this.#change.id, (c) => ({ ...c, phase: 'copy', batch: { ...c.batch!, moves, state: 'copying' } }));
      return moves;
    });
  }

  async #copy(moves: Move[]): Promise<void> {
    await Promise.all(moves.map(async (m) => {
      const buf = Buffer.allocUnsafe(m.len);
      await (await this.#backends.get(m.from.backend)).read(buf, 0, m.len, m.from.boff);
      await (await this.#backends.get(m.to!.backend)).write(buf, 0, m.len, m.to!.boff);
    }));
    await this.#backends.flushAll();
  }

  /** Inside the apply transaction: every daemon serving the volume is one that holds the batch. */
  #assertStillHeld(batch: BatchRecord, serving: DaemonRecord[]): void {
    for (const d of serving) {
      if (!this.pool.registry.holding(d.id, this.#change.id, batch.seq)) throw new StaleBatch(`daemon pid ${d.pid} no longer holds the range`);
    }
    for (const d of this.pool.servingLayer(batch.volume)) {
      if (!batch.daemons.includes(d.id)) throw new StaleBatch(`daemon pid ${d.pid} started serving the volume`);
    }
  }

  /** Puts the old map back when a daemon did not switch, if every daemon still holds the range (else the new map stays). */
  #rollback(reloc: Relocation, batch: BatchRecord, moves: Move[], serving: DaemonRecord[]): boolean {
    try {
      this.pool.txn(() => {
        this.#log.assertLease(this.#change.id);
        this.#assertStillHeld(batch, serving);
        reloc.revert(batch.volume, moves);
      });
      return true;
    } catch (err) {
      if (err instanceof StaleBatch) return false;
      throw err;
    }
  }

  /** Gives up a batch: what it took goes back, the held daemons let go, the late ones are fenced. */
  #abort(reloc: Relocation, parts: Participant[], late: Participant[], why: string, volume: number): void {
    this.pool.txn(() => {
      reloc.freeAll();
      this.#change = this.#log.updateInTxn(this.#change.id, (c) => ({ ...withoutBatch(c), batchesAborted: c.batchesAborted + 1 }));
    });
    for (const p of parts) p.session.close();
    if (late.length > 0) this.#fence(late, why, volume);
    debug('change %d: batch aborted: %s', this.#change.id, why);
  }

  #fence(late: Participant[], why: string, volume: number): void {
    const now = Date.now();
    this.pool.txn(() => {
      for (const p of late) this.pool.registry.fence(p.daemon.id, { change: this.#change.id, at: now, reason: `${why} within ${this.opts.timeoutMs / 1000} s` });
      this.#change = this.#log.updateInTxn(this.#change.id, (c) => ({
        ...c,
        skippedVolumes: [...new Set([...c.skippedVolumes, ...late.flatMap((p) => p.daemon.volumes), volume])],
        fenced: [...c.fenced, ...late.map((p) => ({ daemon: p.daemon.id, pid: p.daemon.pid, reason: `${why} within ${this.opts.timeoutMs / 1000} s`, at: now }))],
      }));
    });
    for (const p of late) console.error(`thinvol: daemon pid ${p.daemon.pid} (${p.daemon.mountpoint}) ${why} within ${this.opts.timeoutMs / 1000} s: fenced; its volumes keep their allocation`);
  }

  async #dropReservations(): Promise<void> {
    await Promise.allSettled(this.pool.registry.list().filter((d) => !d.fenced).map((d) => controlRequest(d.socket, { op: 'drop-reservations' }, this.opts.timeoutMs)));
  }
}
