import type { Argv } from 'yargs';
import { parseBackendSpec } from '../parse-backend';
import { formatSize } from '../../util/size';
import { withPool, type GlobalArgs } from '../context';
import { emit, table } from '../output';
import { changeOptions, runChange } from './layout';

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
        emit(a.json, list, () => table([['ID', 'PATH', 'KIND', 'CAPACITY', 'ALLOCATED', 'FREE', 'STATE'],
          ...list.map((r) => [String(r.id), r.path, r.kind, formatSize(r.capacityBytes), formatSize(r.allocatedBytes), formatSize(r.freeBytes), r.draining === true ? 'draining' : 'in use'])]));
      }))
    .command('drain <backend>', 'move everything off a backend (id or path), online, so that it can be removed; nothing new is allocated on it', (c) => changeOptions(c.positional('backend', { type: 'string', demandOption: true })),
      (a) => runChange(a, (pool) => ({ kind: 'drain', backend: pool.findBackend(a.backend).id })))
    .command('remove <backend>', 'take an empty (drained) backend out of the pool; its file is left in place', (c) => c.positional('backend', { type: 'string', demandOption: true }),
      (a) => withPool(a, async (pool) => {
        const rec = await pool.removeBackend(pool.findBackend(a.backend).id);
        emit(a.json, rec, () => [`removed backend ${rec.id}: ${rec.path} (the file itself is left in place)`]);
      }))
    .demandCommand(1, 'say which: backend add, list, drain or remove'), () => undefined);
}
