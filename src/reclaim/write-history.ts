/**
 * Fine enough that a block the guest freed is rarely judged by a neighbour it rewrote (XFS
 * reuses freed space close by), coarse enough that MAX_CHUNKS covers 512 MiB of recent writes.
 */
const CHUNK = 64 * 1024;
const MAX_CHUNKS = 8_192;
/**
 * Chunks past MAX_CHUNKS before the oldest are dropped, all in one pass. Dropping one per write
 * cost a Map iterator per write that skipped every entry deleted since the Map's last rehash:
 * under 1 MiB sequential writes that was ~3.5% of the daemon's CPU, and its garbage fed full GCs.
 */
const TRIM_SLACK = 512;

export interface WrittenPiece { start: number; end: number; seq: number }

/**
 * When each 64 KiB chunk of a volume was last written, as a write sequence number. Bounded:
 * past MAX_CHUNKS + TRIM_SLACK the least recently written chunks are dropped down to MAX_CHUNKS,
 * and `floor` remembers the newest sequence dropped, so an unknown chunk is assumed written then
 * (never earlier).
 */
export class WriteHistory {
  #seq = 0;
  #floor = 0;
  readonly #chunks = new Map<number, number>();

  get seq(): number {
    return this.#seq;
  }

  record(start: number, end: number): void {
    const s = ++this.#seq;
    for (let c = Math.floor(start / CHUNK); c * CHUNK < end; c++) {
      this.#chunks.delete(c);
      this.#chunks.set(c, s);
    }
    if (this.#chunks.size <= MAX_CHUNKS + TRIM_SLACK) return;
    let drop = this.#chunks.size - MAX_CHUNKS;
    for (const [chunk, seq] of this.#chunks) {
      if (drop-- === 0) break;
      this.#chunks.delete(chunk);
      this.#floor = Math.max(this.#floor, seq);
    }
  }

  /** Latest write sequence touching [start, end); 0 = not written since the daemon started. */
  lastWrite(start: number, end: number): number {
    let last = 0;
    for (const p of this.pieces(start, end)) last = Math.max(last, p.seq);
    return last;
  }

  /** [start, end) cut at chunk boundaries, each piece with its latest write sequence. */
  *pieces(start: number, end: number): Generator<WrittenPiece> {
    for (let c = Math.floor(start / CHUNK); c * CHUNK < end; c++) {
      yield { start: Math.max(start, c * CHUNK), end: Math.min(end, (c + 1) * CHUNK), seq: this.#chunks.get(c) ?? this.#floor };
    }
  }
}
