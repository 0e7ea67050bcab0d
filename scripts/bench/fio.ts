import { run } from './proc';

export interface FioDir { ioBytes: number; bwBytes: number; iops: number; runtimeMs: number; totalIos: number }
export interface FioResult { read: FioDir; write: FioDir; error: number }

function num(o: Record<string, unknown>, k: string): number {
  const v = o[k];
  return typeof v === 'number' ? v : 0;
}

function obj(v: unknown, what: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`fio JSON: ${what} is not an object`);
  return v as Record<string, unknown>;
}

function dir(v: unknown, what: string): FioDir {
  const o = obj(v, what);
  return { ioBytes: num(o, 'io_bytes'), bwBytes: num(o, 'bw_bytes'), iops: num(o, 'iops'), runtimeMs: num(o, 'runtime'), totalIos: num(o, 'total_ios') };
}

/** Parses fio's --output-format=json (skipping any warning lines before the JSON) into the first (group-reported) job. */
export function parseFio(stdout: string): FioResult {
  const start = stdout.indexOf('{');
  if (start < 0) throw new Error(`fio printed no JSON: ${stdout.slice(0, 500)}`);
  const root = obj(JSON.parse(stdout.slice(start)) as unknown, 'root');
  const jobs = root.jobs;
  if (!Array.isArray(jobs) || jobs.length === 0) throw new Error('fio JSON has no jobs');
  const job = obj(jobs[0] as unknown, 'jobs[0]');
  return { read: dir(job.read, 'read'), write: dir(job.write, 'write'), error: num(job, 'error') };
}

/** Runs fio with the given options (each "--key=value") and returns the group-reported result. */
export async function fio(args: readonly string[], timeoutMs: number): Promise<FioResult> {
  const r = await run('fio', ['--output-format=json', '--group_reporting', ...args], { allowFail: true, timeoutMs });
  if (r.code !== 0) throw new Error(`fio ${args.join(' ')} exited with ${r.code}: ${r.stderr.trim() || r.stdout.slice(0, 2000)}`);
  const res = parseFio(r.stdout);
  if (res.error !== 0) throw new Error(`fio job reported error ${res.error}: ${r.stderr.trim()}`);
  return res;
}
