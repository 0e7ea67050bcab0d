import { connect, type Socket } from 'node:net';
import { FsError } from '../util/errors';
import { LineReader, MAX_ANSWER_LINE, parseAnswer, type AnswerOf, type Request } from './protocol';
import { REQUEST_TIMEOUT_MS } from './timing';

interface Waiter { resolve(v: unknown): void; reject(e: Error): void; timer: NodeJS.Timeout }

/** A connection to a daemon's control socket carrying any number of requests, answered in order. */
export class ControlSession {
  readonly #sock: Socket;
  readonly #waiting: Waiter[] = [];
  readonly #ready: Promise<void>;
  readonly #reader = new LineReader(MAX_ANSWER_LINE);
  #closed: Error | undefined;

  constructor(readonly path: string) {
    this.#sock = connect(path);
    this.#sock.setEncoding('utf8');
    this.#ready = new Promise((resolve, reject) => {
      this.#sock.once('connect', resolve);
      this.#sock.once('error', (err: NodeJS.ErrnoException) => reject(new FsError('ECONNREFUSED', `cannot reach daemon at ${path}: ${err.message}`, { cause: err })));
    });
    this.#ready.catch(() => undefined);
    this.#sock.on('data', (chunk: string) => this.#data(chunk));
    this.#sock.on('error', () => undefined);
    this.#sock.on('close', () => this.#fail(new FsError('ECONNRESET', `daemon at ${path} closed the control connection`)));
  }

  /** Sends a request; rejects with the daemon's error (its errno kept) or after `timeoutMs`. */
  async request<R extends Request>(request: R, timeoutMs: number): Promise<AnswerOf<R>> {
    await this.#ready;
    if (this.#closed) throw this.#closed;
    return new Promise<AnswerOf<R>>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.close();
        reject(new FsError('ETIMEDOUT', `daemon at ${this.path} did not answer within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      this.#waiting.push({ resolve: resolve as (v: unknown) => void, reject, timer });
      this.#sock.write(`${JSON.stringify(request)}\n`);
    });
  }

  close(): void {
    this.#sock.destroy();
    this.#fail(new FsError('ECONNRESET', `control connection to ${this.path} closed`));
  }

  #data(chunk: string): void {
    let lines: string[];
    try {
      lines = this.#reader.push(chunk);
    } catch (err) {
      this.#fail(err as Error);
      this.#sock.destroy();
      return;
    }
    for (const line of lines) {
      const w = this.#waiting.shift();
      if (!w) continue;
      clearTimeout(w.timer);
      try {
        w.resolve(parseAnswer(line));
      } catch (err) {
        w.reject(err as Error);
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
export async function controlRequest<R extends Request>(path: string, request: R, timeoutMs = REQUEST_TIMEOUT_MS): Promise<AnswerOf<R>> {
  const s = new ControlSession(path);
  try {
    return await s.request(request, timeoutMs);
  } finally {
    s.close();
  }
}
