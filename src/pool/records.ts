/** Records kept in the pool's LMDB environment. All offsets and lengths are bytes. */

export const BLOCK = 4096;

export interface Superblock {
  format: 1;
  createdAt: number;
  nextVolumeId: number;
  nextBackendId: number;
}

export interface BackendRecord {
  id: number;
  path: string;
  kind: 'file' | 'block';
  capacityBytes: number;
  /** Bytes mapped by volumes. */
  allocatedBytes: number;
  /** Bytes taken from the free table by a daemon, being written, not yet mapped. */
  reservedBytes: number;
}

export interface VolumeRecord {
  id: number;
  name: string;
  sizeBytes: number;
  allocatedBytes: number;
  mode: number;
  uid: number;
  gid: number;
  createdAt: number;
  mtimeMs: number;
  /** Bytes given back by reclaim over the volume's life. */
  reclaimedBytes?: number;
}

/** A map entry: volume bytes [vstart, vstart+len) live at backend `backend`, offset `boff`. */
export interface Extent {
  vstart: number;
  len: number;
  backend: number;
  boff: number;
}

export interface MapValue { len: number; backend: number; boff: number }

/** A run of backend space. */
export interface Run { backend: number; start: number; len: number }

/** Who holds a reservation or a volume claim: a process, identified so that pid reuse is detected. */
export interface Holder { pid: number; startTime: number; host: string }
