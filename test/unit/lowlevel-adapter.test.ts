import { expect } from 'chai';
import { constants } from 'node:os';
import { LowLevelAdapter } from '../../src/fuse/lowlevel-adapter';
import { loadFuse3, type Fuse3Constants, type ReplySink } from '../../src/native/fuse3';

const E = constants.errno;
const S_IFREG = 0o100000;

/** A ReplySink that records every reply as [method, id, ...args]. */
class FakeSession implements ReplySink {
  readonly replies: unknown[][] = [];
  #answered = new Set<number>();
  #pending = 0;

  #rec(name: string, id: number, ...rest: unknown[]): number {
    if (this.#answered.has(id)) return -1;
    this.#answered.add(id);
    this.#pending--;
    this.replies.push([name, id, ...rest]);
    return 0;
  }
  expect(): void { this.#pending++; }
  replyErr(id: number, errno: number): number { return this.#rec('err', id, errno); }
  replyEntry(id: number, stat: Float64Array, et: number, at: number): number { return this.#rec('entry', id, Array.from(stat), et, at); }
  replyCreate(id: number, stat: Float64Array, et: number, at: number, fh: number, fl: number): number { return this.#rec('create', id, Array.from(stat), et, at, fh, fl); }
  replyAttr(id: number, stat: Float64Array, at: number): number { return this.#rec('attr', id, Array.from(stat), at); }
  replyOpen(id: number, fh: number, fl: number): number { return this.#rec('open', id, fh, fl); }
  replyBuf(id: number, buf: Buffer, n: number): number { return this.#rec('buf', id, Buffer.from(buf.subarray(0, n))); }
  replyWrite(id: number, n: number): number { return this.#rec('write', id, n); }
  replyStatfs(id: number, a: Float64Array): number { return this.#rec('statfs', id, Array.from(a)); }
  replyLseek(id: number, off: number): number { return this.#rec('lseek', id, off); }
  replyReaddir(id: number, names: string[], inoModes: Float64Array): number { return this.#rec('readdir', id, [...names], Array.from(inoModes)); }
  pending(): number { return this.#pending; }

  last(): unknown[] {
    return this.replies[this.replies.length - 1] ?? [];
  }
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('libfuse3 low-level adapter (fake session, fake handlers)', () => {
  let c: Fuse3Constants;
  before(function () {
    const m = loadFuse3();
    if (!('module' in m)) {
      console.log(`      skipped: ${m.reason}`);
      this.skip();
    }
    c = m.module;
  });

  /** An adapter over `handlers`; send() delivers a request as C would and returns its id. */
  function setup(handlers: Record<string, unknown>): { a: LowLevelAdapter; s: FakeSession; log: string[]; send: (op: keyof Fuse3Constants['OP'], f?: Partial<{ ino: number; fh: number; off: number; size: number; flags: number; mode: number; name: string; arg: Buffer | Float64Array | string }>) => number } {
    const log: string[] = [];
    const a = new LowLevelAdapter(handlers, c, { log: (l) => log.push(l) });
    const s = new FakeSession();
    a.attach(s);
    let next = 1;
    const send = (op: keyof Fuse3Constants['OP'], f: Partial<{ ino: number; fh: number; off: number; size: number; flags: number; mode: number; name: string; arg: Buffer | Float64Array | string }> = {}): number => {
      const notification = op === 'FORGET' || op === 'INIT' || op === 'ENDED';
      const id = notification ? 0 : next++;
      if (!notification) s.expect();
      a.onRequest(c.OP[op], id, f.ino ?? 1, f.fh ?? -1, f.off ?? 0, f.size ?? 0, f.flags ?? 0, f.mode ?? 0, f.name, f.arg);
      return id;
    };
    return { a, s, log, send };
  }

  const files = (names: string[]): Record<string, unknown> => {
    const live = new Set(names);
    return {
      live,
      getattr: (path: string, cb: (e: number, st?: object) => void) => {
        if (path === '/') cb(0, { mode: 0o040755, size: 4096, nlink: 2 });
        else if (live.has(path.slice(1))) cb(0, { mode: S_IFREG | 0o644, size: 123, mtime: new Date(5000) });
        else cb(-E.ENOENT);
      },
      readdir: (_p: string, cb: (e: number, names?: string[]) => void) => cb(0, [...live]),
      unlink: (path: string, cb: (e: number) => void) => { live.delete(path.slice(1)); cb(0); },
      rename: (from: string, to: string, cb: (e: number) => void) => { live.delete(from.slice(1)); live.add(to.slice(1)); cb(0); },
    };
  };

  it('lookup gives each name one node id, kept across a rename; forget and unlink drop it', async () => {
    const { a, s, send } = setup(files(['v1', 'v2']));
    const id1 = send('LOOKUP', { name: 'v1' });
    await tick();
    expect(s.last()[0]).to.equal('entry');
    const ino1 = (s.last()[2] as number[])[c.STAT.ino]!;
    expect(ino1).to.be.greaterThan(1);
    expect((s.last()[2] as number[])[c.STAT.mtimeMs]).to.equal(5000);
    expect(s.last()[1]).to.equal(id1);
    send('LOOKUP', { name: 'v1' });
    expect((s.last()[2] as number[])[c.STAT.ino]).to.equal(ino1);
    expect(a.inodes.lookups(ino1)).to.equal(2);
    send('RENAME', { ino: 1, fh: 1, name: 'v1', arg: 'moved' });
    expect(s.last()).to.deep.equal(['err', s.last()[1], 0]);
    send('LOOKUP', { name: 'moved' });
    expect((s.last()[2] as number[])[c.STAT.ino]).to.equal(ino1);
    expect(a.inodes.path(ino1)).to.equal('/moved');
    send('FORGET', { ino: ino1, size: 3 });
    expect(a.inodes.lookups(ino1)).to.equal(0);
    expect(a.inodes.path(ino1), 'a named node stays').to.equal('/moved');
    send('LOOKUP', { name: 'moved' });
    send('UNLINK', { ino: 1, name: 'moved' });
    expect(a.inodes.path(ino1)).to.equal(undefined);
    send('GETATTR', { ino: ino1 });
    expect(s.last()[0]).to.deep.equal('err');
    expect(s.last()[2]).to.equal(E.ENOENT);
    send('FORGET', { ino: ino1, size: 1 });
    expect(a.inodes.size).to.equal(0);
    send('LOOKUP', { name: 'nope' });
    expect(s.last()[2]).to.equal(E.ENOENT);
    send('LOOKUP', { ino: 7, name: 'v2' });
    expect(s.last()[2], 'no subdirectories').to.equal(E.ENOENT);
    expect(s.pending()).to.equal(0);
  });

  it('error paths: EBADF and ENOENT from handlers, a missing handler ENOSYS, a throwing handler EIO, then serves on', async () => {
    const { s, log, send } = setup({
      ...files(['v']),
      open: (_p: string, _f: number, cb: (e: number, fd?: number) => void) => cb(0, 7),
      read: (_p: string, fd: number, buf: Buffer, len: number, _pos: number, cb: (n: number) => void) => {
        if (fd !== 7) cb(-E.EBADF);
        else { buf.fill(0x61, 0, len); cb(len); }
      },
      write: () => { throw new Error('handler bug'); },
      flush: (_p: string, _fd: number, cb: (e: number) => void) => { cb(0); cb(0); },
    });
    send('LOOKUP', { name: 'v' });
    const ino = (s.last()[2] as number[])[c.STAT.ino]!;
    send('READ', { ino, fh: 99, size: 10 });
    expect(s.last()).to.deep.equal(['err', s.last()[1], E.EBADF]);
    send('OPEN', { ino, flags: 2 });
    expect(s.last()).to.deep.equal(['open', s.last()[1], 7, 0]);
    send('WRITE', { ino, fh: 7, size: 3, arg: Buffer.from('abc') });
    expect(s.last()).to.deep.equal(['err', s.last()[1], E.EIO]);
    expect(log.join('\n')).to.match(/write handler threw: Error: handler bug/);
    send('FSYNC', { ino, fh: 7 });
    expect(s.last()).to.deep.equal(['err', s.last()[1], E.ENOSYS]);
    send('FALLOCATE', { ino, fh: 7, size: 4096, flags: 3 });
    expect(s.last()).to.deep.equal(['err', s.last()[1], E.ENOSYS]);
    send('FLUSH', { ino, fh: 7 });
    expect(s.last()).to.deep.equal(['err', s.last()[1], 0]);
    expect(log.join('\n')).to.match(/flush handler called back twice/);
    const rid = send('READ', { ino, fh: 7, off: 0, size: 4 });
    expect(s.last()).to.deep.equal(['buf', rid, Buffer.from('aaaa')]);
    send('GETATTR', { ino: 12345 });
    expect(s.last()[2]).to.equal(E.ENOENT);
    expect(s.pending()).to.equal(0);
  });

  it('setattr runs chmod, chown, ftruncate (with a handle) or truncate, and utimens in libfuse 2\'s order, then answers the attributes', async () => {
    const calls: unknown[][] = [];
    const ok = (name: string) => (...args: unknown[]): void => { calls.push([name, ...args.slice(0, -1)]); (args[args.length - 1] as (e: number) => void)(0); };
    const { s, send } = setup({ ...files(['v']), chmod: ok('chmod'), chown: ok('chown'), truncate: ok('truncate'), ftruncate: ok('ftruncate'), utimens: ok('utimens') });
    send('LOOKUP', { name: 'v' });
    const ino = (s.last()[2] as number[])[c.STAT.ino]!;
    const S = c.SETATTR;
    const attrs = new Float64Array([0o600, 1000, 2000, 1111, 2222]);
    send('SETATTR', { ino, flags: S.MODE | S.UID | S.SIZE | S.ATIME | S.MTIME, size: 4096, arg: attrs });
    for (let i = 0; i < 10; i++) await tick();
    expect(calls).to.deep.equal([['chmod', '/v', 0o600], ['chown', '/v', 1000, 0xffffffff], ['truncate', '/v', 4096], ['utimens', '/v', 1111, 2222]]);
    expect(s.last()[0]).to.equal('attr');
    calls.length = 0;
    send('SETATTR', { ino, fh: 5, flags: S.SIZE | S.MTIME, size: 0, arg: attrs });
    for (let i = 0; i < 10; i++) await tick();
    expect(calls).to.deep.equal([['ftruncate', '/v', 5, 0], ['utimens', '/v', 0, 2222]]);
    expect(s.pending()).to.equal(0);
  });

  it('readdir lists . and .. and the names with their node ids, serves later offsets from the same listing', () => {
    const h = files(['a', 'b', 'c']);
    const { s, send } = setup(h);
    send('OPENDIR', { ino: 1 });
    const fh = s.last()[2] as number;
    send('READDIR', { ino: 1, fh, off: 0, size: 4096 });
    const [, , names, inoModes] = s.last() as [string, number, string[], number[]];
    expect(names).to.deep.equal(['.', '..', 'a', 'b', 'c']);
    expect(inoModes.slice(0, 4)).to.deep.equal([1, 0o040000, 1, 0o040000]);
    (h.live as Set<string>).add('d');
    send('READDIR', { ino: 1, fh, off: 3, size: 4096 });
    expect(s.last()[2], 'the listing taken at offset 0').to.deep.equal(['.', '..', 'a', 'b', 'c']);
    send('RELEASEDIR', { ino: 1, fh });
    send('OPENDIR', { ino: 3 });
    expect(s.last()[2]).to.equal(E.ENOTDIR);
    expect(s.pending()).to.equal(0);
  });

  it('create answers an entry and the handle; if the new file cannot be stat\'ed the handle is released again', () => {
    const released: number[] = [];
    const { s, a, send } = setup({
      getattr: (p: string, cb: (e: number, st?: object) => void) => (p === '/good' ? cb(0, { mode: S_IFREG | 0o600 }) : cb(-E.EIO)),
      create: (_p: string, _mode: number, cb: (e: number, fd?: number) => void) => cb(0, 42),
      release: (_p: string, fd: number, cb: (e: number) => void) => { released.push(fd); cb(0); },
    });
    send('CREATE', { ino: 1, name: 'good', mode: 0o600, flags: 0o102 });
    const r = s.last();
    expect(r[0]).to.equal('create');
    expect(r[5]).to.equal(42);
    expect(a.inodes.lookups((r[2] as number[])[c.STAT.ino]!)).to.equal(1);
    send('CREATE', { ino: 1, name: 'bad', mode: 0o600 });
    expect(s.last()).to.deep.equal(['err', s.last()[1], E.EIO]);
    expect(released).to.deep.equal([42]);
  });

  it('rename with RENAME_NOREPLACE refuses an existing target; RENAME_EXCHANGE is refused', () => {
    const { s, send } = setup(files(['a', 'b']));
    send('RENAME', { ino: 1, fh: 1, name: 'a', arg: 'b', flags: 1 });
    expect(s.last()[2]).to.equal(E.EEXIST);
    send('RENAME', { ino: 1, fh: 1, name: 'a', arg: 'b', flags: 2 });
    expect(s.last()[2]).to.equal(E.EINVAL);
    send('RENAME', { ino: 1, fh: 1, name: 'a', arg: 'c', flags: 1 });
    expect(s.last()[2]).to.equal(0);
  });

  it('INIT reaches onInit and the init handler; ENDED settles `ended` with the loop result', async () => {
    const seen: number[] = [];
    let inits = 0;
    const a = new LowLevelAdapter({ init: (cb: (e: number) => void) => { inits++; cb(0); } }, c, { onInit: (i) => seen.push(i.protoMinor, i.maxWrite) });
    a.attach(new FakeSession());
    a.onRequest(c.OP.INIT, 0, 0, -1, 0, 0, 0, 0, undefined, new Float64Array([7, 45, 0, 0, 1 << 20, 0, 0, 64, 48]));
    expect(seen).to.deep.equal([45, 1 << 20]);
    expect(inits).to.equal(1);
    a.onRequest(c.OP.ENDED, 0, 0, -1, 0, 0, -19, 0, undefined, undefined);
    expect(await a.ended).to.equal(-19);
  });
});
