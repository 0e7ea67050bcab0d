import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { open, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { processStartTime } from '../../src/pool/holder';

const execFileP = promisify(execFile);
export const THINVOL = join(__dirname, '..', '..', '..', 'bin', 'thinvol');

/** The FUSE bindings thinvol mount offers; the default one first. */
export type FuseBinding = 'libfuse3' | 'libfuse2';
export const BINDINGS: readonly FuseBinding[] = ['libfuse3', 'libfuse2'];

/** The binding a Sandbox mounts with unless told: $THINVOL_TEST_FUSE, else thinvol's default. */
export function defaultBinding(): FuseBinding {
  const b = process.env.THINVOL_TEST_FUSE;
  return b === 'libfuse2' || b === 'libfuse3' ? b : 'libfuse3';
}

export interface RunResult { code: number; stdout: string; stderr: string }

/** Runs a command; never throws on a non-zero exit (the test looks at the code). `env` is added to this process's. */
export async function run(cmd: string, args: string[], opts: { input?: Buffer; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], ...(opts.env ? { env: { ...process.env, ...opts.env } } : {}) });
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
  readonly pool: string;
  readonly mnt = join(this.dir, 'mnt');
  readonly #fsMounts: string[] = [];
  readonly #loops: string[] = [];
  readonly #daemons: { pid: number; mnt: string }[] = [];
  readonly #children: number[] = [];
  /** What `mount` asks for, and checks it got (a silent fallback to libfuse2 would test the wrong binding). */
  readonly fuse: FuseBinding;

  /** `poolName`: the pool directory's name inside the sandbox (default `pool`). */
  constructor(opts: { fuse?: FuseBinding; poolName?: string } = {}) {
    this.fuse = opts.fuse ?? defaultBinding();
    this.pool = join(this.dir, opts.poolName ?? 'pool');
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

  /** thinvol mount with this sandbox's binding; fails unless that binding serves. Returns the daemon's pid. */
  async mount(mnt = this.mnt, opts: { autoReclaim?: boolean; umask?: number; writebackCache?: boolean } = {}): Promise<number> {
    const { pid, binding } = await this.mountAs(mnt, opts);
    if (binding !== this.fuse) throw new Error(`thinvol mount --fuse ${this.fuse} served with ${binding}`);
    return pid;
  }

  /** thinvol mount, whatever binding ends up serving: the daemon's pid, its binding, and the command's stderr. */
  async mountAs(mnt = this.mnt, opts: { autoReclaim?: boolean; env?: NodeJS.ProcessEnv; umask?: number; writebackCache?: boolean } = {}): Promise<{ pid: number; binding: string; stderr: string }> {
    try {
      mkdirSync(mnt, { recursive: true });
    } catch (err) {
      // A mount left by a killed daemon answers ENOTCONN (ECONNABORTED if it died with requests in flight); thinvol mount clears it.
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOTCONN' && code !== 'ECONNABORTED') throw err;
    }
    const args = ['--pool', this.pool, 'mount', mnt, '--fuse', this.fuse, '--json', ...(opts.autoReclaim === false ? ['--no-auto-reclaim'] : []),
      ...(opts.writebackCache === true ? ['--writeback-cache'] : [])];
    const r = opts.umask === undefined
      ? await run(THINVOL, args, opts.env ? { env: opts.env } : {})
      : await run('sh', ['-c', `umask ${opts.umask.toString(8).padStart(3, '0')}; exec "$0" "$@"`, THINVOL, ...args], opts.env ? { env: opts.env } : {});
    if (r.code !== 0) {
      const log = await readFile(join(this.pool, 'run', 'daemon.log'), 'utf8').catch(() => '');
      throw new Error(`thinvol ${args.join(' ')} exited ${r.code}: ${r.stderr.trim()}\ndaemon.log ends:\n${log.split('\n').slice(-15).join('\n')}`);
    }
    const { pid, binding } = JSON.parse(r.stdout) as { pid: number; binding: string };
    this.#daemons.push({ pid, mnt });
    return { pid, binding, stderr: r.stderr };
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

  /** Waits for a daemon to exit; if it does not, says what it logged and which files it holds. */
  async waitGone(pid: number, ms = 30_000): Promise<void> {
    for (const end = Date.now() + ms; alive(pid); await sleep(50)) {
      if (Date.now() > end) {
        const log = (await readFile(join(this.pool, 'run', 'daemon.log'), 'utf8').catch(() => '')).split('\n').slice(-12).join('\n');
        const fds = await run('ls', ['-l', `/proc/${pid}/fd`]);
        throw new Error(`pid ${pid} still alive after ${ms} ms\ndaemon.log ends:\n${log}\nits files:\n${fds.stdout}`);
      }
    }
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

/** Polls `cond` every `everyMs` until it holds; fails after `ms`, naming `what`. */
export async function waitFor(what: string, cond: () => boolean | Promise<boolean>, ms = 30_000, everyMs = 50): Promise<void> {
  for (const end = Date.now() + ms; Date.now() < end; await sleep(everyMs)) if (await cond()) return;
  throw new Error(`timed out waiting for ${what}`);
}

/** A zombie counts as gone: the daemon is reparented to whoever reaps, maybe late. */
export const alive = (pid: number): boolean => processStartTime(pid) !== undefined;

/** Reads up to `len` bytes at `offset` of a file or device (fewer at its end). */
export async function readAt(file: string, offset: number, len: number): Promise<Buffer> {
  const fh = await open(file, 'r');
  try {
    const buf = Buffer.alloc(len);
    const { bytesRead } = await fh.read(buf, 0, len, offset);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/** Writes `data` at `offset` of a file or device and fsyncs it. */
export async function writeAt(file: string, data: Buffer, offset: number): Promise<void> {
  const fh = await open(file, 'r+');
  try {
    await fh.write(data, 0, data.length, offset);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

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
