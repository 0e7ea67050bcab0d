import type { Pool } from '../pool/pool';
import { BLOCK, HOLE_BACKEND } from '../store/records';

export interface CheckReport {
  clean: boolean;
  errors: string[];
  /** Of the errors: space or layers nothing can reach (never freed). */
  leaks: string[];
  /** Of the errors: space counted twice, or a layer with fewer references than it has (freed while still used). */
  overCounts: string[];
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
  const leaks: string[] = [];
  const overCounts: string[] = [];
  const leak = (m: string): void => { leaks.push(m); errors.push(m); };
  const over = (m: string): void => { overCounts.push(m); errors.push(m); };
  const backends = new Map(pool.backendList().map((b) => [b.id, b]));
  const volumes = new Map(pool.volumeList().map((v) => [v.id, v]));
  const snapshots = pool.snapshotList();
  const pieces = new Map<number, Piece[]>([...backends.keys()].map((id) => [id, []]));
  const layerAlloc = new Map<number, number>();
  let extents = 0;
  let freeRuns = 0;
  let reservedRuns = 0;

  // Who reads each layer as its top: a volume, or a snapshot; its size bounds the entries.
  const owners = new Map<number, { what: string; id: number; size: number }>();
  const own = (layer: number, o: { what: string; id: number; size: number }): void => {
    const twice = owners.get(layer);
    if (twice) over(`layer ${layer} is the top of both ${twice.what} and ${o.what}`);
    owners.set(layer, o);
  };
  for (const v of volumes.values()) own(v.layer ?? v.id, { what: `volume ${v.name}`, id: v.id, size: v.sizeBytes });
  for (const s of snapshots) {
    own(s.layer, { what: `snapshot ${s.name} (id ${s.id})`, id: s.id, size: s.sizeBytes });
    if (!volumes.has(s.volume)) errors.push(`snapshot ${s.name} (id ${s.id}) belongs to volume id ${s.volume}, which does not exist`);
  }
  const records = new Map(pool.layerList().map((l) => [l.id, l]));
  const children = new Map<number, number>();
  for (const l of records.values()) {
    if (l.parent === undefined) continue;
    if (!records.has(l.parent) && !owners.has(l.parent)) errors.push(`layer ${l.id} lies above layer ${l.parent}, which does not exist`);
    children.set(l.parent, (children.get(l.parent) ?? 0) + 1);
  }
  for (const [id, o] of owners) {
    const rec = records.get(id);
    if (rec && rec.owner !== o.id) errors.push(`layer ${id} names owner ${rec.owner ?? 'none'}, but it is the top of ${o.what}`);
    if (!rec && (children.get(id) ?? 0) > 0) over(`layer ${id} (${o.what}) has layers above it but no record counting them`);
  }
  for (const l of records.values()) {
    const n = children.get(l.id) ?? 0;
    if (l.children > n) leak(`layer ${l.id} counts ${l.children} layers above it, ${n} lie there: it would never be freed`);
    if (l.children < n) over(`layer ${l.id} counts ${l.children} layers above it, ${n} lie there: it would be freed while still read`);
    if (!owners.has(l.id)) {
      if (l.owner !== undefined) errors.push(`layer ${l.id} names owner ${l.owner}, which has another top`);
      if (n < 2) leak(`layer ${l.id} belongs to nobody and has ${n} layer(s) above it: it should have been ${n === 0 ? 'freed' : 'merged into the one above'}`);
    }
  }
  for (const id of owners.keys()) {
    try {
      pool.layers.chain(id);
    } catch (err) {
      errors.push((err as Error).message);
    }
  }

  const add = (backend: number, p: Piece): void => {
    const list = pieces.get(backend);
    if (!list) errors.push(`${p.what} is on backend ${backend}, which is not in the pool`);
    else list.push(p);
  };

  for (const e of pool.map.all()) {
    extents++;
    const o = owners.get(e.volume);
    const what = `${o?.what ?? `layer ${e.volume}`} [${e.vstart},+${e.len})`;
    if (e.vstart % BLOCK || e.len % BLOCK || e.boff % BLOCK || e.len <= 0) errors.push(`${what} is not 4 KiB aligned`);
    if (!o && !records.has(e.volume)) {
      if (e.backend !== HOLE_BACKEND) leak(`${what} is mapped but no volume, snapshot or layer has it`);
      else errors.push(`${what} is a hole entry of no volume, snapshot or layer`);
    }
    // Hole entries past the end are what a shrink leaves over a snapshot's data: growing again must read zeros.
    if (e.backend === HOLE_BACKEND) continue;
    if (o && e.vstart + e.len > Math.ceil(o.size / BLOCK) * BLOCK) errors.push(`${what} lies past the end (${o.size})`);
    layerAlloc.set(e.volume, (layerAlloc.get(e.volume) ?? 0) + e.len);
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
      if (p.start < pos) over(`backend ${id}: overlap at ${p.start}: ${p.what}`);
      else if (p.start > pos) leak(`backend ${id}: [${pos},${p.start}) is neither mapped, free nor reserved (leaked)`);
      pos = Math.max(pos, p.start + p.len);
      if (p.what.startsWith('free run')) continue;
      if (p.what.startsWith('reservation')) reserved += p.len;
      else mapped += p.len;
    }
    const end = b.dataStart + b.capacityBytes;
    if (pos < end) leak(`backend ${id}: [${pos},${end}) is neither mapped, free nor reserved (leaked)`);
    if (pos > end) errors.push(`backend ${id}: space used up to ${pos}, past its end ${end}`);
    if (mapped !== b.allocatedBytes) errors.push(`backend ${id}: allocatedBytes says ${b.allocatedBytes}, the map holds ${mapped}`);
    if (reserved !== b.reservedBytes) errors.push(`backend ${id}: reservedBytes says ${b.reservedBytes}, reservations hold ${reserved}`);
  }
  for (const v of volumes.values()) {
    const got = layerAlloc.get(v.layer ?? v.id) ?? 0;
    if (got !== v.allocatedBytes) errors.push(`volume ${v.name}: allocatedBytes says ${v.allocatedBytes}, its top layer holds ${got}`);
    if (pool.nameIndex(v.name) !== v.id) errors.push(`volume ${v.name}: name index does not point at id ${v.id}`);
  }
  return { clean: errors.length === 0, errors, leaks, overCounts, extents, freeRuns, reservedRuns };
}
