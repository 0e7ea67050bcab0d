import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { LmdbStore } from '../../src/store/lmdb-store';
import { mulberry32 } from './prng';

const WORKER = join(__dirname, 'store-worker.js');

export interface StoreRunOptions { dir: string; seconds: number; longWriters: number; seed: number; parallel: number; synced: boolean }

export interface StoreRunResult {
  longCommits: number;
  shortStarted: number;
  shortCommitted: number;
  shortKilled: number;
  readers: number;
  slowestCommitMs: number;
  problems: string[];
}

interface Child { out: string; err: string; code: number | null; signal: string | null; done: Promise<void>; pid: number; kill(): void }

function start(args: string[], timeoutMs: number, synced: boolean): Child {
  const p = spawn(process.execPath, ['--no-concurrent-recompilation', WORKER, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, THINVOL_STORE_SYNCED: synced ? '1' : '0' } });
  const c: Child = {
    out: '', err: '', code: null, signal: null, pid: p.pid ?? 0,
    kill: () => { try { p.kill('SIGKILL'); } catch { /* gone */ } },
    done: Promise.resolve(),
  };
  p.stdout.on('data', (d: Buffer) => { c.out += d.toString(); });
  p.stderr.on('data', (d: Buffer) => { c.err += d.toString(); });
  const timer = setTimeout(() => { c.err += `\n(hung: killed after ${timeoutMs} ms)`; c.kill(); }, timeoutMs);
  c.done = new Promise((resolve) => p.on('close', (code, signal) => { clearTimeout(timer); c.code = code; c.signal = signal; resolve(); }));
  return c;
}

const lastCommitted = (out: string): number => Math.max(0, ...[...out.matchAll(/committed (\d+)/g)].map((m) => Number(m[1])));

/**
 * Several processes on one store, as a pool's daemons and CLI commands are: long-lived writers
 * commit in a loop; short-lived ones open, commit once and close, or only read; some of those
 * are killed at random moments, during open, commit or close. Afterwards every commit a process
 * reported must be in the store, and nobody may have hung or crashed.
 */
export async function runStoreProcesses(o: StoreRunOptions): Promise<StoreRunResult> {
  const rnd = mulberry32(o.seed);
  const file = join(o.dir, 'pool.lmdb');
  await new LmdbStore(file).close();
  const hangMs = (o.seconds + 30) * 1000;
  const longs = Array.from({ length: o.longWriters }, (_, i) => start(['long', file, `w${i}`, String(o.seconds)], hangMs, o.synced));
  const r: StoreRunResult = { longCommits: 0, shortStarted: 0, shortCommitted: 0, shortKilled: 0, readers: 0, slowestCommitMs: 0, problems: [] };
  const shorts: { c: Child; name: string; killed: boolean }[] = [];
  const until = Date.now() + o.seconds * 1000;
  const running = new Set<Promise<void>>();
  let n = 0;
  while (Date.now() < until) {
    if (running.size >= o.parallel) {
      await Promise.race(running);
      continue;
    }
    const name = `s${n++}`;
    const reader = rnd() < 0.3;
    const c = start([reader ? 'reader' : 'short', file, name], 30_000, o.synced);
    const entry = { c, name, killed: false };
    if (reader) r.readers++;
    else { r.shortStarted++; shorts.push(entry); }
    if (rnd() < 0.3) {
      const delay = Math.floor(rnd() * 120);
      setTimeout(() => { entry.killed = true; c.kill(); }, delay);
    }
    const d = c.done.then(() => { running.delete(d); });
    running.add(d);
  }
  await Promise.all(running);
  await Promise.all(longs.map((c) => c.done));

  const store = new LmdbStore(file);
  try {
    for (const [i, c] of longs.entries()) {
      if (c.code !== 0) r.problems.push(`long writer w${i} exited ${c.code ?? c.signal}: ${c.err.trim().slice(0, 500)}`);
      const reported = lastCommitted(c.out);
      const stored = store.names.get(`long:w${i}`) ?? 0;
      r.longCommits += reported;
      r.slowestCommitMs = Math.max(r.slowestCommitMs, Number(/slowest (\d+)/.exec(c.out)?.[1] ?? 0));
      if (stored !== reported) r.problems.push(`long writer w${i} reported ${reported} commits, the store holds ${stored}`);
      for (let k = 1; k <= stored; k++) if (store.names.get(`long:w${i}:${k}`) !== k) { r.problems.push(`long writer w${i}: commit ${k} lost`); break; }
    }
    for (const s of shorts) {
      const committed = lastCommitted(s.c.out) === 1;
      if (s.killed && s.c.signal === 'SIGKILL') r.shortKilled++;
      else if (s.c.code !== 0) r.problems.push(`short writer ${s.name} exited ${s.c.code ?? s.c.signal}: ${s.c.err.trim().slice(0, 300)}`);
      if (committed) {
        r.shortCommitted++;
        if (store.names.get(`short:${s.name}`) !== 1) r.problems.push(`short writer ${s.name} reported its commit, the store does not hold it`);
      }
    }
  } finally {
    await store.close();
  }
  return r;
}
