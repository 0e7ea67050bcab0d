import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { parseGroupDesc } from '../../src/reclaim/ext4/group-desc';
import { descriptorLocation } from '../../src/reclaim/ext4/group-geometry';
import { planExt4 } from '../../src/reclaim/ext4/plan-ext4';
import { Ext4Superblock, parseSuperblock } from '../../src/reclaim/ext4/superblock';
import { PlanResult } from '../../src/reclaim/planner';
import {
  BlockRange,
  TestVolume,
  Workdir,
  blocksNotIn,
  byteRangesToBlocks,
  dumpe2fsFree,
  dumpe2fsGroups,
  fileBlocks,
  loadImage,
  mergeBlockRanges,
} from '../support/ext4-images';

type OkPlan = Extract<PlanResult, { ok: true }>;

const FILES = 6;
const FILE_MIB = 8;
const SKIP_NOTE = /nothing released from (it|them)/;

/** An unmounted image filled by mkfs -d with FILES random files (no loop device involved). */
async function populated(w: Workdir, name: string, sizeMiB: number, mkfs: string[]): Promise<string> {
  const src = w.path(`${name}.src`);
  mkdirSync(src, { recursive: true });
  for (let i = 0; i < FILES; i++) writeFileSync(`${src}/f${i}`, randomBytes(FILE_MIB << 20));
  return w.mkfs(name, sizeMiB, [...mkfs, '-d', src]);
}

async function planOk(image: Buffer): Promise<OkPlan> {
  const r = await planExt4(new TestVolume(image));
  if (!r.ok) throw new Error(`planner refused: ${r.reason}`);
  return r;
}

async function allFileBlocks(img: string): Promise<BlockRange[]> {
  const runs: BlockRange[] = [];
  for (let i = 0; i < FILES; i++) for (const b of await fileBlocks(img, `/f${i}`)) runs.push({ start: b, count: 1 });
  return mergeBlockRanges(runs);
}

function intersect(a: BlockRange[], b: BlockRange[]): BlockRange[] {
  return blocksNotIn(a, blocksNotIn(a, b));
}

function superblockOf(image: Buffer): Ext4Superblock {
  const sb = parseSuperblock(image.subarray(1024, 2048));
  if (!sb.ok) throw new Error(sb.reason);
  return sb.value;
}

function descBytes(image: Buffer, sb: Ext4Superblock, g: number): Buffer {
  const loc = descriptorLocation(sb, g);
  const at = loc.block * sb.blockSize + loc.offset;
  return image.subarray(at, at + sb.descSize);
}

describe('reclaim/ext4 group descriptor free count', function () {
  this.timeout(60000);
  const w = new Workdir();
  after(() => w.cleanup());

  for (const mkfs of [['-O', '^metadata_csum'], ['-O', '^64bit,^metadata_csum'], []]) {
    it(`matches dumpe2fs for every group (mkfs ${mkfs.join(' ') || 'defaults'})`, async () => {
      const img = await populated(w, 'gd.img', 300, ['-b', '1024', ...mkfs]);
      const image = await loadImage(img);
      const sb = superblockOf(image);
      const groups = await dumpe2fsGroups(img);
      expect(groups).to.have.length(sb.groupCount);
      for (const g of groups) {
        const d = parseGroupDesc(sb, g.group, descBytes(image, sb, g.group));
        if (!d.ok) throw new Error(d.reason);
        expect(d.value.freeBlocksCount, `group ${g.group}`).to.equal(g.freeBlocks);
        expect(d.value.freeBlocksCountBits).to.equal(sb.descSize >= 64 ? 32 : 16);
      }
    });
  }

  it('takes bg_free_blocks_count_hi from 64-byte descriptors only', async () => {
    const img = await populated(w, 'gd.img', 64, ['-O', '^metadata_csum']);
    const image = await loadImage(img);
    const sb = superblockOf(image);
    expect(sb.descSize).to.equal(64);
    const raw = Buffer.from(descBytes(image, sb, 0));
    raw.writeUInt16LE(0x1234, 0x0c);
    raw.writeUInt16LE(0x0002, 0x2c);
    const wide = parseGroupDesc(sb, 0, raw);
    expect(wide.ok && wide.value.freeBlocksCount).to.equal(0x21234);
    const narrow = parseGroupDesc({ ...sb, descSize: 32, is64: false }, 0, raw.subarray(0, 32));
    expect(narrow.ok && narrow.value.freeBlocksCount).to.equal(0x1234);
  });
});

describe('reclaim/ext4 planner: block bitmaps checked against their descriptors\' free counts', function () {
  this.timeout(120000);
  const w = new Workdir();
  after(() => w.cleanup());

  it('a zeroed block bitmap without metadata_csum: its group releases nothing, and a note says why', async () => {
    const img = await populated(w, 'nocsum.img', 100, ['-b', '4096', '-g', '8192', '-J', 'size=4', '-O', '^metadata_csum']);
    const groups = await dumpe2fsGroups(img);
    const data = await allFileBlocks(img);
    // The group holding the most file data: the one whose loss the tester saw.
    const held = groups.map((g) => intersect(data, [{ start: g.first, count: g.last - g.first + 1 }]).reduce((n, r) => n + r.count, 0));
    const target = groups[held.indexOf(Math.max(...held))];
    if (target === undefined) throw new Error('no groups');
    expect(Math.max(...held), 'file blocks in the target group').to.be.at.least(4096);

    const healthy = await planOk(await loadImage(img));
    const image = await loadImage(img);
    image.fill(0, target.blockBitmap * 4096, (target.blockBitmap + 1) * 4096);
    const r = await planOk(image);

    const got = byteRangesToBlocks(r.free, r.blockSize);
    const groupRange = [{ start: target.first, count: target.last - target.first + 1 }];
    expect(intersect(got, groupRange), `free blocks in group ${target.group}`).to.deep.equal([]);
    expect(intersect(got, data), 'file data reported free').to.deep.equal([]);
    const size = target.last - target.first + 1;
    expect(r.notes).to.include(`group ${target.group}: bitmap shows ${size} free blocks, its descriptor says ${target.freeBlocks}: nothing released from it`);
    expect(r.notes.filter((n) => SKIP_NOTE.test(n)), 'groups skipped').to.have.length(1);
    // Every other group still gives back what it held free.
    expect(got).to.deep.equal(blocksNotIn(byteRangesToBlocks(healthy.free, healthy.blockSize), groupRange));
  });

  it('many disagreeing groups: sixteen named, the rest counted, none released', async () => {
    const img = await populated(w, 'zeroed.img', 300, ['-b', '1024', '-g', '2048', '-O', '^metadata_csum']);
    const groups = await dumpe2fsGroups(img);
    const image = await loadImage(img);
    for (const g of groups) image.fill(0, g.blockBitmap * 1024, (g.blockBitmap + 1) * 1024);
    const r = await planOk(image);
    const got = byteRangesToBlocks(r.free, r.blockSize);
    const disagreeing = groups.filter((g) => g.freeBlocks !== g.last - g.first + 1);
    expect(disagreeing.length, 'groups not wholly free').to.be.greaterThan(16);
    for (const g of disagreeing) expect(intersect(got, [{ start: g.first, count: g.last - g.first + 1 }]), `group ${g.group}`).to.deep.equal([]);
    expect(intersect(got, await allFileBlocks(img)), 'file data reported free').to.deep.equal([]);
    expect(r.notes.filter((n) => /^group \d+: bitmap shows/.test(n))).to.have.length(16);
    expect(r.notes).to.include(`${disagreeing.length - 16} more group(s) whose bitmap disagrees with its descriptor's free count: nothing released from them`);
  });

  // Sizes are not whole groups, so the last group is short; uninit: BLOCK_UNINIT groups whose
  // bitmaps the planner synthesises must agree with the counts mke2fs recorded.
  const healthy: { name: string; sizeMiB: number; mkfs: string[]; uninit: boolean }[] = [
    { name: '^metadata_csum', sizeMiB: 100, mkfs: ['-b', '4096', '-g', '8192', '-J', 'size=4', '-O', '^metadata_csum'], uninit: false },
    { name: 'defaults', sizeMiB: 300, mkfs: ['-b', '4096', '-g', '8192', '-J', 'size=4'], uninit: true },
    { name: '1 KiB blocks, ^metadata_csum,uninit_bg', sizeMiB: 300, mkfs: ['-b', '1024', '-O', '^64bit,^metadata_csum,uninit_bg'], uninit: true },
    { name: '1 KiB blocks, meta_bg, ^flex_bg', sizeMiB: 300, mkfs: ['-b', '1024', '-O', 'meta_bg,^resize_inode,^flex_bg'], uninit: true },
  ];
  healthy.forEach((h, i) => {
    it(`a healthy filesystem (${h.name}): no group skipped, everything free is reported`, async () => {
      const img = await populated(w, `healthy${i}.img`, h.sizeMiB, h.mkfs);
      const r = await planOk(await loadImage(img));
      expect(r.notes.filter((n) => SKIP_NOTE.test(n))).to.deep.equal([]);
      expect(byteRangesToBlocks(r.free, r.blockSize)).to.deep.equal(await dumpe2fsFree(img));
      const uninit = Number(/(\d+) synthesised for BLOCK_UNINIT/.exec(r.notes.join('\n'))?.[1] ?? 0);
      if (h.uninit) expect(uninit, 'BLOCK_UNINIT groups').to.be.greaterThan(0);
    });
  });
});
