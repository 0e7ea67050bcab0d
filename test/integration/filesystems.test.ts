import { expect } from 'chai';
import { join } from 'node:path';
import { dropCaches, must, needs, run, Sandbox } from '../support/sandbox';

async function fillAndHash(dir: string, files: number, mib: number): Promise<string> {
  for (let i = 0; i < files; i++) await must('dd', ['if=/dev/urandom', `of=${join(dir, `f${i}`)}`, 'bs=1M', `count=${mib}`, 'status=none']);
  await must('sync', []);
  return must('sh', ['-c', `cd ${dir} && md5sum f* | sort`]);
}

describe('real filesystems and tools on a volume', function () {
  const sb = new Sandbox();
  before(async () => {
    await sb.createPool('b1:6G');
    await sb.mount();
  });
  after(() => sb.cleanup());

  for (const fs of ['ext4', 'xfs'] as const) {
    it(`mkfs.${fs} on a loop device, files survive a remount with matching md5, fsck clean`, async function () {
      await needs(this, `mkfs.${fs}`, fs === 'xfs' ? 'xfs_repair' : 'e2fsck');
      await sb.cliOk('volume', 'create', fs, '--size', '2G');
      const dev = await sb.losetup(join(sb.mnt, fs));
      await must(`mkfs.${fs}`, fs === 'xfs' ? ['-q', '-f', dev] : ['-q', dev]);
      const at = join(sb.dir, `fs-${fs}`);
      await sb.mountFs(dev, at);
      const sums = await fillAndHash(at, 12, 8);
      await sb.umountFs(at);
      await dropCaches();
      await sb.mountFs(dev, at);
      expect(await must('sh', ['-c', `cd ${at} && md5sum f* | sort`])).to.equal(sums);
      await sb.umountFs(at);
      const fsck = fs === 'xfs' ? await run('xfs_repair', ['-n', dev]) : await run('e2fsck', ['-fn', dev]);
      expect(fsck.code, fsck.stdout + fsck.stderr).to.equal(0);
      await sb.detach(dev);
      expect((await sb.cli('check')).code).to.equal(0);
    });
  }

  it('qemu-img convert of a qcow2 into a volume file, then qemu-img compare', async function () {
    await needs(this, 'qemu-img');
    const src = join(sb.dir, 'src.qcow2');
    const raw = join(sb.dir, 'src.raw');
    await must('qemu-img', ['create', '-q', '-f', 'raw', raw, '1G']);
    for (const off of [0, 100, 333, 900]) await must('dd', ['if=/dev/urandom', `of=${raw}`, 'bs=1M', 'count=7', `seek=${off}`, 'conv=notrunc', 'status=none']);
    await must('qemu-img', ['convert', '-q', '-O', 'qcow2', raw, src]);
    const dst = join(sb.mnt, 'converted');
    await must('qemu-img', ['convert', '-q', '-O', 'raw', src, dst]);
    const cmp = await run('qemu-img', ['compare', '-q', src, dst]);
    expect(cmp.code, cmp.stderr).to.equal(0);
    const info = await sb.json<{ sizeBytes: number; allocatedBytes: number }>('volume', 'info', 'converted');
    expect(info.sizeBytes).to.equal(2 ** 30);
    expect(info.allocatedBytes).to.equal(28 * 2 ** 20);
  });
});
