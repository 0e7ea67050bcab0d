import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { constants } from 'node:os';
import * as os from 'node:os';
import * as path from 'node:path';
import { FileBackend } from '../../src/backend/file-backend';
import { readCached } from '../../src/native/fileio';
import type { BackendRecord } from '../../src/store/records';

describe('page-cache reads (preadv2 RWF_NOWAIT) and the file backend around them', () => {
  let dir: string;
  let file: string;
  const data = randomBytes(256 * 1024);

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'thinvol-fileio-'));
    file = path.join(dir, 'f');
    fs.writeFileSync(file, data);
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('reads cached data into the given part of the buffer, 0 at end of file', () => {
    const fd = fs.openSync(file, 'r');
    try {
      const buf = Buffer.alloc(8192, 0xaa);
      expect(readCached(fd, buf, 100, 4096, 4096)).to.equal(4096);
      expect(buf.subarray(100, 4196).equals(data.subarray(4096, 8192))).to.equal(true);
      expect(buf[99]).to.equal(0xaa);
      expect(buf[4196]).to.equal(0xaa);
      expect(readCached(fd, buf, 0, 4096, data.length)).to.equal(0);
    } finally {
      fs.closeSync(fd);
    }
  });

  it('returns the negative errno rather than throwing (a bad descriptor)', () => {
    expect(readCached(1_000_000, Buffer.alloc(16), 0, 16, 0)).to.equal(-constants.errno.EBADF);
  });

  it('refuses a range past the buffer and arguments of the wrong type', () => {
    const buf = Buffer.alloc(16);
    expect(() => readCached(0, buf, 8, 16, 0)).to.throw(RangeError);
    expect(() => readCached(0, buf, -1, 1, 0)).to.throw(TypeError);
    expect(() => readCached(0, 'text' as unknown as Buffer, 0, 1, 0)).to.throw(TypeError);
  });

  it('FileBackend: inline and threadpool paths read and write the same bytes, and a flush covers both', async () => {
    const record: BackendRecord = { id: 1, path: file, kind: 'file', dataStart: 0, capacityBytes: data.length, allocatedBytes: 0, reservedBytes: 0 };
    const be = await FileBackend.open(record, 'pool');
    try {
      const small = randomBytes(4096);
      const big = randomBytes(128 * 1024);
      await be.write(small, 0, 4096, 8192);
      await be.write(big, 0, big.length, 65536);
      await be.flush();
      const out = Buffer.alloc(big.length);
      await be.read(out, 0, 4096, 8192);
      expect(out.subarray(0, 4096).equals(small)).to.equal(true);
      await be.read(out, 0, big.length, 65536);
      expect(out.equals(big)).to.equal(true);
      expect(fs.readFileSync(file).subarray(8192, 8192 + 4096).equals(small)).to.equal(true);
      let err: unknown;
      await be.read(out, 0, 4096, data.length).catch((e: unknown) => { err = e; });
      expect(String(err)).to.match(/truncated/);
    } finally {
      await be.close();
    }
  });
});
