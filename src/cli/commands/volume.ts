import { setTimeout as sleep } from 'node:timers/promises';
import type { Argv } from 'yargs';
import { selfHolder } from '../../pool/holder';
import { checkVolumeSize, type Pool } from '../../pool/pool';
import type { VolumeRecord } from '../../store/records';
import { FsError } from '../../util/errors';
import { formatSize, parseSize } from '../../util/size';
import { VolumeIo } from '../../volume/volume-io';
import { withPool, type GlobalArgs } from '../context';
import { emit, table } from '../output';

function sizeArg(text: string): number {
  let n: number;
  try {
    n = parseSize(text);
  } catch (err) {
    throw new FsError('EINVAL', (err as Error).message);
  }
  checkVolumeSize(n);
  return n;
}

function modeArg(text: string): number {
  if (!/^0?[0-7]{3}$/.test(text)) throw new FsError('EINVAL', `bad mode ${text}: give octal permissions such as 0600 or 0640`);
  return parseInt(text, 8);
}

/** How long a command waits for a volume just closed: the kernel tells the daemon after close(2) returns, and the daemon then commits. */
const CLOSE_GRACE_MS = 3000;

/**
 * A daemon serving the volume has it open (maybe read-only, as `losetup -r` does) and caches its
 * size. A volume closed a moment ago may still be released by its daemon: waited for briefly.
 */
async function refuseIfInUse(pool: Pool, v: VolumeRecord, action: string): Promise<void> {
  for (const end = Date.now() + CLOSE_GRACE_MS; ;) {
    pool.freshView();
    const why = pool.openElsewhere(v.id);
    if (!why) return;
    if (Date.now() >= end) throw new FsError('EBUSY', `cannot ${action} volume "${v.name}": it is ${why}`);
    await sleep(100);
  }
}

/** allocatedBytes: what the volume maps (blocks shared with snapshots included); exclusiveBytes: what deleting it gives back. */
const view = (pool: Pool, v: VolumeRecord): { id: number; name: string; sizeBytes: number; allocatedBytes: number; exclusiveBytes: number; createdAt: string } => ({
  id: v.id, name: v.name, sizeBytes: v.sizeBytes, allocatedBytes: pool.mappedBytes(v.id, v.sizeBytes), exclusiveBytes: pool.exclusiveBytes(v.id), createdAt: new Date(v.createdAt).toISOString(),
});

export function volumeCommand(y: Argv<GlobalArgs>): Argv<GlobalArgs> {
  return y.command('volume', 'create, list, inspect, resize, rename and delete volumes', (b) => b
    .command('create <name>', 'create a thin volume (no space is allocated until written)', (c) => c
      .positional('name', { type: 'string', demandOption: true })
      .option('size', { type: 'string', demandOption: true, describe: 'virtual size, e.g. 100G, 16T' })
      .option('mode', { type: 'string', default: '0600', describe: 'permissions of the volume file in the mount (octal); volumes are private unless shared here or with chmod' }),
    (a) => withPool(a, (pool) => {
      const v = pool.createVolume(a.name, sizeArg(a.size), modeArg(a.mode));
      emit(a.json, { id: v.id, name: v.name, sizeBytes: v.sizeBytes }, () => [`created volume ${v.name}: id ${v.id}, size ${formatSize(v.sizeBytes)} (${v.sizeBytes} bytes)`]);
    }))
    .command('list', 'list volumes', (c) => c, (a) => withPool(a, (pool) => {
      const list = pool.volumeList().map((v) => view(pool, v));
      emit(a.json, list, () => table([['ID', 'NAME', 'SIZE', 'ALLOCATED', 'EXCLUSIVE'],
        ...list.map((v) => [String(v.id), v.name, formatSize(v.sizeBytes), formatSize(v.allocatedBytes), formatSize(v.exclusiveBytes)])]));
    }))
    .command('info <name>', 'show one volume', (c) => c.positional('name', { type: 'string', demandOption: true }), (a) => withPool(a, (pool) => {
      const v = view(pool, pool.volume(a.name));
      const extents = pool.mapOf(v.id).length;
      const writer = pool.claimant(v.id);
      const snapshots = pool.snapshotList(v.id).map((s) => s.name);
      emit(a.json, { ...v, extents, writerPid: writer?.pid ?? null, snapshots }, () => [
        `volume ${v.name} (id ${v.id})`,
        `  size:      ${formatSize(v.sizeBytes)} (${v.sizeBytes} bytes)`,
        `  allocated: ${formatSize(v.allocatedBytes)} (${v.allocatedBytes} bytes) in ${extents} extents, ${formatSize(v.exclusiveBytes)} of it its own`,
        `  snapshots: ${snapshots.length === 0 ? 'none' : snapshots.join(', ')}`,
        `  writer:    ${writer ? `pid ${writer.pid}` : 'none'}`,
      ]);
    }))
    .command('resize <name>', 'grow or shrink a volume (shrinking frees the space past the new end)', (c) => c
      .positional('name', { type: 'string', demandOption: true })
      .option('size', { type: 'string', demandOption: true }),
    (a) => withPool(a, async (pool) => {
      const v = pool.volume(a.name);
      const size = sizeArg(a.size);
      await refuseIfInUse(pool, v, 'resize');
      const holder = selfHolder();
      pool.claim(v.id, holder);
      const backends = pool.backendSet();
      const io = new VolumeIo(pool, backends, holder, v.id);
      try {
        await io.truncate(size);
      } finally {
        await io.close();
        pool.unclaim(v.id, holder);
        await backends.closeAll();
      }
      const r = view(pool, pool.volume(a.name));
      emit(a.json, r, () => [`resized volume ${r.name} to ${formatSize(r.sizeBytes)} (${r.sizeBytes} bytes)`]);
    }))
    .command('rename <old> <new>', 'rename a volume', (c) => c.positional('old', { type: 'string', demandOption: true }).positional('new', { type: 'string', demandOption: true }),
      (a) => withPool(a, (pool) => {
        const r = view(pool, pool.renameVolume(a.old, a.new));
        emit(a.json, r, () => [`renamed volume ${a.old} to ${r.name}`]);
      }))
    .command('delete <name>', 'delete a volume and free its space (refused while it has snapshots)', (c) => c.positional('name', { type: 'string', demandOption: true }),
      (a) => withPool(a, async (pool) => {
        const v = pool.volume(a.name);
        await refuseIfInUse(pool, v, 'delete');
        const freedBytes = pool.deleteVolume(v.id);
        emit(a.json, { deleted: v.name, id: v.id, freedBytes }, () => [`deleted volume ${v.name} (freed ${formatSize(freedBytes)})`]);
      }))
    .command('clone <snapshot> <name>', 'a new writable volume that starts as snapshot VOLUME@NAME and shares its blocks (constant time)', (c) => c
      .positional('snapshot', { type: 'string', demandOption: true })
      .positional('name', { type: 'string', demandOption: true })
      .option('mode', { type: 'string', default: '0600', describe: 'permissions of the new volume file in the mount (octal)' }),
    (a) => withPool(a, (pool) => {
      const { snapshot } = pool.snapshot(a.snapshot);
      const v = view(pool, pool.cloneVolume(snapshot.id, a.name, modeArg(a.mode)));
      emit(a.json, v, () => [`created volume ${v.name} (id ${v.id}) from ${a.snapshot}, size ${formatSize(v.sizeBytes)}`]);
    }))
    .command('revert <name> <snapshot>', 'put a volume back to one of its snapshots, VOLUME@NAME (refused while the volume is open); what it wrote since is freed', (c) => c
      .positional('name', { type: 'string', demandOption: true })
      .positional('snapshot', { type: 'string', demandOption: true }),
    (a) => withPool(a, async (pool) => {
      const v = pool.volume(a.name);
      const { snapshot } = pool.snapshot(a.snapshot);
      await refuseIfInUse(pool, v, 'revert');
      const freedBytes = pool.revertVolume(v.id, snapshot.id);
      emit(a.json, { reverted: v.name, to: a.snapshot, freedBytes }, () => [`reverted volume ${v.name} to ${a.snapshot} (freed ${formatSize(freedBytes)})`]);
    }))
    .demandCommand(1, 'say which: volume create|list|info|resize|rename|delete|clone|revert'), () => undefined);
}
