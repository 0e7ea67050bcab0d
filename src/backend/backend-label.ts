import { crc32cUpdate } from '../util/crc32c';

/*
 * The label at the start of every backend, like an LVM physical volume label: which pool and
 * which backend of it this is. It makes a backend recognisable when it is offered to another
 * pool, and keeps a pool from serving a file that is not its backend (a wrong path, a copy, a
 * file replaced while unmounted). Data starts at DATA_START, 1 MiB in, so that extents stay
 * aligned for any device.
 *
 * Layout (little endian): magic (16 bytes), pool uuid (16), backend id (u32), format (u32),
 * CRC-32C of the preceding 40 bytes (u32).
 */
export const LABEL_BYTES = 4096;
export const DATA_START = 1024 * 1024;

const MAGIC = Buffer.from('THINVOL-BACKEND\0', 'latin1');
const FORMAT = 1;
const CRC_AT = 40;

export interface BackendLabel { poolUuid: string; backendId: number }

export type LabelParse = { ok: true; label: BackendLabel } | { ok: false; reason: string; foreign: boolean };

const crcOf = (b: Buffer): number => (crc32cUpdate(0xffffffff, b.subarray(0, CRC_AT)) ^ 0xffffffff) >>> 0;

export function encodeLabel(l: BackendLabel): Buffer {
  const b = Buffer.alloc(LABEL_BYTES);
  MAGIC.copy(b, 0);
  Buffer.from(l.poolUuid.replace(/-/g, ''), 'hex').copy(b, 16);
  b.writeUInt32LE(l.backendId, 32);
  b.writeUInt32LE(FORMAT, 36);
  b.writeUInt32LE(crcOf(b), CRC_AT);
  return b;
}

/** `foreign` = the bytes are no thinvol label at all (as opposed to a damaged or newer one). */
export function parseLabel(b: Buffer): LabelParse {
  if (b.length < CRC_AT + 4 || !b.subarray(0, 16).equals(MAGIC)) return { ok: false, reason: 'it carries no thinvol backend label', foreign: true };
  if (b.readUInt32LE(CRC_AT) !== crcOf(b)) return { ok: false, reason: 'its thinvol label is damaged (checksum mismatch)', foreign: false };
  const format = b.readUInt32LE(36);
  if (format !== FORMAT) return { ok: false, reason: `its thinvol label has format ${format}, this thinvol knows ${FORMAT}`, foreign: false };
  const hex = b.subarray(16, 32).toString('hex');
  const poolUuid = `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  return { ok: true, label: { poolUuid, backendId: b.readUInt32LE(32) } };
}
