/** CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), shared by the ext4/jbd2 and XFS readers. */

/** Slicing-by-4 tables: T[k][b] is the CRC of byte b followed by k zero bytes. */
const TABLES: Uint32Array[] = [new Uint32Array(256)];
for (let i = 0; i < 256; i++) {
  let c = i;
  for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  (TABLES[0] as Uint32Array)[i] = c >>> 0;
}
for (let t = 1; t < 4; t++) {
  const prev = TABLES[t - 1] as Uint32Array;
  const base = TABLES[0] as Uint32Array;
  TABLES.push(prev.map((c) => ((base[c & 0xff] as number) ^ (c >>> 8)) >>> 0));
}
const [T0, T1, T2, T3] = TABLES as [Uint32Array, Uint32Array, Uint32Array, Uint32Array];

/** Raw CRC-32C update (no pre/post inversion), the kernel's crc32c(). */
export function crc32cUpdate(crc: number, data: Uint8Array): number {
  let c = crc >>> 0;
  let i = 0;
  const end4 = data.length - (data.length % 4);
  for (; i < end4; i += 4) {
    c ^= (data[i] as number) | ((data[i + 1] as number) << 8) | ((data[i + 2] as number) << 16) | ((data[i + 3] as number) << 24);
    c = (T3[c & 0xff] as number) ^ (T2[(c >>> 8) & 0xff] as number) ^ (T1[(c >>> 16) & 0xff] as number) ^ (T0[c >>> 24] as number);
  }
  for (; i < data.length; i++) c = (T0[(c ^ (data[i] as number)) & 0xff] as number) ^ (c >>> 8);
  return c >>> 0;
}

/**
 * True when the little-endian CRC stored at `crcOffset` matches `buf[0, length)` checksummed
 * with that field taken as zero (xfs_verify_cksum).
 */
export function xfsChecksumOk(buf: Buffer, length: number, crcOffset: number): boolean {
  if (length > buf.length || crcOffset + 4 > length) return false;
  let c = crc32cUpdate(0xffffffff, buf.subarray(0, crcOffset));
  c = crc32cUpdate(c, new Uint8Array(4));
  c = crc32cUpdate(c, buf.subarray(crcOffset + 4, length));
  return (~c >>> 0) === buf.readUInt32LE(crcOffset);
}
