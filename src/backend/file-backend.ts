import { close, fdatasync, fstat, open, read, write, writeSync, constants } from 'node:fs';
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
const writeP = promisify(write);
const fdatasyncP = promisify(fdatasync);
const closeP = promisify(close);
const fstatP = promisify(fstat);

const ioError = (message: string): FsError => new FsError('EIO', message);

/** Writes up to this size may run on the JavaScript thread (a copy into the page cache). */
const INLINE_WRITE_MAX = 64 * 1024;
/** An inline write slower than this waited for something (dirty-page throttling, the journal, the disk). */
const SLOW_INLINE_NS = 1_000_000n;
/** After a slow inline write, writes go through the threadpool for this long, doubled while it recurs, up to the max. */
const INLINE_PAUSE_MS = 100;
const INLINE_PAUSE_MAX_MS = 10_000;

/** A backend file or block device, addressed by byte offset. */
export class FileBackend implements Backend {
  /** Writes completed so far, and how many of them a finished fdatasync covers. */
  #completed = 0;
  #durable = 0;
  /** Reads try the page cache on the JavaScript thread first (false once the file says it cannot). */
  #readCached = true;
  /** Inline writes are paused until this time (Date.now()); the current pause length. */
  #inlineAfter = 0;
  #inlinePause = 0;

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
   * A small write is normally a copy into the page cache, cheaper on the JavaScript thread than a
   * threadpool round trip. It can wait, though (dirty-page throttling, the filesystem's journal,
   * a page to read first), and buffered writes have no RWF_NOWAIT here, so each inline write is
   * timed: one that took over 1 ms sends writes to the threadpool for 100 ms, doubled (up to
   * 10 s) while that recurs within the pause after the last one. The event loop thus stalls at
   * most once per pause. Durability is the same either way: flush() covers every completed write.
   */
  async write(buf: Buffer, bufOffset: number, len: number, pos: number): Promise<void> {
    if (len <= INLINE_WRITE_MAX && Date.now() >= this.#inlineAfter) {
      const t0 = process.hrtime.bigint();
      for (let done = 0; done < len;) done += writeSync(this.fd, buf, bufOffset + done, len - done, pos + done);
      this.#completed++;
      if (process.hrtime.bigint() - t0 > SLOW_INLINE_NS) {
        const now = Date.now();
        const recurring = now < this.#inlineAfter + this.#inlinePause;
        this.#inlinePause = recurring ? Math.min(this.#inlinePause * 2, INLINE_PAUSE_MAX_MS) : INLINE_PAUSE_MS;
        this.#inlineAfter = now + this.#inlinePause;
      }
      return;
    }
    let done = 0;
    while (done < len) {
      const { bytesWritten } = await writeP(this.fd, buf, bufOffset + done, len - done, pos + done);
      done += bytesWritten;
    }
    this.#completed++;
  }

  /** Overlapping calls each wait for an fdatasync that started after their writes completed. */
  async flush(): Promise<void> {
    const target = this.#completed;
    if (target <= this.#durable) return;
    await fdatasyncP(this.fd);
    this.#durable = Math.max(this.#durable, target);
  }

  close(): Promise<void> {
    return closeP(this.fd);
  }
}
