import createDebug from 'debug';

/** Namespaced tracing: DEBUG=thinvol:* shows FUSE ops, allocation decisions and commits. */
export function logger(area: string): createDebug.Debugger {
  return createDebug(`thinvol:${area}`);
}
