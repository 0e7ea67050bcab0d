import type { Argv } from 'yargs';
import { CHECK_LIMITS, checkBackends, checkPool } from '../../check/check-pool';
import { withPool, type GlobalArgs } from '../context';
import { emit } from '../output';

export function checkCommand(y: Argv<GlobalArgs>): Argv<GlobalArgs> {
  return y.command('check', 'verify the pool: every backend byte is exactly one of mapped, free or reserved, counters and layer references (snapshots, clones) match the map, backends are present, labelled and whole (exit 0 only when clean)', (c) => c,
    (a) => withPool(a, async (pool) => {
      const store = checkPool(pool);
      const backendErrors = await checkBackends(pool);
      const r = { ...store, clean: store.clean && backendErrors.length === 0, errors: [...backendErrors, ...store.errors], cannotSee: CHECK_LIMITS };
      emit(a.json, r, () => [
        r.clean ? `clean: ${r.extents} extents, ${r.freeRuns} free runs, ${r.reservedRuns} reservations` : `NOT clean: ${r.errors.length} problems (${r.leaks.length} leaks: space or layers nothing reaches; ${r.overCounts.length} over-counts: space counted twice, or layers counted short)`,
        ...r.errors.slice(0, 100).map((e) => `  ${e}`),
        ...CHECK_LIMITS.map((l) => `  (cannot see: ${l})`),
      ]);
      if (!r.clean) process.exitCode = 1;
    }));
}
