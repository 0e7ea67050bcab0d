const UNITS: Record<string, number> = {
  '': 1, B: 1,
  K: 1024, KB: 1000, KIB: 1024,
  M: 1024 ** 2, MB: 1000 ** 2, MIB: 1024 ** 2,
  G: 1024 ** 3, GB: 1000 ** 3, GIB: 1024 ** 3,
  T: 1024 ** 4, TB: 1000 ** 4, TIB: 1024 ** 4,
  P: 1024 ** 5, PB: 1000 ** 5, PIB: 1024 ** 5,
};

/** Parses "10G", "512M", "4096", "1.5T" (binary units for bare letters, like dd and qemu-img). */
export function parseSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  const unit = m?.[2]?.toUpperCase() ?? '';
  const mult = UNITS[unit];
  if (!m || mult === undefined) throw new Error(`bad size "${text}": expected a number with an optional unit such as 512M, 10G or 2T`);
  const bytes = Math.round(Number(m[1]) * mult);
  if (!Number.isSafeInteger(bytes)) throw new Error(`bad size "${text}": too large`);
  return bytes;
}

export function formatSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return i === 0 ? `${bytes} B` : `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}
