import { ByteRange, PlanResult, Planner, VolumeReader } from '../planner';
import { blockBitmapChecksumOk, freeCountAgrees, freeRuns, synthesizeUninitBitmap } from './block-bitmap';
import { BlockRun, mergeRuns, subtractRuns } from './block-runs';
import { fetchBlocks } from './fetch-blocks';
import { GroupDesc, parseGroupDesc } from './group-desc';
import { baseMetaBlocks, descriptorLocation, groupBlockCount, groupFirstBlock, inodeTableBlocks } from './group-geometry';
import { commitRecordTid } from './jbd2-blocks';
import { parseJbd2Superblock } from './jbd2-superblock';
import { parseJournalInode } from './journal-inode';
import { type JournalMap, mapJournal } from './journal-map';
import { JournalReader } from './journal-reader';
import { scanJournal } from './journal-scan';
import { EXT4_SUPERBLOCK_OFFSET, EXT4_SUPERBLOCK_SIZE, Ext4Superblock, hasExt4Magic, parseSuperblock } from './superblock';

/** Groups whose bitmaps are fetched and scanned together: bounds memory on large filesystems. */
const BITMAP_BATCH_GROUPS = 1024;
/** Skipped groups named one per note; the rest are only counted, so a badly damaged filesystem cannot flood the report. */
const MAX_SKIP_NOTES = 16;

class Refusal extends Error {}

function refuseExt4(reason: string): never {
  throw new Refusal(reason);
}

function readDescriptors(sb: Ext4Superblock, overlay: Map<number, Buffer> | null, home: Map<number, Buffer>, label: string): GroupDesc[] {
  const descs: GroupDesc[] = [];
  for (let g = 0; g < sb.groupCount; g++) {
    const loc = descriptorLocation(sb, g);
    const block = overlay?.get(loc.block) ?? home.get(loc.block);
    if (block === undefined) refuseExt4(`${label} descriptor block ${loc.block} of group ${g} was not read`);
    const parsed = parseGroupDesc(sb, g, block.subarray(loc.offset, loc.offset + sb.descSize));
    if (!parsed.ok) refuseExt4(`${label} ${parsed.reason}`);
    descs.push(parsed.value);
  }
  return descs;
}

async function plan(volume: VolumeReader, superblock: Buffer): Promise<PlanResult> {
  const notes: string[] = [];
  const sb0 = parseSuperblock(superblock);
  if (!sb0.ok) refuseExt4(sb0.reason);
  const sb = sb0.value;
  const bs = sb.blockSize;
  if (sb.blocksCount * bs > volume.sizeBytes) {
    refuseExt4(`filesystem claims ${sb.blocksCount} blocks of ${bs} bytes, more than the ${volume.sizeBytes}-byte volume`);
  }
  if (!sb.hasJournal) refuseExt4('filesystem has no journal (HAS_JOURNAL unset): no commit point to order releases against');
  if (sb.journalInum === 0) refuseExt4(`journal is external (s_journal_inum 0, s_journal_dev 0x${sb.journalDev.toString(16)}) and not visible in this volume`);
  if (sb.journalInum > sb.inodesCount) refuseExt4(`s_journal_inum ${sb.journalInum} beyond s_inodes_count ${sb.inodesCount}`);

  const descBlocks = new Set<number>();
  for (let g = 0; g < sb.groupCount; g++) descBlocks.add(descriptorLocation(sb, g).block);
  for (const b of descBlocks) if (b >= sb.blocksCount) refuseExt4(`descriptor block ${b} lies beyond the filesystem`);
  const homeDescBlocks = await fetchBlocks(volume, bs, descBlocks);
  const homeDescs = readDescriptors(sb, null, homeDescBlocks, 'on-disk');

  const jg = Math.floor((sb.journalInum - 1) / sb.inodesPerGroup);
  const jIndex = (sb.journalInum - 1) % sb.inodesPerGroup;
  const jGroup = homeDescs[jg];
  if (jGroup === undefined) refuseExt4(`journal inode ${sb.journalInum} maps to missing group ${jg}`);
  const inodeRaw = await volume.read(jGroup.inodeTable * bs + jIndex * sb.inodeSize, sb.inodeSize);
  const jInode = parseJournalInode(inodeRaw);
  if (!jInode.ok) refuseExt4(`journal inode ${sb.journalInum}: ${jInode.reason}`);
  if (sb.journalBlocksBackup !== null && !sb.journalBlocksBackup.equals(jInode.value.iblock)) {
    refuseExt4(`journal inode ${sb.journalInum} block map differs from the superblock's s_jnl_blocks backup`);
  }
  const jmap = await mapJournal(sb, sb.journalInum, jInode.value, async (b) => (await fetchBlocks(volume, bs, [b])).get(b) ?? Buffer.alloc(bs));
  if (!jmap.ok) refuseExt4(jmap.reason);
  const log = new JournalReader(volume, jmap.value, bs);
  const jsb0 = parseJbd2Superblock(Buffer.from(await log.block(0)), bs, jmap.value.blocks);
  if (!jsb0.ok) refuseExt4(jsb0.reason);
  const jsb = jsb0.value;
  if (jsb.start !== 0 && !sb.needsRecovery) {
    refuseExt4(`journal holds transactions (s_start ${jsb.start}) but the superblock's needs_recovery flag is clear; the kernel would discard them`);
  }
  if (jsb.errno !== 0) notes.push(`journal records error ${jsb.errno} (aborted journal); only its committed transactions are used`);
  if (jsb.fastCommitBlocks > 0) notes.push(`fast-commit area of ${jsb.fastCommitBlocks} blocks not interpreted: frees it records show at the next full commit`);

  const homeBitmaps = new Set(homeDescs.map((d) => d.blockBitmap));
  const scan = await scanJournal(jsb, log, (b) => descBlocks.has(b) || homeBitmaps.has(b));
  if (!scan.ok) refuseExt4(scan.reason);
  const { overlay } = scan.value;
  notes.push(`journal: ${scan.value.committed} committed transaction(s) overlaid, last committed tid ${scan.value.lastCommittedTid}; ${scan.value.endReason}`);

  const descs = readDescriptors(sb, overlay, homeDescBlocks, 'committed');
  for (let g = 0; g < descs.length; g++) {
    const d = descs[g] as GroupDesc;
    if (!homeBitmaps.has(d.blockBitmap)) refuseExt4(`group ${g} block bitmap moved to ${d.blockBitmap} in the journal; not followed`);
  }

  const free: BlockRun[] = [];
  let uninit = 0;
  let fromJournal = 0;
  let disagreeing = 0;
  for (let batch = 0; batch < sb.groupCount; batch += BITMAP_BATCH_GROUPS) {
    const end = Math.min(sb.groupCount, batch + BITMAP_BATCH_GROUPS);
    const need: number[] = [];
    for (let g = batch; g < end; g++) {
      const d = descs[g] as GroupDesc;
      if (!d.blockUninit && !overlay.has(d.blockBitmap)) need.push(d.blockBitmap);
    }
    const home = await fetchBlocks(volume, bs, need);
    for (let g = batch; g < end; g++) {
      const d = descs[g] as GroupDesc;
      let bitmap: Buffer | undefined;
      if (d.blockUninit) {
        bitmap = synthesizeUninitBitmap(sb, g, d);
        uninit++;
      } else {
        const logged = overlay.get(d.blockBitmap);
        if (logged !== undefined) fromJournal++;
        bitmap = logged ?? home.get(d.blockBitmap);
        if (bitmap === undefined) refuseExt4(`block bitmap ${d.blockBitmap} of group ${g} was not read`);
        if (!blockBitmapChecksumOk(sb, d, bitmap)) {
          notes.push(`group ${g}: block bitmap checksum mismatch, group treated as fully used`);
          continue;
        }
      }
      // Without metadata_csum nothing vouches for a bitmap's bytes (a zeroed one reads as all
      // free), so its clear bits must match the free count of the group's committed descriptor;
      // for BLOCK_UNINIT this also checks the synthesis against what mke2fs recorded. The kernel
      // changes bitmap and count together, under the group lock in one journal handle
      // (ext4_mb_mark_context; in older kernels ext4_mb_mark_diskspace_used, ext4_mb_clear_bb),
      // so each committed transaction carries both or neither. Legitimate disagreements remain,
      // and skip the group like damage does: the reads of a mounted volume are not one snapshot
      // (descriptors are read before the journal, bitmaps after, and a checkpoint in between shows
      // in one only); online resize journals a grown last group with the new block count, while
      // groupBlockCount uses the home superblock's; fast-commit replay writes bitmap and
      // descriptor home one after the other, outside the journal. Bits past the filesystem end
      // are set by the kernel and excluded from its count, so only the group's real bits count.
      const runs = freeRuns(bitmap, groupBlockCount(sb, g), groupFirstBlock(sb, g));
      const bitmapFree = runs.reduce((n, r) => n + r.count, 0);
      if (!freeCountAgrees(bitmapFree, d)) {
        if (disagreeing < MAX_SKIP_NOTES) {
          notes.push(`group ${g}: bitmap shows ${bitmapFree} free blocks, its descriptor says ${d.freeBlocksCount}: nothing released from it`);
        }
        disagreeing++;
        continue;
      }
      free.push(...runs);
    }
  }
  if (disagreeing > MAX_SKIP_NOTES) {
    notes.push(`${disagreeing - MAX_SKIP_NOTES} more group(s) whose bitmap disagrees with its descriptor's free count: nothing released from them`);
  }
  notes.push(`${sb.groupCount} groups: ${fromJournal} bitmap(s) from the journal, ${uninit} synthesised for BLOCK_UNINIT`);

  const meta: BlockRun[] = [{ start: 0, count: sb.firstDataBlock }];
  const itBlocks = inodeTableBlocks(sb);
  for (let g = 0; g < sb.groupCount; g++) {
    meta.push({ start: groupFirstBlock(sb, g), count: baseMetaBlocks(sb, g) });
    for (const d of [descs[g] as GroupDesc, homeDescs[g] as GroupDesc]) {
      meta.push({ start: d.blockBitmap, count: 1 }, { start: d.inodeBitmap, count: 1 }, { start: d.inodeTable, count: itBlocks });
    }
  }
  for (const r of jmap.value.runs) meta.push({ start: r.pblk, count: r.len });
  for (const b of jmap.value.treeBlocks) meta.push({ start: b, count: 1 });
  if (sb.mmpBlock !== 0) meta.push({ start: sb.mmpBlock, count: 1 });

  const usable = subtractRuns(mergeRuns(free), mergeRuns(meta));
  const ranges: ByteRange[] = [];
  for (const r of usable) {
    const start = r.start;
    const endBlock = Math.min(r.start + r.count, sb.blocksCount);
    if (endBlock > start) ranges.push({ offset: start * bs, len: (endBlock - start) * bs });
  }
  return {
    ok: true,
    fs: 'ext4',
    blockSize: bs,
    examinedBlocks: sb.blocksCount,
    free: ranges,
    commit: { seq: scan.value.lastCommittedTid, exact: true },
    journal: journalRanges(jmap.value, bs),
    commitRecord: commitRecordTid,
    notes,
  };
}

/** The journal's physical runs as volume byte ranges, in volume order, adjacent runs merged. */
function journalRanges(map: JournalMap, bs: number): ByteRange[] {
  const out: ByteRange[] = [];
  for (const r of [...map.runs].sort((a, b) => a.pblk - b.pblk)) {
    const last = out[out.length - 1];
    if (last && last.offset + last.len === r.pblk * bs) last.len += r.len * bs;
    else out.push({ offset: r.pblk * bs, len: r.len * bs });
  }
  return out;
}

/**
 * ext4 planner: the blocks free in the committed view (on-disk bitmaps overlaid with every
 * committed, not yet checkpointed jbd2 transaction), minus all filesystem metadata. Never
 * throws: anything it cannot follow becomes ok:false with the reason.
 */
export const planExt4: Planner = async (volume) => {
  let magic = false;
  try {
    if (!(volume.sizeBytes >= EXT4_SUPERBLOCK_OFFSET + EXT4_SUPERBLOCK_SIZE)) {
      return { ok: false, fs: 'none', reason: `volume of ${volume.sizeBytes} bytes is too small to hold an ext4 superblock` };
    }
    const head = await volume.read(EXT4_SUPERBLOCK_OFFSET, EXT4_SUPERBLOCK_SIZE);
    if (!hasExt4Magic(head)) return { ok: false, fs: 'none', reason: 'no ext4 magic 0xEF53 at volume byte 1080' };
    magic = true;
    return await plan(volume, head);
  } catch (e) {
    if (e instanceof Refusal) return { ok: false, fs: 'ext4', reason: e.message };
    const why = e instanceof Error ? e.message : String(e);
    return { ok: false, fs: magic ? 'ext4' : 'none', reason: `planner stopped on an unexpected error: ${why}` };
  }
};
