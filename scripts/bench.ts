/**
 * npm run bench [-- flags]: thinvol against a plain file, qemu-storage-daemon's FUSE export and a
 * minimal fuse-native passthrough and, with --baseline, another thinvol checkout (sequential
 * throughput, 4 KiB random-write IOPS over loop devices, in interleaved rounds reported as medians),
 * plus mkfs footprints and the daemon's RSS under a million scattered writes. Appends a dated
 * section to docs/benchmarks.md. Needs root, fio, qemu-storage-daemon, mkfs.ext4 and mkfs.xfs.
 */
import { existsSync, promises as fs, statfsSync, statSync } from 'node:fs';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { fio } from './bench/fio';
import { Cleanup, mountpoints, run } from './bench/proc';
import {
  TARGETS, TARGET_LABEL, appendReport, columnName, digitsOf, fmtFigure, median, ratio, ratioName, ratioPairsOf, spread, targetsOf,
  type CheckRow, type CompareRow, type Figure, type Report, type TargetName,
} from './bench/report';
import { type Dio, Thinvol, attachLoop, startPassthrough, startQsd, withLoop } from './bench/targets';
import { blockSections } from './bench/block';
import { ensureFusectl } from './bench/probe';
import { snapshotChecks } from './bench/snapshots';

const ROOT = resolve(__dirname, '..', '..');
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

/* ------------------------------------------------------------------ options */

const SECTIONS = ['dio', 'ext4', 'seq', 'iops', 'mkfs', 'rss', 'snap'] as const;
type Section = (typeof SECTIONS)[number];

interface Options {
  blockRuntime: number;
  dioSizeMiB: number;
  ext4SizeMiB: number;
  ext4SeqMiB: number;
  ext4RandMiB: number;
  untarFiles: number;
  seqMiB: number;
  iopsRuntime: number;
  iopsSizeMiB: number;
  loopDio: 'on' | 'off' | 'both';
  rssWrites: number;
  rssVolumes: number;
  rssVolumeSize: string;
  rssIodepth: number;
  rssVia: 'file' | 'loop';
  rounds: number;
  baseline: string | undefined;
  only: Section[];
  tmpdir: string;
  record: boolean;
}

const DEFAULTS: Options = {
  blockRuntime: 10, dioSizeMiB: 1024, ext4SizeMiB: 4096, ext4SeqMiB: 1024, ext4RandMiB: 256, untarFiles: 10_000,
  seqMiB: 1024, iopsRuntime: 20, iopsSizeMiB: 1024, loopDio: 'on',
  rssWrites: 1_000_000, rssVolumes: 10, rssVolumeSize: '16T', rssIodepth: 16, rssVia: 'file',
  rounds: 3, baseline: undefined, only: ['dio', 'ext4', 'mkfs'], tmpdir: '/var/tmp', record: true,
};

const USAGE = `usage: npm run bench -- [flags]
  sections: dio and ext4 compare thinvol (libfuse3), thinvol --fuse libfuse2, qsd and a plain file,
  ext4 also thinvol mount --writeback-cache (wbcache); both also --baseline (served as it serves by default);
  seq and iops compare thinvol with plain, qsd, a fuse-native passthrough (and --baseline);
  mkfs, rss and snap (snapshot create latency and I/O stall, copy-on-write IOPS, df/check with 10 snapshots) check thinvol alone
  --block-runtime S    seconds per time-based fio job of dio and ext4 (default ${DEFAULTS.blockRuntime})
  --dio-size-mib N     region the dio jobs cover, written first (default ${DEFAULTS.dioSizeMiB})
  --ext4-size-mib N    the image ext4 is made on, new each round (default ${DEFAULTS.ext4SizeMiB})
  --ext4-seq-mib N     sequential write inside ext4, fsync at the end (default ${DEFAULTS.ext4SeqMiB})
  --ext4-rand-mib N    file the O_DIRECT random writes inside ext4 cover (default ${DEFAULTS.ext4RandMiB})
  --untar-files N      small files in the tree untarred into ext4 (default ${DEFAULTS.untarFiles})
  --seq-mib N          sequential write/read size in MiB (default ${DEFAULTS.seqMiB})
  --iops-runtime S     seconds per random-write fio job (default ${DEFAULTS.iopsRuntime})
  --iops-size-mib N    region the random writes cover, MiB (default ${DEFAULTS.iopsSizeMiB})
  --loop-dio on|off|both  loop devices with --direct-io=on, off, or measure both (default ${DEFAULTS.loopDio})
  --rss-writes N       random 4 KiB writes for the RSS test (default ${DEFAULTS.rssWrites})
  --rss-volumes N      volumes they are spread over, one fio job each (default ${DEFAULTS.rssVolumes})
  --rss-volume-size S  size of each of those volumes (default ${DEFAULTS.rssVolumeSize})
  --rss-iodepth N      libaio queue depth per RSS job (default ${DEFAULTS.rssIodepth})
  --rss-via file|loop  write the mount's files directly (O_DIRECT) or through loop devices (default ${DEFAULTS.rssVia})
  --rounds N           interleaved rounds of the seq and randwrite rows; the medians are reported (default ${DEFAULTS.rounds})
  --baseline DIR       also measure another built thinvol checkout (DIR/bin/thinvol, DIR/dist), e.g. the previous version
  --only LIST          comma-separated subset of ${SECTIONS.join(',')} (default ${DEFAULTS.only.join(',')})
  --tmpdir DIR         where the temporary directory goes; same disk as the repo (default ${DEFAULTS.tmpdir})
  --no-record          do not append to docs/benchmarks.md`;

function parseArgs(argv: string[]): Options {
  const o: Options = { ...DEFAULTS, only: [...DEFAULTS.only] };
  const int = (flag: string, v: string | undefined): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n <= 0) throw new Error(`${flag} wants a positive integer, got ${String(v)}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] ?? '';
    const [flag, inline] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    const val = (): string | undefined => inline ?? argv[++i];
    switch (flag) {
      case '--help': case '-h': console.log(USAGE); process.exit(0); break;
      case '--block-runtime': o.blockRuntime = int(flag, val()); break;
      case '--dio-size-mib': o.dioSizeMiB = int(flag, val()); break;
      case '--ext4-size-mib': o.ext4SizeMiB = int(flag, val()); break;
      case '--ext4-seq-mib': o.ext4SeqMiB = int(flag, val()); break;
      case '--ext4-rand-mib': o.ext4RandMiB = int(flag, val()); break;
      case '--untar-files': o.untarFiles = int(flag, val()); break;
      case '--seq-mib': o.seqMiB = int(flag, val()); break;
      case '--iops-runtime': o.iopsRuntime = int(flag, val()); break;
      case '--iops-size-mib': o.iopsSizeMiB = int(flag, val()); break;
      case '--loop-dio': {
        const v = val();
        if (v !== 'on' && v !== 'off' && v !== 'both') throw new Error('--loop-dio wants on, off or both');
        o.loopDio = v;
        break;
      }
      case '--rss-writes': o.rssWrites = int(flag, val()); break;
      case '--rss-volumes': o.rssVolumes = int(flag, val()); break;
      case '--rss-volume-size': o.rssVolumeSize = val() ?? ''; break;
      case '--rss-iodepth': o.rssIodepth = int(flag, val()); break;
      case '--rss-via': {
        const v = val();
        if (v !== 'file' && v !== 'loop') throw new Error('--rss-via wants file or loop');
        o.rssVia = v;
        break;
      }
      case '--rounds': o.rounds = int(flag, val()); break;
      case '--baseline': {
        const v = val();
        if (!v) throw new Error('--baseline wants a directory');
        o.baseline = v;
        break;
      }
      case '--only': {
        const parts = (val() ?? '').split(',').filter(Boolean);
        for (const p of parts) if (!(SECTIONS as readonly string[]).includes(p)) throw new Error(`--only: unknown section ${p}`);
        o.only = parts as Section[];
        break;
      }
      case '--tmpdir': o.tmpdir = val() ?? ''; break;
      case '--no-record': o.record = false; break;
      default: throw new Error(`unknown flag ${a}\n${USAGE}`);
    }
  }
  return o;
}

function nonDefaults(o: Options): string[] {
  const out: string[] = [];
  const keys = Object.keys(DEFAULTS) as (keyof Options)[];
  for (const k of keys) {
    if (k === 'record' || k === 'tmpdir') continue;
    const a = JSON.stringify(o[k]);
    if (a !== JSON.stringify(DEFAULTS[k])) out.push(`${k}=${a}`);
  }
  return out;
}

/* ------------------------------------------------------------------ helpers */

const fmt = (n: number, d = 1): string => n.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d });
const errMsg = (err: unknown): string => (err instanceof Error ? err.message : String(err)).split('\n')[0] ?? '';
const log = (s: string): void => console.log(`[${new Date().toISOString().slice(11, 19)}] ${s}`);

async function measure(what: string, fn: () => Promise<number>): Promise<Figure> {
  try {
    return { value: await fn() };
  } catch (err) {
    console.error(`bench: ${what} failed: ${errMsg(err)}`);
    return { error: errMsg(err) };
  }
}

async function dropCaches(): Promise<void> {
  await run('sync', []);
  await fs.writeFile('/proc/sys/vm/drop_caches', '3');
}

async function procStatusKiB(pid: number, key: string): Promise<number> {
  const text = await fs.readFile(`/proc/${pid}/status`, 'utf8');
  const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text);
  if (!m?.[1]) throw new Error(`no ${key} in /proc/${pid}/status`);
  return Number(m[1]);
}

async function firstLine(cmd: string, args: string[]): Promise<string> {
  try {
    const r = await run(cmd, args, { allowFail: true });
    return (r.stdout || r.stderr).split('\n')[0]?.trim() ?? '?';
  } catch {
    return '?';
  }
}

/** The short commit of a checkout, marked when its src differs from it. */
async function checkoutHead(dir: string): Promise<string> {
  const head = await firstLine('git', ['-C', dir, 'rev-parse', '--short', 'HEAD']);
  const dirty = (await run('git', ['-C', dir, 'status', '--porcelain', '--', 'src'], { allowFail: true })).stdout.trim() !== '';
  return `${head}${dirty ? ' (src modified)' : ''}`;
}

async function machine(tmp: string, base: Baseline | undefined): Promise<[string, string][]> {
  const cpu = /^model name\s*:\s*(.+)$/m.exec(await fs.readFile('/proc/cpuinfo', 'utf8'))?.[1] ?? '?';
  const disk = (await firstLine('findmnt', ['-n', '-o', 'SOURCE,FSTYPE', '-T', tmp])).replace(/\s+/, ' ');
  const load = (await fs.readFile('/proc/loadavg', 'utf8')).split(' ').slice(0, 3).join(' ');
  const rows: [string, string][] = [
    ['nproc', await firstLine('nproc', [])],
    ['CPU', cpu.trim()],
    ['RAM', `${fmt(os.totalmem() / GiB)} GiB`],
    ['disk/fs', disk],
    ['kernel', os.release()],
    ['load at start', load],
    ['node', process.version],
    ['fio', await firstLine('fio', ['--version'])],
    ['qemu-storage-daemon', (await firstLine('qemu-storage-daemon', ['--version'])).replace(/^qemu-storage-daemon version /, '')],
    ['thinvol', await checkoutHead(ROOT)],
  ];
  if (base) rows.push(['baseline', `${await checkoutHead(base.dir)} (${base.dir})`]);
  return rows;
}

/* ------------------------------------------------------------------ the run */

interface Baseline { dir: string; bin: string; head: string }

async function baselineOf(dir: string): Promise<Baseline> {
  const abs = resolve(dir);
  const bin = join(abs, 'bin', 'thinvol');
  for (const p of [bin, join(abs, 'dist')]) {
    if (!existsSync(p)) throw new Error(`--baseline ${dir}: no ${p}; it must be a built thinvol checkout (npm install && npm run build there)`);
  }
  const head = (await run('git', ['-C', abs, 'rev-parse', '--short', 'HEAD'])).stdout.trim();
  return { dir: abs, bin, head };
}

/** A pool mounted by one thinvol checkout: this one, or the baseline's. */
interface Served { tv: Thinvol; mnt: string; pid: number }

async function servePool(bin: string, tmp: string, prefix: string, backendGiB: number, cleanup: Cleanup): Promise<Served> {
  const tv = new Thinvol(bin, join(tmp, `${prefix}pool`));
  const mnt = join(tmp, `${prefix}mnt`);
  await fs.mkdir(mnt);
  await tv.createPool(join(tmp, `${prefix}pool-backend.img`), `${backendGiB}G`);
  const { pid } = await tv.mount(mnt, cleanup);
  return { tv, mnt, pid };
}

/** A target of the seq and randwrite rows. */
interface Target {
  name: TargetName;
  /** The file the rows measure: the one the last seq round wrote. */
  file: string;
  /** Makes file never-written again, so that every round's seq write is a first write like round 1's. */
  renew: (round: number) => Promise<void>;
}

/** Round k starts k targets further along, so that no target always runs first (or right after the same one). */
function rotate<T>(xs: readonly T[], k: number): T[] {
  const n = xs.length === 0 ? 0 : k % xs.length;
  return [...xs.slice(n), ...xs.slice(0, n)];
}

function addRound(row: CompareRow, t: TargetName, f: Figure): void {
  (row.rounds[t] ??= []).push(f);
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  if (process.getuid?.() !== 0) throw new Error('the benchmark needs root (loop devices, drop_caches, FUSE allow_other)');
  for (const tool of ['fio', 'qemu-storage-daemon', 'mkfs.ext4', 'mkfs.xfs', 'losetup', 'fusermount', 'fallocate']) {
    const r = await run('sh', ['-c', `command -v ${tool}`], { allowFail: true });
    if (r.code !== 0) throw new Error(`${tool} is missing (apt-get install -y fio qemu-system-common e2fsprogs xfsprogs fuse util-linux)`);
  }
  const thinvolBin = join(ROOT, 'bin', 'thinvol');
  const passthroughJs = join(__dirname, 'bench', 'passthrough.js');
  const base = o.baseline !== undefined ? await baselineOf(o.baseline) : undefined;
  const label = (t: TargetName): string => (t === 'baseline' && base ? `baseline thinvol ${base.head} volume` : TARGET_LABEL[t]);

  await fs.mkdir(o.tmpdir, { recursive: true });
  if (statSync(o.tmpdir).dev !== statSync(ROOT).dev) console.warn(`bench: warning: ${o.tmpdir} is not on the repository's filesystem`);
  const seqBytes = o.seqMiB * MiB;
  const iopsBytes = o.iopsSizeMiB * MiB;
  const fileBytes = Math.max(seqBytes, iopsBytes);
  const rssBackendGiB = Math.max(8, Math.ceil((o.rssWrites * 4096 * 1.25) / GiB) + 2);
  // Every round writes a new seq volume and a fresh randwrite volume, and none is deleted.
  const poolBytes = o.rounds * (seqBytes + iopsBytes) + fileBytes;
  const poolBackendGiB = Math.max(8, Math.ceil(poolBytes / GiB) + 2);
  const blockThinvols = base ? 4 : 3;
  const blockBytes = o.only.includes('dio') || o.only.includes('ext4')
    ? (blockThinvols + 1) * o.dioSizeMiB * MiB + blockThinvols * o.rounds * (o.dioSizeMiB + o.ext4SeqMiB + o.ext4RandMiB + 200) * MiB : 0;
  const need = blockBytes + 3 * fileBytes + (base ? 2 : 1) * poolBytes + (o.only.includes('rss') ? o.rssWrites * 4096 * 1.25 : 0) + (o.only.includes('snap') ? 8 * GiB : 0);
  const st = statfsSync(o.tmpdir);
  if (st.bavail * st.bsize < need) throw new Error(`${o.tmpdir} has ${fmt((st.bavail * st.bsize) / GiB)} GiB free; the run needs about ${fmt(need / GiB)} GiB`);

  const tmp = await fs.mkdtemp(join(o.tmpdir, 'thinvol-bench-'));
  log(`working in ${tmp}`);
  const cleanup = new Cleanup();
  cleanup.add(`rm -rf ${tmp}`, async () => {
    const busy = (await mountpoints()).filter((m) => m === tmp || m.startsWith(`${tmp}/`));
    if (busy.length > 0) {
      console.error(`bench: not removing ${tmp}: still mounted: ${busy.join(', ')}`);
      return;
    }
    await fs.rm(tmp, { recursive: true, force: true });
  });
  let interrupted = false;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (interrupted) return;
    interrupted = true;
    console.error(`bench: ${sig}: cleaning up`);
    cleanup.runAll().finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const report: Report = { date: '', machine: [], settings: nonDefaults(o), rounds: o.rounds, compare: [], checks: [], notes: [] };
  if (base) report.baseline = base.head;
  const dios: Dio[] = o.loopDio === 'both' ? ['on', 'off'] : [o.loopDio];

  try {
    report.date = (await firstLine('date', ['-I'])) || new Date().toISOString().slice(0, 10);
    report.machine = await machine(tmp, base);

    if (o.only.includes('dio') || o.only.includes('ext4')) {
      const undo = await ensureFusectl();
      if (undo) cleanup.add('umount fusectl', undo);
      const block = join(tmp, 'block');
      await fs.mkdir(block);
      report.compare.push(...await blockSections(thinvolBin, block, {
        rounds: o.rounds, runtime: o.blockRuntime, dioSizeMiB: o.dioSizeMiB, ext4SizeMiB: o.ext4SizeMiB, ext4SeqMiB: o.ext4SeqMiB,
        ext4RandMiB: o.ext4RandMiB, untarFiles: o.untarFiles, dio: o.only.includes('dio'), ext4: o.only.includes('ext4'),
      }, cleanup, log, base?.bin));
    }

    const needTargets = o.only.includes('seq') || o.only.includes('iops');
    const needPool = needTargets || o.only.includes('mkfs');
    const pools: Partial<Record<TargetName, Served>> = {};
    if (needPool) {
      pools.thinvol = await servePool(thinvolBin, tmp, '', poolBackendGiB, cleanup);
      log(`thinvol pool mounted at ${pools.thinvol.mnt} (daemon pid ${pools.thinvol.pid})`);
      if (base) {
        // Its own pool, created by its own binary: the two versions' pool formats differ.
        pools.baseline = await servePool(base.bin, tmp, 'base-', poolBackendGiB, cleanup);
        log(`baseline thinvol ${base.head} (${base.dir}) pool mounted at ${pools.baseline.mnt} (daemon pid ${pools.baseline.pid})`);
      }
    }
    const served = (): [TargetName, Served][] => TARGETS.flatMap((t): [TargetName, Served][] => {
      const p = pools[t];
      return p ? [[t, p]] : [];
    });

    let targets: Target[] = [];
    if (needTargets) {
      const plain = join(tmp, 'plain.img');
      const raw = join(tmp, 'qsd.raw');
      const ptBacking = join(tmp, 'passthrough.img');
      for (const f of [plain, raw, ptBacking]) await run('truncate', ['-s', String(fileBytes), f]);
      const qsd = await startQsd(raw, join(tmp, 'qsd-export'), cleanup);
      log(`qemu-storage-daemon pid ${qsd.pid} exports ${raw}`);
      const pt = await startPassthrough(passthroughJs, ptBacking, join(tmp, 'pt'), cleanup);
      log(`fuse-native passthrough pid ${pt.pid} serves ${pt.file}`);
      const punched = (name: TargetName, file: string, backing: string): Target => ({
        name, file,
        renew: async () => { await run('fallocate', ['--punch-hole', '--offset', '0', '--length', String(fileBytes), backing]); },
      });
      const byName: Partial<Record<TargetName, Target>> = {
        plain: punched('plain', plain, plain),
        qsd: punched('qsd', join(tmp, 'qsd-export'), raw),
        passthrough: punched('passthrough', pt.file, ptBacking),
      };
      for (const [t, p] of served()) {
        await p.tv.createVolume('seq-1', '100G');
        const target: Target = {
          name: t, file: join(p.mnt, 'seq-1'),
          renew: async (round) => {
            if (round === 1) return;
            await p.tv.createVolume(`seq-${round}`, '100G');
            target.file = join(p.mnt, `seq-${round}`);
          },
        };
        byName[t] = target;
      }
      targets = TARGETS.flatMap((t) => byName[t] ?? []);
    }
    const roundsLabel = (round: number): string => `round ${round}/${o.rounds}`;

    /* 1. sequential */
    if (o.only.includes('seq') && targets.length > 0) {
      const w: CompareRow = { label: `seq write ${o.seqMiB} MiB`, unit: 'MiB/s', rounds: {} };
      const r: CompareRow = { label: `seq read ${o.seqMiB} MiB`, unit: 'MiB/s', rounds: {} };
      for (let round = 1; round <= o.rounds; round++) {
        for (const t of rotate(targets, round - 1)) {
          const wf = await measure(`seq write ${t.name} ${roundsLabel(round)}`, async () => {
            await t.renew(round);
            await dropCaches();
            const res = await fio(['--name=seqwrite', `--filename=${t.file}`, '--rw=write', '--bs=1M', `--size=${o.seqMiB}M`,
              '--ioengine=psync', '--end_fsync=1', '--fallocate=none', '--allow_file_create=0'], 30 * 60_000);
            return res.write.bwBytes / MiB;
          });
          addRound(w, t.name, wf);
          await dropCaches();
          // After a failed write the file may be an older round's or half written: not this round's read.
          const rf = 'error' in wf ? { error: 'seq write failed' } : await measure(`seq read ${t.name} ${roundsLabel(round)}`, async () => {
            const res = await fio(['--name=seqread', `--filename=${t.file}`, '--rw=read', '--bs=1M', `--size=${o.seqMiB}M`,
              '--ioengine=psync', '--fallocate=none', '--allow_file_create=0'], 30 * 60_000);
            return res.read.bwBytes / MiB;
          });
          addRound(r, t.name, rf);
          log(`${roundsLabel(round)} seq ${label(t.name)}: write ${show(wf, 1)} MiB/s, read ${show(rf, 1)} MiB/s`);
        }
      }
      report.compare.push(w, r);
    }

    /* 2. random-write IOPS through loop devices */
    if (o.only.includes('iops') && targets.length > 0) {
      for (const dio of dios) {
        const row: CompareRow = { label: '4k randwrite', unit: 'IOPS', rounds: {}, extra: `loop dio=${dio}` };
        const fresh: CompareRow = { label: '4k randwrite, fresh volume', unit: 'IOPS', rounds: {}, extra: `loop dio=${dio}` };
        const withFresh = dio === dios[dios.length - 1];
        const used = new Set<string>();
        const job = (dev: string): Promise<number> => fio(['--name=randwrite', `--filename=${dev}`, '--rw=randwrite', '--bs=4k', '--iodepth=16',
          '--ioengine=libaio', '--direct=1', `--runtime=${o.iopsRuntime}`, '--time_based', `--size=${o.iopsSizeMiB}M`, '--randrepeat=0'],
        (o.iopsRuntime + 300) * 1000).then((res) => res.write.iops);
        for (let round = 1; round <= o.rounds; round++) {
          for (const t of rotate(targets, round - 1)) {
            const f = await measure(`randwrite ${t.name} ${roundsLabel(round)}`, () => withLoop(t.file, dio, cleanup, async (loop) => {
              used.add(`${t.name}:${loop.dio ? 'on' : 'off'}`);
              return job(loop.dev);
            }));
            addRound(row, t.name, f);
            log(`${roundsLabel(round)} randwrite ${label(t.name)} (loop dio ${dio}): ${show(f, 0)} IOPS`);
            const p = pools[t.name];
            if (withFresh && p) {
              const vol = `iops-fresh-${round}`;
              const ff = await measure(`randwrite ${t.name} fresh ${roundsLabel(round)}`, async () => {
                await p.tv.createVolume(vol, '100G');
                return withLoop(join(p.mnt, vol), dio, cleanup, (loop) => job(loop.dev));
              });
              addRound(fresh, t.name, ff);
              log(`${roundsLabel(round)} randwrite ${label(t.name).replace(/ volume$/, '')}, fresh volume (loop dio ${dio}): ${show(ff, 0)} IOPS`);
            }
          }
        }
        report.compare.push(row);
        if (withFresh) report.compare.push(fresh);
        report.notes.push(`loop devices asked for --direct-io=${dio}; the kernel used (sysfs loop/dio): ${[...used].join(', ')}`);
      }
    }

    /* 3. mkfs footprints */
    if (o.only.includes('mkfs')) {
      const mkfs: [string, string, string[], number][] = [
        ['ext4', 'mkfs.ext4', ['-q'], 8 * MiB],
        ['xfs', 'mkfs.xfs', ['-q', '-f'], 1 * MiB],
      ];
      for (const [fsName, cmd, args, limit] of mkfs) {
        const vol = `mkfs-${fsName}`;
        const results: Partial<Record<TargetName, { fig: Figure; seconds: number }>> = {};
        for (const [t, p] of served()) {
          let seconds = 0;
          const fig = await measure(`mkfs ${fsName} ${t}`, async () => {
            await p.tv.createVolume(vol, '100G');
            await withLoop(join(p.mnt, vol), dios[0] ?? 'on', cleanup, async (loop) => {
              const t0 = Date.now();
              await run(cmd, [...args, loop.dev], { timeoutMs: 10 * 60_000 });
              seconds = (Date.now() - t0) / 1000;
            });
            return p.tv.allocatedOf(vol);
          });
          results[t] = { fig, seconds };
        }
        const fig = results.thinvol?.fig ?? { error: 'not measured' };
        const ok = 'value' in fig ? fig.value <= limit : undefined;
        const footprint = (f: Figure): string => ('value' in f ? `${fmt(f.value / MiB, 2)} MiB` : `error: ${f.error}`);
        const detail = (r: { fig: Figure; seconds: number }): string => ('value' in r.fig ? `${r.fig.value} bytes allocated; mkfs took ${fmt(r.seconds)} s` : '');
        const check: CheckRow = { label: `${cmd} ${args.join(' ')} footprint (100 GiB volume)`, value: footprint(fig), target: `<= ${limit / MiB} MiB`, pass: ok,
          note: results.thinvol ? detail(results.thinvol) : '' };
        const b = results.baseline;
        if (b) {
          check.baseline = footprint(b.fig);
          check.vsBaseline = ratio(fig, b.fig);
          const bd = detail(b);
          if (bd) check.note += `${check.note ? '; ' : ''}baseline: ${bd}`;
        }
        report.checks.push(check);
        log(`${cmd} footprint: ${check.value} (target <= ${limit / MiB} MiB): ${ok === undefined ? '-' : ok ? 'pass' : 'FAIL'}${b ? `; baseline ${check.baseline ?? '-'}, vol/baseline ${check.vsBaseline ?? '-'}` : ''}`);
      }
    }

    /* 4. daemon RSS under scattered writes */
    if (o.only.includes('rss')) {
      const rtv = new Thinvol(thinvolBin, join(tmp, 'rsspool'));
      const rmnt = join(tmp, 'rssmnt');
      await fs.mkdir(rmnt);
      await rtv.createPool(join(tmp, 'rss-backend.img'), `${rssBackendGiB}G`);
      const names = Array.from({ length: o.rssVolumes }, (_v, i) => `r${i + 1}`);
      for (const n of names) await rtv.createVolume(n, o.rssVolumeSize);
      const { pid, unmount } = await rtv.mount(rmnt, cleanup);
      const before = await procStatusKiB(pid, 'VmRSS');
      log(`RSS pool mounted (daemon pid ${pid}, VmRSS ${fmt(before / 1024)} MiB); ${o.rssWrites} random 4 KiB writes over ${o.rssVolumes} x ${o.rssVolumeSize}`);
      const perJob = Math.ceil(o.rssWrites / o.rssVolumes);
      const detach: (() => Promise<void>)[] = [];
      let targets = names.map((n) => join(rmnt, n));
      let seconds = 0;
      let ios = 0;
      const res = await measure('rss writes', async () => {
        if (o.rssVia === 'loop') {
          const loops = [];
          for (const t of targets) loops.push(await attachLoop(t, dios[0] ?? 'on', cleanup));
          targets = loops.map((l) => l.dev);
          detach.push(...loops.map((l) => l.detach));
        }
        const t0 = Date.now();
        const out = await fio(['--rw=randwrite', '--bs=4k', '--ioengine=libaio', `--iodepth=${o.rssIodepth}`, '--direct=1',
          '--norandommap', '--randrepeat=0', '--refill_buffers', `--io_size=${perJob * 4096}`, '--fallocate=none', '--allow_file_create=0',
          ...targets.flatMap((t, i) => [`--name=w${i + 1}`, `--filename=${t}`])], 60 * 60_000);
        seconds = (Date.now() - t0) / 1000;
        ios = out.write.totalIos;
        return procStatusKiB(pid, 'VmRSS');
      });
      const hwm = 'value' in res ? await procStatusKiB(pid, 'VmHWM') : 0;
      const anon = 'value' in res ? await procStatusKiB(pid, 'RssAnon') : 0;
      const file = 'value' in res ? await procStatusKiB(pid, 'RssFile') : 0;
      for (const d of detach) await d();
      const allocated = 'value' in res ? (await rtv.df()).allocatedBytes : 0;
      await unmount();
      const limitKiB = 150 * 1024;
      report.checks.push({
        label: `daemon VmRSS after ${o.rssWrites.toLocaleString('en-US')} random 4 KiB writes over ${o.rssVolumes} x ${o.rssVolumeSize} volumes`,
        value: 'value' in res ? `${fmt(res.value / 1024)} MiB` : `error: ${res.error}`,
        target: '<= 150 MiB',
        pass: 'value' in res ? res.value <= limitKiB : undefined,
        note: 'value' in res
          ? `VmHWM ${fmt(hwm / 1024)} MiB; RssAnon ${fmt(anon / 1024)} MiB, RssFile ${fmt(file / 1024)} MiB (LMDB map pages count here); VmRSS ${fmt(before / 1024)} MiB after mount; ${ios} writes in ${fmt(seconds)} s (${fmt(ios / seconds, 0)} IOPS, ${o.rssVia === 'loop' ? 'loop devices' : 'O_DIRECT on the mount\'s files'}, iodepth ${o.rssIodepth} x ${o.rssVolumes} jobs); pool allocated ${fmt(allocated / GiB, 2)} GiB`
          : '',
      });
      if ('value' in res) log(`daemon VmRSS ${fmt(res.value / 1024)} MiB, VmHWM ${fmt(hwm / 1024)} MiB after ${ios} writes in ${fmt(seconds)} s (${fmt(ios / seconds, 0)} IOPS)`);
    }
    if (o.only.includes('snap')) {
      const rows = await snapshotChecks(thinvolBin, tmp, { runtime: o.blockRuntime, rounds: o.rounds, mapEntries: 1_000_000, snapshots: 10 }, cleanup, log);
      for (const r of rows) log(`${r.label}: ${r.value} (${r.note})`);
      report.checks.push(...rows);
    }
  } finally {
    await cleanup.runAll();
    const left = (await mountpoints()).filter((m) => m.startsWith(tmp));
    const loops = (await run('losetup', ['-a'], { allowFail: true })).stdout.split('\n').filter((l) => l.includes(tmp));
    if (left.length > 0 || loops.length > 0) console.error(`bench: WARNING: left behind: ${[...left, ...loops].join('; ')}`);
  }

  printSummary(report);
  if (interrupted) return;
  if (o.record) {
    const path = join(ROOT, 'docs', 'benchmarks.md');
    await fs.mkdir(join(ROOT, 'docs'), { recursive: true });
    await appendReport(path, report);
    log(`appended to ${path}`);
  }
}

function show(f: Figure | undefined, d: number): string {
  return !f ? '-' : 'value' in f ? fmt(f.value, d) : 'error';
}

function printSummary(r: Report): void {
  console.log('\n=== summary ===');
  for (const row of r.compare) {
    const d = digitsOf(row);
    const present = targetsOf(r).filter((t) => row.rounds[t]);
    const cells = present.map((t) => `${columnName(t, r)} ${fmtFigure(median(row.rounds[t]), d)} (${spread(row.rounds[t], d)})`);
    console.log(`${row.label}${row.extra ? ` (${row.extra})` : ''} [${row.unit}, median (lowest-highest) of ${r.rounds}]: ${cells.join(', ')}`);
    const others = ratioPairsOf(r).filter(([a, b]) => row.rounds[a] && row.rounds[b]);
    if (others.length > 0) {
      console.log(`    ratios: ${others.map((p) => `${ratioName(p)} ${ratio(median(row.rounds[p[0]]), median(row.rounds[p[1]]))}`).join(', ')}`);
    }
  }
  for (const c of r.checks) {
    const base = c.baseline !== undefined ? `; ${columnName('baseline', r)} ${c.baseline}, vol/baseline ${c.vsBaseline ?? '-'}` : '';
    console.log(`${c.label}: ${c.value}${base} (target ${c.target}) ${c.pass === undefined ? '' : c.pass ? 'PASS' : 'FAIL'}${c.note ? `\n    ${c.note}` : ''}`);
  }
  for (const n of r.notes) console.log(`note: ${n}`);
}

main().catch((err: unknown) => {
  console.error(`bench: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
  process.exitCode = 1;
});
