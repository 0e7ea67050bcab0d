/**
 * Byte I/O on one backend: a file, a block device, or memory in tests. Ranges are checked by
 * the caller. `flush` makes every write that completed before it was called durable.
 */
export interface Backend {
  read(buf: Buffer, bufOffset: number, len: number, pos: number): Promise<void>;
  write(buf: Buffer, bufOffset: number, len: number, pos: number): Promise<void>;
  flush(): Promise<void>;
  close(): Promise<void>;
}
