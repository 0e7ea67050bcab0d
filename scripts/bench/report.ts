import { promises as fs } from 'node:fs';

export const TARGETS = ['thinvol', 'wbcache', 'libfuse2', 'qsd', 'plain', 'passthrough', 'baseline'] as const;
export type TargetName = (typeof TARGETS)[number];

export const TARGET_LABEL: Record<TargetName, string> = {
  thinvol: 'thinvol volume',
  wbcache: 'thinvol volume, mount --writeback-cache',
  libfuse2: 'thinvol volume served through libfuse2 (fuse-native)',
  plain: 'plain file',
  qsd: 'qemu-storage-daemon FUSE export',
  passthrough: 'fuse-native passthrough',
  baseline: 'baseline thinvol volume',
};

/** One measured figure, or why it is missing. */
export type Figure = { value: number } | { error: string };

/**
 * What a server did while one figure was measured: its main thread's CPU use (for thinvol the
 * JavaScript thread; for qsd the thread that runs its event loop), the whole process's, the
 * FUSE requests the kernel had waiting for an answer (mean of samples), and the mean size of the
 * requests the loop device received.
 */
export interface Probe { mainBusyPct?: number; processCpuPct?: number; fuseWaiting?: number; loopReqKiB?: number }

/** A row of the comparison: each target's figures, one per round, in round order, and what was probed meanwhile. */
export interface CompareRow {
  label: string; unit: string; rounds: Partial<Record<TargetName, Figure[]>>; extra?: string;
  probes?: Partial<Record<TargetName, Probe[]>>;
}

/** baseline and vsBaseline are set when the run has a baseline: its result and thinvol's divided by it. */
export interface CheckRow { label: string; value: string; target: string; pass: boolean | undefined; note: string; baseline?: string; vsBaseline?: string }

export interface Report {
  date: string;
  machine: [string, string][];
  settings: string[];
  rounds: number;
  /** git rev-parse --short HEAD of the baseline checkout, when there is one. */
  baseline?: string;
  compare: CompareRow[];
  checks: CheckRow[];
  notes: string[];
}

const HEADER = `# thinvol benchmarks

Each section below was appended by one run of \`npm run bench\` (scripts/bench.ts), run as root on an
idle machine with fio, qemu-storage-daemon (qemu-system-common), e2fsprogs and xfsprogs installed.
Everything runs in a temporary directory under /var/tmp (override with \`--tmpdir\`, keep it on the
disk you want to measure); mounts, loop devices and processes are removed at the end.
\`npm run bench -- --help\` lists the flags that shrink a run; flags that differ from the defaults are
listed in the section they produced.

The machines are noisy, so the seq and randwrite rows are measured in rounds (\`--rounds N\`, default 3):
each round runs every target once, the order rotated by one target per round so that none always goes
first, and the table gives each target's median over the rounds (the mean of the middle two for an even
count), ratios of those medians, and below it the spread (lowest-highest round) of every figure.
A round that fails is left out of the median and counted in the spread table. Sections from before
rounds existed hold one measurement per target.

Targets in the comparison table (all backed by files on the same disk):

- **thinvol**: a 100 GiB thinvol volume, i.e. the file MNT/NAME of \`thinvol mount\`;
- **plain**: a plain file on the same filesystem, no FUSE (the disk's own ceiling);
- **qsd**: a raw file exported as a file by \`qemu-storage-daemon --export type=fuse\` (a mature C FUSE block server);
- **passthrough**: scripts/bench/passthrough.ts, a one-file fuse-native filesystem forwarding read/write to a
  backing file with fs.read/fs.write, mounted with the thinvol daemon's options (big_writes,
  max_write=131072, max_background=64, congestion_threshold=48, no timeout): the ceiling fuse-native itself imposes;
- **baseline HASH** (only with \`--baseline DIR\`): a 100 GiB volume served by another built thinvol checkout
  (DIR/bin/thinvol, commit HASH), e.g. the version before a change: its own pool, backend file and mountpoint,
  created and mounted by its own binary, measured in the same rounds as the others.

Rows:

- **seq write MiB/s**: \`fio --rw=write --bs=1M --size=1G --ioengine=psync --end_fsync=1\` into the file (includes the
  final fsync). Every round writes a never-written file: a new volume for thinvol and the baseline, the other
  targets' backing files with their blocks punched out (\`fallocate --punch-hole\`), page cache dropped first;
- **seq read MiB/s**: \`fio --rw=read --bs=1M --size=1G --ioengine=psync\` of that file after \`sync; echo 3 > /proc/sys/vm/drop_caches\`;
- **randwrite IOPS**: \`fio --rw=randwrite --bs=4k --iodepth=16 --ioengine=libaio --direct=1 --runtime=20 --time_based --size=1G\`
  on a loop device over the file (\`losetup --direct-io=on\` unless noted); the files were fully written by the
  sequential test (thinvol and the baseline: the volume of the last seq round), so these are overwrites. The row
  "fresh volume" runs the same job, for thinvol and the baseline only, on a loop over a volume created for that
  round and never written, so most writes allocate;
- ratios are thinvol's median divided by the other target's (1.00 = as fast; above 1 = thinvol faster);
  vol/baseline compares this checkout with the baseline checkout;
- **mkfs.ext4 / mkfs.xfs footprint**: \`allocatedBytes\` (thinvol df --json) of a fresh 100 GiB volume after
  \`mkfs.ext4 -q\` / \`mkfs.xfs -q -f\` on a loop device over it, measured once; with a baseline, the same on a
  volume of the baseline's pool, and thinvol's footprint divided by the baseline's;
- **daemon RSS**: VmRSS / VmHWM of the thinvol daemon (this checkout only) after 1,000,000 random 4 KiB writes (random data,
  O_DIRECT, libaio iodepth 16 per job) spread over ten 16 TiB volumes by ten parallel fio jobs, and how long they took.
`;

function fmtNum(n: number, digits: number): string {
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export function fmtFigure(f: Figure | undefined, digits: number): string {
  if (!f) return '-';
  if ('error' in f) return 'error';
  return fmtNum(f.value, digits);
}

export function ratio(a: Figure | undefined, b: Figure | undefined): string {
  if (!a || !b || 'error' in a || 'error' in b || b.value === 0) return '-';
  return (a.value / b.value).toFixed(2);
}

const valuesOf = (rounds: readonly Figure[]): number[] => rounds.flatMap((f) => ('value' in f ? [f.value] : []));

/** The median of the rounds that produced a figure; the first error when none did. */
export function median(rounds: readonly Figure[] | undefined): Figure | undefined {
  if (!rounds || rounds.length === 0) return undefined;
  const v = valuesOf(rounds).sort((x, y) => x - y);
  if (v.length === 0) return rounds[0];
  const mid = Math.floor(v.length / 2);
  const hi = v[mid] ?? 0;
  return { value: v.length % 2 === 1 ? hi : ((v[mid - 1] ?? hi) + hi) / 2 };
}

/** "lowest-highest" over the rounds, plus how many failed. */
export function spread(rounds: readonly Figure[] | undefined, digits: number): string {
  if (!rounds || rounds.length === 0) return '-';
  const v = valuesOf(rounds);
  const failed = rounds.length - v.length;
  if (v.length === 0) return 'error';
  const range = `${fmtNum(Math.min(...v), digits)}-${fmtNum(Math.max(...v), digits)}`;
  return failed > 0 ? `${range} (${failed} of ${rounds.length} failed)` : range;
}

export const digitsOf = (row: CompareRow): number => (row.unit === 'IOPS' ? 0 : 1);

const measured = (r: Pick<Report, 'compare'>, t: TargetName): boolean => r.compare.some((row) => row.rounds[t] !== undefined);

/** The targets a report has columns for: those some row measured. */
export const targetsOf = (r: Pick<Report, 'compare'>): TargetName[] => TARGETS.filter((t) => measured(r, t));

/** The ratio columns: thinvol against every other measured target, qsd first. */
export const ratioTargetsOf = (r: Pick<Report, 'compare'>): TargetName[] =>
  (['qsd', 'libfuse2', 'plain', 'passthrough', 'baseline'] as const).filter((t) => measured(r, t));

/** The ratio columns as [numerator, denominator]: thinvol against each other target, and the writeback-cache mount against qsd. */
export function ratioPairsOf(r: Pick<Report, 'compare'>): [TargetName, TargetName][] {
  const pairs = ratioTargetsOf(r).map((t): [TargetName, TargetName] => ['thinvol', t]);
  if (measured(r, 'wbcache') && measured(r, 'qsd')) pairs.push(['wbcache', 'qsd']);
  return pairs;
}

export const ratioName = ([a, b]: [TargetName, TargetName]): string => `${a === 'thinvol' ? 'vol' : a}/${b}`;

export function columnName(t: TargetName, r: Pick<Report, 'baseline'>): string {
  return t === 'baseline' ? `baseline ${r.baseline ?? ''}`.trim() : t;
}

function medianOf(xs: readonly number[]): number | undefined {
  const m = median(xs.map((value) => ({ value })));
  return m && 'value' in m ? m.value : undefined;
}

/** Median over the rounds of one probe field, formatted; '-' when not probed. */
export function probeCell(probes: readonly Probe[] | undefined, key: keyof Probe, digits: number): string {
  const v = medianOf((probes ?? []).flatMap((p) => (p[key] !== undefined ? [p[key] ?? 0] : [])));
  return v === undefined ? '-' : fmtNum(v, digits);
}

/** Per row and target: main thread busy % / process CPU % / FUSE requests waiting / KiB per loop request. */
function probeTable(r: Report, rowName: (row: CompareRow) => string): string[] {
  const rows = r.compare.filter((row) => row.probes !== undefined);
  if (rows.length === 0) return [];
  const targets = targetsOf(r).filter((t) => rows.some((row) => row.probes?.[t] !== undefined));
  const lines = [
    'What each server did meanwhile (medians over the rounds): main thread busy % / whole process CPU % (100 = one CPU) / FUSE requests waiting for an answer (mean) / KiB per request the loop device received:',
    '',
    `| test | ${targets.map((t) => columnName(t, r)).join(' | ')} |`,
    `|---|${targets.map(() => '--:|').join('')}`,
  ];
  for (const row of rows) {
    const cell = (t: TargetName): string => {
      const p = row.probes?.[t];
      if (!p) return '-';
      return [probeCell(p, 'mainBusyPct', 0), probeCell(p, 'processCpuPct', 0), probeCell(p, 'fuseWaiting', 1), probeCell(p, 'loopReqKiB', 0)].join(' / ');
    };
    lines.push(`| ${rowName(row)} | ${targets.map(cell).join(' | ')} |`);
  }
  lines.push('');
  return lines;
}

export function renderSection(r: Report): string {
  const lines: string[] = [];
  lines.push(`## ${r.date}`, '');
  lines.push('Machine: ' + r.machine.map(([k, v]) => `${k} ${v}`).join('; ') + '.', '');
  if (r.settings.length > 0) lines.push(`Settings: ${r.settings.join('; ')}.`, '');
  const targets = targetsOf(r);
  const others = ratioPairsOf(r);
  const rowName = (row: CompareRow): string => `${row.label} (${row.unit})${row.extra ? ` ${row.extra}` : ''}`;
  if (r.compare.length > 0) {
    lines.push(r.rounds === 1 ? 'One round: one measurement per target.' : `Medians of ${r.rounds} interleaved rounds (target order rotated each round); ratios are of the medians.`, '');
    lines.push(`| test | ${targets.map((t) => columnName(t, r)).join(' | ')} | ${others.map(ratioName).join(' | ')} |`);
    lines.push(`|---|${targets.map(() => '--:|').join('')}${others.map(() => '--:|').join('')}`);
    for (const row of r.compare) {
      const d = digitsOf(row);
      const m = (t: TargetName): Figure | undefined => median(row.rounds[t]);
      lines.push(`| ${rowName(row)} | ${targets.map((t) => fmtFigure(m(t), d)).join(' | ')} | ${others.map(([a, b]) => ratio(m(a), m(b))).join(' | ')} |`);
    }
    lines.push('');
    if (r.rounds > 1) {
      lines.push('Spread over the rounds (lowest-highest):', '');
      lines.push(`| test | ${targets.map((t) => columnName(t, r)).join(' | ')} |`);
      lines.push(`|---|${targets.map(() => '--:|').join('')}`);
      for (const row of r.compare) lines.push(`| ${rowName(row)} | ${targets.map((t) => spread(row.rounds[t], digitsOf(row))).join(' | ')} |`);
      lines.push('');
    }
    lines.push(...probeTable(r, rowName));
  }
  if (r.checks.length > 0) {
    const base = r.baseline !== undefined ? ` ${columnName('baseline', r)} | vol/baseline |` : '';
    lines.push(`| check | result |${base} target | pass | notes |`);
    lines.push(`|---|--:|${base ? '--:|--:|' : ''}--:|:-:|---|`);
    for (const c of r.checks) {
      const pass = c.pass === undefined ? '-' : c.pass ? 'pass' : '**FAIL**';
      const cells = base ? ` ${c.baseline ?? '-'} | ${c.vsBaseline ?? '-'} |` : '';
      lines.push(`| ${c.label} | ${c.value} |${cells} ${c.target} | ${pass} | ${c.note} |`);
    }
    lines.push('');
  }
  for (const n of r.notes) lines.push(`- ${n}`);
  if (r.notes.length > 0) lines.push('');
  return lines.join('\n');
}

/** Appends the section, creating the file with its explanatory header first if it does not exist. */
export async function appendReport(path: string, r: Report): Promise<void> {
  let existing = '';
  try {
    existing = await fs.readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const prefix = existing === '' ? HEADER : existing.endsWith('\n') ? '' : '\n';
  await fs.appendFile(path, `${prefix}\n${renderSection(r)}`);
}
