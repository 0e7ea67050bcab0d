import { expect } from 'chai';
import { BufferOverlay } from '../../src/reclaim/xfs/buffer-overlay';
import { crc32cUpdate } from '../../src/util/crc32c';
import { applyBufRegions, parseBufLogFormat, parseExtentFreeItem } from '../../src/reclaim/xfs/log-items';
import { parseRecordHeader } from '../../src/reclaim/xfs/log-record';
import { TransactionAssembler, XFS_LI_BUF } from '../../src/reclaim/xfs/log-transactions';
import { type XfsSuperblock, fsbToLinear, parseSuperblock } from '../../src/reclaim/xfs/superblock';

const KEEP_ALL = new Set([0, 4, 5, 6]);

function op(tid: number, flags: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(12);
  h.writeUInt32BE(tid, 0);
  h.writeUInt32BE(payload.length, 4);
  h.writeUInt8(0x69, 8);
  h.writeUInt8(flags, 9);
  return Buffer.concat([h, payload]);
}

function transHeader(regions: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt32LE(0x5452414e, 0);
  b.writeUInt32LE(40, 4);
  b.writeUInt32LE(regions, 12);
  return b;
}

/** A little-endian buf log format for `daddr` (len BBs) with the given map word. */
function bufFormat(daddr: number, lenBBs: number, map: number, flags = 0x2000): Buffer {
  const b = Buffer.alloc(24);
  b.writeUInt16LE(XFS_LI_BUF, 0);
  b.writeUInt16LE(1 + Math.max(0, popcountRuns(map)), 2);
  b.writeUInt16LE(flags, 4);
  b.writeUInt16LE(lenBBs, 6);
  b.writeBigInt64LE(BigInt(daddr), 8);
  b.writeUInt32LE(1, 0x10);
  b.writeUInt32LE(map >>> 0, 0x14);
  return b;
}

function popcountRuns(map: number): number {
  let runs = 0;
  for (let bit = 0; bit < 32; bit++) if ((map >>> bit) & 1 && !(bit > 0 && (map >>> (bit - 1)) & 1)) runs++;
  return runs;
}

describe('XFS parsers', function () {
  it('crc32cUpdate() gives the standard CRC-32C check value', function () {
    expect((~crc32cUpdate(0xffffffff, Buffer.from('123456789')) >>> 0).toString(16)).to.equal('e3069283');
  });

  it('fsbToLinear() decodes AG number and AG block when the AG size is not a power of two', function () {
    const sb = { agBlocks: 38400, agBlkLog: 16 } as XfsSuperblock;
    expect(fsbToLinear(sb, 69492)).to.equal(38400 + 3956);
    expect(fsbToLinear(sb, (3 << 16) | 7)).to.equal(3 * 38400 + 7);
  });

  it('parseSuperblock() refuses a sector without the XFS magic and a v4 superblock', function () {
    expect(parseSuperblock(Buffer.alloc(512)).ok).to.equal(false);
    const v4 = Buffer.alloc(512);
    v4.writeUInt32BE(0x58465342, 0);
    v4.writeUInt16BE(0xb4a4, 0x64);
    const r = parseSuperblock(v4);
    expect(r.ok).to.equal(false);
    if (!r.ok) expect(r.reason).to.match(/v4/);
  });

  it('parseRecordHeader() refuses a bad magic and an oversized record', function () {
    expect(parseRecordHeader(Buffer.alloc(512)).ok).to.equal(false);
    const h = Buffer.alloc(512);
    h.writeUInt32BE(0xfeedbabe, 0);
    h.writeUInt32BE(1, 4);
    h.writeUInt32BE(2, 8);
    h.writeUInt32BE(1 << 20, 0x0c);
    const r = parseRecordHeader(h);
    expect(r.ok).to.equal(false);
    if (!r.ok) expect(r.reason).to.match(/length/);
  });

  it('TransactionAssembler joins a region split across records and returns only committed transactions', function () {
    const asm = new TransactionAssembler(1 << 20, KEEP_ALL);
    const fmt = bufFormat(64, 8, 0b1);
    const chunk = Buffer.alloc(128, 0xab);
    const rec1 = Buffer.concat([op(7, 0x01), op(7, 0, transHeader(2)), op(7, 0, fmt), op(7, 0x04, chunk.subarray(0, 50)), op(9, 0x01)]);
    const first = asm.addRecord(rec1, 5, 1 * 2 ** 32 + 2, true);
    expect(first).to.deep.equal({ ok: true, value: [] });
    const rec2 = Buffer.concat([op(7, 0x08 | 0x10, chunk.subarray(50)), op(7, 0x02)]);
    const second = asm.addRecord(rec2, 2, 1 * 2 ** 32 + 10, true);
    if (!second.ok) expect.fail(second.reason);
    expect(second.value).to.have.length(1);
    const t = second.value[0];
    expect(t?.commitLsn).to.equal(1 * 2 ** 32 + 10);
    expect(t?.startLsn).to.equal(1 * 2 ** 32 + 2);
    expect(t?.items).to.have.length(1);
    expect(t?.items[0]?.regions[1]).to.deep.equal(chunk);
    expect(asm.openCount).to.equal(1);
  });

  it('TransactionAssembler refuses an op from an unknown client', function () {
    const asm = new TransactionAssembler(1 << 20, KEEP_ALL);
    const bad = op(7, 0x01);
    bad.writeUInt8(0x42, 8);
    expect(asm.addRecord(bad, 1, 0, true).ok).to.equal(false);
  });

  it('applyBufRegions() copies each region to the next run of its data map', function () {
    const fmt = parseBufLogFormat(bufFormat(0, 8, 0b1011), true);
    if (!fmt.ok) expect.fail(fmt.reason);
    expect(fmt.value.runs).to.deep.equal([[0, 2], [3, 1]]);
    const target = Buffer.alloc(4096);
    const known = new Uint8Array(32);
    const r = applyBufRegions(fmt.value, [Buffer.alloc(256, 1), Buffer.alloc(128, 3)], target, known);
    expect(r.ok).to.equal(true);
    expect([target[0], target[255], target[256], target[384]]).to.deep.equal([1, 1, 0, 3]);
    expect(applyBufRegions(fmt.value, [Buffer.alloc(256, 1)], target, known).ok).to.equal(false);
  });

  it('parseBufLogFormat() refuses a map naming chunks past the buffer', function () {
    expect(parseBufLogFormat(bufFormat(0, 1, 0b110000), true).ok).to.equal(false);
  });

  it('parseExtentFreeItem() reads both the 64-bit and the packed 32-bit extent layouts', function () {
    const wide = Buffer.alloc(32);
    wide.writeUInt16LE(0x1236, 0);
    wide.writeUInt32LE(1, 4);
    wide.writeBigUInt64LE(69492n, 16);
    wide.writeUInt32LE(5, 24);
    expect(parseExtentFreeItem(wide, true)).to.deep.include({ ok: true });
    const packed = Buffer.alloc(28);
    packed.writeUInt32LE(1, 4);
    packed.writeBigUInt64LE(10n, 16);
    packed.writeUInt32LE(2, 24);
    const r = parseExtentFreeItem(packed, true);
    if (!r.ok) expect.fail(r.reason);
    expect(r.value.extents).to.deep.equal([{ fsb: 10, blocks: 2 }]);
    expect(parseExtentFreeItem(Buffer.alloc(20), true).ok).to.equal(false);
  });

  it('BufferOverlay makes the home block authoritative again after a cancel item', function () {
    const overlay = new BufferOverlay(1 << 20);
    const fmt = parseBufLogFormat(bufFormat(800, 8, 0xffffffff), true);
    if (!fmt.ok) expect.fail(fmt.reason);
    const regions = [Buffer.alloc(4096, 9)];
    expect(overlay.apply(fmt.value, regions).ok).to.equal(true);
    const logged = overlay.lookup(800, 8);
    expect(logged.kind).to.equal('logged');
    if (logged.kind === 'logged') expect(logged.apply(Buffer.alloc(4096))[100]).to.equal(9);
    expect(overlay.lookup(804, 8).kind, 'an overlapping buffer is not trusted').to.equal('unknown');
    const cancel = parseBufLogFormat(bufFormat(800, 8, 0, 0x2002), true);
    if (!cancel.ok) expect.fail(cancel.reason);
    expect(overlay.apply(cancel.value, null).ok).to.equal(true);
    expect(overlay.lookup(800, 8).kind).to.equal('home');
  });

  it('BufferOverlay does not trust a block whose latest logged copy was of another type', function () {
    const overlay = new BufferOverlay(1 << 20);
    const dir = parseBufLogFormat(bufFormat(800, 8, 0b1, 10 << 11), true);
    if (!dir.ok) expect.fail(dir.reason);
    expect(overlay.apply(dir.value, null).ok).to.equal(true);
    expect(overlay.lookup(800, 8).kind).to.equal('unknown');
  });
});
