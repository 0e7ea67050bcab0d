/**
 * The snapshot rows of npm run bench: create latency on a 100 GiB volume with 1 GiB written while
 * fio writes to it (and the longest I/O meanwhile, against the same load without snapshots),
 * 4 KiB random overwrite IOPS just after a snapshot against the same without one, and df / check
 * times with 10 snapshots of a volume with a million map entries.
 */
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { ControlSession } from '../../src/control/control-client';
import { controlSocketPath } from '../../src/control/control-server';
import { selfHolder } from '../../src/pool/holder';
import { Pool } from '../../src/pool/pool';
import type { Placement } from '../../src/pool/pool';
import type { CheckRow } from './report';
import { run, sleep, type Cleanup } from './proc';
import { Thinvol } from './targets';

const MiB = 2 ** 20;
const BLOCK = 4096;

export interface SnapshotBenchOptions { runtime: number; rounds: number; mapEntries: number; snapshots: number }

interface FioLoad { iops: number; maxLatMs: number }

/** fio's JSON: write IOPS and the longest write completion (ms), of the first job. */
async function fioLoad(args: readonly string[]): Promise<FioLoad> {
  const r = await run('fio', ['--output-format=json', '--group_reporting', ...args], { allowFail: true, timeoutMs: 30 * 60_000 });
  if (r.code !== 0) throw new Error(`fio exited ${r.code}: ${r.stderr.trim()}`);
  const job = (JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))) as { jobs: { write: { iops: number; lat_ns: { max: number } } }[] }).jobs[0]!;
  return { iops: job.write.iops, maxLatMs: job.write.lat_ns.max / 1e6 };
}

const randwrite = (file: string, sizeMiB: number, seconds: number): string[] => [
  '--name=w', `--filename=${file}`, '--rw=randwrite', '--bs=4k', '--ioengine=libaio', '--iodepth=16', '--direct=1', '--randrepeat=0',
  `--size=${sizeMiB}M`, '--time_based', `--runtime=${seconds}`, '--fallocate=none', '--allow_file_create=0',
];

const fmt = (n: number, d = 1): string => n.toFixed(d);

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export async function snapshotChecks(bin: string, tmp: string, o: SnapshotBenchOptions, cleanup: Cleanup, log: (m: string) => void): Promise<CheckRow[]> {
  const tv = new Thinvol(bin, join(tmp, 'snappool'));
  const mnt = join(tmp, 'snapmnt');
  await fs.mkdir(mnt);
  await tv.createPool(join(tmp, 'snap-backend.img'), '24G');
  await tv.createVolume('big', '100G');
  const { pid, unmount } = await tv.mount(mnt, cleanup);
  const rows: CheckRow[] = [];

  // 1. Create latency under load: 1 GiB scattered over 100 GiB first (about 260,000 map entries).
  const big = join(mnt, 'big');
  log('snapshots: writing 1 GiB scattered over the 100 GiB volume');
  await run('fio', ['--name=fill', `--filename=${big}`, '--rw=randwrite', '--bs=4k', '--ioengine=libaio', '--iodepth=16', '--direct=1',
    '--size=100G', '--io_size=1G', '--norandommap', '--randrepeat=0', '--fallocate=none', '--allow_file_create=0'], { timeoutMs: 30 * 60_000 });
  const session = new ControlSession(controlSocketPath(join(tmp, 'snappool', 'run'), pid));
  const latencies: number[] = [];
  const withSnap: FioLoad[] = [];
  const without: FioLoad[] = [];
  let n = 0;
  const idle: number[] = [];
  try {
    for (let i = 0; i < 3; i++) {
      const t0 = process.hrtime.bigint();
      await session.request({ op: 'snapshot', volume: 'big', name: `s${n++}` }, 30_000);
      idle.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
    for (let round = 0; round < o.rounds; round++) {
      without.push(await fioLoad(randwrite(big, 100 * 1024, o.runtime)));
      const load = fioLoad(randwrite(big, 100 * 1024, o.runtime));
      await sleep(1000);
      for (let i = 0; i < 3; i++) {
        const t0 = process.hrtime.bigint();
        await session.request({ op: 'snapshot', volume: 'big', name: `s${n++}` }, 30_000);
        latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
        await sleep(Math.max(200, (o.runtime * 1000 - 2000) / 3));
      }
      withSnap.push(await load);
    }
  } finally {
    session.close();
  }
  const t0 = Date.now();
  await tv.cmd(['snapshot', 'create', 'big', `s${n++}`]);
  const cliMs = Date.now() - t0;
  const lat = median(latencies);
  rows.push({
    label: `snapshot create, 100 GiB volume with 1 GiB written in 4 KiB pieces, under fio 4 KiB randwrite (iodepth 16)`,
    value: `${fmt(lat)} ms`, target: '< 50 ms', pass: lat < 50,
    note: `median of ${latencies.length} (max ${fmt(Math.max(...latencies))} ms), timed at the daemon's control socket: a flush, the whole-volume lock, the commit of what waits with the snapshot in its last transaction, and the request's wait behind the load on the daemon's thread; idle volume ${fmt(median(idle))} ms; the thinvol CLI command takes ${cliMs} ms (Node start-up included)`,
  });
  const stall = median(withSnap.map((x) => x.maxLatMs));
  const calm = median(without.map((x) => x.maxLatMs));
  rows.push({
    label: 'longest write while snapshots are taken (same load without snapshots)',
    value: `${fmt(stall)} ms`, target: '<= 100 ms', pass: stall <= 100,
    note: `median over ${o.rounds} rounds of fio's longest completion; without snapshots ${fmt(calm)} ms; IOPS ${fmt(median(withSnap.map((x) => x.iops)), 0)} with, ${fmt(median(without.map((x) => x.iops)), 0)} without`,
  });

  // 2. Random overwrites right after a snapshot (every first write copies) against no snapshot.
  // First writes into a new volume (new space, as every copy on write needs) show what allocation costs by itself.
  const iops: Record<'plain' | 'snap' | 'fresh', number[]> = { plain: [], snap: [], fresh: [] };
  const kinds = ['plain', 'snap', 'fresh'] as const;
  for (let round = 0; round < o.rounds; round++) {
    for (const kind of [...kinds.slice(round % 3), ...kinds.slice(0, round % 3)]) {
      const name = `ow${round}${kind}`;
      await tv.createVolume(name, '1G');
      if (kind !== 'fresh') await run('dd', ['if=/dev/urandom', `of=${join(mnt, name)}`, 'bs=1M', 'count=1024', 'oflag=direct', 'conv=notrunc', 'status=none'], { timeoutMs: 10 * 60_000 });
      if (kind === 'snap') await tv.cmd(['snapshot', 'create', name, 'base']);
      iops[kind].push((await fioLoad(randwrite(join(mnt, name), 1024, o.runtime))).iops);
      if (kind === 'snap') await tv.cmd(['snapshot', 'delete', `${name}@base`]);
      await tv.cmd(['volume', 'delete', name]);
    }
  }
  const ratio = median(iops.snap) / median(iops.plain);
  rows.push({
    label: '4 KiB random overwrite IOPS on a volume just snapshotted / without a snapshot (1 GiB written, O_DIRECT, iodepth 16)',
    value: `${fmt(ratio, 2)}x`, target: '>= 0.5x', pass: ratio >= 0.5,
    note: `medians over ${o.rounds} interleaved rounds: ${fmt(median(iops.snap), 0)} IOPS after a snapshot (each first write copies to new space), ${fmt(median(iops.plain), 0)} without (in place, no metadata); first writes into a new volume (new space, no snapshot) ${fmt(median(iops.fresh), 0)} IOPS`,
  });
  await unmount();

  // 3. df and check with many snapshots: the map is built through the pool's verbs (metadata only).
  const dir = join(tmp, 'mapspool');
  log(`snapshots: building a volume with ${o.mapEntries} map entries and ${o.snapshots} snapshots`);
  const pool = await Pool.create(dir, [{ path: join(tmp, 'maps-backend.img'), sizeBytes: 64 * 1024 * MiB }]);
  const holder = selfHolder();
  const v = pool.createVolume('m', 16 * 1024 * 1024 * MiB);
  const insert = (count: number, at: (i: number) => number): void => {
    for (let done = 0; done < count;) {
      const batch = Math.min(50_000, count - done);
      const runs = pool.reserve(holder, v.id, batch * BLOCK);
      const inserts: Placement[] = [];
      let k = done;
      for (const r of runs) for (let off = 0; off < r.len; off += BLOCK) inserts.push({ vstart: at(k++), run: { backend: r.backend, start: r.start + off, len: BLOCK } });
      pool.commitChanges(holder, v.id, { removes: [], inserts, released: [], reclaimedBytes: 0 });
      done += batch;
    }
  };
  insert(o.mapEntries, (i) => i * 2 * BLOCK);
  for (let s = 0; s < o.snapshots; s++) {
    pool.createSnapshot(v.id, `s${s}`, true);
    insert(Math.floor(o.mapEntries / 100), (i) => ((i * 7919 + s * 104_729) % o.mapEntries) * 2 * BLOCK);
  }
  await pool.close();
  const mv = new Thinvol(bin, dir);
  const times = async (args: string[]): Promise<number> => {
    const ms: number[] = [];
    for (let i = 0; i < 3; i++) {
      const t = Date.now();
      await mv.cmd(args);
      ms.push(Date.now() - t);
    }
    return median(ms);
  };
  const dfMs = await times(['df', '--json']);
  const checkMs = await times(['check']);
  const listMs = await times(['snapshot', 'list', '--json']);
  rows.push({
    label: `df, check and snapshot list, volume with ${o.mapEntries.toLocaleString('en-US')} map entries and ${o.snapshots} snapshots (1% of it rewritten between snapshots)`,
    value: `df ${fmt(dfMs / 1000, 2)} s, check ${fmt(checkMs / 1000, 2)} s, snapshot list ${fmt(listMs / 1000, 2)} s`, target: '(recorded)', pass: undefined,
    note: 'medians of 3, CLI wall time (Node start-up included)',
  });
  return rows;
}
