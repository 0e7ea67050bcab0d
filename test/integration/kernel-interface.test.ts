import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { copyFileSync, mkdtempSync, promises as fs, rmSync, statSync, truncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { mounts } from '../../src/daemon/mountpoint';
import { mulberry32 } from '../support/prng';
import { alive, BINDINGS, dropCaches, must, readAt, run, Sandbox, sleep, writeAt } from '../support/sandbox';

const MiB = 2 ** 20;
const BLOCK = 4096;

interface Status { daemons: { pid: number; mountpoint: string; binding: string }[] }

/** How many mount table entries sit at `mnt`. */
async function mountsAt(mnt: string): Promise<number> {
  return (await mounts()).filter((m) => m.mountpoint === resolve(mnt)).length;
}

const statCode = (p: string): Promise<string> => fs.stat(p).then(() => 'ok', (e: NodeJS.ErrnoException) => e.code ?? 'error');

async function allocated(sb: Sandbox, name: string): Promise<number> {
  return (await sb.json<{ allocatedBytes: number }>('volume', 'info', name)).allocatedBytes;
}

/** Polls until `cond` holds for the volume's allocated bytes, or `ms` passed; returns the last value. */
async function allocatedUntil(sb: Sandbox, name: string, cond: (n: number) => boolean, ms = 15_000): Promise<number> {
  let n = await allocated(sb, name);
  for (const end = Date.now() + ms; !cond(n) && Date.now() < end; n = await allocated(sb, name)) await sleep(250);
  return n;
}

for (const fuse of BINDINGS) {
  describe(`mount lifecycle (${fuse})`, function () {
    const sb = new Sandbox({ fuse });
    const vol = join(sb.mnt, 'v');
    before(async () => {
      await sb.createPool('b1:1G');
      await sb.cliOk('volume', 'create', 'v', '--size', '64M');
    });
    after(() => sb.cleanup());

    it('thinvol umount, and SIGTERM, leave no mount and no daemon behind; status and the log name the binding', async () => {
      let pid = await sb.mount();
      expect(await mountsAt(sb.mnt)).to.equal(1);
      const st = await sb.json<Status>('status');
      expect(st.daemons.map((d) => [d.pid, d.binding])).to.deep.equal([[pid, fuse]]);
      expect(await sb.cliOk('status')).to.match(new RegExp(`${pid}\\s+${sb.mnt}\\s+${fuse}`));
      const log = await fs.readFile(join(sb.pool, 'run', 'daemon.log'), 'utf8');
      expect(log).to.include(`(pid ${pid}) with ${fuse}`);
      await sb.umount();
      expect(await mountsAt(sb.mnt)).to.equal(0);
      expect(alive(pid)).to.equal(false);
      pid = await sb.mount();
      process.kill(pid, 'SIGTERM');
      await sb.waitGone(pid);
      expect(await mountsAt(sb.mnt)).to.equal(0);
      expect((await sb.json<Status>('status')).daemons).to.deep.equal([]);
    });

    it('SIGTERM is refused while a loop device uses a volume; once detached the daemon stops cleanly', async () => {
      const pid = await sb.mount();
      const dev = await sb.losetup(vol);
      process.kill(pid, 'SIGTERM');
      await sleep(1500);
      expect(alive(pid)).to.equal(true);
      expect(await mountsAt(sb.mnt)).to.equal(1);
      await must('dd', [`if=${dev}`, 'of=/dev/null', 'bs=64k', 'count=16', 'iflag=direct', 'status=none']);
      await sb.detach(dev);
      process.kill(pid, 'SIGTERM');
      await sb.waitGone(pid);
      expect(await mountsAt(sb.mnt)).to.equal(0);
    });

    it('kill -9: the mount answers ENOTCONN until thinvol mount clears it; fsynced data survives', async () => {
      const pid = await sb.mount();
      const data = randomBytes(3 * MiB + 5);
      await writeAt(vol, data, 777);
      process.kill(pid, 'SIGKILL');
      await sb.waitGone(pid);
      // The killed daemon's threads may still be exiting (a request caught in the teardown
      // gets ECONNABORTED), and cached attributes may answer for a second: then ENOTCONN.
      let code = await statCode(sb.mnt);
      for (const end = Date.now() + 5000; code !== 'ENOTCONN' && Date.now() < end; code = await statCode(sb.mnt)) {
        expect(code).to.be.oneOf(['ok', 'ECONNABORTED']);
        await sleep(100);
      }
      expect(code).to.equal('ENOTCONN');
      await sb.mount();
      expect(await mountsAt(sb.mnt)).to.equal(1);
      expect((await readAt(vol, 777, data.length)).equals(data)).to.equal(true);
      await sb.umount();
      expect(await mountsAt(sb.mnt)).to.equal(0);
      expect((await sb.cli('check')).code).to.equal(0);
    });
  });
}

describe('libfuse3: requests in flight, discard, SEEK_DATA/SEEK_HOLE, errors', function () {
  const sb = new Sandbox({ fuse: 'libfuse3' });
  before(async () => {
    await sb.createPool('b1:4G');
    // Auto reclaim off: what comes back below comes back through discard alone.
    await sb.mount(sb.mnt, { autoReclaim: false });
  });
  after(() => sb.cleanup());

  it('fio libaio QD16 on a direct-I/O loop device over a volume verifies (crc32c)', async () => {
    await sb.cliOk('volume', 'create', 'qd', '--size', '1G');
    const dev = await sb.losetup(join(sb.mnt, 'qd'), { directIo: true });
    const r = await run('fio', ['--name=qd16', `--filename=${dev}`, '--rw=randwrite', '--bs=4k', '--iodepth=16', '--ioengine=libaio', '--direct=1',
      '--size=256M', '--io_size=64M', '--verify=crc32c', '--do_verify=1', '--verify_fatal=1', '--randrepeat=0', '--verify_state_save=0', '--output-format=terse']);
    expect(r.code, r.stderr).to.equal(0);
    const mixed = await run('fio', ['--name=qd16mix', `--filename=${dev}`, '--rw=randrw', '--bsrange=4k-1m', '--iodepth=16', '--ioengine=libaio', '--direct=1',
      '--size=256M', '--offset=512M', '--io_size=128M', '--verify=crc32c', '--do_verify=1', '--verify_fatal=1', '--randrepeat=0', '--verify_state_save=0', '--output-format=terse']);
    expect(mixed.code, mixed.stderr).to.equal(0);
    await sb.detach(dev);
    expect((await sb.cli('check')).code).to.equal(0);
  });

  it('fallocate --punch-hole on a volume file gives the whole blocks back (df) and reads back zeros; preallocation is refused', async () => {
    await sb.cliOk('volume', 'create', 'punch', '--size', '64M');
    const f = join(sb.mnt, 'punch');
    const data = randomBytes(8 * MiB);
    await writeAt(f, data, 0);
    expect(await allocated(sb, 'punch')).to.equal(8 * MiB);
    const off = MiB + 1000;
    const len = 4 * MiB;
    await must('fallocate', ['--punch-hole', '--offset', String(off), '--length', String(len), f]);
    // Whole blocks inside [off, off + len) are unmapped; the commit within a second frees them.
    const whole = Math.floor((off + len) / BLOCK) * BLOCK - Math.ceil(off / BLOCK) * BLOCK;
    expect(await allocatedUntil(sb, 'punch', (n) => n === 8 * MiB - whole)).to.equal(8 * MiB - whole);
    await dropCaches();
    const got = await readAt(f, 0, 8 * MiB);
    expect(got.subarray(off, off + len).equals(Buffer.alloc(len))).to.equal(true);
    expect(got.subarray(0, off).equals(data.subarray(0, off))).to.equal(true);
    expect(got.subarray(off + len).equals(data.subarray(off + len))).to.equal(true);
    expect((await fs.stat(f)).size).to.equal(64 * MiB);
    const pre = await run('fallocate', ['--length', '1M', f]);
    expect(pre.code).to.not.equal(0);
    expect(pre.stderr).to.match(/Operation not supported/);
    expect((await sb.cli('check')).code).to.equal(0);
  });

  for (const mode of ['fstrim', 'mount -o discard'] as const) {
    it(`${mode} on ext4 on a loop device over a volume gives 512 MiB back at once, with auto reclaim off`, async () => {
      const name = mode === 'fstrim' ? 'trim' : 'online';
      await sb.cliOk('volume', 'create', name, '--size', '2G');
      const dev = await sb.losetup(join(sb.mnt, name));
      await must('mkfs.ext4', ['-q', '-E', 'nodiscard', dev]);
      const at = join(sb.dir, `fs-${name}`);
      await sb.mountFs(dev, at, mode === 'fstrim' ? [] : ['-o', 'discard']);
      await must('dd', ['if=/dev/urandom', `of=${join(at, 'keep')}`, 'bs=1M', 'count=8', 'status=none']);
      for (let i = 0; i < 8; i++) await must('dd', ['if=/dev/urandom', `of=${join(at, `f${i}`)}`, 'bs=1M', 'count=64', 'status=none']);
      await must('sync', []);
      const keep = await must('md5sum', [join(at, 'keep')]);
      const before = await allocated(sb, name);
      expect(before).to.be.at.least(520 * MiB);
      for (let i = 0; i < 8; i++) await fs.rm(join(at, `f${i}`));
      await must('sync', []);
      let trimmed = 'online discard at each journal commit';
      if (mode === 'fstrim') {
        await sleep(3000);
        const idle = await allocated(sb, name);
        expect(before - idle, 'nothing comes back without a discard (auto reclaim is off)').to.be.below(8 * MiB);
        trimmed = (await must('fstrim', ['-v', at])).trim();
      }
      const now = await allocatedUntil(sb, name, (n) => before - n >= 0.95 * 512 * MiB);
      console.log(`      ${mode}: ${trimmed}; allocated ${(before / MiB).toFixed(1)} MiB -> ${(now / MiB).toFixed(1)} MiB`);
      expect(before - now).to.be.at.least(0.95 * 512 * MiB);
      expect(await must('md5sum', [join(at, 'keep')])).to.equal(keep);
      await sb.umountFs(at);
      const fsck = await run('e2fsck', ['-fn', dev]);
      expect(fsck.code, fsck.stdout).to.equal(0);
      await sb.detach(dev);
      expect((await sb.cli('check')).code).to.equal(0);
      await sb.cliOk('volume', 'delete', name);
    });
  }

  it('qemu-img map of a volume file lists exactly its written ranges (SEEK_DATA/SEEK_HOLE, seeded)', async () => {
    const seed = Number(process.env.THINVOL_SEED ?? Date.now() % 1e9);
    console.log(`      seed ${seed} (THINVOL_SEED=${seed} replays it)`);
    const rnd = mulberry32(seed);
    const blocks = 16384; // 64 MiB
    await sb.cliOk('volume', 'create', 'mapped', '--size', `${(blocks * BLOCK) / MiB}M`);
    const f = join(sb.mnt, 'mapped');
    const want = new Array<boolean>(blocks).fill(false);
    const fh = await fs.open(f, 'r+');
    try {
      for (let i = 0; i < 40; i++) {
        const b = Math.floor(rnd() * blocks);
        const e = Math.min(blocks, b + 1 + Math.floor(rnd() * 64));
        const buf = Buffer.alloc((e - b) * BLOCK);
        for (let k = 0; k < buf.length; k += 4) buf.writeUInt32LE(1 + Math.floor(rnd() * 0xfffffffe), k);
        await fh.write(buf, 0, buf.length, b * BLOCK);
        want.fill(true, b, e);
      }
      await fh.sync();
    } finally {
      await fh.close();
    }
    // And a hole punched into the middle of something written.
    const firstData = want.indexOf(true);
    await must('fallocate', ['--punch-hole', '--offset', String((firstData + 1) * BLOCK), '--length', String(BLOCK), f]);
    if (firstData + 1 < blocks) want[firstData + 1] = false;
    const map = JSON.parse(await must('qemu-img', ['map', '--output=json', '-f', 'raw', f])) as { start: number; length: number; data: boolean }[];
    const got = new Array<boolean>(blocks).fill(false);
    for (const e of map) if (e.data) got.fill(true, e.start / BLOCK, (e.start + e.length) / BLOCK);
    const runs = (a: boolean[]): string => a.reduce<string[]>((acc, v, i) => (v && !a[i - 1] ? [...acc, `${i}-`] : !v && a[i - 1] ? [...acc.slice(0, -1), `${acc[acc.length - 1]}${i}`] : acc), []).join(' ');
    expect(runs(got), `seed ${seed}`).to.equal(runs(want));
  });

  it('error paths: ENOENT, EBUSY, and a failing backend read gives EIO while the daemon keeps serving', async () => {
    expect(await statCode(join(sb.mnt, 'no-such-volume'))).to.equal('ENOENT');
    const open = await fs.open(join(sb.mnt, 'no-such-volume'), 'r').then(() => 'opened', (e: NodeJS.ErrnoException) => e.code);
    expect(open).to.equal('ENOENT');
    await sb.cliOk('volume', 'create', 'err', '--size', '16M');
    const f = join(sb.mnt, 'err');
    const fh = await fs.open(f, 'r+');
    try {
      expect(await fs.rm(f).then(() => 'removed', (e: NodeJS.ErrnoException) => e.code)).to.equal('EBUSY');
    } finally {
      await fh.close();
    }
    // Cut the backend file short under the daemon: a read of data that lived there fails inside
    // the data path (an error the FUSE adapter does not expect) and must reach the reader as EIO.
    await sb.cliOk('volume', 'create', 'cut', '--size', '16M');
    await writeAt(join(sb.mnt, 'cut'), randomBytes(MiB), 0);
    const [ext] = await sb.json<{ backendOffset: number; length: number }[]>('map', 'cut');
    const backend = join(sb.dir, 'b1');
    const size = statSync(backend).size;
    truncateSync(backend, ext!.backendOffset);
    try {
      const r = await run('dd', [`if=${join(sb.mnt, 'cut')}`, 'of=/dev/null', 'bs=64k', 'count=4', 'iflag=direct', 'status=none']);
      expect(r.code).to.not.equal(0);
      expect(r.stderr).to.match(/Input\/output error/);
    } finally {
      truncateSync(backend, size);
    }
    // Still serving: stat, a read elsewhere, the CLI.
    expect((await fs.stat(f)).size).to.equal(16 * MiB);
    expect((await readAt(join(sb.mnt, 'cut'), 0, BLOCK)).equals(Buffer.alloc(BLOCK))).to.equal(true);
    expect((await sb.json<Status>('status')).daemons).to.have.length(1);
    const log = await fs.readFile(join(sb.pool, 'run', 'daemon.log'), 'utf8');
    expect(log).to.match(/read failed: .*truncated/);
  });
});

describe('binding selection', function () {
  const sb = new Sandbox({ fuse: 'libfuse3' });
  let build: string;
  before(async () => {
    await sb.createPool('b1:256M');
    build = mkdtempSync(join(tmpdir(), 'thinvol-nofuse3-'));
    copyFileSync(join(__dirname, '..', '..', '..', 'build', 'Release', 'thinvol_native.node'), join(build, 'thinvol_native.node'));
  });
  after(async () => {
    await sb.cleanup();
    rmSync(build, { recursive: true, force: true });
  });

  it('without the libfuse3 part of the addon, mount falls back to libfuse2 with one warning line', async () => {
    const { pid, binding, stderr } = await sb.mountAs(sb.mnt, { env: { THINVOL_NATIVE_BUILD: build } });
    expect(binding).to.equal('libfuse2');
    const lines = stderr.trim().split('\n');
    expect(lines).to.have.length(1);
    expect(lines[0]).to.match(/^thinvol: warning: the libfuse3 binding is not usable \(not built.*\); serving with libfuse2 \(fuse-native\) instead$/);
    expect((await sb.json<Status>('status')).daemons.map((d) => [d.pid, d.binding])).to.deep.equal([[pid, 'libfuse2']]);
    await sb.umount();
    expect(await mountsAt(sb.mnt)).to.equal(0);
  });
});
