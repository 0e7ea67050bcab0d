/*
 * Not a *.test.ts: scripts/test-asan.sh runs this first, in the ASan run of the native tests,
 * so that the run fails unless AddressSanitizer is really in it.
 */
import { expect } from 'chai';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { addonPath, nativeAddon } from '../../src/native/addon';
import { loadFuse3 } from '../../src/native/fuse3';

/** Paths of the files mapped into this process. */
function mappedFiles(): Set<string> {
  const lines = fs.readFileSync('/proc/self/maps', 'utf8').split('\n');
  return new Set(lines.map((l) => l.split(/\s+/)[5] ?? '').filter((p) => p.startsWith('/')));
}

describe('AddressSanitizer run', () => {
  it('has the ASan runtime loaded and the instrumented addon in use', () => {
    nativeAddon();
    const mapped = [...mappedFiles()];
    expect(mapped.some((p) => /^libasan\.so/.test(path.basename(p))), 'libasan mapped (LD_PRELOAD)').to.equal(true);
    const addon = fs.realpathSync(addonPath());
    expect(mapped, 'the loaded addon').to.include(addon);
    expect(fs.readFileSync(addon).includes('__asan_init'), `${addon} built with -fsanitize=address`).to.equal(true);
    // The libfuse3 binding too, where it is built.
    const fuse3 = addonPath('thinvol_fuse3');
    if (fs.existsSync(fuse3)) {
      expect('module' in loadFuse3(), 'the libfuse3 binding loads').to.equal(true);
      expect([...mappedFiles()], 'the loaded libfuse3 binding').to.include(fs.realpathSync(fuse3));
      expect(fs.readFileSync(fuse3).includes('__asan_init'), `${fuse3} built with -fsanitize=address`).to.equal(true);
    }
  });
});
