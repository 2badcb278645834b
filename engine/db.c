/*
 * db.c — the lsm_db handle: open and recovery, the write path with group commit, point reads,
 * snapshot iterators and the memtable flush thread.
 *
 * Writes queue up under db->mu; the writer at the head becomes the leader, merges the batches
 * queued behind it into one WAL record (one write, at most one fsync for all of them), applies them
 * to the memtable without holding the mutex, then publishes the new last sequence number. Readers
 * take a snapshot (memtables, version, sequence) under the mutex and search without it.
 *
 * A full memtable becomes immutable and a fresh WAL starts; the old WAL is synced first, so a log is
 * always complete before a newer one receives writes (recovery then yields a prefix of history). The
 * flush thread writes the immutable memtable as an L0 table, records it in the manifest, and only
 * then deletes the old WAL. This module must never acknowledge a synced write before its WAL record
 * is on stable storage, and never return a value from a record whose checksum failed.
 *
 * Batch representation (also the WAL record payload, see man/lsm-format.5):
 *   fixed64 first sequence | fixed32 count | count × (type byte | lenslice key | [lenslice value])
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include "db_impl.h"

#define BATCH_HEADER 12
#define GROUP_MAX_BYTES (1u << 20)

struct lsm_batch {
    buf rep;                    /* header + entries */
    int count;
    int invalid;                /* a key or value had a bad length: lsm_write refuses */
    uint64_t user_bytes;        /* key + value bytes, for statistics */
};

struct writer {
    lsm_batch *b;
    int sync;
    int force_flush;            /* lsm_flush: switch the memtable even if not full */
    int done;
    int rc;
    pthread_cond_t cv;
    writer *next;
};

/* What a read sees: memtables and version pinned together, and the newest sequence they hold. */
typedef struct read_view {
    memtable *mem, *imm;
    version *v;
    uint64_t snap;
} read_view;

struct lsm_iter {
    lsm_db *db;
    iiter *m;                   /* merge of every source */
    read_view rv;               /* pinned; rv.snap is the sequence snap registers */
    snapshot_node snap;         /* registered in db->snapshots */
    int valid;
    int rc;                     /* sticky failure */
    buf key;                    /* user key of the current entry */
    slice val;                  /* stored value (a blob reference when val_is_blob) */
    int val_is_blob;
    buf blobval;                /* the resolved blob value */
    buf bound;                  /* exclusive upper bound on user keys; empty: none */
    int64_t sample_left;        /* bytes to read before the next read sample */
    uint32_t rng;               /* for sample spacing */
};

#define READ_SAMPLE_BYTES (1 << 20)

/* Every ~1 MiB an iterator reads, it checks how many tables hold the current key; when several
   do, the first is charged a wasted probe, so a read-mostly database compacts its overlapping
   tables as a write-heavy one would. */
static void lsm_iter_sample(lsm_iter *it, slice ukey)
{
    it->rng = it->rng * 1103515245u + 12345u;
    it->sample_left = (int64_t)((it->rng >> 8) % (2 * READ_SAMPLE_BYTES));
    version *v = it->rv.v;
    file_meta *first = NULL;
    int first_level = 0, n = 0;
    for (int l = 0; l < LSM_MAX_LEVELS && n < 2; l++) {
        /* L0 tables overlap: look at each; a deeper level holds at most one candidate. */
        int i = l == 0 ? 0 : version_find_key(v, l, ukey.p, ukey.n);
        int end = l == 0 ? v->nfiles[0] : i + 1;
        for (; i >= 0 && i < end && n < 2; i++) {
            file_meta *f = v->files[l][i];
            if (!file_meta_holds(f, ukey.p, ukey.n))
                continue;
            if (n++ == 0) {
                first = f;
                first_level = l;
            }
        }
    }
    if (n >= 2)
        db_charge_seek(it->db, first, first_level);
}

static _Thread_local char tl_open_err[LSM_ERRLEN];
static _Thread_local char tl_errmsg[LSM_ERRLEN];

/* ---------- errors ---------- */

const char *lsm_strerror(int rc)
{
    switch (rc) {
    case LSM_OK: return "ok";
    case LSM_NOTFOUND: return "not found";
    case LSM_CORRUPT: return "corrupt data";
    case LSM_IOERR: return "I/O error";
    case LSM_BUSY: return "database is locked";
    case LSM_NOMEM: return "out of memory";
    case LSM_INVALID: return "invalid argument";
    case LSM_EXISTS: return "database already exists";
    case LSM_CLOSED: return "database failed earlier; reopen it";
    case LSM_NOSPACE: return "no space left on device";
    default: return "unknown error";
    }
}

const char *lsm_errmsg(lsm_db *db)
{
    if (!db) {
        memcpy(tl_errmsg, tl_open_err, sizeof tl_errmsg);
        return tl_errmsg;
    }
    pthread_mutex_lock(&db->errmu);
    memcpy(tl_errmsg, db->errmsg, sizeof tl_errmsg);
    pthread_mutex_unlock(&db->errmu);
    return tl_errmsg;
}

int db_fail(lsm_db *db, int rc, const char *msg)
{
    if (rc == LSM_OK || rc == LSM_NOTFOUND)
        return rc;
    pthread_mutex_lock(&db->errmu);
    snprintf(db->errmsg, sizeof db->errmsg, "%s", msg && *msg ? msg : lsm_strerror(rc));
    pthread_mutex_unlock(&db->errmu);
    return rc;
}

void db_set_bg_error(lsm_db *db, int rc, const char *msg)
{
    if (!db->bg_error) {
        db->bg_error = rc;
        snprintf(db->bg_errmsg, sizeof db->bg_errmsg, "%s", msg);
    }
    pthread_cond_broadcast(&db->bg_cv);
}

/* ---------- batches ---------- */

lsm_batch *lsm_batch_new(void)
{
    lsm_batch *b = xcalloc(1, sizeof *b);
    lsm_batch_clear(b);
    return b;
}

void lsm_batch_clear(lsm_batch *b)
{
    if (!b)
        return;
    b->rep.len = 0;
    buf_reserve(&b->rep, BATCH_HEADER);
    memset(b->rep.p, 0, BATCH_HEADER);
    b->rep.len = BATCH_HEADER;
    b->count = 0;
    b->invalid = 0;
    b->user_bytes = 0;
}

static void batch_add(lsm_batch *b, int type, const void *key, size_t klen, const void *val, size_t vlen)
{
    if (!key || klen == 0 || klen > LSM_MAX_KEY || vlen > LSM_MAX_VALUE || (vlen && !val)) {
        b->invalid = 1;
        return;
    }
    buf_reserve(&b->rep, 1 + 10 + klen + 10 + vlen);
    buf_putc(&b->rep, (uint8_t)type);
    buf_put_lenslice(&b->rep, key, klen);
    if (type == LSM_TYPE_VALUE)
        buf_put_lenslice(&b->rep, val, vlen);
    b->count++;
    b->user_bytes += klen + vlen;
}

void lsm_batch_put(lsm_batch *b, const void *key, size_t klen, const void *val, size_t vlen)
{
    if (b)
        batch_add(b, LSM_TYPE_VALUE, key, klen, val, vlen);
}

void lsm_batch_delete(lsm_batch *b, const void *key, size_t klen)
{
    if (b)
        batch_add(b, LSM_TYPE_DELETE, key, klen, NULL, 0);
}

int lsm_batch_count(const lsm_batch *b)
{
    return b ? b->count : 0;
}

void lsm_batch_free(lsm_batch *b)
{
    if (!b)
        return;
    buf_free(&b->rep);
    free(b);
}

/* Applies a batch representation to m; LSM_CORRUPT if it is malformed. *last is the sequence number
   of its last entry (first - 1 for an empty batch). */
static int batch_apply(memtable *m, const uint8_t *p, size_t n, uint64_t *last)
{
    if (n < BATCH_HEADER)
        return LSM_CORRUPT;
    uint64_t seq = dec_fixed64(p);
    uint32_t count = dec_fixed32(p + 8);
    const uint8_t *q = p + BATCH_HEADER, *end = p + n;
    for (uint32_t i = 0; i < count; i++) {
        slice k, v = { NULL, 0 };
        if (q >= end)
            return LSM_CORRUPT;
        int type = *q++;
        if (!(q = dec_lenslice(q, end, &k)) || k.n == 0)
            return LSM_CORRUPT;
        if (type == LSM_TYPE_VALUE) {
            if (!(q = dec_lenslice(q, end, &v)))
                return LSM_CORRUPT;
        } else if (type != LSM_TYPE_DELETE) {
            return LSM_CORRUPT;
        }
        memtable_add(m, seq + i, type, k.p, k.n, v.p, v.n);
    }
    if (q != end)
        return LSM_CORRUPT;
    *last = seq + count - 1;
    return LSM_OK;
}

/* ---------- files ---------- */

void db_table_path(const lsm_db *db, uint64_t number, char *path, size_t n)
{
    snprintf(path, n, "%s/%06" PRIu64 ".sst", db->dir, number);
}

static void db_log_path(const lsm_db *db, uint64_t number, char *path, size_t n)
{
    snprintf(path, n, "%s/%06" PRIu64 ".log", db->dir, number);
}

uint64_t db_new_file_number(lsm_db *db)
{
    pthread_mutex_lock(&db->mu);
    uint64_t n = db->vs.next_file++;
    pthread_mutex_unlock(&db->mu);
    return n;
}

static void db_table_deleter(uint64_t id, uint64_t off, void *value)
{
    sst_close(value);
}

int db_table_open(lsm_db *db, uint64_t number, uint64_t size, sst **t, cache_handle **h, char *err)
{
    cache_handle *ch = cache_lookup(db->tcache, 0, number);
    if (!ch) {
        char path[4096];
        sst *nt = NULL;
        db_table_path(db, number, path, sizeof path);
        int rc = sst_open(db->env, path, size, db->bcache, &nt, err);
        if (rc != LSM_OK)
            return rc;
        ch = cache_insert(db->tcache, 0, number, nt, 1, db_table_deleter);
    }
    *t = cache_value(ch);
    *h = ch;
    return LSM_OK;
}

/* ---------- blob files ---------- */

struct blob_ref_count {
    uint64_t number;
    int refs;                   /* tables in the current version (or pinned old ones) naming it */
    uint64_t size;              /* bytes, for statistics */
};

static void db_blob_path(const lsm_db *db, uint64_t number, char *path, size_t n)
{
    snprintf(path, n, "%s/%06" PRIu64 ".blob", db->dir, number);
}

/* Finds number's slot (caller holds blob_mu); creates it when create is set. */
static struct blob_ref_count *db_blob_slot(lsm_db *db, uint64_t number, int create)
{
    for (int i = 0; i < db->nblobs; i++)
        if (db->blobs[i].number == number)
            return &db->blobs[i];
    if (!create)
        return NULL;
    if (db->nblobs == db->capblobs) {
        db->capblobs = db->capblobs ? 2 * db->capblobs : 16;
        db->blobs = xrealloc(db->blobs, (size_t)db->capblobs * sizeof *db->blobs);
    }
    struct blob_ref_count *b = &db->blobs[db->nblobs++];
    b->number = number;
    b->refs = 0;
    b->size = 0;
    return b;
}

/* A table entering the current version: count its blob references. */
static void db_add_table(void *arg, file_meta *f)
{
    lsm_db *db = arg;
    pthread_mutex_lock(&db->blob_mu);
    for (int i = 0; i < f->nblobs; i++)
        db_blob_slot(db, f->blobs[i], 1)->refs++;
    pthread_mutex_unlock(&db->blob_mu);
}

/* Called when no version names table f any more: delete it, and every blob file no table names. */
static void db_drop_table(void *arg, file_meta *f)
{
    lsm_db *db = arg;
    char path[4096];
    cache_erase(db->tcache, 0, f->number);
    db_table_path(db, f->number, path, sizeof path);
    db->env->unlink(db->env, path);
    pthread_mutex_lock(&db->blob_mu);
    for (int i = 0; i < f->nblobs; i++) {
        struct blob_ref_count *b = db_blob_slot(db, f->blobs[i], 0);
        if (!b || --b->refs > 0)
            continue;
        uint64_t number = b->number;
        *b = db->blobs[--db->nblobs];
        cache_erase(db->bfcache, 0, number);
        db_blob_path(db, number, path, sizeof path);
        db->env->unlink(db->env, path);
    }
    pthread_mutex_unlock(&db->blob_mu);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

uint64_t db_blob_gc_cutoff(lsm_db *db)
{
    uint64_t cutoff = 0;
    pthread_mutex_lock(&db->blob_mu);
    if (db->nblobs >= 4) {
        uint64_t *nums = xmalloc((size_t)db->nblobs * sizeof *nums);
        for (int i = 0; i < db->nblobs; i++)
            nums[i] = db->blobs[i].number;
        qsort(nums, (size_t)db->nblobs, sizeof *nums, cmp_u64);
        cutoff = nums[db->nblobs / 4];
        free(nums);
    }
    pthread_mutex_unlock(&db->blob_mu);
    return cutoff;
}

typedef struct blob_file {
    lsm_env *env;
    lsm_file *f;
} blob_file;

static void db_blob_file_deleter(uint64_t id, uint64_t off, void *value)
{
    blob_file *bf = value;
    bf->env->close(bf->env, bf->f);
    free(bf);
}

/* Decodes a blob reference found in a table; LSM_CORRUPT with a message if it is malformed. */
static int db_blob_ref(const lsm_db *db, slice ref, uint64_t *number, uint64_t *off, uint64_t *len,
                       char *err)
{
    if (blob_ref_decode(ref, number, off, len) != 0)
        return err_set(err, LSM_CORRUPT, "malformed blob reference in a table of %s", db->dir);
    return LSM_OK;
}

/* Reads [pos, pos+n) of the blob value that ref points to. */
static int db_blob_read(lsm_db *db, slice ref, uint64_t pos, void *dst, size_t n, uint64_t *len,
                        char *err)
{
    uint64_t number, off;
    char path[4096];
    int rc = db_blob_ref(db, ref, &number, &off, len, err);
    if (rc != LSM_OK)
        return rc;
    db_blob_path(db, number, path, sizeof path);
    if (pos + n > *len)
        return err_set(err, LSM_INVALID, "%s: range past the end of a value", path);
    cache_handle *h = cache_lookup(db->bfcache, 0, number);
    if (!h) {
        blob_file *bf = xcalloc(1, sizeof *bf);
        bf->env = db->env;
        int e = db->env->open(db->env, path, LSM_O_READ, &bf->f);
        if (e < 0) {
            free(bf);
            return e == -ENOENT ? err_set(err, LSM_CORRUPT, "%s: missing blob file", path)
                                : err_errno(err, e, "opening", path);
        }
        rc = blob_check_header(db->env, bf->f, path, err);
        if (rc != LSM_OK) {
            db_blob_file_deleter(0, 0, bf);
            return rc;
        }
        h = cache_insert(db->bfcache, 0, number, bf, 1, db_blob_file_deleter);
    }
    blob_file *bf = cache_value(h);
    rc = blob_read(db->env, bf->f, path, off, *len, pos, dst, n, err);
    cache_release(db->bfcache, h);
    return rc;
}

/* Replaces *val (a blob reference, malloc'd) by the value it points to. */
static int db_blob_resolve(lsm_db *db, void **val, size_t *vlen, char *err)
{
    slice ref = { *val, *vlen };
    uint64_t number, off, len;
    int rc = db_blob_ref(db, ref, &number, &off, &len, err);
    if (rc != LSM_OK)
        return rc;
    void *v = malloc(len ? len : 1);
    if (!v)
        return err_set(err, LSM_NOMEM, "cannot allocate %" PRIu64 " bytes for a value", len);
    rc = db_blob_read(db, ref, 0, v, (size_t)len, &len, err);
    if (rc != LSM_OK) {
        free(v);
        return rc;
    }
    free(*val);
    *val = v;
    *vlen = (size_t)len;
    return LSM_OK;
}

/* ---------- table output ---------- */

int db_write_table(lsm_db *db, memtable *m, file_meta **out, uint64_t *bytes, char *err)
{
    table_writer tw;
    *out = NULL;
    int rc = LSM_OK;
    int opened = 0;
    iiter *in = memtable_iter_new(m);
    for (iiter_seek_first(in); iiter_valid(in) && rc == LSM_OK; iiter_next(in)) {
        if (!opened) {
            rc = tw_open(db, &tw, err);
            if (rc != LSM_OK)
                break;
            opened = 1;
        }
        rc = tw_add(&tw, iiter_key(in), iiter_value(in), err);
    }
    if (rc == LSM_OK)
        rc = iiter_status(in, err);
    iiter_free(in);
    if (!opened)
        return rc;
    if (rc != LSM_OK) {
        tw_abandon(&tw);
        return rc;
    }
    return tw_finish(&tw, out, bytes, NULL, err);
}

int tw_open(lsm_db *db, table_writer *tw, char *err)
{
    memset(tw, 0, sizeof *tw);
    tw->db = db;
    tw->number = db_new_file_number(db);
    db_table_path(db, tw->number, tw->path, sizeof tw->path);
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

static void tw_note_blob(table_writer *tw, uint64_t number)
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

/* Appends a large value to this writer's blob file; the entry becomes a reference to it. */
static int tw_store_blob(table_writer *tw, slice k, slice v, slice *nk, slice *nv, char *err)
{
    lsm_db *db = tw->db;
    if (!tw->bw) {
        char path[4096];
        tw->bw_number = db_new_file_number(db);
        db_blob_path(db, tw->bw_number, path, sizeof path);
        int rc = blob_writer_open(db->env, path, &tw->bw, err);
        if (rc != LSM_OK)
            return rc;
    }
    uint64_t off;
    int rc = blob_writer_add(tw->bw, v, &off, err);
    if (rc != LSM_OK)
        return rc;
    atomic_fetch_add(&db->st_blob_bytes, v.n);
    tw->key.len = 0;
    ikey_build(&tw->key, k.p, k.n - LSM_TRAILER, ikey_seq(k), LSM_TYPE_BLOB);
    tw->val.len = 0;
    blob_ref_encode(&tw->val, tw->bw_number, off, v.n);
    tw_note_blob(tw, tw->bw_number);
    *nk = (slice){ tw->key.p, tw->key.len };
    *nv = (slice){ tw->val.p, tw->val.len };
    return LSM_OK;
}

int tw_add(table_writer *tw, slice k, slice v, char *err)
{
    lsm_db *db = tw->db;
    int type = ikey_type(k);
    int rc = LSM_OK;
    if (type == LSM_TYPE_VALUE && db->opt.blob_threshold && v.n >= db->opt.blob_threshold) {
        rc = tw_store_blob(tw, k, v, &k, &v, err);
    } else if (type == LSM_TYPE_BLOB) {
        uint64_t number, off, len;
        if ((rc = db_blob_ref(db, v, &number, &off, &len, err)) != LSM_OK)
            return rc;
        if (number < tw->gc_cutoff) {
            /* Garbage collection: move a live value out of an old blob file. */
            void *data = malloc(len ? len : 1);
            if (!data)
                return err_set(err, LSM_NOMEM, "cannot allocate %" PRIu64 " bytes", len);
            rc = db_blob_read(db, v, 0, data, (size_t)len, &len, err);
            if (rc == LSM_OK) {
                buf kc = { 0 };
                ikey_build(&kc, k.p, k.n - LSM_TRAILER, ikey_seq(k), LSM_TYPE_VALUE);
                rc = tw_store_blob(tw, (slice){ kc.p, kc.len }, (slice){ data, (size_t)len }, &k, &v, err);
                buf_free(&kc);
            }
            free(data);
        } else {
            tw_note_blob(tw, number);
        }
    }
    if (rc != LSM_OK)
        return rc;
    if (tw->smallest.len == 0)
        buf_append(&tw->smallest, k.p, k.n);
    tw->largest.len = 0;
    buf_append(&tw->largest, k.p, k.n);
    return sst_builder_add(tw->b, k, v, err);
}

static void tw_free(table_writer *tw)
{
    buf_free(&tw->smallest);
    buf_free(&tw->largest);
    buf_free(&tw->key);
    buf_free(&tw->val);
    free(tw->blobs);
    tw->blobs = NULL;
}

void tw_abandon(table_writer *tw)
{
    sst_builder_free(tw->b);
    tw->db->env->close(tw->db->env, tw->f);
    tw->db->env->unlink(tw->db->env, tw->path);
    blob_writer_abandon(tw->bw);
    tw_free(tw);
}

int tw_finish(table_writer *tw, file_meta **out, uint64_t *bytes, lsm_file **keep, char *err)
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
            db_blob_path(tw->db, tw->bw_number, path, sizeof path);
            env->unlink(env, path);
        }
    }
    if (rc != LSM_OK) {
        tw_abandon(tw);
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
    if (tw->bw_number) {
        pthread_mutex_lock(&tw->db->blob_mu);
        db_blob_slot(tw->db, tw->bw_number, 1)->size = blob_size;
        pthread_mutex_unlock(&tw->db->blob_mu);
    }
    if (bytes)
        *bytes += size;
    tw_free(tw);
    return LSM_OK;
}

int db_sync_dir(lsm_db *db, char *err)
{
    int e = db->env->sync_dir(db->env, db->dir);
    return e < 0 ? err_errno(err, e, "syncing directory", db->dir) : LSM_OK;
}

/* Creates WAL `number`, durable (header and directory entry) before any write is acknowledged. */
static int db_new_wal(lsm_db *db, uint64_t number, logw **out, char *err)
{
    char path[4096];
    db_log_path(db, number, path, sizeof path);
    int rc = logw_create_marked(db->env, path, WAL_MAGIC, out, err);
    if (rc == LSM_OK) {
        logw_set_buffer(*out, db->opt.wal_buffer_bytes);
        rc = logw_sync(*out, err);
    }
    if (rc == LSM_OK)
        rc = db_sync_dir(db, err);
    if (rc != LSM_OK) {
        logw_close(*out, NULL);
        *out = NULL;
        db->env->unlink(db->env, path);
    }
    return rc;
}

/* ---------- snapshots ---------- */

uint64_t db_oldest_snapshot(lsm_db *db)
{
    return db->snapshots.next != &db->snapshots ? db->snapshots.next->seq : db->last_seq;
}

/* ---------- flush ---------- */

/* Writes imm as an L0 table and records it; log_number is the oldest WAL still needed afterwards. */
static int db_flush_memtable(lsm_db *db, memtable *imm, uint64_t log_number, uint64_t last_seq,
                             char *err)
{
    file_meta *f = NULL;
    uint64_t bytes = 0;
    int rc = db_write_table(db, imm, &f, &bytes, err);
    if (rc == LSM_OK && f)
        rc = db_sync_dir(db, err);
    if (rc != LSM_OK) {
        file_meta_unref(f);
        return rc;
    }
    version_edit e;
    edit_init(&e);
    if (f) {
        edit_add(&e, 0, f);
        file_meta_unref(f);
    }
    e.has_log_number = 1;
    e.log_number = log_number;
    e.has_last_seq = 1;
    e.last_seq = last_seq;
    pthread_mutex_lock(&db->manifest_mu);
    rc = vset_apply(&db->vs, &e, err);
    pthread_mutex_unlock(&db->manifest_mu);
    if (rc != LSM_OK && f) {
        char path[4096];
        db_table_path(db, f->number, path, sizeof path);
        db->env->unlink(db->env, path);
    }
    edit_free(&e);
    atomic_fetch_add(&db->st_flush_bytes, bytes);
    atomic_fetch_add(&db->st_flushes, 1);
    return rc;
}

static void *db_flush_main(void *arg)
{
    lsm_db *db = arg;
    char err[LSM_ERRLEN];
    pthread_mutex_lock(&db->mu);
    for (;;) {
        while (!db->shutting_down && (!db->imm || db->bg_error)) {
            /* Between flushes, hand buffered WAL records to the OS at least every 100 ms, so
               unsynced writes are not held in this process for long. */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 100 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            if (pthread_cond_timedwait(&db->work_cv, &db->mu, &ts) == ETIMEDOUT && db->wal)
                logw_flush(db->wal, NULL);
        }
        if (!db->imm || db->bg_error)
            break;
        memtable *imm = db->imm;
        uint64_t old_log = db->imm_log, log_number = db->wal_number, seq = db->last_seq;
        pthread_mutex_unlock(&db->mu);
        int rc = db_flush_memtable(db, imm, log_number, seq, err);
        if (rc == LSM_OK) {
            char path[4096];
            db_log_path(db, old_log, path, sizeof path);
            db->env->unlink(db->env, path);
        }
        pthread_mutex_lock(&db->mu);
        if (rc != LSM_OK) {
            db_set_bg_error(db, rc, err);
            break;
        }
        db->imm = NULL;
        memtable_unref(imm);
        pthread_cond_broadcast(&db->bg_cv);
        pthread_cond_broadcast(&db->compact_cv);
    }
    pthread_mutex_unlock(&db->mu);
    return NULL;
}

/* ---------- writes ---------- */

/* Makes room in the memtable for the leader's write (caller holds mu, is the leader). */
static int db_make_room(lsm_db *db, int force, char *err)
{
    int allow_delay = !force && db->opt.background_compaction;
    for (;;) {
        if (db->bg_error)
            return err_set(err, db->bg_error, "%s", db->bg_errmsg);
        int l0 = db->vs.current->nfiles[0];
        if (l0 < L0_SLOWDOWN)
            db->paced_bytes = 0;
        else if (allow_delay && l0 < L0_STOP) {
            /* Many L0 tables: pace writes rather than stop them. The rate allowed falls linearly
               from WRITE_RATE_MAX at L0_SLOWDOWN tables to nothing at L0_STOP; the bytes written
               since the last pause are paid for in one sleep once they are worth a millisecond. */
            double rate = (double)WRITE_RATE_MAX * (L0_STOP - l0) / (L0_STOP - L0_SLOWDOWN);
            uint64_t us = (uint64_t)((double)db->paced_bytes * 1e6 / rate);
            allow_delay = 0;
            if (us >= 1000) {
                if (us > 100000)
                    us = 100000;    /* at most 0.1 s per pause */
                db->paced_bytes = 0;
                pthread_mutex_unlock(&db->mu);
                usleep((useconds_t)us);
                atomic_fetch_add(&db->st_stall_micros, us);
                pthread_mutex_lock(&db->mu);
                continue;
            }
        }
        if (!force && memtable_usage(db->mem) < db->opt.memtable_bytes)
            return LSM_OK;
        if (force && memtable_entries(db->mem) == 0)
            return LSM_OK;
        if (db->imm || (db->opt.background_compaction && l0 >= L0_STOP)) {
            uint64_t t0 = now_micros();
            int stopped = !db->imm;
            pthread_cond_broadcast(&db->work_cv);
            if (stopped) {
                db->l0_stopped = 1;     /* lets a second compaction start beside a long one */
                pthread_cond_broadcast(&db->compact_cv);
            }
            pthread_cond_wait(&db->bg_cv, &db->mu);
            if (stopped)
                db->l0_stopped = 0;
            atomic_fetch_add(&db->st_stall_micros, now_micros() - t0);
            continue;
        }
        /* Switch: finish the old WAL durably, then start a new one. */
        uint64_t num = db->vs.next_file++;
        logw *old = db->wal, *nw = NULL;
        pthread_mutex_unlock(&db->mu);
        int rc = logw_seal(old, err);
        if (rc == LSM_OK)
            rc = db_new_wal(db, num, &nw, err);
        pthread_mutex_lock(&db->mu);
        if (rc != LSM_OK) {
            db_set_bg_error(db, rc, err);
            return rc;
        }
        logw_close(old, NULL);
        db->wal = nw;
        db->imm = db->mem;
        db->imm_log = db->wal_number;
        db->wal_number = num;
        db->mem = memtable_new();
        db->last_switch_micros = now_micros();
        force = 0;
        pthread_cond_broadcast(&db->work_cv);
    }
}

static int db_write(lsm_db *db, lsm_batch *b, int sync, int force_flush)
{
    writer w = { .b = b, .sync = sync, .force_flush = force_flush };
    char err[LSM_ERRLEN] = "";
    pthread_cond_init(&w.cv, NULL);
    pthread_mutex_lock(&db->mu);
    if (db->wq_tail)
        db->wq_tail->next = &w;
    else
        db->wq_head = &w;
    db->wq_tail = &w;
    while (!w.done && db->wq_head != &w)
        pthread_cond_wait(&w.cv, &db->mu);
    if (w.done) {
        pthread_mutex_unlock(&db->mu);
        pthread_cond_destroy(&w.cv);
        return w.rc;
    }

    int rc = db_make_room(db, force_flush, err);
    writer *last = &w;
    if (rc == LSM_OK) {
        /* Gather the group: batches queued behind us, up to a size bound that keeps a small
           write's latency small. */
        size_t total = b ? b->rep.len : BATCH_HEADER;
        size_t limit = total <= (128u << 10) ? total + (128u << 10) : GROUP_MAX_BYTES;
        int gsync = sync;
        for (writer *x = w.next; x && !x->force_flush; x = x->next) {
            size_t n = x->b ? x->b->rep.len - BATCH_HEADER : 0;
            if (total + n > limit)
                break;
            total += n;
            gsync |= x->sync;
            last = x;
        }
        db->paced_bytes += total;
        const uint8_t *rep;
        size_t replen;
        uint32_t count = 0;
        uint64_t seq = db->last_seq + 1, ubytes = 0;
        if (last == &w && b) {
            rep = b->rep.p;
            replen = b->rep.len;
            count = (uint32_t)b->count;
            ubytes = b->user_bytes;
            enc_fixed64(b->rep.p, seq);
            enc_fixed32(b->rep.p + 8, count);
        } else {
            db->group.len = 0;
            buf_reserve(&db->group, total);
            db->group.len = BATCH_HEADER;
            for (writer *x = &w;; x = x->next) {
                if (x->b) {
                    buf_append(&db->group, x->b->rep.p + BATCH_HEADER, x->b->rep.len - BATCH_HEADER);
                    count += (uint32_t)x->b->count;
                    ubytes += x->b->user_bytes;
                }
                if (x == last)
                    break;
            }
            enc_fixed64(db->group.p, seq);
            enc_fixed32(db->group.p + 8, count);
            rep = db->group.p;
            replen = db->group.len;
        }
        memtable *mem = db->mem;
        logw *wal = db->wal;
        pthread_mutex_unlock(&db->mu);

        if (count > 0) {
            rc = logw_append(wal, rep, replen, err);
            atomic_fetch_add(&db->st_wal_bytes, replen + 8);
            atomic_fetch_add(&db->st_user_bytes, ubytes);
        }
        if (rc == LSM_OK && gsync)
            rc = logw_sync(wal, err);
        uint64_t lastseq = seq - 1;
        if (rc == LSM_OK && count > 0 && batch_apply(mem, rep, replen, &lastseq) != LSM_OK)
            rc = err_set(err, LSM_CORRUPT, "internal: malformed batch");

        pthread_mutex_lock(&db->mu);
        if (rc != LSM_OK)
            db_set_bg_error(db, rc == LSM_CORRUPT || rc == LSM_NOSPACE ? rc : LSM_IOERR, err);
        else
            db->last_seq = lastseq;
    }
    for (;;) {
        writer *x = db->wq_head;
        db->wq_head = x->next;
        if (!db->wq_head)
            db->wq_tail = NULL;
        x->rc = rc;
        x->done = 1;
        if (x != &w)
            pthread_cond_signal(&x->cv);
        if (x == last)
            break;
    }
    if (db->wq_head)
        pthread_cond_signal(&db->wq_head->cv);
    pthread_mutex_unlock(&db->mu);
    pthread_cond_destroy(&w.cv);
    return db_fail(db, rc, err);
}

int lsm_write(lsm_db *db, lsm_batch *b, int sync)
{
    if (!db || !b)
        return LSM_INVALID;
    if (b->invalid)
        return db_fail(db, LSM_INVALID, "batch holds an empty or too long key or a too long value");
    return db_write(db, b, sync, 0);
}

/* LSM_OK if key has a valid length, else LSM_INVALID with a message on db. */
static int db_check_key(lsm_db *db, const void *key, size_t klen)
{
    if (!key || klen == 0 || klen > LSM_MAX_KEY)
        return db_fail(db, LSM_INVALID, "key length must be 1..65535 bytes");
    return LSM_OK;
}

/* lsm_put and lsm_delete: a batch of one entry, built on the stack when small, so the hot path
   allocates nothing. */
static int db_write_one(lsm_db *db, int type, const void *key, size_t klen, const void *val,
                        size_t vlen)
{
    lsm_batch b = { 0 };
    uint8_t stackbuf[512];
    if (BATCH_HEADER + 1 + 20 + klen + vlen <= sizeof stackbuf) {
        b.rep.p = stackbuf;
        b.rep.cap = sizeof stackbuf;
        b.rep.len = BATCH_HEADER;
    } else {
        lsm_batch_clear(&b);
    }
    batch_add(&b, type, key, klen, val, vlen);
    int rc = db_write(db, &b, db->opt.sync_writes, 0);
    if (b.rep.p != stackbuf)
        buf_free(&b.rep);
    return rc;
}

int lsm_put(lsm_db *db, const void *key, size_t klen, const void *val, size_t vlen)
{
    if (!db)
        return LSM_INVALID;
    int rc = db_check_key(db, key, klen);
    if (rc != LSM_OK)
        return rc;
    if (vlen > LSM_MAX_VALUE || (vlen && !val))
        return db_fail(db, LSM_INVALID, "value longer than LSM_MAX_VALUE (1 GiB)");
    return db_write_one(db, LSM_TYPE_VALUE, key, klen, val, vlen);
}

int lsm_delete(lsm_db *db, const void *key, size_t klen)
{
    if (!db)
        return LSM_INVALID;
    int rc = db_check_key(db, key, klen);
    return rc != LSM_OK ? rc : db_write_one(db, LSM_TYPE_DELETE, key, klen, NULL, 0);
}

int lsm_sync(lsm_db *db)
{
    if (!db)
        return LSM_INVALID;
    return db_write(db, NULL, 1, 0);
}

int lsm_flush(lsm_db *db)
{
    if (!db)
        return LSM_INVALID;
    int rc = db_write(db, NULL, 0, 1);
    if (rc != LSM_OK)
        return rc;
    pthread_mutex_lock(&db->mu);
    while (db->imm && !db->bg_error)
        pthread_cond_wait(&db->bg_cv, &db->mu);
    rc = db->bg_error;
    char msg[LSM_ERRLEN];
    memcpy(msg, db->bg_errmsg, sizeof msg);
    pthread_mutex_unlock(&db->mu);
    return db_fail(db, rc, msg);
}

/* ---------- reads ---------- */

void db_charge_seek(lsm_db *db, file_meta *f, int level)
{
    if (atomic_fetch_sub(&f->allowed_seeks, 1) != 1)
        return;
    pthread_mutex_lock(&db->mu);
    if (!db->seek_file) {
        atomic_fetch_add(&f->refs, 1);
        db->seek_file = f;
        db->seek_level = level;
        pthread_cond_broadcast(&db->compact_cv);
    }
    pthread_mutex_unlock(&db->mu);
}

/* Pins what a read sees now (caller holds mu). */
static void db_view_pin(lsm_db *db, read_view *rv)
{
    rv->mem = db->mem;
    memtable_ref(rv->mem);
    rv->imm = db->imm;
    if (rv->imm)
        memtable_ref(rv->imm);
    rv->v = db->vs.current;
    version_ref(rv->v);
    rv->snap = db->last_seq;
}

static void db_view_get(lsm_db *db, read_view *rv)
{
    pthread_mutex_lock(&db->mu);
    db_view_pin(db, rv);
    pthread_mutex_unlock(&db->mu);
}

static void db_view_put(read_view *rv)
{
    memtable_unref(rv->mem);
    memtable_unref(rv->imm);
    version_unref(rv->v);
    memset(rv, 0, sizeof *rv);
}

/* A table a lookup may have to search, and (once opened) its table-cache handle. */
typedef struct db_probe {
    file_meta *f;
    int level;
    sst *t;
    cache_handle *h;
} db_probe;

/* Asks for the lines a probe of f will read first, from where f's table last was (file_meta's
   prefetch hints): at 10M keys the filter line is a miss from memory, and this lets it travel
   while the table is found in the table cache. On compacted trees, in alternating runs, gets
   were 7-8% faster at 10M keys (9 runs of 9) and 4-6% at 1M, and gets of absent keys no slower.
   The index tops are asked for up to 16 lines (a 2 MiB table has about 8). */
static void db_probe_hint(file_meta *f, uint64_t hash, int index_too)
{
    uintptr_t fp = atomic_load_explicit(&f->pf_filter, memory_order_relaxed);
    uintptr_t ip = index_too ? atomic_load_explicit(&f->pf_itop, memory_order_relaxed) : 0;
    size_t il = ip ? atomic_load_explicit(&f->pf_ilen, memory_order_relaxed) : 0;
    sst_prefetch_at((const uint8_t *)fp, atomic_load_explicit(&f->pf_flen, memory_order_relaxed),
                    hash, (const uint8_t *)ip, il < 1024 ? il : 1024);
}

/* After the table cache gave t for f: if the hints were stale or missing, asks for the lines now
   and records where they are. */
static void db_probe_note(file_meta *f, sst *t, uint64_t hash, int index_too)
{
    if (atomic_load_explicit(&f->pf_sst, memory_order_relaxed) == (uintptr_t)t)
        return;
    const uint8_t *fp, *ip;
    size_t fl, il;
    sst_prefetch_where(t, &fp, &fl, &ip, &il);
    sst_prefetch_at(fp, fl, hash, ip, index_too ? il : 0);
    atomic_store_explicit(&f->pf_flen, fl, memory_order_relaxed);
    atomic_store_explicit(&f->pf_filter, (uintptr_t)fp, memory_order_relaxed);
    atomic_store_explicit(&f->pf_ilen, il, memory_order_relaxed);
    atomic_store_explicit(&f->pf_itop, (uintptr_t)ip, memory_order_relaxed);
    atomic_store_explicit(&f->pf_sst, (uintptr_t)t, memory_order_relaxed);
}

/* The core lookup: LSM_OK with a malloc'd copy of the stored value (a blob reference when *type
   is LSM_TYPE_BLOB), or LSM_NOTFOUND, or an error. The caller releases rv with db_view_put only
   after it has read any blob the value points to: the pinned version keeps the blob file alive. */
static int db_lookup(lsm_db *db, read_view *rv_, const void *key, size_t klen, void **val,
                     size_t *vlen, int *vtype, char *err)
{
    read_view rv;
    db_view_get(db, &rv);
    *rv_ = rv;
    int type, found = 0, rc = LSM_OK;
    slice s;
    memtable *mts[2] = { rv.mem, rv.imm };
    for (int i = 0; i < 2 && !found; i++) {
        if (mts[i] && memtable_get(mts[i], key, klen, rv.snap, &type, &s)) {
            found = 1;
            if (type == LSM_TYPE_VALUE) {
                *val = xmemdup(s.p, s.n);
                *vlen = s.n;
            }
        }
    }
    version *v = rv.v;
    /* The tables that may hold key, newest first: every L0 table whose range covers it, then at
       most one per deeper level. They are opened and their filter lines asked for together
       before the first is tested, so a key in the last level waits for one filter miss, not one
       per level. A table that fails to open ends the batch there: the loop below opens it again
       when (and only when) no newer table answered, and reports its error then. */
    db_probe stack[L0_STOP + LSM_MAX_LEVELS], *pr = stack;
    int np = 0, nopen = 0;
    if (!found) {
        if (v->nfiles[0] + LSM_MAX_LEVELS > (int)(sizeof stack / sizeof *stack))
            pr = xmalloc((size_t)(v->nfiles[0] + LSM_MAX_LEVELS) * sizeof *pr);
        for (int i = 0; i < v->nfiles[0]; i++)
            if (file_meta_holds(v->files[0][i], key, klen))
                pr[np++] = (db_probe){ v->files[0][i], 0, NULL, NULL };
        for (int l = 1; l < LSM_MAX_LEVELS; l++) {
            int i = version_find_key(v, l, key, klen);
            if (i >= 0)
                pr[np++] = (db_probe){ v->files[l][i], l, NULL, NULL };
        }
    }
    uint64_t hash = np ? sst_key_hash(key, klen) : 0;
    /* Most keys live in the last level, so its table's index search is likely next: its index
       lines are asked for too. */
    for (int j = 0; j < np; j++)
        db_probe_hint(pr[j].f, hash, j == np - 1);
    for (; nopen < np; nopen++) {
        if (db_table_open(db, pr[nopen].f->number, pr[nopen].f->size, &pr[nopen].t, &pr[nopen].h,
                          err) != LSM_OK)
            break;
        db_probe_note(pr[nopen].f, pr[nopen].t, hash, nopen == np - 1);
    }
    err[0] = '\0';
    file_meta *first = NULL;    /* the first table probed, charged if it was probed in vain */
    int first_level = 0, probes = 0;
    /* Only probes that got past a table's bloom filter cost a block read: those are counted. */
    for (int j = 0; j < np && !found && rc == LSM_OK; j++) {
        db_probe *p = &pr[j];
        if (j >= nopen && (rc = db_table_open(db, p->f->number, p->f->size, &p->t, &p->h, err)))
            break;
        if (!sst_may_contain_hash(p->t, hash))
            continue;
        rc = sst_get(p->t, key, klen, rv.snap, &found, &type, val, vlen, err);
        if (probes++ == 0) {
            first = p->f;
            first_level = p->level;
        }
    }
    for (int j = 0; j < np; j++)
        if (pr[j].h)
            cache_release(db->tcache, pr[j].h);
    if (pr != stack)
        free(pr);
    if (probes >= 2 && db->opt.background_compaction)
        db_charge_seek(db, first, first_level);
    if (rc != LSM_OK)
        return rc;
    if (!found || type == LSM_TYPE_DELETE)
        return LSM_NOTFOUND;
    *vtype = type;
    return LSM_OK;
}

int lsm_get(lsm_db *db, const void *key, size_t klen, void **val, size_t *vlen)
{
    if (!db || !val || !vlen)
        return LSM_INVALID;
    *val = NULL;
    *vlen = 0;
    if (db_check_key(db, key, klen) != LSM_OK)
        return LSM_INVALID;
    char err[LSM_ERRLEN] = "";
    int type = LSM_TYPE_VALUE;
    read_view rv;
    int rc = db_lookup(db, &rv, key, klen, val, vlen, &type, err);
    if (rc == LSM_OK && type == LSM_TYPE_BLOB) {
        rc = db_blob_resolve(db, val, vlen, err);
        if (rc != LSM_OK) {
            free(*val);
            *val = NULL;
            *vlen = 0;
        }
    }
    db_view_put(&rv);
    return db_fail(db, rc, err);
}

int lsm_get_size(lsm_db *db, const void *key, size_t klen, uint64_t *vlen)
{
    return lsm_get_range(db, key, klen, 0, NULL, 0, NULL, vlen);
}

int lsm_get_range(lsm_db *db, const void *key, size_t klen, uint64_t off, void *buf, size_t n,
                  size_t *nread, uint64_t *vlen)
{
    if (!db || (n && !buf))
        return LSM_INVALID;
    if (nread)
        *nread = 0;
    if (vlen)
        *vlen = 0;
    if (db_check_key(db, key, klen) != LSM_OK)
        return LSM_INVALID;
    char err[LSM_ERRLEN] = "";
    void *v = NULL;
    size_t len = 0;
    int type = LSM_TYPE_VALUE;
    read_view rv;
    int rc = db_lookup(db, &rv, key, klen, &v, &len, &type, err);
    if (rc == LSM_OK) {
        uint64_t full = len, m = 0;
        if (type == LSM_TYPE_BLOB) {
            uint64_t number, boff;
            rc = db_blob_ref(db, (slice){ v, len }, &number, &boff, &full, err);
            m = off < full ? (full - off < n ? full - off : n) : 0;
            if (rc == LSM_OK && m)
                rc = db_blob_read(db, (slice){ v, len }, off, buf, (size_t)m, &full, err);
        } else {
            m = off < full ? (full - off < n ? full - off : n) : 0;
            if (m)
                memcpy(buf, (uint8_t *)v + off, (size_t)m);
        }
        if (rc == LSM_OK) {
            if (nread)
                *nread = (size_t)m;
            if (vlen)
                *vlen = full;
        }
    }
    db_view_put(&rv);
    free(v);
    return db_fail(db, rc, err);
}

/* ---------- file-list iterator (a sorted, disjoint run of tables: one level, or part of it) ---------- */

typedef struct files_iter {
    iiter base;
    lsm_db *db;
    file_meta **files;          /* copy of the array; the metas are pinned by the owner's version */
    int n;
    int idx;                    /* file index of cur */
    iiter *cur;                 /* iterator of files[idx], or NULL */
    cache_handle *h;            /* table cache handle of files[idx] */
    int rc;
    char err[LSM_ERRLEN];
} files_iter;

static void files_iter_close_file(files_iter *fi)
{
    iiter_free(fi->cur);
    fi->cur = NULL;
    cache_release(fi->db->tcache, fi->h);
    fi->h = NULL;
}

static void files_iter_open_file(files_iter *fi, int idx)
{
    files_iter_close_file(fi);
    fi->idx = idx;
    if (idx >= fi->n || fi->rc != LSM_OK)
        return;
    const file_meta *f = fi->files[idx];
    sst *t;
    fi->rc = db_table_open(fi->db, f->number, f->size, &t, &fi->h, fi->err);
    if (fi->rc == LSM_OK)
        fi->cur = sst_iter_new(t);
}

/* Moves forward past exhausted files; stops (without skipping) at a file that failed. */
static void files_iter_skip_empty(files_iter *fi)
{
    while (fi->cur && !iiter_valid(fi->cur)) {
        fi->rc = iiter_status(fi->cur, fi->err);
        if (fi->rc != LSM_OK)
            return;
        files_iter_open_file(fi, fi->idx + 1);
        if (fi->cur)
            iiter_seek_first(fi->cur);
    }
}

static void files_iter_seek(iiter *it, slice k)
{
    files_iter *fi = (files_iter *)it;
    int lo = files_find(fi->files, fi->n, k);
    if (lo != fi->idx || !fi->cur)
        files_iter_open_file(fi, lo);
    if (fi->cur)
        iiter_seek(fi->cur, k);
    files_iter_skip_empty(fi);
}

static void files_iter_seek_first(iiter *it)
{
    files_iter *fi = (files_iter *)it;
    files_iter_open_file(fi, 0);
    if (fi->cur)
        iiter_seek_first(fi->cur);
    files_iter_skip_empty(fi);
}

static int files_iter_valid(const iiter *it)
{
    const files_iter *fi = (const files_iter *)it;
    return fi->rc == LSM_OK && fi->cur && iiter_valid(fi->cur);
}

static void files_iter_next(iiter *it)
{
    files_iter *fi = (files_iter *)it;
    iiter_next(fi->cur);
    files_iter_skip_empty(fi);
}

static slice files_iter_key(const iiter *it) { return iiter_key(((const files_iter *)it)->cur); }
static slice files_iter_value(const iiter *it) { return iiter_value(((const files_iter *)it)->cur); }

static int files_iter_status(const iiter *it, char *err)
{
    const files_iter *fi = (const files_iter *)it;
    if (fi->rc != LSM_OK)
        return err_set(err, fi->rc, "%s", fi->err);
    return fi->cur ? iiter_status(fi->cur, err) : LSM_OK;
}

static void files_iter_free(iiter *it)
{
    files_iter *fi = (files_iter *)it;
    files_iter_close_file(fi);
    free(fi->files);
    free(fi);
}

static const iiter_ops files_iter_ops = {
    files_iter_seek, files_iter_seek_first, files_iter_valid, files_iter_next,
    files_iter_key, files_iter_value, files_iter_status, files_iter_free,
};

iiter *db_files_iter_new(lsm_db *db, file_meta *const *files, int n)
{
    files_iter *fi = xcalloc(1, sizeof *fi);
    fi->base.ops = &files_iter_ops;
    fi->db = db;
    fi->files = xmalloc((size_t)(n ? n : 1) * sizeof *fi->files);
    memcpy(fi->files, files, (size_t)n * sizeof *files);
    fi->n = n;
    fi->idx = n;
    return &fi->base;
}

/* Iterator over one table, holding its table-cache handle. */
typedef struct table_iter {
    iiter base;
    lsm_db *db;
    iiter *in;
    cache_handle *h;
} table_iter;

static void ti_seek(iiter *it, slice k) { iiter_seek(((table_iter *)it)->in, k); }
static void ti_seek_first(iiter *it) { iiter_seek_first(((table_iter *)it)->in); }
static int ti_valid(const iiter *it) { return iiter_valid(((const table_iter *)it)->in); }
static void ti_next(iiter *it) { iiter_next(((table_iter *)it)->in); }
static slice ti_key(const iiter *it) { return iiter_key(((const table_iter *)it)->in); }
static slice ti_value(const iiter *it) { return iiter_value(((const table_iter *)it)->in); }
static int ti_status(const iiter *it, char *err) { return iiter_status(((const table_iter *)it)->in, err); }
static void ti_free(iiter *it)
{
    table_iter *ti = (table_iter *)it;
    iiter_free(ti->in);
    cache_release(ti->db->tcache, ti->h);
    free(ti);
}

static const iiter_ops table_iter_ops = {
    ti_seek, ti_seek_first, ti_valid, ti_next, ti_key, ti_value, ti_status, ti_free,
};

/* Iterator over table f (an error iterator if it cannot be opened). */
iiter *db_table_iter_new(lsm_db *db, const file_meta *f)
{
    char err[LSM_ERRLEN];
    sst *t;
    cache_handle *h;
    int rc = db_table_open(db, f->number, f->size, &t, &h, err);
    if (rc != LSM_OK)
        return error_iter_new(rc, err);
    table_iter *ti = xcalloc(1, sizeof *ti);
    ti->base.ops = &table_iter_ops;
    ti->db = db;
    ti->in = sst_iter_new(t);
    ti->h = h;
    return &ti->base;
}

/* ---------- user iterators ---------- */

/* Registers the snapshot of the iterator's pinned view (caller holds mu): nodes stay in sequence
   order, oldest first. */
static void lsm_iter_register(lsm_iter *it)
{
    lsm_db *db = it->db;
    it->snap.seq = it->rv.snap;
    it->snap.prev = db->snapshots.prev;
    it->snap.next = &db->snapshots;
    db->snapshots.prev->next = &it->snap;
    db->snapshots.prev = &it->snap;
}

static void lsm_iter_unregister(lsm_iter *it)
{
    it->snap.prev->next = it->snap.next;
    it->snap.next->prev = it->snap.prev;
}

/* Pins the current memtables and version and builds the merge over them (caller holds mu). */
static void lsm_iter_attach(lsm_iter *it)
{
    db_view_pin(it->db, &it->rv);
    lsm_iter_register(it);
}

static void lsm_iter_build(lsm_iter *it)
{
    lsm_db *db = it->db;
    version *v = it->rv.v;
    int n = 2 + v->nfiles[0] + LSM_MAX_LEVELS, k = 0;
    iiter **kids = xmalloc((size_t)n * sizeof *kids);
    kids[k++] = memtable_iter_new(it->rv.mem);
    if (it->rv.imm)
        kids[k++] = memtable_iter_new(it->rv.imm);
    for (int i = 0; i < v->nfiles[0]; i++)
        kids[k++] = db_table_iter_new(db, v->files[0][i]);
    for (int l = 1; l < LSM_MAX_LEVELS; l++)
        if (v->nfiles[l])
            kids[k++] = db_files_iter_new(db, v->files[l], v->nfiles[l]);
    it->m = merge_iter_new(kids, k);
    free(kids);
}

/* Releases what attach pinned (the caller has unregistered the snapshot). */
static void lsm_iter_release(lsm_iter *it)
{
    iiter_free(it->m);
    it->m = NULL;
    db_view_put(&it->rv);
}

int lsm_iter_new(lsm_db *db, lsm_iter **out)
{
    if (!db || !out)
        return LSM_INVALID;
    lsm_iter *it = xcalloc(1, sizeof *it);
    it->db = db;
    pthread_mutex_lock(&db->mu);
    lsm_iter_attach(it);
    pthread_mutex_unlock(&db->mu);
    lsm_iter_build(it);
    it->rng = (uint32_t)(uintptr_t)it ^ (uint32_t)it->snap.seq;
    it->sample_left = READ_SAMPLE_BYTES;
    *out = it;
    return LSM_OK;
}

void lsm_iter_set_upper_bound(lsm_iter *it, const void *key, size_t klen)
{
    if (!it)
        return;
    it->bound.len = 0;
    if (key && klen)
        buf_append(&it->bound, key, klen);
    it->valid = 0;
}

int lsm_iter_refresh(lsm_iter *it)
{
    if (!it)
        return LSM_INVALID;
    lsm_db *db = it->db;
    it->valid = 0;
    pthread_mutex_lock(&db->mu);
    lsm_iter_unregister(it);
    if (it->rc == LSM_OK && it->rv.mem == db->mem && it->rv.imm == db->imm && it->rv.v == db->vs.current) {
        /* Same sources: the memtable iterators see newer entries by themselves, so only the
           snapshot moves. This is what makes a refreshed iterator cheap. */
        it->rv.snap = db->last_seq;
        lsm_iter_register(it);
        pthread_mutex_unlock(&db->mu);
        return LSM_OK;
    }
    pthread_mutex_unlock(&db->mu);
    lsm_iter_release(it);
    it->rc = LSM_OK;
    pthread_mutex_lock(&db->mu);
    lsm_iter_attach(it);
    pthread_mutex_unlock(&db->mu);
    lsm_iter_build(it);
    return LSM_OK;
}

/* Advances the merge to the next visible user key, skipping versions newer than the snapshot,
   versions shadowed by a newer one, and deleted keys. */
static void lsm_iter_find_next(lsm_iter *it, int skipping)
{
    iiter *m = it->m;
    it->valid = 0;
    while (iiter_valid(m)) {
        slice k = iiter_key(m);
        if (k.n < LSM_TRAILER) {
            it->rc = db_fail(it->db, LSM_CORRUPT, "internal key shorter than its trailer");
            return;
        }
        if (it->bound.len && ukey_cmp(k.p, k.n - LSM_TRAILER, it->bound.p, it->bound.len) >= 0)
            return;     /* past the bound: stop here instead of walking over what lies beyond */
        it->sample_left -= (int64_t)(k.n + iiter_value(m).n);
        if (it->sample_left < 0 && it->db->opt.background_compaction)
            lsm_iter_sample(it, ikey_user(k));
        if (ikey_seq(k) <= it->snap.seq) {
            slice uk = ikey_user(k);
            if (!(skipping && ukey_cmp(uk.p, uk.n, it->key.p, it->key.len) == 0)) {
                it->key.len = 0;
                buf_append(&it->key, uk.p, uk.n);
                if (ikey_type(k) == LSM_TYPE_DELETE) {
                    skipping = 1;
                } else {
                    it->val = iiter_value(m);
                    it->val_is_blob = ikey_type(k) == LSM_TYPE_BLOB;
                    it->valid = 1;
                    return;
                }
            }
        }
        iiter_next(m);
    }
    char err[LSM_ERRLEN] = "";
    int rc = iiter_status(m, err);
    if (rc != LSM_OK)
        it->rc = db_fail(it->db, rc, err);
}

void lsm_iter_seek(lsm_iter *it, const void *key, size_t klen)
{
    if (!it || it->rc != LSM_OK)
        return;
    if (!key || klen == 0) {
        iiter_seek_first(it->m);
    } else {
        uint8_t stackbuf[256];
        buf t = { 0 };
        if (klen + LSM_TRAILER <= sizeof stackbuf) {
            t.p = stackbuf;
            t.cap = sizeof stackbuf;
        }
        ikey_build(&t, key, klen, it->snap.seq, 0xff);
        iiter_seek(it->m, (slice){ t.p, t.len });
        if (t.p != stackbuf)
            buf_free(&t);
    }
    lsm_iter_find_next(it, 0);
}

int lsm_iter_valid(const lsm_iter *it)
{
    return it && it->rc == LSM_OK && it->valid;
}

void lsm_iter_next(lsm_iter *it)
{
    if (!lsm_iter_valid(it))
        return;
    iiter_next(it->m);
    lsm_iter_find_next(it, 1);
}

const void *lsm_iter_key(const lsm_iter *it, size_t *klen)
{
    if (!lsm_iter_valid(it)) {
        if (klen)
            *klen = 0;
        return NULL;
    }
    if (klen)
        *klen = it->key.len;
    return it->key.p;
}

const void *lsm_iter_value(const lsm_iter *cit, size_t *vlen)
{
    /* Blob values are read only when asked for: a listing that wants keys never reads them. */
    lsm_iter *it = (lsm_iter *)cit;
    if (lsm_iter_valid(it) && it->val_is_blob) {
        uint64_t number, off, len;
        char err[LSM_ERRLEN] = "";
        int rc = db_blob_ref(it->db, it->val, &number, &off, &len, err);
        if (rc == LSM_OK) {
            it->blobval.len = 0;
            buf_reserve(&it->blobval, (size_t)len + 1);
            rc = db_blob_read(it->db, it->val, 0, it->blobval.p, (size_t)len, &len, err);
        }
        if (rc != LSM_OK) {
            it->rc = db_fail(it->db, rc, err);
        } else {
            it->val = (slice){ it->blobval.p, (size_t)len };
            it->val_is_blob = 0;
        }
    }
    if (!lsm_iter_valid(it)) {
        if (vlen)
            *vlen = 0;
        return NULL;
    }
    if (vlen)
        *vlen = it->val.n;
    return it->val.n ? it->val.p : (const void *)"";
}

int lsm_iter_status(const lsm_iter *it)
{
    return it ? it->rc : LSM_INVALID;
}

void lsm_iter_free(lsm_iter *it)
{
    if (!it)
        return;
    lsm_db *db = it->db;
    pthread_mutex_lock(&db->mu);
    lsm_iter_unregister(it);
    pthread_mutex_unlock(&db->mu);
    lsm_iter_release(it);
    buf_free(&it->key);
    buf_free(&it->bound);
    buf_free(&it->blobval);
    free(it);
}

/* ---------- open / close ---------- */

struct recover_state {
    lsm_db *db;
    memtable **mem;
    uint64_t max_seq;
    const char *path;
    char *err;
    version_edit *edit;
    uint64_t *bytes;
    char torn[4096];            /* an earlier log that ended in a torn tail, or "" */
    uint64_t torn_bytes;        /* the bytes it dropped */
};

/* Writes a memtable rebuilt from the logs as an L0 table added to edit. */
static int db_recover_flush(lsm_db *db, memtable *mem, version_edit *edit, uint64_t *bytes,
                            char *err)
{
    file_meta *f = NULL;
    int rc = db_write_table(db, mem, &f, bytes, err);
    if (f) {
        edit_add(edit, 0, f);
        file_meta_unref(f);
        atomic_fetch_add(&db->st_flushes, 1);
    }
    return rc;
}

static int db_recover_record(void *arg, const uint8_t *p, size_t n, uint64_t off)
{
    struct recover_state *st = arg;
    uint64_t last;
    if (st->torn[0])
        return err_set(st->err, LSM_CORRUPT,
                       "%s: its last %" PRIu64 " bytes are damaged although a newer log (%s) "
                       "holds writes", st->torn, st->torn_bytes, st->path);
    if (batch_apply(*st->mem, p, n, &last) != LSM_OK)
        return err_set(st->err, LSM_CORRUPT, "%s: offset %" PRIu64 ": malformed batch record",
                       st->path, off);
    if (n >= BATCH_HEADER && dec_fixed32(p + 8) > 0 && last > st->max_seq)
        st->max_seq = last;
    if (memtable_usage(*st->mem) >= st->db->opt.memtable_bytes) {
        /* Recovery flushes as it goes so a long log never needs more than one memtable. */
        int rc = db_recover_flush(st->db, *st->mem, st->edit, st->bytes, st->err);
        if (rc != LSM_OK)
            return rc;
        memtable_unref(*st->mem);
        *st->mem = memtable_new();
    }
    return LSM_OK;
}

/* Parses "NNNNNN.ext"; returns 1 and the number if name has that shape. */
static int db_parse_name(const char *name, const char *ext, uint64_t *num)
{
    size_t n = strlen(name), e = strlen(ext);
    if (n <= e || strcmp(name + n - e, ext) != 0)
        return 0;
    uint64_t v = 0;
    for (size_t i = 0; i < n - e; i++) {
        if (name[i] < '0' || name[i] > '9')
            return 0;
        v = v * 10 + (uint64_t)(name[i] - '0');
    }
    *num = v;
    return 1;
}

/* Replays every WAL at or after the manifest's log number into L0 tables added to edit. */
static int db_replay_logs(lsm_db *db, version_edit *edit, char *err)
{
    char **names = NULL;
    int n = 0;
    int e = db->env->list(db->env, db->dir, &names, &n);
    if (e < 0)
        return err_errno(err, e, "listing", db->dir);
    uint64_t *logs = xmalloc((size_t)(n + 1) * sizeof *logs);
    int nlogs = 0;
    for (int i = 0; i < n; i++) {
        uint64_t num;
        if (db_parse_name(names[i], ".log", &num)) {
            if (num >= db->vs.log_number)
                logs[nlogs++] = num;
            if (num >= db->vs.next_file)
                db->vs.next_file = num + 1;
        } else if ((db_parse_name(names[i], ".sst", &num) || db_parse_name(names[i], ".blob", &num)) &&
                   num >= db->vs.next_file) {
            db->vs.next_file = num + 1;
        }
    }
    env_free_list(names, n);
    qsort(logs, (size_t)nlogs, sizeof *logs, cmp_u64);

    memtable *mem = memtable_new();
    uint64_t bytes = 0;
    struct recover_state st = { .db = db, .mem = &mem, .max_seq = db->vs.last_seq, .err = err,
                                .edit = edit, .bytes = &bytes };
    int rc = LSM_OK;
    for (int i = 0; i < nlogs && rc == LSM_OK; i++) {
        char path[4096];
        uint64_t dropped = 0;
        db_log_path(db, logs[i], path, sizeof path);
        st.path = path;
        rc = log_replay(db->env, path, WAL_MAGIC, db_recover_record, &st, &dropped, err);
        /* A torn tail is normal only in the log that was live at the crash. An older log was
           sealed before a newer one received writes, so a torn tail there is damage, once a
           newer log shows writes. Newer logs without records were made by an open that crashed
           before its manifest edit (it replays the torn log, makes a new log, and only then
           retires the old one); they are no evidence. */
        if (rc == LSM_OK && dropped && !st.torn[0]) {
            snprintf(st.torn, sizeof st.torn, "%s", path);
            st.torn_bytes = dropped;
        }
    }
    free(logs);
    if (rc == LSM_OK && memtable_entries(mem) > 0)
        rc = db_recover_flush(db, mem, edit, &bytes, err);
    memtable_unref(mem);
    atomic_fetch_add(&db->st_flush_bytes, bytes);
    if (rc == LSM_OK && edit->nadded)
        rc = db_sync_dir(db, err);
    db->last_seq = st.max_seq;
    return rc;
}

/* Deletes every file of ours that the current state does not need. */
static void db_remove_obsolete(lsm_db *db)
{
    char **names = NULL;
    int n = 0;
    if (db->env->list(db->env, db->dir, &names, &n) < 0)
        return;
    version *v = db->vs.current;
    for (int i = 0; i < n; i++) {
        uint64_t num;
        int drop = 0;
        if (db_parse_name(names[i], ".log", &num)) {
            drop = num != db->wal_number;
        } else if (db_parse_name(names[i], ".sst", &num)) {
            drop = 1;
            for (int l = 0; l < LSM_MAX_LEVELS && drop; l++)
                for (int j = 0; j < v->nfiles[l] && drop; j++)
                    drop = v->files[l][j]->number != num;
        } else if (db_parse_name(names[i], ".blob", &num)) {
            pthread_mutex_lock(&db->blob_mu);
            struct blob_ref_count *b = db_blob_slot(db, num, 0);
            drop = !b || b->refs == 0;
            pthread_mutex_unlock(&db->blob_mu);
            if (!drop) {
                char path[4096];
                uint64_t size;
                snprintf(path, sizeof path, "%s/%s", db->dir, names[i]);
                env_file_size(db->env, path, &size);
                pthread_mutex_lock(&db->blob_mu);
                b->size = size;
                pthread_mutex_unlock(&db->blob_mu);
            }
        } else if (strncmp(names[i], "MANIFEST-", 9) == 0) {
            drop = strtoull(names[i] + 9, NULL, 10) != db->vs.manifest_number;
        } else {
            size_t len = strlen(names[i]);
            drop = len > 4 && strcmp(names[i] + len - 4, ".tmp") == 0;
        }
        if (drop) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", db->dir, names[i]);
            db->env->unlink(db->env, path);
        }
    }
    env_free_list(names, n);
}

/* With CURRENT missing: the name of a file that may hold data (a table, a blob file, a log longer
   than its header), so open refuses instead of starting an empty database beside it; NULL if
   none. */
static char *db_find_orphan_data(lsm_db *db)
{
    char **names = NULL, *found = NULL;
    int n = 0;
    if (db->env->list(db->env, db->dir, &names, &n) < 0)
        return NULL;
    for (int i = 0; i < n && !found; i++) {
        uint64_t num, size = 0;
        if (db_parse_name(names[i], ".sst", &num) || db_parse_name(names[i], ".blob", &num)) {
            found = xmemdup(names[i], strlen(names[i]) + 1);
        } else if (db_parse_name(names[i], ".log", &num)) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", db->dir, names[i]);
            env_file_size(db->env, path, &size);
            if (size > LOG_HEADER)
                found = xmemdup(names[i], strlen(names[i]) + 1);
        }
    }
    env_free_list(names, n);
    return found;
}

/* Checks that every table the version names exists, so a lost file is reported at open. */
static int db_check_tables(lsm_db *db, char *err)
{
    version *v = db->vs.current;
    for (int l = 0; l < LSM_MAX_LEVELS; l++)
        for (int j = 0; j < v->nfiles[l]; j++) {
            char path[4096];
            db_table_path(db, v->files[l][j]->number, path, sizeof path);
            int e = db->env->file_exists(db->env, path);
            if (e == 0)
                return err_set(err, LSM_CORRUPT, "%s: missing table named by the manifest", path);
            if (e < 0)
                return err_errno(err, e, "checking", path);
        }
    return LSM_OK;
}

/* Tells the flush thread and the db->nthreads compaction threads to stop, and waits for them (a
   running compaction finishes first). */
static void db_stop_threads(lsm_db *db)
{
    pthread_mutex_lock(&db->mu);
    db->shutting_down = 1;
    pthread_cond_broadcast(&db->work_cv);
    pthread_cond_broadcast(&db->compact_cv);
    pthread_mutex_unlock(&db->mu);
    pthread_join(db->flush_thread, NULL);
    for (int i = 0; i < db->nthreads; i++)
        pthread_join(db->compact_thread[i], NULL);
}

static void db_free(lsm_db *db)
{
    file_meta_unref(db->seek_file);
    memtable_unref(db->mem);
    memtable_unref(db->imm);
    logw_close(db->wal, NULL);
    vset_close(&db->vs);
    cache_free(db->tcache);
    cache_free(db->bfcache);
    cache_free(db->bcache);
    free(db->blobs);
    if (db->lock)
        db->env->unlock(db->env, db->lock);
    buf_free(&db->group);
    for (int l = 0; l < LSM_MAX_LEVELS; l++)
        buf_free(&db->compact_pointer[l]);
    pthread_mutex_destroy(&db->mu);
    pthread_mutex_destroy(&db->manifest_mu);
    pthread_mutex_destroy(&db->errmu);
    pthread_mutex_destroy(&db->blob_mu);
    pthread_cond_destroy(&db->bg_cv);
    pthread_cond_destroy(&db->work_cv);
    pthread_cond_destroy(&db->compact_cv);
    free(db->dir);
    free(db);
}

int lsm_open(const char *dir, const lsm_options *opt, lsm_db **out)
{
    char *err = tl_open_err;
    err[0] = 0;
    if (!out)
        return err_set(err, LSM_INVALID, "lsm_open: out is NULL");
    *out = NULL;
    if (!dir || !*dir)
        return err_set(err, LSM_INVALID, "lsm_open: no directory given");

    lsm_db *db = xcalloc(1, sizeof *db);
    if (opt)
        db->opt = *opt;
    else
        options_defaults(&db->opt);
    int rc = options_sanitize(&db->opt, err);
    if (rc != LSM_OK) {
        free(db);
        return rc;
    }
    db->env = db->opt.env ? db->opt.env : env_posix();
    db->dir = xmemdup(dir, strlen(dir) + 1);
    pthread_mutex_init(&db->mu, NULL);
    pthread_mutex_init(&db->manifest_mu, NULL);
    pthread_mutex_init(&db->errmu, NULL);
    pthread_mutex_init(&db->blob_mu, NULL);
    pthread_cond_init(&db->bg_cv, NULL);
    pthread_cond_init(&db->work_cv, NULL);
    pthread_cond_init(&db->compact_cv, NULL);
    db->snapshots.next = db->snapshots.prev = &db->snapshots;
    db->vs.env = db->env;
    db->vs.dir = db->dir;
    db->vs.db_mu = &db->mu;
    db->vs.drop = db_drop_table;
    db->vs.add = db_add_table;
    db->vs.drop_arg = db;

    int e = db->env->file_exists(db->env, dir);
    if (e == 0 && !db->opt.create_if_missing) {
        rc = err_set(err, LSM_INVALID, "%s: no such directory (create_if_missing is off)", dir);
        goto fail;
    }
    if (e == 0) {
        e = db->env->mkdir(db->env, dir);
        if (e < 0 && e != -EEXIST) {
            rc = err_errno(err, e, "creating directory", dir);
            goto fail;
        }
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/LOCK", dir);
    long holder = 0;
    e = db->env->lock(db->env, path, &db->lock, &holder);
    if (e < 0) {
        db->lock = NULL;
        if (e == -EWOULDBLOCK || e == -EAGAIN) {
            if (holder > 0)
                rc = err_set(err, LSM_BUSY, "%s: held by another handle or process (pid %ld)", path, holder);
            else
                rc = err_set(err, LSM_BUSY, "%s: held by another handle or process", path);
        } else {
            rc = err_errno(err, e, "locking", path);
        }
        goto fail;
    }
    db->bcache = cache_new(db->opt.cache_bytes);
    db->tcache = cache_new((size_t)db->opt.max_open_files);
    db->bfcache = cache_new((size_t)db->opt.max_open_files / 4 + 16);

    rc = vset_recover(&db->vs, err);
    if (rc == LSM_NOTFOUND) {
        char *orphan = db_find_orphan_data(db);
        if (orphan) {
            rc = err_set(err, LSM_CORRUPT,
                         "%s/CURRENT: missing, but the directory holds database files (%s); "
                         "refusing to start an empty database over them", dir, orphan);
            free(orphan);
            goto fail;
        }
        if (!db->opt.create_if_missing) {
            rc = err_set(err, LSM_INVALID, "%s: no database here (create_if_missing is off)", dir);
            goto fail;
        }
        version *v = xcalloc(1, sizeof *v);
        atomic_init(&v->refs, 1);
        v->vs = &db->vs;
        db->vs.current = v;
        db->vs.next_file = 2;
        rc = LSM_OK;
    } else if (rc != LSM_OK) {
        goto fail;
    } else if (db->opt.error_if_exists) {
        rc = err_set(err, LSM_EXISTS, "%s: a database exists here (error_if_exists is set)", dir);
        goto fail;
    }
    if ((rc = db_check_tables(db, err)) != LSM_OK)
        goto fail;
    for (int l = 0; l < LSM_MAX_LEVELS; l++)
        for (int j = 0; j < db->vs.current->nfiles[l]; j++)
            db_add_table(db, db->vs.current->files[l][j]);

    version_edit edit;
    edit_init(&edit);
    rc = db_replay_logs(db, &edit, err);
    if (rc == LSM_OK) {
        db->wal_number = db->vs.next_file++;
        rc = db_new_wal(db, db->wal_number, &db->wal, err);
    }
    if (rc == LSM_OK)
        rc = vset_write_snapshot(&db->vs, err);
    if (rc == LSM_OK) {
        edit.has_log_number = 1;
        edit.log_number = db->wal_number;
        edit.has_last_seq = 1;
        edit.last_seq = db->last_seq;
        rc = vset_apply(&db->vs, &edit, err);
    }
    edit_free(&edit);
    if (rc != LSM_OK)
        goto fail;
    db_remove_obsolete(db);

    db->mem = memtable_new();
    if (thread_start(&db->flush_thread, db_flush_main, db) != 0) {
        rc = err_set(err, LSM_NOMEM, "cannot start the flush thread");
        goto fail;
    }
    for (; db->nthreads < COMPACT_THREADS; db->nthreads++)
        if (thread_start(&db->compact_thread[db->nthreads], compact_thread_main, db) != 0) {
            db_stop_threads(db);
            rc = err_set(err, LSM_NOMEM, "cannot start a compaction thread");
            goto fail;
        }
    db->threads_started = 1;
    *out = db;
    return LSM_OK;

fail:
    db_free(db);
    return rc;
}

int lsm_close(lsm_db *db)
{
    if (!db)
        return LSM_OK;
    char err[LSM_ERRLEN] = "";
    if (db->threads_started)
        db_stop_threads(db);
    int rc = db->bg_error;
    if (rc == LSM_OK && db->wal)
        rc = logw_seal(db->wal, err);
    db_free(db);
    return rc;
}

/* ---------- stats ---------- */

int lsm_stats_get(lsm_db *db, lsm_stats *out, size_t size)
{
    if (!db || !out)
        return LSM_INVALID;
    lsm_stats full, *st = &full;
    memset(st, 0, sizeof *st);
    pthread_mutex_lock(&db->mu);
    version *v = db->vs.current;
    version_ref(v);
    st->last_sequence = db->last_seq;
    st->memtable_bytes = memtable_usage(db->mem);
    uint64_t wal = db->wal ? logw_size(db->wal) : 0;
    pthread_mutex_unlock(&db->mu);
    for (int l = 0; l < LSM_MAX_LEVELS; l++) {
        st->tables[l] = v->nfiles[l];
        st->level_bytes[l] = version_level_bytes(v, l);
        st->disk_bytes += st->level_bytes[l];
    }
    st->pending_compaction_bytes = compact_pending_bytes(db, v);
    version_unref(v);
    st->disk_bytes += wal;
    st->user_bytes_written = atomic_load(&db->st_user_bytes);
    st->wal_bytes_written = atomic_load(&db->st_wal_bytes);
    st->flush_bytes_written = atomic_load(&db->st_flush_bytes);
    st->compaction_bytes_written = atomic_load(&db->st_compact_bytes);
    st->compaction_bytes_read = atomic_load(&db->st_compact_read);
    st->stall_micros = atomic_load(&db->st_stall_micros);
    st->flushes = atomic_load(&db->st_flushes);
    st->compactions = atomic_load(&db->st_compactions);
    st->compactions_parallel = atomic_load(&db->st_compactions_parallel);
    st->compactions_split = atomic_load(&db->st_compactions_split);
    st->compactions_grouped = atomic_load(&db->st_compactions_grouped);
    cache_stats(db->bcache, &st->cache_hits, &st->cache_misses);
    st->blob_bytes_written = atomic_load(&db->st_blob_bytes);
    pthread_mutex_lock(&db->blob_mu);
    for (int i = 0; i < db->nblobs; i++)
        if (db->blobs[i].refs > 0)
            st->blob_bytes_live += db->blobs[i].size;
    pthread_mutex_unlock(&db->blob_mu);
    st->disk_bytes += st->blob_bytes_live;
    memcpy(out, st, size < sizeof *st ? size : sizeof *st);
    return LSM_OK;
}

const char *lsm_version(void)
{
    return LSM_VERSION_STRING;
}
