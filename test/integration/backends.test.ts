import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { linkSync, promises as fs, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { run, Sandbox, THINVOL } from '../support/sandbox';

describe('backends: one file, one pool, whole', () => {
  const sb = new Sandbox();
  const other = new Sandbox();
  before(async () => {
    await sb.createPool('b1:256M');
    await other.createPool('o1:256M');
  });
  after(async () => {
    await sb.cleanup();
    await other.cleanup();
  });

  const refused = async (spec: string, why: RegExp): Promise<void> => {
    const before = await sb.cliOk('backend', 'list', '--json');
    const r = await sb.cli('backend', 'add', spec);
    expect(r.code, r.stdout).to.not.equal(0);
    expect(r.stderr).to.match(why);
    expect(r.stderr.trim().split('\n')).to.have.length(1);
    expect(await sb.cliOk('backend', 'list', '--json')).to.equal(before);
  };

  it('refuses a backend the pool has under another name: a symlink, a hard link, the same path', async () => {
    symlinkSync(join(sb.dir, 'b1'), join(sb.dir, 'sym'));
    linkSync(join(sb.dir, 'b1'), join(sb.dir, 'hard'));
    await refused(join(sb.dir, 'sym'), /already in the pool as backend 1/);
    await refused(join(sb.dir, 'hard'), /already in the pool as backend 1/);
    await refused(join(sb.dir, 'b1'), /already in the pool as backend 1/);
  });

  it('refuses the pool\'s own metadata file, another pool\'s backend (mounted or not), and a file that holds data', async () => {
    await refused(join(sb.pool, 'pool.lmdb'), /pool's own metadata file/);
    await refused(join(other.dir, 'o1'), /belongs to thinvol pool/);
    await other.mount();
    await refused(join(other.dir, 'o1'), /another process holds it/);
    await other.umount();
    writeFileSync(join(sb.dir, 'image'), randomBytes(4 << 20));
    await refused(join(sb.dir, 'image'), /holds data at its start/);
    const fresh = join(sb.dir, 'fresh');
    writeFileSync(fresh, Buffer.alloc(4 << 20));
    expect((await sb.json<{ id: number }>('backend', 'add', fresh)).id).to.equal(2);
  });

  it('a backend truncated while unmounted stops the mount and fails check, with the reason; restored, all is well', async () => {
    await sb.cliOk('volume', 'create', 'v', '--size', '64M');
    await sb.mount();
    const data = randomBytes(32 << 20);
    const fh = await fs.open(join(sb.mnt, 'v'), 'r+');
    await fh.write(data, 0, data.length, 0);
    await fh.sync();
    await fh.close();
    await sb.umount();
    const b1 = join(sb.dir, 'b1');
    const saved = await fs.readFile(b1);
    truncateSync(b1, 8 << 20);
    const m = await sb.cli('mount', sb.mnt);
    expect(m.code).to.not.equal(0);
    expect(m.stderr).to.match(/backend 1 .* is 8388608 bytes, shorter than .* truncated/);
    const check = await sb.cli('check');
    expect(check.code).to.not.equal(0);
    expect(check.stdout).to.match(/shorter than/);
    await fs.writeFile(b1, saved);
    await sb.mount();
    expect((await fs.readFile(join(sb.mnt, 'v'))).subarray(0, data.length).equals(data)).to.equal(true);
    await sb.umount();
    expect((await sb.cli('check')).code).to.equal(0);
  });

  it('a file put in a backend\'s place (no label) stops the mount', async () => {
    const b1 = join(sb.dir, 'b1');
    const saved = await fs.readFile(b1);
    await fs.writeFile(b1, Buffer.alloc(saved.length));
    const m = await run(THINVOL, ['--pool', sb.pool, 'mount', sb.mnt]);
    expect(m.code).to.not.equal(0);
    expect(m.stderr).to.match(/not this pool's backend 1: it carries no thinvol backend label/);
    await fs.writeFile(b1, saved);
  });
});
