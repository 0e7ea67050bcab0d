import { nativeAddon } from './addon';
import { SyscallError } from './flock';

export interface PeerCredentials { pid: number; uid: number; gid: number }

/** Who is at the other end of a connected Unix socket (as the kernel saw it at connect time). */
export function peerCredentials(fd: number): PeerCredentials {
  const [errno, pid, uid, gid] = nativeAddon().peerCredentials(fd);
  if (errno !== 0) throw new SyscallError('getsockopt', errno, `${fd}, SO_PEERCRED`);
  return { pid, uid, gid };
}
