import { mulberry32 } from './prng';

/**
 * Seeded records for every database of a metadata file, of the types thinvol keeps in each (so
 * that each key and value encoding is exercised), with enough map entries for several of the
 * conversion's batches.
 */
export function format2Records(seed: number): Record<string, [unknown, unknown][]> {
  const rnd = mulberry32(seed);
  const int = (n: number): number => Math.floor(rnd() * n);
  const bytes = (n: number): Buffer => Buffer.from(Array.from({ length: n }, () => int(256)));
  const map: [unknown, unknown][] = [];
  const mapKeys = new Set<string>();
  while (map.length < 25_000) {
    const key = bytes(12);
    if (mapKeys.has(key.toString('hex'))) continue;
    mapKeys.add(key.toString('hex'));
    map.push([key, bytes(16 + int(48))]);
  }
  return {
    meta: [['superblock', { uuid: `pool-${seed}`, version: 3, nextVolumeId: 7, nextBackendId: 3 }]],
    backends: [[1, { path: '/var/tmp/a', kind: 'file', capacityBytes: 2 ** 40, dataStart: 1 << 20 }], [2, { path: '/dev/sdb', kind: 'block', capacityBytes: 2 ** 41 + 4096, dataStart: 1 << 20 }]],
    volumes: Array.from({ length: 40 }, (_, i): [unknown, unknown] => [i + 1, { id: i + 1, name: `vol${i}`, sizeBytes: (int(1 << 20) + 1) * 4096, createdAt: 1_700_000_000_000 + int(1e9) }]),
    names: Array.from({ length: 40 }, (_, i): [unknown, unknown] => [`vol${i}`, i + 1]),
    map,
    free: Array.from({ length: 500 }, (_, i): [unknown, unknown] => [[1 + (i % 2), i * 1_000_000 + int(1000)], 1 + int(100_000)]),
    pending: Array.from({ length: 20 }, (_, i): [unknown, unknown] => [[`daemon-${i % 3}`, 1, i * 4096], { len: 4096 * (1 + int(64)), volumeId: 1 + int(40) }]),
    claims: [[5, { daemon: 'd1', since: 123 }]],
    daemons: [['d1', { pid: 4242, host: 'h', heartbeat: 1_700_000_000_000, mounts: ['vol1', 'vol2'] }]],
    changes: [[1, { kind: 'migrate', state: 'copy', volumes: [1, 2, 3], progress: 0.5 }]],
    leases: [['layout', { holder: 'c1', until: 1_700_000_000_999 }]],
    layers: [[1, { volumeId: 1, parent: null, blocks: 12345 }]],
    snapshots: [[1, { name: 'snap', volumeId: 1, layer: 1, createdAt: 1_700_000_000_000 }]],
    commits: [['count', 31_337]],
  };
}
