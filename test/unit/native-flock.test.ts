import { expect } from 'chai';
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import * as fs from 'node:fs';
import { constants } from 'node:os';
import * as os from 'node:os';
import * as path from 'node:path';
import { nativeAddon } from '../../src/native/addon';
import { lockFile, unlockFile, SyscallError, type LockMode } from '../../src/native/flock';

/** The compiled flock module, for child processes (this file runs as dist/test/unit/*.js). */
const FLOCK_JS = path.resolve(__dirname, '..', '..', 'src', 'native', 'flock.js');

/**
 * A child node process that opens `file` itself (its own open file description) and locks it.
 * wait=false: prints "locked" or "busy" (and exits 3). wait=true: prints "trying", blocks until
 * granted, prints "locked". Then, on the line "unlock" on stdin, unlocks and prints "unlocked";
 * exits when stdin closes. It inherits the environment, so an ASan run uses the ASan build here too.
 */
class Holder {
  readonly child: ChildProcessWithoutNullStreams;
  /** Settles once the child exited and its output was all read: exit code, or signal name. */
  readonly closed: Promise<number | string>;
  done = false;
  private out = '';

  constructor(file: string, mode: LockMode, wait: boolean) {
    const script = `
      const fs = require('fs');
      const { lockFile, unlockFile } = require(${JSON.stringify(FLOCK_JS)});
      const fd = fs.openSync(${JSON.stringify(file)}, 'r');
      if (${wait}) process.stdout.write('trying\\n');
      if (!lockFile(fd, ${JSON.stringify(mode)}, ${wait})) { process.stdout.write('busy\\n'); process.exit(3); }
      process.stdout.write('locked\\n');
      let input = '';
      process.stdin.setEncoding('utf8');
      process.stdin.on('data', (d) => {
        input += d;
        if (input.includes('unlock\\n')) { input = ''; unlockFile(fd); process.stdout.write('unlocked\\n'); }
      });
      process.stdin.on('end', () => process.exit(0));
    `;
    this.child = spawn(process.execPath, ['-e', script], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stdout.setEncoding('utf8');
    this.child.stdout.on('data', (d: string) => { this.out += d; });
    this.child.stderr.setEncoding('utf8');
    this.child.stderr.on('data', (d: string) => { this.out += d; });
    this.closed = new Promise((resolve) => {
      this.child.on('close', (code, signal) => {
        this.done = true;
        resolve(code ?? signal ?? 'unknown');
      });
    });
  }

  /** Lines printed so far (stdout and stderr). */
  lines(): string[] {
    return this.out.split('\n').filter((l) => l !== '');
  }

  /** Resolves once the child printed `line`; rejects if it exits first or after 20 s. */
  async waitFor(line: string): Promise<void> {
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (this.lines().includes(line)) return;
      if (this.done || Date.now() > deadline) {
        throw new Error(`holder did not print ${line} (exited: ${this.done}); output: ${this.out}`);
      }
      await sleep(10);
    }
  }

}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

describe('native flock', () => {
  let dir: string;
  let file: string;
  let fds: number[];
  let holders: Holder[];

  /** An fd of our own on the lock file: a new open file description. */
  function open(): number {
    const fd = fs.openSync(file, 'r');
    fds.push(fd);
    return fd;
  }

  async function hold(mode: LockMode, wait = false): Promise<Holder> {
    const h = new Holder(file, mode, wait);
    holders.push(h);
    if (!wait) await h.waitFor('locked');
    return h;
  }

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'thinvol-flock-'));
    file = path.join(dir, 'lock');
    fs.writeFileSync(file, '');
    fds = [];
    holders = [];
  });

  afterEach(async () => {
    for (const h of holders) {
      if (!h.done) {
        h.child.kill('SIGKILL'); // by pid: ChildProcess.kill signals this child only
        await h.closed;
      }
    }
    for (const fd of fds) fs.closeSync(fd);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('exports the lock constants from C', () => {
    const n = nativeAddon();
    const values = [n.LOCK_SH, n.LOCK_EX, n.LOCK_UN, n.LOCK_NB];
    for (const v of values) expect(v).to.be.a('number').above(0);
    expect(new Set(values).size).to.equal(4);
  });

  it('lets shared locks coexist, across open file descriptions and processes', async () => {
    await hold('shared');
    expect(lockFile(open(), 'shared', false)).to.equal(true);
    expect(lockFile(open(), 'shared', true)).to.equal(true);
  });

  it('refuses an exclusive lock while another process holds a shared one', async () => {
    const h = await hold('shared');
    const fd = open();
    expect(lockFile(fd, 'exclusive', false)).to.equal(false);
    h.child.stdin.write('unlock\n');
    await h.waitFor('unlocked');
    expect(lockFile(fd, 'exclusive', false)).to.equal(true);
  });

  it('refuses shared and exclusive locks while another process holds an exclusive one', async () => {
    await hold('exclusive');
    const fd = open();
    expect(lockFile(fd, 'exclusive', false)).to.equal(false);
    expect(lockFile(fd, 'shared', false)).to.equal(false);
  });

  it('makes another process wait for an exclusive lock we hold, until we unlock', async () => {
    const fd = open();
    expect(lockFile(fd, 'exclusive', false)).to.equal(true);
    const h = await hold('shared', true);
    await h.waitFor('trying');
    await sleep(200);
    expect(h.lines()).to.deep.equal(['trying']);
    unlockFile(fd);
    await h.waitFor('locked');
  });

  it('a process that would have to wait gets false and exits', async () => {
    expect(lockFile(open(), 'exclusive', false)).to.equal(true);
    const h = new Holder(file, 'shared', false);
    holders.push(h);
    expect(await h.closed).to.equal(3);
    expect(h.lines()).to.deep.equal(['busy']);
  });

  it('frees the lock when the holding process is killed with SIGKILL', async () => {
    const h = await hold('exclusive');
    const fd = open();
    expect(lockFile(fd, 'exclusive', false)).to.equal(false);
    h.child.kill('SIGKILL');
    expect(await h.closed).to.equal('SIGKILL');
    expect(lockFile(fd, 'exclusive', false)).to.equal(true);
  });

  it('throws SyscallError EBADF for a closed fd, from lockFile and unlockFile', () => {
    const fd = fs.openSync(file, 'r');
    fs.closeSync(fd);
    for (const call of [() => lockFile(fd, 'shared', false), () => lockFile(fd, 'exclusive', true), () => unlockFile(fd)]) {
      let caught: unknown;
      try {
        call();
      } catch (err: unknown) {
        caught = err;
      }
      expect(caught).to.be.instanceOf(SyscallError);
      const err = caught as SyscallError;
      expect(err.code).to.equal('EBADF');
      expect(err.errno).to.equal(constants.errno.EBADF);
      expect(err.syscall).to.equal('flock');
      expect(err.message).to.include('EBADF');
    }
  });

  it('returns the errno rather than throwing for a failing flock(2)', () => {
    const n = nativeAddon();
    expect(n.flock(open(), 0)).to.equal(constants.errno.EINVAL);
    expect(n.flock(-1, n.LOCK_SH)).to.equal(constants.errno.EBADF);
    expect(n.flock(open(), n.LOCK_SH | n.LOCK_NB)).to.equal(0);
  });

  it('throws TypeError for arguments that are not int32 numbers', () => {
    const fd = open();
    const n = nativeAddon();
    const flock = n.flock as (...args: unknown[]) => number;
    expect(() => flock()).to.throw(TypeError, 'two arguments');
    expect(() => flock(fd)).to.throw(TypeError, 'two arguments');
    expect(() => flock(fd, n.LOCK_SH, 0)).to.throw(TypeError, 'two arguments');
    expect(() => flock(String(fd), n.LOCK_SH)).to.throw(TypeError, 'fd must be an integer');
    expect(() => flock(BigInt(fd), n.LOCK_SH)).to.throw(TypeError, 'fd must be an integer');
    expect(() => flock(fd + 0.5, n.LOCK_SH)).to.throw(TypeError, 'fd must be an integer');
    expect(() => flock(2 ** 31, n.LOCK_SH)).to.throw(TypeError, 'fd must be an integer');
    expect(() => flock(NaN, n.LOCK_SH)).to.throw(TypeError, 'fd must be an integer');
    expect(() => flock(fd, undefined)).to.throw(TypeError, 'op must be an integer');
    expect(() => flock(fd, String(n.LOCK_SH))).to.throw(TypeError, 'op must be an integer');
    expect(() => flock(fd, Infinity)).to.throw(TypeError, 'op must be an integer');
    const lock = lockFile as (fd: unknown, mode: unknown, wait: boolean) => boolean;
    expect(() => lock(fd, 'read', false)).to.throw(TypeError, 'mode');
    expect(() => lock(null, 'shared', false)).to.throw(TypeError, 'fd must be an integer');
  });

  it('says in one line to build the addon when it is missing', () => {
    const r = spawnSync(process.execPath, ['-e', `
      try { require(${JSON.stringify(FLOCK_JS)}).unlockFile(0); } catch (e) { console.log(e.message); }
    `], { env: { ...process.env, THINVOL_NATIVE_BUILD: dir }, encoding: 'utf8' });
    expect(r.stdout).to.equal(
      `thinvol's native addon is not built: run npm run build (no ${path.join(dir, 'thinvol_native.node')})\n`);
  });
});
