import { open, type Database, type RootDatabase } from 'lmdb';
import type { BackendRecord, ChangeRecord, DaemonRecord, Holder, Lease, Superblock, VolumeRecord } from './records';

interface LmdbSync { sync(callback: (err: unknown) => void): void }

export type FreeKey = [backendId: number, start: number];
export type PendingKey = [holder: string, backendId: number, start: number];

/**
 * The pool's one LMDB environment and its named databases. This is the only module that
 * knows LMDB; everything above works through the typed databases it exposes.
 */
export class PoolStore {
  readonly env: RootDatabase;
  readonly meta: Database<Superblock, string>;
  readonly backends: Database<BackendRecord, number>;
  readonly volumes: Database<VolumeRecord, number>;
  readonly names: Database<number, string>;
  /** Packed binary entries; see VolumeMap. */
  readonly map: Database<Buffer, Buffer>;
  readonly free: Database<number, FreeKey>;
  readonly pending: Database<{ len: number; volumeId: number }, PendingKey>;
  readonly claims: Database<Holder, number>;
  readonly daemons: Database<DaemonRecord, string>;
  readonly changes: Database<ChangeRecord, number>;
  readonly leases: Database<Lease, string>;

  constructor(readonly file: string) {
    // noSync: commits reach the OS page cache (they survive a daemon crash); durability is
    // forced with sync() where it is promised (fsync) and periodically.
    this.env = open({ path: file, noSubdir: true, noSync: true, maxDbs: 16, mapSize: 64 * 1024 ** 3 });
    this.meta = this.env.openDB({ name: 'meta' });
    this.backends = this.env.openDB({ name: 'backends', keyEncoding: 'ordered-binary' });
    this.volumes = this.env.openDB({ name: 'volumes', keyEncoding: 'ordered-binary' });
    this.names = this.env.openDB({ name: 'names' });
    this.map = this.env.openDB({ name: 'map', keyEncoding: 'binary', encoding: 'binary' });
    this.free = this.env.openDB({ name: 'free', keyEncoding: 'ordered-binary' });
    this.pending = this.env.openDB({ name: 'pending', keyEncoding: 'ordered-binary' });
    this.claims = this.env.openDB({ name: 'claims', keyEncoding: 'ordered-binary' });
    this.daemons = this.env.openDB({ name: 'daemons' });
    this.changes = this.env.openDB({ name: 'changes', keyEncoding: 'ordered-binary' });
    this.leases = this.env.openDB({ name: 'leases' });
  }

  txn<T>(fn: () => T): T {
    return this.env.transactionSync(fn);
  }

  /** Drops this process's read snapshot so that the next read sees every committed change. */
  freshView(): void {
    this.env.resetReadTxn();
  }

  sync(): Promise<void> {
    return new Promise((resolve, reject) => {
      (this.env as unknown as LmdbSync).sync((err: unknown) => (err ? reject(err instanceof Error ? err : new Error(String(err))) : resolve()));
    });
  }

  async close(): Promise<void> {
    await this.sync();
    await this.env.close();
  }
}
