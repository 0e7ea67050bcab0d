/** Records kept in the pool's LMDB environment. All offsets and lengths are bytes. */

export const BLOCK = 4096;
/**
 * The largest volume (4 PiB): every offset and offset + length stays an exact integer in a
 * JavaScript number, and well inside the map's 2^48 blocks.
 */
export const MAX_VOLUME_BYTES = 2 ** 52;

export interface Superblock {
  /** 3: backends carry a label and their data starts after it. */
  format: 3;
  /** Written into every backend's label. */
  uuid: string;
  createdAt: number;
  nextVolumeId: number;
  nextBackendId: number;
  /** `pool set`'s choices; absent: the defaults (pool/space-policy.ts). */
  space?: SpacePolicy;
  /** The space level last announced (logged, hook run), so that each crossing is announced once pool-wide. */
  spaceLevel?: SpaceLevel;
}

/** A threshold of free space: a share of the pool's capacity, or a size. */
export type Threshold = { pct: number } | { bytes: number };

export interface SpacePolicy {
  /** Below this much free space the pool is low on space. */
  lowWater: Threshold;
  /** Below this much it is critical. */
  critical: Threshold;
  /** A write that needs new space when there is none: wait for space (up to fullTimeoutS), or fail at once with ENOSPC. */
  whenFull: 'queue' | 'error';
  fullTimeoutS: number;
  /** Run (by `sh -c`) once per downward crossing of a level, by the daemon that sees it first. */
  onLowSpace?: string;
  /** Kept back from ordinary allocation for writes into guests' journals (absent: the default, see reserveBytes). */
  reserve?: Threshold;
}

export type SpaceLevel = 'ok' | 'lowSpace' | 'critical' | 'outOfSpace';

export interface BackendRecord {
  id: number;
  path: string;
  kind: 'file' | 'block';
  /** Where data space starts (after the label): the backend's extents lie in [dataStart, dataStart + capacityBytes). */
  dataStart: number;
  /** Data space, in bytes. */
  capacityBytes: number;
  /** Bytes mapped by volumes. */
  allocatedBytes: number;
  /** Bytes taken from the free table by a daemon, being written, not yet mapped. */
  reservedBytes: number;
  /** Set by `backend drain`: nothing new is allocated here. */
  draining?: boolean;
  /** A file backend grown by `stepBytes` (up to `maxBytes` of data) whenever the pool is low on space. */
  autoextend?: { stepBytes: number; maxBytes: number };
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
  /** Map generation: bumped by every layout change applied to the volume. */
  generation?: number;
  /**
   * The map layer its writes go to (its *top*); absent: the volume's own id, with no layer
   * below. Set once the volume was snapshotted or cloned: see LayerRecord.
   */
  layer?: number;
}

/**
 * A map layer that has a layer below it or layers above it. Map entries are keyed by layer;
 * a volume or snapshot sees its top layer, then each layer below through the gaps. A layer
 * with layers above it is frozen (never written again); its blocks are shared by reference:
 * `children` counts the layers whose parent it is, and a snapshot (or a volume) owning it
 * counts once more. A layer owned by nobody whose children fall to one is merged into that
 * child, to none is freed.
 */
export interface LayerRecord {
  id: number;
  parent?: number;
  children: number;
  /** The volume (whose top it is) or snapshot (whose image it is) it belongs to; none: kept only for its children. */
  owner?: number;
  /** Bumped by every layout change applied to the layer (daemons check it, as a volume's generation). */
  generation?: number;
}

/** A read-only point-in-time image of a volume: its frozen layer and the size at that time. */
export interface SnapshotRecord {
  id: number;
  name: string;
  /** The volume it was taken of (a clone keeps its own snapshots apart). */
  volume: number;
  layer: number;
  sizeBytes: number;
  createdAt: number;
}

/**
 * A map entry: volume bytes [vstart, vstart+len) live at backend `backend`, offset `boff`.
 * Backend 0 (no backend has it) marks a *hole* entry: zeros that hide what a layer below maps.
 */
export interface Extent {
  vstart: number;
  len: number;
  backend: number;
  boff: number;
  /** Seen through from a layer below the top: a write must not change it in place (copy on write). */
  shared?: true;
}

/** The backend id of hole entries. */
export const HOLE_BACKEND = 0;

/** A run of backend space. */
export interface Run { backend: number; start: number; len: number }

/** Who holds a reservation or a volume claim: a process, identified so that pid reuse is detected. */
export interface Holder { pid: number; startTime: number; host: string }

/** A range a daemon holds for a layout change: no I/O of that daemon touches it meanwhile. */
export interface HoldRecord { change: number; seq: number; volume: number; start: number; end: number }

export interface Fence { change: number; at: number; reason: string }

/** A mount daemon's registration: who it is, what it serves, when it last showed life. */
export interface DaemonRecord extends Holder {
  id: string;
  mountpoint: string;
  socket: string;
  startedAt: number;
  heartbeatAt: number;
  /** Bumped at each (re-)registration. */
  epoch: number;
  volumes: number[];
  holds: HoldRecord[];
  fenced?: Fence;
  /** Space its volumes discarded that their next commit (within a second) gives back. */
  freeingBytes?: number;
  /** Writes waiting for space in this daemon (a full pool in queue mode). */
  queuedWrites?: number;
  /** The FUSE binding serving its mount: 'libfuse3' or 'libfuse2' (absent in older records). */
  binding?: string;
}

/** The one controller allowed to change the pool's layout at a time. */
export interface Lease { holder: string; pid: number; change: number; renewedAt: number }

export type ChangeRequest =
  | { kind: 'drain'; backend: number }
  | { kind: 'migrate'; volume: number; to: number; offset: number; length: number }
  | { kind: 'rebalance' };

/** One piece of a batch: volume bytes [vstart, vstart+len) move from one backend run to another. */
export interface Move { vstart: number; len: number; from: { backend: number; boff: number }; to?: { backend: number; boff: number } }

export interface BatchRecord {
  seq: number;
  volume: number;
  start: number;
  end: number;
  moves: Move[];
  /** Daemons serving the volume when the batch began: each must hold, then apply. */
  daemons: string[];
  state: 'holding' | 'copying' | 'applied';
  startedAt: number;
}

export interface DaemonReport { daemon: string; pid: number; phase: 'hold' | 'apply' | 'release'; ms: number; at: number; ok: boolean; note?: string }

export type ChangeState = 'running' | 'done' | 'partial' | 'failed' | 'interrupted';

/** A layout change (migrate, drain, rebalance): its request, progress and outcome, kept after it ends. */
export interface ChangeRecord {
  id: number;
  request: ChangeRequest;
  title: string;
  state: ChangeState;
  phase: 'plan' | 'hold' | 'copy' | 'apply' | 'release' | 'finished';
  controllerPid: number;
  startedAt: number;
  updatedAt: number;
  finishedAt?: number;
  /** Bytes still to move when the change (or its last resume) started planning, plus what was copied before. */
  bytesTotal: number;
  bytesCopied: number;
  copyMs: number;
  batchesDone: number;
  batchesAborted: number;
  maxHoldMs: number;
  nextSeq: number;
  resumes: number;
  fenced: { daemon: string; pid: number; reason: string; at: number }[];
  skippedVolumes: number[];
  reports: DaemonReport[];
  batch?: BatchRecord;
  outcome?: string;
}
