import type { Argv } from 'yargs';
import { parseBackendSpec } from '../../pool/backend-spec';
import { formatSize } from '../../util/size';
import { withPool, type GlobalArgs } from '../context';
import { emit, table } from '../output';

export function backendCommand(y: Argv<GlobalArgs>): Argv<GlobalArgs> {
  return y.command('backend', 'add or list the pool\'s backends', (b) => b
    .command('add <spec>', 'add a backend: PATH[:SIZE] (a file is created sparse at SIZE; a block device is used whole)', (c) => c.positional('spec', { type: 'string', demandOption: true }),
      (a) => withPool(a, async (pool) => {
        const rec = await pool.addBackend(parseBackendSpec(a.spec));
        emit(a.json, rec, () => [`added backend ${rec.id}: ${rec.path} (${rec.kind}, ${formatSize(rec.capacityBytes)})`]);
      }))
    .command('list', 'list backends with capacity and use', (c) => c,
      (a) => withPool(a, (pool) => {
        const list = pool.backendList().map((r) => ({ ...r, freeBytes: r.capacityBytes - r.allocatedBytes - r.reservedBytes }));
        emit(a.json, list, () => table([['ID', 'PATH', 'KIND', 'CAPACITY', 'ALLOCATED', 'FREE'],
          ...list.map((r) => [String(r.id), r.path, r.kind, formatSize(r.capacityBytes), formatSize(r.allocatedBytes), formatSize(r.freeBytes)])]));
      }))
    .demandCommand(1, 'say which: backend add PATH[:SIZE] or backend list'), () => undefined);
}
