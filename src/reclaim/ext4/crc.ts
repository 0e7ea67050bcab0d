import { crc32cUpdate } from '../../util/crc32c';

/**
 * Checksum primitives used by ext4 and jbd2. All are "raw": the caller passes the running
 * value and gets it back without a final inversion, which is how the kernel chains them.
 */

function reflectedTable(poly: number): Uint32Array {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ poly : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
}

const T16 = reflectedTable(0xa001);
const T32BE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i << 24;
    for (let k = 0; k < 8; k++) c = c & 0x80000000 ? (c << 1) ^ 0x04c11db7 : c << 1;
    t[i] = c >>> 0;
  }
  return t;
})();

/** CRC-32C without pre/post inversion: the kernel's crc32c(seed, data). */
export const crc32cRaw = crc32cUpdate;

/** MSB-first CRC-32 (poly 0x04C11DB7), no reflection, no final xor: jbd2 checksum v1. */
export function crc32BeRaw(crc: number, data: Uint8Array): number {
  let c = crc >>> 0;
  for (let i = 0; i < data.length; i++) c = ((c << 8) ^ (T32BE[((c >>> 24) ^ (data[i] as number)) & 0xff] as number)) >>> 0;
  return c;
}

/** CRC-16 (poly 0x8005 reflected), as used by ext4 uninit_bg group descriptor checksums. */
export function crc16(crc: number, data: Uint8Array): number {
  let c = crc & 0xffff;
  for (let i = 0; i < data.length; i++) c = ((T16[(c ^ (data[i] as number)) & 0xff] as number) ^ (c >>> 8)) & 0xffff;
  return c;
}

export function le32Bytes(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0, 0);
  return b;
}

export function be32Bytes(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v >>> 0, 0);
  return b;
}
