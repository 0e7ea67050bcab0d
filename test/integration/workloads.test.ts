import { expect } from 'chai';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { fsx } from '../support/fsx';
import { dropCaches, must, needs, run, Sandbox, sleep } from '../support/sandbox';

/** Kernel log lines about I/O errors on a device, since `since` lines of dmesg. */
async function ioErrors(dev: string, since: number): Promise<string[]> {
  const lines = (await must('dmesg', [])).split('\n').slice(since);
  const name = dev.replace('/dev/', '');
  return lines.filter((l) => l.includes(name) && /error|fail|abort/i.test(l));
}

const dmesgLines = async (): Promise<number> => (await must('dmesg', [])).split('\n').length;

/** Admin commands on other volumes of the pool, in a loop until stopped; returns how many failed unexpectedly. */
async function adminLoop(sb: Sandbox, stop: { now: boolean }, tally: { runs: number; failures: string[] }): Promise<void> {
  for (let n = 0; !stop.now; n++) {
    const name = `c${n % 3}`;
    for (const args of [['volume', 'create', name, '--size', '256M'], ['volume', 'resize', name, '--size', `${64 + (n % 4) * 64}M`], ['df', '--json'], ['volume', 'delete', name], ['status', '--json']]) {
      const r = await sb.cli(...args);
      tally.runs++;
      if (r.code !== 0 && !/already exists|no volume/.test(r.stderr)) tally.failures.push(`thinvol ${args.join(' ')}: ${r.stderr.trim()}`);
    }
  }
}

describe('workloads beside admin commands (no process killed)', () => {
  const sb = new Sandbox();
  before(async () => {
    await sb.createPool('b1:4G');
    await sb.mount();
  });
  after(() => sb.cleanup());

  it('fio random writes with crc32c verification while CLI commands create, resize and delete other volumes', async function () {
    this.timeout(300_000);
    await needs(this, 'fio');
    await sb.cliOk('volume', 'create', 'fio', '--size', '1G');
    const stop = { now: false };
    const tally = { runs: 0, failures: [] as string[] };
    const admin = adminLoop(sb, stop, tally);
    // Run fio again (each run verifies) until enough admin commands ran alongside: how long one
    // run takes depends on the binding (libfuse3 keeps all 16 requests in flight).
    let r: Awaited<ReturnType<typeof run>>;
    let fioRuns = 0;
    do {
      r = await run('fio', ['--name=verify', `--filename=${join(sb.mnt, 'fio')}`, '--rw=randwrite', '--bsrange=4k-256k', '--ioengine=libaio', '--iodepth=16',
        '--direct=1', '--size=512M', '--loops=3', '--verify=crc32c', '--verify_fatal=1', '--do_verify=1', '--verify_state_save=0', '--randrepeat=0', '--output-format=terse']);
      fioRuns++;
    } while (r.code === 0 && tally.runs <= 40 && fioRuns < 6);
    stop.now = true;
    await admin;
    console.log(`      fio exit ${r.code} after ${fioRuns} run(s); ${tally.runs} admin commands alongside`);
    expect(r.code, r.stderr).to.equal(0);
    expect(tally.failures, tally.failures.join('\n')).to.deep.equal([]);
    expect(tally.runs).to.be.greaterThan(20);
    const check = await sb.cli('check');
    expect(check.code, check.stdout).to.equal(0);
  });

  it('fsx and O_DIRECT fio inside ext4 on a direct-I/O loop device, auto reclaim on, df between rounds: no I/O error, every byte as written', async function () {
    this.timeout(600_000);
    await needs(this, 'fio', 'mkfs.ext4', 'e2fsck', 'losetup');
    const seed = Number(process.env.THINVOL_SEED ?? Date.now() % 1e9);
    await sb.cliOk('volume', 'create', 'guest', '--size', '2G');
    const dev = await sb.losetup(join(sb.mnt, 'guest'), { directIo: true });
    const since = await dmesgLines();
    await must('mkfs.ext4', ['-q', dev]);
    const fsMnt = join(sb.dir, 'guest');
    await sb.mountFs(dev, fsMnt);
    let ops = 0;
    let reclaimed = 0;
    for (let round = 0; round < 4; round++) {
      const fio = run('fio', ['--name=inner', `--directory=${fsMnt}`, '--rw=randrw', '--bsrange=4k-64k', '--ioengine=libaio', '--iodepth=8', '--direct=1',
        '--size=128M', '--verify=crc32c', '--verify_fatal=1', '--do_verify=1', '--verify_state_save=0', '--randrepeat=0', '--output-format=terse']);
      const results = await Promise.all([0, 1, 2].map((i) => fsx({ path: join(fsMnt, `fsx${i}`), seed: seed + round * 10 + i, ops: 3000, maxBytes: 24 << 20 })));
      const f = await fio;
      expect(f.code, `round ${round} fio: ${f.stderr}`).to.equal(0);
      for (const r of results) {
        expect(r.failures, `seed ${seed}: ${r.failures.join('\n')}`).to.deep.equal([]);
        ops += r.ops;
      }
      await dropCaches();
      for (const [i, r] of results.entries()) {
        expect((await fs.readFile(join(fsMnt, `fsx${i}`))).equals(r.content), `seed ${seed} round ${round}: fsx${i} from the device`).to.equal(true);
      }
      for (const name of await fs.readdir(fsMnt)) if (name.startsWith('inner') || name.startsWith('fsx')) await fs.rm(join(fsMnt, name));
      await must('sync', []);
      const df = await sb.cli('df', '--json');
      expect(df.code, df.stderr).to.equal(0);
      reclaimed = (JSON.parse(df.stdout) as { reclaimedBytes: number }).reclaimedBytes;
      await sleep(3000);
    }
    console.log(`      seed ${seed}: ${ops} fsx operations in 4 rounds with O_DIRECT fio alongside; reclaimed so far ${(reclaimed / 2 ** 20).toFixed(1)} MiB`);
    expect(await ioErrors(dev, since)).to.deep.equal([]);
    await sb.umountFs(fsMnt);
    const fsck = await run('e2fsck', ['-fn', dev]);
    expect(fsck.code, fsck.stdout).to.equal(0);
    await sb.detach(dev);
    const check = await sb.cli('check');
    expect(check.code, check.stdout).to.equal(0);
  });
});
