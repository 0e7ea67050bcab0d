import { connect, type Socket } from 'node:net';
import { UserError } from '../util/errors';

interface Waiter { resolve(v: unknown): void; reject(e: Error): void; timer: NodeJS.Timeout }

/** A connection to a daemon's control socket carrying any number of requests, answered in order. */
export class ControlSession {
  readonly #sock: Socket;
  readonly #waiting: Waiter[] = [];
  readonly #ready: Promise<void>;
  #buf = '';
  #closed: Error | undefined;

  constructor(readonly path: string) {
    this.#sock = connect(path);
    this.#sock.setEncoding('utf8');
    this.#ready = new Promise((resolve, reject) => {
      this.#sock.once('connect', resolve);
      this.#sock.once('error', (err) => reject(new UserError(`cannot reach daemon at ${path}: ${err.message}`)));
    });
    this.#ready.catch(() => undefined);
    this.#sock.on('data', (chunk: string) => this.#data(chunk));
    this.#sock.on('error', () => undefined);
    this.#sock.on('close', () => this.#fail(new UserError(`daemon at ${path} closed the control connection`)));
  }

  /** Sends a request; rejects with a clear message on an error answer or after `timeoutMs`. */
  async request<T>(request: object, timeoutMs: number): Promise<T> {
    await this.#ready;
    if (this.#closed) throw this.#closed;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.close();
        reject(new UserError(`daemon at ${this.path} did not answer within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      this.#waiting.push({ resolve: resolve as (v: unknown) => void, reject, timer });
      this.#sock.write(`${JSON.stringify(request)}\n`);
    });
  }

  close(): void {
    this.#sock.destroy();
    this.#fail(new UserError(`control connection to ${this.path} closed`));
  }

  #data(chunk: string): void {
    this.#buf += chunk;
    for (let nl = this.#buf.indexOf('\n'); nl >= 0; nl = this.#buf.indexOf('\n')) {
      const line = this.#buf.slice(0, nl);
      this.#buf = this.#buf.slice(nl + 1);
      const w = this.#waiting.shift();
      if (!w) continue;
      clearTimeout(w.timer);
      try {
        const answer = JSON.parse(line) as { result?: unknown; error?: string };
        if (answer.error !== undefined) w.reject(new UserError(answer.error));
        else w.resolve(answer.result);
      } catch {
        w.reject(new UserError(`daemon at ${this.path} sent a malformed answer`));
      }
    }
  }

  #fail(err: Error): void {
    this.#closed ??= err;
    for (const w of this.#waiting.splice(0)) {
      clearTimeout(w.timer);
      w.reject(err);
    }
  }
}

/** Sends one request to a daemon's control socket and returns its answer. */
export async function controlRequest<T>(path: string, request: object, timeoutMs = 120_000): Promise<T> {
  const s = new ControlSession(path);
  try {
    return await s.request<T>(request, timeoutMs);
  } finally {
    s.close();
  }
}
