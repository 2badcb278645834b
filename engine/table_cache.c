/*
 * table_cache.c — the tables of a database as readers see them: opened once and kept in a cache by
 * file number, iterated one table or one sorted run at a time, and searched for a key.
 *
 * A point lookup goes down once: read.c hands table_cache_get the pinned version, which picks the
 * tables that may hold the key (every L0 table whose range covers it, then at most one per deeper
 * level), opens them, and asks each table (sst.c) past its bloom filter. The tables' prefetch
 * hints live in their file_meta and are read and written here only: before a table is found in the
 * cache, its filter line (and the last candidate's index tops) are asked for from where the table
 * last was, so a key in the last level waits for one memory miss, not one per level.
 *
 * It must never hand out a table whose cache handle it has released, nor read through a prefetch
 * hint (hints are only prefetched: the table they point into may be closed).
 */
#include <stdlib.h>
#include <string.h>
#include "table_cache.h"

static void table_cache_close(uint64_t id, uint64_t off, void *value)
{
    sst_close(value);
}

void table_cache_init(table_cache *tc, lsm_env *env, const char *dir, cache *blocks,
                      size_t max_open)
{
    tc->env = env;
    tc->dir = dir;
    tc->blocks = blocks;
    tc->tables = cache_new(max_open);
}

void table_cache_destroy(table_cache *tc)
{
    cache_free(tc->tables);
    tc->tables = NULL;
}

int table_cache_open(table_cache *tc, uint64_t number, uint64_t size, sst **t, cache_handle **h,
                     char *err)
{
    cache_handle *ch = cache_lookup(tc->tables, 0, number);
    if (!ch) {
        char path[4096];
        sst *nt = NULL;
        file_path(tc->dir, number, ".sst", path, sizeof path);
        int rc = sst_open(tc->env, path, size, tc->blocks, &nt, err);
        if (rc != LSM_OK)
            return rc;
        ch = cache_insert(tc->tables, 0, number, nt, 1, table_cache_close);
    }
    *t = cache_value(ch);
    *h = ch;
    return LSM_OK;
}

void table_cache_release(table_cache *tc, cache_handle *h)
{
    cache_release(tc->tables, h);
}

void table_cache_evict(table_cache *tc, uint64_t number)
{
    cache_erase(tc->tables, 0, number);
}

/* A table a lookup may have to search, and (once opened) its table-cache handle. */
typedef struct probe {
    file_meta *f;
    int level;
    sst *t;
    cache_handle *h;
} probe;

/* Asks for the lines a probe of f will read first, from where f's table last was (file_meta's
   prefetch hints): in a large database the filter line is a miss from memory, and this lets it
   travel while the table is found in the table cache (the README's Performance section has the
   measurements). The index tops are asked for up to 16 lines (a 2 MiB table has about 8). */
static void probe_hint(file_meta *f, uint64_t hash, int index_too)
{
    uintptr_t fp = atomic_load_explicit(&f->pf_filter, memory_order_relaxed);
    uintptr_t ip = index_too ? atomic_load_explicit(&f->pf_itop, memory_order_relaxed) : 0;
    size_t il = ip ? atomic_load_explicit(&f->pf_ilen, memory_order_relaxed) : 0;
    sst_prefetch_at((const uint8_t *)fp, atomic_load_explicit(&f->pf_flen, memory_order_relaxed),
                    hash, (const uint8_t *)ip, il < 1024 ? il : 1024);
}

/* After the table cache gave t for f: if the hints were stale or missing, asks for the lines now
   and records where they are. */
static void probe_note(file_meta *f, sst *t, uint64_t hash, int index_too)
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

typedef struct files_iter {
    iiter base;
    table_cache *tc;
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
    table_cache_release(fi->tc, fi->h);
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
    fi->rc = table_cache_open(fi->tc, f->number, f->size, &t, &fi->h, fi->err);
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

iiter *table_cache_run_iter(table_cache *tc, file_meta *const *files, int n)
{
    files_iter *fi = xcalloc(1, sizeof *fi);
    fi->base.ops = &files_iter_ops;
    fi->tc = tc;
    fi->files = xmalloc((size_t)(n ? n : 1) * sizeof *fi->files);
    memcpy(fi->files, files, (size_t)n * sizeof *files);
    fi->n = n;
    fi->idx = n;
    return &fi->base;
}

/* Iterator over one table, holding its table-cache handle. */
typedef struct table_iter {
    iiter base;
    table_cache *tc;
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
    table_cache_release(ti->tc, ti->h);
    free(ti);
}

static const iiter_ops table_iter_ops = {
    ti_seek, ti_seek_first, ti_valid, ti_next, ti_key, ti_value, ti_status, ti_free,
};

iiter *table_cache_iter(table_cache *tc, const file_meta *f)
{
    char err[LSM_ERRLEN];
    sst *t;
    cache_handle *h;
    int rc = table_cache_open(tc, f->number, f->size, &t, &h, err);
    if (rc != LSM_OK)
        return error_iter_new(rc, err);
    table_iter *ti = xcalloc(1, sizeof *ti);
    ti->base.ops = &table_iter_ops;
    ti->tc = tc;
    ti->in = sst_iter_new(t);
    ti->h = h;
    return &ti->base;
}

/* Candidates held on the stack; a lookup through more L0 tables than this allocates. */
#define PROBES_ON_STACK 48

/* The tables of v that may hold key, newest first, into pr (room for nfiles[0] + LSM_MAX_LEVELS). */
static int probe_candidates(const version *v, const void *key, size_t klen, probe *pr)
{
    int np = 0;
    for (int i = 0; i < v->nfiles[0]; i++)
        if (file_meta_holds(v->files[0][i], key, klen))
            pr[np++] = (probe){ v->files[0][i], 0, NULL, NULL };
    for (int l = 1; l < LSM_MAX_LEVELS; l++) {
        int i = version_find_key(v, l, key, klen);
        if (i >= 0)
            pr[np++] = (probe){ v->files[l][i], l, NULL, NULL };
    }
    return np;
}

int table_cache_get(table_cache *tc, const version *v, const void *key, size_t klen, uint64_t snap,
                    int *found, int *type, value_range *r, void **val, size_t *vlen,
                    table_probe_stats *ps, char *err)
{
    /* The candidates are opened and their filter lines asked for together before the first is
       tested. A table that fails to open ends the batch there: the loop below opens it again
       when (and only when) no newer table answered, and reports its error then. */
    probe stack[PROBES_ON_STACK], *pr = stack;
    if (v->nfiles[0] + LSM_MAX_LEVELS > PROBES_ON_STACK)
        pr = xmalloc((size_t)(v->nfiles[0] + LSM_MAX_LEVELS) * sizeof *pr);
    int np = probe_candidates(v, key, klen, pr), nopen = 0, rc = LSM_OK;
    uint64_t hash = np ? sst_key_hash(key, klen) : 0;
    /* Most keys live in the last level, so its table's index search is likely next: its index
       lines are asked for too. */
    for (int j = 0; j < np; j++)
        probe_hint(pr[j].f, hash, j == np - 1);
    for (; nopen < np; nopen++) {
        if (table_cache_open(tc, pr[nopen].f->number, pr[nopen].f->size, &pr[nopen].t,
                             &pr[nopen].h, err) != LSM_OK)
            break;
        probe_note(pr[nopen].f, pr[nopen].t, hash, nopen == np - 1);
    }
    err[0] = '\0';
    *ps = (table_probe_stats){ NULL, 0, 0 };
    /* Only probes that got past a table's bloom filter cost a block read: those are counted. */
    for (int j = 0; j < np && !*found && rc == LSM_OK; j++) {
        probe *p = &pr[j];
        if (j >= nopen && (rc = table_cache_open(tc, p->f->number, p->f->size, &p->t, &p->h, err)))
            break;
        if (!sst_may_contain_hash(p->t, hash))
            continue;
        rc = sst_get(p->t, key, klen, snap, found, type, r, val, vlen, err);
        if (ps->probes++ == 0) {
            ps->first = p->f;
            ps->first_level = p->level;
        }
    }
    for (int j = 0; j < np; j++)
        table_cache_release(tc, pr[j].h);
    if (pr != stack)
        free(pr);
    return rc;
}

/* ---- approximate sizes ---- */

/* Offset in table f where user key k's entries begin (0 before the table, its size past it). */
static int table_cache_offset_of(table_cache *tc, const file_meta *f, slice k, uint64_t *off,
                                 char *err)
{
    sst *t;
    cache_handle *h;
    int rc = table_cache_open(tc, f->number, f->size, &t, &h, err);
    if (rc != LSM_OK)
        return rc;
    uint8_t stackbuf[256];
    buf ik = { 0 };
    if (k.n + LSM_TRAILER <= sizeof stackbuf) {
        ik.p = stackbuf;
        ik.cap = sizeof stackbuf;
    }
    ikey_build(&ik, k.p, k.n, LSM_MAX_SEQ, 0xff);   /* the first entry of user key k */
    *off = sst_approximate_offset(t, (slice){ ik.p, ik.len });
    if (ik.p != stackbuf)
        buf_free(&ik);
    table_cache_release(tc, h);
    return LSM_OK;
}

int table_cache_approximate_size(table_cache *tc, const version *v, slice lo, slice hi,
                                 uint64_t *bytes, char *err)
{
    uint64_t total = 0;
    *bytes = 0;
    if (lo.p && hi.p && ukey_cmp(lo.p, lo.n, hi.p, hi.n) >= 0)
        return LSM_OK;
    for (int l = 0; l < LSM_MAX_LEVELS; l++)
        for (int i = 0; i < v->nfiles[l]; i++) {
            const file_meta *f = v->files[l][i];
            slice fl = file_meta_lo(f), fh = file_meta_hi(f);
            if ((hi.p && ukey_cmp(fl.p, fl.n, hi.p, hi.n) >= 0) ||
                (lo.p && ukey_cmp(fh.p, fh.n, lo.p, lo.n) < 0))
                continue;       /* wholly outside */
            uint64_t start = 0, end = f->size;
            int rc = LSM_OK;
            if (lo.p && ukey_cmp(lo.p, lo.n, fl.p, fl.n) > 0)
                rc = table_cache_offset_of(tc, f, lo, &start, err);
            if (rc == LSM_OK && hi.p && ukey_cmp(hi.p, hi.n, fh.p, fh.n) <= 0)
                rc = table_cache_offset_of(tc, f, hi, &end, err);
            if (rc != LSM_OK)
                return rc;
            if (end > start)
                total += end - start;
        }
    *bytes = total;
    return LSM_OK;
}
