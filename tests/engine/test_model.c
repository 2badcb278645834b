/*
 * test_model.c — randomized model test: long random sequences of puts, deletes, mixed batches and
 * gets over a small key space, checked op by op against the reference map of helper_model.c.
 *
 * The memtable is tiny so that many tables are written and merged; the database is reopened (with
 * varied compression, bloom and block settings) every so often, compacted now and then (in full,
 * or over a random key range with lsm_compact_range), scanned in full, probed with random seeks,
 * and snapshot iterators are checked to keep seeing their old state while writes go on. Every run
 * prints its seed; LSM_SEED=<n> repeats it exactly.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helper_model.h"
#include "lsm.h"
#include "options.h"

typedef struct cfg {
    const char *name;
    uint64_t seed;
    long ops;               /* before scaling for sanitizers */
    int nkeys;              /* key space */
    size_t memtable;
    long reopen_every;
    long compact_every;
    long scan_every;
    int big_value_permille; /* values past the blob threshold */
    int background;         /* background_compaction */
} cfg;

typedef struct run {
    const cfg *c;
    uint64_t seed;
    trng r;
    char *tmp, *dir;
    lsm_db *db;
    model *m;
    uint8_t **keys;
    size_t *klens;
    int nkeys;
    long op;
    uint8_t *vbuf;
    size_t vcap;
    char ctx[128];
    /* an open snapshot */
    lsm_iter *snap;
    model *snap_model;
    long snap_until;
    uint64_t flushes, compactions; /* summed over the sessions so far */
    int ranges;                    /* lsm_compact_range calls */
} run;

#define FAILR(R, ...) do { \
        char m_[512]; \
        snprintf(m_, sizeof m_, __VA_ARGS__); \
        fail_msg("seed %" PRIu64 " op %ld: %s", (R)->seed, (R)->op, m_); \
    } while (0)

static const char *ctx(run *R, const char *what)
{
    snprintf(R->ctx, sizeof R->ctx, "seed %" PRIu64 " op %ld %s", R->seed, R->op, what);
    return R->ctx;
}

/* Keys of several shapes: structured, short over a tiny alphabet (prefixes of one another, NUL
   and 0xff bytes), long, and a few very long. */
static void make_keys(run *R)
{
    R->nkeys = R->c->nkeys;
    R->keys = calloc((size_t)R->nkeys, sizeof *R->keys);
    R->klens = calloc((size_t)R->nkeys, sizeof *R->klens);
    static const uint8_t alpha[] = { 0x00, 'a', 'b', 0xff };
    for (int i = 0; i < R->nkeys; i++) {
        uint8_t *k;
        size_t kl;
        int shape = (int)trng_below(&R->r, 100);
        if (shape < 55) {
            k = malloc(32);
            kl = (size_t)snprintf((char *)k, 32, "user:%06d", i);
        } else if (shape < 80) {
            kl = 1 + trng_below(&R->r, 8);
            k = malloc(kl);
            for (size_t j = 0; j < kl; j++)
                k[j] = alpha[trng_below(&R->r, 4)];
        } else if (shape < 98) {
            kl = 20 + trng_below(&R->r, 200);
            k = malloc(kl + 1);
            memset(k, 'p', kl);
            snprintf((char *)k + kl - 8, 9, "%08u", (unsigned)i % 100000000u);  /* a long shared prefix */
        } else {
            kl = 1000 + trng_below(&R->r, 3000);
            k = malloc(kl);
            trng_fill(&R->r, k, kl);
        }
        R->keys[i] = k;
        R->klens[i] = kl;
    }
}

static void pick_key(run *R, const uint8_t **k, size_t *kl)
{
    /* Skewed: a hot tenth of the keys gets half of the operations. */
    int i;
    if (trng_chance(&R->r, 50))
        i = (int)trng_below(&R->r, (uint64_t)(R->nkeys / 10 + 1));
    else
        i = (int)trng_below(&R->r, (uint64_t)R->nkeys);
    *k = R->keys[i];
    *kl = R->klens[i];
}

static void make_value(run *R, size_t *vl)
{
    size_t n;
    uint64_t p = trng_below(&R->r, 1000);
    if (p < (uint64_t)R->c->big_value_permille)
        n = 65536 + trng_below(&R->r, 100000);
    else if (p < 50)
        n = 0;
    else if (p < 800)
        n = 1 + trng_below(&R->r, 100);
    else
        n = 100 + trng_below(&R->r, 1000);
    if (n + 16 > R->vcap) {
        R->vcap = n + 16;
        R->vbuf = realloc(R->vbuf, R->vcap);
    }
    if (trng_chance(&R->r, 50)) {
        trng_fill(&R->r, R->vbuf, n);
    } else {  /* compressible */
        memset(R->vbuf, 'a' + (int)trng_below(&R->r, 26), n);
    }
    if (n >= 12)
        snprintf((char *)R->vbuf, 12, "@%09ld", R->op);  /* which op wrote it, for debugging */
    *vl = n;
}

static void db_open(run *R)
{
    lsm_options o;
    options_defaults(&o);
    o.memtable_bytes = R->c->memtable;
    o.background_compaction = R->c->background;
    o.compression = (int)trng_below(&R->r, 3);
    o.bloom_bits_per_key = trng_chance(&R->r, 20) ? 0 : 10;
    o.block_bytes = trng_chance(&R->r, 50) ? 512 : 4096;
    o.table_bytes = trng_chance(&R->r, 50) ? (64 << 10) : (2 << 20);
    /* A small level 1 makes deep levels, and compactions that run side by side, even here. */
    o.level1_bytes = trng_chance(&R->r, 50) ? (64 << 10) : (10 << 20);
    o.cache_bytes = trng_chance(&R->r, 20) ? 0 : (1 << 20);
    static const size_t blob[] = { 0, 512, 4096, 65536 };
    o.blob_threshold = blob[trng_below(&R->r, 4)];
    int rc = lsm_open(R->dir, &o, &R->db);
    if (rc != LSM_OK)
        FAILR(R, "lsm_open: %d (%s) %s", rc, lsm_strerror(rc), lsm_errmsg(NULL));
}

static void db_close(run *R)
{
    lsm_stats st;
    if (lsm_stats_get(R->db, &st, sizeof st) == LSM_OK) {
        R->flushes += st.flushes;
        R->compactions += st.compactions;
    }
    int rc = lsm_close(R->db);
    R->db = NULL;
    if (rc != LSM_OK)
        FAILR(R, "lsm_close: %d (%s)", rc, lsm_strerror(rc));
}

static void check_get(run *R, const uint8_t *k, size_t kl)
{
    size_t mvl = 0;
    const uint8_t *mv = model_get(R->m, k, kl, &mvl);
    void *v = NULL;
    size_t vl = 0;
    int rc = lsm_get(R->db, k, kl, &v, &vl);
    if (!mv) {
        if (rc != LSM_NOTFOUND)
            FAILR(R, "get('%s') = %d (%s), %zu bytes; model: absent", show(k, kl), rc,
                  lsm_strerror(rc), vl);
        free(v);
        return;
    }
    if (rc != LSM_OK)
        FAILR(R, "get('%s') = %d (%s) %s; model: %zu bytes", show(k, kl), rc, lsm_strerror(rc),
              lsm_errmsg(R->db), mvl);
    if (vl != mvl || (vl && memcmp(v, mv, vl) != 0)) {
        char got[64];
        snprintf(got, sizeof got, "%s", show(v, vl < 24 ? vl : 24));
        free(v);
        FAILR(R, "get('%s'): %zu bytes '%s'; model %zu bytes '%s'", show(k, kl), vl, got, mvl,
              show(mv, mvl < 24 ? mvl : 24));
    }
    free(v);
    if (trng_chance(&R->r, 10)) {
        uint64_t sz = 0;
        rc = lsm_get_size(R->db, k, kl, &sz);
        if (rc != LSM_OK || sz != mvl)
            FAILR(R, "get_size('%s') = %d, %" PRIu64 "; model %zu", show(k, kl), rc, sz, mvl);
        if (mvl > 0) {
            uint8_t part[64];
            uint64_t off = trng_below(&R->r, mvl);
            size_t nread = 0;
            rc = lsm_get_range(R->db, k, kl, off, part, sizeof part, &nread, NULL);
            size_t want = mvl - off < sizeof part ? mvl - off : sizeof part;
            if (rc != LSM_OK || nread != want || memcmp(part, mv + off, want) != 0)
                FAILR(R, "get_range('%s', %" PRIu64 ") = %d, %zu bytes; want %zu", show(k, kl), off,
                      rc, nread, want);
        }
    }
}

/* Seeks to a random key (or a gap next to one) and walks a few entries along with the model. */
static void check_seek(run *R, lsm_iter *it, const model *m)
{
    const uint8_t *k;
    size_t kl;
    pick_key(R, &k, &kl);
    uint8_t tgt[4200];
    size_t tl = kl;
    memcpy(tgt, k, kl);
    if (trng_chance(&R->r, 30))
        tgt[tl++] = (uint8_t)trng_below(&R->r, 256);       /* just after k */
    else if (trng_chance(&R->r, 30) && tl > 1)
        tl--;                                               /* a prefix of k */
    lsm_iter_seek(it, tgt, tl);
    size_t i = model_lower_bound(m, tgt, tl);
    for (int step = 0; step < 6; step++, i++) {
        if (i >= model_count(m)) {
            if (lsm_iter_valid(it)) {
                size_t gl;
                const void *g = lsm_iter_key(it, &gl);
                FAILR(R, "seek('%s') step %d: iterator at '%s', model at the end", show(tgt, tl), step,
                      show(g, gl));
            }
            if (lsm_iter_status(it) != LSM_OK)
                FAILR(R, "seek: iterator status %d", lsm_iter_status(it));
            return;
        }
        const uint8_t *mk, *mv;
        size_t mkl, mvl;
        model_at(m, i, &mk, &mkl, &mv, &mvl);
        if (!lsm_iter_valid(it))
            FAILR(R, "seek('%s') step %d: iterator ended (status %d), model at '%s'", show(tgt, tl),
                  step, lsm_iter_status(it), show(mk, mkl));
        size_t gl, gvl;
        const void *g = lsm_iter_key(it, &gl);
        const void *gv = lsm_iter_value(it, &gvl);
        if (bytes_cmp(g, gl, mk, mkl) != 0)
            FAILR(R, "seek('%s') step %d: iterator at '%s', model at '%s'", show(tgt, tl), step,
                  show(g, gl), show(mk, mkl));
        if (gvl != mvl || (gvl && memcmp(gv, mv, gvl) != 0))
            FAILR(R, "seek step %d key '%s': value %zu bytes, model %zu bytes", step, show(mk, mkl),
                  gvl, mvl);
        lsm_iter_next(it);
    }
}

static void seeks(run *R, int n)
{
    lsm_iter *it;
    int rc = lsm_iter_new(R->db, &it);
    if (rc != LSM_OK)
        FAILR(R, "lsm_iter_new: %d", rc);
    for (int i = 0; i < n; i++)
        check_seek(R, it, R->m);
    lsm_iter_free(it);
}

static void snapshot_end(run *R)
{
    if (!R->snap)
        return;
    check_iter_equals_model(R->snap, R->snap_model, ctx(R, "snapshot iterator"));
    /* Seeks on the old snapshot see the old state too. */
    for (int i = 0; i < 20; i++)
        check_seek(R, R->snap, R->snap_model);
    lsm_iter_free(R->snap);
    model_free(R->snap_model);
    R->snap = NULL;
    R->snap_model = NULL;
}

static void one_op(run *R)
{
    const uint8_t *k;
    size_t kl, vl;
    int rc;
    uint64_t p = trng_below(&R->r, 100);
    if (p < 45) {
        pick_key(R, &k, &kl);
        make_value(R, &vl);
        rc = lsm_put(R->db, k, kl, R->vbuf, vl);
        if (rc != LSM_OK)
            FAILR(R, "put('%s', %zu bytes) = %d (%s) %s", show(k, kl), vl, rc, lsm_strerror(rc),
                  lsm_errmsg(R->db));
        model_put(R->m, k, kl, R->vbuf, vl);
    } else if (p < 60) {
        pick_key(R, &k, &kl);
        rc = lsm_delete(R->db, k, kl);
        if (rc != LSM_OK)
            FAILR(R, "delete('%s') = %d (%s) %s", show(k, kl), rc, lsm_strerror(rc),
                  lsm_errmsg(R->db));
        model_del(R->m, k, kl);
    } else if (p < 70) {
        lsm_batch *b = lsm_batch_new();
        history h;
        history_init(&h);
        hbatch *hb = history_add(&h);
        int n = 1 + (int)trng_below(&R->r, 20);
        for (int i = 0; i < n; i++) {
            pick_key(R, &k, &kl);
            if (trng_chance(&R->r, 30)) {
                hbatch_del(hb, k, kl);
            } else {
                make_value(R, &vl);
                hbatch_put(hb, k, kl, R->vbuf, vl);
            }
        }
        hbatch_to_lsm(hb, b);
        if (lsm_batch_count(b) != n)
            FAILR(R, "lsm_batch_count = %d, want %d", lsm_batch_count(b), n);
        rc = lsm_write(R->db, b, trng_chance(&R->r, 2));
        if (rc != LSM_OK)
            FAILR(R, "lsm_write(%d ops) = %d (%s) %s", n, rc, lsm_strerror(rc), lsm_errmsg(R->db));
        hbatch_apply(hb, R->m);
        history_free(&h);
        lsm_batch_free(b);
    } else {
        pick_key(R, &k, &kl);
        check_get(R, k, kl);
    }
}

/* lsm_compact_range over a random stretch of the key space between two picked keys, now and then
   open at one end, while a snapshot iterator may be live. */
static void compact_some_range(run *R)
{
    const uint8_t *a, *b;
    size_t al, bl;
    pick_key(R, &a, &al);
    pick_key(R, &b, &bl);
    int c = memcmp(a, b, al < bl ? al : bl);
    if (c > 0 || (c == 0 && al > bl)) {
        const uint8_t *t = a;
        size_t tl = al;
        a = b, al = bl, b = t, bl = tl;
    }
    if (trng_chance(&R->r, 15))
        a = NULL, al = 0;
    if (trng_chance(&R->r, 15))
        b = NULL, bl = 0;
    int rc = lsm_compact_range(R->db, a, al, b, bl);
    if (rc != LSM_OK)
        FAILR(R, "lsm_compact_range: %d (%s) %s", rc, lsm_strerror(rc), lsm_errmsg(R->db));
}

static void model_run(const cfg *c)
{
    run R_, *R = &R_;
    memset(R, 0, sizeof *R);
    R->c = c;
    R->seed = test_seed(c->name, c->seed);
    trng_seed(&R->r, R->seed);
    R->tmp = tmpdir_new("model");
    R->dir = path_join(R->tmp, "db");
    R->m = model_new();
    make_keys(R);
    db_open(R);
    long ops = test_scale(c->ops);
    long snap_every = c->reopen_every / 2 + 1;
    for (R->op = 1; R->op <= ops; R->op++) {
        one_op(R);
        if (R->op % 997 == 0)
            seeks(R, 10);
        if (R->op % snap_every == snap_every / 3 && !R->snap) {
            int rc = lsm_iter_new(R->db, &R->snap);
            if (rc != LSM_OK)
                FAILR(R, "lsm_iter_new: %d", rc);
            R->snap_model = model_clone(R->m);
            R->snap_until = R->op + 3000;
        }
        if (R->snap && R->op >= R->snap_until)
            snapshot_end(R);
        if (R->op % c->scan_every == 0)
            check_db_equals_model(R->db, R->m, ctx(R, "full scan"));
        if (R->op % c->compact_every == 0) {
            int rc = lsm_compact(R->db);
            if (rc != LSM_OK)
                FAILR(R, "lsm_compact: %d (%s) %s", rc, lsm_strerror(rc), lsm_errmsg(R->db));
            check_db_equals_model(R->db, R->m, ctx(R, "after compact"));
        } else if (R->op % (c->compact_every / 7) == 0) {
            compact_some_range(R);
            R->ranges++;
            check_db_equals_model(R->db, R->m, ctx(R, "after compact_range"));
        }
        if (R->op % c->reopen_every == 0) {
            snapshot_end(R);
            db_close(R);
            db_open(R);
            check_db_equals_model(R->db, R->m, ctx(R, "after reopen"));
        }
    }
    snapshot_end(R);
    check_db_equals_model(R->db, R->m, ctx(R, "final"));
    db_close(R);
    printf("# %s: %ld ops, %zu live keys, %" PRIu64 " flushes, %" PRIu64 " compactions, %d "
           "lsm_compact_range calls\n", c->name, ops, model_count(R->m), R->flushes,
           R->compactions, R->ranges);
    db_open(R);
    check_db_equals_model(R->db, R->m, ctx(R, "final reopen"));
    db_close(R);

    for (int i = 0; i < R->nkeys; i++)
        free(R->keys[i]);
    free(R->keys);
    free(R->klens);
    free(R->vbuf);
    model_free(R->m);
    tmpdir_remove(R->tmp);
    free(R->tmp);
    free(R->dir);
}

static void test_model_main(void **state)
{
    (void)state;
    cfg c = { .name = "model_main", .seed = 20250101, .ops = 200000, .nkeys = 3000,
              .memtable = 64 << 10, .reopen_every = 25000, .compact_every = 70000,
              .scan_every = 10000, .big_value_permille = 2, .background = 1 };
    model_run(&c);
}

static void test_model_hot_keys(void **state)
{
    (void)state;
    /* A tiny key space: nearly every write overwrites or deletes something already in a table. */
    cfg c = { .name = "model_hot_keys", .seed = 777, .ops = 60000, .nkeys = 60,
              .memtable = 32 << 10, .reopen_every = 9000, .compact_every = 30000,
              .scan_every = 2000, .big_value_permille = 0, .background = 1 };
    model_run(&c);
}

static void test_model_manual_compaction(void **state)
{
    (void)state;
    /* No background compaction: level 0 grows deep until lsm_compact. */
    cfg c = { .name = "model_manual_compaction", .seed = 4242, .ops = 60000, .nkeys = 1500,
              .memtable = 64 << 10, .reopen_every = 16000, .compact_every = 40000,
              .scan_every = 8000, .big_value_permille = 1, .background = 0 };
    model_run(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_main),
        cmocka_unit_test(test_model_hot_keys),
        cmocka_unit_test(test_model_manual_compaction),
    };
    return cmocka_run_group_tests_name("engine randomized model (test_model)", tests, NULL, NULL);
}
