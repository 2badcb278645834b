/*
 * checkpoint.c — lsm_checkpoint: a consistent copy of a database in a new directory, made while
 * the database stays open and writes go on (RocksDB's Checkpoint, mdb_copy).
 *
 * The copy holds exactly the writes visible when the call pins its read view (memtables, version
 * and sequence number together, as a read does): the version's tables and the blob files they name
 * are immutable, so they are hard-linked (copied where the link fails, as across file systems);
 * what the memtables hold up to that sequence is written as one new level-0 table numbered after
 * every file of the version, so it is the newest, naming the blob files its extent maps use (the
 * memtables' pins keep those alive meanwhile); a fresh manifest names all of it, and CURRENT,
 * written last, makes the directory a database. The copy has no WAL and no LOCK. It never writes to
 * the source directory, so it works on a read-only handle too, and it never lets a table go while
 * it links it: the pinned version keeps its tables and their blob files alive.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "db_impl.h"
#include "sst.h"

/* Links (or copies) file name from the database into dest. */
static int ckpt_link(lsm_db *db, const char *dest, const char *name, char *err)
{
    char from[4096], to[4096];
    snprintf(from, sizeof from, "%s/%s", db->dir, name);
    snprintf(to, sizeof to, "%s/%s", dest, name);
    int e = db->env->link ? db->env->link(db->env, from, to) : -EXDEV;
    if (e == -EXDEV || e == -EPERM || e == -EOPNOTSUPP || e == -EMLINK)
        e = env_copy_file(db->env, from, to);
    return e < 0 ? err_errno(err, e, "copying", from) : LSM_OK;
}

/* Writes the entries of the memtables of rv up to rv->snap as table number into dest; *out is
   NULL when there are none. Large values stay in the table (no blob file): a checkpoint is read
   the same either way, and the first compaction moves them out. */
/* Appends the n numbers of nums to the list (*v, *nv, *cap). */
static void ckpt_note(uint64_t **v, int *nv, int *cap, const uint64_t *nums, int n)
{
    for (int i = 0; i < n; i++) {
        if (*nv == *cap) {
            *cap = *cap ? 2 * *cap : 16;
            *v = xrealloc(*v, (size_t)*cap * sizeof **v);
        }
        (*v)[(*nv)++] = nums[i];
    }
}

/* Sorts the list and drops repeats; returns the new count. */
static int ckpt_unique(uint64_t *v, int n)
{
    if (n == 0)
        return 0;
    qsort(v, (size_t)n, sizeof *v, u64_cmp);
    int k = 1;
    for (int i = 1; i < n; i++)
        if (v[i] != v[k - 1])
            v[k++] = v[i];
    return k;
}

static int ckpt_write_memtables(lsm_db *db, read_view *rv, const char *dest, uint64_t number,
                                file_meta **out, char *err)
{
    uint64_t *blobs = NULL;     /* files the memtables' extent maps name */
    int nblobs = 0, capblobs = 0;
    *out = NULL;
    iiter *kids[2];
    int n = 0;
    kids[n++] = memtable_iter_new(rv->mem);
    if (rv->imm)
        kids[n++] = memtable_iter_new(rv->imm);
    iiter *in = merge_iter_new(kids, n);
    char path[4096];
    file_path(dest, number, ".sst", path, sizeof path);
    lsm_file *f = NULL;
    sst_builder *b = NULL;
    buf lo = { 0 }, hi = { 0 };
    int rc = LSM_OK;
    for (iiter_seek_first(in); iiter_valid(in) && rc == LSM_OK; iiter_next(in)) {
        slice k = iiter_key(in);
        if (ikey_seq(k) > rv->snap)
            continue;
        if (!b) {
            int e = db->env->open(db->env, path, LSM_O_CREATE, &f);
            if (e < 0) {
                rc = err_errno(err, e, "creating", path);
                break;
            }
            sst_options so = {
                .block_bytes = db->opt.block_bytes,
                .restart_interval = 16,
                .bloom_bits_per_key = db->opt.bloom_bits_per_key,
                .compression = db->opt.compression,
                .compression_level = db->opt.compression_level,
            };
            b = sst_builder_new(db->env, f, path, &so);
            buf_append(&lo, k.p, k.n);
        }
        if (ikey_type(k) == LSM_TYPE_EXTENTS) {
            uint64_t *nums;
            int n = value_files(&db->blobs, LSM_TYPE_EXTENTS, iiter_value(in), &nums);
            ckpt_note(&blobs, &nblobs, &capblobs, nums, n);
            free(nums);
        }
        rc = sst_builder_add(b, k, iiter_value(in), err);
        hi.len = 0;
        buf_append(&hi, k.p, k.n);
    }
    if (rc == LSM_OK)
        rc = iiter_status(in, err);
    iiter_free(in);
    uint64_t size = 0;
    if (b && rc == LSM_OK)
        rc = sst_builder_finish(b, &size, err);
    sst_builder_free(b);
    if (f && rc == LSM_OK) {
        int e = db->env->sync(db->env, f);
        if (e < 0)
            rc = err_errno(err, e, "syncing", path);
    }
    if (f)
        db->env->close(db->env, f);
    if (f && rc == LSM_OK) {
        *out = file_meta_new(number, size, (slice){ lo.p, lo.len }, (slice){ hi.p, hi.len });
        nblobs = ckpt_unique(blobs, nblobs);
        file_meta_set_blobs(*out, blobs, nblobs);
    }
    free(blobs);
    buf_free(&lo);
    buf_free(&hi);
    return rc;
}

/* Writes MANIFEST-number holding edit e into dest, synced. */
static int ckpt_write_manifest(lsm_db *db, const char *dest, uint64_t number, version_edit *e,
                              char *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/MANIFEST-%06" PRIu64, dest, number);
    logw *w = NULL;
    buf rec = { 0 };
    edit_encode(e, &rec);
    int rc = logw_create(db->env, path, MANIFEST_MAGIC, &w, err);
    if (rc == LSM_OK)
        rc = logw_append(w, rec.p, rec.len, err);
    if (rc == LSM_OK)
        rc = logw_sync(w, err);
    int c = logw_close(w, rc == LSM_OK ? err : NULL);
    if (rc == LSM_OK)
        rc = c;
    buf_free(&rec);
    return rc;
}

static int ckpt_make(lsm_db *db, const char *dest, char *err)
{
    int e = db->env->file_exists(db->env, dest);
    if (e > 0)
        return err_set(err, LSM_EXISTS, "%s: already exists (a checkpoint makes a new directory)",
                       dest);
    e = db->env->mkdir(db->env, dest);
    if (e == -EEXIST)
        return err_set(err, LSM_EXISTS, "%s: already exists (a checkpoint makes a new directory)",
                       dest);
    if (e < 0)
        return err_errno(err, e, "creating directory", dest);

    read_view rv;
    pthread_mutex_lock(&db->mu);
    read_view_pin(db, &rv);
    uint64_t number = db->vs.next_file;
    pthread_mutex_unlock(&db->mu);

    version_edit edit;
    edit_init(&edit);
    /* The copy's tables are synced: the blob files that the maps of the pinned memtables name,
       pending after unsynced commits, are made durable first (blob.h). */
    int rc = blob_set_sync_pending(&db->blobs, err);
    version *v = rv.v;
    uint64_t *blobs = NULL;     /* blob files of the copy: its tables name them */
    int nblobs = 0, capblobs = 0;
    for (int l = 0; l < LSM_MAX_LEVELS && rc == LSM_OK; l++)
        for (int i = 0; i < v->nfiles[l] && rc == LSM_OK; i++) {
            file_meta *f = v->files[l][i];
            char name[64];
            snprintf(name, sizeof name, "%06" PRIu64 ".sst", f->number);
            rc = ckpt_link(db, dest, name, err);
            edit_add(&edit, l, f);
            ckpt_note(&blobs, &nblobs, &capblobs, f->blobs, f->nblobs);
        }
    file_meta *mf = NULL;
    if (rc == LSM_OK)
        rc = ckpt_write_memtables(db, &rv, dest, number, &mf, err);
    if (mf) {
        edit_add(&edit, 0, mf);
        ckpt_note(&blobs, &nblobs, &capblobs, mf->blobs, mf->nblobs);
        file_meta_unref(mf);
    }
    nblobs = ckpt_unique(blobs, nblobs);
    for (int i = 0; i < nblobs && rc == LSM_OK; i++) {
        char name[64];
        snprintf(name, sizeof name, "%06" PRIu64 ".blob", blobs[i]);
        rc = ckpt_link(db, dest, name, err);
    }
    free(blobs);
    edit.has_log_number = edit.has_next_file = edit.has_last_seq = 1;
    edit.log_number = number + 2;   /* the copy has no log: replay finds none this new */
    edit.next_file = number + 2;
    edit.last_seq = rv.snap;
    if (rc == LSM_OK)
        rc = ckpt_write_manifest(db, dest, number + 1, &edit, err);
    edit_free(&edit);
    read_view_put(&rv);
    if (rc == LSM_OK) {
        e = db->env->sync_dir(db->env, dest);
        if (e < 0)
            rc = err_errno(err, e, "syncing directory", dest);
    }
    if (rc == LSM_OK) {
        char text[64];
        int n = snprintf(text, sizeof text, "MANIFEST-%06" PRIu64 "\n", number + 1);
        e = env_write_file_atomic(db->env, dest, "CURRENT", text, (size_t)n);
        if (e < 0)
            rc = err_errno(err, e, "writing CURRENT in", dest);
    }
    if (rc == LSM_OK) {
        /* the new directory's own entry, in its parent */
        char parent[4096];
        snprintf(parent, sizeof parent, "%s", dest);
        char *slash = strrchr(parent, '/');
        if (slash == parent)
            slash[1] = 0;
        else if (slash)
            *slash = 0;
        else
            snprintf(parent, sizeof parent, ".");
        e = db->env->sync_dir(db->env, parent);
        if (e < 0)
            rc = err_errno(err, e, "syncing directory", parent);
    }
    return rc;
}

int lsm_checkpoint(lsm_db *db, const char *dest)
{
    if (!db || !dest || !*dest)
        return LSM_INVALID;
    char err[LSM_ERRLEN] = "";
    int rc = ckpt_make(db, dest, err);
    /* The copy may share the blob files by hard link: no key's writer appends to them now. */
    blob_set_tail_clear(&db->blobs);
    return db_fail(db, rc, err);
}
