import type { Argv } from 'yargs';
import { checkPool } from '../../check/check-pool';
import { withPool, type GlobalArgs } from '../context';
import { emit } from '../output';

export function checkCommand(y: Argv<GlobalArgs>): Argv<GlobalArgs> {
  return y.command('check', 'verify that the map and the free space table agree (exit 0 only when clean)', (c) => c,
    (a) => withPool(a, (pool) => {
      const r = checkPool(pool);
      emit(a.json, r, () => [
        r.clean ? `clean: ${r.extents} extents, ${r.freeRuns} free runs, ${r.reservedRuns} reservations` : `NOT clean: ${r.errors.length} problems`,
        ...r.errors.slice(0, 100).map((e) => `  ${e}`),
      ]);
      if (!r.clean) process.exitCode = 1;
    }));
}
