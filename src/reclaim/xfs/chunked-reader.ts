import type { VolumeReader } from '../planner';

/**
 * Serves small reads from a few large aligned chunks, so walking scattered metadata does
 * not turn into thousands of tiny reads against the FUSE-served volume.
 */
export class ChunkedReader {
  readonly #volume: VolumeReader;
  readonly #chunkBytes: number;
  readonly #maxChunks: number;
  readonly #chunks = new Map<number, Buffer>();
  #reads = 0;

  constructor(volume: VolumeReader, chunkBytes: number, maxChunks: number) {
    this.#volume = volume;
    this.#chunkBytes = chunkBytes;
    this.#maxChunks = maxChunks;
  }

  /** Reads issued to the volume so far. */
  get reads(): number {
    return this.#reads;
  }

  async read(offset: number, len: number): Promise<Buffer> {
    const out = Buffer.alloc(len);
    let done = 0;
    while (done < len) {
      const at = offset + done;
      const index = Math.floor(at / this.#chunkBytes);
      const chunk = await this.#chunk(index);
      const from = at - index * this.#chunkBytes;
      const n = Math.min(len - done, this.#chunkBytes - from);
      chunk.copy(out, done, from, from + n);
      done += n;
    }
    return out;
  }

  async #chunk(index: number): Promise<Buffer> {
    const cached = this.#chunks.get(index);
    if (cached) {
      this.#chunks.delete(index);
      this.#chunks.set(index, cached);
      return cached;
    }
    const start = index * this.#chunkBytes;
    const len = Math.max(0, Math.min(this.#chunkBytes, this.#volume.sizeBytes - start));
    this.#reads++;
    const data = len > 0 ? await this.#volume.read(start, len) : Buffer.alloc(0);
    const chunk = Buffer.alloc(this.#chunkBytes);
    data.copy(chunk, 0, 0, Math.min(data.length, len));
    if (this.#chunks.size >= this.#maxChunks) {
      const oldest = this.#chunks.keys().next();
      if (!oldest.done) this.#chunks.delete(oldest.value);
    }
    this.#chunks.set(index, chunk);
    return chunk;
  }
}
