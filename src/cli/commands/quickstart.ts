import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, statfsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Argv } from 'yargs';
import { findMount } from '../../daemon/mountpoint';
import { Pool } from '../../pool/pool';
import { formatSize, parseSize } from '../../util/size';
import type { GlobalArgs } from '../context';

export function quickstartCommand(y: Argv<GlobalArgs>): Argv<GlobalArgs> {
  return y.command('quickstart', 'make a default pool (if none), a demo volume, mount it, and print what to do next', (c) => c
    .option('mountpoint', { type: 'string', default: '/mnt/thinvol', describe: 'where to mount the pool' })
    .option('backend-size', { type: 'string', describe: 'size of the sparse backend file (default: 20G, or half the free disk if less)' })
    .option('volume-size', { type: 'string', default: '10G' }),
  async (a) => {
    const dir = resolve(a.pool);
    const mnt = resolve(a.mountpoint);
    if (!existsSync(Pool.metaFile(dir))) {
      mkdirSync(dir, { recursive: true });
      const st = statfsSync(dir);
      const half = Math.floor((st.bavail * st.bsize) / 2 / 2 ** 20) * 2 ** 20;
      const size = a['backend-size'] ? parseSize(a['backend-size']) : Math.min(20 * 2 ** 30, half);
      const backend = join(dir, 'backend-1.img');
      await (await Pool.create(dir, [{ path: backend, sizeBytes: size }])).close();
      console.log(`created pool ${dir} with a sparse ${formatSize(size)} backend file ${backend}`);
    }
    const pool = Pool.open(dir);
    try {
      if (!pool.findVolume('demo')) {
        pool.createVolume('demo', parseSize(a['volume-size']));
        console.log(`created volume demo (${a['volume-size']}, thin: nothing allocated yet)`);
      }
    } finally {
      await pool.close();
    }
    const m = await findMount(mnt);
    if (!m || m.fstype !== 'fuse.thinvol') {
      mkdirSync(mnt, { recursive: true });
      const r = spawnSync(process.execPath, [process.argv[1] ?? '', '--pool', dir, 'mount', mnt], { stdio: 'inherit' });
      if (r.status !== 0) throw new Error(`mount of ${dir} at ${mnt} failed`);
    } else {
      console.log(`pool already mounted at ${mnt}`);
    }
    console.log([
      '',
      `The volume is the file ${mnt}/demo. Try (copy these lines into a root shell):`,
      '',
      `  LOOP=$(losetup --find --show ${mnt}/demo)`,
      '  mkfs.ext4 -q $LOOP',
      '  mkdir -p /mnt/demo && mount $LOOP /mnt/demo',
      '  dd if=/dev/urandom of=/mnt/demo/file bs=1M count=100 && sync',
      `  ./bin/thinvol --pool ${dir} df`,
      '',
      'and to take it all down again:',
      '',
      `  umount /mnt/demo && losetup -d $LOOP && ./bin/thinvol --pool ${dir} umount ${mnt}`,
      '',
    ].join('\n'));
  });
}
