/*
 * test_cache.c — unit tests of the sharded LRU cache (engine/cache.c): eviction by charge in LRU
 * order, pinned entries surviving eviction, replace and erase, deleters running exactly once and
 * only when an entry is both out of the cache and unreferenced, capacity 0, and a multithreaded
 * hammer that checks every handle still holds the value of its own key.
 *
 * The cache splits its capacity over 16 shards chosen by hash, so the tests only assert what holds
 * whatever the shard of each key: bounds on usage, survival of the entry used last, and eviction of
 * an entry nobody touches while far more than the capacity flows through.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include "cache.h"

typedef struct tval {
    uint64_t id, off;            /* the key it was inserted under */
    atomic_int deleted;          /* how many times the deleter ran on it */
} tval;

static atomic_long deletions;

static void tdeleter(uint64_t id, uint64_t off, void *value)
{
    tval *v = value;
    assert_int_equal(v->id, id);
    assert_int_equal(v->off, off);
    atomic_fetch_add(&v->deleted, 1);
    atomic_fetch_add(&deletions, 1);
}

static void tfree(uint64_t id, uint64_t off, void *value)
{
    (void)id;
    (void)off;
    free(value);
}

static tval *tval_new(uint64_t id, uint64_t off)
{
    tval *v = calloc(1, sizeof(*v));
    v->id = id;
    v->off = off;
    atomic_init(&v->deleted, 0);
    return v;
}

static int present(cache *c, uint64_t id, uint64_t off)
{
    cache_handle *h = cache_lookup(c, id, off);
    cache_release(c, h);
    return h != NULL;
}

static int setup(void **state)
{
    (void)state;
    atomic_store(&deletions, 0);
    return 0;
}

static void test_insert_lookup_stats(void **state)
{
    (void)state;
    cache *c = cache_new(1 << 20);
    tval *v = tval_new(7, 4096);
    assert_null(cache_lookup(c, 7, 4096));
    cache_handle *h = cache_insert(c, 7, 4096, v, 100, tdeleter);
    assert_ptr_equal(cache_value(h), v);
    assert_int_equal(cache_usage(c), 100);
    cache_release(c, h);
    h = cache_lookup(c, 7, 4096);
    assert_non_null(h);
    assert_ptr_equal(cache_value(h), v);
    cache_release(c, h);
    assert_null(cache_lookup(c, 7, 4097));
    assert_null(cache_lookup(c, 8, 4096));
    uint64_t hits, misses;
    cache_stats(c, &hits, &misses);
    assert_int_equal(hits, 1);
    assert_int_equal(misses, 3);
    assert_int_equal(atomic_load(&v->deleted), 0);
    cache_free(c);
    assert_int_equal(atomic_load(&v->deleted), 1);
    free(v);
    cache_free(NULL);
    cache_release(NULL, NULL);
}

static void test_new_id(void **state)
{
    (void)state;
    cache *c = cache_new(0);
    uint64_t prev = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t id = cache_new_id(c);
        assert_true(id != 0);
        assert_true(id > prev);
        prev = id;
    }
    cache_free(c);
}

static void test_lru_eviction_by_charge(void **state)
{
    (void)state;
    enum { CAP = 16 * 100, N = 2000, CHARGE = 10 };
    cache *c = cache_new(CAP);
    tval **v = calloc(N + 1, sizeof(*v));
    v[N] = tval_new(1, 999999);
    cache_release(c, cache_insert(c, 1, 999999, v[N], CHARGE, tdeleter));   /* never touched */
    tval *hot = tval_new(2, 0);
    cache_release(c, cache_insert(c, 2, 0, hot, CHARGE, tdeleter));          /* used after every insert */
    for (int i = 0; i < N; i++) {
        v[i] = tval_new(1, (uint64_t)i);
        cache_release(c, cache_insert(c, 1, (uint64_t)i, v[i], CHARGE, tdeleter));
        assert_true(present(c, 2, 0));
        assert_true(present(c, 1, (uint64_t)i));        /* the newest entry always fits */
        assert_true(cache_usage(c) <= CAP);
    }
    assert_false(present(c, 1, 999999));
    assert_int_equal(atomic_load(&v[N]->deleted), 1);
    /* Everything gone from the cache was deleted exactly once; what remains was not. */
    long gone = 0;
    for (int i = 0; i < N; i++) {
        int d = atomic_load(&v[i]->deleted);
        assert_true(d == 0 || d == 1);
        assert_int_equal(d, !present(c, 1, (uint64_t)i));
        gone += d;
    }
    assert_int_equal(cache_usage(c), (size_t)(N - gone + 1) * CHARGE);
    assert_true(gone >= N - CAP / CHARGE);
    cache_free(c);
    assert_int_equal(atomic_load(&deletions), N + 2);
    for (int i = 0; i <= N; i++) {
        assert_int_equal(atomic_load(&v[i]->deleted), 1);
        free(v[i]);
    }
    free(v);
    free(hot);
}

static void test_pinned_entries_survive(void **state)
{
    (void)state;
    enum { CAP = 16 * 100, N = 3000 };
    cache *c = cache_new(CAP);
    tval *pv = tval_new(3, 3);
    cache_handle *pin = cache_insert(c, 3, 3, pv, 60, tdeleter);
    tval **v = calloc(N, sizeof(*v));
    for (int i = 0; i < N; i++) {
        v[i] = tval_new(4, (uint64_t)i);
        cache_release(c, cache_insert(c, 4, (uint64_t)i, v[i], 10, tdeleter));
    }
    /* Still cached, not deleted, and usage accounts for it on top of the evictable entries. */
    assert_int_equal(atomic_load(&pv->deleted), 0);
    assert_true(present(c, 3, 3));
    assert_ptr_equal(cache_value(pin), pv);
    assert_true(cache_usage(c) <= CAP + 60);
    cache_release(c, pin);
    /* Once released it is an ordinary LRU entry: enough traffic evicts it, exactly once. */
    for (int i = 0; i < N; i++)
        cache_release(c, cache_insert(c, 5, (uint64_t)i, tval_new(5, (uint64_t)i), 10, tfree));
    assert_false(present(c, 3, 3));
    assert_int_equal(atomic_load(&pv->deleted), 1);
    cache_free(c);
    assert_int_equal(atomic_load(&pv->deleted), 1);
    for (int i = 0; i < N; i++) {
        assert_int_equal(atomic_load(&v[i]->deleted), 1);
        free(v[i]);
    }
    free(v);
    free(pv);
}

static void test_oversized_entry(void **state)
{
    (void)state;
    cache *c = cache_new(16 * 1000);
    tval *v = tval_new(1, 1);
    cache_handle *h = cache_insert(c, 1, 1, v, 1 << 20, tdeleter);
    assert_ptr_equal(cache_value(h), v);      /* usable while held */
    assert_int_equal(atomic_load(&v->deleted), 0);
    cache_release(c, h);
    assert_int_equal(atomic_load(&v->deleted), 1);
    assert_int_equal(cache_usage(c), 0);
    assert_false(present(c, 1, 1));
    cache_free(c);
    assert_int_equal(atomic_load(&v->deleted), 1);
    free(v);
}

static void test_capacity_zero(void **state)
{
    (void)state;
    cache *c = cache_new(0);
    tval *a = tval_new(1, 1), *b = tval_new(1, 1);
    cache_handle *h = cache_insert(c, 1, 1, a, 1, tdeleter);
    cache_handle *h2 = cache_lookup(c, 1, 1);   /* pinned entries stay findable */
    assert_ptr_equal(h2, h);
    cache_release(c, h2);
    cache_release(c, h);
    assert_int_equal(atomic_load(&a->deleted), 1);
    assert_false(present(c, 1, 1));
    assert_int_equal(cache_usage(c), 0);
    cache_release(c, cache_insert(c, 1, 1, b, 0, tdeleter));
    assert_int_equal(atomic_load(&b->deleted), 1);
    cache_free(c);
    assert_int_equal(atomic_load(&deletions), 2);
    free(a);
    free(b);
}

static void test_replace(void **state)
{
    (void)state;
    cache *c = cache_new(1 << 20);
    tval *v1 = tval_new(9, 1), *v2 = tval_new(9, 1), *v3 = tval_new(9, 1);
    cache_handle *h1 = cache_insert(c, 9, 1, v1, 10, tdeleter);
    cache_handle *h2 = cache_insert(c, 9, 1, v2, 20, tdeleter);
    assert_int_equal(cache_usage(c), 20);
    cache_handle *l = cache_lookup(c, 9, 1);
    assert_ptr_equal(cache_value(l), v2);
    cache_release(c, l);
    assert_ptr_equal(cache_value(h1), v1);      /* the old handle still reads the old value */
    assert_int_equal(atomic_load(&v1->deleted), 0);
    cache_release(c, h1);
    assert_int_equal(atomic_load(&v1->deleted), 1);
    cache_release(c, h2);
    /* Replacing an unpinned entry deletes it at once. */
    cache_release(c, cache_insert(c, 9, 1, v3, 30, tdeleter));
    assert_int_equal(atomic_load(&v2->deleted), 1);
    assert_int_equal(cache_usage(c), 30);
    cache_free(c);
    assert_int_equal(atomic_load(&v3->deleted), 1);
    assert_int_equal(atomic_load(&deletions), 3);
    free(v1);
    free(v2);
    free(v3);
}

static void test_erase(void **state)
{
    (void)state;
    cache *c = cache_new(1 << 20);
    tval *a = tval_new(1, 10), *b = tval_new(1, 20);
    cache_release(c, cache_insert(c, 1, 10, a, 5, tdeleter));
    cache_erase(c, 1, 10);
    assert_int_equal(atomic_load(&a->deleted), 1);
    assert_false(present(c, 1, 10));
    cache_erase(c, 1, 10);                      /* absent: nothing happens */
    cache_erase(c, 77, 77);

    cache_handle *h = cache_insert(c, 1, 20, b, 5, tdeleter);
    cache_erase(c, 1, 20);
    assert_false(present(c, 1, 20));
    assert_int_equal(cache_usage(c), 0);
    assert_int_equal(atomic_load(&b->deleted), 0);  /* pinned: deleted on release */
    assert_ptr_equal(cache_value(h), b);
    cache_release(c, h);
    assert_int_equal(atomic_load(&b->deleted), 1);
    cache_free(c);
    assert_int_equal(atomic_load(&deletions), 2);
    free(a);
    free(b);
}

/* ---- multithreaded hammer ---- */

typedef struct hval {
    uint64_t id, off;
    atomic_int deleted;
} hval;

static atomic_long h_inserted, h_deleted;

static void hdeleter(uint64_t id, uint64_t off, void *value)
{
    hval *v = value;
    if (v->id != id || v->off != off || atomic_fetch_add(&v->deleted, 1) != 0)
        abort();
    atomic_fetch_add(&h_deleted, 1);
    free(v);
}

typedef struct harg {
    cache *c;
    uint64_t seed;
    long ops;
    long bad;
} harg;

static uint64_t hrand(uint64_t *s)
{
    uint64_t z = (*s += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static void *hammer(void *p)
{
    harg *a = p;
    cache_handle *held[8] = { 0 };
    for (long i = 0; i < a->ops; i++) {
        uint64_t r = hrand(&a->seed);
        uint64_t id = 1 + (r >> 8) % 4, off = (r >> 16) % 500;
        int slot = (int)((r >> 40) % 8);
        cache_handle *h = NULL;
        switch (r % 10) {
        case 0: case 1: case 2: {
            hval *v = malloc(sizeof(*v));
            v->id = id;
            v->off = off;
            atomic_init(&v->deleted, 0);
            atomic_fetch_add(&h_inserted, 1);
            h = cache_insert(a->c, id, off, v, 1 + (r >> 50) % 64, hdeleter);
            break;
        }
        case 3:
            cache_erase(a->c, id, off);
            break;
        default:
            h = cache_lookup(a->c, id, off);
            break;
        }
        if (h) {
            hval *v = cache_value(h);
            if (v->id != id || v->off != off || atomic_load(&v->deleted))
                a->bad++;
            /* Keep some handles across operations so that pinned entries meet eviction. */
            cache_release(a->c, held[slot]);
            held[slot] = h;
        }
    }
    for (int i = 0; i < 8; i++)
        cache_release(a->c, held[i]);
    return NULL;
}

static void test_multithreaded_hammer(void **state)
{
    (void)state;
    enum { T = 4 };
    atomic_store(&h_inserted, 0);
    atomic_store(&h_deleted, 0);
    cache *c = cache_new(16 * 500);
    pthread_t th[T];
    harg args[T];
    for (int i = 0; i < T; i++) {
        args[i] = (harg){ .c = c, .seed = (uint64_t)i * 1000 + 1, .ops = 200000, .bad = 0 };
        assert_int_equal(pthread_create(&th[i], NULL, hammer, &args[i]), 0);
    }
    for (int i = 0; i < T; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(args[i].bad, 0);
    }
    assert_true(cache_usage(c) <= 16 * 500);
    uint64_t hits, misses;
    cache_stats(c, &hits, &misses);
    assert_true(hits > 0 && misses > 0);
    cache_free(c);
    assert_int_equal(atomic_load(&h_deleted), atomic_load(&h_inserted));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_insert_lookup_stats, setup),
        cmocka_unit_test_setup(test_new_id, setup),
        cmocka_unit_test_setup(test_lru_eviction_by_charge, setup),
        cmocka_unit_test_setup(test_pinned_entries_survive, setup),
        cmocka_unit_test_setup(test_oversized_entry, setup),
        cmocka_unit_test_setup(test_capacity_zero, setup),
        cmocka_unit_test_setup(test_replace, setup),
        cmocka_unit_test_setup(test_erase, setup),
        cmocka_unit_test_setup(test_multithreaded_hammer, setup),
    };
    return cmocka_run_group_tests_name("cache", tests, NULL, NULL);
}
