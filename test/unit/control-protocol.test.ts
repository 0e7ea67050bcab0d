import { expect } from 'chai';
import { chmodSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ControlSession } from '../../src/control/control-client';
import { startControlServer } from '../../src/control/control-server';
import { answerLine, LineReader, MAX_REQUEST_LINE, parseAnswer, parseRequest } from '../../src/control/protocol';
import { FsError } from '../../src/util/errors';
import { run } from '../support/sandbox';

describe('control protocol', () => {
  it('validates requests once, on receipt, and says what is wrong', () => {
    expect(parseRequest({ op: 'hold', change: 1, seq: 2, volume: 3, start: 0, end: 4096 })).to.deep.equal({ op: 'hold', change: 1, seq: 2, volume: 3, start: 0, end: 4096 });
    expect(parseRequest({ op: 'reclaim', volume: 'v', dryRun: 'yes' })).to.deep.equal({ op: 'reclaim', volume: 'v', dryRun: false });
    for (const [req, why] of [[null, /not an object/], [{ op: 'x' }, /unknown op "x"/], [{ op: 'hold', change: -1, seq: 0, volume: 0, start: 0, end: 1 }, /change must be/],
      [{ op: 'hold', change: 1, seq: 0, volume: 0, start: 8, end: 8 }, /end must lie after start/], [{ op: 'apply', change: 1, seq: 1, volume: 1, generation: 1.5 }, /generation/],
      [{ op: 'reclaim', volume: '' }, /volume must be a name/]] as const) {
      expect(() => parseRequest(req)).to.throw(FsError, why);
    }
  });

  it('carries the errno of an error answer by name', () => {
    const line = answerLine({ ok: false, error: new FsError('EBUSY', 'volume v is open') });
    expect(() => parseAnswer(line)).to.throw(FsError, 'volume v is open').with.property('code', 'EBUSY');
    expect(() => parseAnswer(answerLine({ ok: false, error: new Error('a bug') }))).to.throw(FsError).with.property('code', 'EIO');
    expect(parseAnswer(answerLine({ ok: true, value: { ms: 3 } }))).to.deep.equal({ ms: 3 });
    expect(() => parseAnswer('{nope')).to.throw(FsError).with.property('code', 'EPROTO');
  });

  it('frames lines across chunks, and refuses one longer than the limit', () => {
    const r = new LineReader(10);
    expect(r.partial).to.equal(false);
    expect(r.push('ab')).to.deep.equal([]);
    expect(r.partial).to.equal(true);
    expect(r.push('c\nde\nf')).to.deep.equal(['abc', 'de']);
    expect(r.push('\n')).to.deep.equal(['f']);
    expect(r.partial).to.equal(false);
    expect(() => r.push('x'.repeat(11))).to.throw(FsError).with.property('code', 'EMSGSIZE');
  });

  it('a server drops a client that sends an endless line at once, and keeps answering others', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'thinvol-control-'));
    const path = join(dir, 's.sock');
    const server = await startControlServer(path, async (req) => ({ echo: req.op }), process.getuid?.() ?? 0);
    try {
      const hostile = connect(path);
      const closed = new Promise<number>((resolve) => {
        const t0 = Date.now();
        hostile.on('close', () => resolve(Date.now() - t0));
        hostile.on('error', () => undefined);
      });
      const chunk = 'x'.repeat(64 * 1024);
      for (let i = 0; i < 256 && !hostile.destroyed; i++) hostile.write(chunk);
      expect(await closed).to.be.below(5000);
      const s = new ControlSession(path);
      expect(await s.request({ op: 'drop-reservations' }, 2000)).to.deep.equal({ echo: 'drop-reservations' });
      const refused = await s.request({ op: 'x' } as never, 2000).then(() => undefined, (e: unknown) => e);
      expect(refused).to.be.instanceOf(FsError).with.property('code', 'EINVAL');
      s.close();
      expect(MAX_REQUEST_LINE).to.be.at.most(64 * 1024);
    } finally {
      server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('control socket access', () => {
  it('is 0600 whatever the umask, and serves only root and the pool owner even when the file is opened up', async function () {
    if (process.getuid?.() !== 0) this.skip();
    const dir = mkdtempSync(join(tmpdir(), 'thinvol-control-'));
    chmodSync(dir, 0o755);
    const path = join(dir, 's.sock');
    const old = process.umask(0);
    let server: Awaited<ReturnType<typeof startControlServer>> | undefined;
    try {
      server = await startControlServer(path, async () => ({ ok: true }), 0);
      expect(statSync(path).mode & 0o777).to.equal(0o600);
      chmodSync(path, 0o666);
      const script = `const s=require('net').connect(${JSON.stringify(path)});s.on('connect',()=>s.write('{"op":"drop-reservations"}\\n'));s.on('data',d=>{process.stdout.write('answered '+d);process.exit(0)});s.on('close',()=>{process.stdout.write('dropped');process.exit(0)});s.on('error',e=>{process.stdout.write('error '+e.code);process.exit(0)})`;
      const r = await run('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '-e', script]);
      expect(r.stdout, 'a stranger gets no answer: the connection is dropped').to.match(/^(dropped|error EPIPE|error ECONNRESET)$/);
      const s = new ControlSession(path);
      expect(await s.request({ op: 'drop-reservations' }, 2000)).to.deep.equal({ ok: true });
      s.close();
    } finally {
      process.umask(old);
      server?.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
