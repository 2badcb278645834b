/*
 * db_impl.h — the lsm_db handle, shared by the files that implement it, split by concern as
 * RocksDB splits DBImpl: db.c (open, close, destroy, stats, errors), recover.c (manifest and log
 * replay), write.c (batches, group commit, pacing, memtable switches), flush.c (memtable -> L0),
 * read.c (read views, point reads, approximate sizes), db_iter.c (lsm_iter, snapshot handles,
 * the snapshot list), logger.c (the info-log callback), and the compaction in compact_pick.c and
 * compact.c. The services they use have their own rooms: table_cache.c (open tables, lookups
 * through a version), builder.c (the table writer), blob.c (blob files and the blob set).
 *
 * Locking: db->mu guards the memtables, the current version, the writer queue, sequence numbers,
 * snapshots and background state. manifest_mu serialises version edits (flush and compaction
 * threads); it is always taken before mu, never while holding mu. The table cache, the block cache
 * and the blob set lock themselves. errmu and logmu are leaves; space_mu takes only logmu. No
 * engine lock is held while the info-log callback runs (logger.c).
 */
#ifndef LSM_DB_IMPL_H
#define LSM_DB_IMPL_H

#include <pthread.h>
#include <stdatomic.h>
#include "blob.h"
#include "cache.h"
#include "compact.h"
#include "env.h"
#include "iter.h"
#include "memtable.h"
#include "options.h"
#include "table_cache.h"
#include "version.h"
#include "wal.h"

typedef struct writer writer;

#define DB_LOG_QUEUE 16             /* messages logger.c holds for delivery outside the locks */

typedef struct snapshot_node {
    uint64_t seq;
    struct snapshot_node *prev, *next;
} snapshot_node;

/* A snapshot handle (lsm.h): the sequence it sees, registered in db->snapshots for its life. */
struct lsm_snapshot {
    lsm_db *db;                     /* constant */
    snapshot_node node;             /* node.seq constant; links guarded by db->mu */
};

struct lsm_db {
    char *dir;                      /* constant after lsm_open */
    lsm_options opt;                /* sanitized copy; constant after lsm_open */
    lsm_env *env;                   /* constant after lsm_open */
    lsm_file *lock;                 /* LOCK, held while open */

    pthread_mutex_t mu;
    pthread_cond_t bg_cv;           /* background progress: flush done, compaction done, error */
    pthread_cond_t work_cv;         /* wakes the flush thread */
    pthread_cond_t compact_cv;      /* wakes the compaction threads: a flush or a compaction
                                       ended, a seek compaction was asked for, or shutdown */
    pthread_mutex_t manifest_mu;    /* serialises vset_apply */

    memtable *mem;                  /* guarded by mu */
    memtable *imm;                  /* being flushed, or NULL; guarded by mu */
    uint64_t imm_log;               /* WAL number holding imm's writes; guarded by mu */
    logw *wal;                      /* live WAL; appended by the write leader only */
    uint64_t wal_number;            /* guarded by mu */
    uint64_t last_seq;              /* newest visible sequence; guarded by mu */
    vset vs;                        /* current version in vs.current: guarded by mu */

    writer *wq_head, *wq_tail;      /* writer queue; guarded by mu */
    buf group;                      /* leader's merged batch; owned by the leader */
    uint64_t last_switch_micros;    /* when writes last switched memtables; guarded by mu */
    int l0_stopped;                 /* a writer waits for level 0 to shrink; guarded by mu */
    uint64_t paced_bytes;           /* written since the last pacing pause (db_make_room);
                                       guarded by mu */

    snapshot_node snapshots;        /* circular list of the sequences live iterators and snapshot
                                       handles see, oldest first; guarded by mu */

    cache *bcache;                  /* data blocks; locks itself */
    table_cache tables;             /* open tables by file number; locks itself */
    blob_set blobs;                 /* live blob files and the tables naming each; locks itself */

    pthread_t flush_thread, compact_thread[COMPACT_THREADS];
    int nthreads;                   /* compaction threads started */
    int threads_started;
    int shutting_down;              /* guarded by mu */
    int compacting;                 /* compactions (background or manual) running; guarded by mu */
    unsigned level_busy;            /* bit l: a running compaction reads or writes level l; guarded
                                       by mu */
    int manual_waiting;             /* lsm_compact wants the compactor; guarded by mu */
    file_meta *seek_file;           /* table whose wasted probes ask for a compaction (a ref), or
                                       NULL; guarded by mu */
    int seek_level;                 /* its level; guarded by mu */
    int bg_error;                   /* sticky failure of a background write; guarded by mu */
    char bg_errmsg[LSM_ERRLEN];     /* guarded by mu */
    buf compact_pointer[LSM_MAX_LEVELS]; /* round-robin position per level; only the compaction
                                            that holds the level's busy bit */

    pthread_mutex_t space_mu;       /* the reserve file (space.c); a leaf lock */
    int reserve_held;               /* RESERVE exists at its full size; guarded by space_mu */
    uint64_t reserve_tried;         /* now_micros of the last attempt to take it; space_mu */
    atomic_int low_space;           /* the reserve was given back: only writes that free space
                                       are accepted (space.c) */
    int flush_nospace;              /* the last flush failed for want of space; guarded by mu */
    uint64_t flush_attempts;        /* flushes tried, failed or not; guarded by mu */
    uint64_t compact_wait_until;    /* no compaction starts before this (now_micros): the last
                                       one found no space; guarded by mu */

    pthread_mutex_t errmu;
    char errmsg[LSM_ERRLEN];        /* last failure on this handle; guarded by errmu */

    pthread_mutex_t logmu;          /* the queue of messages for the logger (logger.c); a leaf */
    struct {
        int level;
        char msg[LSM_ERRLEN];
    } logq[DB_LOG_QUEUE];           /* oldest first; guarded by logmu */
    atomic_int logq_n;              /* messages queued; written under logmu, read without it */
    int log_dropped;                /* messages lost to a full queue; guarded by logmu */

    /* statistics; atomics so the hot paths need no lock */
    atomic_uint_fast64_t st_blob_bytes, st_user_bytes, st_wal_bytes, st_flush_bytes, st_compact_bytes,
        st_compact_read, st_stall_micros, st_flushes, st_compactions, st_compactions_parallel,
        st_compactions_split, st_compactions_grouped;
};

/* What a read sees: memtables and version pinned together, and the newest sequence they hold. */
typedef struct read_view {
    memtable *mem, *imm;
    version *v;
    uint64_t snap;
} read_view;

/* ---- db.c ---- */
int  db_fail(lsm_db *db, int rc, const char *msg);  /* records msg for lsm_errmsg, returns rc */
/* The same for calls without a handle (lsm_repair): msg goes where lsm_errmsg(NULL) finds it. */
int  db_open_fail(int rc, const char *msg);
void db_set_bg_error(lsm_db *db, int rc, const char *msg); /* caller holds mu */
uint64_t db_new_file_number(lsm_db *db);           /* takes mu */
int  db_sync_dir(lsm_db *db, char *err);

/* ---- logger.c: messages to the callback of lsm_options_set_logger (none set: nothing) ---- */
/* Formats and delivers a message now; the caller holds no engine lock (mu, manifest_mu,
   space_mu, a cache's lock). */
void db_log(lsm_db *db, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Queues a message, under any lock, for the next db_log_drain (or db_log). */
void db_log_later(lsm_db *db, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Delivers what is queued; the caller holds no engine lock. Cheap when nothing is. */
void db_log_drain(lsm_db *db);

/* ---- space.c: the reserve file and low-space mode (see the file's opening comment) ---- */
void space_open(lsm_db *db);             /* at open, before recovery: gives the reserve back */
/* Tries to take the reserve (again), at most once a second unless now; success ends low-space
   mode. Does I/O: call without mu. */
void space_refill(lsm_db *db, int now);
/* The disk refused a write: gives the reserve back and enters low-space mode. Returns 1 if a
   reserve was held (so the refused work is worth trying again at once). */
int  space_release(lsm_db *db);
int  space_low(lsm_db *db);              /* in low-space mode */
/* Whether the file system reports room for bytes more (1 when it does not say). */
int  space_fits(lsm_db *db, uint64_t bytes);
/* Whether rc is a refusal for want of space that left the manifest whole, so that the work may be
   tried again later (a log that failed half way through a record is not). */
int  space_retryable(lsm_db *db, int rc);   /* takes no engine lock: callable under mu */

/* ---- check.c: values kept in blob files (a blob reference or an extent map) ---- */
/* Reads every chunk of blob file data the value (of entry type type) uses, verifying checksums;
   on damage returns the error with *bad_file the damaged file's number (0: the value itself is
   malformed). LSM_OK at once for a value kept inline. */
int  value_verify(blob_set *bs, int type, slice v, uint64_t *bad_file, char *err);
/* The blob files the value names, ascending and distinct, in *nums (malloc'd, NULL when none). */
int  value_files(const blob_set *bs, int type, slice v, uint64_t **nums);

/* ---- recover.c ---- */
/* Recovers the database in db->dir (creating it when allowed): the manifest, the logs, a new WAL;
   then deletes the files nothing names. Called by lsm_open with the directory locked. */
int  db_recover(lsm_db *db, char *err);

/* ---- write.c ---- */
#define BATCH_HEADER 12     /* fixed64 first sequence | fixed32 count, before a batch's entries */
/* Applies a batch in its WAL record form to m; LSM_CORRUPT if it is malformed. *last is the
   sequence number of its last entry (first - 1 for an empty batch). db pins the blob files of
   the maps it adds for m's life; NULL (repair, which deletes nothing meanwhile) pins nothing. */
int  db_batch_apply(lsm_db *db, memtable *m, const uint8_t *p, size_t n, uint64_t *last);
/* Creates WAL `number`, durable (header and directory entry) before any write is acknowledged. */
int  db_new_wal(lsm_db *db, uint64_t number, logw **out, char *err);
/* Writes one entry of any type (an extent map: LSM_TYPE_EXTENTS) as lsm_put writes a value,
   followed in the same atomic write by the entries of batch `with` (may be NULL). */
int  db_write_entry(lsm_db *db, int type, const void *key, size_t klen, const void *val,
                    size_t vlen, const lsm_batch *with, int sync);
/* LSM_OK if key has a valid length, else LSM_INVALID with a message on db. */
int  db_check_key(lsm_db *db, const void *key, size_t klen);

/* ---- flush.c ---- */
void *db_flush_main(void *arg);                     /* the flush thread; returns at shutdown */

/* ---- read.c ---- */
void read_view_pin(lsm_db *db, read_view *rv);      /* caller holds mu */
void read_view_put(read_view *rv);
/* The newest visible stored value of key, pinned by rv (the caller releases it with read_view_put
   after reading any blob file the value names): LSM_OK with a malloc'd copy in *val and its entry
   type in *type, LSM_NOTFOUND, or an error with a message in err. */
int  db_lookup(lsm_db *db, read_view *rv, const void *key, size_t klen, void **val, size_t *vlen,
               int *type, char *err);

/* ---- db_iter.c ---- */
uint64_t db_oldest_snapshot(lsm_db *db);            /* caller holds mu */
/* Links n (n->seq set) into db->snapshots in sequence order; caller holds mu. */
void db_snapshot_link(lsm_db *db, snapshot_node *n);
void db_snapshot_unlink(snapshot_node *n);          /* caller holds mu */

#endif /* LSM_DB_IMPL_H */
