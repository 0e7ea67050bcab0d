# The AddressSanitizer build of thinvol's native addon: the root binding.gyp with thinvol_asan=1.
# `npm run build:native:asan` runs node-gyp in this directory, so it builds into
# native/asan/build/Release and leaves build/Release alone. gyp keeps the paths of an included
# file relative to that file.
{
  'variables': {
    'thinvol_asan': 1,
  },
  'includes': ['../../binding.gyp'],
}
