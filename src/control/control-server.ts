import { createServer, type Server } from 'node:net';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { logger } from '../util/log';

const debug = logger('control');

/** One client connection: a handler can tie state (a hold) to it and undo it when it closes. */
export interface ControlConnection { onClose(fn: () => void): void }

export type ControlHandler = (request: Record<string, unknown>, conn: ControlConnection) => Promise<unknown>;

export function controlSocketPath(runDir: string, pid: number): string {
  return join(runDir, `daemon-${pid}.sock`);
}

/**
 * A daemon's control socket: JSON request lines in, one JSON answer line out for each, in
 * order. A connection lives as long as its client wants (a controller keeps one per change).
 */
export function startControlServer(path: string, handle: ControlHandler): Promise<Server> {
  rmSync(path, { force: true });
  const server = createServer((sock) => {
    let buf = '';
    let chain = Promise.resolve();
    const closers: (() => void)[] = [];
    const conn: ControlConnection = { onClose: (fn) => { closers.push(fn); } };
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      buf += chunk;
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        chain = chain.then(async () => {
          let answer: object;
          try {
            const request = JSON.parse(line) as Record<string, unknown>;
            debug('request %o', request);
            answer = { result: await handle(request, conn) };
          } catch (err) {
            answer = { error: err instanceof SyntaxError ? 'bad request: not JSON' : err instanceof Error ? err.message : String(err) };
          }
          if (!sock.destroyed) sock.write(`${JSON.stringify(answer)}\n`);
        });
      }
    });
    sock.on('close', () => { for (const fn of closers.splice(0)) fn(); });
    sock.on('error', () => sock.destroy());
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve(server));
  });
}
