/*
 * version.c — versions (the set of tables per level), version edits and the manifest.
 *
 * The manifest is a record log (wal.c framing, MANIFEST_MAGIC) of version edits; CURRENT names the
 * live manifest and is replaced atomically (write temp, sync, rename, sync directory). At open we
 * replay the manifest, then immediately start a fresh one holding one snapshot edit of the whole
 * state (followed by the edit that records open's own recovery), so a manifest never carries the
 * history of earlier sessions. Edit encoding and replay rules: man/lsm-format.5, section MANIFEST.
 * The TAG_ numbers below are on disk: a retired one is never reused, and an unknown tag is
 * corruption, since we never skip what we do not understand.
 *
 * This module must never delete a table some version still names, and never install a version
 * before its edit is durable.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include "version.h"

enum { TAG_LOG = 1, TAG_NEXT_FILE = 2, TAG_LAST_SEQ = 3, TAG_DELETED = 4, TAG_NEW_FILE = 5,
       TAG_NEW_FILE_BLOBS = 6, TAG_BLOB_GARBAGE = 7 };

file_meta *file_meta_new(uint64_t number, uint64_t size, slice smallest, slice largest)
{
    file_meta *f = xcalloc(1, sizeof *f);
    f->number = number;
    f->size = size;
    buf_append(&f->smallest, smallest.p, smallest.n);
    buf_append(&f->largest, largest.p, largest.n);
    atomic_init(&f->refs, 1);
    atomic_init(&f->obsolete, 0);
    /* A wasted probe costs about as much as compacting 16 KiB; past that, compacting is cheaper. */
    atomic_init(&f->allowed_seeks, size / 16384 < 100 ? 100 : (int)(size / 16384));
    return f;
}

void file_meta_unref(file_meta *f)
{
    if (!f || atomic_fetch_sub(&f->refs, 1) != 1)
        return;
    if (atomic_load(&f->obsolete) && f->vs && f->vs->drop)
        f->vs->drop(f->vs->drop_arg, f);
    free(f->blobs);
    buf_free(&f->smallest);
    buf_free(&f->largest);
    free(f);
}

void file_meta_set_blobs(file_meta *f, const uint64_t *blobs, int n)
{
    free(f->blobs);
    f->blobs = n ? xmemdup(blobs, (size_t)n * sizeof *blobs) : NULL;
    f->nblobs = n;
}

static slice fm_small(const file_meta *f) { slice s = { f->smallest.p, f->smallest.len }; return s; }
static slice fm_large(const file_meta *f) { slice s = { f->largest.p, f->largest.len }; return s; }

void version_ref(version *v)
{
    atomic_fetch_add(&v->refs, 1);
}

void version_unref(version *v)
{
    if (!v || atomic_fetch_sub(&v->refs, 1) != 1)
        return;
    for (int l = 0; l < LSM_MAX_LEVELS; l++) {
        for (int i = 0; i < v->nfiles[l]; i++)
            file_meta_unref(v->files[l][i]);
        free(v->files[l]);
        free(v->lwin[l]);
    }
    free(v);
}

uint64_t version_level_bytes(const version *v, int level)
{
    uint64_t n = 0;
    for (int i = 0; i < v->nfiles[level]; i++)
        n += v->files[level][i]->size;
    return n;
}

void edit_init(version_edit *e)
{
    memset(e, 0, sizeof *e);
}

void edit_free(version_edit *e)
{
    for (int i = 0; i < e->nadded; i++)
        file_meta_unref(e->added[i].f);
    free(e->added);
    free(e->deleted);
    free(e->garbage);
    edit_init(e);
}

/* Sets file's total in the pairs array (*v, *n, *cap), adding it when absent. */
static void garbage_set(uint64_t **v, int *n, int *cap, uint64_t file, uint64_t bytes)
{
    for (int i = 0; i < *n; i++)
        if ((*v)[2 * i] == file) {
            (*v)[2 * i + 1] = bytes;
            return;
        }
    if (*n == *cap) {
        *cap = *cap ? 2 * *cap : 8;
        *v = xrealloc(*v, (size_t)*cap * 2 * sizeof **v);
    }
    (*v)[2 * *n] = file;
    (*v)[2 * *n + 1] = bytes;
    (*n)++;
}

void edit_garbage(version_edit *e, uint64_t file, uint64_t bytes)
{
    garbage_set(&e->garbage, &e->ngarbage, &e->capgarbage, file, bytes);
}

/* Orders (file, bytes, arrival) triples by file, then arrival. */
static int garbage_cmp(const void *a, const void *b)
{
    const uint64_t *x = a, *y = b;
    if (x[0] != y[0])
        return x[0] < y[0] ? -1 : 1;
    return x[2] < y[2] ? -1 : x[2] > y[2];
}

/* Keeps the last total recorded for each file in vs->garbage, ascending by file. */
static void vset_garbage_normalize(vset *vs)
{
    int n = vs->ngarbage;
    if (n == 0)
        return;
    uint64_t *t = xmalloc((size_t)n * 3 * sizeof *t);
    for (int i = 0; i < n; i++) {
        t[3 * i] = vs->garbage[2 * i];
        t[3 * i + 1] = vs->garbage[2 * i + 1];
        t[3 * i + 2] = (uint64_t)i;
    }
    qsort(t, (size_t)n, 3 * sizeof *t, garbage_cmp);
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (i + 1 < n && t[3 * (i + 1)] == t[3 * i])
            continue;           /* a later total for the same file follows */
        vs->garbage[2 * k] = t[3 * i];
        vs->garbage[2 * k + 1] = t[3 * i + 1];
        k++;
    }
    free(t);
    vs->ngarbage = k;
    vs->garbage_normal = k;
}

/* Appends (file, bytes) to vs's totals; duplicates are folded when the list has doubled since it
   was last folded, so replaying or applying E records costs O(E log E), not O(E * files). */
static void vset_garbage_add(vset *vs, uint64_t file, uint64_t bytes)
{
    if (vs->ngarbage == vs->capgarbage) {
        vs->capgarbage = vs->capgarbage ? 2 * vs->capgarbage : 64;
        vs->garbage = xrealloc(vs->garbage, (size_t)vs->capgarbage * 2 * sizeof *vs->garbage);
    }
    vs->garbage[2 * vs->ngarbage] = file;
    vs->garbage[2 * vs->ngarbage + 1] = bytes;
    vs->ngarbage++;
    if (vs->ngarbage > 2 * vs->garbage_normal + 64)
        vset_garbage_normalize(vs);
}

void edit_add(version_edit *e, int level, file_meta *f)
{
    if (e->nadded == e->capadded) {
        e->capadded = e->capadded ? 2 * e->capadded : 8;
        e->added = xrealloc(e->added, (size_t)e->capadded * sizeof *e->added);
    }
    atomic_fetch_add(&f->refs, 1);
    e->added[e->nadded].level = level;
    e->added[e->nadded].f = f;
    e->nadded++;
}

void edit_delete(version_edit *e, int level, uint64_t number)
{
    if (e->ndeleted == e->capdeleted) {
        e->capdeleted = e->capdeleted ? 2 * e->capdeleted : 8;
        e->deleted = xrealloc(e->deleted, (size_t)e->capdeleted * sizeof *e->deleted);
    }
    e->deleted[e->ndeleted].level = level;
    e->deleted[e->ndeleted].number = number;
    e->ndeleted++;
}

void edit_encode(const version_edit *e, buf *out)
{
    if (e->has_log_number) {
        buf_put_varint(out, TAG_LOG);
        buf_put_varint(out, e->log_number);
    }
    if (e->has_next_file) {
        buf_put_varint(out, TAG_NEXT_FILE);
        buf_put_varint(out, e->next_file);
    }
    if (e->has_last_seq) {
        buf_put_varint(out, TAG_LAST_SEQ);
        buf_put_varint(out, e->last_seq);
    }
    for (int i = 0; i < e->ndeleted; i++) {
        buf_put_varint(out, TAG_DELETED);
        buf_put_varint(out, (uint64_t)e->deleted[i].level);
        buf_put_varint(out, e->deleted[i].number);
    }
    for (int i = 0; i < e->nadded; i++) {
        const file_meta *f = e->added[i].f;
        buf_put_varint(out, f->nblobs ? TAG_NEW_FILE_BLOBS : TAG_NEW_FILE);
        buf_put_varint(out, (uint64_t)e->added[i].level);
        buf_put_varint(out, f->number);
        buf_put_varint(out, f->size);
        buf_put_lenslice(out, f->smallest.p, f->smallest.len);
        buf_put_lenslice(out, f->largest.p, f->largest.len);
        if (f->nblobs) {
            buf_put_varint(out, (uint64_t)f->nblobs);
            for (int b = 0; b < f->nblobs; b++)
                buf_put_varint(out, f->blobs[b]);
        }
    }
    for (int i = 0; i < e->ngarbage; i++) {
        buf_put_varint(out, TAG_BLOB_GARBAGE);
        buf_put_varint(out, e->garbage[2 * i]);
        buf_put_varint(out, e->garbage[2 * i + 1]);
    }
}

/* Decodes one edit; returns a static description of the problem, or NULL when it is well formed. */
static const char *version_edit_decode(version_edit *e, const uint8_t *p, size_t n)
{
    const uint8_t *end = p + n;
    while (p < end) {
        uint64_t tag, a, b, c;
        slice lo, hi;
        if (!(p = dec_varint(p, end, &tag)))
            return "truncated tag";
        switch (tag) {
        case TAG_LOG:
            if (!(p = dec_varint(p, end, &e->log_number)))
                return "bad log number";
            e->has_log_number = 1;
            break;
        case TAG_NEXT_FILE:
            if (!(p = dec_varint(p, end, &e->next_file)))
                return "bad next file number";
            e->has_next_file = 1;
            break;
        case TAG_LAST_SEQ:
            if (!(p = dec_varint(p, end, &e->last_seq)))
                return "bad last sequence";
            e->has_last_seq = 1;
            break;
        case TAG_DELETED:
            if (!(p = dec_varint(p, end, &a)) || !(p = dec_varint(p, end, &b)) || a >= LSM_MAX_LEVELS)
                return "bad deleted-file field";
            edit_delete(e, (int)a, b);
            break;
        case TAG_NEW_FILE:
        case TAG_NEW_FILE_BLOBS:
            if (!(p = dec_varint(p, end, &a)) || !(p = dec_varint(p, end, &b)) ||
                !(p = dec_varint(p, end, &c)) || !(p = dec_lenslice(p, end, &lo)) ||
                !(p = dec_lenslice(p, end, &hi)) || a >= LSM_MAX_LEVELS ||
                lo.n < LSM_TRAILER || hi.n < LSM_TRAILER)
                return "bad new-file field";
            {
                file_meta *f = file_meta_new(b, c, lo, hi);
                if (tag == TAG_NEW_FILE_BLOBS) {
                    uint64_t nb;
                    if (!(p = dec_varint(p, end, &nb)) || nb > (uint64_t)(end - p)) {
                        file_meta_unref(f);
                        return "bad blob reference count";
                    }
                    f->blobs = xmalloc((size_t)(nb ? nb : 1) * sizeof *f->blobs);
                    for (f->nblobs = 0; (uint64_t)f->nblobs < nb; f->nblobs++)
                        if (!(p = dec_varint(p, end, &f->blobs[f->nblobs]))) {
                            file_meta_unref(f);
                            return "bad blob reference";
                        }
                }
                edit_add(e, (int)a, f);
                file_meta_unref(f);
            }
            break;
        case TAG_BLOB_GARBAGE:
            if (!(p = dec_varint(p, end, &a)) || !(p = dec_varint(p, end, &b)))
                return "bad blob garbage field";
            edit_garbage(e, a, b);
            break;
        default:
            return "unknown field tag";
        }
    }
    return NULL;
}

static int cmp_by_smallest(const void *a, const void *b)
{
    const file_meta *x = *(file_meta *const *)a, *y = *(file_meta *const *)b;
    return ikey_cmp(fm_small(x), fm_small(y));
}

static int cmp_newest_first(const void *a, const void *b)
{
    const file_meta *x = *(file_meta *const *)a, *y = *(file_meta *const *)b;
    return x->number < y->number ? 1 : x->number > y->number ? -1 : 0;
}

/* Whether table number is added back by e (moved to another level): then it stays live. */
static int edit_moves(const version_edit *e, uint64_t number)
{
    for (int a = 0; a < e->nadded; a++)
        if (e->added[a].f->number == number)
            return 1;
    return 0;
}

/* Marks the tables of base that e deletes, and does not move, obsolete (e is being installed). */
static void version_mark_obsolete(const version *base, const version_edit *e)
{
    for (int d = 0; d < e->ndeleted; d++) {
        int l = e->deleted[d].level;
        for (int i = 0; base && i < base->nfiles[l]; i++)
            if (base->files[l][i]->number == e->deleted[d].number &&
                !edit_moves(e, e->deleted[d].number))
                atomic_store(&base->files[l][i]->obsolete, 1);
    }
}

/* The first level past 0 whose tables are not sorted and disjoint by user key, with two tables
   that overlap in *a and *b; 0 when every level is sound. Compaction never cuts a table inside
   one user key's versions, so neighbours never share a user key. */
static int version_overlap(const version *v, uint64_t *a, uint64_t *b)
{
    for (int l = 1; l < LSM_MAX_LEVELS; l++)
        for (int i = 1; i < v->nfiles[l]; i++) {
            slice x = ikey_user(fm_large(v->files[l][i - 1])), y = ikey_user(fm_small(v->files[l][i]));
            if (ukey_cmp(x.p, x.n, y.p, y.n) >= 0) {
                *a = v->files[l][i - 1]->number;
                *b = v->files[l][i]->number;
                return l;
            }
        }
    return 0;
}

/* Fills lpfx, lcp and lwin of level l (L1+, sorted, not empty). Its tables are disjoint and in
   key order, so the prefix its smallest and largest keys share is shared by every key between. */
static void version_windows(version *v, int l)
{
    int n = v->nfiles[l];
    slice a = ikey_user(fm_small(v->files[l][0])), z = ikey_user(fm_large(v->files[l][n - 1]));
    size_t cp = ukey_shared(a.p, a.n, z.p, z.n);
    v->lpfx[l] = a.p;
    v->lcp[l] = cp;
    v->lwin[l] = xmalloc((size_t)n * sizeof(uint64_t));
    for (int i = 0; i < n; i++) {
        slice k = ikey_user(fm_large(v->files[l][i]));
        v->lwin[l][i] = ukey_window(k.p, k.n, cp);
    }
}

/* Returns base + e as a new version (refs 1). */
static version *version_apply(vset *vs, const version *base, const version_edit *e)
{
    version *v = xcalloc(1, sizeof *v);
    atomic_init(&v->refs, 1);
    v->vs = vs;
    for (int l = 0; l < LSM_MAX_LEVELS; l++) {
        int cap = (base ? base->nfiles[l] : 0), n = 0;
        for (int i = 0; i < e->nadded; i++)
            cap += e->added[i].level == l;
        v->files[l] = xmalloc((size_t)(cap ? cap : 1) * sizeof(file_meta *));
        for (int i = 0; base && i < base->nfiles[l]; i++) {
            file_meta *f = base->files[l][i];
            int gone = 0;
            for (int d = 0; d < e->ndeleted && !gone; d++)
                gone = e->deleted[d].level == l && e->deleted[d].number == f->number;
            if (gone)
                continue;
            atomic_fetch_add(&f->refs, 1);
            v->files[l][n++] = f;
        }
        for (int i = 0; i < e->nadded; i++) {
            if (e->added[i].level != l)
                continue;
            file_meta *f = e->added[i].f;
            f->vs = vs;
            atomic_fetch_add(&f->refs, 1);
            v->files[l][n++] = f;
        }
        v->nfiles[l] = n;
        qsort(v->files[l], (size_t)n, sizeof(file_meta *), l == 0 ? cmp_newest_first : cmp_by_smallest);
        if (l > 0 && n > 0)
            version_windows(v, l);
    }
    return v;
}

static void vset_install(vset *vs, version *v)
{
    pthread_mutex_lock(vs->db_mu);
    version *old = vs->current;
    vs->current = v;
    pthread_mutex_unlock(vs->db_mu);
    version_unref(old);
}

struct replay_state {
    vset *vs;
    version *v;
    const char *path;
    char *err;
    int have_log, have_next, have_seq;
};

static int vset_replay_record(void *arg, const uint8_t *p, size_t n, uint64_t off)
{
    struct replay_state *st = arg;
    version_edit e;
    edit_init(&e);
    const char *why = version_edit_decode(&e, p, n);
    if (why) {
        edit_free(&e);
        return err_set(st->err, LSM_CORRUPT, "%s: offset %" PRIu64 ": %s", st->path, off, why);
    }
    for (int d = 0; d < e.ndeleted; d++) {
        int found = 0;
        for (int i = 0; i < st->v->nfiles[e.deleted[d].level] && !found; i++)
            found = st->v->files[e.deleted[d].level][i]->number == e.deleted[d].number;
        if (!found) {
            edit_free(&e);
            return err_set(st->err, LSM_CORRUPT,
                           "%s: offset %" PRIu64 ": edit deletes table %06" PRIu64 " that is not in level %d",
                           st->path, off, e.deleted[d].number, e.deleted[d].level);
        }
    }
    version *nv = version_apply(st->vs, st->v, &e);
    version_unref(st->v);
    st->v = nv;
    if (e.has_log_number) {
        st->vs->log_number = e.log_number;
        st->have_log = 1;
    }
    if (e.has_next_file) {
        st->vs->next_file = e.next_file;
        st->have_next = 1;
    }
    if (e.has_last_seq) {
        st->vs->last_seq = e.last_seq;
        st->have_seq = 1;
    }
    for (int i = 0; i < e.ngarbage; i++)
        vset_garbage_add(st->vs, e.garbage[2 * i], e.garbage[2 * i + 1]);
    edit_free(&e);
    return LSM_OK;
}

int vset_recover(vset *vs, char *err)
{
    char path[4096];
    uint8_t *cur = NULL;
    size_t n = 0;
    snprintf(path, sizeof path, "%s/CURRENT", vs->dir);
    int rc = env_read_file(vs->env, path, &cur, &n);
    if (rc == -ENOENT)
        return LSM_NOTFOUND;
    if (rc < 0)
        return err_errno(err, rc, "reading", path);
    /* CURRENT holds "MANIFEST-NNNNNN\n". */
    uint64_t num = 0;
    int ok = n >= 11 && n <= 9 + 19 + 1 && memcmp(cur, "MANIFEST-", 9) == 0 && cur[n - 1] == '\n';
    for (size_t i = 9; ok && i < n - 1; i++) {
        ok = cur[i] >= '0' && cur[i] <= '9';
        num = num * 10 + (uint64_t)(cur[i] - '0');
    }
    free(cur);
    if (!ok)
        return err_set(err, LSM_CORRUPT, "%s: offset 0: expected \"MANIFEST-NNNNNN\\n\"", path);

    char mpath[4096];
    snprintf(mpath, sizeof mpath, "%s/MANIFEST-%06" PRIu64, vs->dir, num);
    rc = vs->env->file_exists(vs->env, mpath);
    if (rc == 0)
        return err_set(err, LSM_CORRUPT, "%s names %s, which does not exist", path, mpath);
    struct replay_state st = { .vs = vs, .path = mpath, .err = err };
    st.v = xcalloc(1, sizeof *st.v);
    atomic_init(&st.v->refs, 1);
    st.v->vs = vs;
    uint64_t dropped = 0;
    rc = log_replay(vs->env, mpath, MANIFEST_MAGIC, vset_replay_record, &st, &dropped, err);
    if (rc == LSM_OK && (!st.have_log || !st.have_next || !st.have_seq))
        rc = err_set(err, LSM_CORRUPT, "%s: offset 0: manifest lacks %s", mpath,
                     !st.have_log ? "a log number" : !st.have_next ? "the next file number"
                                                                   : "the last sequence");
    uint64_t a, b;
    int l = rc == LSM_OK ? version_overlap(st.v, &a, &b) : 0;
    if (l)
        rc = err_set(err, LSM_CORRUPT, "%s: level %d: tables %06" PRIu64 " and %06" PRIu64
                     " overlap", mpath, l, a, b);
    if (rc != LSM_OK) {
        version_unref(st.v);
        return rc;
    }
    vs->manifest_number = num;
    if (vs->next_file <= num)
        vs->next_file = num + 1;
    vs->current = st.v;
    vset_garbage_normalize(vs);
    return LSM_OK;
}

int vset_apply(vset *vs, version_edit *e, char *err)
{
    pthread_mutex_lock(vs->db_mu);
    if (!e->has_next_file) {
        e->has_next_file = 1;
        e->next_file = vs->next_file;
    }
    pthread_mutex_unlock(vs->db_mu);
    if (!e->has_log_number) {
        e->has_log_number = 1;
        e->log_number = vs->log_number;
    }
    if (!e->has_last_seq) {
        e->has_last_seq = 1;
        e->last_seq = vs->last_seq;
    }
    /* A version whose levels overlap would answer reads wrongly for good: refuse it, as a bug,
       before the manifest can record it. */
    version *nv = version_apply(vs, vs->current, e);
    uint64_t a, b;
    int l = version_overlap(nv, &a, &b);
    if (l) {
        version_unref(nv);
        return err_set(err, LSM_CORRUPT, "an edit would make tables %06" PRIu64 " and %06" PRIu64
                       " of level %d overlap", a, b, l);
    }
    buf rec = { 0 };
    edit_encode(e, &rec);
    int rc = logw_append(vs->manifest, rec.p, rec.len, err);
    if (rc == LSM_OK)
        rc = logw_sync(vs->manifest, err);
    buf_free(&rec);
    if (rc != LSM_OK) {
        version_unref(nv);
        return rc;
    }
    vs->log_number = e->log_number;
    vs->last_seq = e->last_seq;
    for (int i = 0; i < e->ngarbage; i++)
        vset_garbage_add(vs, e->garbage[2 * i], e->garbage[2 * i + 1]);
    for (int i = 0; i < e->nadded && vs->add; i++) {
        int moved = 0;
        for (int d = 0; d < e->ndeleted && !moved; d++)
            moved = e->deleted[d].number == e->added[i].f->number;
        if (!moved)
            vs->add(vs->drop_arg, e->added[i].f);
    }
    version_mark_obsolete(vs->current, e);
    vset_install(vs, nv);
    return LSM_OK;
}

int vset_write_snapshot(vset *vs, char *err)
{
    char path[4096], name[64];
    pthread_mutex_lock(vs->db_mu);
    uint64_t num = vs->next_file++;
    version *v = vs->current;
    version_ref(v);
    pthread_mutex_unlock(vs->db_mu);

    version_edit e;
    edit_init(&e);
    e.has_log_number = e.has_next_file = e.has_last_seq = 1;
    e.log_number = vs->log_number;
    e.next_file = num + 1;
    e.last_seq = vs->last_seq;
    for (int l = 0; l < LSM_MAX_LEVELS; l++)
        for (int i = 0; i < v->nfiles[l]; i++)
            edit_add(&e, l, v->files[l][i]);
    /* Garbage of the blob files the version still names; the rest are gone. */
    vset_garbage_normalize(vs);
    uint64_t *names = NULL;
    size_t nnames = 0;
    for (int l = 0; l < LSM_MAX_LEVELS; l++)
        for (int i = 0; i < v->nfiles[l]; i++) {
            names = xrealloc(names, (nnames + (size_t)v->files[l][i]->nblobs + 1) * sizeof *names);
            for (int b = 0; b < v->files[l][i]->nblobs; b++)
                names[nnames++] = v->files[l][i]->blobs[b];
        }
    if (nnames)
        qsort(names, nnames, sizeof *names, u64_cmp);
    int keep = 0;
    for (int g = 0; g < vs->ngarbage; g++) {
        int named = nnames && bsearch(&vs->garbage[2 * g], names, nnames, sizeof *names, u64_cmp);
        if (named) {
            vs->garbage[2 * keep] = vs->garbage[2 * g];
            vs->garbage[2 * keep + 1] = vs->garbage[2 * g + 1];
            edit_garbage(&e, vs->garbage[2 * keep], vs->garbage[2 * keep + 1]);
            keep++;
        }
    }
    vs->ngarbage = vs->garbage_normal = keep;
    free(names);
    version_unref(v);

    snprintf(path, sizeof path, "%s/MANIFEST-%06" PRIu64, vs->dir, num);
    logw *w = NULL;
    buf rec = { 0 };
    edit_encode(&e, &rec);
    edit_free(&e);
    int rc = logw_create(vs->env, path, MANIFEST_MAGIC, &w, err);
    if (rc == LSM_OK)
        rc = logw_append(w, rec.p, rec.len, err);
    if (rc == LSM_OK)
        rc = logw_sync(w, err);
    buf_free(&rec);
    if (rc == LSM_OK) {
        int n = snprintf(name, sizeof name, "MANIFEST-%06" PRIu64 "\n", num);
        int erc = env_write_file_atomic(vs->env, vs->dir, "CURRENT", name, (size_t)n);
        if (erc < 0)
            rc = err_errno(err, erc, "writing", "CURRENT");
    }
    if (rc != LSM_OK) {
        logw_close(w, NULL);
        vs->env->unlink(vs->env, path);
        return rc;
    }
    logw_close(vs->manifest, NULL);
    vs->manifest = w;
    vs->manifest_number = num;
    return LSM_OK;
}

void vset_close(vset *vs)
{
    free(vs->garbage);
    vs->garbage = NULL;
    vs->ngarbage = vs->capgarbage = vs->garbage_normal = 0;
    logw_close(vs->manifest, NULL);
    vs->manifest = NULL;
    version_unref(vs->current);
    vs->current = NULL;
}

int files_find(file_meta *const *files, int n, slice ikey)
{
    int lo = 0, hi = n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (ikey_cmp(fm_large(files[mid]), ikey) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

int version_find_key(const version *v, int level, const void *key, size_t klen)
{
    int lo = 0, hi = v->nfiles[level];
    const uint64_t *w = v->lwin[level];
    uint64_t kw = 0;
    if (w) {
        /* Every key of the level starts with its shared prefix: a key that does not is in none of
           its tables. */
        size_t cp = v->lcp[level];
        if (klen < cp || memcmp(key, v->lpfx[level], cp) != 0)
            return -1;
        kw = ukey_window(key, klen, cp);
    }
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2, less;
        if (w && w[mid] != kw) {
            less = w[mid] < kw;
        } else {
            const file_meta *f = v->files[level][mid];
            less = ukey_cmp(f->largest.p, f->largest.len - LSM_TRAILER, key, klen) < 0;
        }
        if (less)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == v->nfiles[level] || !file_meta_holds(v->files[level][lo], key, klen))
        return -1;
    return lo;
}

int file_meta_holds(const file_meta *f, const void *key, size_t klen)
{
    return ukey_cmp(key, klen, f->smallest.p, f->smallest.len - LSM_TRAILER) >= 0 &&
           ukey_cmp(key, klen, f->largest.p, f->largest.len - LSM_TRAILER) <= 0;
}

int version_overlaps(const version *v, int level, const slice *lo, const slice *hi,
                     file_meta ***out)
{
    int n = 0;
    *out = xmalloc((size_t)(v->nfiles[level] + 1) * sizeof(file_meta *));
    for (int i = 0; i < v->nfiles[level]; i++) {
        file_meta *f = v->files[level][i];
        slice fs = ikey_user(fm_small(f)), fl = ikey_user(fm_large(f));
        if (lo && ukey_cmp(fl.p, fl.n, lo->p, lo->n) < 0)
            continue;
        if (hi && ukey_cmp(fs.p, fs.n, hi->p, hi->n) > 0)
            continue;
        (*out)[n++] = f;
    }
    return n;
}
