/*
 * lsmfs.h — private declarations shared by the modules of the lsmfs daemon (fs/).
 *
 * The daemon is eleven modules, each calling only those listed after it: main.c parses options,
 * opens the engine, mounts and daemonizes; stats.c reports counters (SIGUSR1); ops.c holds the
 * FUSE callbacks on files (and the table of all callbacks); dir.c those on the namespace (lookup,
 * create, remove, rename, listing); xattr.c extended attributes (the callbacks, and moving or
 * dropping them with their file); cookie.c the offsets of listings and the table that maps them
 * back to places; inode.c owns the in-memory inode table, the buffers of files being written and
 * their write-back; reclaim.c gives back the space of large files removed or replaced; notify.c
 * sends the kernel the invalidations the daemon's own changes need, from a thread of its own;
 * keys.c owns the key layout, names, the attribute record and what a path is in the engine; log.c
 * logging, the engine-code-to-errno map and the clocks. Only engine/lsm.h is used from the engine.
 *
 * Key layout (the whole contract with the database; see lsmfs(1)):
 *   PATH              the file's bytes, exactly (PATH has no leading '/').
 *   "\0a" PATH        attribute record of the file or symlink at PATH (struct below, encoded).
 *   "\0d" PATH "/"    an explicit directory (made by mkdir, or touched by chmod/utimens/...);
 *                     the value is its attribute record. The root directory is "\0d/".
 *   "\0i"             the inode-number high-water mark: no number at or above it was ever given
 *                     to a file (keys.c, lsmfs_ino_alloc).
 *   "\0x" PATH "\0" NAME     extended attribute NAME of the file or symlink at PATH; the value is
 *   "\0x" PATH "/\0" NAME    the attribute's value. The second form is a directory's (the root's
 *                     is "\0x/\0" NAME), so "\0x" PATH "/" holds every attribute at and below
 *                     directory PATH (xattr.c).
 * Keys starting with a NUL byte can never be file names, so the reserved namespace never collides
 * with a file. A directory is implicit while some key lies below it.
 *
 * Errors, stated once: every function of the daemon that can fail returns 0 or a positive errno
 * (libfuse passthrough_ll.c's convention), and each FUSE callback turns what its helpers return
 * into exactly one reply. Engine codes (negative LSM_*) never leave the function that got them:
 * lsmfs_errno (log.c) is the one place they become errno values. The exception is main.c's
 * command line, which follows fuse_opt's convention (opt_proc must): -1 when it failed, after
 * printing why.
 *
 * State: one struct lsmfs, owned by main() and reached from every callback through
 * fuse_req_userdata, is passed down to every helper that needs it; no module keeps state of its
 * own except log.c's log destination, which is the process's like syslog's.
 *
 * Locks, in the order they are taken: fs->ns, then an inode's mu, then fs->tmu, then fs->bmu
 * (the budget's victim search uses trylock against the order). pool_mu, handles_mu and the
 * mutexes of reclaim.c, cookie.c and notify.c are leaves: nothing else is taken while they are held.
 */
#ifndef LSMFS_H
#define LSMFS_H

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "lsm.h"

#define LSMFS_NAME_MAX 255u                 /* longest path component, bytes */
#define LSMFS_PATH_MAX (LSM_MAX_KEY - 4u)   /* longest path: room for the "\0d" prefix and '/' */

#define LSMFS_ITER_POOL 4                   /* idle iterators kept for prefix probes (keys.c) */

/* A write-back or rename that writes at most this many bytes and removes or shrinks something
   is marked as freeing space (lsm_batch_set_frees_space): it still works on a full disk. A commit
   that empties or shrinks a file of at least this size is marked too. */
#define LSMFS_FREES_MAX ((size_t)64 << 10)

/* Content up to this size (the engine's blob_threshold) is kept whole in an inode's buffer while
   it is written and written back as one plain put with the record: one WAL record, no blob file,
   one sync, which is what a small file written in one go costs least as. Past it (or once a file
   larger than this is written at all) the file goes through a value writer, which costs its
   own blob file and three syncs per synced commit but holds at most a chunk in memory. */
#define LSMFS_SMALL_MAX ((uint64_t)64 << 10)

/* Memory a value writer holds (its 64 KiB chunk and map), counted against dirty_limit. */
#define LSMFS_WRITER_MEM ((size_t)128 << 10)

enum { LSMFS_NONE = 0, LSMFS_REG, LSMFS_DIR, LSMFS_LNK };
enum { LSMFS_SYNC_FSYNC = 0, LSMFS_SYNC_CLOSE, LSMFS_SYNC_ALWAYS };

/* Attributes of one file or directory, as decoded from its record (or the defaults). A value
   type: the guard is that of the struct holding it (an inode's mu for lsmfs_inode.m). */
struct lsmfs_meta {
    int      type;          /* LSMFS_REG, LSMFS_DIR, LSMFS_LNK or LSMFS_NONE (absent); in an
                               inode, constant after creation */
    int      explicit_dir;  /* directory has a "\0d" record */
    uint32_t mode;          /* full st_mode, file type bits included */
    uint32_t uid, gid;      /* owner */
    int64_t  mtime_ns, ctime_ns; /* ns since the epoch */
    uint64_t size;          /* value length (files, symlinks) */
    uint64_t rdev;          /* st_rdev of a device node, else 0 */
    uint64_t ino;           /* st_ino: from the record, else derived from the path
                               (lsmfs_ino_derived); the root's is 1. In an inode, constant */
};

/* One object the kernel knows (nlookup > 0) or that has open handles. The FUSE inode number
   (nodeid) is the address of this struct (the root is FUSE_ROOT_ID); st_ino is m.ino, which the
   file keeps for its life, whatever nodeid the kernel knows it by. */
struct lsmfs_inode {
    struct lsmfs *fs;            /* the file system it belongs to: the live one, or a snapshot's
                                    view (view.c); constant */
    int      snapdir;            /* the virtual .snapshots directory (view.c); constant */
    struct lsmfs_inode *hnext;   /* hash chain; guarded by fs->tmu */
    char    *path;               /* key (no leading '/'); root is ""; changed only with fs->ns
                                    held for writing and fs->tmu held, so fs->ns held for reading
                                    pins it */
    size_t   plen;               /* strlen(path); same guard as path */
    uint64_t nlookup;            /* kernel lookup count; guarded by fs->tmu */
    uint32_t nopen;              /* open handles; guarded by fs->tmu */
    int      hashed;             /* reachable by path in the table; guarded by fs->tmu */

    pthread_mutex_t mu;          /* guards everything below but bprev and bnext */
    struct lsmfs_meta m;         /* current attributes; size follows the buffer when loaded */
    int      deleted;            /* unlinked or replaced: never written back again; st_nlink 0 */
    int64_t  nsub;               /* a directory's subdirectories (st_nlink is 2 + nsub): counted
                                    once (lsmfs_dir_count), then kept by mkdir, rmdir and rename,
                                    which change it with fs->ns held for writing; -1 not counted
                                    yet, -2 too many to count (st_nlink 1) */
    int      dirty;              /* data or attributes differ from the engine */
    int      kstale;             /* the kernel's cached pages may differ from the content (a
                                    write from its page cache was refused): the next open drops
                                    them instead of keeping them */
    uint64_t csize;              /* size of the value in the engine when the buffer was loaded or
                                    the writer opened (what the next write-back supersedes) */
    char    *data;               /* whole content of a small file being written, else NULL */
    lsm_value_writer *w;         /* the new version of a file too large for data (or written
                                    past LSMFS_SMALL_MAX): every handle writes and reads through
                                    it until the next commit; never both data and w */
    lsm_value_reader *r;         /* content of a large file unlinked while open, for its handles */
    uint64_t alloc;              /* bytes the committed value occupies (lsm_get_allocated) */
    int      alloc_ok;           /* alloc is known */
    uint64_t wbytes;             /* bytes written through w since it opened (st_blocks) */
    size_t   cap;                /* bytes allocated at data, or LSMFS_WRITER_MEM for w; counted in
                                    fs->buffered */
    struct lsmfs_inode *bprev, *bnext; /* list of inodes holding a buffer; guarded by fs->bmu */
    struct lsmfs_handle *readers; /* read-only handles (see struct lsmfs_snap); guarded by mu */
};

/* The value a read-only handle opened, kept when a write-back replaces it: a value reader, which
   pins that version (its blob files) instead of copying it. */
struct lsmfs_snap {
    int      refs;               /* handles sharing it; guarded by the inode's mu */
    lsm_value_reader *r;         /* the version; NULL when the file was absent or empty; used
                                    with the inode's mu held */
};

/* Per-open-file handle (fi->fh). */
struct lsmfs_handle {
    struct lsmfs_inode *ino;     /* holds one open reference; constant */
    int flags;                   /* open(2) flags; constant */
    int wrote;                   /* this handle wrote since its last flush; guarded by ino->mu */
    struct lsmfs_snap *snap;     /* read-only: the version it reads once replaced; ino->mu */
    struct lsmfs_handle *rnext, *rprev; /* read-only handles of ino; guarded by ino->mu */
    struct lsmfs_handle *anext, *aprev; /* every open handle; guarded by fs->handles_mu */
};

/* Per-open-directory handle (fi->fh): where the listing stands, so that a request at the offset
   of the last entry returned goes on without asking cookie.c. Any other offset is looked up. */
struct lsmfs_dirh {
    pthread_mutex_t mu;          /* guards all below */
    char    *cursor;             /* position of the next child, relative to the directory's key
                                    prefix; NULL before the first */
    size_t   clen;               /* bytes at cursor */
    int      dots;               /* how many of "." and ".." come before the cursor (0 to 2) */
    off_t    last;               /* d_off of the last entry returned (0: none) */
    int      eof;                /* the last entry was returned */
};

/* Daemon-wide state: one per process, owned by main(). Fields without a guard are set before
   the session starts and constant after. */
struct lsmfs {
    lsm_db  *db;                 /* the engine */
    char    *datadir;            /* absolute path */
    struct fuse_session *se;     /* the FUSE session */

    /* options (main.c) */
    size_t   memtable_size, cache_size; /* engine memtable and block cache, bytes */
    uint64_t max_file_size;      /* quota: writes past it fail with EFBIG; 0 = none (the engine's
                                    LSM_MAX_EXTENT_VALUE) */
    size_t   dirty_limit;        /* budget of content buffers, bytes */
    size_t   cookie_bytes;       /* memory for the table of listing offsets (cookie.c) */
    size_t   reserve;            /* disk bytes the engine holds back for removals on a full disk
                                    (lsm_options_set_reserve_bytes); SIZE_MAX until decided */
    int      compression;        /* LSM_COMPRESSION_* */
    int      sync_mode;          /* LSMFS_SYNC_* */
    int      writeback, kernel_cache; /* the kernel's writeback cache is used; its page cache
                                      keeps a file's pages across opens */
    int      no_opendir;         /* the kernel opens directories without asking (listings
                                    then arrive with fi->fh 0: no struct lsmfs_dirh) */
    int      read_only;          /* -o ro or snapshot=: the engine opened read-only */
    int      close_to_open;      /* strict mode: a read-only descriptor sees the last flushed
                                    version, never a writer's pending bytes (direct I/O) */
    int      foreground;         /* not detached: messages go to stderr */
    double   timeout;            /* entry/attr timeout, seconds */

    uid_t    uid;                /* owner of keys without a record */
    gid_t    gid;                /* group of keys without a record */
    int64_t  mount_ns;           /* times of keys without a record */

    pthread_rwlock_t ns;         /* namespace lock: held for writing by operations that change
                                    paths (create, unlink, rename, mkdir, rmdir, symlink) */
    pthread_mutex_t  tmu;        /* inode table */
    struct lsmfs_inode **tab;    /* hash buckets; guarded by tmu */
    size_t   tabsize, count;     /* buckets (a power of 2), inodes hashed; guarded by tmu */
    struct lsmfs_inode *root;    /* FUSE_ROOT_ID; never freed while mounted */
    uint64_t ino_next;           /* next inode number to give; guarded by ns held for writing */
    uint64_t ino_limit;          /* the "\0i" high-water mark as stored: ino_next may reach it;
                                    guarded by ns held for writing */
    int      xattr_state;        /* whether any "\0x" key may exist: 0 not known yet, 1 none,
                                    2 some (xattr.c); read and written with __atomic builtins */

    pthread_mutex_t  bmu;        /* buffer budget */
    size_t   buffered;           /* bytes of content buffers; guarded by bmu */
    struct lsmfs_inode *blist;   /* inodes holding a buffer; guarded by bmu */

    pthread_mutex_t  pool_mu;    /* idle iterators (keys.c) */
    lsm_iter *pool[LSMFS_ITER_POOL]; /* guarded by pool_mu */
    int      pool_n;             /* guarded by pool_mu */
    int64_t  pool_last;          /* lsmfs_mono_ns of the last put; guarded by pool_mu */

    pthread_mutex_t  handles_mu; /* every open file handle (ops.c) */
    struct lsmfs_handle *handles; /* guarded by handles_mu */
    struct lsmfs_reclaim *reclaim; /* reclaim.c's state; NULL unless its thread runs */
    struct lsmfs_cookies *cookies; /* cookie.c's table of listing offsets */
    struct lsmfs_control *control; /* control.c's socket; NULL unless it runs */
    struct lsmfs_views *views;   /* view.c: .snapshots and the snapshots opened through it */
    struct lsmfs *live;          /* a snapshot view's live file system; NULL for the live one */
    uint64_t ino_salt;           /* xored into every st_ino: 0 for the live file system, a
                                    number of the snapshot's name for a view; constant */
    pthread_t stats_thread;      /* takes SIGUSR1 (stats.c) */
    int      stats_running;      /* stats_thread was started; main's */
    int      stats_stop;         /* tells stats_thread to end; __atomic builtins */
    struct lsmfs_notify *notify; /* notify.c's queue; NULL unless its thread runs */
    struct lsmfs_pool *workq;    /* pool.c's workers; NULL unless they run (set and cleared
                                    only while no request is being served) */
};

/* The callbacks proper (ops.c, dir.c, xattr.c). libfuse gets those of lsmfs_ops_table (view.c),
   which serve .snapshots, refuse changes in snapshots and call these for the rest. */
extern const struct fuse_lowlevel_ops lsmfs_base_ops;
void  lsmfs_ops_table(struct fuse_lowlevel_ops *ops);
/* The state of a file system (the live one or a view) on its open database fs->db: locks, inode
   table, listing offsets. 0, or an errno with nothing left to undo but fs->db (view.c). */
int   lsmfs_fs_open(struct lsmfs *fs);
/* Frees that state (handles the kernel never released included) and closes fs->db; the
   lsm_close result. */
int   lsmfs_fs_close(struct lsmfs *fs);
/* Makes the .snapshots directory of fs (view.c); 0 or ENOMEM. */
int   lsmfs_views_init(struct lsmfs *fs);

/* view.c: the file system a request on inode n works on: the live one (fuse_req_userdata) or the
   snapshot view n belongs to. */
struct lsmfs *lsmfs_owner(fuse_req_t req, fuse_ino_t n);
/* Closes every snapshot view (after the session ended, before lsm_close of the live database). */
void  lsmfs_views_close(struct lsmfs *fs);

/* cookie.c: the d_off of a listed child is a cookie for the cursor cur (len bytes) that
   follows it in the directory at path (plen bytes); see the file's opening comment. */
int   lsmfs_cookies_init(struct lsmfs *fs);
void  lsmfs_cookies_free(struct lsmfs *fs);
/* The cookie for cur, recorded so lsmfs_cookie_find maps it back; at least 3. */
off_t lsmfs_cookie_make(struct lsmfs *fs, const char *path, size_t plen, const char *cur,
                        size_t len);
/* The cursor recorded for cookie: 0 with *cur (caller frees) and *len, ENOENT, or ENOMEM. */
int   lsmfs_cookie_find(struct lsmfs *fs, const char *path, size_t plen, off_t cookie,
                        char **cur, size_t *len);
/* The cookie cur gets when no other cursor of its directory has it: what a pass looks for. */
off_t lsmfs_cookie_hash(const char *cur, size_t len);

/* reclaim.c: after a value of this many bytes or more (a blob file in the engine) is deleted or
   replaced, its key is noted, and a thread merges the noted keys a second after the last note so
   that the blob files are freed. */
#define LSMFS_RECLAIM_MIN ((uint64_t)64 << 10)
void  lsmfs_reclaim_note(struct lsmfs *fs, const char *key, size_t klen);
/* A small file of that many bytes was removed. */
void  lsmfs_reclaim_removed(struct lsmfs *fs, uint64_t bytes);
/* Directory path was removed: notes the key range below it when enough small files went first. */
void  lsmfs_reclaim_note_dir(struct lsmfs *fs, const char *path, size_t plen);
/* Notes the key range below directory path (its keys were moved or removed). */
void  lsmfs_reclaim_note_tree(struct lsmfs *fs, const char *path, size_t plen);
int   lsmfs_reclaim_start(struct lsmfs *fs);
/* Merges what is noted, then joins; before lsm_close. */
void  lsmfs_reclaim_stop(struct lsmfs *fs);

/* stats.c: a report of the engine's and the daemon's counters; SIGUSR1 logs it. */
void  lsmfs_stats_write(struct lsmfs *fs, FILE *f);
/* Blocks SIGUSR1 in the caller (call it before any other thread starts) and starts the thread
   that takes it. 0 or an errno. */
int   lsmfs_stats_start(struct lsmfs *fs);
void  lsmfs_stats_stop(struct lsmfs *fs);
/* notify.c: queues an invalidation of node's pages and attributes for the notify thread;
   callable from any handler, with any lock held (the queue's mutex is a leaf). */
void  lsmfs_notify_inode(struct lsmfs *fs, fuse_ino_t node);
int   lsmfs_notify_start(struct lsmfs *fs);   /* once the session exists */
void  lsmfs_notify_stop(struct lsmfs *fs);    /* sends what is queued; before the session ends */

/* pool.c: wraps the callbacks of requests that may wait for the disk, so that while the pool
   runs they are answered by its workers; starts n workers (ENOMEM, or pthread's error); stops
   them after the work queued (the loop must have ended). */
void  lsmfs_pool_ops(struct fuse_lowlevel_ops *ops);
int   lsmfs_pool_start(struct lsmfs *fs, int n);
/* Puts pool.c's reads and writes of /dev/fuse under libfuse (once the session is mounted,
   before the loop): with spin_us > 0 (single-threaded loop only) the serving thread polls that
   long before it sleeps; the reply to INIT asks for FUSE_HANDLE_KILLPRIV_V2, and with uring
   for FUSE_OVER_IO_URING, after which uring.c starts. 0, or an errno. */
int   lsmfs_pool_io(struct lsmfs *fs, long spin_us, int uring);
void  lsmfs_pool_stop(struct lsmfs *fs);

/* uring.c (-o uring): FUSE over io_uring, one pinned thread and ring per CPU. Start, once
   the kernel has the INIT reply that asked for it, with entries of payload bytes: 0, or the
   errno that refused it (nothing then runs). lsmfs_uring_reply takes a reply (pool.c's write
   hook) to a request that came by a ring: 1, with *n the bytes, else 0. Stop after the loop
   and pool.c's workers have ended. */
int   lsmfs_uring_start(struct fuse_session *se, int fd, size_t payload);
int   lsmfs_uring_reply(const struct iovec *iov, int count, ssize_t *n);
void  lsmfs_uring_stop(void);

/* control.c: the control socket DATADIR/lsmfs.ctl through which lsmctl reaches the mount.
   Start returns 0 or an errno; stop waits for running commands (before lsm_close). */
int   lsmfs_control_start(struct lsmfs *fs);
void  lsmfs_control_stop(struct lsmfs *fs);

/* log.c */
int   lsmfs_errno(struct lsmfs *fs, int rc, const char *what, const char *path);
/* Messages go to the file at path (appended; NULL: none), else to stderr in the foreground, else
   to syslog; those less urgent than level (LOG_*) are dropped. 0 or the errno of opening path. */
int   lsmfs_log_open(int foreground, const char *path, int level);
int   lsmfs_log_level(const char *name);  /* "err", "info", ... as LOG_*; -1 if unknown */
void  lsmfs_log(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int64_t lsmfs_now(void);                /* CLOCK_REALTIME, ns */
/* pthread_create of a daemon thread born with every signal blocked, so that SIGTERM, SIGHUP and
   SIGINT reach the main thread, where libfuse's loop waits for them (SIGUSR1: stats.c). 0 or an
   errno. */
int   lsmfs_thread_start(pthread_t *t, void *(*fn)(void *), void *arg);
int64_t lsmfs_mono_ns(void);            /* CLOCK_MONOTONIC, ns */

/* keys.c */
char *lsmfs_key(char tag, const char *path, size_t plen, int slash, size_t *klen);
int   lsmfs_name_check(const char *name, size_t n);
int   lsmfs_key_cmp(const char *a, size_t an, const char *b, size_t bn);
int   lsmfs_child_path(const struct lsmfs_inode *parent, const char *name, char **path,
                       size_t *plen);
void  lsmfs_meta_default(struct lsmfs *fs, struct lsmfs_meta *m, int type);
void  lsmfs_meta_touch(struct lsmfs_meta *m);
int   lsmfs_stat_path(struct lsmfs *fs, const char *path, size_t plen, struct lsmfs_meta *m);
int   lsmfs_dir_has_children(struct lsmfs *fs, const char *path, size_t plen, int *has);
void  lsmfs_iter_pool_free(struct lsmfs *fs);        /* before lsm_close */
/* A pooled iterator, refreshed and unbounded (path names it in errors); give it back with
   lsmfs_iter_put. Returns 0 or an errno. */
int   lsmfs_iter_get(struct lsmfs *fs, lsm_iter **out, const char *path);
void  lsmfs_iter_put(struct lsmfs *fs, lsm_iter *it);
void  lsmfs_iter_pool_trim(struct lsmfs *fs, int64_t idle_ns); /* frees it when unused that long */
size_t lsmfs_meta_encode(const struct lsmfs_meta *m, unsigned char *buf);
int   lsmfs_meta_decode(const void *buf, size_t len, struct lsmfs_meta *m);
int   lsmfs_put_record(lsm_batch *b, const char *path, size_t plen, const struct lsmfs_meta *m);
void  lsmfs_put_moved_record(lsm_batch *b, const char *key, size_t klen, const void *rec,
                             size_t rlen, const char *path, size_t plen);
int   lsmfs_read_record(struct lsmfs *fs, const char *path, size_t plen, int type,
                        struct lsmfs_meta *m, int *found);
uint64_t lsmfs_ino_derived(const char *path, size_t plen);
int   lsmfs_ino_load(struct lsmfs *fs);
int   lsmfs_ino_alloc(struct lsmfs *fs, uint64_t *ino);

/* inode.c */
void  lsmfs_meta_to_stat(const struct lsmfs_inode *ino, struct stat *st);
void  lsmfs_fill_entry(struct lsmfs *fs, struct lsmfs_inode *ino, struct fuse_entry_param *e);
int   lsmfs_table_init(struct lsmfs *fs);
void  lsmfs_table_free(struct lsmfs *fs);
struct lsmfs_inode *lsmfs_ino(struct lsmfs *fs, fuse_ino_t n);
fuse_ino_t lsmfs_nodeid(struct lsmfs *fs, const struct lsmfs_inode *ino); /* the kernel's name */
struct lsmfs_inode *lsmfs_table_find(struct lsmfs *fs, const char *path, size_t plen);
struct lsmfs_inode *lsmfs_table_ref(struct lsmfs *fs, const char *path, size_t plen);
struct lsmfs_inode *lsmfs_table_get(struct lsmfs *fs, char *path, size_t plen,
                                    const struct lsmfs_meta *m);
void  lsmfs_table_unhash(struct lsmfs *fs, struct lsmfs_inode *ino);
void  lsmfs_table_rename(struct lsmfs *fs, struct lsmfs_inode *ino, char *path, size_t plen);
void  lsmfs_table_move_prefix(struct lsmfs *fs, const char *from, size_t flen, const char *to,
                              size_t tlen);
void  lsmfs_table_forget(struct lsmfs *fs, struct lsmfs_inode *ino, uint64_t n);
void  lsmfs_table_open(struct lsmfs *fs, struct lsmfs_inode *ino);
void  lsmfs_table_close(struct lsmfs *fs, struct lsmfs_inode *ino);
void  lsmfs_table_flush_prefix(struct lsmfs *fs, const char *path, size_t plen);
void  lsmfs_table_flush_all(struct lsmfs *fs);

void  lsmfs_add_record(lsm_batch *b, struct lsmfs_inode *ino);
int   lsmfs_write_batch(struct lsmfs *fs, lsm_batch *b, int sync);
int   lsmfs_buf_load(struct lsmfs *fs, struct lsmfs_inode *ino);
int   lsmfs_buf_reserve(struct lsmfs *fs, struct lsmfs_inode *ino, size_t need);
/* Frees ino's buffer, writer (aborted: write back first) and reader. */
void  lsmfs_buf_drop(struct lsmfs *fs, struct lsmfs_inode *ino);
/* Makes sure ino->w is open, holding the file's current content (the buffer's, the engine's, or
   an unlinked file's reader's). ino->mu and fs->ns held; 0 or an errno. */
int   lsmfs_writer_get(struct lsmfs *fs, struct lsmfs_inode *ino);
/* After a writer call failed with rc: the writer is dropped and the size goes back to the
   engine's, so size and content agree. Returns the errno for rc. */
int   lsmfs_writer_fail(struct lsmfs *fs, struct lsmfs_inode *ino, int rc, const char *what);
/* Keeps the content of an open file whose key is going away, for its handles. */
void  lsmfs_content_keep(struct lsmfs *fs, struct lsmfs_inode *ino);
/* Reads up to n bytes at off of ino's content as every writable handle sees it. */
int   lsmfs_content_read(struct lsmfs *fs, struct lsmfs_inode *ino, uint64_t off, char *buf,
                         size_t n, size_t *got);
/* Fills ino->alloc if unknown (ino->mu held). */
void  lsmfs_alloc_update(struct lsmfs *fs, struct lsmfs_inode *ino);
int   lsmfs_flush_locked(struct lsmfs *fs, struct lsmfs_inode *ino, int sync);
void  lsmfs_snap_readers(struct lsmfs *fs, struct lsmfs_inode *ino);
void  lsmfs_budget_enforce(struct lsmfs *fs);

/* dir.c */
int   lsmfs_dir_lookup(struct lsmfs *fs, struct lsmfs_inode *parent, const char *name,
                       struct lsmfs_inode **out);
/* Makes name in parent: a file (type LSMFS_REG; mode's S_IFMT may make it a FIFO, socket or,
   with rdev, a device node), a directory or a symlink to target. */
int   lsmfs_dir_make(fuse_req_t req, struct lsmfs_inode *parent, const char *name, int type,
                     mode_t mode, dev_t rdev, const char *target, int opening,
                     struct lsmfs_inode **out);
/* Counts dir's subdirectories for st_nlink if not yet done (struct lsmfs_inode nsub). fs->ns
   held, no inode mutex. */
int   lsmfs_dir_count(struct lsmfs *fs, struct lsmfs_inode *dir);
void  lsmfs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name);
void  lsmfs_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup);
void  lsmfs_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets);
void  lsmfs_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev);
void  lsmfs_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode);
void  lsmfs_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name);
void  lsmfs_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname);
void  lsmfs_unlink(fuse_req_t req, fuse_ino_t parent, const char *name);
void  lsmfs_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name);
void  lsmfs_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                   const char *newname, unsigned int flags);
void  lsmfs_opendir(fuse_req_t req, fuse_ino_t n, struct fuse_file_info *fi);
void  lsmfs_readdir(fuse_req_t req, fuse_ino_t n, size_t size, off_t off,
                    struct fuse_file_info *fi);
void  lsmfs_readdirplus(fuse_req_t req, fuse_ino_t n, size_t size, off_t off,
                        struct fuse_file_info *fi);
void  lsmfs_releasedir(fuse_req_t req, fuse_ino_t n, struct fuse_file_info *fi);
void  lsmfs_fsyncdir(fuse_req_t req, fuse_ino_t n, int datasync, struct fuse_file_info *fi);

/* xattr.c: the attributes of the object of type at a path, for the batch that renames or
   removes it (fs->ns held for writing). Directories moved whole need neither: their prefix
   "\0x" PATH "/" moves with their other keys (dir.c). Both return 0 or an errno. */
int   lsmfs_xattr_drop(struct lsmfs *fs, lsm_batch *b, const char *path, size_t plen, int type);
/* Puts copies of them at path to; *bytes grows by what is copied. */
int   lsmfs_xattr_copy(struct lsmfs *fs, lsm_batch *b, const char *from, size_t flen, int type,
                       const char *to, size_t tlen, size_t *bytes);
void  lsmfs_setxattr(fuse_req_t req, fuse_ino_t n, const char *name, const char *value,
                     size_t size, int flags);
void  lsmfs_getxattr(fuse_req_t req, fuse_ino_t n, const char *name, size_t size);
void  lsmfs_listxattr(fuse_req_t req, fuse_ino_t n, size_t size);
void  lsmfs_removexattr(fuse_req_t req, fuse_ino_t n, const char *name);

/* ops.c */
/* Frees the handles the kernel never released (a RELEASE can arrive after the session ended). */
void  lsmfs_handles_free(struct lsmfs *fs);

#endif /* LSMFS_H */
