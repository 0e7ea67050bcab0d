# thinvol's native addon (N-API, C). npm builds it at install time (node-gyp rebuild, because
# this file exists) and `npm run build` rebuilds it; it lands in build/Release/thinvol_native.node,
# which src/native/addon.ts loads. Flags every module shares are in target_defaults.
#
# thinvol_asan=1 builds it with AddressSanitizer. native/asan/binding.gyp sets that and includes this
# file, so that the ASan build has its own build directory (native/asan/build/Release) and never
# replaces the normal one; scripts/test-asan.sh builds it and runs the native tests against it.
{
  'variables': {
    # Not 'asan': Node's own config.gypi, which node-gyp includes, has an 'asan' (for Node's build).
    'thinvol_asan%': 0,
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
        'native/prctl.c',
      ],
    },
  ],
}
