import { Pool } from '../pool/pool';

export const DEFAULT_POOL = '/var/lib/thinvol/default';

export interface GlobalArgs { pool: string; json: boolean }

/** Opens the pool for one command and always closes it. */
export async function withPool<T>(args: GlobalArgs, fn: (pool: Pool) => Promise<T> | T): Promise<T> {
  const pool = Pool.open(args.pool);
  try {
    return await fn(pool);
  } finally {
    await pool.close();
  }
}
