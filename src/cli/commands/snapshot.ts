import type { Argv } from 'yargs';
import { controlRequest } from '../../control/control-client';
import { controlSocketPath } from '../../control/control-server';
import type { Pool } from '../../pool/pool';
import type { SnapshotRecord, VolumeRecord } from '../../store/records';
import { FsError } from '../../util/errors';
import { formatSize } from '../../util/size';
import { withPool, type GlobalArgs } from '../context';
import { emit, table } from '../output';

/**
 * Takes the snapshot where the volume's writes are: through the daemon that writes it (or, if
 * none writes it, one that has it open), so that its in-flight writes finish and its
 * uncommitted map goes in first; here when nobody has it open.
 */
async function takeSnapshot(pool: Pool, v: VolumeRecord, name: string): Promise<SnapshotRecord> {
  for (let attempt = 0; ; attempt++) {
    const writer = pool.claimant(v.id);
    const daemon = writer ? pool.registry.list().find((d) => d.pid === writer.pid && d.startTime === writer.startTime) : pool.registry.serving(v.id)[0];
    if (writer && !daemon) throw new FsError('EBUSY', `volume "${v.name}" is being changed by pid ${writer.pid} (not a mount daemon): try again when it is done`);
    try {
      if (daemon) return await controlRequest(controlSocketPath(pool.runDir, daemon.pid), { op: 'snapshot', volume: v.name, name });
      return pool.createSnapshot(v.id, name, true);
    } catch (err) {
      // A daemon opened or closed the volume meanwhile: ask again where it is served.
      if (!(err instanceof FsError) || err.code !== 'EAGAIN' || attempt >= 3) throw err;
    }
  }
}

const view = (volume: string, s: SnapshotRecord, exclusiveBytes?: number): object => ({
  id: s.id, name: s.name, volume, createdAt: new Date(s.createdAt).toISOString(), sizeBytes: s.sizeBytes, ...(exclusiveBytes === undefined ? {} : { exclusiveBytes }),
});

export function snapshotCommand(y: Argv<GlobalArgs>): Argv<GlobalArgs> {
  return y.command('snapshot', 'read-only point-in-time images of volumes: create, list, delete (each appears in the mount as VOLUME@NAME)', (b) => b
    .command('create <volume> <name>', 'snapshot a volume in constant time (nothing copied); a running volume is snapshotted by its daemon after its in-flight writes (fsfreeze the guest first for a clean filesystem)', (c) => c
      .positional('volume', { type: 'string', demandOption: true })
      .positional('name', { type: 'string', demandOption: true }),
    (a) => withPool(a, async (pool) => {
      const v = pool.volume(a.volume);
      const s = await takeSnapshot(pool, v, a.name);
      emit(a.json, { id: s.id, name: s.name, volume: v.name, createdAt: new Date(s.createdAt).toISOString() }, () => [`created snapshot ${v.name}@${s.name} (id ${s.id})`]);
    }))
    .command('list [volume]', 'list snapshots (of one volume) with the space deleting each would give back', (c) => c.positional('volume', { type: 'string' }),
      (a) => withPool(a, (pool) => {
        const names = new Map(pool.volumeList().map((v) => [v.id, v.name]));
        const only = a.volume === undefined ? undefined : pool.volume(a.volume).id;
        const list = pool.snapshotList(only).map((s) => ({ s, volume: names.get(s.volume) ?? `id:${s.volume}`, exclusiveBytes: pool.exclusiveBytes(s.id) }));
        emit(a.json, list.map((x) => view(x.volume, x.s, x.exclusiveBytes)), () => table([['ID', 'SNAPSHOT', 'SIZE', 'EXCLUSIVE', 'CREATED'],
          ...list.map((x) => [String(x.s.id), `${x.volume}@${x.s.name}`, formatSize(x.s.sizeBytes), formatSize(x.exclusiveBytes), new Date(x.s.createdAt).toISOString()])]));
      }))
    .command('delete <snapshot>', 'delete VOLUME@NAME and give back the space only it used', (c) => c.positional('snapshot', { type: 'string', demandOption: true }),
      (a) => withPool(a, (pool) => {
        const { volume, snapshot } = pool.snapshot(a.snapshot);
        const freedBytes = pool.deleteSnapshot(snapshot.id);
        emit(a.json, { deleted: `${volume.name}@${snapshot.name}`, id: snapshot.id, freedBytes }, () => [`deleted snapshot ${volume.name}@${snapshot.name} (freed ${formatSize(freedBytes)})`]);
      }))
    .demandCommand(1, 'say which: snapshot create|list|delete'), () => undefined);
}
