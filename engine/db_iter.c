/*
 * db_iter.c — lsm_iter: a snapshot iterator over the whole database; snapshot handles
 * (lsm_snapshot); and the list of live snapshots that tells compaction which old versions a reader
 * may still need.
 *
 * An iterator pins a read view and registers its sequence number in db->snapshots, then merges
 * every source (memtables, each L0 table, one run iterator per deeper level) and shows, per user
 * key, the newest version at or below its sequence, hiding deletes. Refreshing moves the snapshot
 * to now; when no flush or compaction happened since, only the sequence moves, since the memtable
 * iterators see newer entries by themselves. Every ~1 MiB read it samples how many tables hold the
 * current key, so that a read-mostly database compacts overlapping tables as a write-heavy one
 * would. It must never show an entry newer than its snapshot, and never let compaction drop a
 * version its snapshot can see (it stays registered until freed or refreshed).
 *
 * A snapshot handle is only a registered sequence number (LevelDB's GetSnapshot): it pins no
 * memtable, version or file, because compaction keeps every version a registered sequence can
 * see, and the blob files those versions name stay referenced by the tables that hold them. A
 * read at a snapshot pins the current sources for the read and looks at them with the snapshot's
 * sequence; an iterator made at one registers that older sequence itself, so the list stays in
 * sequence order (insertion walks back from the newest end).
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include "db_impl.h"
#include "extent.h"

struct lsm_iter {
    lsm_db *db;
    iiter *m;                   /* merge of every source */
    read_view rv;               /* pinned; rv.snap is the sequence snap registers */
    int at;                     /* made at a snapshot: rv.snap stays at_seq, even when refreshed */
    uint64_t at_seq;
    snapshot_node snap;         /* registered in db->snapshots */
    int valid;
    int rc;                     /* sticky failure */
    buf key;                    /* user key of the current entry */
    slice val;                  /* stored value (a blob reference or extent map when val_is_blob) */
    int val_is_blob;            /* 0, or the entry type to resolve: LSM_TYPE_BLOB or _EXTENTS */
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
        compact_charge_seek(it->db, first, first_level);
}

/* Records a failure on the iterator's handle; a checksum failure goes to the logger too. */
static int lsm_iter_fail(lsm_iter *it, int rc, const char *err)
{
    if (rc == LSM_CORRUPT)
        db_log(it->db, LSM_LOG_ERROR, "iterator: %s", err);
    return db_fail(it->db, rc, err);
}

uint64_t db_oldest_snapshot(lsm_db *db)
{
    return db->snapshots.next != &db->snapshots ? db->snapshots.next->seq : db->last_seq;
}

void db_snapshot_link(lsm_db *db, snapshot_node *n)
{
    /* Nearly always the newest: the walk back stops at once, except for an iterator made at an
       older snapshot handle. */
    snapshot_node *after = db->snapshots.prev;
    while (after != &db->snapshots && after->seq > n->seq)
        after = after->prev;
    n->prev = after;
    n->next = after->next;
    after->next->prev = n;
    after->next = n;
}

void db_snapshot_unlink(snapshot_node *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
}

/* Registers the snapshot of the iterator's pinned view (caller holds mu): nodes stay in sequence
   order, oldest first. */
static void lsm_iter_register(lsm_iter *it)
{
    it->snap.seq = it->rv.snap;
    db_snapshot_link(it->db, &it->snap);
}

static void lsm_iter_unregister(lsm_iter *it)
{
    db_snapshot_unlink(&it->snap);
}

/* Pins the current memtables and version (seen at the iterator's snapshot, when made at one) and
   registers the sequence (caller holds mu). */
static void lsm_iter_attach(lsm_iter *it)
{
    read_view_pin(it->db, &it->rv);
    if (it->at)
        it->rv.snap = it->at_seq;
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
        kids[k++] = table_cache_iter(&db->tables, v->files[0][i]);
    for (int l = 1; l < LSM_MAX_LEVELS; l++)
        if (v->nfiles[l])
            kids[k++] = table_cache_run_iter(&db->tables, v->files[l], v->nfiles[l]);
    it->m = merge_iter_new(kids, k);
    free(kids);
}

/* Releases what attach pinned (the caller has unregistered the snapshot). */
static void lsm_iter_release(lsm_iter *it)
{
    iiter_free(it->m);
    it->m = NULL;
    read_view_put(&it->rv);
}

int lsm_iter_new(lsm_db *db, lsm_iter **out)
{
    return lsm_iter_new_at(db, NULL, out);
}

int lsm_iter_new_at(lsm_db *db, const lsm_snapshot *s, lsm_iter **out)
{
    if (out)
        *out = NULL;
    if (!db || !out)
        return LSM_INVALID;
    if (s && s->db != db)
        return db_fail(db, LSM_INVALID, "lsm_iter_new_at: the snapshot belongs to another handle");
    lsm_iter *it = xcalloc(1, sizeof *it);
    it->db = db;
    if (s) {
        it->at = 1;
        it->at_seq = s->node.seq;
    }
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
           snapshot moves (not at all for an iterator made at a snapshot handle). This is what
           makes a refreshed iterator cheap. */
        it->rv.snap = it->at ? it->at_seq : db->last_seq;
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
                    it->val_is_blob = ikey_type(k) == LSM_TYPE_BLOB || ikey_type(k) == LSM_TYPE_EXTENTS
                                          ? ikey_type(k) : 0;
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
        it->rc = lsm_iter_fail(it, rc, err);
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
    if (lsm_iter_valid(it) && it->val_is_blob == LSM_TYPE_EXTENTS) {
        extent_map em = { 0 };
        char err[LSM_ERRLEN] = "";
        int rc = LSM_OK;
        if (extent_map_decode(it->val, &em) != 0)
            rc = err_set(err, LSM_CORRUPT, "malformed extent map in %s", it->db->dir);
        else if (em.size > LSM_MAX_VALUE)
            rc = err_set(err, LSM_NOMEM, "value of %" PRIu64 " bytes is longer than LSM_MAX_VALUE: "
                         "read it by range (lsm_get_range)", em.size);
        if (rc == LSM_OK) {
            it->blobval.len = 0;
            buf_reserve(&it->blobval, (size_t)em.size + 1);
            rc = extent_read(it->db, &em, 0, it->blobval.p, (size_t)em.size, err);
        }
        if (rc != LSM_OK) {
            it->rc = lsm_iter_fail(it, rc, err);
        } else {
            it->val = (slice){ it->blobval.p, (size_t)em.size };
            it->val_is_blob = 0;
        }
        extent_map_free(&em);
    } else if (lsm_iter_valid(it) && it->val_is_blob) {
        uint64_t number, off, len;
        char err[LSM_ERRLEN] = "";
        int rc = blob_set_ref_decode(&it->db->blobs, it->val, &number, &off, &len, err);
        if (rc == LSM_OK) {
            it->blobval.len = 0;
            buf_reserve(&it->blobval, (size_t)len + 1);
            rc = blob_set_read(&it->db->blobs, it->val, 0, it->blobval.p, (size_t)len, &len, err);
        }
        if (rc != LSM_OK) {
            it->rc = lsm_iter_fail(it, rc, err);
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

/* ---- snapshot handles ---- */

int lsm_snapshot_new(lsm_db *db, lsm_snapshot **out)
{
    if (out)
        *out = NULL;
    if (!db || !out)
        return LSM_INVALID;
    lsm_snapshot *s = xcalloc(1, sizeof *s);
    s->db = db;
    pthread_mutex_lock(&db->mu);
    s->node.seq = db->last_seq;
    db_snapshot_link(db, &s->node);
    pthread_mutex_unlock(&db->mu);
    *out = s;
    return LSM_OK;
}

uint64_t lsm_snapshot_sequence(const lsm_snapshot *s)
{
    return s ? s->node.seq : 0;
}

void lsm_snapshot_free(lsm_snapshot *s)
{
    if (!s)
        return;
    lsm_db *db = s->db;
    pthread_mutex_lock(&db->mu);
    db_snapshot_unlink(&s->node);
    /* The oldest snapshot moved: a compaction may now drop what only this one kept. */
    pthread_cond_broadcast(&db->compact_cv);
    pthread_mutex_unlock(&db->mu);
    free(s);
}
