import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { chmodSync, promises as fs, readdirSync, readFileSync, statSync } from 'node:fs';
import { connect } from 'node:net';
import { join, resolve } from 'node:path';
import { mounts } from '../../src/daemon/mountpoint';
import { alive, BINDINGS, dropCaches, must, needs, readAt, run, Sandbox, sleep, writeAt, type RunResult } from '../support/sandbox';

const MiB = 2 ** 20;
const NOBODY = 65534;

/** Runs a command as nobody:nogroup, no supplementary groups. */
function asNobody(cmd: string, args: string[]): Promise<RunResult> {
  return run('setpriv', [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', '--', cmd, ...args]);
}


function controlSocket(sb: Sandbox): string {
  const name = readdirSync(join(sb.pool, 'run')).find((n) => n.endsWith('.sock'));
  if (!name) throw new Error('no control socket in run/');
  return join(sb.pool, 'run', name);
}

/** A client (run as `user`) sends one request line; what came back before the daemon closed or 3 s passed. */
const CLIENT = `
const s = require('net').connect(process.argv[1]);
let got = '';
s.on('connect', () => s.write(JSON.stringify({ op: 'drop-reservations' }) + '\\n'));
s.on('data', (d) => { got += d; s.end(); });
s.on('close', () => { console.log(JSON.stringify({ got })); process.exit(0); });
s.on('error', (e) => { console.log(JSON.stringify({ got, error: e.code })); process.exit(0); });
setTimeout(() => { console.log(JSON.stringify({ got, error: 'timeout' })); process.exit(0); }, 3000);
`;

async function askControl(user: 'root' | 'nobody', sock: string): Promise<{ got: string; error?: string }> {
  const r = user === 'root' ? await run(process.execPath, ['-e', CLIENT, sock]) : await asNobody(process.execPath, ['-e', CLIENT, sock]);
  if (r.code !== 0) throw new Error(`control client exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as { got: string; error?: string };
}

function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0);
}

/** Sends `bytes` of a line that never ends; resolves with how many the daemon took before it closed the connection. */
function floodLine(sock: string, bytes: number): Promise<{ sent: number; closed: boolean }> {
  return new Promise((done) => {
    const s = connect(sock);
    const chunk = Buffer.alloc(64 * 1024, 'a');
    let sent = 0;
    let closed = false;
    const finish = (): void => { s.destroy(); done({ sent, closed }); };
    s.on('error', () => { closed = true; });
    s.on('close', () => { closed = true; finish(); });
    const pump = (): void => {
      while (sent < bytes && !closed) {
        sent += chunk.length;
        if (!s.write(chunk)) { s.once('drain', pump); return; }
      }
      if (sent >= bytes) setTimeout(finish, 1000);
    };
    s.on('connect', pump);
  });
}

/** Drips a line one byte per 100 ms; resolves with the ms until the daemon dropped it (or `limitMs`). */
function dripLine(sock: string, limitMs: number): Promise<number> {
  return new Promise((done) => {
    const t0 = Date.now();
    const s = connect(sock);
    const timer = setInterval(() => { if (!s.destroyed) s.write('{'); }, 100);
    const finish = (): void => { clearInterval(timer); s.destroy(); done(Date.now() - t0); };
    s.on('error', () => undefined);
    s.on('close', finish);
    setTimeout(finish, limitMs);
  });
}

/** The per-mount options (field 6) of the mount at `mnt`. */
function mountOptions(mnt: string): string[] {
  const line = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').find((l) => l.split(' ')[4] === resolve(mnt));
  return (line?.split(' ')[5] ?? '').split(',');
}

describe('access: volumes private by default, pool files private, control socket only for root and the pool owner', function () {
  const sb = new Sandbox();
  before(async function () {
    await needs(this, 'setpriv');
    await sb.createPool('b1:256M');
    // Let nobody reach the mountpoint (the sandbox dir is 0700), as any user can reach /mnt.
    chmodSync(sb.dir, 0o755);
    await sb.mount(sb.mnt, { umask: 0o000 });
  });
  after(() => sb.cleanup());

  it('a volume created through the mount is 0600 whatever mode the caller asks; chmod shares it', async () => {
    const f = join(sb.mnt, 'guest');
    await must('sh', ['-c', `umask 000; truncate -s 16M ${f}`]);
    await must('dd', ['if=/dev/urandom', `of=${f}`, 'bs=64k', 'count=4', 'conv=notrunc,fsync', 'status=none']);
    expect(statSync(f).mode & 0o7777).to.equal(0o600);
    const denied = await asNobody('dd', [`if=${f}`, 'of=/dev/null', 'bs=4k', 'count=1', 'status=none']);
    expect(denied.code).to.not.equal(0);
    expect(denied.stderr).to.match(/Permission denied/);
    chmodSync(f, 0o644);
    const shared = await asNobody('dd', [`if=${f}`, 'of=/dev/null', 'bs=4k', 'count=1', 'status=none']);
    expect(shared.code, shared.stderr).to.equal(0);
  });

  it('volume create is 0600 unless --mode says otherwise; a bad --mode is one line and creates nothing', async () => {
    await sb.cliOk('volume', 'create', 'private', '--size', '16M');
    await sb.cliOk('volume', 'create', 'shared', '--size', '16M', '--mode', '0640');
    expect(statSync(join(sb.mnt, 'private')).mode & 0o7777).to.equal(0o600);
    expect(statSync(join(sb.mnt, 'shared')).mode & 0o7777).to.equal(0o640);
    const bad = await sb.cli('volume', 'create', 'bad', '--size', '16M', '--mode', 'rw-r--r--');
    expect(bad.code).to.not.equal(0);
    expect(bad.stderr.trim().split('\n')).to.have.length(1);
    expect(bad.stderr).to.match(/bad mode/);
    expect((await sb.cli('volume', 'info', 'bad')).code).to.not.equal(0);
  });

  it('under umask 000 the pool metadata, log and control socket stay private; nobody reads none of them', async () => {
    expect(statSync(sb.pool).mode & 0o777).to.equal(0o700);
    const sock = controlSocket(sb);
    expect(statSync(sock).mode & 0o777).to.equal(0o600);
    expect(statSync(join(sb.pool, 'run', 'daemon.log')).mode & 0o077).to.equal(0);
    for (const f of ['pool.lmdb', join('run', 'daemon.log')]) {
      const r = await asNobody('cat', [join(sb.pool, f)]);
      expect(r.code, f).to.not.equal(0);
      expect(r.stderr, f).to.match(/Permission denied/);
    }
  });

  it('a control client that is neither root nor the pool owner is dropped unanswered even when the socket is reachable', async () => {
    const sock = controlSocket(sb);
    expect((await askControl('root', sock)).got).to.match(/"result"/);
    // Open every door the file system has, so that only the daemon's own check stands.
    chmodSync(sb.pool, 0o711);
    chmodSync(join(sb.pool, 'run'), 0o711);
    chmodSync(sock, 0o666);
    try {
      const r = await askControl('nobody', sock);
      expect(r.error).to.not.equal('EACCES');
      expect(r.got).to.equal('');
      expect(r.error).to.not.equal('timeout');
    } finally {
      chmodSync(sock, 0o600);
      chmodSync(join(sb.pool, 'run'), 0o700);
      chmodSync(sb.pool, 0o700);
    }
  });
});

describe('control socket abuse while fio reads through the mount', function () {
  const sb = new Sandbox();
  let pid: number;
  before(async function () {
    await needs(this, 'fio');
    await sb.createPool('b1:256M');
    pid = await sb.mount();
    await sb.cliOk('volume', 'create', 'v', '--size', '64M');
    await must('dd', ['if=/dev/urandom', `of=${join(sb.mnt, 'v')}`, 'bs=1M', 'count=64', 'conv=notrunc,fsync', 'status=none']);
  });
  after(() => sb.cleanup());

  it('a 64 MiB line is cut off at the line limit and a dripping line is dropped; reads keep flowing and the daemon stays small', async () => {
    await dropCaches();
    const rss0 = rssKiB(pid);
    const fio = run('fio', ['--name=r', `--filename=${join(sb.mnt, 'v')}`, '--rw=randread', '--bs=4k', '--direct=1', '--ioengine=psync',
      '--time_based', '--runtime=8', '--output-format=json']);
    await sleep(1000);
    const sock = controlSocket(sb);
    const [flood, dripMs] = await Promise.all([floodLine(sock, 64 * MiB), dripLine(sock, 20_000)]);
    const r = await fio;
    expect(r.code, r.stderr).to.equal(0);
    const job = (JSON.parse(r.stdout) as { jobs: { error: number; read: { iops: number; clat_ns: { max: number } } }[] }).jobs[0]!;
    const rss1 = rssKiB(pid);
    console.log(`      flood: dropped after ${(flood.sent / MiB).toFixed(1)} MiB sent (buffered by the kernel); drip dropped after ${dripMs} ms; ` +
      `fio 4k randread ${job.read.iops.toFixed(0)} IOPS, worst read ${(job.read.clat_ns.max / 1e6).toFixed(1)} ms; daemon RSS ${(rss0 / 1024).toFixed(0)} -> ${(rss1 / 1024).toFixed(0)} MiB`);
    expect(job.error).to.equal(0);
    expect(flood.closed).to.equal(true);
    expect(flood.sent).to.be.below(64 * MiB);
    expect(dripMs).to.be.below(15_000);
    expect(rss1 - rss0).to.be.below(64 * 1024);
    // Still answering.
    expect((await askControl('root', sock)).got).to.match(/"result"/);
  });
});

for (const binding of BINDINGS) {
  describe(`lifecycle and edge cases (${binding})`, function () {
    const sb = new Sandbox({ fuse: binding });
    let pid: number;
    const pattern = randomBytes(4 * MiB);
    before(async () => {
      await sb.createPool('b1:512M');
      pid = await sb.mount();
    });
    after(() => sb.cleanup());

    it('rm of an open volume is EBUSY', async () => {
      await sb.cliOk('volume', 'create', 'open', '--size', '16M');
      const fh = await fs.open(join(sb.mnt, 'open'), 'r');
      try {
        expect(await fs.rm(join(sb.mnt, 'open')).then(() => 'removed', (e: NodeJS.ErrnoException) => e.code)).to.equal('EBUSY');
      } finally {
        await fh.close();
      }
      await fs.rm(join(sb.mnt, 'open'));
    });

    it('a shrink of a volume open elsewhere is EBUSY through the mount and from the CLI; a grow is fine; once closed, the shrink works', async () => {
      await sb.cliOk('volume', 'create', 'sh', '--size', '64M');
      const f = join(sb.mnt, 'sh');
      let dev = await sb.losetup(f);
      const viaMount = await run('truncate', ['-s', '1M', f]);
      expect(viaMount.code).to.not.equal(0);
      expect(viaMount.stderr).to.match(/busy/i);
      const viaRedirect = await run('sh', ['-c', `: > ${f}`]);
      expect(viaRedirect.code).to.not.equal(0);
      expect(statSync(f).size).to.equal(64 * MiB);
      const viaCli = await sb.cli('volume', 'resize', 'sh', '--size', '1M');
      expect(viaCli.code).to.not.equal(0);
      expect(viaCli.stderr.trim().split('\n')).to.have.length(1);
      expect(viaCli.stderr).to.match(/open/);
      await must('truncate', ['-s', '128M', f]);
      expect(statSync(f).size).to.equal(128 * MiB);
      // Read-only users count too (losetup -r: no write claim, but the daemon serves it).
      await sb.detach(dev);
      dev = (await must('losetup', ['--find', '--show', '-r', f])).trim();
      try {
        expect((await sb.cli('volume', 'resize', 'sh', '--size', '1M')).code).to.not.equal(0);
        expect((await run('truncate', ['-s', '1M', f])).code).to.not.equal(0);
      } finally {
        await must('losetup', ['-d', dev]);
      }
      await must('truncate', ['-s', '1M', f]);
      expect(statSync(f).size).to.equal(MiB);
    });

    it('writes and sizes past the largest volume (4 PiB) get EFBIG before anything is reserved; check stays clean', async () => {
      await sb.cliOk('volume', 'create', 'huge', '--size', '16M');
      const f = join(sb.mnt, 'huge');
      for (const seekBlocks of [2 ** 48, 2 ** 40]) {
        const r = await run('dd', ['if=/dev/urandom', `of=${f}`, 'bs=4k', 'count=1', `seek=${seekBlocks}`, 'conv=notrunc', 'status=none']);
        expect(r.code, `seek ${seekBlocks}`).to.not.equal(0);
        expect(r.stderr, `seek ${seekBlocks}`).to.match(/File too large/);
      }
      const big = await run('truncate', ['-s', '5P', f]);
      expect(big.code).to.not.equal(0);
      expect(big.stderr).to.match(/File too large/);
      expect((await sb.cli('volume', 'create', 'huger', '--size', '5P')).stderr).to.match(/largest volume/);
      expect(statSync(f).size).to.equal(16 * MiB);
      expect((await sb.json<{ reservedBytes: number }>('df')).reservedBytes).to.equal(0);
      const check = await sb.cli('check');
      expect(check.code, check.stdout + check.stderr).to.equal(0);
    });

    it('umount -l with a loop device attached: the daemon serves the loop device until it is detached, then exits', async () => {
      await sb.cliOk('volume', 'create', 'lazy', '--size', '64M');
      const f = join(sb.mnt, 'lazy');
      await fs.writeFile(f, pattern, { flag: 'r+' });
      const dev = await sb.losetup(f, { directIo: true });
      await must('umount', ['-l', sb.mnt]);
      await sleep(2500);
      expect(alive(pid), 'daemon alive after umount -l').to.equal(true);
      expect((await readAt(dev, 0, pattern.length)).equals(pattern)).to.equal(true);
      const more = randomBytes(MiB);
      await writeAt(dev, more, 8 * MiB);
      await sb.detach(dev);
      await sb.waitGone(pid);
      expect((await mounts()).some((m) => m.mountpoint === resolve(sb.mnt))).to.equal(false);
      pid = await sb.mount();
      expect((await readAt(f, 8 * MiB, MiB)).equals(more)).to.equal(true);
    });

    it('something mounted over the mountpoint: the daemon keeps serving the loop device beneath', async () => {
      const f = join(sb.mnt, 'lazy');
      const dev = await sb.losetup(f, { directIo: true });
      await sb.mountFs('tmpfs', sb.mnt, ['-t', 'tmpfs']);
      await sleep(2500);
      expect(alive(pid), 'daemon alive under the other mount').to.equal(true);
      expect((await readAt(dev, 0, pattern.length)).equals(pattern)).to.equal(true);
      await sb.umountFs(sb.mnt);
      await sb.detach(dev);
      expect(alive(pid)).to.equal(true);
      await sb.umount();
      await sb.waitGone(pid);
    });
  });
}

describe('a pool whose path has commas', function () {
  for (const binding of BINDINGS) {
    const sb = new Sandbox({ fuse: binding, poolName: 'p,dev,suid' });
    before(() => sb.createPool('b1:64M'));
    after(() => sb.cleanup());

    if (binding === 'libfuse3') {
      it('libfuse3: mounts with nosuid,nodev (the commas stay in the name), and thinvol umount unmounts it', async () => {
        await sb.mount();
        const opts = mountOptions(sb.mnt);
        expect(opts).to.include('nosuid');
        expect(opts).to.include('nodev');
        expect((await mounts()).find((m) => m.mountpoint === resolve(sb.mnt))?.source).to.equal(sb.pool);
        await sb.umount();
        expect((await mounts()).some((m) => m.mountpoint === resolve(sb.mnt))).to.equal(false);
      });
    } else {
      it('libfuse2: refused in one line that says why, and nothing is left mounted', async () => {
        const m = await sb.cli('mount', sb.mnt, '--fuse', 'libfuse2');
        expect(m.code).to.not.equal(0);
        expect(m.stderr).to.match(/comma/);
        expect((await mounts()).some((e) => e.mountpoint === resolve(sb.mnt))).to.equal(false);
      });
    }
  }
});
