/*
 * check.c — lsm_check: reads every byte the database depends on and verifies every checksum —
 * each block of each live table, each chunk of each value the tables keep in blob files, the
 * manifest and the logs recovery would replay — and reports each damaged file with what is wrong
 * and the range of keys it covers, so that an operator knows what is at stake before repairing.
 *
 * The value checks (value_verify, value_files) serve lsm_repair and lsm_checkpoint too. It reads
 * through its own table handles without the block cache, so that a block cached before
 * the damage happened cannot hide it, and it pins one version for the whole run, so compactions
 * may go on meanwhile (a table they retire stays on disk until the check lets it go). It never
 * writes, and never stops at the first damage: each file is reported once, with the first
 * problem found in it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "db_impl.h"
#include "extent.h"
#include "sst.h"

typedef struct check_state {
    lsm_db *db;
    lsm_check_fn report;
    void *arg;
    int damaged;                /* files reported */
    struct blob_damage {        /* blob files found damaged, reported at the end */
        uint64_t number;
        char what[LSM_ERRLEN];
        buf lo, hi;             /* user keys whose values failed */
    } *blobs;
    int nblobs;
} check_state;

static void check_report(check_state *cs, const char *file, const char *what, slice lo, slice hi)
{
    cs->damaged++;
    if (cs->report)
        cs->report(cs->arg, file, what, lo.p, lo.n, hi.p, hi.n);
}

static const slice no_key = { NULL, 0 };

/* Notes that the value of user key k in blob file number could not be read. */
static void check_blob_damage(check_state *cs, uint64_t number, slice k, const char *what)
{
    struct blob_damage *d = NULL;
    for (int i = 0; i < cs->nblobs && !d; i++)
        if (cs->blobs[i].number == number)
            d = &cs->blobs[i];
    if (!d) {
        cs->blobs = xrealloc(cs->blobs, (size_t)(cs->nblobs + 1) * sizeof *cs->blobs);
        d = &cs->blobs[cs->nblobs++];
        memset(d, 0, sizeof *d);
        d->number = number;
        snprintf(d->what, sizeof d->what, "%s", what);
        buf_append(&d->lo, k.p, k.n);
    }
    d->hi.len = 0;
    buf_append(&d->hi, k.p, k.n);
}

int value_files(const blob_set *bs, int type, slice v, uint64_t **nums)
{
    *nums = NULL;
    if (type == LSM_TYPE_BLOB) {
        uint64_t number, off, len;
        char err[LSM_ERRLEN];
        if (blob_set_ref_decode(bs, v, &number, &off, &len, err) != LSM_OK)
            return 0;
        *nums = xmalloc(sizeof **nums);
        **nums = number;
        return 1;
    }
    if (type != LSM_TYPE_EXTENTS)
        return 0;
    extent_map m = { 0 };
    int n = extent_map_decode(v, &m) == 0 ? extent_map_files(&m, nums) : 0;
    extent_map_free(&m);
    return n;
}

/* Reads [start, start + len) of record (off, rlen) of blob file number, a chunk at a time. */
static int value_verify_record(blob_set *bs, uint64_t number, uint64_t off, uint64_t rlen,
                               uint64_t start, uint64_t len, uint8_t *piece, char *err)
{
    for (uint64_t pos = 0; pos < len; pos += BLOB_CHUNK) {
        size_t n = len - pos < BLOB_CHUNK ? (size_t)(len - pos) : BLOB_CHUNK;
        int rc = blob_set_read_record(bs, number, off, rlen, start + pos, piece, n, err);
        if (rc != LSM_OK)
            return rc;
    }
    return LSM_OK;
}

int value_verify(blob_set *bs, int type, slice v, uint64_t *bad_file, char *err)
{
    *bad_file = 0;
    if (type != LSM_TYPE_BLOB && type != LSM_TYPE_EXTENTS)
        return LSM_OK;
    uint8_t *piece = xmalloc(BLOB_CHUNK);
    int rc = LSM_OK;
    if (type == LSM_TYPE_BLOB) {
        uint64_t number, off, len;
        rc = blob_set_ref_decode(bs, v, &number, &off, &len, err);
        if (rc == LSM_OK) {
            /* a blob value is one whole record */
            for (uint64_t pos = 0; pos < len && rc == LSM_OK; pos += BLOB_CHUNK) {
                size_t n = len - pos < BLOB_CHUNK ? (size_t)(len - pos) : BLOB_CHUNK;
                uint64_t full;
                rc = blob_set_read(bs, v, pos, piece, n, &full, err);
            }
            if (rc != LSM_OK)
                *bad_file = number;
        }
    } else {
        extent_map m = { 0 };
        if (extent_map_decode(v, &m) != 0)
            rc = err_set(err, LSM_CORRUPT, "malformed extent map in %s", bs->dir);
        for (size_t i = 0; i < m.n && rc == LSM_OK; i++) {
            const extent *e = &m.v[i];
            rc = value_verify_record(bs, e->file, e->rec_off, e->rec_len, e->start, e->len, piece,
                                     err);
            if (rc != LSM_OK)
                *bad_file = e->file;
        }
        extent_map_free(&m);
    }
    free(piece);
    return rc;
}

/* Reads every chunk of blob file data the value of user key k uses. */
static void check_value(check_state *cs, slice k, int type, slice v)
{
    char err[LSM_ERRLEN] = "";
    uint64_t bad = 0;
    if (value_verify(&cs->db->blobs, type, v, &bad, err) != LSM_OK && bad)
        check_blob_damage(cs, bad, k, err);
}

/* Reads table f entry by entry, checking order, its key range and its blob values. */
static void check_table(check_state *cs, const file_meta *f)
{
    lsm_db *db = cs->db;
    char path[4096], err[LSM_ERRLEN] = "";
    file_path(db->dir, f->number, ".sst", path, sizeof path);
    slice lo = file_meta_lo(f), hi = file_meta_hi(f);
    sst *t = NULL;
    int rc = sst_open(db->env, path, f->size, NULL, &t, err);
    if (rc != LSM_OK) {
        check_report(cs, path, err, lo, hi);
        return;
    }
    iiter *it = sst_iter_new(t);
    buf prev = { 0 };
    uint64_t n = 0;
    slice fs = { f->smallest.p, f->smallest.len }, fl = { f->largest.p, f->largest.len };
    for (iiter_seek_first(it); iiter_valid(it) && rc == LSM_OK; iiter_next(it)) {
        slice k = iiter_key(it);
        if (k.n < LSM_TRAILER) {
            rc = err_set(err, LSM_CORRUPT, "%s: entry %" PRIu64 ": key shorter than its trailer",
                         path, n);
            break;
        }
        if (prev.len && ikey_cmp((slice){ prev.p, prev.len }, k) >= 0)
            rc = err_set(err, LSM_CORRUPT, "%s: entry %" PRIu64 ": keys out of order", path, n);
        else if (ikey_cmp(k, fs) < 0 || ikey_cmp(k, fl) > 0)
            rc = err_set(err, LSM_CORRUPT, "%s: entry %" PRIu64 ": key outside the range the "
                         "manifest records for the table", path, n);
        else if (ikey_type(k) == LSM_TYPE_BLOB || ikey_type(k) == LSM_TYPE_EXTENTS)
            check_value(cs, ikey_user(k), ikey_type(k), iiter_value(it));
        prev.len = 0;
        buf_append(&prev, k.p, k.n);
        n++;
    }
    if (rc == LSM_OK)
        rc = iiter_status(it, err);
    if (rc == LSM_OK && n != sst_entries(t))
        rc = err_set(err, LSM_CORRUPT, "%s: %" PRIu64 " entries read, the table says %" PRIu64,
                     path, n, sst_entries(t));
    if (rc != LSM_OK)
        check_report(cs, path, err, lo, hi);
    iiter_free(it);
    sst_close(t);
    buf_free(&prev);
}

static int check_noop_record(void *arg, const uint8_t *p, size_t n, uint64_t off)
{
    return LSM_OK;
}

/* Replays a record log for its checksums only. A torn tail is what a crash leaves (or a writer
   appending now), not damage. */
static void check_log(check_state *cs, const char *path, const char *magic)
{
    char err[LSM_ERRLEN] = "";
    uint64_t dropped = 0;
    int rc = log_replay(cs->db->env, path, magic, check_noop_record, NULL, &dropped, err);
    if (rc != LSM_OK && cs->db->env->file_exists(cs->db->env, path) != 0)
        check_report(cs, path, err, no_key, no_key);
}

static int check_run(check_state *cs)
{
    lsm_db *db = cs->db;
    pthread_mutex_lock(&db->mu);
    version *v = db->vs.current;
    version_ref(v);
    pthread_mutex_unlock(&db->mu);
    pthread_mutex_lock(&db->manifest_mu);
    uint64_t manifest = db->vs.manifest_number, log_number = db->vs.log_number;
    pthread_mutex_unlock(&db->manifest_mu);

    for (int l = 0; l < LSM_MAX_LEVELS; l++)
        for (int i = 0; i < v->nfiles[l]; i++)
            check_table(cs, v->files[l][i]);
    for (int i = 0; i < cs->nblobs; i++) {
        struct blob_damage *d = &cs->blobs[i];
        char path[4096];
        file_path(db->dir, d->number, ".blob", path, sizeof path);
        check_report(cs, path, d->what, (slice){ d->lo.p, d->lo.len },
                     (slice){ d->hi.p, d->hi.len });
        buf_free(&d->lo);
        buf_free(&d->hi);
    }
    free(cs->blobs);
    version_unref(v);

    char path[4096];
    snprintf(path, sizeof path, "%s/MANIFEST-%06" PRIu64, db->dir, manifest);
    check_log(cs, path, MANIFEST_MAGIC);
    char **names = NULL;
    int n = 0;
    int e = db->env->list(db->env, db->dir, &names, &n);
    if (e < 0) {
        char err[LSM_ERRLEN];
        err_errno(err, e, "listing", db->dir);
        check_report(cs, db->dir, err, no_key, no_key);
        return LSM_CORRUPT;
    }
    uint64_t *logs = xmalloc((size_t)(n + 1) * sizeof *logs);
    int nlogs = 0;
    for (int i = 0; i < n; i++) {
        uint64_t num;
        if (file_parse_name(names[i], ".log", &num) && num >= log_number)
            logs[nlogs++] = num;
    }
    env_free_list(names, n);
    qsort(logs, (size_t)nlogs, sizeof *logs, u64_cmp);
    for (int i = 0; i < nlogs; i++) {
        file_path(db->dir, logs[i], ".log", path, sizeof path);
        check_log(cs, path, WAL_MAGIC);
    }
    free(logs);
    return cs->damaged ? LSM_CORRUPT : LSM_OK;
}

int lsm_check(lsm_db *db, lsm_check_fn report, void *arg)
{
    if (!db)
        return LSM_INVALID;
    check_state cs = { .db = db, .report = report, .arg = arg };
    int rc = check_run(&cs);
    if (rc == LSM_CORRUPT) {
        char msg[128];
        snprintf(msg, sizeof msg, "lsm_check: %d damaged file%s", cs.damaged,
                 cs.damaged == 1 ? "" : "s");
        return db_fail(db, rc, msg);
    }
    return rc;
}
