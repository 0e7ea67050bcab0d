import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { PlanResult } from '../../src/reclaim/planner';
import { planXfs } from '../../src/reclaim/xfs/plan-xfs';
import {
  FileVolume, MemoryVolume, SMALL_LOG_ENV, XfsWorkdir, canMakeXfs, canMountXfs, replayedTruth, sh, totalBytes,
  uncoveredBytes, xfsDbFree, xfsGeometry,
} from '../support/xfs-images';

async function planFile(path: string): Promise<{ result: PlanResult; reads: number }> {
  const volume = new FileVolume(path);
  try {
    return { result: await planXfs(volume), reads: volume.reads };
  } finally {
    volume.close();
  }
}

function okResult(result: PlanResult): Extract<PlanResult, { ok: true }> {
  if (!result.ok) expect.fail(`planner refused: ${result.reason}`);
  return result;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Runs `act` on the mounted image, lets XFS finish freeing, then copies the image while still mounted. */
async function snapshotWhileMounted(work: XfsWorkdir, img: string, name: string, act: (mnt: string) => Promise<void>): Promise<string> {
  return work.mounted(img, async (mnt) => {
    await act(mnt);
    await sh('sync', []);
    await sleep(3000);
    await sh('sync', []);
    return work.copy(img, name);
  });
}

async function homeFreeBlocks(img: string): Promise<number> {
  const out = await sh('xfs_db', ['-r', '-c', 'freesp -s', img]);
  return Number(/total free blocks (\d+)/.exec(out)?.[1]);
}

describe('planXfs() on volumes without XFS', function () {
  it('planXfs() refuses a volume of zeros with fs none', async function () {
    const r = await planXfs(new MemoryVolume(64 << 20, () => undefined));
    expect(r).to.include({ ok: false, fs: 'none' });
  });

  it('planXfs() refuses random bytes with fs none', async function () {
    const noise = randomBytes(1 << 20);
    const r = await planXfs(new MemoryVolume(512 << 20, (offset, out) => {
      for (let i = 0; i < out.length; i++) out[i] = noise[(offset + i) % noise.length] as number;
    }));
    expect(r).to.include({ ok: false, fs: 'none' });
  });

  it('planXfs() refuses an ext4 image with fs none', async function () {
    const work = new XfsWorkdir();
    try {
      const img = work.path('e4.img');
      await sh('truncate', ['-s', '64M', img]);
      await sh('mkfs.ext4', ['-q', '-F', img]);
      const { result } = await planFile(img);
      expect(result).to.include({ ok: false, fs: 'none' });
    } finally {
      await work.cleanup();
    }
  });
});

describe('planXfs() on real XFS images', function () {
  this.timeout(120000);
  let work: XfsWorkdir;

  before(function () {
    if (!canMakeXfs) this.skip();
  });
  beforeEach(function () {
    work = new XfsWorkdir();
  });
  afterEach(async function () {
    await work.cleanup();
  });

  it('planXfs() refuses a v4 filesystem with a clear reason', async function () {
    const img = await work.mkfs('v4.img', 320, ['-m', 'crc=0'], { ...SMALL_LOG_ENV });
    const { result } = await planFile(img);
    expect(result.ok).to.equal(false);
    if (!result.ok) {
      expect(result.fs).to.equal('xfs');
      expect(result.reason).to.match(/v4/);
    }
  });

  it('planXfs() matches xfs_db on a fresh 512 MiB filesystem with mkfs defaults', async function () {
    const img = await work.mkfs('fresh.img', 512);
    const { result, reads } = await planFile(img);
    const r = okResult(result);
    const truth = await xfsDbFree(img);
    expect(r.free).to.deep.equal(truth);
    expect(r.fs).to.equal('xfs');
    expect(r.examinedBlocks).to.equal((512 << 20) / r.blockSize);
    expect(reads).to.be.below(50);
  });

  it('planXfs() replays the log over stale home metadata on AGs of a non-power-of-two size', async function () {
    if (!canMountXfs) this.skip();
    const img = await work.mkfs('np2.img', 700, ['-d', 'agsize=150m']);
    const geo = await xfsGeometry(img);
    expect(geo.agBlocks & (geo.agBlocks - 1)).to.not.equal(0);
    const snap = await snapshotWhileMounted(work, img, 'np2.snap', async (mnt) => {
      for (let i = 0; i < 60; i++) writeFileSync(join(mnt, `f${i}`), randomBytes(((i % 7) + 1) * 192 * 1024));
      await sh('sync', []);
      for (let i = 0; i < 60; i += 2) unlinkSync(join(mnt, `f${i}`));
    });
    const { result, reads } = await planFile(snap);
    const r = okResult(result);
    const { free: truth } = await replayedTruth(work, snap);
    expect(uncoveredBytes(r.free, truth)).to.equal(0);
    expect(r.free).to.deep.equal(truth);
    expect(await homeFreeBlocks(snap), 'home metadata alone is stale').to.not.equal(totalBytes(truth) / geo.blockSize);
    expect(r.notes.join('\n')).to.match(/committed transactions/);
    expect(reads).to.be.below(100);
  });

  it('planXfs() follows a fragmented multi-level bnobt', async function () {
    if (!canMountXfs) this.skip();
    const img = await work.mkfs('frag.img', 512, ['-d', 'agcount=4']);
    const block = randomBytes(4096);
    const snap = await snapshotWhileMounted(work, img, 'frag.snap', async (mnt) => {
      for (let i = 0; i < 3000; i++) writeFileSync(join(mnt, `s${i}`), block);
      await sh('sync', []);
      for (let i = 0; i < 3000; i += 2) unlinkSync(join(mnt, `s${i}`));
    });
    const { result, reads } = await planFile(snap);
    const r = okResult(result);
    const { free: truth, bnoLevels } = await replayedTruth(work, snap);
    expect(uncoveredBytes(r.free, truth)).to.equal(0);
    expect(r.free).to.deep.equal(truth);
    expect(Math.max(...bnoLevels), 'bnobt height after replay').to.be.at.least(2);
    expect(r.free.length).to.be.above(1000);
    expect(reads).to.be.below(200);
  });

  it('planXfs() walks a small log that has wrapped', async function () {
    if (!canMountXfs) this.skip();
    const img = await work.mkfs('wrap.img', 320, ['-l', 'size=1400b'], SMALL_LOG_ENV);
    const snap = await snapshotWhileMounted(work, img, 'wrap.snap', async (mnt) => {
      const data = randomBytes(8192);
      // Enough rounds that the 1400-block log wraps whatever the host's writeback timing (24 did not always).
      for (let round = 0; round < 48; round++) {
        for (let i = 0; i < 400; i++) writeFileSync(join(mnt, `w${round}-${i}`), data);
        await sh('sync', []);
        for (let i = 0; i < 400; i += round % 2 === 0 ? 1 : 2) unlinkSync(join(mnt, `w${round}-${i}`));
      }
    });
    const { result } = await planFile(snap);
    const r = okResult(result);
    expect(Math.floor(r.commit.seq / 2 ** 32), 'log cycle').to.be.at.least(2);
    expect(r.commit.exact).to.equal(false);
    const { free: truth } = await replayedTruth(work, snap);
    expect(uncoveredBytes(r.free, truth)).to.equal(0);
    expect(r.free).to.deep.equal(truth);
  });
});
