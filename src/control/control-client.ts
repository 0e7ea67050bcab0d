import { connect } from 'node:net';
import { UserError } from '../util/errors';

/** Sends one request to a daemon's control socket and returns its answer. */
export function controlRequest<T>(path: string, request: object, timeoutMs = 120_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const sock = connect(path);
    let buf = '';
    const timer = setTimeout(() => { sock.destroy(); reject(new UserError(`daemon at ${path} did not answer within ${timeoutMs / 1000} s`)); }, timeoutMs);
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(`${JSON.stringify(request)}\n`));
    sock.on('data', (c: string) => { buf += c; });
    sock.on('error', (err) => { clearTimeout(timer); reject(new UserError(`cannot reach daemon at ${path}: ${err.message}`)); });
    sock.on('end', () => {
      clearTimeout(timer);
      try {
        const answer = JSON.parse(buf) as { result?: T; error?: string };
        if (answer.error !== undefined) reject(new UserError(answer.error));
        else resolve(answer.result as T);
      } catch {
        reject(new UserError(`daemon at ${path} sent a malformed answer`));
      }
    });
  });
}
