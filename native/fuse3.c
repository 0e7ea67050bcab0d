/*
 * Module thinvol_fuse3: a libfuse3 low-level session for TypeScript (src/native/fuse3.ts holds
 * the API, src/fuse/lowlevel-adapter.ts the logic). Built only where pkg-config finds fuse3.
 *
 *   mount(mountpoint, args, config, onRequest): Session | number (positive errno)
 *   OP, STAT, STATFS, SETATTR, OPEN, CAP      numbering shared with TypeScript
 *   libfuseVersion                            the libfuse3 loaded at run time
 *
 * What C does, and nothing more: create the session from the options TypeScript built, mount,
 * read requests from /dev/fuse on the JavaScript thread, package each one and hand it to
 * JavaScript without replying, and send the replies JavaScript asks for.
 *
 * One thread. Everything here runs on the JavaScript thread: /dev/fuse is non-blocking and
 * watched by a uv_poll handle in Node's own event loop; when it is readable, on_readable reads
 * up to READ_BATCH requests into its own buffers and has libfuse process each
 * (fuse_session_process_buf, whose ll_* callbacks below call onRequest directly), inside one
 * callback scope, so promise continuations (most replies) run when the batch is done. This is
 * qemu-storage-daemon's design. The earlier one (libfuse's clone_fd worker threads posting to
 * a threadsafe function) paid two thread wake-ups per request, and on this kind of VM a
 * context switch costs more than the request's own work. The request table needs no lock.
 *
 * Shutdown order (TypeScript drives it): the kernel side ends first (fusermount -u; the read
 * answers ENODEV; on_readable stops watching and delivers OP_ENDED, the last thing it ever
 * delivers). TypeScript waits for its pending replies, then calls destroy(): answer EIO to
 * what is still pending, unmount (a no-op when the kernel already did; else a lazy detach, so
 * no stale mount stays), destroy the session, close the poll handle. destroy() refuses (EBUSY)
 * before OP_ENDED was delivered: replying after fuse_session_destroy would use freed memory, so
 * it may not run while a request can still arrive.
 *
 * Buffers.
 *   - The receive buffer (session.rbuf, a buffer of the data pool below, big enough for the
 *     largest request): on_readable reads each request into it and libfuse parses it there; the
 *     next read overwrites it, unless a large write took it (below). destroy() gives it back.
 *   - Names (lookup, create, unlink, rename): copied out of the receive buffer into
 *     request.name/name2; freed by call_js right after it made the JavaScript strings.
 *   - Write data: a write of POOL_MIN bytes or more takes the whole receive buffer
 *     (request.data points into it, request.pool_buf is the buffer, request.pool big_pool;
 *     on_readable gets a new one from the pool for the next read), so its data is never copied
 *     here. Smaller writes are copied into a buffer of small_pool (request.data =
 *     request.pool_buf; into one of big_pool if a large write's data were not in the receive
 *     buffer). call_js gives the data to an external Buffer whose finalizer gives the
 *     buffer back to its pool (free_big, free_small), and keeps a weak reference to that
 *     Buffer in the request.
 *     The reply (any reply method, or destroy) detaches the Buffer's memory: every view of it
 *     in JavaScript reads as empty from then on, and Node calls the finalizer in the next turn,
 *     so the memory goes back to the pool at once rather than at a garbage collection (1 MiB
 *     writes found the pool empty and page-faulted fresh memory, and the external memory made
 *     V8 run full collections). A write is answered only after its backend writes completed
 *     (the adapter replies from the handler's callback), so no pending pwrite uses the memory.
 *   - Read replies: JavaScript allocates the Buffer and fills it; replyBuf hands its bytes to
 *     fuse_reply_buf, which copies them into the kernel before returning. The memory is V8's,
 *     so a late fill after a reply or after destroy() touches nothing freed.
 *   - Readdir replies: a buffer of the request's size, allocated and freed inside replyReaddir.
 *   - struct request: from the ll_* callback's calloc until the reply (or until call_js for
 *     notifications, which need none); the table holds it in between.
 */
#define FUSE_USE_VERSION 312
#include <errno.h>
#include <fuse_lowlevel.h>
#include <math.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "addon.h"

/* Request kinds, shared with TypeScript through the OP export. INIT, FORGET and ENDED are
 * notifications: no reply (id 0). */
enum op {
  OP_INIT = 1, OP_ENDED, OP_FORGET, OP_LOOKUP, OP_GETATTR, OP_SETATTR, OP_OPEN, OP_CREATE,
  OP_READ, OP_WRITE, OP_FLUSH, OP_RELEASE, OP_FSYNC, OP_OPENDIR, OP_READDIR, OP_RELEASEDIR,
  OP_STATFS, OP_UNLINK, OP_RENAME, OP_FALLOCATE, OP_LSEEK,
};

/* Layout of the Float64Array a stat travels in (replyEntry, replyAttr, replyCreate). */
enum { ST_INO, ST_MODE, ST_NLINK, ST_UID, ST_GID, ST_SIZE, ST_BLOCKS, ST_BLKSIZE, ST_ATIME_MS,
       ST_MTIME_MS, ST_CTIME_MS, ST_COUNT };
/* Layout of the Float64Array a statfs travels in (replyStatfs). */
enum { SF_BSIZE, SF_FRSIZE, SF_BLOCKS, SF_BFREE, SF_BAVAIL, SF_FILES, SF_FFREE, SF_FAVAIL,
       SF_FSID, SF_FLAG, SF_NAMEMAX, SF_COUNT };
/* replyOpen/replyCreate flags. */
enum { OPEN_DIRECT_IO = 1, OPEN_KEEP_CACHE = 2, OPEN_NONSEEKABLE = 4 };

/*
 * One request on its way to JavaScript and back. What each op fills (the arguments onRequest
 * gets, in this order: op, id, ino, fh, off, size, flags, mode, name, arg):
 *   LOOKUP parent,name   FORGET ino,size=nlookup   GETATTR ino,fh?   STATFS ino
 *   SETATTR ino,fh?,size=new size,flags=to_set,arg=Float64Array[mode,uid,gid,atimeMs,mtimeMs]
 *   OPEN/OPENDIR ino,flags   CREATE parent,name,mode,flags   READ ino,fh,off,size
 *   WRITE ino,fh,off,size,arg=Buffer   FLUSH/RELEASEDIR ino,fh   RELEASE ino,fh,flags
 *   FSYNC ino,fh,flags=datasync   READDIR ino,fh,off,size   UNLINK parent,name
 *   RENAME parent,name,fh=new parent,arg=new name,flags   FALLOCATE ino,fh,off,size=length,flags=mode
 *   LSEEK ino,fh,off,flags=whence   INIT arg=Float64Array (see ll_init)   ENDED flags=loop result
 * fh? is -1 when the kernel sent no file handle.
 */
struct request {
  fuse_req_t req; /* NULL for notifications */
  int op;
  uint64_t ino;
  uint64_t fh;
  bool has_fh;
  int64_t off;
  uint64_t size;
  int32_t flags;
  uint32_t mode;
  char *name;  /* copy out of the receive buffer; freed in call_js */
  char *name2; /* copy out of the receive buffer; freed in call_js */
  void *data;  /* write data (size bytes); owned here until call_js hands it to a Buffer */
  void *pool_buf;    /* the pool buffer data lies in (NULL: no data) */
  struct pool *pool; /* the pool pool_buf came from and goes back to */
  napi_ref data_ref; /* weak, to that Buffer: detached by the reply (detach_data), JavaScript thread only */
  int nnums;
  double nums[10]; /* SETATTR attributes, INIT figures */
};

/* A slot of the request table. id = gen * 2^32 + index, so a stale id (its request already
 * answered, the slot reused) never matches. */
struct slot {
  struct request *r;
  uint32_t gen;
  uint32_t next_free;
};
#define NO_SLOT UINT32_MAX
#define GEN_LIMIT (1u << 20) /* keeps ids below 2^52: exact as JavaScript numbers */

struct session {
  struct fuse_session *se; /* NULL once destroyed */
  napi_env env;
  napi_ref self;       /* strong reference to the JavaScript object until destroy() */
  napi_ref on_request; /* strong reference to onRequest until destroy() */
  napi_async_context async_ctx; /* for the callback scope of each batch; NULL once destroyed */
  uv_poll_t *poll;     /* watches /dev/fuse; malloc'd, freed by its close callback (poll_closed) */
  bool polling;        /* poll is started; false once the session ended or the environment is torn down */
  void *rbuf;          /* the receive buffer (see Buffers); NULL while a write has just taken it */
  bool ended_delivered; /* call_js handed OP_ENDED to JavaScript: nothing more can arrive */
  bool destroyed;
  struct slot *slots;
  uint32_t nslots;
  uint32_t free_head;
  uint32_t pending;

  /* From config, read by ll_init (the first request). */
  unsigned max_write, max_read, max_readahead, max_background, congestion_threshold;
  unsigned want_caps, drop_caps;
};

/*
 * The data pools: buffers kept for reuse, not fresh malloc memory. glibc serves large sizes with
 * mmap, or trims them off the heap once freed, so a buffer allocated per request paid page
 * faults and zeroing every time: 1 MiB writes ran at 350-410 MiB/s that way, 610-700 with
 * glibc's trimming turned off (GLIBC_TUNABLES, same hour); and the backend pwrite of a write
 * copied into a malloc of its own took 30 times as long in the kernel's copy as one from a
 * reused buffer (perf, untar into ext4 on a loop device: 0.34 s against 0.04 s of CPU).
 *   - big_pool: buffers of POOL_BYTES (the largest request the kernel may send: max_write is
 *     capped to POOL_BYTES - FUSE_HEADER_ROOM at INIT), the receive buffers; at most 16 wait
 *     (16 MiB).
 *   - small_pool: buffers of SMALL_BYTES for the data of writes below POOL_MIN; at most 64 wait
 *     (8 MiB), so a queue of small writes does not hold a receive buffer each.
 * Process-wide, because a Buffer's finalizer may run after its session was destroyed; the
 * buffers waiting at exit are never freed.
 */
#define POOL_MIN (128 * 1024)
#define SMALL_BYTES POOL_MIN
#define FUSE_HEADER_ROOM 4096 /* fuse_in_header + fuse_write_in, rounded up to a page as libfuse does */
#define POOL_BYTES (1024 * 1024 + FUSE_HEADER_ROOM)
#define POOL_KEEP_MAX 64
#define IN_HEADER_BYTES 40 /* sizeof(struct fuse_in_header) */
struct pool {
  pthread_mutex_t lock;
  size_t bytes;              /* the size of each buffer */
  int keep;                  /* at most this many wait in bufs */
  void *bufs[POOL_KEEP_MAX]; /* guarded by lock */
  int count;                 /* guarded by lock */
};
static struct pool big_pool = { PTHREAD_MUTEX_INITIALIZER, POOL_BYTES, 16, { NULL }, 0 };
static struct pool small_pool = { PTHREAD_MUTEX_INITIALIZER, SMALL_BYTES, POOL_KEEP_MAX, { NULL }, 0 };

/* A buffer of pool->bytes; NULL when out of memory. Give it back with pool_put. */
static void *pool_get(struct pool *pool) {
  void *p = NULL;
  pthread_mutex_lock(&pool->lock);
  if (pool->count > 0) p = pool->bufs[--pool->count];
  pthread_mutex_unlock(&pool->lock);
  return p != NULL ? p : malloc(pool->bytes);
}

static void pool_put(struct pool *pool, void *p) {
  if (p == NULL) return;
  pthread_mutex_lock(&pool->lock);
  if (pool->count < pool->keep) {
    pool->bufs[pool->count++] = p;
    p = NULL;
  }
  pthread_mutex_unlock(&pool->lock);
  free(p);
}

static void request_free(struct request *r) {
  free(r->name);
  free(r->name2);
  pool_put(r->pool, r->pool_buf);
  free(r);
}

/* ------------------------------------------------------------------ requests from libfuse */

/* Hands a request to JavaScript (the ll_* callbacks run inside on_readable's scopes); if that
 * is impossible, answers it here (EIO) and drops it. */
static void call_js(struct session *s, struct request *r);

static struct request *request_new(fuse_req_t req, int op, fuse_ino_t ino, const struct fuse_file_info *fi) {
  struct request *r = calloc(1, sizeof *r);
  if (r == NULL) {
    if (req != NULL) fuse_reply_err(req, ENOMEM);
    return NULL;
  }
  r->req = req;
  r->op = op;
  r->ino = ino;
  if (fi != NULL) {
    r->fh = fi->fh;
    r->has_fh = true;
  }
  return r;
}

/* Copies a name out of libfuse's receive buffer; false (request answered ENOMEM, freed) if out of memory. */
static bool copy_name(struct request *r, char **to, const char *name) {
  *to = strdup(name);
  if (*to != NULL) return true;
  fuse_reply_err(r->req, ENOMEM);
  request_free(r);
  return false;
}

static struct session *session_of(fuse_req_t req) {
  return fuse_req_userdata(req);
}

static void ll_init(void *userdata, struct fuse_conn_info *conn) {
  struct session *s = userdata;
  /* libfuse has already capped max_write to its receive buffer (1 MiB on 3.14); only lower it,
   * and keep it within ours (on_readable reads into buffers of POOL_BYTES). */
  if (s->max_write > 0 && s->max_write < conn->max_write) conn->max_write = s->max_write;
  if (conn->max_write > POOL_BYTES - FUSE_HEADER_ROOM) conn->max_write = POOL_BYTES - FUSE_HEADER_ROOM;
  /* Must equal the max_read mount option, or libfuse refuses the INIT. */
  conn->max_read = s->max_read;
  if (s->max_readahead < conn->max_readahead) conn->max_readahead = s->max_readahead;
  conn->max_background = s->max_background;
  conn->congestion_threshold = s->congestion_threshold;
  conn->want = (conn->want | (s->want_caps & conn->capable)) & ~s->drop_caps;

  struct request *r = request_new(NULL, OP_INIT, 0, NULL);
  if (r == NULL) return;
  const double nums[] = {conn->proto_major, conn->proto_minor, conn->capable, conn->want, conn->max_write,
                         conn->max_read, conn->max_readahead, conn->max_background, conn->congestion_threshold};
  r->nnums = sizeof nums / sizeof nums[0];
  memcpy(r->nums, nums, sizeof nums);
  call_js(s, r);
}

static void ll_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
  struct request *r = request_new(req, OP_LOOKUP, parent, NULL);
  if (r != NULL && copy_name(r, &r->name, name)) call_js(session_of(req), r);
}

static void ll_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  struct session *s = session_of(req);
  fuse_reply_none(req); /* frees req: a forget gets no answer, so JavaScript only hears of it */
  struct request *r = request_new(NULL, OP_FORGET, ino, NULL);
  if (r == NULL) return;
  r->size = nlookup;
  call_js(s, r);
}

static void ll_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  struct request *r = request_new(req, OP_GETATTR, ino, fi);
  if (r != NULL) call_js(session_of(req), r);
}

static double ms_of(const struct timespec *t) {
  return (double)t->tv_sec * 1e3 + (double)t->tv_nsec / 1e6;
}

static void ll_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi) {
  struct request *r = request_new(req, OP_SETATTR, ino, fi);
  if (r == NULL) return;
  r->size = (uint64_t)attr->st_size;
  r->flags = to_set;
  const double nums[] = {attr->st_mode, attr->st_uid, attr->st_gid, ms_of(&attr->st_atim), ms_of(&attr->st_mtim)};
  r->nnums = sizeof nums / sizeof nums[0];
  memcpy(r->nums, nums, sizeof nums);
  call_js(session_of(req), r);
}

static void ll_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  struct request *r = request_new(req, OP_OPEN, ino, NULL);
  if (r == NULL) return;
  r->flags = fi->flags;
  call_js(session_of(req), r);
}

static void ll_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, struct fuse_file_info *fi) {
  struct request *r = request_new(req, OP_CREATE, parent, NULL);
  if (r == NULL) return;
  r->flags = fi->flags;
  r->mode = mode;
  if (copy_name(r, &r->name, name)) call_js(session_of(req), r);
}

static void ll_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  struct request *r = request_new(req, OP_READ, ino, fi);
  if (r == NULL) return;
  r->off = off;
  r->size = size;
  call_js(session_of(req), r);
}

static void ll_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
  struct request *r = request_new(req, OP_WRITE, ino, fi);
  if (r == NULL) return;
  r->off = off;
  r->size = size;
  struct session *s = session_of(req);
  /* `buf` lies in the receive buffer, which the next read overwrites unless this takes it. */
  if (size >= POOL_MIN && s->rbuf != NULL && buf >= (const char *)s->rbuf && buf + size <= (const char *)s->rbuf + POOL_BYTES) {
    r->data = (void *)buf;
    r->pool_buf = s->rbuf;
    r->pool = &big_pool;
    s->rbuf = NULL;
  } else {
    r->pool = size < POOL_MIN ? &small_pool : &big_pool;
    r->data = r->pool_buf = pool_get(r->pool);
    if (r->data == NULL) {
      fuse_reply_err(req, ENOMEM);
      request_free(r);
      return;
    }
    memcpy(r->data, buf, size);
  }
  call_js(s, r);
}

static void ll_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  struct request *r = request_new(req, OP_FLUSH, ino, fi);
  if (r != NULL) call_js(session_of(req), r);
}

static void ll_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  struct request *r = request_new(req, OP_RELEASE, ino, fi);
  if (r == NULL) return;
  r->flags = fi->flags;
  call_js(session_of(req), r);
}

static void ll_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi) {
  struct request *r = request_new(req, OP_FSYNC, ino, fi);
  if (r == NULL) return;
  r->flags = datasync;
  call_js(session_of(req), r);
}

static void ll_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  struct request *r = request_new(req, OP_OPENDIR, ino, NULL);
  if (r == NULL) return;
  r->flags = fi->flags;
  call_js(session_of(req), r);
}

static void ll_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  struct request *r = request_new(req, OP_READDIR, ino, fi);
  if (r == NULL) return;
  r->off = off;
  r->size = size;
  call_js(session_of(req), r);
}

static void ll_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  struct request *r = request_new(req, OP_RELEASEDIR, ino, fi);
  if (r != NULL) call_js(session_of(req), r);
}

static void ll_statfs(fuse_req_t req, fuse_ino_t ino) {
  struct request *r = request_new(req, OP_STATFS, ino, NULL);
  if (r != NULL) call_js(session_of(req), r);
}

static void ll_unlink(fuse_req_t req, fuse_ino_t parent, const char *name) {
  struct request *r = request_new(req, OP_UNLINK, parent, NULL);
  if (r != NULL && copy_name(r, &r->name, name)) call_js(session_of(req), r);
}

static void ll_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent, const char *newname,
                      unsigned int flags) {
  struct request *r = request_new(req, OP_RENAME, parent, NULL);
  if (r == NULL) return;
  r->fh = newparent;
  r->has_fh = true;
  r->flags = (int32_t)flags;
  if (copy_name(r, &r->name, name) && copy_name(r, &r->name2, newname)) call_js(session_of(req), r);
}

static void ll_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length, struct fuse_file_info *fi) {
  struct request *r = request_new(req, OP_FALLOCATE, ino, fi);
  if (r == NULL) return;
  r->flags = mode;
  r->off = offset;
  r->size = (uint64_t)length;
  call_js(session_of(req), r);
}

static void ll_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, struct fuse_file_info *fi) {
  struct request *r = request_new(req, OP_LSEEK, ino, fi);
  if (r == NULL) return;
  r->off = off;
  r->flags = whence;
  call_js(session_of(req), r);
}

/* Operations not listed get ENOSYS from libfuse. */
static const struct fuse_lowlevel_ops ll_ops = {
  .init = ll_init,
  .lookup = ll_lookup,
  .forget = ll_forget,
  .getattr = ll_getattr,
  .setattr = ll_setattr,
  .open = ll_open,
  .create = ll_create,
  .read = ll_read,
  .write = ll_write,
  .flush = ll_flush,
  .release = ll_release,
  .fsync = ll_fsync,
  .opendir = ll_opendir,
  .readdir = ll_readdir,
  .releasedir = ll_releasedir,
  .statfs = ll_statfs,
  .unlink = ll_unlink,
  .rename = ll_rename,
  .fallocate = ll_fallocate,
  .lseek = ll_lseek,
};

/* ------------------------------------------------------------------ the JavaScript thread */

/* The request is being answered: its write data stops being JavaScript's (see Buffers at the
 * top). A Buffer already collected has its finalizer pending; nothing to do then. */
static void detach_data(napi_env env, struct request *r) {
  if (r->data_ref == NULL) return;
  napi_value buf, ab;
  if (napi_get_reference_value(env, r->data_ref, &buf) == napi_ok && buf != NULL &&
      napi_get_typedarray_info(env, buf, NULL, NULL, NULL, &ab, NULL) == napi_ok &&
      napi_detach_arraybuffer(env, ab) != napi_ok) {
    fprintf(stderr, "thinvol: fuse3: could not detach a write Buffer; its memory waits for the garbage collector\n");
  }
  napi_delete_reference(env, r->data_ref);
  r->data_ref = NULL;
}

/* The request table: JavaScript thread only. Returns the id, or 0 when out of memory. */
static double table_insert(struct session *s, struct request *r) {
  if (s->free_head == NO_SLOT) {
    uint32_t n = s->nslots > 0 ? s->nslots * 2 : 64;
    struct slot *grown = realloc(s->slots, n * sizeof *grown);
    if (grown == NULL) return 0;
    for (uint32_t i = s->nslots; i < n; i++) {
      grown[i].r = NULL;
      grown[i].gen = 1;
      grown[i].next_free = i + 1 < n ? i + 1 : NO_SLOT;
    }
    s->slots = grown;
    s->free_head = s->nslots;
    s->nslots = n;
  }
  uint32_t i = s->free_head;
  s->free_head = s->slots[i].next_free;
  s->slots[i].r = r;
  s->pending++;
  return (double)s->slots[i].gen * 4294967296.0 + (double)i;
}

/* Takes the pending request with this id out of the table; NULL if there is none (answered
 * already, or the session is destroyed). */
static struct request *table_take(struct session *s, double id) {
  if (!(id >= 0 && id < 4503599627370496.0) || floor(id) != id) return NULL;
  uint64_t v = (uint64_t)id;
  uint32_t i = (uint32_t)(v & 0xffffffffu);
  uint32_t gen = (uint32_t)(v >> 32);
  if (i >= s->nslots || s->slots[i].r == NULL || s->slots[i].gen != gen) return NULL;
  struct request *r = s->slots[i].r;
  s->slots[i].r = NULL;
  s->slots[i].gen = s->slots[i].gen + 1 < GEN_LIMIT ? s->slots[i].gen + 1 : 1;
  s->slots[i].next_free = s->free_head;
  s->free_head = i;
  s->pending--;
  detach_data(s->env, r);
  return r;
}

/* An external write Buffer's finalizers; `hint` is the pool buffer the data lies in. */
static void free_big(napi_env env, void *data, void *hint) {
  (void)env;
  (void)data;
  pool_put(&big_pool, hint);
}

static void free_small(napi_env env, void *data, void *hint) {
  (void)env;
  (void)data;
  pool_put(&small_pool, hint);
}

/* Makes the JavaScript value for request.arg; false with nothing pending on failure. */
static bool arg_value(napi_env env, struct request *r, napi_value *out) {
  if (r->op == OP_WRITE) {
    void *copy_target = NULL;
    napi_status st = napi_create_external_buffer(env, r->size, r->data, r->pool == &big_pool ? free_big : free_small, r->pool_buf, out);
    if (st == napi_ok) {
      r->data = r->pool_buf = NULL; /* the Buffer's finalizer gives it back now */
      /* Without the reference the memory still goes back, at the Buffer's collection. */
      if (r->req != NULL && napi_create_reference(env, *out, 0, &r->data_ref) != napi_ok) r->data_ref = NULL;
      return true;
    }
    /* A runtime without external buffers: copy into a Buffer of V8's; r->data is freed with r. */
    return napi_create_buffer_copy(env, r->size, r->data, &copy_target, out) == napi_ok;
  }
  if (r->name2 != NULL) return napi_create_string_utf8(env, r->name2, NAPI_AUTO_LENGTH, out) == napi_ok;
  if (r->nnums > 0) {
    napi_value ab;
    void *bytes = NULL;
    if (napi_create_arraybuffer(env, (size_t)r->nnums * sizeof(double), &bytes, &ab) != napi_ok) return false;
    memcpy(bytes, r->nums, (size_t)r->nnums * sizeof(double));
    return napi_create_typedarray(env, napi_float64_array, (size_t)r->nnums, ab, 0, out) == napi_ok;
  }
  return napi_get_undefined(env, out) == napi_ok;
}

/* Calls onRequest for r. Runs inside on_readable's handle and callback scopes. */
static void call_js(struct session *s, struct request *r) {
  napi_env env = s->env;
  napi_value js_cb;
  if (napi_get_reference_value(env, s->on_request, &js_cb) != napi_ok || js_cb == NULL) {
    if (r->req != NULL) fuse_reply_err(r->req, EIO);
    request_free(r);
    return;
  }
  if (r->op == OP_ENDED) s->ended_delivered = true;
  double id = 0;
  if (r->req != NULL) {
    id = table_insert(s, r);
    if (id == 0) {
      fuse_reply_err(r->req, ENOMEM);
      request_free(r);
      return;
    }
  }
  napi_value argv[10];
  bool ok = napi_create_int32(env, r->op, &argv[0]) == napi_ok &&
            napi_create_double(env, id, &argv[1]) == napi_ok &&
            napi_create_double(env, (double)r->ino, &argv[2]) == napi_ok &&
            napi_create_double(env, r->has_fh ? (double)r->fh : -1, &argv[3]) == napi_ok &&
            napi_create_double(env, (double)r->off, &argv[4]) == napi_ok &&
            napi_create_double(env, (double)r->size, &argv[5]) == napi_ok &&
            napi_create_int32(env, r->flags, &argv[6]) == napi_ok &&
            napi_create_uint32(env, r->mode, &argv[7]) == napi_ok &&
            (r->name != NULL ? napi_create_string_utf8(env, r->name, NAPI_AUTO_LENGTH, &argv[8])
                             : napi_get_undefined(env, &argv[8])) == napi_ok &&
            arg_value(env, r, &argv[9]);
  /* The strings are JavaScript's copies now; the request keeps only what a reply needs. */
  free(r->name);
  free(r->name2);
  r->name = r->name2 = NULL;
  if (!ok) {
    fprintf(stderr, "thinvol: fuse3: could not pass request (op %d) to JavaScript; answered EIO\n", r->op);
    if (r->req != NULL && table_take(s, id) != NULL) fuse_reply_err(r->req, EIO);
    request_free(r);
    return;
  }
  napi_value undefined;
  if (napi_get_undefined(env, &undefined) == napi_ok) {
    /* A request may be answered (and freed) inside this call: r is not used after it, except
     * a notification, which is not in the table. An exception from onRequest becomes an
     * uncaught exception (the dispatcher catches its handlers' errors; one reaching here is a bug). */
    if (napi_call_function(env, undefined, js_cb, 10, argv, NULL) == napi_pending_exception) {
      napi_value error;
      if (napi_get_and_clear_last_exception(env, &error) == napi_ok) napi_fatal_exception(env, error);
    }
  }
  if (id == 0) request_free(r);
}

/* Requests read per wake-up, so that timers and other I/O get their turn under load. */
#define READ_BATCH 64

static void poll_closed(uv_handle_t *handle) {
  free(handle);
}

static void stop_polling(struct session *s) {
  if (s->polling) uv_poll_stop(s->poll);
  s->polling = false;
}

/* /dev/fuse is readable (or in error): read and process what waits, up to READ_BATCH. The end
 * of the kernel connection (unmount, abort) reads as ENODEV; then OP_ENDED goes to JavaScript
 * with flags 0, or with the negative errno of a read or poll error. */
static void on_readable(uv_poll_t *handle, int status, int events) {
  (void)events;
  struct session *s = handle->data;
  if (!s->polling) return;
  napi_env env = s->env;
  napi_handle_scope hs;
  napi_callback_scope cs;
  napi_value resource;
  if (napi_open_handle_scope(env, &hs) != napi_ok) return;
  if (napi_get_reference_value(env, s->self, &resource) != napi_ok ||
      napi_open_callback_scope(env, resource, s->async_ctx, &cs) != napi_ok) {
    napi_close_handle_scope(env, hs);
    return;
  }
  int rc = 1;
  int fd = fuse_session_fd(s->se);
  for (int i = 0; rc > 0 && i < READ_BATCH; i++) {
    if (s->rbuf == NULL && (s->rbuf = pool_get(&big_pool)) == NULL) {
      rc = -ENOMEM;
      break;
    }
    ssize_t n = read(fd, s->rbuf, POOL_BYTES);
    if (n < 0) {
      /* ENOENT: the request was interrupted before we read it. ENODEV: the connection ended. */
      rc = errno == EINTR || errno == ENOENT ? 1 : errno == ENODEV ? 0 : -errno;
    } else if (n < IN_HEADER_BYTES) {
      rc = -EIO;
    } else {
      struct fuse_buf fb;
      memset(&fb, 0, sizeof fb);
      fb.size = (size_t)n;
      fb.mem = s->rbuf;
      fuse_session_process_buf(s->se, &fb);
    }
  }
  /* libuv reports POLLERR as status UV_EBADF and stops the handle; the read tells why. */
  if (rc == -EAGAIN && status < 0) rc = status;
  if (rc <= 0 && rc != -EAGAIN) {
    stop_polling(s);
    struct request *r = calloc(1, sizeof *r);
    if (r == NULL) {
      fprintf(stderr, "thinvol: fuse3: out of memory at the end of the session\n");
    } else {
      r->op = OP_ENDED;
      r->flags = rc;
      call_js(s, r);
    }
  }
  napi_close_callback_scope(env, cs);
  napi_close_handle_scope(env, hs);
}

/* Environment teardown with the session still running (process teardown without destroy()):
 * JavaScript can no longer be called, so stop reading; the kernel connection ends with the
 * process. */
static void env_cleanup(void *arg) {
  struct session *s = arg;
  stop_polling(s);
}

static void session_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  struct session *s = data;
  /* Reached only once destroy() dropped the strong reference, or at environment teardown;
   * in that case the poll handle still points at s, so it stays. */
  if (!s->destroyed) return;
  free(s);
}

/* Prologue of every method: `this` must be a session object. */
static struct session *this_session(napi_env env, napi_callback_info info, size_t *argc, napi_value *argv) {
  napi_value self;
  if (napi_get_cb_info(env, info, argc, argv, &self, NULL) != napi_ok) {
    thinvol_throw_napi_error(env);
    return NULL;
  }
  void *p = NULL;
  if (napi_unwrap(env, self, &p) != napi_ok || p == NULL) {
    napi_throw_type_error(env, NULL, "fuse3: not a session (call the method on the session object)");
    return NULL;
  }
  return p;
}

static bool get_number(napi_env env, napi_value v, const char *message, double *out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_number || napi_get_value_double(env, v, out) != napi_ok) {
    napi_throw_type_error(env, NULL, message);
    return false;
  }
  return true;
}

/* A non-negative integer a JavaScript number holds exactly (file handles, sizes, offsets). */
static bool get_u53(napi_env env, napi_value v, const char *message, uint64_t *out) {
  double d;
  if (!get_number(env, v, message, &d)) return false;
  if (!(d >= 0 && d <= 9007199254740991.0) || floor(d) != d) {
    napi_throw_type_error(env, NULL, message);
    return false;
  }
  *out = (uint64_t)d;
  return true;
}

/* Reads a Float64Array of at least n elements; its memory is V8's, valid during this call. */
static bool get_f64s(napi_env env, napi_value v, size_t n, const char *message, const double **out) {
  bool is_ta = false;
  napi_typedarray_type type;
  size_t len = 0;
  void *data = NULL;
  if (napi_is_typedarray(env, v, &is_ta) != napi_ok || !is_ta ||
      napi_get_typedarray_info(env, v, &type, &len, &data, NULL, NULL) != napi_ok || type != napi_float64_array || len < n) {
    napi_throw_type_error(env, NULL, message);
    return false;
  }
  *out = data;
  return true;
}

static napi_value result_int(napi_env env, int v) {
  napi_value out;
  NAPI_CALL(env, napi_create_int32(env, v, &out));
  return out;
}

/* What every reply method returns: 0 when sent; the positive errno when libfuse could not
 * send it (the kernel no longer waits for it; the request is consumed all the same); -1 when
 * no request with this id is pending (answered already, or the session is destroyed). */
static napi_value sent(napi_env env, int rc) {
  return result_int(env, rc == 0 ? 0 : -rc);
}

#define REPLY_PROLOGUE(n, usage)                                                    \
  size_t argc = n;                                                                  \
  napi_value argv[n];                                                               \
  struct session *s = this_session(env, info, &argc, argv);                        \
  if (s == NULL) return NULL;                                                       \
  if (argc != n) {                                                                  \
    napi_throw_type_error(env, NULL, usage);                                        \
    return NULL;                                                                    \
  }                                                                                 \
  double id;                                                                        \
  if (!get_number(env, argv[0], "fuse3: the request id must be a number", &id)) return NULL

#define TAKE_OR_RETURN(r)                 \
  struct request *r = table_take(s, id); \
  if (r == NULL) return result_int(env, -1)

static void fill_stat(struct stat *st, const double *a) {
  memset(st, 0, sizeof *st);
  st->st_ino = (ino_t)a[ST_INO];
  st->st_mode = (mode_t)a[ST_MODE];
  st->st_nlink = (nlink_t)a[ST_NLINK];
  st->st_uid = (uid_t)a[ST_UID];
  st->st_gid = (gid_t)a[ST_GID];
  st->st_size = (off_t)a[ST_SIZE];
  st->st_blocks = (blkcnt_t)a[ST_BLOCKS];
  st->st_blksize = (blksize_t)a[ST_BLKSIZE];
  const double ms[3] = {a[ST_ATIME_MS], a[ST_MTIME_MS], a[ST_CTIME_MS]};
  struct timespec *ts[3] = {&st->st_atim, &st->st_mtim, &st->st_ctim};
  for (int i = 0; i < 3; i++) {
    double sec = floor(ms[i] / 1e3);
    ts[i]->tv_sec = (time_t)sec;
    ts[i]->tv_nsec = (long)((ms[i] - sec * 1e3) * 1e6);
    if (ts[i]->tv_nsec < 0 || ts[i]->tv_nsec > 999999999) ts[i]->tv_nsec = 0;
  }
}

static void fill_open(struct fuse_file_info *fi, uint64_t fh, int32_t flags) {
  memset(fi, 0, sizeof *fi);
  fi->fh = fh;
  fi->direct_io = (flags & OPEN_DIRECT_IO) != 0;
  fi->keep_cache = (flags & OPEN_KEEP_CACHE) != 0;
  fi->nonseekable = (flags & OPEN_NONSEEKABLE) != 0;
}

/* replyErr(id, errno): errno 0 is success for the requests that carry no data. */
static napi_value js_reply_err(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(2, "replyErr(id, errno)");
  int32_t err;
  if (!thinvol_get_int32(env, argv[1], "replyErr: errno must be an integer", &err)) return NULL;
  if (err < 0) {
    napi_throw_type_error(env, NULL, "replyErr: errno must not be negative");
    return NULL;
  }
  TAKE_OR_RETURN(r);
  int rc = fuse_reply_err(r->req, err);
  request_free(r);
  return sent(env, rc);
}

/* replyEntry(id, stat, entryTimeout, attrTimeout): stat[STAT.ino] is the node id. */
static napi_value js_reply_entry(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(4, "replyEntry(id, stat, entryTimeout, attrTimeout)");
  const double *a;
  double et, at;
  if (!get_f64s(env, argv[1], ST_COUNT, "replyEntry: stat must be a Float64Array of STAT's layout", &a) ||
      !get_number(env, argv[2], "replyEntry: entryTimeout must be a number", &et) ||
      !get_number(env, argv[3], "replyEntry: attrTimeout must be a number", &at)) return NULL;
  struct fuse_entry_param e;
  memset(&e, 0, sizeof e);
  fill_stat(&e.attr, a);
  e.ino = (fuse_ino_t)a[ST_INO];
  e.entry_timeout = et;
  e.attr_timeout = at;
  TAKE_OR_RETURN(r);
  int rc = fuse_reply_entry(r->req, &e);
  request_free(r);
  return sent(env, rc);
}

/* replyCreate(id, stat, entryTimeout, attrTimeout, fh, openFlags) */
static napi_value js_reply_create(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(6, "replyCreate(id, stat, entryTimeout, attrTimeout, fh, openFlags)");
  const double *a;
  double et, at;
  uint64_t fh;
  int32_t flags;
  if (!get_f64s(env, argv[1], ST_COUNT, "replyCreate: stat must be a Float64Array of STAT's layout", &a) ||
      !get_number(env, argv[2], "replyCreate: entryTimeout must be a number", &et) ||
      !get_number(env, argv[3], "replyCreate: attrTimeout must be a number", &at) ||
      !get_u53(env, argv[4], "replyCreate: fh must be a non-negative integer", &fh) ||
      !thinvol_get_int32(env, argv[5], "replyCreate: openFlags must be an integer", &flags)) return NULL;
  struct fuse_entry_param e;
  memset(&e, 0, sizeof e);
  fill_stat(&e.attr, a);
  e.ino = (fuse_ino_t)a[ST_INO];
  e.entry_timeout = et;
  e.attr_timeout = at;
  struct fuse_file_info fi;
  fill_open(&fi, fh, flags);
  TAKE_OR_RETURN(r);
  int rc = fuse_reply_create(r->req, &e, &fi);
  request_free(r);
  return sent(env, rc);
}

/* replyAttr(id, stat, attrTimeout) */
static napi_value js_reply_attr(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(3, "replyAttr(id, stat, attrTimeout)");
  const double *a;
  double at;
  if (!get_f64s(env, argv[1], ST_COUNT, "replyAttr: stat must be a Float64Array of STAT's layout", &a) ||
      !get_number(env, argv[2], "replyAttr: attrTimeout must be a number", &at)) return NULL;
  struct stat st;
  fill_stat(&st, a);
  TAKE_OR_RETURN(r);
  int rc = fuse_reply_attr(r->req, &st, at);
  request_free(r);
  return sent(env, rc);
}

/* replyOpen(id, fh, openFlags): for OPEN and OPENDIR. */
static napi_value js_reply_open(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(3, "replyOpen(id, fh, openFlags)");
  uint64_t fh;
  int32_t flags;
  if (!get_u53(env, argv[1], "replyOpen: fh must be a non-negative integer", &fh) ||
      !thinvol_get_int32(env, argv[2], "replyOpen: openFlags must be an integer", &flags)) return NULL;
  struct fuse_file_info fi;
  fill_open(&fi, fh, flags);
  TAKE_OR_RETURN(r);
  int rc = fuse_reply_open(r->req, &fi);
  request_free(r);
  return sent(env, rc);
}

/* replyBuf(id, buffer, n): the first n bytes of a Buffer JavaScript owns; fuse_reply_buf
 * copies them into the kernel before it returns, so the Buffer is free again afterwards. */
static napi_value js_reply_buf(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(3, "replyBuf(id, buffer, n)");
  bool is_buffer = false;
  void *data = NULL;
  size_t len = 0;
  uint64_t n;
  if (napi_is_buffer(env, argv[1], &is_buffer) != napi_ok || !is_buffer ||
      napi_get_buffer_info(env, argv[1], &data, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "replyBuf: buffer must be a Buffer");
    return NULL;
  }
  if (!get_u53(env, argv[2], "replyBuf: n must be a non-negative integer", &n)) return NULL;
  if (n > len) {
    napi_throw_range_error(env, NULL, "replyBuf: n is larger than the buffer");
    return NULL;
  }
  TAKE_OR_RETURN(r);
  int rc = fuse_reply_buf(r->req, data, (size_t)n);
  request_free(r);
  return sent(env, rc);
}

/* replyWrite(id, n) */
static napi_value js_reply_write(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(2, "replyWrite(id, n)");
  uint64_t n;
  if (!get_u53(env, argv[1], "replyWrite: n must be a non-negative integer", &n)) return NULL;
  TAKE_OR_RETURN(r);
  int rc = fuse_reply_write(r->req, (size_t)n);
  request_free(r);
  return sent(env, rc);
}

/* replyStatfs(id, statfs): a Float64Array of STATFS's layout. */
static napi_value js_reply_statfs(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(2, "replyStatfs(id, statfs)");
  const double *a;
  if (!get_f64s(env, argv[1], SF_COUNT, "replyStatfs: statfs must be a Float64Array of STATFS's layout", &a)) return NULL;
  struct statvfs sv;
  memset(&sv, 0, sizeof sv);
  sv.f_bsize = (unsigned long)a[SF_BSIZE];
  sv.f_frsize = (unsigned long)a[SF_FRSIZE];
  sv.f_blocks = (fsblkcnt_t)a[SF_BLOCKS];
  sv.f_bfree = (fsblkcnt_t)a[SF_BFREE];
  sv.f_bavail = (fsblkcnt_t)a[SF_BAVAIL];
  sv.f_files = (fsfilcnt_t)a[SF_FILES];
  sv.f_ffree = (fsfilcnt_t)a[SF_FFREE];
  sv.f_favail = (fsfilcnt_t)a[SF_FAVAIL];
  sv.f_fsid = (unsigned long)a[SF_FSID];
  sv.f_flag = (unsigned long)a[SF_FLAG];
  sv.f_namemax = (unsigned long)a[SF_NAMEMAX];
  TAKE_OR_RETURN(r);
  int rc = fuse_reply_statfs(r->req, &sv);
  request_free(r);
  return sent(env, rc);
}

/* replyLseek(id, offset) */
static napi_value js_reply_lseek(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(2, "replyLseek(id, offset)");
  uint64_t off;
  if (!get_u53(env, argv[1], "replyLseek: offset must be a non-negative integer", &off)) return NULL;
  TAKE_OR_RETURN(r);
  int rc = fuse_reply_lseek(r->req, (off_t)off);
  request_free(r);
  return sent(env, rc);
}

/* replyReaddir(id, names, inoModes): the whole listing, names[i] with node id inoModes[2i] and
 * mode inoModes[2i+1]; the entries from the request's offset that fit its size are sent, each
 * with the offset of the next (i + 1). */
static napi_value js_reply_readdir(napi_env env, napi_callback_info info) {
  REPLY_PROLOGUE(3, "replyReaddir(id, names, inoModes)");
  bool is_array = false;
  uint32_t count = 0;
  if (napi_is_array(env, argv[1], &is_array) != napi_ok || !is_array || napi_get_array_length(env, argv[1], &count) != napi_ok) {
    napi_throw_type_error(env, NULL, "replyReaddir: names must be an array of strings");
    return NULL;
  }
  const double *im;
  if (!get_f64s(env, argv[2], (size_t)count * 2, "replyReaddir: inoModes must be a Float64Array of 2 numbers per name", &im)) return NULL;
  /* Check every name before taking the request, so that misuse leaves it pending. */
  for (uint32_t i = 0; i < count; i++) {
    napi_value v;
    napi_valuetype t;
    NAPI_CALL(env, napi_get_element(env, argv[1], i, &v));
    if (napi_typeof(env, v, &t) != napi_ok || t != napi_string) {
      napi_throw_type_error(env, NULL, "replyReaddir: names must be an array of strings");
      return NULL;
    }
  }
  TAKE_OR_RETURN(r);
  /* Lifetime of buf: this call; fuse_reply_buf copies it into the kernel. name: each entry's
   * UTF-8 copy, on the stack (a FUSE name is at most 1024 bytes; longer ones are cut off by
   * napi and then refused by the kernel's own check). */
  size_t cap = (size_t)r->size;
  char *buf = malloc(cap > 0 ? cap : 1);
  if (buf == NULL) {
    int rc = fuse_reply_err(r->req, ENOMEM);
    request_free(r);
    return sent(env, rc);
  }
  size_t used = 0;
  for (uint64_t i = r->off > 0 ? (uint64_t)r->off : 0; i < count; i++) {
    char name[1025];
    napi_value v;
    size_t nlen = 0;
    if (napi_get_element(env, argv[1], (uint32_t)i, &v) != napi_ok ||
        napi_get_value_string_utf8(env, v, name, sizeof name, &nlen) != napi_ok) break;
    struct stat st;
    memset(&st, 0, sizeof st);
    st.st_ino = (ino_t)im[2 * i];
    st.st_mode = (mode_t)im[2 * i + 1];
    size_t need = fuse_add_direntry(r->req, NULL, 0, name, NULL, 0);
    if (used + need > cap) break;
    fuse_add_direntry(r->req, buf + used, cap - used, name, &st, (off_t)(i + 1));
    used += need;
  }
  int rc = fuse_reply_buf(r->req, buf, used);
  free(buf);
  request_free(r);
  return sent(env, rc);
}

/* pending(): how many requests wait for a reply. */
static napi_value js_pending(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  struct session *s = this_session(env, info, &argc, NULL);
  if (s == NULL) return NULL;
  napi_value out;
  NAPI_CALL(env, napi_create_uint32(env, s->pending, &out));
  return out;
}

/* destroy(): 0, or EBUSY while the loop may still deliver requests (see the shutdown order at
 * the top). Idempotent. */
static napi_value js_destroy(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  struct session *s = this_session(env, info, &argc, NULL);
  if (s == NULL) return NULL;
  if (s->destroyed) return result_int(env, 0);
  if (!s->ended_delivered) return result_int(env, EBUSY);
  for (uint32_t i = 0; i < s->nslots; i++) {
    struct request *r = s->slots[i].r;
    if (r == NULL) continue;
    s->slots[i].r = NULL;
    /* Not detached: a handler that never answered may still have a backend write using the
     * data, so it stays until the Buffer is collected. */
    if (r->data_ref != NULL) napi_delete_reference(env, r->data_ref);
    fuse_reply_err(r->req, EIO);
    request_free(r);
  }
  free(s->slots);
  s->slots = NULL;
  s->nslots = 0;
  s->free_head = NO_SLOT;
  s->pending = 0;
  fuse_session_unmount(s->se);
  fuse_session_destroy(s->se);
  s->se = NULL;
  pool_put(&big_pool, s->rbuf);
  s->rbuf = NULL;
  uv_close((uv_handle_t *)s->poll, poll_closed);
  s->poll = NULL;
  s->destroyed = true;
  napi_remove_env_cleanup_hook(env, env_cleanup, s);
  napi_async_destroy(env, s->async_ctx);
  s->async_ctx = NULL;
  napi_delete_reference(env, s->on_request);
  s->on_request = NULL;
  napi_delete_reference(env, s->self);
  s->self = NULL;
  return result_int(env, 0);
}

static bool config_uint(napi_env env, napi_value config, const char *key, unsigned *out) {
  napi_value v;
  int32_t n;
  char message[96];
  snprintf(message, sizeof message, "fuse3 mount: config.%s must be a non-negative integer", key);
  if (napi_get_named_property(env, config, key, &v) != napi_ok) {
    thinvol_throw_napi_error(env);
    return false;
  }
  if (!thinvol_get_int32(env, v, message, &n)) return false;
  if (n < 0) {
    napi_throw_type_error(env, NULL, message);
    return false;
  }
  *out = (unsigned)n;
  return true;
}

/* Frees what mount() built from the JavaScript arguments. */
static void free_argv(char **argv, uint32_t argc) {
  if (argv == NULL) return;
  for (uint32_t i = 0; i < argc; i++) free(argv[i]);
  free(argv);
}

/* mount(mountpoint, args, config, onRequest): Session, or a positive errno when libfuse
 * refused the options (EINVAL) or the mount failed (libfuse prints why on stderr).
 * args: argv for fuse_session_new, e.g. ['thinvol', '-o', 'allow_other,fsname=...'].
 * config: {maxWrite, maxRead, maxReadahead, maxBackground, congestionThreshold, wantCaps,
 * dropCaps}, applied at INIT (maxRead must match the max_read option). */
static napi_value js_mount(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  napi_valuetype t0, t3;
  bool is_array = false;
  if (argc != 4 || napi_typeof(env, argv[0], &t0) != napi_ok || t0 != napi_string ||
      napi_is_array(env, argv[1], &is_array) != napi_ok || !is_array ||
      napi_typeof(env, argv[3], &t3) != napi_ok || t3 != napi_function) {
    napi_throw_type_error(env, NULL, "fuse3 mount(mountpoint: string, args: string[], config: object, onRequest: function)");
    return NULL;
  }

  /* `destroyed` stays true until the session runs: until then the object's finalizer frees s. */
  struct session *s = calloc(1, sizeof *s);
  if (s == NULL) return result_int(env, ENOMEM);
  s->free_head = NO_SLOT;
  s->destroyed = true;
  s->env = env;
  napi_value obj;
  const napi_property_descriptor methods[] = {
    {"replyErr", NULL, js_reply_err, NULL, NULL, NULL, napi_default, NULL},
    {"replyEntry", NULL, js_reply_entry, NULL, NULL, NULL, napi_default, NULL},
    {"replyCreate", NULL, js_reply_create, NULL, NULL, NULL, napi_default, NULL},
    {"replyAttr", NULL, js_reply_attr, NULL, NULL, NULL, napi_default, NULL},
    {"replyOpen", NULL, js_reply_open, NULL, NULL, NULL, napi_default, NULL},
    {"replyBuf", NULL, js_reply_buf, NULL, NULL, NULL, napi_default, NULL},
    {"replyWrite", NULL, js_reply_write, NULL, NULL, NULL, napi_default, NULL},
    {"replyStatfs", NULL, js_reply_statfs, NULL, NULL, NULL, napi_default, NULL},
    {"replyLseek", NULL, js_reply_lseek, NULL, NULL, NULL, napi_default, NULL},
    {"replyReaddir", NULL, js_reply_readdir, NULL, NULL, NULL, napi_default, NULL},
    {"pending", NULL, js_pending, NULL, NULL, NULL, napi_default, NULL},
    {"destroy", NULL, js_destroy, NULL, NULL, NULL, napi_default, NULL},
  };
  if (napi_create_object(env, &obj) != napi_ok ||
      napi_define_properties(env, obj, sizeof methods / sizeof methods[0], methods) != napi_ok ||
      napi_wrap(env, obj, s, session_finalize, NULL, NULL) != napi_ok) {
    free(s);
    thinvol_throw_napi_error(env);
    return NULL;
  }

  if (!config_uint(env, argv[2], "maxWrite", &s->max_write) || !config_uint(env, argv[2], "maxRead", &s->max_read) ||
      !config_uint(env, argv[2], "maxReadahead", &s->max_readahead) ||
      !config_uint(env, argv[2], "maxBackground", &s->max_background) ||
      !config_uint(env, argv[2], "congestionThreshold", &s->congestion_threshold) ||
      !config_uint(env, argv[2], "wantCaps", &s->want_caps) || !config_uint(env, argv[2], "dropCaps", &s->drop_caps)) return NULL;

  /* Lifetime of mnt and of the argv copies: this call (libfuse copies what it keeps). */
  char mnt[4096];
  size_t mlen = 0;
  uint32_t nargs = 0;
  char **cargv = NULL;
  bool args_ok = napi_get_value_string_utf8(env, argv[0], mnt, sizeof mnt, &mlen) == napi_ok && mlen < sizeof mnt - 1 &&
                 napi_get_array_length(env, argv[1], &nargs) == napi_ok && nargs > 0 && nargs < 64 &&
                 (cargv = calloc(nargs + 1, sizeof *cargv)) != NULL;
  for (uint32_t i = 0; args_ok && i < nargs; i++) {
    napi_value v;
    size_t len = 0;
    napi_valuetype t;
    args_ok = napi_get_element(env, argv[1], i, &v) == napi_ok && napi_typeof(env, v, &t) == napi_ok && t == napi_string &&
              napi_get_value_string_utf8(env, v, NULL, 0, &len) == napi_ok && (cargv[i] = malloc(len + 1)) != NULL &&
              napi_get_value_string_utf8(env, v, cargv[i], len + 1, &len) == napi_ok;
  }
  if (!args_ok) {
    free_argv(cargv, nargs);
    napi_throw_type_error(env, NULL, "fuse3 mount: mountpoint (under 4096 bytes) and args (1 to 63 strings) expected");
    return NULL;
  }
  struct fuse_args fargs = FUSE_ARGS_INIT((int)nargs, cargv);
  s->se = fuse_session_new(&fargs, &ll_ops, sizeof ll_ops, s);
  fuse_opt_free_args(&fargs); /* frees only what fuse_opt_parse allocated */
  free_argv(cargv, nargs);
  if (s->se == NULL) return result_int(env, EINVAL);
  errno = 0;
  if (fuse_session_mount(s->se, mnt) != 0) {
    int err = errno != 0 ? errno : EIO;
    fuse_session_destroy(s->se);
    s->se = NULL;
    return result_int(env, err);
  }

  napi_value name;
  uv_loop_t *loop = NULL;
  int fd = fuse_session_fd(s->se);
  int fl = fcntl(fd, F_GETFL);
  int err = 0;
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
    err = errno;
  } else if (napi_get_uv_event_loop(env, &loop) != napi_ok || (s->poll = calloc(1, sizeof *s->poll)) == NULL ||
             napi_create_reference(env, obj, 1, &s->self) != napi_ok ||
             napi_create_reference(env, argv[3], 1, &s->on_request) != napi_ok ||
             napi_create_string_utf8(env, "thinvol fuse3", NAPI_AUTO_LENGTH, &name) != napi_ok ||
             napi_async_init(env, obj, name, &s->async_ctx) != napi_ok ||
             napi_add_env_cleanup_hook(env, env_cleanup, s) != napi_ok) {
    err = ENOMEM;
  } else if ((err = -uv_poll_init(loop, s->poll, fd)) == 0) {
    s->poll->data = s;
    if ((err = -uv_poll_start(s->poll, UV_READABLE, on_readable)) == 0) {
      s->polling = true;
      s->destroyed = false;
      return obj;
    }
    uv_close((uv_handle_t *)s->poll, poll_closed);
    s->poll = NULL;
  }
  /* Half-built: undo in reverse; the object is left to the GC, whose finalizer frees s. */
  if (s->async_ctx != NULL) {
    napi_remove_env_cleanup_hook(env, env_cleanup, s);
    napi_async_destroy(env, s->async_ctx);
  }
  free(s->poll);
  s->poll = NULL;
  if (s->on_request != NULL) napi_delete_reference(env, s->on_request);
  if (s->self != NULL) napi_delete_reference(env, s->self);
  s->on_request = s->self = NULL;
  fuse_session_unmount(s->se);
  fuse_session_destroy(s->se);
  s->se = NULL;
  return result_int(env, err);
}

static napi_value constants(napi_env env, const char *const *names, const int *values, size_t n) {
  napi_value obj, v;
  NAPI_CALL(env, napi_create_object(env, &obj));
  for (size_t i = 0; i < n; i++) {
    NAPI_CALL(env, napi_create_int32(env, values[i], &v));
    NAPI_CALL(env, napi_set_named_property(env, obj, names[i], v));
  }
  NAPI_CALL(env, napi_object_freeze(env, obj));
  return obj;
}

#define N(a) (sizeof a / sizeof a[0])

static napi_value init(napi_env env, napi_value exports) {
  static const char *const op_names[] = {"INIT", "ENDED", "FORGET", "LOOKUP", "GETATTR", "SETATTR", "OPEN", "CREATE",
                                         "READ", "WRITE", "FLUSH", "RELEASE", "FSYNC", "OPENDIR", "READDIR", "RELEASEDIR",
                                         "STATFS", "UNLINK", "RENAME", "FALLOCATE", "LSEEK"};
  static const int op_values[] = {OP_INIT, OP_ENDED, OP_FORGET, OP_LOOKUP, OP_GETATTR, OP_SETATTR, OP_OPEN, OP_CREATE,
                                  OP_READ, OP_WRITE, OP_FLUSH, OP_RELEASE, OP_FSYNC, OP_OPENDIR, OP_READDIR, OP_RELEASEDIR,
                                  OP_STATFS, OP_UNLINK, OP_RENAME, OP_FALLOCATE, OP_LSEEK};
  static const char *const st_names[] = {"ino", "mode", "nlink", "uid", "gid", "size", "blocks", "blksize",
                                         "atimeMs", "mtimeMs", "ctimeMs", "length"};
  static const int st_values[] = {ST_INO, ST_MODE, ST_NLINK, ST_UID, ST_GID, ST_SIZE, ST_BLOCKS, ST_BLKSIZE,
                                  ST_ATIME_MS, ST_MTIME_MS, ST_CTIME_MS, ST_COUNT};
  static const char *const sf_names[] = {"bsize", "frsize", "blocks", "bfree", "bavail", "files", "ffree", "favail",
                                         "fsid", "flag", "namemax", "length"};
  static const int sf_values[] = {SF_BSIZE, SF_FRSIZE, SF_BLOCKS, SF_BFREE, SF_BAVAIL, SF_FILES, SF_FFREE, SF_FAVAIL,
                                  SF_FSID, SF_FLAG, SF_NAMEMAX, SF_COUNT};
  static const char *const sa_names[] = {"MODE", "UID", "GID", "SIZE", "ATIME", "MTIME", "ATIME_NOW", "MTIME_NOW"};
  static const int sa_values[] = {FUSE_SET_ATTR_MODE, FUSE_SET_ATTR_UID, FUSE_SET_ATTR_GID, FUSE_SET_ATTR_SIZE,
                                  FUSE_SET_ATTR_ATIME, FUSE_SET_ATTR_MTIME, FUSE_SET_ATTR_ATIME_NOW, FUSE_SET_ATTR_MTIME_NOW};
  static const char *const open_names[] = {"DIRECT_IO", "KEEP_CACHE", "NONSEEKABLE"};
  static const int open_values[] = {OPEN_DIRECT_IO, OPEN_KEEP_CACHE, OPEN_NONSEEKABLE};
  static const char *const cap_names[] = {"ASYNC_READ", "ASYNC_DIO", "ATOMIC_O_TRUNC", "AUTO_INVAL_DATA",
                                          "WRITEBACK_CACHE", "PARALLEL_DIROPS", "SPLICE_READ", "SPLICE_WRITE",
                                          "HANDLE_KILLPRIV", "READDIRPLUS"};
  static const int cap_values[] = {FUSE_CAP_ASYNC_READ, FUSE_CAP_ASYNC_DIO, FUSE_CAP_ATOMIC_O_TRUNC,
                                   FUSE_CAP_AUTO_INVAL_DATA, FUSE_CAP_WRITEBACK_CACHE, FUSE_CAP_PARALLEL_DIROPS,
                                   FUSE_CAP_SPLICE_READ, FUSE_CAP_SPLICE_WRITE, FUSE_CAP_HANDLE_KILLPRIV,
                                   FUSE_CAP_READDIRPLUS};
  napi_value op, st, sf, sa, open, cap, version;
  if ((op = constants(env, op_names, op_values, N(op_values))) == NULL) return NULL;
  if ((st = constants(env, st_names, st_values, N(st_values))) == NULL) return NULL;
  if ((sf = constants(env, sf_names, sf_values, N(sf_values))) == NULL) return NULL;
  if ((sa = constants(env, sa_names, sa_values, N(sa_values))) == NULL) return NULL;
  if ((open = constants(env, open_names, open_values, N(open_values))) == NULL) return NULL;
  if ((cap = constants(env, cap_names, cap_values, N(cap_values))) == NULL) return NULL;
  NAPI_CALL(env, napi_create_string_utf8(env, fuse_pkgversion(), NAPI_AUTO_LENGTH, &version));
  const napi_property_descriptor props[] = {
    {"mount", NULL, js_mount, NULL, NULL, NULL, napi_enumerable, NULL},
    {"OP", NULL, NULL, NULL, NULL, op, napi_enumerable, NULL},
    {"STAT", NULL, NULL, NULL, NULL, st, napi_enumerable, NULL},
    {"STATFS", NULL, NULL, NULL, NULL, sf, napi_enumerable, NULL},
    {"SETATTR", NULL, NULL, NULL, NULL, sa, napi_enumerable, NULL},
    {"OPEN", NULL, NULL, NULL, NULL, open, napi_enumerable, NULL},
    {"CAP", NULL, NULL, NULL, NULL, cap, napi_enumerable, NULL},
    {"libfuseVersion", NULL, NULL, NULL, NULL, version, napi_enumerable, NULL},
  };
  NAPI_CALL(env, napi_define_properties(env, exports, N(props), props));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
