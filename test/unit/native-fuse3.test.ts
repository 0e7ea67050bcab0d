/*
 * The libfuse3 binding (native/fuse3.c) on real mounts, served by this process: a MemFs behind
 * the low-level adapter. All I/O on the mounts runs in child processes, so that this process's
 * JavaScript thread stays free to answer. scripts/test-asan.sh runs this file against the
 * AddressSanitizer build too (child node processes inherit that; the tools run without it).
 */
import { expect } from 'chai';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { findMount } from '../../src/daemon/mountpoint';
import { fuse3Args, fuse3Config } from '../../src/fuse/fuse-server';
import { LowLevelAdapter } from '../../src/fuse/lowlevel-adapter';
import { loadFuse3, type Fuse3InitInfo, type Fuse3Module, type Fuse3Session } from '../../src/native/fuse3';
import { MemFs } from '../support/memfs';
import { sleep, waitFor } from '../support/sandbox';

/** This file runs as dist/test/unit/native-fuse3.test.js. */
const DIST = path.resolve(__dirname, '..', '..');

interface Ran { code: number | null; signal: string | null; stdout: string; stderr: string }

/** Runs a tool to its end; without the ASan preload unless `asan` (only node children want it). */
function run(cmd: string, args: string[], opts: { input?: Buffer; asan?: boolean } = {}): Promise<Ran> {
  const env = { ...process.env };
  if (opts.asan !== true) delete env.LD_PRELOAD;
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() }));
    child.stdin.end(opts.input);
  });
}

async function must(cmd: string, args: string[], input?: Buffer): Promise<string> {
  const r = await run(cmd, args, input ? { input } : {});
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')}: exit ${r.code}: ${r.stderr}`);
  return r.stdout;
}

interface Mounted { mnt: string; m: Fuse3Module; session: Fuse3Session; adapter: LowLevelAdapter; fs: MemFs; init: Promise<Fuse3InitInfo> }

describe('libfuse3 binding on real mounts (native/fuse3.c)', function () {
  this.timeout(120_000);
  let m: Fuse3Module;
  let dir: string;
  let mounted: Mounted[];
  let children: ChildProcessWithoutNullStreams[];
  let mountedFusectl = false;

  before(function () {
    const loaded = loadFuse3();
    if (!('module' in loaded)) {
      console.log(`      skipped: ${loaded.reason}`);
      this.skip();
    }
    m = loaded.module;
  });

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'thinvol-fuse3-'));
    mounted = [];
    children = [];
  });

  afterEach(async () => {
    for (const c of children) {
      if (c.exitCode === null && c.signalCode === null) {
        c.kill('SIGKILL'); // by pid: this child only
        await new Promise((r) => c.once('close', r));
      }
    }
    for (const x of mounted) {
      if (await findMount(x.mnt)) {
        await run('fusermount', ['-u', x.mnt]);
        if (await findMount(x.mnt)) await run('fusermount', ['-uz', x.mnt]);
      }
      await Promise.race([x.adapter.ended, sleep(5000)]);
      x.session.destroy();
    }
    // A mount a killed child left behind.
    for (const name of fs.readdirSync(dir)) {
      const p = path.join(dir, name);
      if (await findMount(p)) await run('fusermount', ['-uz', p]);
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });

  after(async () => {
    if (mountedFusectl) await run('umount', ['/sys/fs/fuse/connections']);
  });

  function mount(fsname = 'memfs', name = 'mnt', opsOf = (f: MemFs): Record<string, unknown> => f.ops()): Mounted {
    const mnt = path.join(dir, name);
    fs.mkdirSync(mnt, { recursive: true });
    const memfs = new MemFs();
    let gotInit: (i: Fuse3InitInfo) => void = () => undefined;
    const init = new Promise<Fuse3InitInfo>((r) => { gotInit = r; });
    const adapter = new LowLevelAdapter(opsOf(memfs), m, { onInit: (i) => gotInit(i), log: () => undefined });
    const session = m.mount(mnt, fuse3Args(fsname), fuse3Config(m), adapter.onRequest);
    if (typeof session === 'number') throw new Error(`mount failed: errno ${session}`);
    adapter.attach(session);
    const x = { mnt, m, session, adapter, fs: memfs, init };
    mounted.push(x);
    return x;
  }

  /** Aborts a mount's FUSE connection through fusectl (mounted for the test if it is not). */
  async function abortConnection(mnt: string): Promise<void> {
    const e = await findMount(mnt);
    if (!e) throw new Error(`${mnt} is not mounted`);
    const ctl = '/sys/fs/fuse/connections';
    if (!(await findMount(ctl))) {
      await must('mount', ['-t', 'fusectl', 'fusectl', ctl]);
      mountedFusectl = true;
    }
    fs.writeFileSync(`${ctl}/${e.dev.split(':')[1] ?? ''}/abort`, '1');
  }

  it('exports its numbering and the libfuse version; refuses unknown options with EINVAL and mounts nothing', () => {
    expect(m.libfuseVersion).to.match(/^3\./);
    expect(Object.values(m.OP)).to.have.length(21);
    expect(new Set(Object.values(m.OP)).size).to.equal(21);
    expect(m.STAT.length).to.equal(11);
    const mnt = path.join(dir, 'bad');
    fs.mkdirSync(mnt);
    const rc = m.mount(mnt, ['thinvol', '-o', 'no_such_option'], fuse3Config(m), () => undefined);
    expect(rc).to.equal(os.constants.errno.EINVAL);
    expect(() => (m.mount as (...a: unknown[]) => unknown)(mnt, 'not-an-array', {}, () => undefined)).to.throw(TypeError);
  });

  it('serves I/O, negotiates 1 MiB requests and async_dio, and a clean unmount ends the loop and leaves no mount', async () => {
    const x = mount('memfs,with\\comma');
    const data = randomBytes(3 * 2 ** 20 + 777);
    x.fs.files.set('f', Buffer.alloc(0));
    await must('dd', [`of=${path.join(x.mnt, 'f')}`, 'bs=1M', 'iflag=fullblock', 'status=none'], data);
    expect(x.fs.files.get('f')!.equals(data)).to.equal(true);
    const init = await x.init;
    expect(init.maxWrite).to.equal(2 ** 20);
    expect(init.want & m.CAP.ASYNC_DIO).to.not.equal(0);
    expect(init.want & m.CAP.ATOMIC_O_TRUNC).to.not.equal(0);
    // O_DIRECT keeps the page cache out: 1 MiB writes and reads arrive whole.
    x.fs.files.set('d', Buffer.alloc(4 * 2 ** 20));
    await must('dd', ['if=/dev/urandom', `of=${path.join(x.mnt, 'd')}`, 'bs=1M', 'count=4', 'oflag=direct', 'conv=notrunc', 'status=none']);
    await must('dd', [`if=${path.join(x.mnt, 'd')}`, 'of=/dev/null', 'bs=1M', 'iflag=direct', 'status=none']);
    expect(x.fs.stats.maxWrite).to.equal(2 ** 20);
    expect(x.fs.stats.maxRead).to.equal(2 ** 20);
    const got = await must('sha256sum', [path.join(x.mnt, 'f')]);
    expect(got.split(' ')[0]).to.equal((await must('sha256sum', ['-'], data)).split(' ')[0]);
    expect((await must('ls', [x.mnt])).split('\n').filter(Boolean).sort()).to.deep.equal(['d', 'f']);
    expect(await must('stat', ['-c', '%s', path.join(x.mnt, 'f')])).to.equal(`${data.length}\n`);
    expect((await findMount(x.mnt))?.source, 'fsname, commas and backslashes escaped for libfuse').to.equal('memfs,with\\comma');
    expect((await findMount(x.mnt))?.fstype).to.equal('fuse.thinvol');
    expect(x.session.destroy(), 'destroy refuses while the loop runs').to.equal(os.constants.errno.EBUSY);
    await must('fusermount', ['-u', x.mnt]);
    expect(await x.adapter.ended).to.equal(0);
    expect(x.session.pending()).to.equal(0);
    expect(x.session.destroy()).to.equal(0);
    expect(x.session.destroy(), 'idempotent').to.equal(0);
    expect(await findMount(x.mnt)).to.equal(undefined);
    expect(x.session.replyErr(1, 0), 'a reply after destroy finds nothing').to.equal(-1);
  });

  it('files made, renamed, truncated and removed through the mount', async () => {
    const x = mount();
    const f = path.join(x.mnt, 'a');
    await must('sh', ['-c', `echo hello > ${f} && mv ${f} ${x.mnt}/b && truncate -s 100 ${x.mnt}/b && chmod 600 ${x.mnt}/b && touch ${x.mnt}/b`]);
    expect([...x.fs.files.keys()]).to.deep.equal(['b']);
    expect(x.fs.files.get('b')!.subarray(0, 6).toString()).to.equal('hello\n');
    expect(x.fs.files.get('b')!.length).to.equal(100);
    const ino = (await must('stat', ['-c', '%i', `${x.mnt}/b`])).trim();
    await must('mv', [`${x.mnt}/b`, `${x.mnt}/c`]);
    expect((await must('stat', ['-c', '%i', `${x.mnt}/c`])).trim(), 'the node id survives a rename').to.equal(ino);
    await must('rm', [`${x.mnt}/c`]);
    expect(x.fs.files.size).to.equal(0);
    const bad = await run('cat', [`${x.mnt}/missing`]);
    expect(bad.stderr).to.match(/No such file or directory/);
  });

  it('a handler that throws gives EIO to the reader; the mount keeps serving', async () => {
    const x = mount();
    x.fs.files.set('boom', Buffer.from('never read'));
    x.fs.files.set('ok', Buffer.from('fine'));
    x.fs.throwOn = 'boom';
    const r = await run('cat', [path.join(x.mnt, 'boom')]);
    expect(r.code).to.not.equal(0);
    expect(r.stderr).to.match(/Input\/output error/);
    expect(await must('cat', [path.join(x.mnt, 'ok')])).to.equal('fine');
  });

  it('many requests in flight: fio libaio QD16 O_DIRECT verifies, and the adapter saw them concurrently', async () => {
    const x = mount();
    x.fs.files.set('big', Buffer.alloc(32 * 2 ** 20));
    x.fs.delayMs = 1;
    const r = await run('fio', ['--name=qd16', `--filename=${path.join(x.mnt, 'big')}`, '--rw=randwrite', '--bs=4k', '--iodepth=16', '--ioengine=libaio',
      '--direct=1', '--size=32M', '--io_size=8M', '--verify=crc32c', '--do_verify=1', '--verify_fatal=1', '--randrepeat=0', '--verify_state_save=0', '--output-format=terse']);
    expect(r.code, r.stderr).to.equal(0);
    expect(x.fs.stats.maxInFlight).to.be.at.least(4);
  });

  it('write data is JavaScript\'s until the reply: then every view of it reads as empty (its memory goes back to the binding)', async () => {
    type Write = (p: string, fd: number, buf: Buffer, len: number, pos: number, cb: (n: number) => void) => void;
    const seen: { buf: Buffer; view: Buffer; len: number; atReply: number }[] = [];
    const x = mount('memfs', 'mnt', (f) => {
      const ops = f.ops();
      const inner = ops.write as Write;
      const write: Write = (p, fd, buf, len, pos, cb) => {
        const rec = { buf, view: buf.subarray(0, len), len, atReply: -1 };
        seen.push(rec);
        inner(p, fd, buf, len, pos, (n) => {
          rec.atReply = rec.view.length;
          cb(n);
        });
      };
      return { ...ops, write };
    });
    // 1 MiB writes keep the receive buffer; 4 KiB and 64 KiB ones are copied into small pool buffers.
    for (const [name, bs, bytes] of [['w', '1M', 2 * 2 ** 20], ['s4', '4k', 64 * 1024], ['s64', '64k', 512 * 1024]] as const) {
      x.fs.files.set(name, Buffer.alloc(0));
      const data = randomBytes(bytes);
      await must('dd', [`of=${path.join(x.mnt, name)}`, `bs=${bs}`, 'oflag=direct', 'status=none'], data);
      expect(x.fs.files.get(name)?.equals(data), name).to.equal(true);
    }
    expect(seen.length).to.be.at.least(2 + 16 + 8);
    for (const r of seen) {
      expect(r.atReply).to.equal(r.len);
      expect(r.buf.length).to.equal(0);
      expect(r.view.length).to.equal(0);
    }
  });

  it('teardown with a request never answered: abort, the loop ends, destroy answers EIO, and a late answer touches nothing', async () => {
    const x = mount();
    x.fs.files.set('held', Buffer.alloc(8192, 1));
    x.fs.holdReadsOf = 'held';
    const reader = run('dd', [`if=${path.join(x.mnt, 'held')}`, 'of=/dev/null', 'bs=4096', 'count=1', 'iflag=direct', 'status=none']);
    await waitFor('the read to arrive', () => x.fs.held.length === 1, 20_000, 10);
    expect(x.session.pending()).to.equal(1);
    await abortConnection(x.mnt);
    expect((await reader).code).to.not.equal(0);
    expect(await x.adapter.ended).to.equal(0);
    expect(x.session.pending()).to.equal(1);
    expect(x.session.destroy()).to.equal(0);
    expect(x.session.pending()).to.equal(0);
    // The handler answers now: it fills its Buffer (JavaScript's memory) and calls back.
    const { buf, cb } = x.fs.held[0]!;
    buf.fill(7);
    cb(buf.length);
    // An aborted connection stays in the mount table (ENOTCONN) until unmounted.
    const st = await fs.promises.stat(x.mnt).then(() => 'ok', (e: NodeJS.ErrnoException) => e.code);
    expect(st).to.equal('ENOTCONN');
  });

  it('kill -9 of a serving process leaves ENOTCONN; after fusermount -uz the mountpoint mounts again', async () => {
    const mnt = path.join(dir, 'killed');
    fs.mkdirSync(mnt);
    const script = `
      const { loadFuse3 } = require(${JSON.stringify(path.join(DIST, 'src/native/fuse3.js'))});
      const { LowLevelAdapter } = require(${JSON.stringify(path.join(DIST, 'src/fuse/lowlevel-adapter.js'))});
      const { fuse3Args, fuse3Config } = require(${JSON.stringify(path.join(DIST, 'src/fuse/fuse-server.js'))});
      const { MemFs } = require(${JSON.stringify(path.join(DIST, 'test/support/memfs.js'))});
      const m = loadFuse3().module;
      const memfs = new MemFs();
      memfs.files.set('f', Buffer.from('child'));
      const a = new LowLevelAdapter(memfs.ops(), m);
      const s = m.mount(process.argv[1], fuse3Args('child'), fuse3Config(m), a.onRequest);
      a.attach(s);
      process.stdout.write('ready\\n');
      setInterval(() => undefined, 1000);
    `;
    const child = spawn(process.execPath, ['-e', script, mnt], { stdio: ['pipe', 'pipe', 'pipe'] });
    children.push(child);
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    await waitFor(`the child to mount (stderr: ${err})`, () => out.includes('ready'), 20_000, 10);
    expect(await must('cat', [path.join(mnt, 'f')])).to.equal('child');
    const busy = run('dd', [`if=/dev/urandom`, `of=${path.join(mnt, 'f')}`, 'bs=64k', 'count=200', 'status=none']);
    await sleep(20);
    child.kill('SIGKILL');
    await new Promise((r) => child.once('close', r));
    await busy;
    expect(err, 'no AddressSanitizer report from the child').to.not.match(/AddressSanitizer/);
    const st = await fs.promises.stat(mnt).then(() => 'ok', (e: NodeJS.ErrnoException) => e.code);
    expect(st).to.equal('ENOTCONN');
    await must('fusermount', ['-uz', mnt]);
    const x = mount('again', 'killed');
    x.fs.files.set('g', Buffer.from('parent'));
    expect(await must('cat', [path.join(x.mnt, 'g')])).to.equal('parent');
  });
});
