/*
 * version.h — which tables form each level (a "version"), the edits that change it, and the
 * manifest that makes those edits durable.
 *
 * A version is immutable and reference-counted: readers and iterators pin the version they started
 * with, so a compaction can replace tables without pulling files from under them. A table file is
 * deleted when the last version naming it is released after an edit removed it.
 */
#ifndef LSM_VERSION_H
#define LSM_VERSION_H

#include <pthread.h>
#include <stdatomic.h>
#include "env.h"
#include "lsm_int.h"
#include "wal.h"

typedef struct file_meta {
    uint64_t number;           /* NNNNNN.sst */
    uint64_t size;             /* bytes */
    buf smallest;              /* smallest internal key */
    buf largest;               /* largest internal key */
    atomic_int refs;           /* versions (and edits) holding this meta */
    atomic_int obsolete;       /* set when an installed edit removed it: delete the file at refs 0 */
    atomic_int allowed_seeks;  /* reads that probed this table in vain before a compaction is due */
    uint64_t *blobs;           /* blob files this table references, ascending */
    int nblobs;
    struct vset *vs;           /* for deleting the file */
    /* Where the table's filter and index tops were when a lookup last opened it: a later lookup
       asks for their lines before it finds the table in the table cache. Only ever prefetched,
       never read through: the handle may have been closed since, and prefetching a stale address
       is harmless. Relaxed, and the fields may disagree for the same reason. */
    _Atomic uintptr_t pf_sst, pf_filter, pf_itop; /* pf_sst: the handle they came from */
    _Atomic size_t pf_flen, pf_ilen;
} file_meta;

typedef struct version {
    atomic_int refs;
    int nfiles[LSM_MAX_LEVELS];
    file_meta **files[LSM_MAX_LEVELS]; /* L0: newest first; L1+: sorted by key, disjoint */
    /* For L1+, what version_find_key searches instead of the tables' largest keys (one cache miss
       per table a level holds, in a large database): the level's shared user-key prefix (lpfx,
       lcp bytes, inside its first table's smallest key) and each table's largest user key's
       window (ukey_window) after it, in one array. */
    uint64_t *lwin[LSM_MAX_LEVELS];
    const uint8_t *lpfx[LSM_MAX_LEVELS];
    size_t lcp[LSM_MAX_LEVELS];
    struct vset *vs;
} version;

typedef struct new_file {
    int level;
    file_meta *f;              /* holds one reference */
} new_file;

typedef struct del_file {
    int level;
    uint64_t number;
} del_file;

typedef struct version_edit {
    int has_log_number, has_next_file, has_last_seq;
    uint64_t log_number;       /* WALs numbered below this are no longer needed */
    uint64_t next_file;
    uint64_t last_seq;
    new_file *added;
    int nadded, capadded;
    del_file *deleted;
    int ndeleted, capdeleted;
    uint64_t *garbage;         /* pairs (blob file number, its garbage bytes in total) */
    int ngarbage, capgarbage;  /* pairs */
} version_edit;

/* Called (from any thread) when a table no version needs any more is to be deleted. */
typedef void (*vset_drop_fn)(void *arg, file_meta *f);
/* Called when an installed edit brings a new table into the current version. */
typedef void (*vset_add_fn)(void *arg, file_meta *f);

typedef struct vset {
    lsm_env *env;
    const char *dir;
    version *current;          /* guarded by db->mu (read), manifest_mu + db->mu (replace) */
    uint64_t next_file;        /* guarded by db->mu */
    uint64_t last_seq;         /* persisted in edits; the db keeps the live value */
    uint64_t log_number;       /* guarded by manifest_mu */
    uint64_t manifest_number;  /* guarded by manifest_mu */
    logw *manifest;            /* guarded by manifest_mu */
    pthread_mutex_t *db_mu;    /* the db's mutex, taken to swap current */
    vset_drop_fn drop;         /* deletes a table file */
    vset_add_fn add;           /* counts blob references of a new table */
    void *drop_arg;            /* argument of drop and add */
    uint64_t *garbage;         /* pairs (blob file, garbage bytes) as the manifest holds them:
                                  replayed, then updated by each edit; a later pair for a file
                                  overrides an earlier one (folded now and then); guarded by
                                  manifest_mu */
    int ngarbage, capgarbage;
    int garbage_normal;        /* pairs after the last folding */
} vset;

file_meta *file_meta_new(uint64_t number, uint64_t size, slice smallest, slice largest);
void file_meta_unref(file_meta *f);
void file_meta_set_blobs(file_meta *f, const uint64_t *blobs, int n);
/* f's smallest and largest user keys (borrowed from f). */
static inline slice file_meta_lo(const file_meta *f)
{
    return ikey_user((slice){ f->smallest.p, f->smallest.len });
}
static inline slice file_meta_hi(const file_meta *f)
{
    return ikey_user((slice){ f->largest.p, f->largest.len });
}
/* Whether user key key lies within f's key range. */
int  file_meta_holds(const file_meta *f, const void *key, size_t klen);

void version_ref(version *v);
void version_unref(version *v);         /* accepts NULL */
uint64_t version_level_bytes(const version *v, int level);

void edit_init(version_edit *e);
void edit_free(version_edit *e);
void edit_add(version_edit *e, int level, file_meta *f);   /* takes a new reference on f */
void edit_delete(version_edit *e, int level, uint64_t number);
/* Records that blob file `file` holds `bytes` of garbage in total (extent.c's live-byte
   accounting); a later record for the same file replaces it. */
void edit_garbage(version_edit *e, uint64_t file, uint64_t bytes);
void edit_encode(const version_edit *e, buf *out);

/* Reads CURRENT and replays that manifest into vs->current. LSM_NOTFOUND if CURRENT is absent. */
int vset_recover(vset *vs, char *err);
/* Applies e to the current version (caller holds manifest_mu, not db->mu): appends e to the
   manifest and syncs it, then installs the new version under db->mu. Sets e's log_number/next_file/
   last_seq from vs if unset. */
int vset_apply(vset *vs, version_edit *e, char *err);
/* Starts a new manifest holding the whole current state and points CURRENT at it. */
int vset_write_snapshot(vset *vs, char *err);
void vset_close(vset *vs);

/* Files of level (L1+) overlapping the user-key range [lo, hi] (NULL = unbounded). Caller frees
   *out. */
int version_overlaps(const version *v, int level, const slice *lo, const slice *hi,
                     file_meta ***out);
/* Index of the first of n files sorted by key whose largest key >= ikey (n if none). */
int files_find(file_meta *const *files, int n, slice ikey);
/* Index of the file of sorted level (L1+) whose user-key range holds key, or -1. */
int version_find_key(const version *v, int level, const void *key, size_t klen);

#endif /* LSM_VERSION_H */
