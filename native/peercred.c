/*
 * The credentials of the process at the other end of a Unix socket (SO_PEERCRED), for the
 * daemon's control socket (src/native/peercred.ts holds the API):
 *   peerCredentials(fd: number): [errno, pid, uid, gid]   errno 0 on success
 *
 * No buffers: the ucred struct lives on this stack frame; its fields are copied into numbers.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sys/socket.h>

#include "addon.h"

static napi_value js_peer_credentials(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  /* Handles, valid until this callback returns. */
  napi_value argv[1];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc != 1) {
    napi_throw_type_error(env, NULL, "peerCredentials(fd) takes one argument");
    return NULL;
  }
  int32_t fd;
  if (!thinvol_get_int32(env, argv[0], "peerCredentials: fd must be an integer", &fd)) return NULL;

  struct ucred cred = {0};
  socklen_t len = sizeof cred;
  int err = getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 ? 0 : errno;

  napi_value result, v;
  NAPI_CALL(env, napi_create_array_with_length(env, 4, &result));
  const double fields[4] = {err, cred.pid, cred.uid, cred.gid};
  for (uint32_t i = 0; i < 4; i++) {
    NAPI_CALL(env, napi_create_double(env, fields[i], &v));
    NAPI_CALL(env, napi_set_element(env, result, i, v));
  }
  return result;
}

napi_value thinvol_init_peercred(napi_env env, napi_value exports) {
  /* The name is a string literal (static storage); N-API copies it. */
  const napi_property_descriptor props[] = {
    {"peerCredentials", NULL, js_peer_credentials, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  NAPI_CALL(env, napi_define_properties(env, exports, sizeof props / sizeof props[0], props));
  return exports;
}
