/*
 * PR_SET_IO_FLUSHER for TypeScript (src/native/io-flusher.ts holds the API):
 *   setIoFlusher(): number   0, or the positive errno (EPERM without CAP_SYS_RESOURCE)
 *   ioFlusher(): number      1 if the calling thread has it, 0 if not, or the negative errno
 *
 * A process in the block I/O path (a FUSE daemon behind a loop device) must not wait on its
 * own writeback when it allocates memory; this flag makes the kernel's reclaim avoid that.
 * It belongs to the calling thread (the JavaScript thread here); threads created later inherit
 * it, and so do child processes, across execve too.
 *
 * No buffers here.
 */
#include <errno.h>
#include <sys/prctl.h>

#include "addon.h"

#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#define PR_GET_IO_FLUSHER 58
#endif

static napi_value js_set_io_flusher(napi_env env, napi_callback_info info) {
  (void)info;
  int err = prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0) == 0 ? 0 : errno;
  napi_value result;
  NAPI_CALL(env, napi_create_int32(env, err, &result));
  return result;
}

static napi_value js_io_flusher(napi_env env, napi_callback_info info) {
  (void)info;
  int rc = prctl(PR_GET_IO_FLUSHER, 0, 0, 0, 0);
  napi_value result;
  NAPI_CALL(env, napi_create_int32(env, rc >= 0 ? rc : -errno, &result));
  return result;
}

napi_value thinvol_init_prctl(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
    {"setIoFlusher", NULL, js_set_io_flusher, NULL, NULL, NULL, napi_enumerable, NULL},
    {"ioFlusher", NULL, js_io_flusher, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  NAPI_CALL(env, napi_define_properties(env, exports, sizeof props / sizeof props[0], props));
  return exports;
}
