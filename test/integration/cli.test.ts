import { expect } from 'chai';
import { readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { run, Sandbox, THINVOL } from '../support/sandbox';

describe('command line contract', function () {
  const sb = new Sandbox();
  before(() => sb.createPool('b1:1G'));
  after(() => sb.cleanup());

  it('volume create prints id and size; --json gives {id, name, sizeBytes}', async () => {
    expect(await sb.cliOk('volume', 'create', 'one', '--size', '10G')).to.match(/id 1, size 10.0 GiB \(10737418240 bytes\)/);
    expect(await sb.json('volume', 'create', 'two', '--size', '512M')).to.deep.equal({ id: 2, name: 'two', sizeBytes: 512 * 2 ** 20 });
  });

  it('a volume is named by name or by id:N, never by a guess from digits', async () => {
    const five = await sb.json<{ id: number }>('volume', 'create', '5', '--size', '1M');
    const r = await sb.cli('volume', 'delete', String(five.id));
    expect(r.code).to.not.equal(0);
    expect(r.stderr).to.match(new RegExp(`no volume "${five.id}" .*write id:${five.id}`));
    expect((await sb.json<{ name: string }>('volume', 'info', `id:${five.id}`)).name).to.equal('5');
    await sb.cliOk('volume', 'delete', '5');
  });

  it('the pool directory and its metadata are private (0700 / 0600), whatever the umask', async () => {
    expect(statSync(sb.pool).mode & 0o777).to.equal(0o700);
    expect(statSync(join(sb.pool, 'run')).mode & 0o777).to.equal(0o700);
    for (const f of readdirSync(sb.pool).filter((n) => n.startsWith('pool.lmdb'))) expect(statSync(join(sb.pool, f)).mode & 0o777, f).to.equal(0o600);
  });

  it('unknown pool: one clear line and a non-zero exit', async () => {
    const r = await run(THINVOL, ['--pool', '/nonexistent/pool', 'df']);
    expect(r.code).to.not.equal(0);
    expect(r.stderr.trim()).to.match(/^thinvol: no pool at \/nonexistent\/pool/);
  });

  const bad: [string, string[], RegExp][] = [
    ['unknown volume', ['volume', 'info', 'nope'], /no volume "nope"/],
    ['bad size', ['volume', 'create', 'x', '--size', '12Q'], /bad size/],
    ['unaligned size', ['volume', 'create', 'x', '--size', '1000'], /multiple of 512/],
    ['bad name', ['volume', 'create', '../etc', '--size', '1G'], /bad volume name/],
    ['duplicate name', ['volume', 'create', 'one', '--size', '1G'], /already exists/],
    ['missing mountpoint', ['mount', '/nonexistent/mnt'], /does not exist/],
    ['missing backend', ['backend', 'add', '/nonexistent/backend'], /does not exist/],
    ['unknown command', ['frobnicate'], /Unknown argument|Unknown command|Did you mean/],
  ];
  for (const [what, args, msg] of bad) {
    it(`${what}: one line on stderr, non-zero exit, nothing changed`, async () => {
      const before = await sb.cliOk('df', '--json');
      const r = await sb.cli(...args);
      expect(r.code).to.not.equal(0);
      expect(r.stderr).to.match(msg);
      expect(r.stderr.trim().split('\n').length).to.equal(1);
      expect(await sb.cliOk('df', '--json')).to.equal(before);
    });
  }

  it('a busy mountpoint is refused', async () => {
    writeFileSync(join(sb.dir, 'notadir'), '');
    const r = await sb.cli('mount', join(sb.dir, 'notadir'));
    expect(r.code).to.not.equal(0);
    expect(r.stderr).to.match(/not a directory/);
    await sb.mount();
    const again = await sb.cli('mount', sb.mnt);
    expect(again.code).to.not.equal(0);
    expect(again.stderr).to.match(/busy/);
    await sb.umount();
  });

  it('df, map, backend list and check report in JSON', async () => {
    await sb.cliOk('backend', 'add', `${join(sb.dir, 'b2')}:2G`);
    const df = await sb.json<{ capacityBytes: number; provisionedBytes: number; backends: unknown[]; volumes: unknown[] }>('df');
    expect(df.capacityBytes, 'the first MiB of each backend holds its label').to.equal(3 * 2 ** 30 - 2 * 2 ** 20);
    expect(df.provisionedBytes).to.equal(10 * 2 ** 30 + 512 * 2 ** 20);
    expect(df.backends).to.have.length(2);
    expect(await sb.json('map', 'one')).to.deep.equal([]);
    expect((await sb.json<{ clean: boolean }>('check')).clean).to.equal(true);
    expect(await sb.json<unknown[]>('backend', 'list')).to.have.length(2);
  });
});
