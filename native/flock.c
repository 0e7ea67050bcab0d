/*
 * flock(2) for TypeScript (src/native/flock.ts holds the API):
 *   flock(fd: number, op: number): number   0, or the positive errno
 *   LOCK_SH, LOCK_EX, LOCK_UN, LOCK_NB      this platform's values, so TypeScript need not know them
 *
 * No buffers here: fd and op arrive as JavaScript numbers and are copied into C ints.
 */
#include <errno.h>
#include <sys/file.h>

#include "addon.h"

/* Blocks the calling (JavaScript) thread until the lock is granted unless op has LOCK_NB.
 * EINTR (a signal handler ran while waiting) is retried, so it never reaches JavaScript. */
static napi_value js_flock(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  /* Handles, valid until this callback returns. */
  napi_value argv[2];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc != 2) {
    napi_throw_type_error(env, NULL, "flock(fd, op) takes two arguments");
    return NULL;
  }
  int32_t fd, op;
  if (!thinvol_get_int32(env, argv[0], "flock: fd must be an integer", &fd)) return NULL;
  if (!thinvol_get_int32(env, argv[1], "flock: op must be an integer", &op)) return NULL;

  int rc;
  do {
    rc = flock(fd, op);
  } while (rc == -1 && errno == EINTR);

  int err = rc == 0 ? 0 : errno;

  napi_value result;
  NAPI_CALL(env, napi_create_int32(env, err, &result));
  return result;
}

napi_value thinvol_init_flock(napi_env env, napi_value exports) {
  napi_value lock_sh, lock_ex, lock_un, lock_nb;
  NAPI_CALL(env, napi_create_int32(env, LOCK_SH, &lock_sh));
  NAPI_CALL(env, napi_create_int32(env, LOCK_EX, &lock_ex));
  NAPI_CALL(env, napi_create_int32(env, LOCK_UN, &lock_un));
  NAPI_CALL(env, napi_create_int32(env, LOCK_NB, &lock_nb));
  /* Names are string literals (static storage); N-API copies them. Read-only properties. */
  const napi_property_descriptor props[] = {
    {"flock", NULL, js_flock, NULL, NULL, NULL, napi_enumerable, NULL},
    {"LOCK_SH", NULL, NULL, NULL, NULL, lock_sh, napi_enumerable, NULL},
    {"LOCK_EX", NULL, NULL, NULL, NULL, lock_ex, napi_enumerable, NULL},
    {"LOCK_UN", NULL, NULL, NULL, NULL, lock_un, napi_enumerable, NULL},
    {"LOCK_NB", NULL, NULL, NULL, NULL, lock_nb, napi_enumerable, NULL},
  };
  NAPI_CALL(env, napi_define_properties(env, exports, sizeof props / sizeof props[0], props));
  return exports;
}
