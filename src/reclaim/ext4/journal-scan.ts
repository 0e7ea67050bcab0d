import {
  blockTailOk,
  commitBlockOk,
  parseDescriptorTags,
  parseJbd2Header,
  parseRevokeRecords,
  tagChecksumOk,
  unescapeLogged,
  v1ChecksumAdd,
} from './jbd2-blocks';
import { JBD2_COMMIT_BLOCK, JBD2_DESCRIPTOR_BLOCK, JBD2_REVOKE_BLOCK, Jbd2Superblock } from './jbd2-superblock';
import { Parsed, accept, refuse } from '../parsed';

export interface JournalBlocks {
  block(n: number): Promise<Buffer>;
}

export interface JournalScan {
  /** Fully committed transactions found from s_start. */
  committed: number;
  /** Tid of the last fully committed transaction (s_sequence - 1 when none is in the log). */
  lastCommittedTid: number;
  /** Latest committed, un-revoked copy of each wanted filesystem block, unescaped. */
  overlay: Map<number, Buffer>;
  /** Why the walk stopped (end of log, torn transaction, ...). */
  endReason: string;
}

interface OpenTransaction {
  tid: number;
  revoked: Set<number>;
  copies: Map<number, Buffer>;
  /** First integrity problem seen; fatal only if the transaction turns out to be committed. */
  problem: string | null;
  v1Crc: number;
}

function openTransaction(tid: number): OpenTransaction {
  return { tid, revoked: new Set(), copies: new Map(), problem: null, v1Crc: 0xffffffff };
}

/**
 * Walks the log from s_start like jbd2 recovery's scan pass, and replays the committed
 * transactions' copies of the wanted blocks in memory (revokes applied, last copy wins).
 * The first transaction without a valid commit block ends the walk; a transaction that has
 * its commit block but fails any checksum refuses the whole journal.
 */
export async function scanJournal(jsb: Jbd2Superblock, log: JournalBlocks, wanted: (fsBlock: number) => boolean): Promise<Parsed<JournalScan>> {
  const overlay = new Map<number, Buffer>();
  if (jsb.start === 0) {
    return accept({ committed: 0, lastCommittedTid: (jsb.sequence - 1) >>> 0, overlay, endReason: 'journal is empty (s_start 0)' });
  }
  const logLen = jsb.last - jsb.first;
  const next = (b: number): number => (b + 1 >= jsb.last ? jsb.first : b + 1);
  let pos = jsb.start;
  let steps = 0;
  let committed = 0;
  let tx = openTransaction(jsb.sequence);
  const end = (why: string): Parsed<JournalScan> =>
    accept({ committed, lastCommittedTid: (tx.tid - 1) >>> 0, overlay, endReason: why });

  for (;;) {
    if (steps >= logLen) return refuse(`journal walk went round the whole ${logLen}-block log without reaching its end`);
    const at = pos;
    const block = await log.block(pos);
    pos = next(pos);
    steps++;
    const header = parseJbd2Header(block);
    if (header === null) return end(`no journal magic at log block ${at}`);
    if (header.sequence !== tx.tid) return end(`log block ${at} has sequence ${header.sequence}, expected ${tx.tid}`);
    switch (header.blockType) {
      case JBD2_DESCRIPTOR_BLOCK: {
        if (!blockTailOk(jsb, block)) tx.problem ??= `descriptor block at log block ${at} fails its checksum`;
        if (jsb.csumV1) tx.v1Crc = v1ChecksumAdd(tx.v1Crc, block);
        const tags = parseDescriptorTags(jsb, block);
        for (const tag of tags) {
          if (steps >= logLen) return refuse(`journal walk went round the whole ${logLen}-block log without reaching its end`);
          const dataAt = pos;
          const data = await log.block(pos);
          pos = next(pos);
          steps++;
          if (jsb.csumV1) tx.v1Crc = v1ChecksumAdd(tx.v1Crc, data);
          if (!tagChecksumOk(jsb, tag, tx.tid, data)) {
            tx.problem ??= `logged copy of block ${tag.block} at log block ${dataAt} fails its tag checksum`;
          }
          if (wanted(tag.block)) tx.copies.set(tag.block, unescapeLogged(tag, data));
        }
        continue;
      }
      case JBD2_REVOKE_BLOCK: {
        if (!blockTailOk(jsb, block)) tx.problem ??= `revoke block at log block ${at} fails its checksum`;
        const records = parseRevokeRecords(jsb, block);
        if (!records.ok) {
          tx.problem ??= `revoke block at log block ${at}: ${records.reason}`;
          continue;
        }
        for (const r of records.value) tx.revoked.add(r);
        continue;
      }
      case JBD2_COMMIT_BLOCK: {
        if (!commitBlockOk(jsb, block, tx.v1Crc)) {
          return refuse(`transaction ${tx.tid} has a commit block at log block ${at} whose checksum fails`);
        }
        if (tx.problem !== null) return refuse(`transaction ${tx.tid} is committed but its ${tx.problem}`);
        for (const r of tx.revoked) overlay.delete(r);
        for (const [b, data] of tx.copies) if (!tx.revoked.has(b)) overlay.set(b, data);
        committed++;
        tx = openTransaction((tx.tid + 1) >>> 0);
        continue;
      }
      default:
        return end(`log block ${at} has unknown block type ${header.blockType}`);
    }
  }
}
