import { expect } from 'chai';
import { join } from 'node:path';
import { dropCaches, must, run, Sandbox, sleep } from '../support/sandbox';

interface Df { allocatedBytes: number; reclaimedBytes: number }

interface Case {
  title: string;
  mkfs: string[];
  mountOpts?: string;
  mib: number;
}

const cases: Case[] = [
  { title: 'ext4 defaults, 1 GiB deleted', mkfs: ['mkfs.ext4', '-q'], mib: 1024 },
  { title: 'ext4 1 KiB blocks', mkfs: ['mkfs.ext4', '-q', '-b', '1024'], mib: 256 },
  { title: 'ext4 -O ^64bit,^metadata_csum', mkfs: ['mkfs.ext4', '-q', '-O', '^64bit,^metadata_csum'], mib: 256 },
  { title: 'ext4 -O fast_commit', mkfs: ['mkfs.ext4', '-q', '-O', 'fast_commit'], mib: 256 },
  { title: 'ext4 data=journal', mkfs: ['mkfs.ext4', '-q'], mountOpts: 'data=journal', mib: 128 },
  { title: 'ext4 data=writeback', mkfs: ['mkfs.ext4', '-q'], mountOpts: 'data=writeback', mib: 256 },
  { title: 'ext4 with a 4 MiB journal that wraps many times', mkfs: ['mkfs.ext4', '-q', '-J', 'size=4'], mib: 256 },
  { title: 'XFS defaults, 1 GiB deleted', mkfs: ['mkfs.xfs', '-q', '-f'], mib: 1024 },
  { title: 'XFS with AGs of a non-power-of-two size', mkfs: ['mkfs.xfs', '-q', '-f', '-d', 'agsize=600m'], mib: 512 },
  { title: 'XFS with a small log that wraps', mkfs: ['env', 'TEST_DEV=/dev/null', 'TEST_DIR=/tmp', 'QA_CHECK_FS=1', 'mkfs.xfs', '-q', '-f', '-l', 'size=2000b'], mib: 512 },
];

/** One case: a guest file system on a loop device, files deleted inside it, the space back within 30 s. */
async function reclaimCase(sb: Sandbox, c: Case, name: string): Promise<void> {
  await sb.cliOk('volume', 'create', name, '--size', '4G');
  const dev = await sb.losetup(join(sb.mnt, name));
  await must(c.mkfs[0]!, [...c.mkfs.slice(1), dev]);
  const at = join(sb.dir, `fs-${name}`);
  await sb.mountFs(dev, at, c.mountOpts ? ['-o', c.mountOpts] : []);
  await must('dd', ['if=/dev/urandom', `of=${join(at, 'keep')}`, 'bs=1M', 'count=16', 'status=none']);
  const files = Math.max(8, c.mib / 16);
  for (let i = 0; i < files; i++) await must('dd', ['if=/dev/urandom', `of=${join(at, `del${i}`)}`, 'bs=1M', `count=${c.mib / files}`, 'status=none']);
  await must('sync', []);
  const keepSum = await must('md5sum', [join(at, 'keep')]);
  const before = (await sb.json<{ allocatedBytes: number }>('volume', 'info', name)).allocatedBytes;
  for (let i = 0; i < files; i++) await must('rm', [join(at, `del${i}`)]);
  await must('sync', []);
  const deleted = c.mib * 2 ** 20;
  let now = before;
  // A live filesystem keeps committing; reclaim waits for two commits after a block's last
  // write (release rule R2), so keep a little activity going as any real guest would.
  for (let t = 0; t < 30 && before - now < 0.9 * deleted; t++) {
    await must('sh', ['-c', `date > ${join(at, 'heartbeat')} && sync`]);
    await sleep(1000);
    now = (await sb.json<{ allocatedBytes: number }>('volume', 'info', name)).allocatedBytes;
  }
  console.log(`      ${c.title}: allocated ${(before / 2 ** 20).toFixed(1)} MiB -> ${(now / 2 ** 20).toFixed(1)} MiB after deleting ${c.mib} MiB (${((100 * (before - now)) / deleted).toFixed(1)}%)`);
  expect(before - now).to.be.at.least(0.9 * deleted);
  expect(await must('md5sum', [join(at, 'keep')])).to.equal(keepSum);
  await sb.umountFs(at);
  const fsck = c.mkfs.includes('mkfs.xfs') ? await run('xfs_repair', ['-n', dev]) : await run('e2fsck', ['-fn', dev]);
  expect(fsck.code, fsck.stdout + fsck.stderr).to.equal(0);
  await sb.detach(dev);
  expect((await sb.json<Df>('df')).reclaimedBytes).to.be.greaterThan(0);
  expect((await sb.cli('check')).code).to.equal(0);
  await sb.cliOk('volume', 'delete', name);
}

describe('reclaim: capacity comes back after rm inside the guest filesystem, no discard, no fstrim', function () {
  const sb = new Sandbox();
  before(async () => {
    await sb.createPool('b1:10G');
    await sb.mount();
  });
  after(() => sb.cleanup());

  cases.forEach((c, n) => {
    it(c.title, () => reclaimCase(sb, c, `r${n}`));
  });

  it('a volume without ext4 or XFS: reclaim says so and releases nothing', async () => {
    await sb.cliOk('volume', 'create', 'raw', '--size', '64M');
    await must('dd', ['if=/dev/urandom', `of=${join(sb.mnt, 'raw')}`, 'bs=1M', 'count=8', 'conv=notrunc,fsync', 'status=none']);
    const r = await sb.cli('reclaim', 'raw');
    expect(r.code).to.equal(0);
    expect(r.stdout).to.match(/nothing released: no ext4 or XFS filesystem/);
    expect((await sb.json<{ allocatedBytes: number }>('volume', 'info', 'raw')).allocatedBytes).to.equal(8 * 2 ** 20);
  });

  it('thinvol reclaim on a cold volume releases what the unmounted filesystem holds free', async () => {
    await sb.cliOk('volume', 'create', 'cold', '--size', '1G');
    const dev = await sb.losetup(join(sb.mnt, 'cold'));
    await must('mkfs.ext4', ['-q', dev]);
    await must('dd', ['if=/dev/urandom', `of=${dev}`, 'bs=1M', 'count=64', 'seek=850', 'conv=notrunc,fsync', 'status=none']);
    await sb.detach(dev);
    const dry = await sb.json<{ ok: boolean; candidateBytes: number; releasedBytes: number }>('reclaim', 'cold', '--dry-run');
    expect(dry.ok).to.equal(true);
    expect(dry.candidateBytes).to.be.at.least(60 * 2 ** 20);
    expect(dry.releasedBytes).to.equal(0);
    const rep = await sb.json<{ releasedBytes: number }>('reclaim', 'cold');
    expect(rep.releasedBytes).to.be.at.least(60 * 2 ** 20);
    const dev2 = await sb.losetup(join(sb.mnt, 'cold'));
    const fsck = await run('e2fsck', ['-fn', dev2]);
    expect(fsck.code, fsck.stdout).to.equal(0);
    await sb.detach(dev2);
  });

  // data=writeback is where an early release would show: a block freed in one transaction may be
  // reused, and its new data written, before that transaction commits (fs-journals.md 3.4).
  for (const [fs, label, mountOpts] of [['ext4', 'ext4', []], ['ext4', 'ext4 data=writeback', ['-o', 'data=writeback']], ['xfs', 'xfs', []]] as const) {
    it(`stress on ${label}: create, overwrite and delete files with known checksums while reclaim runs; nothing lost`, async () => {
      const name = `stress-${label.replace(/[ =]/g, '-')}`;
      await sb.cliOk('volume', 'create', name, '--size', '2G');
      const dev = await sb.losetup(join(sb.mnt, name));
      await must(`mkfs.${fs}`, fs === 'xfs' ? ['-q', '-f', dev] : ['-q', dev]);
      const at = join(sb.dir, `fs-${name}`);
      await sb.mountFs(dev, at, [...mountOpts]);
      const seconds = Number(process.env.THINVOL_STRESS_SECONDS ?? 60);
      // Each round writes random files, overwrites some, deletes some; the manifest holds the truth.
      // Files older than 64 rounds go too, so the guest keeps reusing its space and never fills.
      const script = `
        cd ${at}; mkdir old; for k in 1 2 3 4 5 6 7 8; do dd if=/dev/urandom of=old/$k bs=1M count=16 status=none; done; sync
        end=$(( $(date +%s) + ${seconds} )); i=0
        while [ $(date +%s) -lt $end ]; do
          i=$((i+1))
          dd if=/dev/urandom of=f$i bs=64k count=$(( (RANDOM % 64) + 1 )) status=none
          [ $((i % 3)) -eq 0 ] && [ -f f$((i-2)) ] && dd if=/dev/urandom of=f$((i-2)) bs=4k count=$(( (RANDOM % 300) + 1 )) conv=notrunc status=none
          [ $((i % 2)) -eq 0 ] && rm -f f$((i-1))
          rm -f f$((i-64))
          [ $((i % 10)) -eq 0 ] && sync
          [ $i -eq 20 ] && rm -r old
        done
        sync; md5sum f* > ../manifest-${name}`;
      await must('bash', ['-c', script]);
      const reclaimed = async (): Promise<number> => (await sb.json<{ volumes: { name: string; reclaimedBytes: number }[] }>('df')).volumes.find((v) => v.name === name)?.reclaimedBytes ?? 0;
      const whileRunning = await reclaimed();
      // Once the writer stops, reclaim must catch up: nothing the guest holds free stays mapped
      // beyond the block the heartbeat itself keeps rewriting.
      const leftMapped = async (): Promise<number> => (await sb.json<{ candidateBytes: number }>('reclaim', name, '--dry-run')).candidateBytes;
      let left = await leftMapped();
      for (let t = 0; t < 30 && left > 2 ** 20; t++) {
        await must('sh', ['-c', `date > ${join(at, 'heartbeat')} && sync`]);
        await sleep(1000);
        left = await leftMapped();
      }
      const released = await reclaimed();
      console.log(`      ${label} stress: ${(whileRunning / 2 ** 20).toFixed(1)} MiB reclaimed while running, ${(released / 2 ** 20).toFixed(1)} MiB by the end, ${(left / 2 ** 20).toFixed(2)} MiB free in the guest still mapped`);
      await sb.umountFs(at);
      await dropCaches();
      await sb.mountFs(dev, at, [...mountOpts]);
      const verify = await run('sh', ['-c', `cd ${at} && md5sum -c --quiet ../manifest-${name}`]);
      expect(verify.code, verify.stdout + verify.stderr).to.equal(0);
      await sb.umountFs(at);
      const fsck = fs === 'xfs' ? await run('xfs_repair', ['-n', dev]) : await run('e2fsck', ['-fn', dev]);
      expect(fsck.code, fsck.stdout + fsck.stderr).to.equal(0);
      await sb.detach(dev);
      expect(released).to.be.greaterThan(0);
      expect(left).to.be.at.most(2 ** 20);
      expect((await sb.cli('check')).code).to.equal(0);
    });
  }
});

describe('reclaim through the libfuse2 binding (fuse-native)', function () {
  const sb = new Sandbox({ fuse: 'libfuse2' });
  before(async () => {
    await sb.createPool('b1:6G');
    await sb.mount();
  });
  after(() => sb.cleanup());

  it(cases[0]!.title, () => reclaimCase(sb, cases[0]!, 'r0'));
});
