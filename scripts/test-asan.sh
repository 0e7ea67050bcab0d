#!/bin/bash
# Runs the native addon's unit tests against its AddressSanitizer build: flock, and the libfuse3
# binding on real mounts (mount, I/O, requests in flight, unmount, abort with a request pending,
# kill -9 of a serving child, remount).
#
# Node is not built with ASan, so the ASan runtime is preloaded into node (it must come first in
# the library list) and leak detection is off (V8 does not free everything at exit). The loader
# (src/native/addon.ts) takes the ASan build from THINVOL_NATIVE_BUILD; child processes the tests
# spawn inherit all of this. dist/test/unit/native-asan-active.js runs first and fails unless
# libasan is loaded and the addon in use is the instrumented one.
#
# Needs dist/ built (npm run build; `npm run test:asan` does that). Extra arguments go to mocha.
# Exit status: mocha's, or 77 (skipped) when gcc has no libasan.so.
set -euo pipefail
cd "$(dirname "$0")/.."

libasan=$(gcc -print-file-name=libasan.so 2>/dev/null || true)
if [[ "$libasan" != /* || ! -e "$libasan" ]]; then
  echo "skipped: gcc has no libasan.so (on Debian: apt-get install libasan8), so no ASan build" >&2
  exit 77
fi

npm run --silent build:native:asan >&2

export THINVOL_NATIVE_BUILD=native/asan/build/Release
export LD_PRELOAD="$libasan"
export ASAN_OPTIONS=detect_leaks=0
exec node node_modules/mocha/bin/mocha.js --no-config --timeout 120000 \
  dist/test/unit/native-asan-active.js dist/test/unit/native-flock.test.js dist/test/unit/native-peercred.test.js \
  dist/test/unit/native-fileio.test.js dist/test/unit/lowlevel-adapter.test.js dist/test/unit/native-fuse3.test.js "$@"
