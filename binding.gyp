# thinvol's native addon (N-API, C). npm builds it at install time (node-gyp rebuild, because
# this file exists) and `npm run build` rebuilds it. Two modules land in build/Release, which
# src/native/addon.ts loads:
#   thinvol_native.node  flock, SO_PEERCRED, prctl, preadv2(RWF_NOWAIT): needs nothing but libc.
#   thinvol_fuse3.node   the libfuse3 low-level binding (native/fuse3.c); built only when
#                        pkg-config finds fuse3 (Debian: libfuse3-dev), and a module of its own so
#                        that a host without libfuse3 still loads the first and mounts with
#                        libfuse 2 (fuse-native) instead.
#
# thinvol_asan=1 builds them with AddressSanitizer. native/asan/binding.gyp sets that and includes
# this file, so that the ASan build has its own build directory (native/asan/build/Release) and
# never replaces the normal one; scripts/test-asan.sh builds it and runs the native tests against it.
{
  'variables': {
    # Not 'asan': Node's own config.gypi, which node-gyp includes, has an 'asan' (for Node's build).
    'thinvol_asan%': 0,
    'thinvol_fuse3%': '<!(pkg-config --exists fuse3 && echo 1 || echo 0)',
  },
  'target_defaults': {
    'defines': ['NAPI_VERSION=8'],
    'cflags_c': ['-std=gnu11', '-Wall', '-Wextra', '-Werror'],
    # Node's common.gypi turns this part of -Wextra off; keep it on.
    'cflags!': ['-Wno-unused-parameter'],
    'conditions': [
      ['thinvol_asan==1', {
        'cflags_c': ['-fsanitize=address', '-fno-omit-frame-pointer', '-g', '-O1'],
        'ldflags': ['-fsanitize=address'],
      }],
    ],
  },
  'targets': [
    {
      'target_name': 'thinvol_native',
      'sources': [
        'native/addon.c',
        'native/helpers.c',
        'native/flock.c',
        'native/peercred.c',
        'native/prctl.c',
        'native/fileio.c',
      ],
    },
  ],
  'conditions': [
    ['thinvol_fuse3==1', {
      'targets': [
        {
          'target_name': 'thinvol_fuse3',
          'sources': [
            'native/fuse3.c',
            'native/helpers.c',
          ],
          'cflags_c': ['<!@(pkg-config --cflags fuse3)'],
          'libraries': ['<!@(pkg-config --libs fuse3)'],
        },
      ],
    }],
  ],
}
