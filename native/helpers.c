/*
 * Helpers every module of thinvol's native addon uses (declared in addon.h): N-API error
 * reporting and argument checks. Compiled into each module (thinvol_native, thinvol_fuse3).
 */
#include <stdio.h>

#include "addon.h"

void thinvol_throw_napi_error(napi_env env) {
  /* Copy the message before the next N-API call: `info` and what it points to are only
   * guaranteed until then. Lifetime of `message`: this stack frame; napi_throw_error copies it
   * into a JavaScript string. */
  char message[256] = "N-API call failed";
  const napi_extended_error_info *info = NULL;
  if (napi_get_last_error_info(env, &info) == napi_ok && info != NULL && info->error_message != NULL) {
    snprintf(message, sizeof message, "N-API call failed: %s", info->error_message);
  }
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending) return;
  napi_throw_error(env, NULL, message);
}

bool thinvol_get_int32(napi_env env, napi_value value, const char *message, int32_t *out) {
  napi_valuetype type;
  if (napi_typeof(env, value, &type) != napi_ok) {
    thinvol_throw_napi_error(env);
    return false;
  }
  double d = 0;
  if (type == napi_number && napi_get_value_double(env, value, &d) != napi_ok) {
    thinvol_throw_napi_error(env);
    return false;
  }
  /* In range first (NaN fails both tests), so that the cast is defined; then no fraction. */
  if (type != napi_number || !(d >= INT32_MIN && d <= INT32_MAX) || (double)(int32_t)d != d) {
    napi_throw_type_error(env, NULL, message);
    return false;
  }
  *out = (int32_t)d;
  return true;
}
