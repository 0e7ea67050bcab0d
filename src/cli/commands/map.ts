import type { Argv } from 'yargs';
import { withPool, type GlobalArgs } from '../context';
import { emit, table } from '../output';

export function mapCommand(y: Argv<GlobalArgs>): Argv<GlobalArgs> {
  return y.command('map <volume>', 'the allocated ranges of a volume (virtual offset, length, backend, backend offset), like qemu-img map', (c) => c.positional('volume', { type: 'string', demandOption: true }),
    (a) => withPool(a, (pool) => {
      const v = pool.volume(a.volume);
      const paths = new Map(pool.backendList().map((b) => [b.id, b.path]));
      const extents = pool.mapOf(v.id).map((e) => ({ offset: e.vstart, length: e.len, backend: e.backend, backendPath: paths.get(e.backend) ?? '?', backendOffset: e.boff }));
      emit(a.json, extents, () => table([['OFFSET', 'LENGTH', 'BACKEND', 'BACKEND-OFFSET', 'PATH'],
        ...extents.map((e) => [`0x${e.offset.toString(16)}`, `0x${e.length.toString(16)}`, String(e.backend), `0x${e.backendOffset.toString(16)}`, e.backendPath])]));
    }));
}
