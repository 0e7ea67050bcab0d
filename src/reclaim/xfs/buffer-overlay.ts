import { type BufLogFormat, XFS_BLF_CANCEL, XFS_BLF_CHUNK, applyBufRegions } from './log-items';
import { type Parsed, accept, refuse } from '../parsed';

interface Entry {
  lenBBs: number;
  /** Logged image so far; null when the latest logged copy is of a type whose data was not kept. */
  data: Buffer | null;
  known: Uint8Array;
  /** Chunks not in `known` come from a logged copy that was not kept, not from the home block. */
  baseUnknown: boolean;
}

export type OverlayLookup =
  | { kind: 'home' }
  | { kind: 'logged'; known: Uint8Array; apply: (home: Buffer) => Buffer }
  | { kind: 'unknown'; reason: string };

/**
 * The newest committed logged image of each buffer, built by replaying buffer log items in
 * commit order over the home blocks (xlog_recover_do_reg_buffer): logged 128-byte chunks
 * replace the home bytes, a cancel item makes the home block authoritative again.
 */
export class BufferOverlay {
  readonly #entries = new Map<number, Entry>();
  readonly #maxBytes: number;
  #bytes = 0;
  #maxLenBBs = 1;

  constructor(maxBytes: number) {
    this.#maxBytes = maxBytes;
  }

  get size(): number {
    return this.#entries.size;
  }

  /** Replays one committed buffer item; `regions` are its data regions, or null when they were not kept. */
  apply(fmt: BufLogFormat, regions: readonly Buffer[] | null): Parsed<null> {
    this.#maxLenBBs = Math.max(this.#maxLenBBs, fmt.lenBBs);
    const old = this.#entries.get(fmt.daddr);
    if (old?.data) this.#bytes -= old.data.length;
    if (fmt.flags & XFS_BLF_CANCEL) {
      if (old && old.lenBBs === fmt.lenBBs) this.#entries.delete(fmt.daddr);
      else if (old) this.#entries.set(fmt.daddr, { ...old, data: null });
      return accept(null);
    }
    if (regions === null) {
      this.#entries.set(fmt.daddr, { lenBBs: fmt.lenBBs, data: null, known: new Uint8Array(0), baseUnknown: true });
      return accept(null);
    }
    const chunks = (fmt.lenBBs * 512) / XFS_BLF_CHUNK;
    const reuse = old && old.data && old.lenBBs === fmt.lenBBs ? old : undefined;
    const entry: Entry = reuse ?? {
      lenBBs: fmt.lenBBs,
      data: Buffer.alloc(fmt.lenBBs * 512),
      known: new Uint8Array(chunks),
      baseUnknown: old !== undefined,
    };
    const applied = applyBufRegions(fmt, regions, entry.data as Buffer, entry.known);
    if (!applied.ok) return applied;
    this.#entries.set(fmt.daddr, entry);
    this.#bytes += (entry.data as Buffer).length;
    if (this.#bytes > this.#maxBytes) return refuse(`logged metadata buffers exceed ${this.#maxBytes} bytes`);
    return accept(null);
  }

  /** How to obtain the effective contents of the buffer at `daddr` of `lenBBs` blocks. */
  lookup(daddr: number, lenBBs: number): OverlayLookup {
    for (let d = daddr - this.#maxLenBBs + 1; d < daddr + lenBBs; d++) {
      const e = this.#entries.get(d);
      if (e && d !== daddr && d + e.lenBBs > daddr) {
        return { kind: 'unknown', reason: `logged buffer at daddr ${d} overlaps daddr ${daddr}` };
      }
    }
    const e = this.#entries.get(daddr);
    if (!e) return { kind: 'home' };
    if (e.lenBBs !== lenBBs) return { kind: 'unknown', reason: `logged buffer at daddr ${daddr} has ${e.lenBBs} blocks, not ${lenBBs}` };
    const data = e.data;
    if (!data) return { kind: 'unknown', reason: `latest logged copy of daddr ${daddr} is not free-space metadata` };
    const complete = e.known.every((k) => k === 1);
    if (!complete && e.baseUnknown) return { kind: 'unknown', reason: `logged copy of daddr ${daddr} is partial over an unkept earlier copy` };
    return {
      kind: 'logged',
      known: e.known,
      apply: (home: Buffer): Buffer => {
        const out = Buffer.from(home.subarray(0, data.length));
        e.known.forEach((k, i) => {
          if (k) data.copy(out, i * XFS_BLF_CHUNK, i * XFS_BLF_CHUNK, (i + 1) * XFS_BLF_CHUNK);
        });
        return out;
      },
    };
  }
}
