import type { Pool } from '../pool/pool';
import { BLOCK } from '../store/records';

export interface CheckReport {
  clean: boolean;
  errors: string[];
  extents: number;
  freeRuns: number;
  reservedRuns: number;
}

/**
 * What check cannot see, said with every report: it proves the store consistent with itself
 * and the backends present, not that the store is the newest state or the data unchanged.
 */
export const CHECK_LIMITS = [
  'a committed transaction lost as a whole (the map, free table and counters then agree with each other); the daemons detect that while running',
  'data changed inside a backend behind the pool\'s back (no data checksums)',
];

/** Opens every backend as a daemon would: present, labelled as this pool's, not truncated. */
export async function checkBackends(pool: Pool): Promise<string[]> {
  const set = pool.backendSet();
  const errors: string[] = [];
  for (const b of pool.backendList()) {
    await set.get(b.id).catch((err: Error) => errors.push(err.message));
  }
  await set.closeAll();
  return errors;
}

interface Piece { start: number; len: number; what: string }

/**
 * Recomputes allocation from the map and diffs it against the free space table and the
 * counters: every backend byte must be exactly one of mapped, free or reserved.
 */
export function checkPool(pool: Pool): CheckReport {
  const errors: string[] = [];
  const backends = new Map(pool.backendList().map((b) => [b.id, b]));
  const volumes = new Map(pool.volumeList().map((v) => [v.id, v]));
  const pieces = new Map<number, Piece[]>([...backends.keys()].map((id) => [id, []]));
  const volAlloc = new Map<number, number>();
  let extents = 0;
  let freeRuns = 0;
  let reservedRuns = 0;

  const add = (backend: number, p: Piece): void => {
    const list = pieces.get(backend);
    if (!list) errors.push(`${p.what} is on backend ${backend}, which is not in the pool`);
    else list.push(p);
  };

  for (const e of pool.map.all()) {
    extents++;
    const what = `volume ${e.volume} [${e.vstart},+${e.len})`;
    const v = volumes.get(e.volume);
    if (!v) errors.push(`${what} is mapped but the volume does not exist`);
    else if (e.vstart + e.len > Math.ceil(v.sizeBytes / BLOCK) * BLOCK) errors.push(`${what} lies past the volume's end (${v.sizeBytes})`);
    if (e.vstart % BLOCK || e.len % BLOCK || e.boff % BLOCK || e.len <= 0) errors.push(`${what} is not 4 KiB aligned`);
    volAlloc.set(e.volume, (volAlloc.get(e.volume) ?? 0) + e.len);
    add(e.backend, { start: e.boff, len: e.len, what: `${what} -> backend ${e.backend} @${e.boff}` });
  }
  for (const r of pool.space.runs()) {
    freeRuns++;
    add(r.backend, { start: r.start, len: r.len, what: `free run backend ${r.backend} @${r.start}+${r.len}` });
  }
  for (const { holder, run } of pool.reservations()) {
    reservedRuns++;
    add(run.backend, { start: run.start, len: run.len, what: `reservation of ${holder} backend ${run.backend} @${run.start}+${run.len}` });
  }

  for (const [id, list] of pieces) {
    const b = backends.get(id)!;
    list.sort((x, y) => x.start - y.start);
    let pos = b.dataStart;
    let mapped = 0;
    let reserved = 0;
    for (const p of list) {
      if (p.start < pos) errors.push(`backend ${id}: overlap at ${p.start}: ${p.what}`);
      else if (p.start > pos) errors.push(`backend ${id}: [${pos},${p.start}) is neither mapped, free nor reserved (leaked)`);
      pos = Math.max(pos, p.start + p.len);
      if (p.what.startsWith('volume')) mapped += p.len;
      else if (p.what.startsWith('reservation')) reserved += p.len;
    }
    const end = b.dataStart + b.capacityBytes;
    if (pos < end) errors.push(`backend ${id}: [${pos},${end}) is neither mapped, free nor reserved (leaked)`);
    if (pos > end) errors.push(`backend ${id}: space used up to ${pos}, past its end ${end}`);
    if (mapped !== b.allocatedBytes) errors.push(`backend ${id}: allocatedBytes says ${b.allocatedBytes}, the map holds ${mapped}`);
    if (reserved !== b.reservedBytes) errors.push(`backend ${id}: reservedBytes says ${b.reservedBytes}, reservations hold ${reserved}`);
  }
  for (const v of volumes.values()) {
    const got = volAlloc.get(v.id) ?? 0;
    if (got !== v.allocatedBytes) errors.push(`volume ${v.name}: allocatedBytes says ${v.allocatedBytes}, the map holds ${got}`);
    if (pool.nameIndex(v.name) !== v.id) errors.push(`volume ${v.name}: name index does not point at id ${v.id}`);
  }
  return { clean: errors.length === 0, errors, extents, freeRuns, reservedRuns };
}
