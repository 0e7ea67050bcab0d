import { LEASE_MS } from '../control/timing';
import { holderAlive, holderId, parseHolderId } from './holder';
import type { MetaStore } from '../store/meta-store';
import type { DaemonRecord, Fence, Holder, HoldRecord, Lease } from '../store/records';


export function leaseLive(lease: Lease | undefined): lease is Lease {
  if (!lease || Date.now() - lease.renewedAt > LEASE_MS) return false;
  const h = parseHolderId(lease.holder);
  return h !== undefined && holderAlive(h);
}

export type Health = 'ok' | 'late' | 'fenced';

/**
 * Mount daemons registered in the pool: identity, volumes served, heartbeat, holds and fences.
 * Kept in LMDB so that a layout change decides who must hold a range in the same transaction
 * in which a daemon starts serving a volume.
 */
export class Registry {
  /** `layersOf`: the map layers a volume or snapshot reads (a layout change on any of them holds it). */
  constructor(private readonly store: MetaStore, private readonly layersOf: (id: number) => number[] = (id) => [id]) {}

  register(holder: Holder, mountpoint: string, socket: string, binding?: string): void {
    const id = holderId(holder);
    const now = Date.now();
    const rec: DaemonRecord = { ...holder, id, mountpoint, socket, startedAt: now, heartbeatAt: now, epoch: 1, volumes: [], holds: [], ...(binding ? { binding } : {}) };
    this.store.txn(() => { this.store.daemons.put(id, rec); });
  }

  unregister(id: string): void {
    this.store.txn(() => { this.store.daemons.remove(id); });
  }

  /** Live daemons; records of processes that are gone are removed. */
  list(): DaemonRecord[] {
    const live: DaemonRecord[] = [];
    const dead: DaemonRecord[] = [];
    for (const d of this.#records()) (holderAlive(d) ? live : dead).push(d);
    if (dead.length > 0) this.store.txn(() => { for (const d of dead) this.store.daemons.remove(d.id); });
    return live;
  }

  /** Live daemons serving a volume; a plain read, usable inside a transaction. */
  serving(volume: number): DaemonRecord[] {
    return this.#records().filter((d) => d.volumes.includes(volume) && holderAlive(d));
  }

  #records(): DaemonRecord[] {
    return Array.from(this.store.daemons.getRange(), ({ value }) => value);
  }

  /**
   * Records a heartbeat. A daemon that finds itself fenced re-registers here (a new epoch,
   * its stale holds dropped) and gets the fence back so it can say so.
   */
  heartbeat(id: string, freeingBytes = 0, queuedWrites = 0): Fence | undefined {
    return this.store.txn(() => {
      const d = this.store.daemons.get(id);
      if (!d) return undefined;
      const { fenced, ...rest } = d;
      this.store.daemons.put(id, fenced ? { ...rest, heartbeatAt: Date.now(), epoch: d.epoch + 1, holds: [], freeingBytes, queuedWrites } : { ...d, heartbeatAt: Date.now(), freeingBytes, queuedWrites });
      return fenced;
    });
  }

  /**
   * Starts serving a volume unless a layout change is moving one of its ranges right now
   * (then false: the caller waits, so that it never reads a map the change is replacing).
   */
  serve(id: string, volume: number): boolean {
    return this.store.txn(() => {
      if (this.activeBatchOn(volume)) return false;
      const d = this.store.daemons.get(id);
      if (d && !d.volumes.includes(volume)) this.store.daemons.put(id, { ...d, volumes: [...d.volumes, volume] });
      return true;
    });
  }

  unserve(id: string, volume: number): void {
    this.store.txn(() => {
      const d = this.store.daemons.get(id);
      if (d) this.store.daemons.put(id, { ...d, volumes: d.volumes.filter((v) => v !== volume) });
    });
  }

  /** Records a hold; refused (with the reason) when fenced or when the change has moved on. */
  addHold(id: string, hold: HoldRecord): string | undefined {
    return this.store.txn(() => {
      const d = this.store.daemons.get(id);
      if (!d) return 'not registered';
      if (d.fenced) return `fenced by change ${d.fenced.change}: ${d.fenced.reason}`;
      const batch = this.store.changes.get(hold.change)?.batch;
      if (batch?.seq !== hold.seq || !batch.daemons.includes(id)) return `change ${hold.change} is no longer at batch ${hold.seq}`;
      this.store.daemons.put(id, { ...d, holds: [...d.holds, hold] });
      return undefined;
    });
  }

  /** Forgets a hold. Must commit before the daemon lets I/O into the range again. */
  removeHold(id: string, change: number, seq: number): void {
    this.store.txn(() => {
      const d = this.store.daemons.get(id);
      if (d) this.store.daemons.put(id, { ...d, holds: d.holds.filter((h) => h.change !== change || h.seq !== seq) });
    });
  }

  /** Inside a transaction: does the daemon still hold this batch, unfenced? */
  holding(id: string, change: number, seq: number): boolean {
    const d = this.store.daemons.get(id);
    return d !== undefined && !d.fenced && d.holds.some((h) => h.change === change && h.seq === seq);
  }

  /** Inside a transaction: removes a daemon from the control range until it re-registers. */
  fence(id: string, fence: Fence): void {
    const d = this.store.daemons.get(id);
    if (d && !d.fenced) this.store.daemons.put(id, { ...d, fenced: fence });
  }

  health(d: DaemonRecord, lateAfterMs: number): Health {
    if (d.fenced) return 'fenced';
    return Date.now() - d.heartbeatAt > lateAfterMs ? 'late' : 'ok';
  }

  private activeBatchOn(volume: number): boolean {
    const lease = this.store.leases.get('controller');
    if (!leaseLive(lease)) return false;
    const batch = this.store.changes.get(lease.change)?.batch;
    return batch !== undefined && this.layersOf(volume).includes(batch.volume);
  }
}
