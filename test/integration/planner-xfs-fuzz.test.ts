import { expect } from 'chai';
import { closeSync, openSync, readSync, statSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ByteRange, PlanResult } from '../../src/reclaim/planner';
import { planXfs } from '../../src/reclaim/xfs/plan-xfs';
import { MemoryVolume, SMALL_LOG_ENV, XfsWorkdir, agfField, canMountXfs, replayedTruth, sh, uncoveredBytes, xfsGeometry } from '../support/xfs-images';
import { mulberry32 } from '../support/prng';

const CHUNK = 1 << 20;
const CASE_LIMIT_MS = 2000;

/** The snapshot's touched 1 MiB chunks, read once, shared by every mutated copy. */
class ImageCache {
  readonly #chunks = new Map<number, Buffer>();
  constructor(readonly path: string, readonly sizeBytes: number) {}

  fill(offset: number, out: Buffer): void {
    let done = 0;
    while (done < out.length) {
      const index = Math.floor((offset + done) / CHUNK);
      let chunk = this.#chunks.get(index);
      if (!chunk) {
        chunk = Buffer.alloc(CHUNK);
        const fd = openSync(this.path, 'r');
        try {
          readSync(fd, chunk, 0, CHUNK, index * CHUNK);
        } finally {
          closeSync(fd);
        }
        this.#chunks.set(index, chunk);
      }
      const from = offset + done - index * CHUNK;
      const n = Math.min(out.length - done, CHUNK - from);
      chunk.copy(out, done, from, from + n);
      done += n;
    }
  }
}

/** A copy of the image with some bytes XORed. */
function mutatedVolume(image: ImageCache, flips: Map<number, number>, sizeBytes = image.sizeBytes): MemoryVolume {
  return new MemoryVolume(sizeBytes, (offset, out) => {
    image.fill(offset, out);
    for (const [at, x] of flips) if (at >= offset && at < offset + out.length) out[at - offset] = (out[at - offset] as number) ^ x;
  });
}

interface Target {
  name: string;
  /** Byte ranges of the image this category mutates. */
  ranges: ByteRange[];
  cases: number;
}

describe('planXfs() on damaged XFS images (fuzz)', function () {
  this.timeout(180000);
  let work: XfsWorkdir;
  let image: ImageCache;
  let truth: ByteRange[];
  const targets: Target[] = [];
  /** Byte ranges of the live log (tail to head). */
  let liveLog: ByteRange[] = [];

  before(async function () {
    if (!canMountXfs) this.skip();
    work = new XfsWorkdir();
    const img = await work.mkfs('fuzz.img', 320, ['-l', 'size=1400b'], SMALL_LOG_ENV);
    const snap = await work.mounted(img, async (mnt) => {
      const data = Buffer.alloc(8192, 0x5a);
      for (let round = 0; round < 16; round++) {
        for (let i = 0; i < 300; i++) writeFileSync(join(mnt, `f${round}-${i}`), data);
        await sh('sync', []);
        for (let i = 0; i < 300; i += 2) unlinkSync(join(mnt, `f${round}-${i}`));
      }
      writeFileSync(join(mnt, 'keep'), data);
      await sh('sync', []);
      await new Promise((r) => setTimeout(r, 3000));
      // The last record then holds only an inode update, so dropping it as a torn write changes no free space.
      utimesSync(join(mnt, 'keep'), new Date(), new Date());
      await sh('sync', []);
      return work.copy(img, 'fuzz.snap');
    });
    truth = (await replayedTruth(work, snap)).free;
    const geo = await xfsGeometry(snap);
    const sbOut = await sh('xfs_db', ['-r', '-c', 'sb 0', '-c', 'print sectsize logstart logblocks', snap]);
    const num = (name: string): number => Number(new RegExp(`${name} = (\\d+)`).exec(sbOut)?.[1]);
    const sect = num('sectsize');
    const converted = await sh('xfs_db', ['-r', '-c', `convert fsb ${num('logstart')} daddr`, snap]);
    const logDaddr = Number(/\((\d+)\)/.exec(converted)?.[1]);
    expect(logDaddr).to.be.above(0);
    const logStart = logDaddr * 512;

    image = new ImageCache(snap, statSync(snap).size);
    const base = await planXfs(mutatedVolume(image, new Map()));
    if (!base.ok) expect.fail(`baseline refused: ${base.reason}`);
    expect(base.free).to.deep.equal(truth);
    const m = /log tail BB (\d+), head BB (\d+)/.exec(base.notes.join('\n'));
    expect(m, 'baseline log is dirty').to.not.equal(null);
    const tail = Number(m?.[1]);
    const head = Number(m?.[2]);
    const logBBs = (num('logblocks') * geo.blockSize) / 512;
    const live: ByteRange[] = tail <= head
      ? [{ offset: logStart + tail * 512, len: (head - tail) * 512 }]
      : [{ offset: logStart + tail * 512, len: (logBBs - tail) * 512 }, { offset: logStart, len: head * 512 }];

    const agStart = (ag: number): number => ag * geo.agBlocks * geo.blockSize;
    const ags = [...Array(geo.agCount).keys()];
    const btreeBlocks: ByteRange[] = [];
    for (const ag of ags) {
      for (const field of ['bnoroot', 'cntroot']) {
        btreeBlocks.push({ offset: agStart(ag) + (await agfField(snap, ag, field)) * geo.blockSize, len: geo.blockSize });
      }
    }
    liveLog = live;
    targets.push(
      { name: 'superblock', ranges: [{ offset: 0, len: sect }], cases: 200 },
      { name: 'AGF', ranges: ags.map((ag) => ({ offset: agStart(ag) + sect, len: sect })), cases: 400 },
      { name: 'AGFL', ranges: ags.map((ag) => ({ offset: agStart(ag) + 3 * sect, len: sect })), cases: 200 },
      { name: 'bnobt/cntbt root blocks', ranges: btreeBlocks, cases: 500 },
      { name: 'live log records', ranges: live, cases: 900 },
      { name: 'AG metadata areas', ranges: ags.map((ag) => ({ offset: agStart(ag), len: CHUNK })), cases: 400 },
    );
  });

  after(async function () {
    if (work) await work.cleanup();
  });

  it('planXfs() never throws, never stalls, and never reports a used block free', async function () {
    const rnd = mulberry32(0x5eed);
    const summary: string[] = [];
    let caseNo = 0;
    for (const target of targets) {
      const total = target.ranges.reduce((a, r) => a + r.len, 0);
      let refusedCount = 0;
      for (let c = 0; c < target.cases; c++, caseNo++) {
        let pick = Math.floor(rnd() * total);
        let at = 0;
        for (const r of target.ranges) {
          if (pick < r.len) {
            at = r.offset + pick;
            break;
          }
          pick -= r.len;
        }
        const flips = new Map<number, number>();
        const n = 1 + Math.floor(rnd() * 3);
        for (let k = 0; k < n; k++) flips.set(at + (k === 0 ? 0 : Math.floor(rnd() * 64)), 1 + Math.floor(rnd() * 255));
        const started = Date.now();
        let result: PlanResult;
        try {
          result = await planXfs(mutatedVolume(image, flips));
        } catch (err: unknown) {
          expect.fail(`case ${caseNo} (${target.name}) threw: ${String(err)}`);
        }
        expect(Date.now() - started, `case ${caseNo} (${target.name}) runtime`).to.be.below(CASE_LIMIT_MS);
        if (result.ok) {
          expect(uncoveredBytes(result.free, truth), `case ${caseNo} (${target.name}) reports used bytes free`).to.equal(0);
        } else {
          refusedCount++;
          expect(result.reason).to.be.a('string').and.not.equal('');
        }
      }
      summary.push(`${target.name}: ${target.cases} cases, ${refusedCount} refused`);
    }
    console.log(`      ${summary.join('\n      ')}`);
    const refusedSb = /superblock: (\d+) cases, (\d+) refused/.exec(summary.join(';'));
    expect(Number(refusedSb?.[2]), 'every superblock flip is caught by its CRC').to.equal(Number(refusedSb?.[1]));
  });

  it('a cycle stamp inside the live log made to look like the head: refused, never a used block free', async function () {
    const stamps: number[] = [];
    for (const r of liveLog) for (let at = r.offset + 512; at < r.offset + r.len; at += 512 * 7) stamps.push(at);
    expect(stamps.length).to.be.above(8);
    let refused = 0;
    for (const at of stamps) {
      const word = Buffer.alloc(4);
      image.fill(at, word);
      const cycle = word.readUInt32BE(0);
      const want = Buffer.alloc(4);
      want.writeUInt32BE(cycle - 1, 0);
      const flips = new Map<number, number>();
      for (let i = 0; i < 4; i++) if ((word[i] as number) !== (want[i] as number)) flips.set(at + i, (word[i] as number) ^ (want[i] as number));
      const result = await planXfs(mutatedVolume(image, flips));
      if (result.ok) expect(uncoveredBytes(result.free, truth), `stamp at byte ${at} (cycle ${cycle} -> ${cycle - 1})`).to.equal(0);
      else refused++;
    }
    console.log(`      ${stamps.length} stamps rewritten, ${refused} refused`);
  });

  it('planXfs() refuses a volume shorter than its filesystem', async function () {
    const r = await planXfs(mutatedVolume(image, new Map(), image.sizeBytes / 2));
    expect(r).to.include({ ok: false, fs: 'xfs' });
  });
});
