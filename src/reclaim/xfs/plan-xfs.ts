import type { ByteRange, PlanResult, Planner, VolumeReader } from '../planner';
import { type Agf, BTREE_HDR_BYTES, parseAgf, parseAgfl } from './agf';
import { type FreeExtent, NULL_AGBLOCK, XFS_ABTB_CRC_MAGIC, XFS_ABTC_CRC_MAGIC, parseAllocBtreeBlock } from './btree';
import { BufferOverlay } from './buffer-overlay';
import { ChunkedReader } from './chunked-reader';
import { xfsChecksumOk } from '../../util/crc32c';
import { BLFT_AGF, BLFT_AGFL, BLFT_BTREE, XFS_BLF_CHUNK, parseBufLogFormat, parseExtentFreeItem } from './log-items';
import { type CommittedTransaction, XFS_LI_BUF, XFS_LI_EFD, XFS_LI_EFI } from './log-transactions';
import { type Parsed, accept, refuse } from '../parsed';
import { XFS_SB_MAGIC, XFS_SB_READ_BYTES, type XfsSuperblock, agLength, fsbToLinear, parseSuperblock } from './superblock';
import { type LogSummary, walkLog } from './walk-log';

const META_CHUNK_BYTES = 1 << 20;
const META_CHUNKS = 64;
const LOG_CHUNK_BYTES = 4 << 20;
const LOG_CHUNKS = 4;
const MAX_OVERLAY_BYTES = 256 << 20;
const MAX_TRANSACTION_BYTES = 256 << 20;
/** Buffer types whose logged contents can matter to the free-space view; 0 is kept because its type is unknown. */
const BLFT_KEPT: ReadonlySet<number> = new Set([0, BLFT_BTREE, BLFT_AGF, BLFT_AGFL]);
/** On-disk LSN never stamped by a log write (NULLCOMMITLSN). */
const NULL_LSN = 0xffffffffffffffffn;

/** Where the LSN and CRC fields sit in the metadata the planner reads. */
interface MetaKind {
  lsnOffset: number;
  crcOffset: number;
}
const AGF_KIND: MetaKind = { lsnOffset: 0xd0, crcOffset: 0xd8 };
const AGFL_KIND: MetaKind = { lsnOffset: 24, crcOffset: 0x20 };
const BTREE_KIND: MetaKind = { lsnOffset: 0x18, crcOffset: 0x34 };

class Refusal {
  constructor(readonly reason: string) {}
}

function take<T>(p: Parsed<T>): T {
  if (!p.ok) throw new Refusal(p.reason);
  return p.value;
}

interface PendingEfi {
  extents: Array<{ fsb: number; blocks: number }>;
}

/** Everything one plan needs while it walks the AGs. */
class XfsView {
  readonly overlay = new BufferOverlay(MAX_OVERLAY_BYTES);
  readonly efis = new Map<bigint, PendingEfi>();
  efdCount = 0;
  bufItems = 0;

  constructor(readonly sb: XfsSuperblock, readonly meta: ChunkedReader) {}

  /** Applies one committed transaction's buffer and extent-free items. */
  commit(t: CommittedTransaction): Parsed<null> {
    const fsBBs = (this.sb.dblocks * this.sb.blockSize) / 512;
    for (const item of t.items) {
      const region0 = item.regions[0] as Buffer;
      if (item.type === XFS_LI_BUF) {
        const fmt = parseBufLogFormat(region0, t.littleEndian);
        if (!fmt.ok) return refuse(`transaction at LSN ${t.commitLsn}: ${fmt.reason}`);
        if (fmt.value.daddr + fmt.value.lenBBs > fsBBs) return refuse(`transaction at LSN ${t.commitLsn} logs a buffer past the filesystem end`);
        const applied = this.overlay.apply(fmt.value, item.dataKept ? item.regions.slice(1) : null);
        if (!applied.ok) return refuse(`transaction at LSN ${t.commitLsn}: ${applied.reason}`);
        this.bufItems++;
      } else if (item.type === XFS_LI_EFI || item.type === XFS_LI_EFD) {
        const efx = parseExtentFreeItem(region0, t.littleEndian);
        if (!efx.ok) return refuse(`transaction at LSN ${t.commitLsn}: ${efx.reason}`);
        if (item.type === XFS_LI_EFI) this.efis.set(efx.value.id, { extents: efx.value.extents });
        else {
          this.efis.delete(efx.value.id);
          this.efdCount++;
        }
      }
    }
    return accept(null);
  }

  /**
   * Effective contents of a metadata buffer: the home block overlaid with its newest committed
   * logged image. Bytes in `needed` ranges must come from the log or from a home block whose CRC
   * holds, since a logged image's own CRC is stale until the kernel writes it back.
   */
  async effective(daddr: number, lenBBs: number, kind: MetaKind, headLsn: number, what: string): Promise<Effective> {
    const home = await this.meta.read(daddr * 512, lenBBs * 512);
    const homeLsn = home.readBigUInt64BE(kind.lsnOffset);
    if (homeLsn !== NULL_LSN && Number(homeLsn) > headLsn) {
      throw new Refusal(`${what} on disk carries LSN ${homeLsn}, newer than the log head ${headLsn}: the volume changed while it was read`);
    }
    const found = this.overlay.lookup(daddr, lenBBs);
    if (found.kind === 'unknown') throw new Refusal(`${what}: ${found.reason}`);
    if (found.kind === 'home') return { buf: home, logged: false };
    const buf = found.apply(home);
    const homeValid = xfsChecksumOk(home, home.length, kind.crcOffset) && home.readUInt32BE(0) === buf.readUInt32BE(0);
    const requireLogged = (from: number, to: number): void => {
      if (homeValid) return;
      for (let c = Math.floor(from / XFS_BLF_CHUNK); c * XFS_BLF_CHUNK < to; c++) {
        if (found.known[c] !== 1) throw new Refusal(`${what}: logged copy does not cover bytes ${from}..${to} and the home copy fails its CRC`);
      }
    };
    return { buf, logged: true, requireLogged };
  }
}

type Effective = { buf: Buffer; logged: false } | { buf: Buffer; logged: true; requireLogged: (from: number, to: number) => void };

interface TreeWalk {
  records: FreeExtent[];
  blocks: number[];
}

async function walkAllocBtree(view: XfsView, agf: Agf, magic: number, headLsn: number): Promise<TreeWalk> {
  const { sb } = view;
  const name = magic === XFS_ABTB_CRC_MAGIC ? 'bnobt' : 'cntbt';
  const root = magic === XFS_ABTB_CRC_MAGIC ? agf.bnoRoot : agf.cntRoot;
  const levels = magic === XFS_ABTB_CRC_MAGIC ? agf.bnoLevels : agf.cntLevels;
  const bbsPerBlock = sb.blockSize / 512;
  const visited = new Set<number>();
  const records: FreeExtent[] = [];
  let current = [root];
  for (let level = levels - 1; level >= 0; level--) {
    const next: number[] = [];
    for (let i = 0; i < current.length; i++) {
      const agbno = current[i] as number;
      if (visited.has(agbno)) throw new Refusal(`${name} of AG ${agf.agno} reaches block ${agbno} twice`);
      visited.add(agbno);
      const daddr = (agf.agno * sb.agBlocks + agbno) * bbsPerBlock;
      const image = await view.effective(daddr, bbsPerBlock, BTREE_KIND, headLsn, `${name} block ${agbno} of AG ${agf.agno}`);
      const place = { magic, agno: agf.agno, agbno, daddr, level, agLength: agf.length, checkCrc: !image.logged };
      const block = take(parseAllocBtreeBlock(image.buf, sb, place));
      if (image.logged) {
        const used = level === 0 ? block.records.length * 8 : block.ptrs.length * 8;
        image.requireLogged(0, BTREE_HDR_BYTES + used);
        if (level > 0) {
          const ptrBase = BTREE_HDR_BYTES + Math.floor((sb.blockSize - BTREE_HDR_BYTES) / 12) * 8;
          image.requireLogged(ptrBase, ptrBase + block.ptrs.length * 4);
        }
      }
      const left = i > 0 ? (current[i - 1] as number) : NULL_AGBLOCK;
      const right = i + 1 < current.length ? (current[i + 1] as number) : NULL_AGBLOCK;
      if (block.leftSib !== left || block.rightSib !== right) {
        throw new Refusal(`${name} block ${agbno} of AG ${agf.agno}: sibling links disagree with its parent's order`);
      }
      if (level > 0) next.push(...block.ptrs);
      else records.push(...block.records);
      if (block.level === 0 && block.records.length === 0 && levels > 1) throw new Refusal(`${name} of AG ${agf.agno} has an empty leaf`);
    }
    if (next.length > agf.length) throw new Refusal(`${name} of AG ${agf.agno} has more blocks than the AG`);
    current = next;
  }
  return { records, blocks: [...visited] };
}

function overlaps(aStart: number, aLen: number, bStart: number, bLen: number): boolean {
  return aStart < bStart + bLen && bStart < aStart + aLen;
}

/** Free extents of one AG in the effective view, after cross-checking both free-space trees. */
async function planAg(view: XfsView, agno: number, headLsn: number): Promise<FreeExtent[]> {
  const { sb } = view;
  const agStartBB = (agno * sb.agBlocks * sb.blockSize) / 512;
  const sectBBs = sb.sectSize / 512;
  const agfImage = await view.effective(agStartBB + sectBBs, sectBBs, AGF_KIND, headLsn, `AGF of AG ${agno}`);
  if (agfImage.logged) agfImage.requireLogged(0, AGF_KIND.crcOffset);
  const agf = take(parseAgf(agfImage.buf, sb, agno, !agfImage.logged));
  const agflImage = await view.effective(agStartBB + 3 * sectBBs, sectBBs, AGFL_KIND, headLsn, `AGFL of AG ${agno}`);
  if (agflImage.logged) agflImage.requireLogged(0, sb.sectSize);
  const freeList = take(parseAgfl(agflImage.buf, sb, agf, !agflImage.logged));

  const bno = await walkAllocBtree(view, agf, XFS_ABTB_CRC_MAGIC, headLsn);
  const cnt = await walkAllocBtree(view, agf, XFS_ABTC_CRC_MAGIC, headLsn);
  const where = `AG ${agno}`;

  let prevEnd = 0;
  let total = 0;
  let longest = 0;
  for (const r of bno.records) {
    if (r.start < prevEnd) throw new Refusal(`${where}: bnobt records out of order or overlapping at block ${r.start}`);
    prevEnd = r.start + r.blocks;
    total += r.blocks;
    longest = Math.max(longest, r.blocks);
  }
  for (let i = 1; i < cnt.records.length; i++) {
    const a = cnt.records[i - 1] as FreeExtent;
    const b = cnt.records[i] as FreeExtent;
    if (a.blocks > b.blocks || (a.blocks === b.blocks && a.start >= b.start)) throw new Refusal(`${where}: cntbt records out of order`);
  }
  const byStart = [...cnt.records].sort((a, b) => a.start - b.start);
  if (byStart.length !== bno.records.length || byStart.some((r, i) => r.start !== bno.records[i]?.start || r.blocks !== bno.records[i]?.blocks)) {
    throw new Refusal(`${where}: bnobt (${bno.records.length} extents, ${total} blocks) and cntbt (${cnt.records.length} extents) disagree`);
  }
  if (agf.freeBlocks !== total) throw new Refusal(`${where}: AGF counts ${agf.freeBlocks} free blocks, the btrees ${total}`);
  if (agf.longest !== longest) throw new Refusal(`${where}: AGF longest extent ${agf.longest} differs from the btrees' ${longest}`);

  const headerBlocks = Math.ceil((4 * sb.sectSize) / sb.blockSize);
  const inUse: Array<[number, number, string]> = [[0, headerBlocks, 'AG headers']];
  for (const b of [...bno.blocks, ...cnt.blocks]) inUse.push([b, 1, 'a free-space btree block']);
  for (const b of freeList) inUse.push([b, 1, 'a free list block']);
  const logLinear = fsbToLinear(sb, sb.logStart);
  if (Math.floor(logLinear / sb.agBlocks) === agno) inUse.push([logLinear - agno * sb.agBlocks, sb.logBlocks, 'the internal log']);
  const sortedUse = inUse.sort((a, b) => a[0] - b[0]);
  let j = 0;
  for (const r of bno.records) {
    while (j < sortedUse.length && (sortedUse[j] as [number, number, string])[0] + (sortedUse[j] as [number, number, string])[1] <= r.start) j++;
    for (let k = j; k < sortedUse.length; k++) {
      const [s, n, what] = sortedUse[k] as [number, number, string];
      if (s >= r.start + r.blocks) break;
      if (overlaps(r.start, r.blocks, s, n)) throw new Refusal(`${where}: free extent ${r.start}+${r.blocks} covers ${what} at block ${s}`);
    }
  }
  return bno.records;
}

function toRanges(sb: XfsSuperblock, perAg: FreeExtent[][]): ByteRange[] {
  const out: ByteRange[] = [];
  perAg.forEach((records, agno) => {
    for (const r of records) {
      const offset = (agno * sb.agBlocks + r.start) * sb.blockSize;
      const len = r.blocks * sb.blockSize;
      const last = out[out.length - 1];
      if (last && last.offset + last.len === offset) last.len += len;
      else out.push({ offset, len });
    }
  });
  return out;
}

function pendingEfiConflicts(view: XfsView, free: ByteRange[]): string | undefined {
  for (const efi of view.efis.values()) {
    for (const e of efi.extents) {
      const offset = fsbToLinear(view.sb, e.fsb) * view.sb.blockSize;
      const len = e.blocks * view.sb.blockSize;
      if (free.some((r) => overlaps(r.offset, r.len, offset, len))) {
        return `extent at FSB ${e.fsb} (${e.blocks} blocks) has a committed free intent without its done item, yet the btrees hold it free`;
      }
    }
  }
  return undefined;
}

function logNotes(log: LogSummary, view: XfsView): string[] {
  const notes = [
    log.clean
      ? `log clean (unmount record before BB ${log.head})`
      : `log tail BB ${log.tail}, head BB ${log.head}: ${log.records} records, ${log.transactions} committed transactions, ${view.bufItems} buffer items replayed`,
  ];
  if (log.uncommitted > 0) notes.push(`${log.uncommitted} uncommitted transactions before the head ignored`);
  if (log.tornBBs > 0) notes.push(`${log.tornBBs} blocks of a torn log write before the head ignored`);
  if (view.efis.size > 0 || view.efdCount > 0) notes.push(`${view.efis.size} extent free intents pending, ${view.efdCount} done items seen`);
  return notes;
}

async function plan(volume: VolumeReader, state: { fs: 'xfs' | 'none' }): Promise<PlanResult> {
  const meta = new ChunkedReader(volume, META_CHUNK_BYTES, META_CHUNKS);
  const sbBuf = await meta.read(0, XFS_SB_READ_BYTES);
  if (sbBuf.readUInt32BE(0) !== XFS_SB_MAGIC) return { ok: false, fs: 'none', reason: "no XFS superblock magic 'XFSB' at offset 0" };
  state.fs = 'xfs';
  const sb = take(parseSuperblock(sbBuf));
  if (sb.dblocks * sb.blockSize > volume.sizeBytes) {
    return { ok: false, fs: 'xfs', reason: `filesystem of ${sb.dblocks * sb.blockSize} bytes is larger than the ${volume.sizeBytes}-byte volume` };
  }
  const view = new XfsView(sb, meta);
  const log = take(
    await walkLog(sb, new ChunkedReader(volume, LOG_CHUNK_BYTES, LOG_CHUNKS), {
      maxTransactionBytes: MAX_TRANSACTION_BYTES,
      blftKept: BLFT_KEPT,
      onCommit: (t) => view.commit(t),
    }),
  );
  const perAg: FreeExtent[][] = [];
  for (let agno = 0; agno < sb.agCount; agno++) perAg.push(await planAg(view, agno, log.headLsn));
  const free = toRanges(sb, perAg);
  const conflict = pendingEfiConflicts(view, free);
  if (conflict) return { ok: false, fs: 'xfs', reason: conflict };
  const notes = logNotes(log, view);
  notes.push(`${sb.agCount} AGs of ${sb.agBlocks} blocks (last ${agLength(sb, sb.agCount - 1)}), ${meta.reads} metadata reads`);
  return {
    ok: true,
    fs: 'xfs',
    blockSize: sb.blockSize,
    examinedBlocks: sb.dblocks,
    free,
    commit: { seq: log.commitLsn, exact: false },
    journal: [{ offset: fsbToLinear(sb, sb.logStart) * sb.blockSize, len: sb.logBlocks * sb.blockSize }],
    notes,
  };
}

/**
 * Reports the byte ranges an XFS filesystem holds free in its committed view: each AG's
 * bnobt walked from the AGF through home blocks overlaid with every committed logged copy.
 */
export const planXfs: Planner = async (volume) => {
  const state: { fs: 'xfs' | 'none' } = { fs: 'none' };
  try {
    return await plan(volume, state);
  } catch (err: unknown) {
    if (err instanceof Refusal) return { ok: false, fs: state.fs, reason: err.reason };
    const message = err instanceof Error ? err.message : String(err);
    return { ok: false, fs: state.fs, reason: `reading the filesystem failed: ${message}` };
  }
};
