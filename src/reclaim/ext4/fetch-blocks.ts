import { VolumeReader } from '../planner';

/** Largest single read when fetching scattered metadata blocks. */
const MAX_READ_BYTES = 4 << 20;
/** Unwanted blocks a read may span to join two wanted ones: cheaper than another round trip. */
const MAX_GAP_BLOCKS = 16;

/**
 * Reads the given filesystem blocks, joining nearby ones into reads of up to 4 MiB.
 * Returns each block's contents (zeros where the volume returned short data).
 */
export async function fetchBlocks(volume: VolumeReader, blockSize: number, blocks: Iterable<number>): Promise<Map<number, Buffer>> {
  const sorted = [...new Set(blocks)].sort((a, b) => a - b);
  const out = new Map<number, Buffer>();
  const maxBlocks = Math.max(1, Math.floor(MAX_READ_BYTES / blockSize));
  let i = 0;
  while (i < sorted.length) {
    const first = sorted[i] as number;
    let j = i + 1;
    while (j < sorted.length) {
      const b = sorted[j] as number;
      const prev = sorted[j - 1] as number;
      if (b - prev > MAX_GAP_BLOCKS || b - first >= maxBlocks) break;
      j++;
    }
    const lastBlock = sorted[j - 1] as number;
    const len = (lastBlock - first + 1) * blockSize;
    const data = await volume.read(first * blockSize, len);
    for (let k = i; k < j; k++) {
      const b = sorted[k] as number;
      const at = (b - first) * blockSize;
      const slice = data.subarray(at, at + blockSize);
      out.set(b, slice.length === blockSize ? slice : Buffer.concat([slice, Buffer.alloc(blockSize - slice.length)]));
    }
    i = j;
  }
  return out;
}
