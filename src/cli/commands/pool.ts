import type { Argv } from 'yargs';
import { parseBackendSpec } from '../parse-backend';
import { Pool } from '../../pool/pool';
import { formatSize } from '../../util/size';
import type { GlobalArgs } from '../context';
import { emit } from '../output';

export function poolCommand(y: Argv<GlobalArgs>): Argv<GlobalArgs> {
  return y.command('pool <action>', 'create a pool', (p) => p
    .positional('action', { choices: ['create'] as const, describe: 'create: make a new pool in --pool DIR' })
    .option('backend', { type: 'string', array: true, demandOption: true, describe: 'PATH[:SIZE]: a file (created sparse at SIZE, e.g. 10G) or a block device (used whole); repeat for several' }),
  async (a) => {
    const pool = await Pool.create(a.pool, a.backend.map(parseBackendSpec));
    try {
      const backends = pool.backendList();
      emit(a.json, { pool: pool.dir, backends }, () => [
        `created pool ${pool.dir}`,
        ...backends.map((b) => `  backend ${b.id}: ${b.path} (${b.kind}, ${formatSize(b.capacityBytes)})`),
      ]);
    } finally {
      await pool.close();
    }
  });
}
