import { promises as fs } from 'node:fs';

type FileHandle = fs.FileHandle;
import { mulberry32 } from './prng';

export interface FsxOptions { path: string; seed: number; ops: number; maxBytes: number }
export interface FsxResult { ops: number; writes: number; reads: number; truncates: number; syncs: number; failures: string[]; content: Buffer }

/**
 * A file-system exerciser in the manner of fsx: random writes, reads, truncates (down and up)
 * and fsyncs on one file, every read checked against an in-memory model of what the file must
 * hold. Run inside a filesystem on a thinvol volume, it drives allocation, overwrite, discard
 * (through the guest freeing blocks) and reclaim underneath, and any lost or misplaced block
 * shows as a mismatch.
 */
export async function fsx(o: FsxOptions): Promise<FsxResult> {
  const rnd = mulberry32(o.seed);
  const int = (n: number): number => Math.floor(rnd() * n);
  const r: FsxResult = { ops: 0, writes: 0, reads: 0, truncates: 0, syncs: 0, failures: [], content: Buffer.alloc(0) };
  let model = Buffer.alloc(0);
  let fh: FileHandle = await fs.open(o.path, 'w+');
  const verify = async (off: number, len: number, what: string): Promise<void> => {
    const got = Buffer.alloc(len);
    const { bytesRead } = await fh.read(got, 0, len, off);
    const want = model.subarray(off, off + len);
    if (bytesRead !== want.length || !got.subarray(0, bytesRead).equals(want)) {
      const at = [...want].findIndex((b, i) => got[i] !== b);
      r.failures.push(`${o.path} op ${r.ops} (${what}): [${off},+${len}) differs from the model at byte ${off + Math.max(at, 0)} (read ${bytesRead} of ${want.length})`);
    }
  };
  try {
    for (; r.ops < o.ops && r.failures.length === 0; r.ops++) {
      const p = rnd();
      if (p < 0.45) {
        const len = 1 + int(rnd() < 0.8 ? 16384 : 262144);
        const off = int(o.maxBytes - len);
        const data = Buffer.alloc(len);
        const salt = int(256);
        for (let i = 0; i < len; i++) data[i] = (salt + r.ops * 131 + i * 7) & 0xff;
        await fh.write(data, 0, len, off);
        if (off + len > model.length) model = Buffer.concat([model, Buffer.alloc(off + len - model.length)]);
        data.copy(model, off);
        r.writes++;
      } else if (p < 0.8) {
        if (model.length === 0) continue;
        const off = int(model.length);
        await verify(off, Math.min(model.length - off, 1 + int(131072)), 'read');
        r.reads++;
      } else if (p < 0.9) {
        const size = rnd() < 0.5 ? int(model.length + 1) : int(o.maxBytes);
        await fh.truncate(size);
        model = size <= model.length ? Buffer.from(model.subarray(0, size)) : Buffer.concat([model, Buffer.alloc(size - model.length)]);
        r.truncates++;
      } else if (p < 0.97) {
        await (rnd() < 0.5 ? fh.sync() : fh.datasync());
        r.syncs++;
      } else {
        await fh.close();
        fh = await fs.open(o.path, 'r+');
      }
    }
    if (r.failures.length === 0) await verify(0, model.length, 'final read');
  } finally {
    await fh.close();
  }
  r.content = model;
  return r;
}
