import { expect } from 'chai';
import type { ControlConnection } from '../../src/control/control-server';
import { HoldService } from '../../src/daemon/hold-service';
import { holderId } from '../../src/pool/holder';
import type { ChangeRecord } from '../../src/store/records';
import { MemoryPool } from '../support/memory-pool';

const MiB = 2 ** 20;

function connection(): ControlConnection & { close(): void } {
  const closers: (() => void)[] = [];
  return { onClose: (fn) => { closers.push(fn); }, close: () => { for (const fn of closers.splice(0)) fn(); } };
}

/** A daemon's hold service over a memory pool, with a change whose batch names this daemon. */
async function setup(): Promise<{ mp: MemoryPool; hold: HoldService; id: string; vol: number; ioOf: () => ReturnType<MemoryPool['io']> }> {
  const mp = MemoryPool.create(64 * MiB);
  const id = holderId(mp.holder);
  mp.pool.registry.register(mp.holder, '/mnt', '/sock');
  const vol = mp.pool.createVolume('v', 64 * MiB).id;
  const io = mp.io(vol);
  const change: ChangeRecord = {
    id: 7, request: { kind: 'rebalance' }, title: 'rebalance', state: 'running', phase: 'hold', controllerPid: 1, startedAt: 0, updatedAt: 0,
    bytesTotal: 0, bytesCopied: 0, copyMs: 0, batchesDone: 0, batchesAborted: 0, maxHoldMs: 0, nextSeq: 2, resumes: 0, fenced: [], skippedVolumes: [], reports: [],
    batch: { seq: 1, volume: vol, start: 0, end: MiB, moves: [], daemons: [id], state: 'holding', startedAt: 0 },
  };
  mp.store.txn(() => mp.store.changes.put(7, change));
  const hold = new HoldService(mp.pool, id, () => [io]);
  return { mp, hold, id, vol, ioOf: () => io };
}

describe('hold service: the daemon side of a layout change', () => {
  it('a hold waits for in-flight I/O, commits what the daemon has not, queues new I/O, and release lets it go', async () => {
    const { mp, hold, id, vol, ioOf } = await setup();
    const io = ioOf();
    await io.write(Buffer.alloc(64 * 1024, 1), 0);
    expect(mp.pool.mapOf(vol), 'not committed before the hold').to.deep.equal([]);
    const conn = connection();
    await hold.handle({ op: 'hold', change: 7, seq: 1, volume: vol, start: 0, end: MiB }, conn);
    expect(mp.pool.mapOf(vol), 'the hold committed it').to.have.length(1);
    expect(mp.pool.registry.holding(id, 7, 1)).to.equal(true);
    let written = false;
    const queued = io.write(Buffer.alloc(4096, 2), 4096).then(() => { written = true; });
    await new Promise((r) => setTimeout(r, 20));
    expect(written, 'I/O on the held range waits').to.equal(false);
    await hold.handle({ op: 'release', change: 7, seq: 1 }, conn);
    await queued;
    expect(written).to.equal(true);
    expect(mp.pool.registry.holding(id, 7, 1)).to.equal(false);
  });

  it('apply checks the generation the controller committed', async () => {
    const { hold, vol } = await setup();
    const conn = connection();
    await hold.handle({ op: 'hold', change: 7, seq: 1, volume: vol, start: 0, end: MiB }, conn);
    await hold.handle({ op: 'apply', change: 7, seq: 1, volume: vol, generation: 0 }, conn);
    const wrong = await hold.handle({ op: 'apply', change: 7, seq: 1, volume: vol, generation: 5 }, conn).then(() => undefined, (e: Error) => e);
    expect(wrong?.message).to.match(/generation 0, the controller says 5/);
    hold.releaseAll();
  });

  it('a hold is broken (record first) when the controller\'s connection goes away', async () => {
    const { mp, hold, id, vol, ioOf } = await setup();
    const conn = connection();
    await hold.handle({ op: 'hold', change: 7, seq: 1, volume: vol, start: 0, end: MiB }, conn);
    conn.close();
    expect(mp.pool.registry.holding(id, 7, 1)).to.equal(false);
    await ioOf().write(Buffer.alloc(4096, 3), 0);
  });

  it('refuses a hold for a batch that is not current, and one when fenced', async () => {
    const { mp, hold, id, vol } = await setup();
    const stale = await hold.handle({ op: 'hold', change: 7, seq: 9, volume: vol, start: 0, end: MiB }, connection()).then(() => undefined, (e: Error) => e);
    expect(stale?.message).to.match(/no longer at batch 9/);
    mp.store.txn(() => mp.pool.registry.fence(id, { change: 7, at: 0, reason: 'late' }));
    const fenced = await hold.handle({ op: 'hold', change: 7, seq: 1, volume: vol, start: 0, end: MiB }, connection()).then(() => undefined, (e: Error) => e);
    expect(fenced?.message).to.match(/fenced by change 7/);
  });
});
