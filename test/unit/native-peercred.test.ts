import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { peerCredentials } from '../../src/native/peercred';

const fdOf = (s: Socket): number => (s as unknown as { _handle: { fd: number } })._handle.fd;

describe('native addon: SO_PEERCRED', () => {
  it('names the process at the other end of a Unix socket', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'thinvol-peercred-'));
    const path = join(dir, 's');
    const accepted = new Promise<Socket>((resolve) => {
      const server = createServer((s) => { resolve(s); server.close(); });
      server.listen(path, () => { connect(path); });
    });
    try {
      const s = await accepted;
      expect(peerCredentials(fdOf(s))).to.deep.equal({ pid: process.pid, uid: process.getuid?.(), gid: process.getgid?.() });
      s.destroy();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a descriptor that is not a socket gives ENOTSOCK; a closed one EBADF; a wrong type throws TypeError', () => {
    expect(() => peerCredentials(0)).to.throw().with.property('code').that.matches(/ENOTSOCK|EBADF/);
    expect(() => peerCredentials(123456)).to.throw().with.property('code', 'EBADF');
    expect(() => peerCredentials('3' as unknown as number)).to.throw(TypeError);
  });
});
