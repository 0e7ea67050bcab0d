import type { ReclaimReport } from '../reclaim/reclaimer';
import type { SnapshotRecord } from '../store/records';
import { FsError, errnoOf, type Errno } from '../util/errors';
import { constants } from 'node:os';

/*
 * The control protocol: JSON lines over a daemon's Unix socket. Each request gets one answer
 * line, in order: {"result": ...} or {"error": message, "code": errno name}. The answer types
 * go with the request types below; requests are validated once, here, on receipt.
 */

export type Request =
  | { op: 'reclaim'; volume: string; dryRun: boolean }
  | { op: 'hold'; change: number; seq: number; volume: number; start: number; end: number }
  | { op: 'apply'; change: number; seq: number; volume: number; generation: number }
  | { op: 'release'; change: number; seq: number }
  | { op: 'drop-reservations' }
  | { op: 'snapshot'; volume: string; name: string };

export interface Answers {
  reclaim: ReclaimReport;
  hold: { ms: number };
  apply: { ms: number };
  release: { ms: number };
  'drop-reservations': { ok: true };
  snapshot: SnapshotRecord;
}

export type AnswerOf<R extends Request> = Answers[R['op']];

/** Longest request line a daemon takes; a client that sends more is cut off. */
export const MAX_REQUEST_LINE = 4096;
/** Longest answer line a client takes (a reclaim report with its notes). */
export const MAX_ANSWER_LINE = 1024 * 1024;

const bad = (why: string): FsError => new FsError('EINVAL', `bad request: ${why}`);

function count(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw bad(`${what} must be a non-negative integer`);
  return v;
}

/** A request from its parsed JSON, or FsError(EINVAL) saying what is wrong with it. */
export function parseRequest(v: unknown): Request {
  if (typeof v !== 'object' || v === null) throw bad('not an object');
  const r = v as Record<string, unknown>;
  switch (r.op) {
    case 'reclaim':
      if (typeof r.volume !== 'string' || r.volume === '') throw bad('volume must be a name');
      return { op: 'reclaim', volume: r.volume, dryRun: r.dryRun === true };
    case 'hold': {
      const h = { op: 'hold' as const, change: count(r.change, 'change'), seq: count(r.seq, 'seq'), volume: count(r.volume, 'volume'), start: count(r.start, 'start'), end: count(r.end, 'end') };
      if (h.end <= h.start) throw bad('end must lie after start');
      return h;
    }
    case 'apply': return { op: 'apply', change: count(r.change, 'change'), seq: count(r.seq, 'seq'), volume: count(r.volume, 'volume'), generation: count(r.generation, 'generation') };
    case 'release': return { op: 'release', change: count(r.change, 'change'), seq: count(r.seq, 'seq') };
    case 'drop-reservations': return { op: 'drop-reservations' };
    case 'snapshot':
      if (typeof r.volume !== 'string' || r.volume === '') throw bad('volume must be a name');
      if (typeof r.name !== 'string' || r.name === '') throw bad('name must be a snapshot name');
      return { op: 'snapshot', volume: r.volume, name: r.name };
    default: throw bad(`unknown op ${JSON.stringify(r.op)}`);
  }
}

/** The answer line for a result or an error (its errno travels by name). */
export function answerLine(result: { ok: true; value: unknown } | { ok: false; error: unknown }): string {
  if (result.ok) return `${JSON.stringify({ result: result.value })}\n`;
  const err = result.error;
  const errno = errnoOf(err);
  const code = errno === undefined ? 'EIO' : (Object.entries(constants.errno).find(([, n]) => n === errno)?.[0] ?? 'EIO');
  return `${JSON.stringify({ error: err instanceof Error ? err.message : String(err), code })}\n`;
}

/** An answer line back into its result, or the FsError the daemon answered with. */
export function parseAnswer(line: string): unknown {
  let a: { result?: unknown; error?: unknown; code?: unknown };
  try {
    a = JSON.parse(line) as typeof a;
  } catch (err) {
    throw new FsError('EPROTO', 'malformed answer from the daemon', { cause: err });
  }
  if (typeof a.error === 'string') {
    const code = typeof a.code === 'string' && a.code in constants.errno ? (a.code as Errno) : 'EIO';
    throw new FsError(code, a.error);
  }
  return a.result;
}

/**
 * Splits a byte stream into lines without rescanning what it already scanned, and refuses a
 * line longer than `max` (the connection should then be dropped).
 */
export class LineReader {
  #buf = '';
  #scanned = 0;

  constructor(private readonly max: number) {}

  /** True while a line has begun and not yet ended. */
  get partial(): boolean {
    return this.#buf.length > 0;
  }

  /** Lines completed by `chunk`; throws FsError(EMSGSIZE) when a line grows past the limit. */
  push(chunk: string): string[] {
    this.#buf += chunk;
    const lines: string[] = [];
    for (let nl = this.#buf.indexOf('\n', this.#scanned); nl >= 0; nl = this.#buf.indexOf('\n')) {
      if (nl > this.max) break;
      lines.push(this.#buf.slice(0, nl));
      this.#buf = this.#buf.slice(nl + 1);
      this.#scanned = 0;
    }
    this.#scanned = this.#buf.length;
    if (this.#buf.length > this.max) throw new FsError('EMSGSIZE', `control line longer than ${this.max} bytes`);
    return lines;
  }
}
