/**
 * The contract between the reclaim framework and one filesystem's reader. A planner reads
 * a volume (through `VolumeReader`, never by itself) and reports which byte ranges the guest
 * filesystem holds free in its committed view: on-disk allocation state overlaid with every
 * fully committed journal/log transaction not yet checkpointed. Planners are pure apart from
 * the reads they ask for; they never write.
 */

export interface VolumeReader {
  readonly sizeBytes: number;
  /** Bytes [offset, offset+len) of the volume; zeros past the end or in holes. */
  read(offset: number, len: number): Promise<Buffer>;
}

export interface ByteRange { offset: number; len: number }

/** Bytes at the start of a journal block that `commitRecord` reads. */
export const JOURNAL_HEAD_BYTES = 12;

export interface CommitMark {
  /** Monotone position of the last fully committed transaction (jbd2 tid, XFS LSN as cycle * 2^32 + block). */
  seq: number;
  /** True when seq counts transactions one by one (jbd2 tids); false when it only orders them (XFS LSN). */
  exact: boolean;
}

export type PlanResult =
  | {
      ok: true;
      fs: 'ext4' | 'xfs';
      blockSize: number;
      /** Filesystem blocks looked at (the whole filesystem size in blocks). */
      examinedBlocks: number;
      /** Free in the committed view, in volume byte offsets, sorted, non-overlapping, merged. */
      free: ByteRange[];
      commit: CommitMark;
      /** Where the journal (ext4) or internal log (XFS) lies, in volume byte offsets, sorted. */
      journal: ByteRange[];
      /**
       * ext4: the tid a journal block names if it is a commit record, read from its first
       * JOURNAL_HEAD_BYTES. Absent for XFS.
       */
      commitRecord?: (head: Buffer) => number | undefined;
      notes: string[];
    }
  | {
      ok: false;
      /** 'none' when the volume holds no filesystem this planner knows. */
      fs: 'ext4' | 'xfs' | 'none';
      /** Why nothing may be released: unknown feature, bad checksum, torn transaction, ... */
      reason: string;
    };

export type Planner = (volume: VolumeReader) => Promise<PlanResult>;
