import { expect } from 'chai';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

/** This file runs as dist/test/unit/native-asan.test.js. */
const REPO_ROOT = path.resolve(__dirname, '..', '..', '..');
const MOCHA = path.join(REPO_ROOT, 'node_modules', 'mocha', 'bin', 'mocha.js');
const ASAN_CHECK_TITLE = 'AddressSanitizer run has the ASan runtime loaded and the instrumented addon in use';

interface MochaJsonReport {
  stats: { tests: number; passes: number; failures: number; pending: number };
  passes: { fullTitle: string }[];
  failures: { fullTitle: string; err: { message?: string } }[];
}

interface Run {
  code: number | null;
  stderr: string;
}

/** Runs a command to its end from the repo root; stdout is ignored (the reports go to a file). */
function run(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: REPO_ROOT, env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (d: string) => { stderr += d; });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stderr }));
  });
}

/** This process's environment without what would turn ASan on in a child. */
function envWithoutAsan(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.LD_PRELOAD;
  delete env.ASAN_OPTIONS;
  delete env.THINVOL_NATIVE_BUILD;
  return env;
}

function readReport(file: string, r: Run): MochaJsonReport {
  expect(fs.existsSync(file), `mocha wrote no report; its stderr:\n${r.stderr}`).to.equal(true);
  return JSON.parse(fs.readFileSync(file, 'utf8')) as MochaJsonReport;
}

describe('native addon under AddressSanitizer', function () {
  this.timeout(300_000);
  let dir: string;

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'thinvol-asan-'));
  });

  afterEach(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('passes the native unit tests with the ASan build of the addon (scripts/test-asan.sh)', async function () {
    const report = path.join(dir, 'asan.json');
    const r = await run('bash', ['scripts/test-asan.sh', '--reporter', 'json', '--reporter-option', `output=${report}`],
      envWithoutAsan());
    if (r.code === 77) {
      console.log(`      ${r.stderr.trim()}`);
      this.skip();
    }
    const json = readReport(report, r);
    const failures = json.failures.map((f) => `${f.fullTitle}: ${f.err.message ?? ''}`).join('\n');
    expect(r.code, `exit status; failures:\n${failures}\nstderr:\n${r.stderr}`).to.equal(0);
    expect(json.stats.failures).to.equal(0);
    expect(json.stats.pending).to.equal(0);
    expect(json.passes.map((t) => t.fullTitle)).to.include(ASAN_CHECK_TITLE);
    expect(json.stats.passes).to.equal(json.stats.tests).and.to.be.above(1);
  });

  it('whose ASan check fails in a run without ASan', async () => {
    const report = path.join(dir, 'plain.json');
    const r = await run(process.execPath, [MOCHA, '--no-config', '--reporter', 'json', '--reporter-option',
      `output=${report}`, 'dist/test/unit/native-asan-active.js'], envWithoutAsan());
    const json = readReport(report, r);
    expect(r.code).to.equal(1);
    expect(json.failures.map((t) => t.fullTitle)).to.deep.equal([ASAN_CHECK_TITLE]);
    expect(json.failures[0]?.err.message).to.include('libasan mapped');
  });
});
