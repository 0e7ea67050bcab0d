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

/** A daemon serving the volume has it open (maybe read-only, as `losetup -r` does) and caches its size. */
function refuseIfInUse(pool: Pool, v: VolumeRecord, action: string): void {
  const why = pool.openElsewhere(v.id);
  if (why) throw new FsError('EBUSY', `cannot ${action} volume "${v.name}": it is ${why}`);
}

const view = (v: VolumeRecord): object => ({ id: v.id, name: v.name, sizeBytes: v.sizeBytes, allocatedBytes: v.allocatedBytes, createdAt: new Date(v.createdAt).toISOString() });

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
      const list = pool.volumeList();
      emit(a.json, list.map(view), () => table([['ID', 'NAME', 'SIZE', 'ALLOCATED'],
        ...list.map((v) => [String(v.id), v.name, formatSize(v.sizeBytes), formatSize(v.allocatedBytes)])]));
    }))
    .command('info <name>', 'show one volume', (c) => c.positional('name', { type: 'string', demandOption: true }), (a) => withPool(a, (pool) => {
      const v = pool.volume(a.name);
      const extents = pool.mapOf(v.id).length;
      const writer = pool.claimant(v.id);
      emit(a.json, { ...view(v), extents, writerPid: writer?.pid ?? null }, () => [
        `volume ${v.name} (id ${v.id})`,
        `  size:      ${formatSize(v.sizeBytes)} (${v.sizeBytes} bytes)`,
        `  allocated: ${formatSize(v.allocatedBytes)} (${v.allocatedBytes} bytes) in ${extents} extents`,
        `  writer:    ${writer ? `pid ${writer.pid}` : 'none'}`,
      ]);
    }))
    .command('resize <name>', 'grow or shrink a volume (shrinking frees the space past the new end)', (c) => c
      .positional('name', { type: 'string', demandOption: true })
      .option('size', { type: 'string', demandOption: true }),
    (a) => withPool(a, async (pool) => {
      const v = pool.volume(a.name);
      const size = sizeArg(a.size);
      refuseIfInUse(pool, v, 'resize');
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
      const r = pool.volume(a.name);
      emit(a.json, view(r), () => [`resized volume ${r.name} to ${formatSize(r.sizeBytes)} (${r.sizeBytes} bytes)`]);
    }))
    .command('rename <old> <new>', 'rename a volume', (c) => c.positional('old', { type: 'string', demandOption: true }).positional('new', { type: 'string', demandOption: true }),
      (a) => withPool(a, (pool) => {
        const r = pool.renameVolume(a.old, a.new);
        emit(a.json, view(r), () => [`renamed volume ${a.old} to ${r.name}`]);
      }))
    .command('delete <name>', 'delete a volume and free its space', (c) => c.positional('name', { type: 'string', demandOption: true }),
      (a) => withPool(a, async (pool) => {
        const v = pool.volume(a.name);
        refuseIfInUse(pool, v, 'delete');
        pool.deleteVolume(v.id);
        emit(a.json, { deleted: v.name, id: v.id, freedBytes: v.allocatedBytes }, () => [`deleted volume ${v.name} (freed ${formatSize(v.allocatedBytes)})`]);
      }))
    .demandCommand(1, 'say which: volume create|list|info|resize|rename|delete'), () => undefined);
}
