import { close, fdatasync, fstat, ftruncate, open, read, writeSync, constants } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { promisify } from 'node:util';
import { readCached } from '../native/fileio';
import { lockFile } from '../native/flock';
import { FsError } from '../util/errors';
import type { BackendRecord } from '../store/records';
import type { Backend } from './backend';
import { LABEL_BYTES, parseLabel } from './backend-label';

const openP = promisify(open);
const readP = promisify(read);
const fdatasyncP = promisify(fdatasync);
const closeP = promisify(close);
const ftruncateP = promisify(ftruncate);
const fstatP = promisify(fstat);

const ioError = (message: string): FsError => new FsError('EIO', message);

/** A backend file or block device, addressed by byte offset. */
export class FileBackend implements Backend {
  /** Writes completed so far, and how many of them a finished fdatasync covers. */
  #completed = 0;
  #durable = 0;
  /** Reads try the page cache on the JavaScript thread first (false once the file says it cannot). */
  #readCached = true;

  private constructor(readonly record: BackendRecord, private readonly fd: number) {}

  /**
   * Opens a backend of pool `poolUuid`, holding a shared flock on it while open (so that no
   * other pool can take it). Refused: a file or device without this pool's label for this
   * backend (a wrong path, a copy of another backend), or one shorter than the space the pool
   * records for it (truncated while unmounted).
   */
  static async open(record: BackendRecord, poolUuid: string): Promise<FileBackend> {
    const fd = await openP(record.path, constants.O_RDWR);
    try {
      if (!lockFile(fd, 'shared', false)) throw ioError(`backend ${record.id} (${record.path}) is locked by another process (another pool is adding it?)`);
      const st = await fstatP(fd);
      const end = record.dataStart + record.capacityBytes;
      if (st.isFile() && st.size < end) {
        throw ioError(`backend ${record.id} (${record.path}) is ${st.size} bytes, shorter than the ${end} bytes the pool uses: it was truncated; restore it before using the pool`);
      }
      if (record.dataStart >= LABEL_BYTES) {
        const head = Buffer.alloc(LABEL_BYTES);
        await readP(fd, head, 0, LABEL_BYTES, 0);
        const l = parseLabel(head);
        const why = !l.ok ? l.reason : l.label.poolUuid !== poolUuid ? `it belongs to pool ${l.label.poolUuid}` : l.label.backendId !== record.id ? `it is backend ${l.label.backendId} of this pool` : undefined;
        if (why !== undefined) throw ioError(`backend ${record.id} (${record.path}) is not this pool's backend ${record.id}: ${why}`);
      }
      return new FileBackend(record, fd);
    } catch (err) {
      await closeP(fd);
      throw err;
    }
  }

  /**
   * Data in the page cache is copied on the JavaScript thread (no threadpool round trip, which
   * costs more than the copy); whatever is not cached is read through the threadpool, so the
   * event loop never waits for the disk.
   */
  async read(buf: Buffer, bufOffset: number, len: number, pos: number): Promise<void> {
    let done = 0;
    if (this.#readCached && len > 0) {
      const n = readCached(this.fd, buf, bufOffset, len, pos);
      if (n > 0) done = n;
      else if (n === -osConstants.errno.EOPNOTSUPP || n === -osConstants.errno.EINVAL) this.#readCached = false;
    }
    while (done < len) {
      const { bytesRead } = await readP(this.fd, buf, bufOffset + done, len - done, pos + done);
      if (bytesRead === 0) throw ioError(`backend ${this.record.id} (${this.record.path}) ends at ${pos + done}, inside space the pool uses: it was truncated`);
      done += bytesRead;
    }
  }

  /**
   * Written on the JavaScript thread: a buffered write copies into the page cache, which costs
   * less than the two thread wake-ups of libuv's threadpool (measured: 4 KiB random writes
   * 1.1x qemu-storage-daemon this way, 0.8x through the pool, which also made its threads
   * queue on the file's inode lock). The cost: while the kernel throttles this process for
   * dirty pages, no other request is served either; the pool's threads would have been
   * throttled the same way, with the writes waiting on them.
   */
  async write(buf: Buffer, bufOffset: number, len: number, pos: number): Promise<void> {
    let done = 0;
    while (done < len) done += writeSync(this.fd, buf, bufOffset + done, len - done, pos + done);
    this.#completed++;
  }

  /** Overlapping calls each wait for an fdatasync that started after their writes completed. */
  async flush(): Promise<void> {
    const target = this.#completed;
    if (target <= this.#durable) return;
    await fdatasyncP(this.fd);
    this.#durable = Math.max(this.#durable, target);
  }

  /**
   * Extends a file backend (sparse) to `size` bytes, durably: the size is on disk before the
   * transaction that hands the new space out.
   */
  async growTo(size: number): Promise<void> {
    if ((await fstatP(this.fd)).size >= size) return;
    await ftruncateP(this.fd, size);
    await fdatasyncP(this.fd);
  }

  close(): Promise<void> {
    return closeP(this.fd);
  }
}
