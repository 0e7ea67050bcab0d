import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);
export const THINVOL = join(__dirname, '..', '..', '..', 'bin', 'thinvol');

export interface RunResult { code: number; stdout: string; stderr: string }

/** Runs a command; never throws on a non-zero exit (the test looks at the code). */
export async function run(cmd: string, args: string[], opts: { input?: Buffer } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() }));
    child.stdin.end(opts.input);
  });
}

/** Runs a command and fails with its stderr when it exits non-zero. */
export async function must(cmd: string, args: string[]): Promise<string> {
  const r = await run(cmd, args);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}: ${r.stderr.trim()}`);
  return r.stdout;
}

/**
 * One test's world: a temp dir with a pool, its mounts, loop devices and daemons, all torn
 * down by cleanup() in reverse order whatever state the test left them in.
 */
export class Sandbox {
  readonly dir = mkdtempSync(join(process.env.THINVOL_TEST_DIR ?? tmpdir(), 'thinvol-test-'));
  readonly pool = join(this.dir, 'pool');
  readonly mnt = join(this.dir, 'mnt');
  readonly #fsMounts: string[] = [];
  readonly #loops: string[] = [];
  readonly #daemons: { pid: number; mnt: string }[] = [];
  readonly #children: number[] = [];

  constructor() {
    mkdirSync(this.mnt);
  }

  cli(...args: string[]): Promise<RunResult> {
    return run(THINVOL, ['--pool', this.pool, ...args]);
  }

  async cliOk(...args: string[]): Promise<string> {
    const r = await this.cli(...args);
    if (r.code !== 0) throw new Error(`thinvol ${args.join(' ')} exited ${r.code}: ${r.stderr.trim()}`);
    return r.stdout;
  }

  async json<T>(...args: string[]): Promise<T> {
    return JSON.parse(await this.cliOk(...args, '--json')) as T;
  }

  /** Starts a thinvol command in the background; `exited` resolves with its result. */
  spawnCli(args: string[], env: NodeJS.ProcessEnv = {}): { pid: number; stderrText(): string; exited: Promise<RunResult> } {
    const child = spawn(THINVOL, ['--pool', this.pool, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    const exited = new Promise<RunResult>((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (code, signal) => {
        this.#children.splice(this.#children.indexOf(child.pid ?? 0), 1);
        resolve({ code: code ?? (signal ? 128 : -1), stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() });
      });
    });
    this.#children.push(child.pid ?? 0);
    return { pid: child.pid ?? 0, stderrText: () => Buffer.concat(err).toString(), exited };
  }

  async createPool(...backends: string[]): Promise<void> {
    await this.cliOk('pool', 'create', ...backends.flatMap((b) => ['--backend', join(this.dir, b)]));
  }

  async mount(mnt = this.mnt): Promise<number> {
    try {
      mkdirSync(mnt, { recursive: true });
    } catch (err) {
      // A mount left by a killed daemon answers ENOTCONN; thinvol mount clears it.
      if ((err as NodeJS.ErrnoException).code !== 'ENOTCONN') throw err;
    }
    const r = await this.cli('mount', mnt, '--json');
    if (r.code !== 0) {
      const log = await readFile(join(this.pool, 'run', 'daemon.log'), 'utf8').catch(() => '');
      throw new Error(`thinvol mount ${mnt} exited ${r.code}: ${r.stderr.trim()}\ndaemon.log ends:\n${log.split('\n').slice(-15).join('\n')}`);
    }
    const { pid } = JSON.parse(r.stdout) as { pid: number };
    this.#daemons.push({ pid, mnt });
    return pid;
  }

  async umount(mnt = this.mnt): Promise<void> {
    await this.cliOk('umount', mnt);
  }

  /** Attaches a loop device; `directIo` makes it send O_DIRECT I/O to the file (no page cache in between). */
  async losetup(file: string, opts: { directIo?: boolean } = {}): Promise<string> {
    const dev = (await must('losetup', ['--find', '--show', ...(opts.directIo === true ? ['--direct-io=on'] : []), file])).trim();
    this.#loops.push(dev);
    return dev;
  }

  async detach(dev: string): Promise<void> {
    await must('losetup', ['-d', dev]);
    this.#loops.splice(this.#loops.indexOf(dev), 1);
  }

  async mountFs(dev: string, at: string, opts: string[] = []): Promise<void> {
    mkdirSync(at, { recursive: true });
    await must('mount', [...opts, dev, at]);
    this.#fsMounts.push(at);
  }

  async umountFs(at: string): Promise<void> {
    await must('umount', [at]);
    this.#fsMounts.splice(this.#fsMounts.indexOf(at), 1);
  }

  async cleanup(): Promise<void> {
    for (const pid of this.#children) {
      try { process.kill(pid, 'SIGKILL'); } catch { /* already gone */ }
    }
    for (const at of this.#fsMounts.reverse()) await run('umount', ['-l', at]);
    for (const dev of this.#loops.reverse()) await run('losetup', ['-d', dev]);
    for (const d of this.#daemons.reverse()) {
      try { process.kill(d.pid, 'SIGCONT'); } catch { /* already gone */ }
      await run('fusermount', ['-u', d.mnt]);
      await run('fusermount', ['-uz', d.mnt]);
      try { process.kill(d.pid, 'SIGKILL'); } catch { /* already gone */ }
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Skips the running test (or hook's suite) with the reason when a tool it drives is not installed:
 * `bash scripts/install.sh` installs them all.
 */
export async function needs(ctx: Mocha.Context, ...tools: string[]): Promise<void> {
  const missing: string[] = [];
  for (const t of tools) if ((await run('sh', ['-c', `command -v ${t}`])).code !== 0) missing.push(t);
  if (missing.length === 0) return;
  console.log(`      skipped: ${missing.join(', ')} not installed (bash scripts/install.sh installs it)`);
  ctx.skip();
}

/** Writes back dirty pages and empties the page cache, so that the next reads come from the device. */
export async function dropCaches(): Promise<void> {
  await must('sh', ['-c', 'sync; echo 3 > /proc/sys/vm/drop_caches']);
}

export { execFileP };
