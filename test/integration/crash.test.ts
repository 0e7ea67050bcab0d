import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { BINDINGS, dropCaches, must, run, Sandbox, sleep } from '../support/sandbox';

for (const fuse of BINDINGS) {
  describe(`crash and security contract (${fuse})`, function () {
    const sb = new Sandbox({ fuse });
    before(async () => {
      await sb.createPool('b1:256M');
    });
    after(() => sb.cleanup());

    it('data fsynced before kill -9 survives, and check is clean after remount', async () => {
      await sb.cliOk('volume', 'create', 'durable', '--size', '1G');
      const pid = await sb.mount();
      const data = randomBytes(5 * 2 ** 20 + 1234);
      const fh = await fs.open(join(sb.mnt, 'durable'), 'r+');
      await fh.write(data, 0, data.length, 12345);
      await fh.sync();
      process.kill(pid, 'SIGKILL');
      await fh.close().catch(() => undefined);
      await sleep(300);
      await sb.mount();
      const got = Buffer.alloc(data.length);
      const rh = await fs.open(join(sb.mnt, 'durable'), 'r');
      await rh.read(got, 0, data.length, 12345);
      await rh.close();
      expect(got.equals(data)).to.equal(true);
      const check = await sb.cli('check');
      expect(check.code, check.stdout).to.equal(0);
      await fs.rm(join(sb.mnt, 'durable'));
    });

    if (fuse === 'libfuse3') {
      it('with --writeback-cache, buffered data fsynced before kill -9 survives (unsynced writes may not), and check is clean', async () => {
        await sb.cliOk('volume', 'create', 'cached', '--size', '1G');
        await sb.umount();
        const pid = await sb.mount(sb.mnt, { writebackCache: true });
        expect(await fs.readFile(join(sb.pool, 'run', 'daemon.log'), 'utf8')).to.match(/writeback_cache/);
        const synced = randomBytes(3 * 2 ** 20 + 4096);
        const fh = await fs.open(join(sb.mnt, 'cached'), 'r+');
        for (let off = 0; off < synced.length; off += 4096) await fh.write(synced, off, Math.min(4096, synced.length - off), 8192 + off);
        await fh.sync();
        await fh.write(randomBytes(2 ** 20), 0, 2 ** 20, 64 * 2 ** 20);
        process.kill(pid, 'SIGKILL');
        await fh.close().catch(() => undefined);
        await sleep(300);
        await sb.mount();
        const got = Buffer.alloc(synced.length);
        const rh = await fs.open(join(sb.mnt, 'cached'), 'r');
        await rh.read(got, 0, synced.length, 8192);
        await rh.close();
        expect(got.equals(synced)).to.equal(true);
        const check = await sb.cli('check');
        expect(check.code, check.stdout).to.equal(0);
        await fs.rm(join(sb.mnt, 'cached'));
      });
    }

    it('a new volume never shows a deleted volume\'s bytes', async () => {
      const a = join(sb.mnt, 'a');
      await sb.cliOk('volume', 'create', 'a', '--size', '128M');
      await must('sh', ['-c', `yes THINVOL-SECRET-A | head -c 100000000 | dd of=${a} bs=1M conv=notrunc,fsync iflag=fullblock status=none`]);
      await fs.rm(a);
      await sb.cliOk('volume', 'create', 'b', '--size', '128M');
      const b = join(sb.mnt, 'b');
      const fh = await fs.open(b, 'r+');
      for (let off = 777; off < 128 * 2 ** 20; off += 3 * 2 ** 20 + 4099) await fh.write(Buffer.from('b-data'), 0, 6, off);
      await fh.sync();
      await fh.close();
      await dropCaches();
      const all = await fs.readFile(b);
      expect(all.includes('SECRET')).to.equal(false);
      const nonZero = all.filter((x) => x !== 0).length;
      expect(nonZero).to.equal(6 * Math.ceil((128 * 2 ** 20 - 777) / (3 * 2 ** 20 + 4099)));
      await fs.rm(b);
    });

    it('a full pool with --when-full error answers ENOSPC at once, keeps serving, and writes work again once space is freed', async () => {
      await sb.cliOk('pool', 'set', '--when-full', 'error');
      await sb.cliOk('volume', 'create', 'big', '--size', '1G');
      await sb.cliOk('volume', 'create', 'keep', '--size', '16M');
      const keep = randomBytes(8 * 2 ** 20);
      await fs.writeFile(join(sb.mnt, 'keep'), keep);
      const r = await run('dd', ['if=/dev/urandom', `of=${join(sb.mnt, 'big')}`, 'bs=1M', 'count=400', 'conv=notrunc,fsync', 'status=none']);
      expect(r.code).to.not.equal(0);
      expect(r.stderr).to.match(/No space left on device/);
      expect((await fs.readFile(join(sb.mnt, 'keep'))).subarray(0, keep.length).equals(keep)).to.equal(true);
      await fs.rm(join(sb.mnt, 'big'));
      await sb.cliOk('volume', 'create', 'again', '--size', '64M');
      await must('dd', ['if=/dev/urandom', `of=${join(sb.mnt, 'again')}`, 'bs=1M', 'count=32', 'conv=notrunc,fsync', 'status=none']);
      const check = await sb.cli('check');
      expect(check.code, check.stdout).to.equal(0);
      await fs.rm(join(sb.mnt, 'again'));
      await fs.rm(join(sb.mnt, 'keep'));
      await sb.cliOk('pool', 'set', '--when-full', 'queue');
    });

    it('a second daemon cannot open a volume for writing while the first has it open', async () => {
      await sb.cliOk('volume', 'create', 'shared', '--size', '16M');
      const second = join(sb.dir, 'mnt2');
      await sb.mount(second);
      const fh = await fs.open(join(sb.mnt, 'shared'), 'r+');
      try {
        const err = await fs.open(join(second, 'shared'), 'r+').then((h) => h.close().then(() => undefined), (e: NodeJS.ErrnoException) => e);
        expect(err?.code).to.equal('EBUSY');
        const ro = await fs.readFile(join(second, 'shared'));
        expect(ro.length).to.equal(16 * 2 ** 20);
        const del = await sb.cli('volume', 'delete', 'shared');
        expect(del.code).to.not.equal(0);
        expect(del.stderr).to.match(/open for writing by pid/);
      } finally {
        await fh.close();
      }
      await sb.umount(second);
    });
  });
}
