import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { mulberry32 } from '../support/prng';
import { BINDINGS, dropCaches, must, needs, readAt, run, Sandbox } from '../support/sandbox';

interface Df { capacityBytes: number; allocatedBytes: number; freeBytes: number; provisionedBytes: number; volumes: { name: string; sizeBytes: number; allocatedBytes: number }[] }

for (const fuse of BINDINGS) {
  describe(`data path through a real FUSE mount (${fuse})`, function () {
    const sb = new Sandbox({ fuse });
    const vol = join(sb.mnt, 'v1');

    before(async () => {
      await sb.createPool('b1:1G', 'b2:1G');
      await sb.cliOk('volume', 'create', 'v1', '--size', '5G');
      await sb.mount();
    });
    after(() => sb.cleanup());

    it('shows one regular file per volume with the volume size, and statfs shows the pool', async () => {
      const st = await fs.stat(vol);
      expect(st.isFile()).to.equal(true);
      expect(st.size).to.equal(5 * 2 ** 30);
      const df = await must('df', ['-B1', '--output=size,avail', sb.mnt]);
      const [size, avail] = df.trim().split('\n')[1]!.trim().split(/\s+/).map(Number);
      // Each backend's first MiB holds its label; the journal reserve is not available to ordinary writes.
      const { space } = await sb.json<{ space: { reserveBytes: number } }>('df');
      expect(space.reserveBytes).to.be.above(0);
      expect(size).to.equal(2 * 2 ** 30 - 2 * 2 ** 20);
      expect(avail).to.equal(2 * 2 ** 30 - 2 * 2 ** 20 - space.reserveBytes);
    });

    it('reads never-written ranges as zeros without allocating', async () => {
      const buf = await readAt(vol, 3 * 2 ** 30, 1 << 20);
      expect(buf.equals(Buffer.alloc(1 << 20))).to.equal(true);
      const df = await sb.json<Df>('df');
      expect(df.allocatedBytes).to.equal(0);
    });

    it('allocates nothing for all-zero writes to unallocated ranges', async () => {
      await must('dd', ['if=/dev/zero', `of=${vol}`, 'bs=1M', 'count=16', 'seek=100', 'conv=notrunc,fsync', 'status=none']);
      const df = await sb.json<Df>('df');
      expect(df.allocatedBytes).to.equal(0);
    });

    it('reads back dd patterns written at random offsets, unaligned ones included', async () => {
      const seed = Number(process.env.THINVOL_SEED ?? Date.now() % 1e9);
      console.log(`      seed ${seed} (THINVOL_SEED=${seed} to replay)`);
      const rnd = mulberry32(seed);
      const writes: { off: number; data: Buffer }[] = [];
      for (let i = 0; i < 40; i++) {
        const off = Math.floor(rnd() * (4 * 2 ** 30 - 2 ** 20));
        const data = Buffer.alloc(1 + Math.floor(rnd() * 300_000));
        for (let j = 0; j < data.length; j++) data[j] = Math.floor(rnd() * 256);
        writes.push({ off, data });
      }
      for (const w of writes) {
        const r = await run('dd', [`of=${vol}`, 'bs=65536', `seek=${w.off}`, 'oflag=seek_bytes', 'iflag=fullblock', 'conv=notrunc', 'status=none'], { input: w.data });
        expect(r.code, r.stderr).to.equal(0);
      }
      await must('sync', [vol]);
      // Later writes win where they overlap: the expected byte at a position is the last writer's.
      const expectedAt = (pos: number): number => {
        for (let k = writes.length - 1; k >= 0; k--) {
          const w = writes[k]!;
          if (pos >= w.off && pos < w.off + w.data.length) return w.data[pos - w.off]!;
        }
        return 0;
      };
      await dropCaches();
      for (const w of writes) {
        const got = await readAt(vol, w.off, w.data.length);
        for (let i = 0; i < w.data.length; i += 997) expect(got[i]).to.equal(expectedAt(w.off + i));
      }
      const check = await sb.cli('check');
      expect(check.code, check.stdout).to.equal(0);
    });

    it('keeps a streaming write in few contiguous backend runs', async () => {
      await must('dd', ['if=/dev/urandom', `of=${vol}`, 'bs=1M', 'count=256', 'seek=4096', 'conv=notrunc,fsync', 'status=none']);
      const map = await sb.json<{ offset: number; length: number }[]>('map', 'v1');
      const inStream = map.filter((e) => e.offset >= 2 ** 32 && e.offset < 2 ** 32 + 2 ** 28);
      expect(inStream.reduce((s, e) => s + e.length, 0)).to.equal(2 ** 28);
      // Free space is already fragmented by the random writes above (all below 4 GiB): runs must still be long.
      expect(inStream.length, JSON.stringify(inStream)).to.be.at.most(8);
    });

    it('creates, resizes, renames and deletes volumes through file operations', async () => {
      const f = join(sb.mnt, 'made-by-touch');
      await fs.writeFile(f, '');
      expect((await sb.json<{ name: string; sizeBytes: number }>('volume', 'info', 'made-by-touch')).sizeBytes).to.equal(0);
      await must('truncate', ['-s', '1G', f]);
      expect((await fs.stat(f)).size).to.equal(2 ** 30);
      await must('dd', ['if=/dev/urandom', `of=${f}`, 'bs=64k', 'count=4', 'conv=notrunc,fsync', 'status=none']);
      await fs.rename(f, join(sb.mnt, 'renamed'));
      expect((await sb.json<{ sizeBytes: number; allocatedBytes: number }>('volume', 'info', 'renamed')).allocatedBytes).to.equal(256 * 1024);
      const before = (await sb.json<Df>('df')).allocatedBytes;
      await fs.rm(join(sb.mnt, 'renamed'));
      expect((await sb.json<Df>('df')).allocatedBytes).to.equal(before - 256 * 1024);
      expect((await fs.readdir(sb.mnt)).sort()).to.deep.equal(['v1']);
    });

    it('shrinking with truncate frees the space past the end, and growing again reads zeros', async () => {
      const f = join(sb.mnt, 'shrink');
      await fs.writeFile(f, randomBytes(3 * 4096 + 100));
      await must('truncate', ['-s', '5000', f]);
      await must('truncate', ['-s', '20000', f]);
      const buf = await fs.readFile(f);
      expect(buf.length).to.equal(20000);
      expect(buf.subarray(5000).equals(Buffer.alloc(15000))).to.equal(true);
      expect((await sb.json<{ allocatedBytes: number }>('volume', 'info', 'shrink')).allocatedBytes).to.equal(8192);
      await fs.rm(f);
      expect((await sb.cli('check')).code).to.equal(0);
    });

    it('serves many requests in flight at once', async function () {
      await needs(this, 'fio');
      const data = randomBytes(8 << 20);
      await fs.writeFile(join(sb.dir, 'src'), data);
      const r = await run('fio', ['--name=par', `--filename=${vol}`, '--rw=randwrite', '--bs=4k', '--iodepth=32', '--ioengine=libaio', '--direct=1',
        '--size=64M', '--offset=1G', '--io_size=16M', '--verify=crc32c', '--do_verify=1', '--randrepeat=0', '--verify_state_save=0', '--output-format=terse']);
      expect(r.code, r.stderr).to.equal(0);
      expect((await sb.cli('check')).code).to.equal(0);
    });
  });
}
