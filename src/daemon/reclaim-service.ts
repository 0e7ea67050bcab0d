import type { FuseOps, WriterWatcher } from '../fuse/fuse-ops';
import { Reclaimer, type ReclaimReport } from '../reclaim/reclaimer';
import type { VolumeIo } from '../volume/volume-io';

interface Watched { reclaimer: Reclaimer; scannedAt: number }

/**
 * Reclaim in the daemon: a Reclaimer (with its write history) for every volume this daemon
 * writes, automatic scans of the volumes written since their last scan, and `thinvol reclaim`
 * requests, which take a volume that nobody writes cold.
 */
export class ReclaimService implements WriterWatcher {
  readonly #watched = new Map<VolumeIo, Watched>();

  constructor(private readonly ops: FuseOps) {}

  opened(io: VolumeIo): void {
    const reclaimer = new Reclaimer(io, false);
    this.#watched.set(io, { reclaimer, scannedAt: -1 });
    io.onWrite = (a, b, data, offset) => reclaimer.written(a, b, data, offset);
  }

  closing(io: VolumeIo): void {
    io.onWrite = undefined;
    this.#watched.delete(io);
  }

  /** Scans each watched volume written since its last scan, one after another. */
  async scanWritten(): Promise<void> {
    for (const [io, w] of [...this.#watched]) {
      if (w.reclaimer.history.seq === w.scannedAt) continue;
      w.scannedAt = w.reclaimer.history.seq;
      await w.reclaimer.run(false).catch((err: unknown) => console.error(`thinvol: reclaim of volume ${io.id} failed: ${String(err)}`));
    }
  }

  /**
   * `thinvol reclaim` sent to this daemon. The volume is opened for writing for the run (if it
   * was not), so a guest that starts writing meanwhile is watched like any other: its writes go
   * into the write history the release re-checks (R4), never past a cold reclaim.
   */
  reclaim(name: string, dryRun: boolean): Promise<ReclaimReport> {
    return this.ops.withVolume(name, true, async (io) => {
      const w = this.#watched.get(io);
      if (!w) throw new Error(`volume ${name} opened for writing without a reclaimer`);
      const report = await w.reclaimer.run(dryRun);
      // What the command reports as released is free when it returns.
      await io.commit();
      return report;
    });
  }
}
