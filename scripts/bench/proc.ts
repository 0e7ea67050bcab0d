import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fs, readFileSync } from 'node:fs';

export interface RunResult { code: number; stdout: string; stderr: string }

export interface RunOptions {
  /** Do not throw on a non-zero exit status. */
  allowFail?: boolean;
  /** Kill the command (by its pid) after this long. */
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
}

/** Runs a command to completion, collecting its output; throws on a non-zero status unless allowFail. */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise<RunResult>((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    let timer: NodeJS.Timeout | undefined;
    if (opts.timeoutMs !== undefined && child.pid !== undefined) {
      const pid = child.pid;
      timer = setTimeout(() => { try { process.kill(pid, 'SIGKILL'); } catch { /* already gone */ } }, opts.timeoutMs);
    }
    child.once('error', (e) => { if (timer) clearTimeout(timer); reject(new Error(`${cmd}: ${e.message}`)); });
    child.once('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      const r: RunResult = { code: code ?? (signal ? 128 : 1), stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() };
      if (r.code !== 0 && !opts.allowFail) {
        reject(new Error(`${cmd} ${args.join(' ')} exited with ${code ?? signal ?? '?'}: ${r.stderr.trim() || r.stdout.trim()}`));
      } else resolve(r);
    });
  });
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** True while the pid exists and is not a zombie waiting to be reaped by its parent. */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** Sends SIGTERM to one pid, then SIGKILL if it has not exited after graceMs. */
export async function killPid(pid: number, graceMs = 5000): Promise<void> {
  if (!pidAlive(pid)) return;
  try { process.kill(pid, 'SIGTERM'); } catch { return; }
  for (let t = 0; t < graceMs && pidAlive(pid); t += 100) await sleep(100);
  if (pidAlive(pid)) {
    try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
    for (let t = 0; t < 2000 && pidAlive(pid); t += 100) await sleep(100);
  }
}

/** Resolves when a spawned child has exited (immediately if it already has). */
export function childExited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise<void>((r) => child.once('exit', () => r()));
}

/** Mountpoints currently listed in /proc/mounts (octal escapes decoded). */
export async function mountpoints(): Promise<string[]> {
  const text = await fs.readFile('/proc/mounts', 'utf8');
  return text.split('\n').filter(Boolean).map((l) => (l.split(' ')[1] ?? '').replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8))));
}

export async function isMounted(path: string): Promise<boolean> {
  return (await mountpoints()).includes(path);
}

export async function waitFor(what: string, cond: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  for (let t = 0; t < timeoutMs; t += 100) {
    if (await cond()) return;
    await sleep(100);
  }
  if (!(await cond())) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

/** Unmounts a FUSE mount if it is still mounted: fusermount -u, then umount -l as the last resort. */
export async function fuseUnmount(path: string): Promise<void> {
  if (!(await isMounted(path))) return;
  const r = await run('fusermount', ['-u', path], { allowFail: true });
  if (r.code !== 0 && (await isMounted(path))) {
    await run('umount', [path], { allowFail: true });
    if (await isMounted(path)) await run('umount', ['-l', path], { allowFail: true });
  }
}

interface CleanupEntry { label: string; fn: () => Promise<void> }

/**
 * A stack of undo actions for everything the benchmark started (mounts, loop devices, processes).
 * Each action runs at most once: either early through the function add() returns, or in runAll().
 */
export class Cleanup {
  readonly #stack: CleanupEntry[] = [];

  add(label: string, fn: () => Promise<void>): () => Promise<void> {
    const entry: CleanupEntry = { label, fn };
    this.#stack.push(entry);
    return async () => {
      const i = this.#stack.indexOf(entry);
      if (i < 0) return;
      this.#stack.splice(i, 1);
      await fn();
    };
  }

  async runAll(): Promise<void> {
    for (let entry = this.#stack.pop(); entry; entry = this.#stack.pop()) {
      try {
        await entry.fn();
      } catch (err) {
        console.error(`bench: cleanup "${entry.label}" failed: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
  }
}
