import { close, fdatasync, open, read, write, constants } from 'node:fs';
import { promisify } from 'node:util';
import type { BackendRecord } from '../pool/records';

const openP = promisify(open);
const readP = promisify(read);
const writeP = promisify(write);
const fdatasyncP = promisify(fdatasync);
const closeP = promisify(close);

/** A backend file or block device, addressed by byte offset. Ranges are checked by the caller. */
export class FileBackend {
  #dirty = false;

  private constructor(readonly record: BackendRecord, private readonly fd: number) {}

  static async open(record: BackendRecord): Promise<FileBackend> {
    try {
      return new FileBackend(record, await openP(record.path, constants.O_RDWR));
    } catch (err) {
      throw new Error(`cannot open backend ${record.id} (${record.path}): ${(err as Error).message}`);
    }
  }

  async read(buf: Buffer, bufOffset: number, len: number, pos: number): Promise<void> {
    let done = 0;
    while (done < len) {
      const { bytesRead } = await readP(this.fd, buf, bufOffset + done, len - done, pos + done);
      if (bytesRead === 0) { buf.fill(0, bufOffset + done, bufOffset + len); return; }
      done += bytesRead;
    }
  }

  async write(buf: Buffer, bufOffset: number, len: number, pos: number): Promise<void> {
    this.#dirty = true;
    let done = 0;
    while (done < len) {
      const { bytesWritten } = await writeP(this.fd, buf, bufOffset + done, len - done, pos + done);
      done += bytesWritten;
    }
  }

  async flush(): Promise<void> {
    if (!this.#dirty) return;
    this.#dirty = false;
    await fdatasyncP(this.fd);
  }

  close(): Promise<void> {
    return closeP(this.fd);
  }
}
