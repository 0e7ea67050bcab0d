import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { holderAlive } from '../pool/holder';
import type { Holder } from '../pool/records';

export interface DaemonInfo extends Holder { mountpoint: string; pool: string; startedAt: number }

/** Mount daemons of a pool announce themselves as run/daemon-PID.json in the pool directory. */
export async function registerDaemon(runDir: string, info: DaemonInfo): Promise<string> {
  const file = join(runDir, `daemon-${info.pid}.json`);
  await fs.writeFile(file, JSON.stringify(info));
  return file;
}

/** Live daemons; files of dead ones are removed. */
export async function listDaemons(runDir: string): Promise<DaemonInfo[]> {
  const out: DaemonInfo[] = [];
  for (const name of await fs.readdir(runDir).catch(() => [])) {
    if (!/^daemon-\d+\.json$/.test(name)) continue;
    const file = join(runDir, name);
    const info = JSON.parse(await fs.readFile(file, 'utf8').catch(() => 'null')) as DaemonInfo | null;
    if (info && holderAlive(info)) out.push(info);
    else await fs.rm(file, { force: true });
  }
  return out;
}
