/*
 * test_iter.c — unit tests for the merging iterator and the error iterator.
 *
 * Children are simple array-backed iterators defined here (one can be told to fail after k
 * entries), so the merge is checked against a plain sorted array and nothing else in the engine.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include "iter.h"

static uint64_t test_rng(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* One entry: an internal key and its value, both owned by the test's pool. */
typedef struct ent {
    slice k;
    slice v;
} ent;

static int ent_cmp(const void *a, const void *b)
{
    return ikey_cmp(((const ent *)a)->k, ((const ent *)b)->k);
}

/* ---- array-backed child iterator ---- */

typedef struct vec_iter {
    iiter base;                             /* ops; first member */
    ent *e;                                 /* sorted entries, borrowed from the test */
    size_t n;                               /* how many */
    size_t pos;                             /* current index; n when exhausted */
    size_t fail_at;                         /* position at which the child fails (SIZE_MAX: never) */
    int failed;                             /* reached fail_at */
} vec_iter;

static void vec_settle(vec_iter *v)
{
    if (v->pos >= v->fail_at && v->pos < v->n)
        v->failed = 1;
}

static void vec_seek(iiter *it, slice k)
{
    vec_iter *v = (vec_iter *)it;
    size_t lo = 0, hi = v->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ikey_cmp(v->e[mid].k, k) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    v->pos = lo;
    vec_settle(v);
}

static void vec_seek_first(iiter *it)
{
    vec_iter *v = (vec_iter *)it;
    v->pos = 0;
    vec_settle(v);
}

static int vec_valid(const iiter *it)
{
    const vec_iter *v = (const vec_iter *)it;
    return !v->failed && v->pos < v->n;
}

static void vec_next(iiter *it)
{
    vec_iter *v = (vec_iter *)it;
    assert_true(vec_valid(it));
    v->pos++;
    vec_settle(v);
}

static slice vec_key(const iiter *it)
{
    const vec_iter *v = (const vec_iter *)it;
    assert_true(vec_valid(it));
    return v->e[v->pos].k;
}

static slice vec_value(const iiter *it)
{
    const vec_iter *v = (const vec_iter *)it;
    assert_true(vec_valid(it));
    return v->e[v->pos].v;
}

static int vec_status(const iiter *it, char *err)
{
    const vec_iter *v = (const vec_iter *)it;
    if (!v->failed)
        return LSM_OK;
    return err_set(err, LSM_CORRUPT, "child failed at %zu", v->fail_at);
}

static void vec_free(iiter *it)
{
    vec_iter *v = (vec_iter *)it;
    free(v->e);
    free(v);
}

static const iiter_ops vec_ops = {
    vec_seek, vec_seek_first, vec_valid, vec_next, vec_key, vec_value, vec_status, vec_free,
};

/* Takes a copy of e[0..n), sorts it, and iterates it. */
static iiter *vec_new(const ent *e, size_t n, size_t fail_at)
{
    vec_iter *v = calloc(1, sizeof(*v));
    v->base.ops = &vec_ops;
    v->e = malloc(sizeof(ent) * (n ? n : 1));
    if (n)
        memcpy(v->e, e, sizeof(ent) * n);
    qsort(v->e, n, sizeof(ent), ent_cmp);
    v->n = n;
    v->pos = n;
    v->fail_at = fail_at;
    return &v->base;
}

/* ---- a pool of random entries ---- */

typedef struct pool {
    ent *e;                                 /* entries, sorted after pool_make */
    size_t n;
    uint8_t *bytes;                         /* backing store for every key and value */
} pool;

/* n distinct internal keys (unique sequence numbers), many sharing user keys and prefixes. */
static void pool_make(pool *p, size_t n, uint64_t seed)
{
    p->n = n;
    p->e = malloc(sizeof(ent) * (n ? n : 1));
    p->bytes = calloc(n * 64 + 1, 1);
    uint8_t *w = p->bytes;
    for (size_t i = 0; i < n; i++) {
        size_t kl = 1 + test_rng(&seed) % 12;
        uint8_t *k = w;
        for (size_t j = 0; j < kl; j++)
            k[j] = (uint8_t)("\0az\xff"[test_rng(&seed) % 4]);
        enc_fixed64(k + kl, ikey_pack(i + 1, (int)(test_rng(&seed) % 2)));
        w += kl + LSM_TRAILER;
        size_t vl = test_rng(&seed) % 20;
        snprintf((char *)w, 32, "%zu", i);
        p->e[i].k.p = k;
        p->e[i].k.n = kl + LSM_TRAILER;
        p->e[i].v.p = w;
        p->e[i].v.n = vl;
        w += 32;
    }
}

static void pool_free(pool *p)
{
    free(p->e);
    free(p->bytes);
}

/* Deals the pool's entries at random to nkids children (some may get none). */
static iiter *merge_of(const pool *p, int nkids, uint64_t seed, int fail_kid, size_t fail_at)
{
    ent **parts = calloc((size_t)nkids + 1, sizeof(ent *));
    size_t *cnt = calloc((size_t)nkids + 1, sizeof(size_t));
    for (int i = 0; i < nkids; i++)
        parts[i] = malloc(sizeof(ent) * (p->n ? p->n : 1));
    for (size_t i = 0; i < p->n; i++) {
        int c = (int)(test_rng(&seed) % (uint64_t)nkids);
        parts[c][cnt[c]++] = p->e[i];
    }
    iiter **kids = malloc(sizeof(iiter *) * ((size_t)nkids + 1));
    for (int i = 0; i < nkids; i++) {
        kids[i] = vec_new(parts[i], cnt[i], i == fail_kid ? fail_at : SIZE_MAX);
        free(parts[i]);
    }
    iiter *m = merge_iter_new(kids, nkids);
    free(kids);                             /* the merge owns the children, not the array */
    free(parts);
    free(cnt);
    return m;
}

static void assert_ent(iiter *it, const ent *want)
{
    assert_true(iiter_valid(it));
    slice k = iiter_key(it), v = iiter_value(it);
    assert_int_equal(k.n, want->k.n);
    assert_memory_equal(k.p, want->k.p, k.n);
    assert_int_equal(v.n, want->v.n);
    if (v.n)
        assert_memory_equal(v.p, want->v.p, v.n);
}

/* Walks the whole merge and compares with the sorted pool. */
static void check_full(iiter *it, const pool *p)
{
    size_t i = 0;
    for (iiter_seek_first(it); iiter_valid(it); iiter_next(it), i++) {
        assert_true(i < p->n);
        assert_ent(it, &p->e[i]);
    }
    assert_int_equal(i, p->n);
    assert_int_equal(iiter_status(it, NULL), LSM_OK);
}

static void test_merge_random(void **state)
{
    (void)state;
    static const int kids[] = { 2, 3, 8, 37, 300 };
    for (size_t t = 0; t < sizeof(kids) / sizeof(kids[0]); t++) {
        pool p;
        pool_make(&p, 20000, 100 + t);
        iiter *it = merge_of(&p, kids[t], 7 + t, -1, 0);
        qsort(p.e, p.n, sizeof(ent), ent_cmp);
        check_full(it, &p);
        check_full(it, &p);                 /* repositioning works after exhaustion */
        iiter_free(it);
        pool_free(&p);
    }
}

static void test_merge_seek(void **state)
{
    (void)state;
    pool p;
    pool_make(&p, 5000, 11);
    iiter *it = merge_of(&p, 9, 12, -1, 0);
    qsort(p.e, p.n, sizeof(ent), ent_cmp);
    uint64_t seed = 5;
    uint8_t kb[32];
    for (int t = 0; t < 2000; t++) {
        /* Half exact keys, half random probes that mostly fall between keys. */
        slice target;
        if (t % 2 == 0) {
            target = p.e[test_rng(&seed) % p.n].k;
        } else {
            size_t kl = 1 + test_rng(&seed) % 12;
            for (size_t j = 0; j < kl; j++)
                kb[j] = (uint8_t)("\0az\xff"[test_rng(&seed) % 4]);
            enc_fixed64(kb + kl, ikey_pack(test_rng(&seed) % (p.n + 2), (int)(test_rng(&seed) % 256)));
            target.p = kb;
            target.n = kl + LSM_TRAILER;
        }
        size_t lo = 0, hi = p.n;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (ikey_cmp(p.e[mid].k, target) < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        iiter_seek(it, target);
        for (size_t i = lo; i < lo + 5 && i < p.n; i++, iiter_next(it))
            assert_ent(it, &p.e[i]);
        if (lo + 5 > p.n)
            assert_false(iiter_valid(it));
    }
    iiter_free(it);
    pool_free(&p);
}

static void test_merge_zero_children(void **state)
{
    (void)state;
    iiter *it = merge_iter_new(NULL, 0);
    iiter_seek_first(it);
    assert_false(iiter_valid(it));
    uint8_t k[9] = "a";
    enc_fixed64(k + 1, ikey_pack(1, 1));
    slice s = { k, 9 };
    iiter_seek(it, s);
    assert_false(iiter_valid(it));
    assert_int_equal(iiter_status(it, NULL), LSM_OK);
    iiter_free(it);
}

static void test_merge_one_child(void **state)
{
    (void)state;
    pool p;
    pool_make(&p, 1000, 3);
    iiter *it = merge_of(&p, 1, 4, -1, 0);
    qsort(p.e, p.n, sizeof(ent), ent_cmp);
    check_full(it, &p);
    iiter_free(it);
    pool_free(&p);
}

static void test_merge_empty_children(void **state)
{
    (void)state;
    pool p;
    pool_make(&p, 3, 8);
    iiter *kids[4];
    kids[0] = vec_new(NULL, 0, SIZE_MAX);
    kids[1] = vec_new(p.e, 3, SIZE_MAX);
    kids[2] = vec_new(NULL, 0, SIZE_MAX);
    kids[3] = error_iter_new(LSM_OK, NULL);
    iiter *it = merge_iter_new(kids, 4);
    qsort(p.e, p.n, sizeof(ent), ent_cmp);
    check_full(it, &p);
    iiter_free(it);
    pool_free(&p);
}

/* A child failing part way: the merge stops rather than skip that child's entries, and says why. */
static void test_merge_child_error(void **state)
{
    (void)state;
    pool p;
    pool_make(&p, 4000, 21);
    iiter *it = merge_of(&p, 6, 22, 2, 100);
    qsort(p.e, p.n, sizeof(ent), ent_cmp);
    size_t i = 0;
    for (iiter_seek_first(it); iiter_valid(it); iiter_next(it), i++)
        assert_ent(it, &p.e[i]);            /* everything before the failure is in order */
    assert_true(i < p.n);
    char err[LSM_ERRLEN] = "";
    assert_int_equal(iiter_status(it, err), LSM_CORRUPT);
    assert_string_equal(err, "child failed at 100");

    /* Failing at the very first entry: invalid straight after the seek. */
    iiter_free(it);
    it = merge_of(&p, 6, 22, 4, 0);
    iiter_seek_first(it);
    assert_false(iiter_valid(it));
    assert_int_equal(iiter_status(it, NULL), LSM_CORRUPT);
    iiter_free(it);
    pool_free(&p);
}

static void test_merge_error_iter_child(void **state)
{
    (void)state;
    pool p;
    pool_make(&p, 50, 31);
    iiter *kids[3];
    kids[0] = vec_new(p.e, 25, SIZE_MAX);
    kids[1] = error_iter_new(LSM_IOERR, "read 000123.sst: Input/output error");
    kids[2] = vec_new(p.e + 25, 25, SIZE_MAX);
    iiter *it = merge_iter_new(kids, 3);
    iiter_seek_first(it);
    assert_false(iiter_valid(it));
    char err[LSM_ERRLEN] = "";
    assert_int_equal(iiter_status(it, err), LSM_IOERR);
    assert_string_equal(err, "read 000123.sst: Input/output error");
    iiter_seek(it, p.e[0].k);
    assert_false(iiter_valid(it));
    iiter_free(it);
    pool_free(&p);
}

static void test_error_iter(void **state)
{
    (void)state;
    char err[LSM_ERRLEN] = "untouched";
    iiter *it = error_iter_new(LSM_OK, NULL);
    iiter_seek_first(it);
    assert_false(iiter_valid(it));
    assert_int_equal(iiter_status(it, err), LSM_OK);
    assert_string_equal(err, "untouched");
    iiter_free(it);

    it = error_iter_new(LSM_CORRUPT, "bad block at 4096");
    iiter_seek_first(it);
    assert_false(iiter_valid(it));
    assert_int_equal(iiter_status(it, err), LSM_CORRUPT);
    assert_string_equal(err, "bad block at 4096");
    assert_int_equal(iiter_status(it, NULL), LSM_CORRUPT);
    iiter_free(it);
    iiter_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_merge_random),
        cmocka_unit_test(test_merge_seek),
        cmocka_unit_test(test_merge_zero_children),
        cmocka_unit_test(test_merge_one_child),
        cmocka_unit_test(test_merge_empty_children),
        cmocka_unit_test(test_merge_child_error),
        cmocka_unit_test(test_merge_error_iter_child),
        cmocka_unit_test(test_error_iter),
    };
    return cmocka_run_group_tests_name("iter", tests, NULL, NULL);
}
