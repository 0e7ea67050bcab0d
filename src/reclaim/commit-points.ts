/** Enough for hours of ordinary commits; an fsync-heavy guest only loses precision past it. */
const MAX_POINTS = 4_096;
const TRIM_SLACK = 512;

/**
 * The guest's journal commit records in the order their writes arrived, each with the write
 * sequence number of the write that carried it. Bounded: past MAX_POINTS + TRIM_SLACK the oldest
 * are dropped. A dropped point only makes `firstAfter` answer a later commit, which is the
 * cautious direction.
 */
export class CommitPoints {
  readonly #seqs: number[] = [];
  readonly #tids: number[] = [];

  add(seq: number, tid: number): void {
    this.#seqs.push(seq);
    this.#tids.push(tid);
    if (this.#seqs.length <= MAX_POINTS + TRIM_SLACK) return;
    const drop = this.#seqs.length - MAX_POINTS;
    this.#seqs.splice(0, drop);
    this.#tids.splice(0, drop);
  }

  /** The tid of the first commit record that arrived after write `w`, if one did. */
  firstAfter(w: number): number | undefined {
    let lo = 0;
    let hi = this.#seqs.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.#seqs[mid]! > w) hi = mid;
      else lo = mid + 1;
    }
    return this.#tids[lo];
  }
}
