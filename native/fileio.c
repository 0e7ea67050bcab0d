/*
 * A page-cache-only read for TypeScript (src/native/fileio.ts holds the API):
 *   preadNowait(fd, buf, bufOffset, len, pos): number
 *     preadv2(fd, buf[bufOffset, bufOffset + len), pos, RWF_NOWAIT): the bytes read (0 at end of
 *     file), or the negative errno: -EAGAIN when the data is not all in the page cache (the
 *     kernel would have to wait for the disk), -EOPNOTSUPP where the file cannot do it.
 *
 * It runs on the calling (JavaScript) thread and never waits for the disk, so the daemon can
 * answer a read of cached data without a trip through libuv's threadpool.
 *
 * Buffers: `buf` is the caller's Buffer, borrowed for this synchronous call only (its data
 * pointer is used inside preadv2 and kept nowhere).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sys/uio.h>

#include "addon.h"

#ifndef RWF_NOWAIT
#define RWF_NOWAIT 0x00000008
#endif

/* A non-negative integer below 2^53 (a byte count or offset), or a TypeError. */
static bool get_size(napi_env env, napi_value value, const char *message, int64_t *out) {
  napi_valuetype type;
  double d = 0;
  if (napi_typeof(env, value, &type) != napi_ok || (type == napi_number && napi_get_value_double(env, value, &d) != napi_ok)) {
    thinvol_throw_napi_error(env);
    return false;
  }
  if (type != napi_number || !(d >= 0 && d <= 9007199254740991.0) || (double)(int64_t)d != d) {
    napi_throw_type_error(env, NULL, message);
    return false;
  }
  *out = (int64_t)d;
  return true;
}

static napi_value js_pread_nowait(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  /* Handles, valid until this callback returns. */
  napi_value argv[5];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc != 5) {
    napi_throw_type_error(env, NULL, "preadNowait(fd, buf, bufOffset, len, pos) takes five arguments");
    return NULL;
  }
  int32_t fd;
  if (!thinvol_get_int32(env, argv[0], "preadNowait: fd must be an integer", &fd)) return NULL;
  bool is_buffer = false;
  NAPI_CALL(env, napi_is_buffer(env, argv[1], &is_buffer));
  if (!is_buffer) {
    napi_throw_type_error(env, NULL, "preadNowait: buf must be a Buffer");
    return NULL;
  }
  /* data: the Buffer's memory, owned by JavaScript; valid during this call, where argv[1] keeps the Buffer alive. */
  void *data = NULL;
  size_t length = 0;
  NAPI_CALL(env, napi_get_buffer_info(env, argv[1], &data, &length));
  int64_t off, len, pos;
  if (!get_size(env, argv[2], "preadNowait: bufOffset must be a non-negative integer", &off)) return NULL;
  if (!get_size(env, argv[3], "preadNowait: len must be a non-negative integer", &len)) return NULL;
  if (!get_size(env, argv[4], "preadNowait: pos must be a non-negative integer", &pos)) return NULL;
  if ((uint64_t)off > length || (uint64_t)len > length - (uint64_t)off) {
    napi_throw_range_error(env, NULL, "preadNowait: bufOffset + len is past the end of buf");
    return NULL;
  }

  struct iovec iov = {.iov_base = (char *)data + off, .iov_len = (size_t)len};
  ssize_t n;
  do {
    n = preadv2(fd, &iov, 1, (off_t)pos, RWF_NOWAIT);
  } while (n < 0 && errno == EINTR);

  napi_value result;
  NAPI_CALL(env, napi_create_double(env, n >= 0 ? (double)n : -(double)errno, &result));
  return result;
}

napi_value thinvol_init_fileio(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
    {"preadNowait", NULL, js_pread_nowait, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  NAPI_CALL(env, napi_define_properties(env, exports, sizeof props / sizeof props[0], props));
  return exports;
}
