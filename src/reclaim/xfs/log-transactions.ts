import { type Parsed, accept, refuse } from '../parsed';

const OP_HEADER_BYTES = 12;
const CLIENT_TRANSACTION = 0x69;
const CLIENT_LOG = 0xaa;
const START_TRANS = 0x01;
const COMMIT_TRANS = 0x02;
const CONTINUE_TRANS = 0x04;
const WAS_CONT_TRANS = 0x08;
const END_TRANS = 0x10;
const UNMOUNT_TRANS = 0x20;
const TRANS_HEADER_MAGIC = 0x5452414e;
const TRANS_HEADER_BYTES = 16;
/** XLOG_MAX_REGIONS_IN_ITEM: the most regions one log item may have. */
const MAX_REGIONS_IN_ITEM = 257;

export const XFS_LI_EFI = 0x1236;
export const XFS_LI_EFD = 0x1237;
export const XFS_LI_BUF = 0x123c;
const XFS_BLF_CANCEL = 0x2;

/** A log item of a committed transaction; `regions` holds the data only where the planner needs it. */
export interface LogItem {
  type: number;
  /** Region 0 (the format structure), then the data regions of kept buffer items. */
  regions: Buffer[];
  /** False when data regions were dropped because the item cannot affect free space. */
  dataKept: boolean;
}

export interface CommittedTransaction {
  tid: number;
  /** LSN (cycle * 2^32 + block) of the record holding the transaction's start. */
  startLsn: number;
  /** LSN of the record holding the commit op. */
  commitLsn: number;
  /** Item format structures are little-endian (h_fmt 1). */
  littleEndian: boolean;
  items: LogItem[];
}

interface ItemBuilder {
  total: number;
  regions: Buffer[];
  count: number;
  keep: boolean | undefined;
}

interface OpenTransaction {
  tid: number;
  startLsn: number;
  littleEndian: boolean;
  header: Buffer;
  headerDone: boolean;
  items: ItemBuilder[];
}

/** Decides, once region 0 is long enough, whether an item's data regions matter for free space. */
function keepItemData(region0: Buffer, littleEndian: boolean, blftKept: ReadonlySet<number>): boolean | undefined {
  if (region0.length < 6) return undefined;
  const type = littleEndian ? region0.readUInt16LE(0) : region0.readUInt16BE(0);
  if (type !== XFS_LI_BUF) return type === XFS_LI_EFI || type === XFS_LI_EFD;
  const flags = littleEndian ? region0.readUInt16LE(4) : region0.readUInt16BE(4);
  return (flags & XFS_BLF_CANCEL) === 0 && blftKept.has(flags >>> 11);
}

/**
 * Reassembles log operations into transactions across records (xlog_recover_process_data):
 * ops are grouped by ticket id from their START op, split regions are joined, and a
 * transaction is returned once its COMMIT op is seen. Feed records in log order.
 */
export class TransactionAssembler {
  readonly #open = new Map<number, OpenTransaction>();
  readonly #maxBytes: number;
  readonly #blftKept: ReadonlySet<number>;
  #bytes = 0;

  /**
   * @param maxBytes bound on the bytes held for open transactions
   * @param blftKept buffer types (BLFT) whose logged contents are kept; others keep only their format region
   */
  constructor(maxBytes: number, blftKept: ReadonlySet<number>) {
    this.#maxBytes = maxBytes;
    this.#blftKept = blftKept;
  }

  /** Transactions started but not committed so far. */
  get openCount(): number {
    return this.#open.size;
  }

  /** Processes the unpacked data of one record; returns the transactions it commits, in order. */
  addRecord(data: Buffer, numLogOps: number, recordLsn: number, littleEndian: boolean): Parsed<CommittedTransaction[]> {
    const committed: CommittedTransaction[] = [];
    let pos = 0;
    for (let op = 0; op < numLogOps && pos < data.length; op++) {
      if (pos + OP_HEADER_BYTES > data.length) return refuse(`op header ${op} runs past the record end`);
      const tid = data.readUInt32BE(pos);
      const len = data.readUInt32BE(pos + 4);
      const client = data.readUInt8(pos + 8);
      const flags = data.readUInt8(pos + 9);
      pos += OP_HEADER_BYTES;
      if (client !== CLIENT_TRANSACTION && client !== CLIENT_LOG) return refuse(`op ${op} has unknown client id 0x${client.toString(16)}`);
      if (len > data.length - pos) return refuse(`op ${op} payload of ${len} bytes runs past the record end`);
      const payload = data.subarray(pos, pos + len);
      pos += len;

      const trans = this.#open.get(tid);
      if (!trans) {
        if (flags & START_TRANS) {
          this.#open.set(tid, { tid, startLsn: recordLsn, littleEndian, header: Buffer.alloc(TRANS_HEADER_BYTES), headerDone: false, items: [] });
        }
        continue;
      }
      let f = flags & ~END_TRANS;
      if (f & WAS_CONT_TRANS) f &= ~CONTINUE_TRANS;
      let result: Parsed<null>;
      switch (f) {
        case 0:
        case CONTINUE_TRANS:
          result = this.#addRegion(trans, payload, littleEndian);
          break;
        case WAS_CONT_TRANS:
          result = this.#continueRegion(trans, payload, littleEndian);
          break;
        case COMMIT_TRANS: {
          this.#open.delete(tid);
          const done = this.#finish(trans, recordLsn);
          if (!done.ok) return refuse(done.reason);
          committed.push(done.value);
          continue;
        }
        case UNMOUNT_TRANS:
          this.#drop(tid);
          continue;
        default:
          return refuse(`transaction 0x${tid.toString(16)} has op with unexpected flags 0x${flags.toString(16)}`);
      }
      if (!result.ok) return refuse(`transaction 0x${tid.toString(16)}: ${result.reason}`);
      if (this.#bytes > this.#maxBytes) return refuse(`open transactions exceed ${this.#maxBytes} bytes`);
    }
    return accept(committed);
  }

  #drop(tid: number): void {
    const trans = this.#open.get(tid);
    if (!trans) return;
    for (const item of trans.items) for (const r of item.regions) this.#bytes -= r.length;
    this.#open.delete(tid);
  }

  #addRegion(trans: OpenTransaction, payload: Buffer, le: boolean): Parsed<null> {
    if (payload.length === 0) return accept(null);
    if (!trans.headerDone) {
      const magic = payload.length >= 4 ? (le ? payload.readUInt32LE(0) : payload.readUInt32BE(0)) : 0;
      if (magic !== TRANS_HEADER_MAGIC) return refuse('bad transaction header magic');
      if (payload.length > TRANS_HEADER_BYTES) return refuse('transaction header is too long');
      payload.copy(trans.header, 0);
      trans.headerDone = payload.length === TRANS_HEADER_BYTES;
      return accept(null);
    }
    let item = trans.items[trans.items.length - 1];
    if (!item || item.count === item.total) {
      item = { total: 0, regions: [], count: 0, keep: undefined };
      trans.items.push(item);
    }
    if (item.total === 0) {
      if (payload.length < 4) return refuse('log item format region is shorter than 4 bytes');
      const size = le ? payload.readUInt16LE(2) : payload.readUInt16BE(2);
      if (size === 0 || size > MAX_REGIONS_IN_ITEM) return refuse(`log item claims ${size} regions`);
      item.total = size;
    }
    if (item.count >= item.total) return refuse('log item has more regions than it declares');
    item.count++;
    if (item.count === 1 || item.keep !== false) {
      item.regions.push(Buffer.from(payload));
      this.#bytes += payload.length;
    }
    if (item.count === 1) item.keep = keepItemData(payload, le, this.#blftKept);
    return accept(null);
  }

  #continueRegion(trans: OpenTransaction, payload: Buffer, le: boolean): Parsed<null> {
    if (!trans.headerDone) {
      if (payload.length > TRANS_HEADER_BYTES) return refuse('transaction header continuation is too long');
      payload.copy(trans.header, TRANS_HEADER_BYTES - payload.length);
      trans.headerDone = true;
      return accept(null);
    }
    const item = trans.items[trans.items.length - 1];
    if (!item || item.count === 0) return refuse('continuation without a region to continue');
    if (item.keep === false && item.count > 1) return accept(null);
    const last = item.regions.length - 1;
    const prev = item.regions[last];
    if (prev === undefined) return refuse('continuation without a region to continue');
    item.regions[last] = Buffer.concat([prev, payload]);
    this.#bytes += payload.length;
    if (item.count === 1) item.keep = keepItemData(item.regions[last] as Buffer, le, this.#blftKept);
    return accept(null);
  }

  #finish(trans: OpenTransaction, commitLsn: number): Parsed<CommittedTransaction> {
    const items: LogItem[] = [];
    for (const item of trans.items) {
      for (const r of item.regions) this.#bytes -= r.length;
      if (item.total === 0) continue;
      if (item.count !== item.total) return refuse(`transaction 0x${trans.tid.toString(16)} commits an item with ${item.count} of ${item.total} regions`);
      const region0 = item.regions[0];
      if (region0 === undefined || region0.length < 4) return refuse(`transaction 0x${trans.tid.toString(16)} has an item without a format region`);
      const type = trans.littleEndian ? region0.readUInt16LE(0) : region0.readUInt16BE(0);
      items.push({ type, regions: item.regions, dataKept: item.keep !== false });
    }
    return accept({ tid: trans.tid, startLsn: trans.startLsn, commitLsn, littleEndian: trans.littleEndian, items });
  }
}
