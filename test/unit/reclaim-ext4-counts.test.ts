import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { parseGroupDesc } from '../../src/reclaim/ext4/group-desc';
import { descriptorLocation } from '../../src/reclaim/ext4/group-geometry';
import { Ext4Superblock, parseSuperblock } from '../../src/reclaim/ext4/superblock';
import { Workdir, dumpe2fsGroups, loadImage } from './ext4-fixtures';

const FILES = 6;
const FILE_MIB = 8;

/** An unmounted image filled by mkfs -d with FILES random files (no loop device involved). */
async function populated(w: Workdir, name: string, sizeMiB: number, mkfs: string[]): Promise<string> {
  const src = w.path(`${name}.src`);
  mkdirSync(src, { recursive: true });
  for (let i = 0; i < FILES; i++) writeFileSync(`${src}/f${i}`, randomBytes(FILE_MIB << 20));
  return w.mkfs(name, sizeMiB, [...mkfs, '-d', src]);
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
