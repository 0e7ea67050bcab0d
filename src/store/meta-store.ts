import type { BackendRecord, ChangeRecord, DaemonRecord, Holder, LayerRecord, Lease, SnapshotRecord, Superblock, VolumeRecord } from './records';
import type { Table } from './table';

export type FreeKey = [backendId: number, start: number];
export type PendingKey = [holder: string, backendId: number, start: number];
export interface Reservation { len: number; volumeId: number }

/** The pool's tables: the persistent schema. */
export interface Tables {
  readonly meta: Table<string, Superblock>;
  readonly backends: Table<number, BackendRecord>;
  readonly volumes: Table<number, VolumeRecord>;
  readonly names: Table<string, number>;
  /** Packed binary entries; see VolumeMap. */
  readonly map: Table<Buffer, Buffer>;
  readonly free: Table<FreeKey, number>;
  readonly pending: Table<PendingKey, Reservation>;
  readonly claims: Table<number, Holder>;
  readonly daemons: Table<string, DaemonRecord>;
  readonly changes: Table<number, ChangeRecord>;
  readonly leases: Table<string, Lease>;
  readonly layers: Table<number, LayerRecord>;
  readonly snapshots: Table<number, SnapshotRecord>;
}

/**
 * The metadata store: named tables changed only in transactions. A transaction is atomic, and
 * durable when `txn` returns: whatever a reader in any process sees has reached the disk. That
 * is what lets a freed block be reused as soon as the free table shows it, and what orders a
 * map commit after the data it points at (the caller flushes the data first).
 */
export interface MetaStore extends Tables {
  /** Runs `fn` as one transaction (nested calls join the outer one); a throw aborts it. */
  txn<T>(fn: () => T): T;
  /** Drops this process's read snapshot, so the next read sees every committed change. */
  freshView(): void;
  close(): Promise<void>;
}
