import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { basename, join } from 'node:path';
import { PASSTHROUGH_FILE } from './passthrough';
import { type Cleanup, childExited, fuseUnmount, isMounted, killPid, run, sleep, waitFor } from './proc';

/* ------------------------------------------------------------------ thinvol */

export interface ThinvolUsage {
  capacityBytes: number; allocatedBytes: number; freeBytes: number; provisionedBytes: number;
  volumes: { id: number; name: string; sizeBytes: number; allocatedBytes: number }[];
}

export class Thinvol {
  constructor(readonly bin: string, readonly pool: string) {}

  cmd(args: readonly string[]): Promise<string> {
    return run(this.bin, ['--pool', this.pool, ...args]).then((r) => r.stdout);
  }

  async createPool(backend: string, size: string): Promise<void> {
    await this.cmd(['pool', 'create', '--backend', `${backend}:${size}`]);
  }

  async createVolume(name: string, size: string): Promise<void> {
    await this.cmd(['volume', 'create', name, '--size', size]);
  }

  async df(): Promise<ThinvolUsage> {
    const parsed = JSON.parse(await this.cmd(['df', '--json'])) as ThinvolUsage;
    if (!Array.isArray(parsed.volumes)) throw new Error('thinvol df --json: no volumes array');
    return parsed;
  }

  async allocatedOf(volume: string): Promise<number> {
    const v = (await this.df()).volumes.find((x) => x.name === volume);
    if (!v) throw new Error(`thinvol df: no volume ${volume}`);
    return v.allocatedBytes;
  }

  /** Mounts (background daemon) and registers the unmount; returns the daemon pid and the early-unmount function. */
  async mount(mnt: string, cleanup: Cleanup, args: readonly string[] = []): Promise<{ pid: number; unmount: () => Promise<void> }> {
    const out = JSON.parse(await this.cmd(['--json', 'mount', mnt, ...args])) as { pid?: unknown };
    const pid = typeof out.pid === 'number' ? out.pid : 0;
    if (pid <= 0) throw new Error(`thinvol mount printed no pid: ${JSON.stringify(out)}`);
    const unmount = cleanup.add(`thinvol umount ${mnt}`, async () => {
      const r = await run(this.bin, ['--pool', this.pool, 'umount', mnt], { allowFail: true, timeoutMs: 60_000 });
      if (r.code !== 0) {
        console.error(`bench: thinvol umount ${mnt} failed (${r.stderr.trim()}); falling back to fusermount -u and kill ${pid}`);
        await fuseUnmount(mnt);
      }
      await killPid(pid, 30_000);
    });
    return { pid, unmount };
  }
}

/* ------------------------------------------------------- qemu-storage-daemon */

/** Exports RAW (pre-sized) as the regular file EXPORTFILE through qemu-storage-daemon's FUSE export. */
export async function startQsd(raw: string, exportFile: string, cleanup: Cleanup): Promise<{ pid: number; stop: () => Promise<void> }> {
  await fs.writeFile(exportFile, '');
  const child = spawn('qemu-storage-daemon', [
    '--blockdev', `driver=file,node-name=f,filename=${raw}`,
    '--export', `type=fuse,id=e,node-name=f,mountpoint=${exportFile},writable=on`,
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (b: Buffer) => { stderr += b.toString(); });
  const pid = child.pid;
  if (pid === undefined) throw new Error('qemu-storage-daemon did not start');
  const stop = cleanup.add(`qemu-storage-daemon pid ${pid}`, async () => {
    await killPid(pid);
    await childExited(child);
    await fuseUnmount(exportFile);
  });
  try {
    await waitFor('the qemu-storage-daemon FUSE export', async () => {
      if (child.exitCode !== null) throw new Error(`qemu-storage-daemon exited with ${child.exitCode}: ${stderr.trim()}`);
      return isMounted(exportFile);
    }, 15_000);
  } catch (err) {
    await stop();
    throw err;
  }
  return { pid, stop };
}

/* ------------------------------------------------------ fuse-native passthrough */

export async function startPassthrough(script: string, backing: string, mnt: string, cleanup: Cleanup): Promise<{ pid: number; file: string; stop: () => Promise<void> }> {
  await fs.mkdir(mnt, { recursive: true });
  const child = spawn(process.execPath, [script, backing, mnt], { stdio: ['ignore', 'pipe', 'pipe'] });
  const pid = child.pid;
  if (pid === undefined) throw new Error('passthrough did not start');
  let out = '';
  let err = '';
  child.stdout.on('data', (b: Buffer) => { out += b.toString(); });
  child.stderr.on('data', (b: Buffer) => { err += b.toString(); });
  const stop = cleanup.add(`passthrough pid ${pid}`, async () => {
    await fuseUnmount(mnt);
    await killPid(pid);
    await childExited(child);
  });
  try {
    await waitFor('the passthrough mount', async () => {
      if (child.exitCode !== null) throw new Error(`passthrough exited with ${child.exitCode}: ${err.trim()}`);
      return out.includes('ready') && isMounted(mnt);
    }, 15_000);
  } catch (e) {
    await stop();
    throw e;
  }
  return { pid, file: join(mnt, PASSTHROUGH_FILE), stop };
}

/* ---------------------------------------------------------------- loop devices */

export type Dio = 'on' | 'off';

export interface Loop { dev: string; dio: boolean; detach: () => Promise<void> }

async function loopBacking(dev: string): Promise<string | undefined> {
  try {
    return (await fs.readFile(`/sys/block/${basename(dev)}/loop/backing_file`, 'utf8')).trim();
  } catch {
    return undefined;
  }
}

/** Attaches a loop device over FILE with the requested direct-io mode and reports what the kernel actually uses. */
export async function attachLoop(file: string, dio: Dio, cleanup: Cleanup): Promise<Loop> {
  const r = await run('losetup', ['--find', '--show', `--direct-io=${dio}`, file]);
  const dev = r.stdout.trim();
  if (!dev.startsWith('/dev/loop')) throw new Error(`losetup printed ${JSON.stringify(r.stdout)}`);
  const detach = cleanup.add(`losetup -d ${dev}`, async () => {
    if ((await loopBacking(dev)) === undefined) return;
    for (let i = 0; i < 50; i++) {
      const d = await run('losetup', ['-d', dev], { allowFail: true });
      if (d.code === 0) break;
      await sleep(200);
    }
    await waitFor(`${dev} to detach`, async () => (await loopBacking(dev)) === undefined, 30_000);
  });
  let used = false;
  try {
    used = (await fs.readFile(`/sys/block/${basename(dev)}/loop/dio`, 'utf8')).trim() === '1';
  } catch { /* older kernels: unknown, report as off */ }
  return { dev, dio: used, detach };
}

export async function withLoop<T>(file: string, dio: Dio, cleanup: Cleanup, fn: (loop: Loop) => Promise<T>): Promise<T> {
  const loop = await attachLoop(file, dio, cleanup);
  try {
    return await fn(loop);
  } finally {
    await loop.detach();
  }
}
