/*
 * db_impl.h — the lsm_db handle, shared by db.c (open, writes, reads, iterators, flush) and
 * compact.c (picking and running compactions). Nothing outside the engine sees it.
 *
 * Locking: db->mu guards the memtables, the current version, the writer queue, sequence numbers,
 * snapshots and background state. manifest_mu serialises version edits (flush and compaction
 * threads); it is always taken before mu, never while holding mu.
 */
#ifndef LSM_DB_IMPL_H
#define LSM_DB_IMPL_H

#include <pthread.h>
#include <stdatomic.h>
#include "blob.h"
#include "cache.h"
#include "env.h"
#include "iter.h"
#include "memtable.h"
#include "options.h"
#include "sst.h"
#include "version.h"
#include "wal.h"

/* Level 0 may grow well past the compaction trigger before writes are held back: a merge out of
   L0 takes every L0 table at once, so the more it finds there, the fewer times it rewrites L1 for
   the same data. Pacing from 8 tables and stopping at 12 (LevelDB's numbers) gave a 10M-key
   fillrandom write amplification 6.7 and 2.5-2.9 s of stalls; 20 and 36 (RocksDB's) gave 5.5-5.7
   and 0.7-0.9 s, and 20% more puts per second. The price: while writes outrun merging, a lookup
   may test up to 36 L0 filters, and one put may wait up to 0.1 s in a pacing pause. */
#define L0_COMPACT_TRIGGER 4      /* L0 tables that start a compaction */
#define L0_SLOWDOWN        20     /* ...that start pacing writes (see db_make_room) */
#define L0_STOP            36     /* ...that stop writes until compaction catches up */
#define WRITE_RATE_MAX     (64u << 20) /* bytes/s allowed at L0_SLOWDOWN, falling to 0 at L0_STOP */
#define COMPACT_THREADS    2      /* compactions that may run at once, on disjoint levels */
#define COMPACT_NICE       5      /* how much nicer than the process compaction threads run */

typedef struct writer writer;

typedef struct snapshot_node {
    uint64_t seq;
    struct snapshot_node *prev, *next;
} snapshot_node;

struct lsm_db {
    char *dir;
    lsm_options opt;
    lsm_env *env;
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

    snapshot_node snapshots;        /* circular list of live iterator sequences; guarded by mu */

    cache *bcache;                  /* data blocks */
    cache *tcache;                  /* open tables by file number */
    cache *bfcache;                 /* open blob files by file number */

    pthread_mutex_t blob_mu;
    struct blob_ref_count *blobs;   /* live blob files: tables referencing each; guarded by blob_mu */
    int nblobs, capblobs;           /* guarded by blob_mu */

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

    pthread_mutex_t errmu;
    char errmsg[LSM_ERRLEN];        /* last failure on this handle; guarded by errmu */

    /* statistics; atomics so the hot paths need no lock */
    atomic_uint_fast64_t st_blob_bytes, st_user_bytes, st_wal_bytes, st_flush_bytes, st_compact_bytes,
        st_compact_read, st_stall_micros, st_flushes, st_compactions, st_compactions_parallel,
        st_compactions_split, st_compactions_grouped;
};

/* db.c */
/* Charges one wasted probe to f; at the last one, asks the compactor to compact it. */
void db_charge_seek(lsm_db *db, file_meta *f, int level);
int  db_fail(lsm_db *db, int rc, const char *msg);  /* records msg for lsm_errmsg, returns rc */
void db_set_bg_error(lsm_db *db, int rc, const char *msg); /* caller holds mu */
uint64_t db_oldest_snapshot(lsm_db *db);            /* caller holds mu */
int  db_table_open(lsm_db *db, uint64_t number, uint64_t size, sst **t, cache_handle **h, char *err);
void db_table_path(const lsm_db *db, uint64_t number, char *path, size_t n);
/* Iterator over a sorted, disjoint run of tables (part of a level), opening one table at a time;
   the caller keeps the metas pinned (through a version). */
iiter *db_files_iter_new(lsm_db *db, file_meta *const *files, int n);

/* Oldest-quarter blob file number for age-based blob garbage collection (0: none). */
uint64_t db_blob_gc_cutoff(lsm_db *db);

/* compact.c */
void *compact_thread_main(void *arg);
/* Picks the level most in need of compaction among those whose compaction would touch no level of
   `busy` (a bit per level); score >= 1 means it needs one. Caller holds mu. */
double compact_score(const lsm_db *db, const version *v, unsigned busy, int *level);
/* Bytes compaction still has to write to bring every level under its target, estimated as RocksDB
   does: L0 at its trigger merges with all of L1, and each level past its target sends its excess
   (its own and what arrives from above) down, rewriting the next level in proportion. */
uint64_t compact_pending_bytes(const lsm_db *db, const version *v);
/* Compacts everything into the fewest tables (lsm_compact). */
int  compact_all(lsm_db *db, char *err);
int  compact_range(lsm_db *db, slice lo, slice hi, char *err);
/* Writes tables one entry at a time: flush and compaction outputs. */
typedef struct table_writer {
    lsm_db *db;
    lsm_file *f;
    sst_builder *b;
    uint64_t number;
    buf smallest, largest;      /* internal keys of the first and last entry */
    char path[4096];
    blob_writer *bw;            /* blob file for this table's large values, created on demand */
    uint64_t bw_number;
    uint64_t *blobs;            /* blob files referenced, kept sorted */
    int nblobs;
    uint64_t gc_cutoff;         /* values in blob files numbered below this are rewritten */
    buf key, val;               /* scratch for rewritten entries */
} table_writer;
int  tw_open(lsm_db *db, table_writer *tw, char *err);
int  tw_add(table_writer *tw, slice k, slice v, char *err);
/* Finishes the table; *bytes += its size. With keep NULL it is synced and closed (its directory
   entry is not synced). Otherwise the open file goes to *keep unsynced, and the caller must sync
   and close it before any version names the table: a compaction syncs its outputs together at its
   end, so one journal commit serves them all. */
int  tw_finish(table_writer *tw, file_meta **out, uint64_t *bytes, lsm_file **keep, char *err);
void tw_abandon(table_writer *tw);
int  db_sync_dir(lsm_db *db, char *err);
iiter *db_table_iter_new(lsm_db *db, const file_meta *f);

/* Writes every entry of memtable m into one new table; *out is NULL when m was empty. */
int  db_write_table(lsm_db *db, memtable *m, file_meta **out, uint64_t *bytes, char *err);
/* Allocates a file number (takes mu). */
uint64_t db_new_file_number(lsm_db *db);
#endif /* LSM_DB_IMPL_H */
