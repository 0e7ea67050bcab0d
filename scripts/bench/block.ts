/**
 * The block-device sections of `npm run bench` (issue 11's acceptance): the same rows for
 * thinvol served through libfuse3, thinvol served through libfuse2 (fuse-native),
 * qemu-storage-daemon's FUSE export and a plain file (and, with --baseline, another thinvol
 * checkout served as it serves by default), in interleaved rounds.
 *   dio:  fio on a `losetup --direct-io=on` loop device over a written region;
 *   ext4: ext4 on a buffered loop device (as the README attaches it), fresh each round.
 */
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { type FioResult, fio } from './fio';
import { type ProbeSpec, fuseConnOf, probed } from './probe';
import { type Cleanup, run } from './proc';
import type { CompareRow, Figure, TargetName } from './report';
import { Thinvol, attachLoop, startQsd } from './targets';

const MiB = 1024 * 1024;

export interface BlockOptions {
  rounds: number;
  /** Seconds per time-based fio job. */
  runtime: number;
  /** The region the dio jobs cover (written before round 1), MiB. */
  dioSizeMiB: number;
  /** The ext4 image per round, MiB. */
  ext4SizeMiB: number;
  /** The sequential write inside ext4, MiB. */
  ext4SeqMiB: number;
  /** The file the random writes inside ext4 cover, MiB. */
  ext4RandMiB: number;
  /** Small files in the tar tree. */
  untarFiles: number;
  dio: boolean;
  ext4: boolean;
}

export type BlockTargetName = Extract<TargetName, 'thinvol' | 'wbcache' | 'libfuse2' | 'qsd' | 'plain' | 'baseline'>;

interface BlockTarget {
  name: BlockTargetName;
  /** The written region the dio rows measure; none: the target is measured in ext4 only. */
  dioFile?: string;
  /** A never-written file for the allocating row (thinvol's bindings only). */
  freshFile?: (round: number) => Promise<string>;
  /** A never-written file of ext4SizeMiB for this round's ext4. */
  ext4File: (round: number) => Promise<string>;
  probe: Omit<ProbeSpec, 'loopDev'>;
  /** What the ext4 rows probe, when another server holds the ext4 image (qsd: a second export). */
  ext4Probe?: Omit<ProbeSpec, 'loopDev'>;
}

type Log = (line: string) => void;

const errMsg = (err: unknown): string => (err instanceof Error ? err.message : String(err)).split('\n')[0] ?? '';

/** Round k starts k targets further along, so that none always runs first. */
function rotate<T>(xs: readonly T[], k: number): T[] {
  const n = xs.length === 0 ? 0 : k % xs.length;
  return [...xs.slice(n), ...xs.slice(0, n)];
}

class Rows {
  readonly rows = new Map<string, CompareRow>();
  constructor(private readonly log: Log) {}

  row(key: string, label: string, unit: string, extra?: string): CompareRow {
    let r = this.rows.get(key);
    if (!r) {
      r = { label, unit, rounds: {}, probes: {}, ...(extra !== undefined ? { extra } : {}) };
      this.rows.set(key, r);
    }
    return r;
  }

  /** Measures one figure with its probe; a failure is recorded as the round's error. */
  async add(row: CompareRow, t: TargetName, spec: ProbeSpec, fn: () => Promise<number>): Promise<void> {
    let f: Figure;
    try {
      const { result, probe } = await probed(spec, fn);
      f = { value: result };
      (row.probes ??= {});
      (row.probes[t] ??= []).push(probe);
      this.log(`${row.label} ${t}: ${result.toFixed(row.unit === 'IOPS' ? 0 : 1)} ${row.unit}; main thread ${probe.mainBusyPct?.toFixed(0) ?? '-'}% process ${probe.processCpuPct?.toFixed(0) ?? '-'}% waiting ${probe.fuseWaiting?.toFixed(1) ?? '-'} req ${probe.loopReqKiB?.toFixed(0) ?? '-'} KiB`);
    } catch (err) {
      console.error(`bench: ${row.label} ${t} failed: ${errMsg(err)}`);
      f = { error: errMsg(err) };
    }
    (row.rounds[t] ??= []).push(f);
  }
}

type ThinvolTargetName = 'thinvol' | 'wbcache' | 'libfuse2' | 'baseline';

const MOUNT_ARGS: Record<ThinvolTargetName, string[]> = { thinvol: [], wbcache: ['--writeback-cache'], libfuse2: ['--fuse', 'libfuse2'], baseline: [] };

async function thinvolTarget(name: ThinvolTargetName, bin: string, tmp: string, o: BlockOptions, cleanup: Cleanup, log: Log): Promise<BlockTarget> {
  const tv = new Thinvol(bin, join(tmp, `${name}-pool`));
  const mnt = join(tmp, `${name}-mnt`);
  await fs.mkdir(mnt);
  const backendMiB = o.dioSizeMiB + o.rounds * (o.dioSizeMiB + o.ext4SizeMiB) + 2048;
  await tv.createPool(join(tmp, `${name}-backend.img`), `${backendMiB}M`);
  const { pid } = await tv.mount(mnt, cleanup, MOUNT_ARGS[name]);
  log(`${name}: thinvol pool mounted at ${mnt} (daemon pid ${pid})`);
  // The writeback cache changes buffered writes only; the dio rows bypass it.
  const dio = name !== 'wbcache';
  if (dio) await tv.createVolume('dio', `${o.dioSizeMiB}M`);
  return {
    name, ...(dio ? { dioFile: join(mnt, 'dio') } : {}),
    ...(dio ? {
      freshFile: async (round: number): Promise<string> => {
        await tv.createVolume(`fresh-${round}`, '100G');
        return join(mnt, `fresh-${round}`);
      },
    } : {}),
    ext4File: async (round) => {
      await tv.createVolume(`ext4-${round}`, `${o.ext4SizeMiB}M`);
      return join(mnt, `ext4-${round}`);
    },
    probe: { pid, fuseConn: await fuseConnOf(mnt) },
  };
}

/** A never-written file again: its blocks punched out. */
async function punch(file: string, bytes: number): Promise<void> {
  await run('fallocate', ['--punch-hole', '--offset', '0', '--length', String(bytes), file]);
}

async function qsdTarget(tmp: string, o: BlockOptions, cleanup: Cleanup, log: Log): Promise<BlockTarget> {
  const dioRaw = join(tmp, 'qsd-dio.raw');
  const ext4Raw = join(tmp, 'qsd-ext4.raw');
  await run('truncate', ['-s', `${o.dioSizeMiB}M`, dioRaw]);
  await run('truncate', ['-s', `${o.ext4SizeMiB}M`, ext4Raw]);
  const dio = await startQsd(dioRaw, join(tmp, 'qsd-dio'), cleanup);
  const ext4 = await startQsd(ext4Raw, join(tmp, 'qsd-ext4'), cleanup);
  log(`qemu-storage-daemon pids ${dio.pid} (dio) and ${ext4.pid} (ext4)`);
  const dioConn = await fuseConnOf(join(tmp, 'qsd-dio'));
  return {
    name: 'qsd', dioFile: join(tmp, 'qsd-dio'),
    ext4File: async () => {
      await punch(ext4Raw, o.ext4SizeMiB * MiB);
      return join(tmp, 'qsd-ext4');
    },
    probe: { pid: dio.pid, fuseConn: dioConn },
    ext4Probe: { pid: ext4.pid, fuseConn: await fuseConnOf(join(tmp, 'qsd-ext4')) },
  };
}

async function plainTarget(tmp: string, o: BlockOptions): Promise<BlockTarget> {
  const dio = join(tmp, 'plain-dio.img');
  const ext4 = join(tmp, 'plain-ext4.img');
  await run('truncate', ['-s', `${o.dioSizeMiB}M`, dio]);
  await run('truncate', ['-s', `${o.ext4SizeMiB}M`, ext4]);
  return {
    name: 'plain', dioFile: dio,
    ext4File: async () => {
      await punch(ext4, o.ext4SizeMiB * MiB);
      return ext4;
    },
    probe: {},
  };
}

/** A tree of small files of random data (512 B to 16 KiB) in 100 directories, as one tar. */
async function makeTree(tmp: string, files: number): Promise<string> {
  const root = join(tmp, 'tree');
  for (let i = 0; i < files; i++) {
    const dir = join(root, `d${i % 100}`);
    if (i < 100) await fs.mkdir(dir, { recursive: true });
    await fs.writeFile(join(dir, `f${i}`), randomBytes(512 + ((i * 7919) % 16_000)));
  }
  const tar = join(tmp, 'tree.tar');
  await run('tar', ['-cf', tar, '-C', tmp, 'tree']);
  await fs.rm(root, { recursive: true });
  return tar;
}

async function dropCaches(): Promise<void> {
  await run('sync', []);
  await fs.writeFile('/proc/sys/vm/drop_caches', '3');
}

/** Fills a file's first `bytes` with fio's random data, so that reads hit mapped blocks. */
async function prefill(file: string, bytes: number): Promise<void> {
  await fio(['--name=prefill', `--filename=${file}`, '--rw=write', '--bs=1M', `--size=${bytes}`, '--ioengine=psync', '--end_fsync=1',
    '--fallocate=none', '--allow_file_create=0', '--refill_buffers'], 30 * 60_000);
}

/** Runs the dio and ext4 sections; returns their rows in a fixed order. `baseBin`: the --baseline checkout's thinvol. */
export async function blockSections(bin: string, tmp: string, o: BlockOptions, cleanup: Cleanup, log: Log, baseBin?: string): Promise<CompareRow[]> {
  const rows = new Rows(log);
  const targets: BlockTarget[] = [
    await thinvolTarget('thinvol', bin, tmp, o, cleanup, log),
    ...(baseBin !== undefined ? [await thinvolTarget('baseline', baseBin, tmp, o, cleanup, log)] : []),
    ...(o.ext4 ? [await thinvolTarget('wbcache', bin, tmp, o, cleanup, log)] : []),
    await thinvolTarget('libfuse2', bin, tmp, o, cleanup, log),
    await qsdTarget(tmp, o, cleanup, log),
    await plainTarget(tmp, o),
  ];
  const timed = ['--runtime', String(o.runtime), '--time_based', '--randrepeat=0'];
  const fioTimeout = (o.runtime + 600) * 1000;
  const dioRows = {
    randwrite: rows.row('rw', '4k randwrite QD16', 'IOPS', 'dio loop'),
    randread: rows.row('rr', '4k randread QD16', 'IOPS', 'dio loop'),
    write1m: rows.row('w1m', '1M write QD4', 'MiB/s', 'dio loop'),
    fresh: rows.row('fresh', '4k randwrite QD16, fresh volume', 'IOPS', 'dio loop'),
  };
  const ext4Rows = {
    seq: rows.row('e-seq', `ext4 seq write ${o.ext4SeqMiB} MiB + fsync`, 'MiB/s', 'buffered loop'),
    rand: rows.row('e-rw', '4k randwrite QD16 O_DIRECT in ext4', 'IOPS', 'buffered loop'),
    untar: rows.row('e-tar', `untar ${o.untarFiles.toLocaleString('en-US')} files + sync`, 'files/s', 'buffered loop'),
  };
  if (o.dio) {
    for (const t of targets) if (t.dioFile !== undefined) await prefill(t.dioFile, o.dioSizeMiB * MiB);
    log(`dio regions of ${o.dioSizeMiB} MiB written`);
  }
  const tar = o.ext4 ? await makeTree(tmp, o.untarFiles) : '';
  const ext4Mnt = join(tmp, 'ext4-mnt');
  await fs.mkdir(ext4Mnt);

  for (let round = 1; round <= o.rounds; round++) {
    log(`block round ${round}/${o.rounds}`);
    if (o.dio) {
      for (const t of rotate(targets, round - 1)) {
        if (t.dioFile === undefined) continue;
        const loop = await attachLoop(t.dioFile, 'on', cleanup);
        try {
          const spec = { ...t.probe, loopDev: loop.dev };
          const job = (args: string[]): Promise<FioResult> =>
            fio(['--name=j', `--filename=${loop.dev}`, '--ioengine=libaio', '--direct=1', `--size=${o.dioSizeMiB}M`, ...timed, ...args], fioTimeout);
          await rows.add(dioRows.randwrite, t.name, spec, async () => (await job(['--rw=randwrite', '--bs=4k', '--iodepth=16'])).write.iops);
          await rows.add(dioRows.randread, t.name, spec, async () => (await job(['--rw=randread', '--bs=4k', '--iodepth=16'])).read.iops);
          await rows.add(dioRows.write1m, t.name, spec, async () => (await job(['--rw=write', '--bs=1M', '--iodepth=4'])).write.bwBytes / MiB);
        } finally {
          await loop.detach();
        }
        if (t.freshFile) {
          const fresh = await t.freshFile(round);
          const floop = await attachLoop(fresh, 'on', cleanup);
          try {
            await rows.add(dioRows.fresh, t.name, { ...t.probe, loopDev: floop.dev }, async () => (await fio(['--name=fresh', `--filename=${floop.dev}`,
              '--ioengine=libaio', '--direct=1', `--size=${o.dioSizeMiB}M`, ...timed, '--rw=randwrite', '--bs=4k', '--iodepth=16'], fioTimeout)).write.iops);
          } finally {
            await floop.detach();
          }
        }
      }
    }
    if (o.ext4) {
      for (const t of rotate(targets, round - 1)) await ext4Round(t, round, ext4Mnt, tar, o, rows, ext4Rows, cleanup, fioTimeout);
    }
  }
  return [...rows.rows.values()].filter((r) => Object.keys(r.rounds).length > 0);
}

async function ext4Round(t: BlockTarget, round: number, mnt: string, tar: string, o: BlockOptions, rows: Rows,
  r: Record<'seq' | 'rand' | 'untar', CompareRow>, cleanup: Cleanup, fioTimeout: number): Promise<void> {
  const img = await t.ext4File(round);
  const loop = await attachLoop(img, 'off', cleanup);
  let mounted = false;
  const unmount = cleanup.add(`umount ${mnt}`, async () => {
    if (mounted) await run('umount', [mnt], { allowFail: true });
    mounted = false;
  });
  try {
    // nodiscard: the same start for every target (libfuse2 has no discard); noinit_itable: no
    // background inode-table zeroing competing with the measurement.
    await run('mkfs.ext4', ['-q', '-F', '-E', 'nodiscard', loop.dev], { timeoutMs: 10 * 60_000 });
    await run('mount', ['-o', 'noinit_itable', loop.dev, mnt]);
    mounted = true;
    const spec = { ...(t.ext4Probe ?? t.probe), loopDev: loop.dev };
    await dropCaches();
    await rows.add(r.seq, t.name, spec, async () => (await fio(['--name=seq', `--filename=${join(mnt, 'seq')}`, '--rw=write', '--bs=1M',
      `--size=${o.ext4SeqMiB}M`, '--ioengine=psync', '--end_fsync=1'], fioTimeout)).write.bwBytes / MiB);
    const randFile = join(mnt, 'rand');
    await fio(['--name=layout', `--filename=${randFile}`, '--rw=write', '--bs=1M', `--size=${o.ext4RandMiB}M`, '--ioengine=psync', '--end_fsync=1'], fioTimeout);
    await rows.add(r.rand, t.name, spec, async () => (await fio(['--name=rand', `--filename=${randFile}`, '--rw=randwrite', '--bs=4k', '--iodepth=16',
      '--ioengine=libaio', '--direct=1', `--size=${o.ext4RandMiB}M`, '--runtime', String(o.runtime), '--time_based', '--randrepeat=0'], fioTimeout)).write.iops);
    const dest = join(mnt, 'untar');
    await fs.mkdir(dest);
    await run('sync', ['-f', dest]);
    await rows.add(r.untar, t.name, spec, async () => {
      const t0 = process.hrtime.bigint();
      await run('tar', ['-xf', tar, '-C', dest], { timeoutMs: 30 * 60_000 });
      await run('sync', ['-f', dest]);
      return o.untarFiles / (Number(process.hrtime.bigint() - t0) / 1e9);
    });
  } finally {
    await unmount();
    await loop.detach();
  }
}
