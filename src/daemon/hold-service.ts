import type { ControlConnection } from '../control/control-server';
import type { Request } from '../control/protocol';
import { HOLD_LIMIT_MS } from '../control/timing';
import type { Pool } from '../pool/pool';
import type { HoldRecord } from '../store/records';
import { logger } from '../util/log';
import type { VolumeIo } from '../volume/volume-io';

const debug = logger('hold');


interface ActiveHold { record: HoldRecord; unlock: () => void; timer: NodeJS.Timeout; since: number }

/**
 * The daemon's side of a layout change: hold a range, switch to the new map, release. A batch
 * names a map layer (HoldRecord.volume): a volume's own, or one snapshots share, which every
 * open volume and snapshot reading through it holds.
 */
export class HoldService {
  readonly #holds = new Map<string, ActiveHold>();

  constructor(private readonly pool: Pool, private readonly id: string, private readonly allIo: () => Iterable<VolumeIo>) {}

  /** This daemon's open volumes and snapshots that read map layer `layer`. */
  #reading(layer: number): VolumeIo[] {
    return [...this.allIo()].filter((io) => io.reads(layer));
  }

  async handle(req: Exclude<Request, { op: 'reclaim' | 'snapshot' }>, conn: ControlConnection): Promise<unknown> {
    switch (req.op) {
      case 'hold': return this.#hold({ change: req.change, seq: req.seq, volume: req.volume, start: req.start, end: req.end }, conn);
      case 'apply': return this.#apply(req.change, req.seq, req.volume, req.generation);
      case 'release': return { ms: this.#release(`${req.change}:${req.seq}`, 'released') };
      case 'drop-reservations':
        for (const io of this.allIo()) io.dropReservation();
        return { ok: true };
    }
  }

  /** Waits for in-flight I/O on the range, queues new I/O there, records the hold, reports. */
  async #hold(record: HoldRecord, conn: ControlConnection): Promise<{ ms: number }> {
    const since = Date.now();
    const key = `${record.change}:${record.seq}`;
    if (this.#holds.has(key)) throw new Error(`batch ${key} is already held`);
    const unlocks: (() => void)[] = [];
    const unlock = (): void => { for (const u of unlocks.splice(0)) u(); };
    let refused: string | undefined;
    try {
      for (const io of this.#reading(record.volume)) {
        unlocks.push(await io.lock.acquire(record.start, record.end, true));
        // The controller planned from the store: what this daemon has not committed must be there.
        await io.commit();
      }
      refused = this.pool.registry.addHold(this.id, record);
    } catch (err) {
      unlock();
      throw err;
    }
    if (refused !== undefined) {
      unlock();
      throw new Error(`hold refused: ${refused}`);
    }
    const timer = setTimeout(() => this.#breakHold(key, `broken after ${HOLD_LIMIT_MS / 1000} s without word from the controller`), HOLD_LIMIT_MS);
    this.#holds.set(key, { record, unlock, timer, since });
    conn.onClose(() => this.#breakHold(key, 'broken: the controller went away'));
    debug('hold %s volume %d [%d,%d) after %d ms', key, record.volume, record.start, record.end, Date.now() - since);
    return { ms: Date.now() - since };
  }

  /** Switches this daemon to the committed map generation (the new table face) and checks it. */
  #apply(change: number, seq: number, volume: number, generation: number): { ms: number } {
    const since = Date.now();
    if (!this.#holds.has(`${change}:${seq}`)) throw new Error(`apply for batch ${change}:${seq}, which this daemon does not hold`);
    this.pool.freshView();
    const seen = this.pool.layers.generation(volume) ?? 0;
    if (seen !== generation) throw new Error(`map layer ${volume} is at generation ${seen}, the controller says ${generation}`);
    for (const io of this.#reading(volume)) io.dropReservation();
    return { ms: Date.now() - since };
  }

  /** Ends a hold: the record goes first, then the view is refreshed, then queued I/O runs. */
  #release(key: string, why: string): number {
    const h = this.#holds.get(key);
    if (!h) return 0;
    this.#holds.delete(key);
    clearTimeout(h.timer);
    this.pool.registry.removeHold(this.id, h.record.change, h.record.seq);
    this.pool.freshView();
    h.unlock();
    const ms = Date.now() - h.since;
    if (why !== 'released') console.error(`thinvol: hold of change ${h.record.change} batch ${h.record.seq} ${why}`);
    debug('%s %s after %d ms', why, key, ms);
    return ms;
  }

  /** From a timer or a socket event: a failure here must not take the daemon (and the mount) down. */
  #breakHold(key: string, why: string): void {
    try {
      this.#release(key, why);
    } catch (err) {
      console.error(`thinvol: ending hold ${key} failed: ${err instanceof Error ? err.stack : String(err)}`);
    }
  }

  /** At shutdown. */
  releaseAll(): void {
    for (const key of [...this.#holds.keys()]) this.#release(key, 'released');
  }
}
