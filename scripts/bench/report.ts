import { promises as fs } from 'node:fs';

export const TARGETS = ['thinvol', 'plain', 'qsd', 'passthrough'] as const;
export type TargetName = (typeof TARGETS)[number];

export const TARGET_LABEL: Record<TargetName, string> = {
  thinvol: 'thinvol volume',
  plain: 'plain file',
  qsd: 'qemu-storage-daemon FUSE export',
  passthrough: 'fuse-native passthrough',
};

/** One measured figure, or why it is missing. */
export type Figure = { value: number } | { error: string };

export interface CompareRow { label: string; unit: string; figures: Partial<Record<TargetName, Figure>>; extra?: string }

export interface CheckRow { label: string; value: string; target: string; pass: boolean | undefined; note: string }

export interface Report {
  date: string;
  machine: [string, string][];
  settings: string[];
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

Targets in the comparison table (all backed by files on the same disk):

- **thinvol**: a 100 GiB thinvol volume, i.e. the file MNT/NAME of \`thinvol mount\`;
- **plain**: a plain file on the same filesystem, no FUSE (the disk's own ceiling);
- **qsd**: a raw file exported as a file by \`qemu-storage-daemon --export type=fuse\` (a mature C FUSE block server);
- **passthrough**: scripts/bench/passthrough.ts, a one-file fuse-native filesystem forwarding read/write to a
  backing file with fs.read/fs.write, mounted with the thinvol daemon's options (big_writes,
  max_write=131072, max_background=64, congestion_threshold=48, no timeout): the ceiling fuse-native itself imposes.

Rows:

- **seq write MiB/s**: \`fio --rw=write --bs=1M --size=1G --ioengine=psync --end_fsync=1\` into the file (includes the final fsync);
- **seq read MiB/s**: \`fio --rw=read --bs=1M --size=1G --ioengine=psync\` after \`sync; echo 3 > /proc/sys/vm/drop_caches\`;
- **randwrite IOPS**: \`fio --rw=randwrite --bs=4k --iodepth=16 --ioengine=libaio --direct=1 --runtime=20 --time_based --size=1G\`
  on a loop device over the file (\`losetup --direct-io=on\` unless noted); the files were fully written by the
  sequential test, so these are overwrites. The extra thinvol row "fresh volume" runs the same job on a loop over
  a never-written volume, so most writes allocate;
- ratios are thinvol's figure divided by the other target's (1.00 = as fast);
- **mkfs.ext4 / mkfs.xfs footprint**: \`allocatedBytes\` (thinvol df --json) of a fresh 100 GiB volume after
  \`mkfs.ext4 -q\` / \`mkfs.xfs -q -f\` on a loop device over it;
- **daemon RSS**: VmRSS / VmHWM of the thinvol daemon after 1,000,000 random 4 KiB writes (random data,
  O_DIRECT, libaio iodepth 16 per job) spread over ten 16 TiB volumes by ten parallel fio jobs, and how long they took.
`;

function fmtFigure(f: Figure | undefined, digits: number): string {
  if (!f) return '-';
  if ('error' in f) return 'error';
  return f.value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export function ratio(a: Figure | undefined, b: Figure | undefined): string {
  if (!a || !b || 'error' in a || 'error' in b || b.value === 0) return '-';
  return (a.value / b.value).toFixed(2);
}

export function renderSection(r: Report): string {
  const lines: string[] = [];
  lines.push(`## ${r.date}`, '');
  lines.push('Machine: ' + r.machine.map(([k, v]) => `${k} ${v}`).join('; ') + '.', '');
  if (r.settings.length > 0) lines.push(`Settings: ${r.settings.join('; ')}.`, '');
  lines.push('| test | thinvol | plain | qsd | passthrough | vol/qsd | vol/plain | vol/passthrough |');
  lines.push('|---|--:|--:|--:|--:|--:|--:|--:|');
  for (const row of r.compare) {
    const d = row.unit === 'IOPS' ? 0 : 1;
    const f = row.figures;
    lines.push(`| ${row.label} (${row.unit})${row.extra ? ` ${row.extra}` : ''} | ${fmtFigure(f.thinvol, d)} | ${fmtFigure(f.plain, d)} | ${fmtFigure(f.qsd, d)} | ${fmtFigure(f.passthrough, d)} | ${ratio(f.thinvol, f.qsd)} | ${ratio(f.thinvol, f.plain)} | ${ratio(f.thinvol, f.passthrough)} |`);
  }
  lines.push('');
  lines.push('| check | result | target | pass | notes |');
  lines.push('|---|--:|--:|:-:|---|');
  for (const c of r.checks) {
    const pass = c.pass === undefined ? '-' : c.pass ? 'pass' : '**FAIL**';
    lines.push(`| ${c.label} | ${c.value} | ${c.target} | ${pass} | ${c.note} |`);
  }
  lines.push('');
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
