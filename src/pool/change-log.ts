import type { MetaStore } from '../store/meta-store';
import type { ChangeRecord, ChangeRequest, Lease } from '../store/records';
import { FsError, LeaseLost } from '../util/errors';
import { holderId, selfHolder } from './holder';
import { leaseLive } from './registry';

function describeRequest(store: MetaStore, r: ChangeRequest): string {
  switch (r.kind) {
    case 'drain': return `drain backend ${r.backend}`;
    case 'rebalance': return 'rebalance';
    case 'migrate': {
      const name = store.volumes.get(r.volume)?.name ?? String(r.volume);
      const range = r.offset === 0 && r.length === Number.MAX_SAFE_INTEGER ? '' : ` [${r.offset},+${r.length})`;
      return `migrate volume ${name}${range} to backend ${r.to}`;
    }
  }
}

const sameRequest = (a: ChangeRequest, b: ChangeRequest): boolean => JSON.stringify(a) === JSON.stringify(b);

/**
 * Change records and the controller lease: one controller per pool at a time. A controller
 * that died (or stopped renewing) loses the lease; the next one takes it, resumes the change
 * when it asks for the same thing, and otherwise closes it as interrupted.
 */
export class ChangeLog {
  readonly me = holderId(selfHolder());

  constructor(private readonly store: MetaStore, private readonly dir: string) {}

  /** The controller lease as recorded (live or not: see leaseLive). */
  lease(): Lease | undefined {
    return this.store.leases.get('controller');
  }

  get(id: number): ChangeRecord {
    const c = this.store.changes.get(id);
    if (!c) throw new Error(`change ${id} missing from pool ${this.dir}`);
    return c;
  }

  /** Newest first. */
  recent(limit: number): ChangeRecord[] {
    return Array.from(this.store.changes.getRange({ reverse: true, limit }), ({ value }) => value);
  }

  /** Takes the lease and returns the change to run: a resumed one, or a new one. */
  begin(request: ChangeRequest): { change: ChangeRecord; resumed: boolean; interrupted?: ChangeRecord } {
    const store = this.store;
    return store.txn(() => {
      const lease = store.leases.get('controller');
      if (leaseLive(lease) && lease.holder !== this.me) {
        const other = store.changes.get(lease.change);
        throw new FsError('EBUSY', `another layout change is running: change ${lease.change} (${other?.title ?? '?'}) by pid ${lease.pid}; wait for it (thinvol status --watch)`);
      }
      const unfinished = this.recent(20).find((c) => c.state === 'running');
      const now = Date.now();
      let interrupted: ChangeRecord | undefined;
      if (unfinished && sameRequest(unfinished.request, request)) {
        const change: ChangeRecord = { ...unfinished, controllerPid: process.pid, resumes: unfinished.resumes + 1, updatedAt: now };
        store.changes.put(change.id, change);
        store.leases.put('controller', { holder: this.me, pid: process.pid, change: change.id, renewedAt: now });
        return { change, resumed: true };
      }
      if (unfinished) {
        interrupted = { ...unfinished, state: 'interrupted', phase: 'finished', finishedAt: now, updatedAt: now, outcome: `interrupted: its controller (pid ${unfinished.controllerPid}) stopped, and change was asked for something else` };
        store.changes.put(interrupted.id, interrupted);
      }
      const last = [...store.changes.getKeys({ reverse: true, limit: 1 })][0];
      const change: ChangeRecord = {
        id: (last ?? 0) + 1, request, title: describeRequest(this.store, request), state: 'running', phase: 'plan',
        controllerPid: process.pid, startedAt: now, updatedAt: now, bytesTotal: 0, bytesCopied: 0, copyMs: 0,
        batchesDone: 0, batchesAborted: 0, maxHoldMs: 0, nextSeq: 1, resumes: 0, fenced: [], skippedVolumes: [], reports: [],
      };
      store.changes.put(change.id, change);
      store.leases.put('controller', { holder: this.me, pid: process.pid, change: change.id, renewedAt: now });
      return { change, resumed: false, ...(interrupted ? { interrupted } : {}) };
    });
  }

  /** Inside a transaction: throws unless this process still holds the lease for `change`. */
  assertLease(change: number): void {
    const lease = this.store.leases.get('controller');
    if (!lease || lease.holder !== this.me || lease.change !== change) {
      throw new LeaseLost(`lost the controller lease for change ${change} (another controller took over after this one stopped renewing it)`);
    }
  }

  /** Renews the lease and rewrites the change with `edit`, in one transaction. */
  update(id: number, edit: (c: ChangeRecord) => ChangeRecord): ChangeRecord {
    return this.store.txn(() => this.updateInTxn(id, edit));
  }

  updateInTxn(id: number, edit: (c: ChangeRecord) => ChangeRecord): ChangeRecord {
    this.assertLease(id);
    const now = Date.now();
    const next = { ...edit(this.get(id)), updatedAt: now };
    this.store.changes.put(id, next);
    this.store.leases.put('controller', { holder: this.me, pid: process.pid, change: id, renewedAt: now });
    return next;
  }

  end(): void {
    this.store.txn(() => {
      const lease = this.store.leases.get('controller');
      if (lease?.holder === this.me) this.store.leases.remove('controller');
    });
  }
}

/** The change without a batch in progress. */
export function withoutBatch(c: ChangeRecord): ChangeRecord {
  const { batch: _batch, ...rest } = c;
  return rest;
}
