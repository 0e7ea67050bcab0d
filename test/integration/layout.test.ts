import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import type { ChangeRecord } from '../../src/store/records';
import { dropCaches, must, run, Sandbox, sleep, waitFor, type RunResult } from '../support/sandbox';

interface Backend { id: number; allocatedBytes: number; reservedBytes: number; capacityBytes: number }
interface Daemon { pid: number; health: string; epoch: number; volumes: string[] }
interface Status { daemons: Daemon[]; changes: ChangeRecord[] }
interface Extent { offset: number; length: number; backend: number }

const MiB = 2 ** 20;

/**
 * Creates, overwrites and deletes files with recorded checksums in `dir` until `stopFile`
 * exists; exits non-zero on the first I/O error.
 */
const WORKLOAD = `
set -eu
cd "$1"
: > sums
n=0
while [ ! -e "$2" ]; do
  n=$((n + 1))
  f=w$((n % 40))
  head -c $(( (n % 97 + 1) * 16384 )) /dev/urandom > "$f.tmp"
  sync "$f.tmp"
  mv "$f.tmp" "$f"
  if [ $((n % 7)) -eq 0 ]; then rm -f "w$(( (n + 13) % 40 ))"; fi
  for g in w*; do [ -e "$g" ] && md5sum "$g"; done > sums.new
  mv sums.new sums
done
echo "$n files written"
`;

async function backends(sb: Sandbox): Promise<Backend[]> {
  return sb.json<Backend[]>('backend', 'list');
}

async function writeFile(path: string, data: Buffer): Promise<void> {
  const fh = await fs.open(path, 'r+');
  try {
    await fh.write(data, 0, data.length, 0);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function sameBytes(path: string, data: Buffer): Promise<boolean> {
  await dropCaches();
  const fh = await fs.open(path, 'r');
  try {
    const got = Buffer.alloc(data.length);
    await fh.read(got, 0, data.length, 0);
    return got.equals(data);
  } finally {
    await fh.close();
  }
}

describe('layout changes across mount daemons', function () {
  describe('drain under two daemons with loop-mounted ext4 and live workloads', function () {
    const sb = new Sandbox();
    after(() => sb.cleanup());

    it('moves everything off the backend both use; no I/O error, files verify, e2fsck and check clean', async () => {
      await sb.createPool('b1:3G');
      const mnts = [join(sb.dir, 'm1'), join(sb.dir, 'm2')];
      for (const m of mnts) await sb.mount(m);
      const fsDirs: string[] = [];
      const devs: string[] = [];
      for (const [i, name] of ['va', 'vb'].entries()) {
        await sb.cliOk('volume', 'create', name, '--size', '1G');
        const dev = await sb.losetup(join(mnts[i]!, name));
        await must('mkfs.ext4', ['-q', dev]);
        const at = join(sb.dir, `fs-${name}`);
        await sb.mountFs(dev, at);
        await must('sh', ['-c', `for i in $(seq 1 12); do head -c 8M /dev/urandom > ${at}/d$i; done; cd ${at} && md5sum d* > pre.md5; sync`]);
        fsDirs.push(at);
        devs.push(dev);
      }
      const status = await sb.json<Status>('status');
      expect(status.daemons.map((d) => d.volumes.join(',')).sort()).to.deep.equal(['va', 'vb']);
      await sb.cliOk('backend', 'add', join(sb.dir, 'b2:3G'));
      const onB1 = (await backends(sb)).find((b) => b.id === 1)!.allocatedBytes;

      const workloads = fsDirs.map((d, i) => run('bash', ['-c', WORKLOAD, 'workload', d, join(sb.dir, `stop${i}`)]));
      await sleep(1500);
      const started = Date.now();
      const drain = await sb.cli('backend', 'drain', '1', '--timeout', '5', '--json');
      const wallMs = Date.now() - started;
      expect(drain.code, drain.stderr).to.equal(0);
      const change = JSON.parse(drain.stdout) as ChangeRecord;
      await sleep(1500);
      for (let i = 0; i < 2; i++) await fs.writeFile(join(sb.dir, `stop${i}`), '');
      const results: RunResult[] = await Promise.all(workloads);
      const log = await fs.readFile(join(sb.pool, 'run', 'daemon.log'), 'utf8').catch(() => '');
      for (const r of results) expect(r.code, `workload: ${r.stderr}\ndaemon log:\n${log}`).to.equal(0);

      const b1 = (await backends(sb)).find((b) => b.id === 1)!;
      expect(b1.allocatedBytes, 'bytes left on the drained backend').to.equal(0);
      expect(b1.reservedBytes, 'reservations left on the drained backend').to.equal(0);
      for (const [i, at] of fsDirs.entries()) {
        await sb.umountFs(at);
        await dropCaches();
        await must('e2fsck', ['-fn', devs[i]!]);
        await sb.mountFs(devs[i]!, at);
        await must('sh', ['-c', `cd ${at} && md5sum -c --quiet pre.md5 && md5sum -c --quiet sums`]);
      }
      const check = await sb.cli('check');
      expect(check.code, check.stdout).to.equal(0);
      await sb.cliOk('backend', 'remove', '1');

      // cp of as many bytes, on the same disk, made durable like the controller's copy.
      const src = join(sb.dir, 'cp-src');
      await must('dd', ['if=/dev/urandom', `of=${src}`, 'bs=1M', `count=${Math.ceil(change.bytesCopied / MiB)}`, 'status=none']);
      await dropCaches();
      const t0 = Date.now();
      await must('sh', ['-c', `cp ${src} ${src}.copy && sync ${src}.copy`]);
      const cpMs = Date.now() - t0;
      const mbps = (bytes: number, ms: number): string => (bytes / MiB / (ms / 1000)).toFixed(1);
      console.log(`      drain: ${(change.bytesCopied / MiB).toFixed(1)} MiB (backend 1 held ${(onB1 / MiB).toFixed(1)} MiB before) in ${change.batchesDone} batches, longest hold ${change.maxHoldMs} ms`);
      console.log(`      copy ${mbps(change.bytesCopied, change.copyMs)} MiB/s, whole drain ${mbps(change.bytesCopied, wallMs)} MiB/s; cp ${mbps(change.bytesCopied, cpMs)} MiB/s: ratios ${(cpMs / change.copyMs).toFixed(2)}x and ${(cpMs / wallMs).toFixed(2)}x of cp`);
      console.log(`      workloads: ${results.map((r) => r.stdout.trim()).join(', ')} during the drain`);
      expect(change.bytesCopied).to.be.at.least(onB1);
    });
  });

  describe('fencing, a killed controller, two controllers', function () {
    const sb = new Sandbox();
    const data = new Map<string, Buffer>();
    const pids: number[] = [];
    const files: string[] = [];
    before(async () => {
      await sb.createPool('b1:2G');
      const mnts = [join(sb.dir, 'm0'), join(sb.dir, 'm1')];
      for (const m of mnts) pids.push(await sb.mount(m));
      // fa and fc are served by the first daemon, fb by the second; map order is fa, fb, fc.
      for (const [name, mnt] of [['fa', mnts[0]!], ['fb', mnts[1]!], ['fc', mnts[0]!]] as const) {
        await sb.cliOk('volume', 'create', name, '--size', '256M');
        const d = randomBytes(64 * MiB);
        data.set(name, d);
        files.push(join(mnt, name));
        await writeFile(join(mnt, name), d);
        // An attached loop device keeps the volume open: its daemon serves it.
        await sb.losetup(join(mnt, name));
      }
      await sb.cliOk('backend', 'add', join(sb.dir, 'b2:2G'));
    });
    const verifyAll = async (): Promise<void> => {
      for (const [i, name] of ['fa', 'fb', 'fc'].entries()) expect(await sameBytes(files[i]!, data.get(name)!), name).to.equal(true);
    };
    after(() => sb.cleanup());

    it('a stopped daemon is fenced and its volume keeps its allocation, also when it wakes mid-change; a retry completes', async () => {
      const drain = sb.spawnCli(['backend', 'drain', '1', '--timeout', '2', '--batch', '1M', '--json'], { DEBUG: 'thinvol:layout' });
      await waitFor('the first batch', () => /batch 1:/.test(drain.stderrText()));
      process.kill(pids[1]!, 'SIGSTOP');
      await waitFor('the fence', () => /fenced/.test(drain.stderrText()));
      process.kill(pids[1]!, 'SIGCONT');
      const r = await drain.exited;
      expect(r.code, r.stderr).to.equal(3);
      const change = JSON.parse(r.stdout) as ChangeRecord;
      expect(change.state).to.equal('partial');
      expect(change.fenced.map((f) => f.pid)).to.include(pids[1]);
      expect((await sb.json<Extent[]>('map', 'fb')).every((e) => e.backend === 1), 'the fenced daemon\'s volume stayed where it was').to.equal(true);
      for (const name of ['fa', 'fc']) expect((await sb.json<Extent[]>('map', name)).every((e) => e.backend === 2), name).to.equal(true);
      const log = drain.stderrText();
      expect(log.slice(log.indexOf('fenced')), 'fc was moved after the fenced daemon woke').to.match(/volume 3 \[/);
      console.log(`      fenced pid ${pids[1]}: ${change.fenced[0]?.reason}; woken at once, the change went on (${change.batchesDone} batches, longest hold ${change.maxHoldMs} ms)`);
      await verifyAll();

      await waitFor('the daemon to re-register', async () => {
        const s = await sb.json<Status>('status');
        return s.daemons.some((d) => d.pid === pids[1] && d.health === 'ok' && d.epoch === 2);
      });
      const retry = await sb.cli('backend', 'drain', '1', '--timeout', '2', '--json');
      expect(retry.code, retry.stderr).to.equal(0);
      expect((await sb.json<Extent[]>('map', 'fb')).every((e) => e.backend === 2)).to.equal(true);
      await verifyAll();
      const check = await sb.cli('check');
      expect(check.code, check.stdout).to.equal(0);
    });

    it('kill -9 of the controller mid-copy: a rerun resumes, nothing leaked or mapped twice', async () => {
      await sb.cliOk('backend', 'add', join(sb.dir, 'b3:2G'));
      const before = (await backends(sb)).find((b) => b.id === 2)!.allocatedBytes;
      const drain = sb.spawnCli(['backend', 'drain', '2', '--batch', '512K', '--json'], { DEBUG: 'thinvol:layout' });
      await waitFor('batch 20', () => /batch 20:/.test(drain.stderrText()));
      process.kill(drain.pid, 'SIGKILL');
      await drain.exited;
      const mid = await sb.json<Status>('status');
      const killed = mid.changes[0]!;
      expect(killed.state).to.equal('running');
      const watch = sb.spawnCli(['status', '--watch', '--json']);
      const rerun = await sb.cli('backend', 'drain', '2', '--json');
      process.kill(watch.pid, 'SIGINT');
      const watched = (await watch.exited).stdout.trim().split('\n');
      expect(rerun.code, rerun.stderr).to.equal(0);
      const change = JSON.parse(rerun.stdout) as ChangeRecord;
      expect(change.id).to.equal(killed.id);
      expect(change.resumes).to.equal(1);
      expect(change.bytesCopied, 'every byte copied once').to.equal(before);
      expect(watched.length).to.be.at.least(2);
      const check = await sb.cli('check', '--json');
      expect(check.code, check.stdout).to.equal(0);
      await verifyAll();
      console.log(`      killed after ${killed.batchesDone} batches (${(killed.bytesCopied / MiB).toFixed(1)} MiB); the rerun finished ${change.batchesDone} in all, ${(change.bytesCopied / MiB).toFixed(1)} MiB`);
    });

    it('two controllers at once: one runs, the other is refused', async () => {
      await sb.cliOk('backend', 'add', join(sb.dir, 'b4:2G'));
      const [a, b] = [sb.spawnCli(['backend', 'drain', '3', '--batch', '1M']), sb.spawnCli(['backend', 'drain', '3', '--batch', '1M'])];
      const results = await Promise.all([a.exited, b.exited]);
      const codes = results.map((r) => r.code).sort();
      expect(codes, results.map((r) => r.stderr).join('\n')).to.deep.equal([0, 1]);
      const refused = results.find((r) => r.code === 1)!;
      expect(refused.stderr).to.match(/^thinvol: another layout change is running: change \d+ \(drain backend 3\) by pid \d+/);
      expect(refused.stderr.trim().split('\n')).to.have.length(1);
    });

    it('drained backends can be removed; migrate moves a range of a volume, rebalance evens out the backends, remove refuses a backend in use', async () => {
      for (const id of ['1', '2', '3']) await sb.cliOk('backend', 'remove', id);
      await sb.cliOk('backend', 'add', join(sb.dir, 'b5:2G'));
      const migrate = await sb.cli('migrate', 'fa', '--to', '5', '--offset', '16M', '--length', '32M');
      expect(migrate.code, migrate.stderr).to.equal(0);
      const map = await sb.json<Extent[]>('map', 'fa');
      for (const e of map) {
        const inRange = e.offset >= 16 * MiB && e.offset + e.length <= 48 * MiB;
        if (inRange) expect(e.backend, `extent at ${e.offset}`).to.equal(5);
        else if (e.offset + e.length <= 16 * MiB || e.offset >= 48 * MiB) expect(e.backend).to.equal(4);
        else expect.fail(`extent [${e.offset},+${e.length}) straddles the migrated range`);
      }
      const rebalance = await sb.cli('rebalance', '--json');
      expect(rebalance.code, rebalance.stderr).to.equal(0);
      const list = await backends(sb);
      expect(list.map((b) => b.id)).to.deep.equal([4, 5]);
      const fractions = list.map((b) => b.allocatedBytes / b.capacityBytes);
      expect(Math.max(...fractions) - Math.min(...fractions)).to.be.below(0.01);
      const remove = await sb.cli('backend', 'remove', '4');
      expect(remove.code).to.not.equal(0);
      expect(remove.stderr).to.match(/still holds \d+ bytes: move them off first/);
      await verifyAll();
      expect((await sb.cli('check')).code).to.equal(0);
    });
  });
});
