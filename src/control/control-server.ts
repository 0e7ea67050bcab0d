import { createServer, type Server } from 'node:net';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { logger } from '../util/log';

const debug = logger('control');

export type ControlHandler = (request: Record<string, unknown>) => Promise<unknown>;

export function controlSocketPath(runDir: string, pid: number): string {
  return join(runDir, `daemon-${pid}.sock`);
}

/** A daemon's control socket: one JSON request line in, one JSON answer line out. */
export function startControlServer(path: string, handle: ControlHandler): Promise<Server> {
  rmSync(path, { force: true });
  const server = createServer((sock) => {
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      buf += chunk;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      const line = buf.slice(0, nl);
      let request: Record<string, unknown>;
      try {
        request = JSON.parse(line) as Record<string, unknown>;
      } catch {
        sock.end(`${JSON.stringify({ error: 'bad request: not JSON' })}\n`);
        return;
      }
      debug('request %o', request);
      handle(request).then(
        (result) => sock.end(`${JSON.stringify({ result })}\n`),
        (err: unknown) => sock.end(`${JSON.stringify({ error: err instanceof Error ? err.message : String(err) })}\n`),
      );
    });
    sock.on('error', () => sock.destroy());
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve(server));
  });
}
