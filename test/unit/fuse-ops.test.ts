import { expect } from 'chai';
import { constants } from 'node:os';
import { checkPool } from '../../src/check/check-pool';
import { FuseOps } from '../../src/fuse/fuse-ops';
import { holderId } from '../../src/pool/holder';
import { BLOCK } from '../../src/store/records';
import { MemoryPool } from '../support/memory-pool';
import { mulberry32 } from '../support/prng';

const MiB = 2 ** 20;
const E = constants.errno;
const KEEP_SIZE = 0x01;
const PUNCH_HOLE = 0x02;
const ZERO_RANGE = 0x10;
const SEEK_DATA = 3;
const SEEK_HOLE = 4;
const O_RDWR = 2;

type Fn = (...args: unknown[]) => void;

/** FuseOps over a memory pool, its handlers called as a binding would, promisified. */
class Harness {
  readonly mp = MemoryPool.create(64 * MiB);
  readonly fuse: FuseOps;
  readonly h: Record<string, Fn>;

  constructor() {
    this.mp.pool.registry.register(this.mp.holder, '/mnt', '/sock');
    this.fuse = new FuseOps(this.mp.pool, this.mp.backends, this.mp.holder, holderId(this.mp.holder));
    this.h = this.fuse.ops() as Record<string, Fn>;
  }

  /** Calls a handler whose callback is (err, value): resolves [err, value]. */
  call<T = unknown>(op: string, ...args: unknown[]): Promise<[number, T]> {
    return new Promise((resolve) => this.h[op]!(...args, (err: number, v: T) => resolve([err, v])));
  }

  /** read/write call back with one number: the count, or a negative errno. */
  count(op: 'read' | 'write', ...args: unknown[]): Promise<number> {
    return new Promise((resolve) => this.h[op]!(...args, (n: number) => resolve(n)));
  }

  async open(name: string, size: number): Promise<number> {
    this.mp.pool.createVolume(name, size);
    const [err, fd] = await this.call<number>('open', `/${name}`, O_RDWR);
    expect(err).to.equal(0);
    return fd;
  }

  async write(fd: number, data: Buffer, pos: number): Promise<void> {
    expect(await this.count('write', '/x', fd, data, data.length, pos)).to.equal(data.length);
  }

  async read(fd: number, pos: number, len: number): Promise<Buffer> {
    const buf = Buffer.alloc(len, 0xee);
    const n = await this.count('read', '/x', fd, buf, len, pos);
    return buf.subarray(0, n);
  }

  mappedBytes(name: string): number {
    const v = this.mp.pool.volume(name);
    return this.fuse.ioOf(v.id)!.mapped(0, v.sizeBytes).reduce((n, e) => n + e.len, 0);
  }
}

describe('FuseOps fallocate and lseek (memory backends)', () => {
  it('PUNCH_HOLE|KEEP_SIZE unmaps whole blocks, zeros the partial ones in place, and keeps the size', async () => {
    const t = new Harness();
    const fd = await t.open('v', 16 * MiB);
    await t.write(fd, Buffer.alloc(MiB, 7), 0);
    expect(t.mappedBytes('v')).to.equal(MiB);
    const [err] = await t.call('fallocate', '/v', fd, PUNCH_HOLE | KEEP_SIZE, 1000, 10 * BLOCK);
    expect(err).to.equal(0);
    const got = await t.read(fd, 0, MiB);
    const end = 1000 + 10 * BLOCK;
    expect(got.subarray(0, 1000).every((x) => x === 7)).to.equal(true);
    expect(got.subarray(1000, end).every((x) => x === 0)).to.equal(true);
    expect(got.subarray(end).every((x) => x === 7)).to.equal(true);
    // Blocks 1..9 are whole inside [1000, 1000 + 10 blocks): unmapped; blocks 0 and 10 stay (zeroed in part).
    expect(t.mappedBytes('v')).to.equal(MiB - 9 * BLOCK);
    expect(t.mp.pool.volume('v').sizeBytes).to.equal(16 * MiB);
    const [, attr] = await t.call<{ size: number }>('getattr', '/v');
    expect(attr.size).to.equal(16 * MiB);
    await t.call('release', '/v', fd);
    expect(t.mp.pool.volume('v').allocatedBytes, 'the punched blocks are free after the commit').to.equal(MiB - 9 * BLOCK);
    expect(checkPool(t.mp.pool).clean).to.equal(true);
  });

  it('a punch inside one block, or past the end, only zeros (or does nothing)', async () => {
    const t = new Harness();
    const fd = await t.open('v', 4 * BLOCK);
    await t.write(fd, Buffer.alloc(4 * BLOCK, 9), 0);
    expect((await t.call('fallocate', '/v', fd, PUNCH_HOLE | KEEP_SIZE, BLOCK + 10, 100))[0]).to.equal(0);
    expect((await t.call('fallocate', '/v', fd, PUNCH_HOLE | KEEP_SIZE, 8 * BLOCK, BLOCK))[0]).to.equal(0);
    const got = await t.read(fd, 0, 4 * BLOCK);
    expect(got.subarray(BLOCK + 10, BLOCK + 110).every((x) => x === 0)).to.equal(true);
    expect(got.filter((x) => x === 0).length).to.equal(100);
    expect(t.mappedBytes('v')).to.equal(4 * BLOCK);
    expect(t.mp.pool.volume('v').sizeBytes).to.equal(4 * BLOCK);
  });

  it('ZERO_RANGE zeros and unmaps like a punch; without KEEP_SIZE it grows the volume', async () => {
    const t = new Harness();
    const fd = await t.open('v', 8 * BLOCK);
    await t.write(fd, Buffer.alloc(8 * BLOCK, 3), 0);
    expect((await t.call('fallocate', '/v', fd, ZERO_RANGE | KEEP_SIZE, 2 * BLOCK, 2 * BLOCK))[0]).to.equal(0);
    expect(t.mappedBytes('v')).to.equal(6 * BLOCK);
    expect((await t.call('fallocate', '/v', fd, ZERO_RANGE, 6 * BLOCK, 6 * BLOCK))[0]).to.equal(0);
    expect(t.mp.pool.volume('v').sizeBytes).to.equal(12 * BLOCK);
    const got = await t.read(fd, 0, 12 * BLOCK);
    for (let b = 0; b < 12; b++) expect(got[b * BLOCK], `block ${b}`).to.equal(b < 2 || (b >= 4 && b < 6) ? 3 : 0);
    expect(t.mappedBytes('v')).to.equal(4 * BLOCK);
  });

  it('preallocation and the other modes answer EOPNOTSUPP; a read-only handle EBADF; a bad range EINVAL', async () => {
    const t = new Harness();
    const fd = await t.open('v', MiB);
    for (const mode of [0, KEEP_SIZE, 0x08 /* COLLAPSE */, 0x20 /* INSERT */, PUNCH_HOLE /* without KEEP_SIZE */]) {
      expect((await t.call('fallocate', '/v', fd, mode, 0, BLOCK))[0], `mode ${mode}`).to.equal(-E.EOPNOTSUPP);
    }
    expect((await t.call('fallocate', '/v', fd, PUNCH_HOLE | KEEP_SIZE, 0, 0))[0]).to.equal(-E.EINVAL);
    const [, ro] = await t.call<number>('open', '/v', 0);
    expect((await t.call('fallocate', '/v', ro, PUNCH_HOLE | KEEP_SIZE, 0, BLOCK))[0]).to.equal(-E.EBADF);
    expect((await t.call('fallocate', '/v', 999, PUNCH_HOLE | KEEP_SIZE, 0, BLOCK))[0]).to.equal(-E.EBADF);
  });

  it('SEEK_DATA and SEEK_HOLE follow the map, uncommitted writes and discards included', async () => {
    const t = new Harness();
    const size = 64 * MiB + 1000;
    const fd = await t.open('v', size);
    const seek = async (off: number, whence: number): Promise<number> => {
      const [err, pos] = await t.call<number>('lseek', '/v', fd, off, whence);
      return err !== 0 ? err : pos;
    };
    expect(await seek(0, SEEK_DATA)).to.equal(-E.ENXIO);
    expect(await seek(0, SEEK_HOLE)).to.equal(0);
    expect(await seek(size, SEEK_HOLE)).to.equal(-E.ENXIO);
    await t.write(fd, Buffer.alloc(3 * BLOCK, 1), MiB);
    await t.write(fd, Buffer.alloc(BLOCK, 1), 2 * MiB);
    await t.write(fd, Buffer.alloc(100, 1), size - 100);
    expect(await seek(0, SEEK_DATA)).to.equal(MiB);
    expect(await seek(MiB + 5, SEEK_DATA)).to.equal(MiB + 5);
    expect(await seek(MiB, SEEK_HOLE)).to.equal(MiB + 3 * BLOCK);
    expect(await seek(MiB + 3 * BLOCK, SEEK_DATA)).to.equal(2 * MiB);
    expect(await seek(2 * MiB + BLOCK, SEEK_DATA)).to.equal(size - 100 - ((size - 100) % BLOCK));
    // Data up to the end: the end is the hole.
    expect(await seek(size - 50, SEEK_HOLE)).to.equal(size);
    await t.call('fallocate', '/v', fd, PUNCH_HOLE | KEEP_SIZE, MiB + BLOCK, BLOCK);
    expect(await seek(MiB, SEEK_HOLE)).to.equal(MiB + BLOCK);
    expect(await seek(MiB + BLOCK, SEEK_DATA)).to.equal(MiB + 2 * BLOCK);
    expect((await t.call('lseek', '/v', fd, 0, 0 /* SEEK_SET */))[0]).to.equal(-E.EINVAL);
  });

  it('random writes and punches: SEEK_DATA/SEEK_HOLE walk exactly the mapped blocks (seeded)', async () => {
    const seed = Number(process.env.THINVOL_SEED ?? Date.now() % 1e9);
    console.log(`      seed ${seed} (THINVOL_SEED=${seed} replays it)`);
    const rnd = mulberry32(seed);
    const t = new Harness();
    const blocks = 4096;
    const fd = await t.open('v', blocks * BLOCK);
    const want = new Array<boolean>(blocks).fill(false);
    for (let i = 0; i < 200; i++) {
      const b = Math.floor(rnd() * blocks);
      const n = 1 + Math.floor(rnd() * 8);
      const e = Math.min(blocks, b + n);
      if (rnd() < 0.7) {
        await t.write(fd, Buffer.alloc((e - b) * BLOCK, 5), b * BLOCK);
        want.fill(true, b, e);
      } else {
        expect((await t.call('fallocate', '/v', fd, PUNCH_HOLE | KEEP_SIZE, b * BLOCK, (e - b) * BLOCK))[0]).to.equal(0);
        want.fill(false, b, e);
      }
      if (rnd() < 0.1) await t.fuse.ioOf(t.mp.pool.volume('v').id)!.commit();
    }
    // Walk the file as `qemu-img map` would and rebuild the mapped set.
    const got = new Array<boolean>(blocks).fill(false);
    let pos = 0;
    for (;;) {
      const [de, data] = await t.call<number>('lseek', '/v', fd, pos, SEEK_DATA);
      if (de === -E.ENXIO) break;
      expect(de, `seed ${seed}`).to.equal(0);
      const [, hole] = await t.call<number>('lseek', '/v', fd, data, SEEK_HOLE);
      expect(hole, `seed ${seed}`).to.be.greaterThan(data);
      got.fill(true, data / BLOCK, hole / BLOCK);
      if (hole >= blocks * BLOCK) break;
      pos = hole;
    }
    expect(got, `seed ${seed}`).to.deep.equal(want);
    await t.call('release', '/v', fd);
    expect(checkPool(t.mp.pool).clean, `seed ${seed}`).to.equal(true);
  });
});
