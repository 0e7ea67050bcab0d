import { expect } from 'chai';
import { writeFileSync } from 'node:fs';
import { parseGroupDesc } from '../../src/reclaim/ext4/group-desc';
import { commitBlockOk, parseDescriptorTags, parseJbd2Header, parseRevokeRecords } from '../../src/reclaim/ext4/jbd2-blocks';
import { parseJbd2Superblock } from '../../src/reclaim/ext4/jbd2-superblock';
import { parseExtentNode } from '../../src/reclaim/ext4/extent-tree';
import { parseJournalInode } from '../../src/reclaim/ext4/journal-inode';
import { planExt4 } from '../../src/reclaim/ext4/plan-ext4';
import { parseSuperblock } from '../../src/reclaim/ext4/superblock';
import {
  BlockRange,
  TestVolume,
  Workdir,
  blocksNotIn,
  byteRangesToBlocks,
  dumpe2fsFree,
  loadImage,
  sh,
  sleep,
} from '../support/ext4-images';
import { mulberry32 } from '../support/prng';

const BS = 1024;
/** Slowest a single planner run on a 32 MiB image may take before it counts as a hang. */
const MAX_CASE_MS = 1000;

interface Region { name: string; offset: number; len: number }

interface Fixture {
  image: Buffer;
  regions: Region[];
  /** Free blocks after replaying the first k committed transactions, keyed by the tid of the last one. */
  truthByTid: Map<number, BlockRange[]>;
  journalStart: number;
  /** Byte offset of the journal inode. */
  journalInode: number;
}

/** A 32 MiB, 1 KiB-block fs with a 1 MiB journal, snapshotted live with three committed transactions. */
async function buildFixture(w: Workdir, mkfs: string[], mount: string): Promise<Fixture> {
  const img = await w.mkfs('f.img', 32, ['-b', '1024', '-J', 'size=1', ...mkfs]);
  const snap = w.path('snap.img');
  await w.mount(img, mount);
  try {
    const m = w.mnt;
    await sh('dd', ['if=/dev/urandom', `of=${m}/f1`, 'bs=64k', 'count=16', 'status=none']);
    await sh('mkdir', [`${m}/d`]);
    for (let i = 0; i < 30; i++) await sh('sh', ['-c', `echo ${i} > ${m}/d/${i}`]);
    await sh('sync', []);
    await sh('dd', ['if=/dev/urandom', `of=${m}/f2`, 'bs=64k', 'count=16', 'status=none']);
    await sh('rm', [`${m}/f1`]);
    await sleep(1200);
    await sh('rm', ['-r', `${m}/d`]);
    await sh('dd', ['if=/dev/urandom', `of=${m}/f3`, 'bs=64k', 'count=8', 'status=none']);
    await sleep(1200);
    await sh('rm', [`${m}/f2`]);
    await sleep(1500);
    await sh('cp', ['--sparse=always', img, snap]);
  } finally {
    await w.umount();
  }
  const image = await loadImage(snap);

  const logdump = await sh('debugfs', ['-R', 'logdump', snap]);
  const startM = /Journal starts at block (\d+), transaction (\d+)/.exec(logdump);
  if (startM === null) throw new Error(`unexpected logdump output: ${logdump}`);
  const logStart = Number(startM[1]);
  const firstTid = Number(startM[2]);
  const commits = [...logdump.matchAll(/Found expected sequence (\d+), type 2 \(commit block\) at block (\d+)/g)].map((x) => Number(x[2]));
  const jStart = Number(/(\d+)/.exec(await sh('debugfs', ['-R', 'bmap <8> 0', snap]))?.[1]);
  const jLast = Number(/(\d+)/.exec(await sh('debugfs', ['-R', 'bmap <8> 1023', snap]))?.[1]);
  if (jLast !== jStart + 1023) throw new Error('fixture journal is not one extent');
  const imap = /located at block (\d+), offset 0x([0-9a-f]+)/.exec(await sh('debugfs', ['-R', 'imap <8>', snap]));
  if (imap === null) throw new Error('debugfs imap <8> failed');

  const regions: Region[] = [
    { name: 'superblock', offset: 1024, len: 1024 },
    { name: 'gdt', offset: 2 * BS, len: BS },
    { name: 'journal inode', offset: Number(imap[1]) * BS + parseInt(imap[2] ?? '0', 16), len: 256 },
    { name: 'jbd2 superblock', offset: jStart * BS, len: BS },
  ];
  const dump = await sh('dumpe2fs', [snap]);
  for (const m of dump.matchAll(/Block bitmap at (\d+)/g)) regions.push({ name: 'block bitmap', offset: Number(m[1]) * BS, len: BS });
  const lastCommit = commits[commits.length - 1] ?? logStart;
  for (let b = logStart; b <= lastCommit + 1; b++) regions.push({ name: 'journal log', offset: (jStart + b) * BS, len: BS });

  // Truth for every committed prefix: cut the log after commit k, replay it with e2fsck, read the bitmaps.
  const truthByTid = new Map<number, BlockRange[]>();
  const cuts = [logStart, ...commits.map((c) => c + 1)];
  for (let k = 0; k < cuts.length; k++) {
    const cut = Buffer.from(image);
    cut.fill(0, (jStart + (cuts[k] as number)) * BS, (jStart + (cuts[k] as number) + 1) * BS);
    const p = w.path(`cut${k}.img`);
    writeFileSync(p, cut);
    await sh('e2fsck', ['-y', '-E', 'journal_only', p], [0, 1, 2]);
    truthByTid.set((firstTid + k - 1) >>> 0, await dumpe2fsFree(p));
  }
  return { image, regions, truthByTid, journalStart: jStart, journalInode: Number(imap[1]) * BS + parseInt(imap[2] ?? '0', 16) };
}

/** Every parser on the bytes they would see: none may throw, whatever the bytes are. */
function parseEverything(image: Buffer, jStart: number, jInode: number): void {
  const sbBuf = image.subarray(1024, 2048);
  const sb = parseSuperblock(sbBuf);
  if (sb.ok) {
    for (let g = 0; g < Math.min(sb.value.groupCount, 16); g++) {
      parseGroupDesc(sb.value, g, image.subarray(2 * BS + g * sb.value.descSize, 2 * BS + (g + 1) * sb.value.descSize));
    }
  }
  const jsb = parseJbd2Superblock(image.subarray(jStart * BS, (jStart + 1) * BS), BS, 1024);
  for (let b = 1; b < 80; b++) {
    const block = image.subarray((jStart + b) * BS, (jStart + b + 1) * BS);
    parseJbd2Header(block);
    if (jsb.ok) {
      parseDescriptorTags(jsb.value, block);
      parseRevokeRecords(jsb.value, block);
      commitBlockOk(jsb.value, block, 0);
    }
  }
  const raw = image.subarray(jInode, jInode + 256);
  const inode = parseJournalInode(raw);
  if (inode.ok) parseExtentNode(inode.value.iblock);
  parseExtentNode(raw.subarray(0x28, 0x28 + 60));
}

interface FuzzStats { cases: number; ok: number; refused: Map<string, number>; slowestMs: number }

async function fuzz(fx: Fixture, seed: number, cases: number, checkFreeSet: boolean): Promise<FuzzStats> {
  const rnd = mulberry32(seed);
  const stats: FuzzStats = { cases, ok: 0, refused: new Map(), slowestMs: 0 };
  const image = fx.image;
  const classes = [...new Set(fx.regions.map((r) => r.name))];
  for (let c = 0; c < cases; c++) {
    const cls = classes[c % classes.length];
    const inClass = fx.regions.filter((r) => r.name === cls);
    const region = inClass[Math.floor(rnd() * inClass.length)] as Region;
    const flips = 1 + Math.floor(rnd() * 4);
    const saved: { at: number; byte: number }[] = [];
    for (let i = 0; i < flips; i++) {
      const at = region.offset + Math.floor(rnd() * region.len);
      saved.push({ at, byte: image[at] as number });
      image[at] = rnd() < 0.7 ? (image[at] as number) ^ (1 << Math.floor(rnd() * 8)) : Math.floor(rnd() * 256);
    }
    const label = `seed ${seed} case ${c} (${region.name}, ${flips} byte(s))`;
    try {
      expect(() => parseEverything(image, fx.journalStart, fx.journalInode), label).not.to.throw();
      const t0 = Date.now();
      const r = await planExt4(new TestVolume(image));
      const ms = Date.now() - t0;
      stats.slowestMs = Math.max(stats.slowestMs, ms);
      expect(ms, `${label}: planner time`).to.be.below(MAX_CASE_MS);
      if (r.ok) {
        stats.ok++;
        if (checkFreeSet) {
          const truth = fx.truthByTid.get(r.commit.seq);
          expect(truth, `${label}: commit mark ${r.commit.seq} is not a committed tid`).to.not.equal(undefined);
          const wrong = blocksNotIn(byteRangesToBlocks(r.free, r.blockSize), truth ?? []);
          expect(wrong, `${label}: used blocks reported free`).to.deep.equal([]);
        }
      } else {
        const key = r.reason.replace(/0x[0-9a-f]+/g, '0x..').replace(/\d+/g, 'N').slice(0, 70);
        stats.refused.set(key, (stats.refused.get(key) ?? 0) + 1);
      }
    } finally {
      for (const s of saved.reverse()) image[s.at] = s.byte;
    }
  }
  return stats;
}

function summary(name: string, s: FuzzStats): string {
  const top = [...s.refused.entries()].sort((a, b) => b[1] - a[1]).slice(0, 4).map(([k, n]) => `${n}x "${k}"`);
  return `${name}: ${s.cases} cases, ${s.ok} ok:true, ${s.cases - s.ok} ok:false, slowest ${s.slowestMs} ms; top refusals: ${top.join('; ')}`;
}

describe('reclaim/ext4 planner fuzz', function () {
  this.timeout(180000);
  const w = new Workdir();
  after(() => w.cleanup());

  it('metadata_csum image: never crashes, never hangs, never reports a used block free', async () => {
    const fx = await buildFixture(w, [], 'commit=1');
    const base = await planExt4(new TestVolume(fx.image));
    expect(base.ok).to.equal(true);
    if (base.ok) expect(fx.truthByTid.get(base.commit.seq)).to.deep.equal(byteRangesToBlocks(base.free, base.blockSize));
    const stats = await fuzz(fx, 0x5eed1, 2500, true);
    console.log(`      ${summary('csum', stats)}`);
    expect(stats.ok, 'some mutations should leave the volume usable').to.be.greaterThan(0);
  });

  it('image without checksums: never crashes, never hangs', async () => {
    const fx = await buildFixture(w, ['-O', '^metadata_csum,^64bit'], 'commit=1');
    const stats = await fuzz(fx, 0x5eed2, 2000, false);
    console.log(`      ${summary('no-csum', stats)}`);
  });
});
