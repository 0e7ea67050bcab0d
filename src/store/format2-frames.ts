/**
 * The stream format2-dump.ts writes: a record frame is [u8 database index][u32 key length]
 * [u32 value length][key][value] (lengths little-endian); the stream ends with [u8 255]
 * [u32 record count], so that a reader can tell a complete dump from a cut one.
 */
export const END = 255;
const HEAD = 9;

export function recordFrame(db: number, key: Buffer, value: Buffer): Buffer {
  const head = Buffer.alloc(HEAD);
  head.writeUInt8(db, 0);
  head.writeUInt32LE(key.length, 1);
  head.writeUInt32LE(value.length, 5);
  return Buffer.concat([head, key, value]);
}

export function endFrame(count: number): Buffer {
  const b = Buffer.alloc(5);
  b.writeUInt8(END, 0);
  b.writeUInt32LE(count, 1);
  return b;
}

export type Frame = { db: number; key: Buffer; value: Buffer } | { end: number };

/** Splits a byte stream into frames; pushes bytes in as they come, takes out the frames complete so far. */
export class FrameReader {
  #buf: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): Frame[] {
    this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
    const frames: Frame[] = [];
    let at = 0;
    for (;;) {
      if (this.#buf.length - at >= 5 && this.#buf[at] === END) {
        frames.push({ end: this.#buf.readUInt32LE(at + 1) });
        at += 5;
        continue;
      }
      if (this.#buf.length - at < HEAD) break;
      const klen = this.#buf.readUInt32LE(at + 1);
      const vlen = this.#buf.readUInt32LE(at + 5);
      if (this.#buf.length - at < HEAD + klen + vlen) break;
      const key = Buffer.from(this.#buf.subarray(at + HEAD, at + HEAD + klen));
      const value = Buffer.from(this.#buf.subarray(at + HEAD + klen, at + HEAD + klen + vlen));
      frames.push({ db: this.#buf[at] ?? 0, key, value });
      at += HEAD + klen + vlen;
    }
    this.#buf = this.#buf.subarray(at);
    return frames;
  }

  /** Bytes received that make no complete frame yet. */
  get pending(): number {
    return this.#buf.length;
  }
}
