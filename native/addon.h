/*
 * thinvol's native addon: what its source files share. It builds two modules: thinvol_native
 * (addon.c: flock.c, peercred.c, prctl.c, fileio.c) and thinvol_fuse3 (fuse3.c, the libfuse3 binding, a module of its
 * own so that a host without libfuse3 still loads the first). Each part has an init function
 * that its module's init calls to add its exports; helpers.c holds what both use.
 *
 * Rules for this directory: C only what TypeScript cannot do (system calls, libraries), no
 * policy; report errno as a number and let TypeScript make the Error; throw only for misuse
 * (wrong argument types); and write every buffer's lifetime next to it.
 */
#ifndef THINVOL_ADDON_H
#define THINVOL_ADDON_H

#include <stdbool.h>
#include <stdint.h>
#include <node_api.h>

/* Throws an Error describing the N-API call that just failed, unless an exception is already
 * pending (then that one is what JavaScript sees). */
void thinvol_throw_napi_error(napi_env env);

/* Runs an N-API call; if it fails, throws (above) and returns NULL from the enclosing function,
 * which N-API turns into `undefined` with the exception pending. */
#define NAPI_CALL(env, call)             \
  do {                                   \
    if ((call) != napi_ok) {             \
      thinvol_throw_napi_error(env);     \
      return NULL;                       \
    }                                    \
  } while (0)

/* Reads value as an int32: true, or false with a TypeError thrown whose message is `message`
 * (a string literal; N-API copies it) when value is not a number holding an integer in range. */
bool thinvol_get_int32(napi_env env, napi_value value, const char *message, int32_t *out);

/* Parts of the addon. Each adds its exports to `exports` and returns it, or returns NULL with an
 * exception pending. */
napi_value thinvol_init_flock(napi_env env, napi_value exports);
napi_value thinvol_init_peercred(napi_env env, napi_value exports);
napi_value thinvol_init_prctl(napi_env env, napi_value exports);
napi_value thinvol_init_fileio(napi_env env, napi_value exports);

#endif
