/*
 * thinvol's native addon, module thinvol_native: its init, which adds each part's exports.
 * The helpers every part uses are in helpers.c (addon.h).
 */

#include "addon.h"

static napi_value init(napi_env env, napi_value exports) {
  if (thinvol_init_flock(env, exports) == NULL) return NULL;
  if (thinvol_init_peercred(env, exports) == NULL) return NULL;
  if (thinvol_init_prctl(env, exports) == NULL) return NULL;
  if (thinvol_init_fileio(env, exports) == NULL) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
