import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import type { Sandbox } from './sandbox';
import { mulberry32 } from './prng';

const SECTOR = 512;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export interface CrashLoopOptions { rounds: number; seed: number; volumeBytes: number; cli: boolean; secondDaemon: boolean; log?: (line: string) => void }

export interface CrashLoopResult {
  rounds: number;
  writes: number;
  fsyncs: number;
  /** Writes acknowledged by an fsync, all verified after the crash that followed them. */
  fsyncedWritesVerified: number;
  bytesVerified: number;
  cliRuns: number;
  cliKilled: number;
  mismatches: string[];
  checkFailures: string[];
}

/**
 * What a volume must hold after a crash: the acknowledged content (as of the last fsync that
 * returned) except where writes since then may have landed, sector by sector.
 */
class Shadow {
  readonly acked: Buffer;
  /** Writes since the last fsync: each may or may not have reached the volume. */
  unacked: { off: number; data: Buffer }[] = [];
  ackedWrites = 0;
  pendingWrites = 0;

  constructor(size: number) {
    this.acked = Buffer.alloc(size);
  }

  wrote(off: number, data: Buffer): void {
    this.unacked.push({ off, data });
    this.pendingWrites++;
  }

  synced(upTo: number): void {
    for (const w of this.unacked.splice(0, upTo)) w.data.copy(this.acked, w.off);
    this.ackedWrites += Math.min(upTo, this.pendingWrites);
    this.pendingWrites -= Math.min(upTo, this.pendingWrites);
  }

  /** Problems in `got` (the whole volume); afterwards `got` is the new acknowledged state. */
  verify(got: Buffer, name: string): string[] {
    const problems: string[] = [];
    for (let s = 0; s < got.length; s += SECTOR) {
      const e = Math.min(got.length, s + SECTOR);
      const have = got.subarray(s, e);
      if (have.equals(this.acked.subarray(s, e))) continue;
      const ok = this.unacked.some((w) => w.off <= s && w.off + w.data.length >= e && have.equals(w.data.subarray(s - w.off, e - w.off)));
      if (!ok) {
        problems.push(`${name}: sector at ${s} holds neither its fsynced content nor a later write's`);
        if (problems.length > 5) break;
      }
    }
    got.copy(this.acked);
    this.unacked = [];
    this.pendingWrites = 0;
    return problems;
  }
}

/** Random sector-aligned pwrites of 4 KiB to 1 MiB, fsync at random points, until the file stops answering. */
async function writer(path: string, shadow: Shadow, rnd: () => number, stop: { now: boolean }, counts: { writes: number; fsyncs: number }): Promise<void> {
  const fh = await fs.open(path, 'r+').catch(() => undefined);
  if (!fh) return;
  try {
    while (!stop.now) {
      // Sector-aligned, as a block device's users write; a sector is then all old or all new.
      const len = rnd() < 0.7 ? 4096 * (1 + Math.floor(rnd() * 16)) : SECTOR * Math.floor(8 + rnd() * (2048 - 8));
      const off = SECTOR * Math.floor(rnd() * ((shadow.acked.length - len) / SECTOR));
      const data = Buffer.alloc(len);
      for (let i = 0; i < len; i += 4) data.writeUInt32LE(Math.floor(rnd() * 2 ** 32), i);
      shadow.wrote(off, data);
      await fh.write(data, 0, len, off);
      counts.writes++;
      if (rnd() < 0.15) {
        const upTo = shadow.unacked.length;
        await fh.sync();
        shadow.synced(upTo);
        counts.fsyncs++;
      }
    }
  } catch {
    // The daemon was killed: ENOTCONN or EIO from here on.
  } finally {
    await fh.close().catch(() => undefined);
  }
}

/** CLI commands on other volumes of the pool, some killed -9 mid-way, until stopped. */
async function cliLoop(sb: Sandbox, rnd: () => number, stop: { now: boolean }, counts: { cliRuns: number; cliKilled: number }): Promise<void> {
  let n = 0;
  while (!stop.now) {
    const name = `c${n++ % 4}`;
    const pick = rnd();
    const args = pick < 0.3 ? ['volume', 'create', name, '--size', '64M']
      : pick < 0.5 ? ['volume', 'resize', name, '--size', `${16 * (1 + Math.floor(rnd() * 8))}M`]
        : pick < 0.7 ? ['volume', 'delete', name]
          : pick < 0.9 ? ['df', '--json'] : ['status', '--json'];
    const c = sb.spawnCli(args);
    counts.cliRuns++;
    if (rnd() < 0.25) {
      await sleep(Math.floor(rnd() * 300));
      try { process.kill(c.pid, 'SIGKILL'); counts.cliKilled++; } catch { /* already done */ }
    }
    await c.exited;
  }
}

/**
 * The crash loop: a writer per daemon doing random writes with fsyncs into its volume, CLI
 * commands changing other volumes meanwhile (some killed -9), then kill -9 of the daemon(s) at
 * a random moment; remount, and every fsynced write must read back, everything else be either
 * its fsynced content or a later write, and check be clean. Round after round.
 */
export async function runCrashLoop(sb: Sandbox, o: CrashLoopOptions): Promise<CrashLoopResult> {
  const rnd = mulberry32(o.seed);
  const r: CrashLoopResult = { rounds: 0, writes: 0, fsyncs: 0, fsyncedWritesVerified: 0, bytesVerified: 0, cliRuns: 0, cliKilled: 0, mismatches: [], checkFailures: [] };
  const mnt2 = join(sb.dir, 'mnt2');
  const sizeArg = `${o.volumeBytes / 2 ** 20}M`;
  await sb.cliOk('volume', 'create', 'crash1', '--size', sizeArg);
  if (o.secondDaemon) await sb.cliOk('volume', 'create', 'crash2', '--size', sizeArg);
  const vols = [{ name: 'crash1', mnt: sb.mnt, shadow: new Shadow(o.volumeBytes) }];
  if (o.secondDaemon) vols.push({ name: 'crash2', mnt: mnt2, shadow: new Shadow(o.volumeBytes) });
  const pids = [await sb.mount(sb.mnt), ...(o.secondDaemon ? [await sb.mount(mnt2)] : [])];
  for (let round = 0; round < o.rounds; round++) {
    const stop = { now: false };
    const counts = { writes: 0, fsyncs: 0, cliRuns: 0, cliKilled: 0 };
    const work = vols.map((v) => writer(join(v.mnt, v.name), v.shadow, rnd, stop, counts));
    const cli = o.cli ? cliLoop(sb, rnd, stop, counts) : Promise.resolve();
    await sleep(300 + Math.floor(rnd() * 2500));
    // Kill the first daemon always, the second one half the time; CLI processes may be mid-way.
    const killed = pids.map((_, i) => i === 0 || rnd() < 0.5);
    pids.forEach((pid, i) => { if (killed[i]) process.kill(pid, 'SIGKILL'); });
    await sleep(50);
    stop.now = true;
    await Promise.all(work);
    await cli;
    await sleep(200);
    for (const [i, v] of vols.entries()) if (killed[i]) pids[i] = await sb.mount(v.mnt);
    for (const v of vols) {
      const got = await fs.readFile(join(v.mnt, v.name));
      const acked = v.shadow.ackedWrites;
      const problems = v.shadow.verify(got, `round ${round} ${v.name}`);
      r.mismatches.push(...problems);
      if (problems.length === 0) r.fsyncedWritesVerified += acked;
      v.shadow.ackedWrites = 0;
      r.bytesVerified += got.length;
    }
    const check = await sb.cli('check');
    if (check.code !== 0) r.checkFailures.push(`round ${round}: ${check.stdout.trim().slice(0, 500)}`);
    r.rounds++;
    r.writes += counts.writes;
    r.fsyncs += counts.fsyncs;
    r.cliRuns += counts.cliRuns;
    r.cliKilled += counts.cliKilled;
    o.log?.(`round ${round}: ${counts.writes} writes, ${counts.fsyncs} fsyncs, ${counts.cliRuns} CLI runs (${counts.cliKilled} killed), mismatches ${r.mismatches.length}, check ${check.code === 0 ? 'clean' : 'NOT clean'}`);
  }
  return r;
}
