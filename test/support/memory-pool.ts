import { BackendSet } from '../../src/backend/backend-set';
import { MemoryBackend } from '../../src/backend/memory-backend';
import { selfHolder } from '../../src/pool/holder';
import { Pool } from '../../src/pool/pool';
import { MemoryStore } from '../../src/store/memory-store';
import type { Holder } from '../../src/store/records';
import { VolumeIo } from '../../src/volume/volume-io';

/** Memory backends keep a small label area too, so that offset arithmetic is tested. */
const MEMORY_DATA_START = 64 * 1024;

/** A pool held in memory: store, backends and the data path, no files, no root. */
export class MemoryPool {
  readonly holder: Holder = selfHolder();
  readonly pool: Pool;
  readonly disks = new Map<number, MemoryBackend>();
  readonly backends: BackendSet;

  constructor(readonly store: MemoryStore, backendBytes: number[]) {
    this.pool = store.meta.get('super') ? new Pool('/memory-pool', store) : Pool.init('/memory-pool', store, backendBytes.map((n, i) => ({ path: `memory:${i + 1}`, kind: 'file', dataStart: MEMORY_DATA_START, capacityBytes: n })));
    for (const b of this.pool.backendList()) this.disks.set(b.id, new MemoryBackend(b.dataStart + b.capacityBytes));
    this.backends = new BackendSet((id) => this.pool.backend(id), async (r) => this.disks.get(r.id)!);
  }

  static create(...backendBytes: number[]): MemoryPool {
    return new MemoryPool(new MemoryStore(), backendBytes);
  }

  io(volumeId: number): VolumeIo {
    return new VolumeIo(this.pool, this.backends, this.holder, volumeId);
  }
}
