import { expect } from 'chai';
import { checkPool } from '../../src/check/check-pool';
import { commitRecordTid } from '../../src/reclaim/ext4/jbd2-blocks';
import type { ByteRange, PlanResult, Planner } from '../../src/reclaim/planner';
import { Reclaimer } from '../../src/reclaim/reclaimer';
import type { VolumeIo } from '../../src/volume/volume-io';
import { MemoryPool } from '../support/memory-pool';

const KiB = 1024;
const MiB = 1024 * KiB;

/**
 * A planner standing in for the ext4/XFS readers: the test says what the guest holds free in
 * its committed view and how far its journal has committed. `during` runs while the scan reads
 * the volume (a guest writing meanwhile).
 */
class FakeGuest {
  free: { offset: number; len: number }[] = [];
  commit = 1;
  ok = true;
  /** Where its jbd2 journal lies; commit records written there are noted as they arrive. */
  journal: ByteRange[] = [];
  during: (() => Promise<void>) | undefined;

  planner(): Planner {
    return async (reader): Promise<PlanResult> => {
      await reader.read(0, 4096);
      if (this.during) await this.during();
      if (!this.ok) return { ok: false, fs: 'ext4', reason: 'journal checksum mismatch' };
      return { ok: true, fs: 'ext4', blockSize: 4096, examinedBlocks: reader.sizeBytes / 4096, free: this.free, commit: { seq: this.commit, exact: true }, journal: this.journal, commitRecord: commitRecordTid, notes: [] };
    };
  }
}

async function setup(): Promise<{ mp: MemoryPool; io: VolumeIo; guest: FakeGuest; reclaimer: Reclaimer }> {
  const mp = MemoryPool.create(64 * MiB);
  const io = mp.io(mp.pool.createVolume('g', 32 * MiB).id);
  const guest = new FakeGuest();
  const reclaimer = new Reclaimer(io, false, guest.planner());
  io.onWrite = (a, b, data, offset) => reclaimer.written(a, b, data, offset);
  return { mp, io, guest, reclaimer };
}

/** A jbd2 commit block for transaction `tid`. */
function commitBlock(tid: number): Buffer {
  const b = Buffer.alloc(4096);
  b.writeUInt32BE(0xc03b3998, 0);
  b.writeUInt32BE(2, 4);
  b.writeUInt32BE(tid, 8);
  return b;
}

const JOURNAL = 16 * MiB;

const allocated = (io: VolumeIo, a: number, b: number): number => io.mapped(a, b).reduce((n, e) => n + e.len, 0);

describe('reclaim release rule (R1-R5) over a fake guest', () => {
  it('R2/R3: a freed block goes only once two commits passed after the first scan that followed its last write', async () => {
    const { io, guest, reclaimer } = await setup();
    await io.write(Buffer.alloc(MiB, 1), 0);
    guest.free = [{ offset: 0, len: MiB }];
    guest.commit = 10;
    let r = await reclaimer.run(false);
    expect(r.releasedBytes, 'first scan after the write').to.equal(0);
    expect(r.keptRecentBytes).to.equal(MiB);
    guest.commit = 11;
    r = await reclaimer.run(false);
    expect(r.releasedBytes, 'one commit later').to.equal(0);
    guest.commit = 12;
    r = await reclaimer.run(false);
    expect(r.releasedBytes, 'two commits later').to.equal(MiB);
    expect(allocated(io, 0, MiB)).to.equal(0);
  });

  it('R4: a write that lands while the scan runs keeps its block, whatever the plan said', async () => {
    const { io, guest, reclaimer } = await setup();
    await io.write(Buffer.alloc(MiB, 1), 0);
    guest.free = [{ offset: 0, len: MiB }];
    for (const c of [10, 11, 12]) {
      guest.commit = c;
      if (c === 12) guest.during = () => io.write(Buffer.alloc(4096, 2), 64 * KiB).then(() => undefined);
      await reclaimer.run(false);
    }
    const buf = Buffer.alloc(4096);
    await io.read(buf, 4096, 64 * KiB);
    expect(buf.every((x) => x === 2), 'the write made during the scan reads back').to.equal(true);
    expect(allocated(io, 64 * KiB, 128 * KiB)).to.equal(64 * KiB);
  });

  it('R5: a journal it does not understand releases nothing, and says why', async () => {
    const { io, guest, reclaimer } = await setup();
    await io.write(Buffer.alloc(MiB, 1), 0);
    guest.free = [{ offset: 0, len: MiB }];
    guest.ok = false;
    for (const c of [10, 11, 12, 13]) {
      guest.commit = c;
      const r = await reclaimer.run(false);
      expect(r.releasedBytes).to.equal(0);
      expect(r.reason).to.match(/checksum/);
    }
    expect(allocated(io, 0, MiB)).to.equal(MiB);
  });

  it('releases only what the guest holds free, counts it as reclaimed, and the space comes back at the commit', async () => {
    const { mp, io, guest, reclaimer } = await setup();
    await io.write(Buffer.alloc(4 * MiB, 1), 0);
    await io.commit();
    guest.free = [{ offset: MiB, len: MiB + 100 }];
    for (const c of [10, 11, 12]) {
      guest.commit = c;
      await reclaimer.run(false);
    }
    expect(allocated(io, 0, 4 * MiB)).to.equal(3 * MiB);
    expect(mp.pool.volume('g').allocatedBytes, 'not committed yet').to.equal(4 * MiB);
    await io.commit();
    expect(mp.pool.volume('g')).to.include({ allocatedBytes: 3 * MiB, reclaimedBytes: MiB });
    expect(checkPool(mp.pool).clean).to.equal(true);
  });

  it('a dry run releases nothing but reports what it would', async () => {
    const { io, guest, reclaimer } = await setup();
    await io.write(Buffer.alloc(MiB, 1), 0);
    guest.free = [{ offset: 0, len: MiB }];
    let r = await reclaimer.run(true);
    for (const c of [11, 12]) {
      guest.commit = c;
      r = await reclaimer.run(true);
    }
    expect(r.releasedBytes).to.equal(0);
    expect(r.candidateBytes - r.keptRecentBytes).to.equal(MiB);
    expect(allocated(io, 0, MiB)).to.equal(MiB);
  });

  it('cold (nobody can have the guest mounted): free blocks go at once', async () => {
    const { io, guest } = await setup();
    await io.write(Buffer.alloc(MiB, 1), 0);
    guest.free = [{ offset: 0, len: MiB }];
    const r = await new Reclaimer(io, true, guest.planner()).run(false);
    expect(r.releasedBytes).to.equal(MiB);
  });

  describe('ext4 commit records noted as they arrive', () => {
    it('a block written before commit record t arrived goes once the guest has committed t + 1, with no scan in between', async () => {
      const { io, guest, reclaimer } = await setup();
      guest.journal = [{ offset: JOURNAL, len: MiB }];
      guest.commit = 10;
      await reclaimer.run(false);
      await io.write(Buffer.alloc(MiB, 1), 0);
      await io.write(commitBlock(11), JOURNAL + 8192);
      guest.free = [{ offset: 0, len: MiB }];
      guest.commit = 11;
      let r = await reclaimer.run(false);
      expect(r.releasedBytes, 'its allocation may still be in transaction 12').to.equal(0);
      await io.write(commitBlock(12), JOURNAL + 12288);
      guest.commit = 12;
      r = await reclaimer.run(false);
      expect(r.releasedBytes, 'one commit past the record, where the scan rule alone wants two').to.equal(MiB);
      expect(allocated(io, 0, MiB)).to.equal(0);
    });

    const ignored: [string, (io: VolumeIo, reclaimer: Reclaimer, guest: FakeGuest) => Promise<void>][] = [
      ['one naming a transaction before the last scan', async (io, reclaimer, guest) => {
        await reclaimer.run(false);
        await io.write(Buffer.alloc(MiB, 1), 0);
        await io.write(commitBlock(9), JOURNAL);
        guest.commit = 11;
      }],
      ['one outside the journal', async (io, reclaimer, guest) => {
        await reclaimer.run(false);
        await io.write(Buffer.alloc(MiB, 1), 0);
        await io.write(commitBlock(11), 8 * MiB);
        guest.commit = 12;
      }],
      ['one that arrived before a scan found the journal', async (io, reclaimer, guest) => {
        await io.write(Buffer.alloc(MiB, 1), 0);
        await io.write(commitBlock(11), JOURNAL);
        guest.commit = 11;
        await reclaimer.run(false);
        guest.commit = 12;
      }],
    ];
    for (const [what, steps] of ignored) {
      it(`ignores ${what}`, async () => {
        const { io, guest, reclaimer } = await setup();
        guest.journal = [{ offset: JOURNAL, len: MiB }];
        guest.commit = 10;
        await steps(io, reclaimer, guest);
        guest.free = [{ offset: 0, len: MiB }];
        const r = await reclaimer.run(false);
        expect(r.releasedBytes).to.equal(0);
        expect(r.keptRecentBytes).to.equal(MiB);
      });
    }
  });
});
