# thinvol's native addon (N-API, C). npm builds it at install time (node-gyp rebuild, because
# this file exists) and `npm run build` rebuilds it; it lands in build/Release/thinvol_native.node,
# which src/native/addon.ts loads.
{
  'targets': [
    {
      'target_name': 'thinvol_native',
      'sources': [
        'native/addon.c',
        'native/flock.c',
      ],
      'defines': ['NAPI_VERSION=8'],
      'cflags_c': ['-std=gnu11', '-Wall', '-Wextra', '-Werror'],
      # Node's common.gypi turns this part of -Wextra off; keep it on.
      'cflags!': ['-Wno-unused-parameter'],
    },
  ],
}
