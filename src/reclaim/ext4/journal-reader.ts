import { VolumeReader } from '../planner';
import { JournalMap } from './journal-map';

/** Largest single read of journal blocks. */
const CHUNK_BYTES = 1 << 20;

/**
 * Reads journal blocks through the journal's block map, one window of up to 1 MiB of
 * physically contiguous blocks at a time, so a forward walk of the log costs few reads.
 */
export class JournalReader {
  #windowStart = -1;
  #windowLen = 0;
  #window: Buffer = Buffer.alloc(0);

  constructor(
    private readonly volume: VolumeReader,
    private readonly map: JournalMap,
    private readonly blockSize: number,
  ) {}

  /** Journal block n (0 <= n < map.blocks); a view valid until the next call. */
  async block(n: number): Promise<Buffer> {
    if (n < this.#windowStart || n >= this.#windowStart + this.#windowLen) await this.#load(n);
    const at = (n - this.#windowStart) * this.blockSize;
    return this.#window.subarray(at, at + this.blockSize);
  }

  async #load(n: number): Promise<void> {
    const run = this.#runOf(n);
    const maxBlocks = Math.max(1, Math.floor(CHUNK_BYTES / this.blockSize));
    const len = Math.min(maxBlocks, run.lblk + run.len - n);
    const pblk = run.pblk + (n - run.lblk);
    const data = await this.volume.read(pblk * this.blockSize, len * this.blockSize);
    const window = data.length >= len * this.blockSize ? data : Buffer.concat([data, Buffer.alloc(len * this.blockSize - data.length)]);
    this.#window = window;
    this.#windowStart = n;
    this.#windowLen = len;
  }

  #runOf(n: number): { lblk: number; pblk: number; len: number } {
    const runs = this.map.runs;
    let lo = 0;
    let hi = runs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const r = runs[mid];
      if (r === undefined) break;
      if (n < r.lblk) hi = mid - 1;
      else if (n >= r.lblk + r.len) lo = mid + 1;
      else return r;
    }
    throw new RangeError(`journal block ${n} is outside the journal's ${this.map.blocks} blocks`);
  }
}
