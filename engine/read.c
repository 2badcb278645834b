/*
 * read.c — point reads: pinning what a read sees (a read view), and lsm_get, lsm_get_size and
 * lsm_get_range (now, or at a snapshot handle: lsm_get_at, lsm_get_range_at) over the memtables
 * and then the tables; and lsm_approximate_size, which asks the tables' indexes.
 *
 * A read takes its view (memtables, version, last sequence) under db->mu and searches without it:
 * the live memtable, the one being flushed, then the version's tables through the table cache,
 * which goes down to each table once. A value kept in a blob file is read only after the lookup,
 * while the view still pins the version that keeps the blob file alive. A lookup that had to probe
 * two tables past their filters charges the first a wasted seek (compact_pick.c decides what that
 * leads to). It must never return a version newer than its view, nor a value whose checksum
 * failed.
 */
#include <stdlib.h>
#include <string.h>
#include "db_impl.h"
#include "extent.h"

/* Pins what a read sees now (caller holds mu). */
void read_view_pin(lsm_db *db, read_view *rv)
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

/* Pins what a read sees now, taking mu; at snapshot s (may be NULL) the sources are today's,
   looked at with s's sequence, since compaction keeps every version s can see. */
static void read_view_get(lsm_db *db, const lsm_snapshot *s, read_view *rv)
{
    pthread_mutex_lock(&db->mu);
    read_view_pin(db, rv);
    pthread_mutex_unlock(&db->mu);
    if (s)
        rv->snap = s->node.seq;
}

void read_view_put(read_view *rv)
{
    memtable_unref(rv->mem);
    memtable_unref(rv->imm);
    version_unref(rv->v);
    memset(rv, 0, sizeof *rv);
}

/* The core lookup: LSM_OK with the stored value taken as value_take says with r (r NULL: a
   malloc'd copy of it, which is a blob reference when *type is LSM_TYPE_BLOB), or LSM_NOTFOUND,
   or an error. The caller releases rv with read_view_put only after it has read any blob the value
   points to: the pinned version keeps the blob file alive. */
static int read_lookup(lsm_db *db, const lsm_snapshot *snap, read_view *rv, const void *key,
                       size_t klen, value_range *r, void **val, size_t *vlen, int *type, char *err)
{
    read_view_get(db, snap, rv);
    int found = 0, rc = LSM_OK;
    slice s;
    memtable *mts[2] = { rv->mem, rv->imm };
    for (int i = 0; i < 2 && !found; i++) {
        if (mts[i] && memtable_get(mts[i], key, klen, rv->snap, type, &s)) {
            found = 1;
            /* The entry stays in the memtable while rv pins it: only what r asks for is copied. */
            if ((*type == LSM_TYPE_VALUE || *type == LSM_TYPE_EXTENTS) &&
                value_take(r, s, *type, val, vlen) != 0)
                return err_set(err, LSM_NOMEM, "cannot allocate %zu bytes for a value", s.n);
        }
    }
    if (!found) {
        table_probe_stats ps;
        rc = table_cache_get(&db->tables, rv->v, key, klen, rv->snap, &found, type, r, val, vlen,
                             &ps, err);
        /* Two tables probed past their filters for one key: the first was searched in vain. */
        if (ps.probes >= 2 && db->opt.background_compaction)
            compact_charge_seek(db, ps.first, ps.first_level);
    }
    if (rc != LSM_OK)
        return rc;
    return found && *type != LSM_TYPE_DELETE ? LSM_OK : LSM_NOTFOUND;
}

int db_lookup(lsm_db *db, read_view *rv, const void *key, size_t klen, void **val, size_t *vlen,
              int *type, char *err)
{
    return read_lookup(db, NULL, rv, key, klen, NULL, val, vlen, type, err);
}

/* A read failed: a checksum failure is also reported to the handle's logger. */
static int read_fail(lsm_db *db, int rc, const char *err)
{
    if (rc == LSM_CORRUPT)
        db_log(db, LSM_LOG_ERROR, "read: %s", err);
    return db_fail(db, rc, err);
}

/* LSM_OK if snapshot s may be read through on db (s NULL: now). */
static int read_check_snapshot(lsm_db *db, const lsm_snapshot *s)
{
    if (s && s->db != db)
        return db_fail(db, LSM_INVALID, "the snapshot belongs to another handle");
    return LSM_OK;
}

int lsm_get(lsm_db *db, const void *key, size_t klen, void **val, size_t *vlen)
{
    return lsm_get_at(db, NULL, key, klen, val, vlen);
}

int lsm_get_at(lsm_db *db, const lsm_snapshot *snap, const void *key, size_t klen, void **val,
               size_t *vlen)
{
    if (!db || !val || !vlen)
        return LSM_INVALID;
    *val = NULL;
    *vlen = 0;
    if (db_check_key(db, key, klen) != LSM_OK || read_check_snapshot(db, snap) != LSM_OK)
        return LSM_INVALID;
    char err[LSM_ERRLEN] = "";
    int type = LSM_TYPE_VALUE;
    read_view rv;
    int rc = read_lookup(db, snap, &rv, key, klen, NULL, val, vlen, &type, err);
    if (rc == LSM_OK && (type == LSM_TYPE_BLOB || type == LSM_TYPE_EXTENTS)) {
        rc = type == LSM_TYPE_BLOB ? blob_set_resolve(&db->blobs, val, vlen, err)
                                   : extent_resolve(db, val, vlen, err);
        if (rc != LSM_OK) {
            free(*val);
            *val = NULL;
            *vlen = 0;
        }
    }
    read_view_put(&rv);
    return read_fail(db, rc, err);
}

int lsm_get_size(lsm_db *db, const void *key, size_t klen, uint64_t *vlen)
{
    return lsm_get_range(db, key, klen, 0, NULL, 0, NULL, vlen);
}

int lsm_get_range(lsm_db *db, const void *key, size_t klen, uint64_t off, void *buf, size_t n,
                  size_t *nread, uint64_t *vlen)
{
    return lsm_get_range_at(db, NULL, key, klen, off, buf, n, nread, vlen);
}

int lsm_get_range_at(lsm_db *db, const lsm_snapshot *snap, const void *key, size_t klen,
                     uint64_t off, void *buf, size_t n, size_t *nread, uint64_t *vlen)
{
    if (!db || (n && !buf))
        return LSM_INVALID;
    if (nread)
        *nread = 0;
    if (vlen)
        *vlen = 0;
    if (db_check_key(db, key, klen) != LSM_OK || read_check_snapshot(db, snap) != LSM_OK)
        return LSM_INVALID;
    char err[LSM_ERRLEN] = "";
    void *v = NULL;
    size_t len = 0;
    int type = LSM_TYPE_VALUE;
    read_view rv;
    /* A plain value gives only the range; a blob reference comes whole and the range is read
       from the blob file. Either way no more than the range is copied. */
    value_range r = { off, buf, n, 0 };
    int rc = read_lookup(db, snap, &rv, key, klen, &r, &v, &len, &type, err);
    uint64_t full = len, m = r.copied;
    if (rc == LSM_OK && type == LSM_TYPE_BLOB) {
        uint64_t number, boff;
        rc = blob_set_ref_decode(&db->blobs, (slice){ v, len }, &number, &boff, &full, err);
        m = off < full ? (full - off < n ? full - off : n) : 0;
        if (rc == LSM_OK && m)
            rc = blob_set_read(&db->blobs, (slice){ v, len }, off, buf, (size_t)m, &full, err);
    } else if (rc == LSM_OK && type == LSM_TYPE_EXTENTS) {
        /* A map: only the extents the range meets are read, holes are zeros. */
        rc = extent_read_range(db, (slice){ v, len }, off, buf, n, &m, &full, err);
    }
    if (rc == LSM_OK) {
        if (nread)
            *nread = (size_t)m;
        if (vlen)
            *vlen = full;
    }
    read_view_put(&rv);
    free(v);
    return read_fail(db, rc, err);
}

int lsm_approximate_size(lsm_db *db, const void *lo, size_t lon, const void *hi, size_t hin,
                         uint64_t *bytes)
{
    if (bytes)
        *bytes = 0;
    if (!db || !bytes || (lo && (lon == 0 || lon > LSM_MAX_KEY)) ||
        (hi && (hin == 0 || hin > LSM_MAX_KEY)))
        return db ? db_fail(db, LSM_INVALID, "lsm_approximate_size: bad bound") : LSM_INVALID;
    pthread_mutex_lock(&db->mu);
    version *v = db->vs.current;
    version_ref(v);
    pthread_mutex_unlock(&db->mu);
    char err[LSM_ERRLEN] = "";
    int rc = table_cache_approximate_size(&db->tables, v, (slice){ lo, lo ? lon : 0 },
                                          (slice){ hi, hi ? hin : 0 }, bytes, err);
    version_unref(v);
    return read_fail(db, rc, err);
}
