import { nativeAddon } from './addon';

/**
 * Reads what the page cache holds of fd's [pos, pos + len) into buf at bufOffset, on the calling
 * thread, never waiting for the disk (preadv2 with RWF_NOWAIT): the bytes read (fewer when only
 * the start is cached, 0 at end of file), or the negative errno: -EAGAIN when nothing could be
 * read without waiting, -EOPNOTSUPP where the file cannot say.
 */
export function readCached(fd: number, buf: Buffer, bufOffset: number, len: number, pos: number): number {
  return nativeAddon().preadNowait(fd, buf, bufOffset, len, pos);
}
