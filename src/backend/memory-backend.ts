import type { Backend } from './backend';

/** A backend in memory: the reference implementation, for unit tests and the power-cut model. */
export class MemoryBackend implements Backend {
  readonly bytes: Buffer;
  /** Called for every write (after the bytes changed) and every flush. */
  onWrite: ((pos: number, data: Buffer) => void) | undefined;
  onFlush: (() => void) | undefined;

  /** A zeroed backend of `size` bytes, or one over the given bytes (not copied). */
  constructor(size: number | Buffer) {
    this.bytes = typeof size === 'number' ? Buffer.alloc(size) : size;
  }

  async read(buf: Buffer, bufOffset: number, len: number, pos: number): Promise<void> {
    this.#check(pos, len);
    this.bytes.copy(buf, bufOffset, pos, pos + len);
  }

  async write(buf: Buffer, bufOffset: number, len: number, pos: number): Promise<void> {
    this.#check(pos, len);
    buf.copy(this.bytes, pos, bufOffset, bufOffset + len);
    this.onWrite?.(pos, Buffer.from(buf.subarray(bufOffset, bufOffset + len)));
  }

  async flush(): Promise<void> {
    this.onFlush?.();
  }

  async close(): Promise<void> {}

  #check(pos: number, len: number): void {
    if (pos < 0 || len < 0 || pos + len > this.bytes.length) throw new Error(`memory backend: [${pos},+${len}) is outside its ${this.bytes.length} bytes`);
  }
}
