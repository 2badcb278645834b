/*
 * builder.c — the table writer (builder.h): one table file from a sorted stream of entries, with
 * large values moved to a blob file and, during compaction, live values moved out of old blob
 * files.
 *
 * Flushes and compactions both write through it, so both treat large values the same way: a value
 * of blob_threshold bytes or more is appended to the writer's own blob file and the table keeps a
 * reference. The table records which blob files it names, which is what keeps them alive. It must
 * never leave a finished table unsynced unless the caller took the file to sync it, and never
 * leave a half-written table or blob file behind after a failure.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include "builder.h"
#include "db_impl.h"
#include "extent.h"

int builder_write_memtable(lsm_db *db, memtable *m, file_meta **out, uint64_t *bytes, char *err)
{
    table_writer tw;
    *out = NULL;
    int rc = LSM_OK;
    int opened = 0;
    iiter *in = memtable_iter_new(m);
    for (iiter_seek_first(in); iiter_valid(in) && rc == LSM_OK; iiter_next(in)) {
        if (!opened) {
            rc = builder_open(db, &tw, err);
            if (rc != LSM_OK)
                break;
            opened = 1;
        }
        rc = builder_add(&tw, iiter_key(in), iiter_value(in), err);
    }
    if (rc == LSM_OK)
        rc = iiter_status(in, err);
    iiter_free(in);
    if (!opened)
        return rc;
    if (rc != LSM_OK) {
        builder_abandon(&tw);
        return rc;
    }
    return builder_finish(&tw, out, bytes, NULL, err);
}

int builder_open(lsm_db *db, table_writer *tw, char *err)
{
    memset(tw, 0, sizeof *tw);
    tw->db = db;
    tw->number = db_new_file_number(db);
    file_path(db->dir, tw->number, ".sst", tw->path, sizeof tw->path);
    int rc = db->env->open(db->env, tw->path, LSM_O_CREATE, &tw->f);
    if (rc < 0)
        return err_errno(err, rc, "creating", tw->path);
    sst_options so = {
        .block_bytes = db->opt.block_bytes,
        .restart_interval = 16,
        .bloom_bits_per_key = db->opt.bloom_bits_per_key,
        .compression = db->opt.compression,
        .compression_level = db->opt.compression_level,
    };
    tw->b = sst_builder_new(db->env, tw->f, tw->path, &so);
    return LSM_OK;
}

void builder_note_blob(table_writer *tw, uint64_t number)
{
    int i = tw->nblobs;
    while (i > 0 && tw->blobs[i - 1] > number)
        i--;
    if (i > 0 && tw->blobs[i - 1] == number)
        return;
    tw->blobs = xrealloc(tw->blobs, (size_t)(tw->nblobs + 1) * sizeof *tw->blobs);
    memmove(tw->blobs + i + 1, tw->blobs + i, (size_t)(tw->nblobs - i) * sizeof *tw->blobs);
    tw->blobs[i] = number;
    tw->nblobs++;
}

int builder_blob_writer(table_writer *tw, char *err)
{
    lsm_db *db = tw->db;
    if (tw->bw)
        return LSM_OK;
    char path[4096];
    tw->bw_number = db_new_file_number(db);
    file_path(db->dir, tw->bw_number, ".blob", path, sizeof path);
    return blob_writer_open(db->env, path, &tw->bw, err);
}

/* Appends a large value to this writer's blob file; the entry becomes a reference to it. */
static int builder_store_blob(table_writer *tw, slice k, slice v, slice *nk, slice *nv, char *err)
{
    lsm_db *db = tw->db;
    int rc = builder_blob_writer(tw, err);
    if (rc != LSM_OK)
        return rc;
    uint64_t off;
    rc = blob_writer_add(tw->bw, v, &off, err);
    if (rc != LSM_OK)
        return rc;
    atomic_fetch_add(&db->st_blob_bytes, v.n);
    tw->key.len = 0;
    ikey_build(&tw->key, k.p, k.n - LSM_TRAILER, ikey_seq(k), LSM_TYPE_BLOB);
    tw->val.len = 0;
    blob_ref_encode(&tw->val, tw->bw_number, off, v.n);
    builder_note_blob(tw, tw->bw_number);
    *nk = (slice){ tw->key.p, tw->key.len };
    *nv = (slice){ tw->val.p, tw->val.len };
    return LSM_OK;
}

int builder_add(table_writer *tw, slice k, slice v, char *err)
{
    lsm_db *db = tw->db;
    int type = ikey_type(k);
    int rc = LSM_OK;
    if (type == LSM_TYPE_VALUE && db->opt.blob_threshold && v.n >= db->opt.blob_threshold) {
        rc = builder_store_blob(tw, k, v, &k, &v, err);
    } else if (type == LSM_TYPE_BLOB) {
        uint64_t number, off, len;
        if ((rc = blob_set_ref_decode(&db->blobs, v, &number, &off, &len, err)) != LSM_OK)
            return rc;
        if (number < tw->gc_cutoff) {
            /* Garbage collection: move a live value out of an old blob file. */
            void *data = malloc(len ? len : 1);
            if (!data)
                return err_set(err, LSM_NOMEM, "cannot allocate %" PRIu64 " bytes", len);
            rc = blob_set_read(&db->blobs, v, 0, data, (size_t)len, &len, err);
            if (rc == LSM_OK) {
                buf kc = { 0 };
                ikey_build(&kc, k.p, k.n - LSM_TRAILER, ikey_seq(k), LSM_TYPE_VALUE);
                rc = builder_store_blob(tw, (slice){ kc.p, kc.len }, (slice){ data, (size_t)len }, &k, &v, err);
                buf_free(&kc);
            }
            free(data);
        } else {
            builder_note_blob(tw, number);
        }
    } else if (type == LSM_TYPE_EXTENTS) {
        /* Names the map's blob files, and moves extents out of files half garbage. */
        rc = extent_builder_add(tw, v, &v, err);
    }
    if (rc != LSM_OK)
        return rc;
    if (tw->smallest.len == 0)
        buf_append(&tw->smallest, k.p, k.n);
    tw->largest.len = 0;
    buf_append(&tw->largest, k.p, k.n);
    return sst_builder_add(tw->b, k, v, err);
}

static void builder_free(table_writer *tw)
{
    buf_free(&tw->smallest);
    buf_free(&tw->largest);
    buf_free(&tw->key);
    buf_free(&tw->val);
    free(tw->blobs);
    tw->blobs = NULL;
}

void builder_abandon(table_writer *tw)
{
    sst_builder_free(tw->b);
    tw->db->env->close(tw->db->env, tw->f);
    tw->db->env->unlink(tw->db->env, tw->path);
    blob_writer_abandon(tw->bw);
    builder_free(tw);
}

int builder_finish(table_writer *tw, file_meta **out, uint64_t *bytes, lsm_file **keep, char *err)
{
    lsm_env *env = tw->db->env;
    uint64_t size = 0, blob_size = 0;
    int rc = sst_builder_finish(tw->b, &size, err);
    if (rc == LSM_OK && !keep) {
        int e = env->sync(env, tw->f);
        if (e < 0)
            rc = err_errno(err, e, "syncing", tw->path);
    }
    if (rc == LSM_OK && tw->bw) {
        blob_size = blob_writer_size(tw->bw);
        rc = blob_writer_finish(tw->bw, err);
        tw->bw = NULL;
        if (rc != LSM_OK) {
            char path[4096];
            file_path(tw->db->dir, tw->bw_number, ".blob", path, sizeof path);
            env->unlink(env, path);
        }
    }
    if (rc != LSM_OK) {
        builder_abandon(tw);
        return rc;
    }
    sst_builder_free(tw->b);
    if (keep)
        *keep = tw->f;
    else
        env->close(env, tw->f);
    slice lo = { tw->smallest.p, tw->smallest.len }, hi = { tw->largest.p, tw->largest.len };
    *out = file_meta_new(tw->number, size, lo, hi);
    file_meta_set_blobs(*out, tw->blobs, tw->nblobs);
    if (tw->bw_number)
        blob_set_note_size(&tw->db->blobs, tw->bw_number, blob_size);
    if (bytes)
        *bytes += size;
    builder_free(tw);
    return LSM_OK;
}
