import type { Argv } from 'yargs';
import { parseBackendSpec } from '../parse-backend';
import { FsError } from '../../util/errors';
import { formatSize, parseSize } from '../../util/size';
import { withPool, type GlobalArgs } from '../context';
import { emit, table } from '../output';
import { changeOptions, runChange } from './layout';

export function backendCommand(y: Argv<GlobalArgs>): Argv<GlobalArgs> {
  return y.command('backend', 'add, list, grow, drain or remove the pool\'s backends', (b) => b
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
    .command('resize <backend> [size]', 'grow a backend online: a file to SIZE (sparse); a block device that grew: no SIZE, its new size is read', (c) => c
      .positional('backend', { type: 'string', demandOption: true })
      .positional('size', { type: 'string', describe: 'new size of the file, e.g. 20G (its first 1M is the label)' }),
    (a) => withPool(a, async (pool) => {
      const b = pool.findBackend(a.backend);
      const rec = await pool.growBackend(b.id, a.size === undefined ? undefined : sizeArg(a.size) - b.dataStart);
      emit(a.json, rec, () => [rec.capacityBytes === b.capacityBytes ? `backend ${rec.id} is already ${formatSize(rec.capacityBytes)}` : `grew backend ${rec.id} (${rec.path}) from ${formatSize(b.capacityBytes)} to ${formatSize(rec.capacityBytes)}`]);
    }))
    .command('set <backend>', 'autoextend a file backend: whenever the pool is below its low-water mark, grow the file by STEP, up to MAX, while its file system has room', (c) => c
      .positional('backend', { type: 'string', demandOption: true })
      .option('autoextend', { type: 'string', describe: 'STEP, e.g. 1G; 0 turns it off' })
      .option('max', { type: 'string', describe: 'largest size the file may reach, e.g. 100G (needed with --autoextend)' }),
    (a) => withPool(a, (pool) => {
      const b = pool.findBackend(a.backend);
      if (a.autoextend === undefined) throw new FsError('EINVAL', 'say what to set: --autoextend STEP --max SIZE (or --autoextend 0)');
      const step = sizeArg(a.autoextend);
      if (step > 0 && a.max === undefined) throw new FsError('EINVAL', '--autoextend needs --max SIZE, the largest the file may grow to');
      const rec = pool.setAutoextend(b.id, step === 0 ? undefined : { stepBytes: step, maxBytes: sizeArg(a.max ?? '0') - b.dataStart });
      emit(a.json, rec, () => [rec.autoextend ? `backend ${rec.id} grows by ${formatSize(rec.autoextend.stepBytes)} up to ${formatSize(rec.autoextend.maxBytes + rec.dataStart)} when the pool is low on space` : `backend ${rec.id} does not grow by itself`]);
    }))
    .command('remove <backend>', 'take an empty (drained) backend out of the pool; its file is left in place', (c) => c.positional('backend', { type: 'string', demandOption: true }),
      (a) => withPool(a, async (pool) => {
        const rec = await pool.removeBackend(pool.findBackend(a.backend).id);
        emit(a.json, rec, () => [`removed backend ${rec.id}: ${rec.path} (the file itself is left in place)`]);
      }))
    .demandCommand(1, 'say which: backend add, list, resize, set, drain or remove'), () => undefined);
}

function sizeArg(text: string): number {
  try {
    return parseSize(text);
  } catch (err) {
    throw new FsError('EINVAL', (err as Error).message);
  }
}
