import { createServer, type Server, type Socket } from 'node:net';
import { chmodSync, rmSync } from 'node:fs';
import { peerCredentials } from '../native/peercred';
import { join } from 'node:path';
import { logger } from '../util/log';
import { answerLine, LineReader, MAX_REQUEST_LINE, parseRequest, type Request } from './protocol';
import { LINE_TIMEOUT_MS } from './timing';

const debug = logger('control');

/** One client connection: a handler can tie state (a hold) to it and undo it when it closes. */
export interface ControlConnection { onClose(fn: () => void): void }

export type ControlHandler = (request: Request, conn: ControlConnection) => Promise<unknown>;

export function controlSocketPath(runDir: string, pid: number): string {
  return join(runDir, `daemon-${pid}.sock`);
}

/** The uid of the process at the other end, or undefined if the kernel cannot say. */
function peerUid(sock: Socket): number | undefined {
  // net.Socket keeps its descriptor on the internal handle; a Unix socket always has one.
  const fd = (sock as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (fd === undefined || fd < 0) return undefined;
  try {
    return peerCredentials(fd).uid;
  } catch {
    return undefined;
  }
}

/**
 * A daemon's control socket: request lines in, one answer line out for each, in order. A
 * connection lives as long as its client wants (a controller keeps one per change); one that
 * sends a line longer than the protocol allows is dropped. Only root and `ownerUid` (the
 * pool's owner) are served, whatever the socket file's mode; the file is made 0600 whatever
 * the umask.
 */
export function startControlServer(path: string, handle: ControlHandler, ownerUid: number): Promise<Server> {
  rmSync(path, { force: true });
  const server = createServer((sock) => {
    const uid = peerUid(sock);
    if (uid !== 0 && uid !== ownerUid) {
      debug('refusing a control client of uid %s', uid ?? 'unknown');
      sock.destroy();
      return;
    }
    const reader = new LineReader(MAX_REQUEST_LINE);
    let chain = Promise.resolve();
    const closers: (() => void)[] = [];
    const conn: ControlConnection = { onClose: (fn) => { closers.push(fn); } };
    let lineTimer: NodeJS.Timeout | undefined;
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      let lines: string[];
      try {
        lines = reader.push(chunk);
      } catch (err) {
        debug('dropping a client: %s', (err as Error).message);
        sock.destroy();
        return;
      }
      if (lines.length > 0 || !reader.partial) {
        clearTimeout(lineTimer);
        lineTimer = undefined;
      }
      if (reader.partial && !lineTimer) {
        lineTimer = setTimeout(() => {
          debug('dropping a client: a request line took longer than %d ms', LINE_TIMEOUT_MS);
          sock.destroy();
        }, LINE_TIMEOUT_MS);
      }
      for (const line of lines) {
        chain = chain.then(async () => {
          let answer: string;
          try {
            const request = parseRequest(JSON.parse(line));
            debug('request %o', request);
            answer = answerLine({ ok: true, value: await handle(request, conn) });
          } catch (err) {
            answer = answerLine({ ok: false, error: err instanceof SyntaxError ? new Error('bad request: not JSON') : err });
          }
          if (!sock.destroyed) sock.write(answer);
        });
      }
    });
    sock.on('close', () => {
      clearTimeout(lineTimer);
      for (const fn of closers.splice(0)) fn();
    });
    sock.on('error', () => sock.destroy());
  });
  return new Promise((resolve, reject) => {
    const umask = process.umask(0o177);
    server.once('error', (err) => {
      process.umask(umask);
      reject(err);
    });
    server.listen(path, () => {
      process.umask(umask);
      chmodSync(path, 0o600);
      resolve(server);
    });
  });
}
