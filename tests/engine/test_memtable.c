/*
 * test_memtable.c — unit tests for the skiplist memtable: snapshot reads, deletes, odd keys and
 * values, iteration order against a sorted reference, seek, readers racing a writer, and usage.
 *
 * Every check compares against an independently built expectation (a sorted array, a formula for
 * each value) rather than against the memtable's own output, so a bug cannot confirm itself.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include "memtable.h"

static uint64_t test_rng(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void put(memtable *m, uint64_t seq, const char *k, const char *v)
{
    memtable_add(m, seq, LSM_TYPE_VALUE, k, strlen(k), v, strlen(v));
}

static void assert_get(memtable *m, const void *k, size_t kn, uint64_t snap, int want_type,
                       const char *want)
{
    int type = -1;
    slice v = { NULL, 0 };
    assert_int_equal(memtable_get(m, k, kn, snap, &type, &v), 1);
    assert_int_equal(type, want_type);
    if (want_type == LSM_TYPE_VALUE) {
        assert_int_equal(v.n, strlen(want));
        if (v.n)
            assert_memory_equal(v.p, want, v.n);
    }
}

static void assert_missing(memtable *m, const void *k, size_t kn, uint64_t snap)
{
    int type = -1;
    slice v = { NULL, 0 };
    assert_int_equal(memtable_get(m, k, kn, snap, &type, &v), 0);
}

static void test_snapshots(void **state)
{
    (void)state;
    memtable *m = memtable_new();
    put(m, 5, "k", "v5");
    put(m, 1, "k", "v1");
    put(m, 9, "k", "v9");
    put(m, 3, "j", "j3");
    put(m, 7, "l", "l7");
    assert_missing(m, "k", 1, 0);
    for (uint64_t s = 1; s < 5; s++)
        assert_get(m, "k", 1, s, LSM_TYPE_VALUE, "v1");
    for (uint64_t s = 5; s < 9; s++)
        assert_get(m, "k", 1, s, LSM_TYPE_VALUE, "v5");
    assert_get(m, "k", 1, 9, LSM_TYPE_VALUE, "v9");
    assert_get(m, "k", 1, LSM_MAX_SEQ, LSM_TYPE_VALUE, "v9");
    assert_missing(m, "j", 1, 2);
    assert_get(m, "j", 1, 3, LSM_TYPE_VALUE, "j3");
    assert_missing(m, "l", 1, 6);
    assert_missing(m, "m", 1, LSM_MAX_SEQ);
    assert_missing(m, "a", 1, LSM_MAX_SEQ);
    assert_int_equal(memtable_entries(m), 5);
    memtable_unref(m);
}

static void test_deletes(void **state)
{
    (void)state;
    memtable *m = memtable_new();
    put(m, 1, "key", "old");
    memtable_add(m, 2, LSM_TYPE_DELETE, "key", 3, "ignored", 7);
    put(m, 3, "key", "new");
    assert_get(m, "key", 3, 1, LSM_TYPE_VALUE, "old");
    int type = -1;
    slice v = { NULL, 99 };
    assert_int_equal(memtable_get(m, "key", 3, 2, &type, &v), 1);
    assert_int_equal(type, LSM_TYPE_DELETE);
    assert_int_equal(v.n, 0);
    assert_get(m, "key", 3, 3, LSM_TYPE_VALUE, "new");
    memtable_unref(m);
}

static void test_empty_values(void **state)
{
    (void)state;
    memtable *m = memtable_new();
    memtable_add(m, 1, LSM_TYPE_VALUE, "e", 1, NULL, 0);
    memtable_add(m, 2, LSM_TYPE_VALUE, "f", 1, "x", 1);
    memtable_add(m, 3, LSM_TYPE_VALUE, "f", 1, "", 0);
    int type = -1;
    slice v = { NULL, 99 };
    assert_int_equal(memtable_get(m, "e", 1, 10, &type, &v), 1);
    assert_int_equal(type, LSM_TYPE_VALUE);
    assert_int_equal(v.n, 0);
    assert_int_equal(memtable_get(m, "f", 1, 10, &type, &v), 1);
    assert_int_equal(v.n, 0);
    assert_get(m, "f", 1, 2, LSM_TYPE_VALUE, "x");
    memtable_unref(m);
}

static void test_large_values(void **state)
{
    (void)state;
    memtable *m = memtable_new();
    size_t sizes[] = { 5u << 20, 3u << 20, 70000, 64 * 1024 + 1, 7u << 20 };
    int nv = (int)(sizeof(sizes) / sizeof(sizes[0]));
    uint8_t *vals[8];
    size_t total = 0;
    uint64_t seed = 42;
    for (int i = 0; i < nv; i++) {
        vals[i] = malloc(sizes[i]);
        for (size_t j = 0; j < sizes[i]; j++)
            vals[i][j] = (uint8_t)test_rng(&seed);
        char k[16];
        snprintf(k, sizeof(k), "big%d", i);
        size_t before = memtable_usage(m);
        memtable_add(m, (uint64_t)i + 1, LSM_TYPE_VALUE, k, strlen(k), vals[i], sizes[i]);
        assert_true(memtable_usage(m) >= before + sizes[i]);
        put(m, 100 + (uint64_t)i, "small", "s");
        total += sizes[i];
    }
    assert_true(memtable_usage(m) >= total);
    for (int i = 0; i < nv; i++) {
        char k[16];
        snprintf(k, sizeof(k), "big%d", i);
        int type;
        slice v;
        assert_int_equal(memtable_get(m, k, strlen(k), LSM_MAX_SEQ, &type, &v), 1);
        assert_int_equal(v.n, sizes[i]);
        assert_memory_equal(v.p, vals[i], sizes[i]);
        free(vals[i]);
    }
    memtable_unref(m);
}

/* Keys that are prefixes of each other and contain 0x00 / 0xff must each find only themselves. */
static void test_prefix_and_binary_keys(void **state)
{
    (void)state;
    static const struct { const char *k; size_t n; } keys[] = {
        { "a", 1 }, { "a\0", 2 }, { "a\0\0", 3 }, { "ab", 2 }, { "a\xff", 2 },
        { "\0", 1 }, { "\0\0", 2 }, { "\xff", 1 }, { "\xff\xff\xff\xff\xff\xff\xff\xff\xff", 9 },
        { "abcdefgh", 8 }, { "abcdefghi", 9 }, { "abcdefgh\0", 9 }, { "abcdefg", 7 },
        { "abcdefgh\xff", 9 }, { "abcdefgi", 8 }, { "\0\0\0\0\0\0\0\0", 8 },
    };
    int n = (int)(sizeof(keys) / sizeof(keys[0]));
    memtable *m = memtable_new();
    for (int i = 0; i < n; i++) {
        char v[16];
        snprintf(v, sizeof(v), "v%d", i);
        memtable_add(m, (uint64_t)(n - i), LSM_TYPE_VALUE, keys[i].k, keys[i].n, v, strlen(v));
    }
    for (int i = 0; i < n; i++) {
        char v[16];
        snprintf(v, sizeof(v), "v%d", i);
        assert_get(m, keys[i].k, keys[i].n, LSM_MAX_SEQ, LSM_TYPE_VALUE, v);
    }
    assert_missing(m, "abc", 3, LSM_MAX_SEQ);
    assert_missing(m, "a\0\0\0", 4, LSM_MAX_SEQ);
    assert_missing(m, "abcdefgh\0\0", 10, LSM_MAX_SEQ);

    /* Iteration yields them in ukey_cmp order. */
    iiter *it = memtable_iter_new(m);
    int seen = 0;
    slice prev = { NULL, 0 };
    for (iiter_seek_first(it); iiter_valid(it); iiter_next(it), seen++) {
        slice k = iiter_key(it);
        if (prev.p) {
            assert_true(ukey_cmp(prev.p, prev.n - LSM_TRAILER, k.p, k.n - LSM_TRAILER) < 0);
        }
        prev = k;
    }
    assert_int_equal(seen, n);
    iiter_free(it);
    memtable_unref(m);
}

typedef struct ref_entry {
    uint8_t ikey[24];                       /* user key (klen bytes) + trailer */
    uint8_t klen;                           /* user key length */
    uint32_t id;                            /* index into the value formula */
} ref_entry;

static int ref_cmp(const void *a, const void *b)
{
    const ref_entry *x = a, *y = b;
    slice sx = { x->ikey, (size_t)x->klen + LSM_TRAILER };
    slice sy = { y->ikey, (size_t)y->klen + LSM_TRAILER };
    return ikey_cmp(sx, sy);
}

/* The value stored for entry id: deterministic, variable length (0..63). */
static size_t val_for(uint32_t id, uint8_t *out)
{
    size_t n = id % 64;
    uint64_t s = id;
    for (size_t i = 0; i < n; i++)
        out[i] = (uint8_t)test_rng(&s);
    return n;
}

#define ORDER_N 100000

static void test_iter_order_random(void **state)
{
    (void)state;
    ref_entry *ref = malloc(sizeof(ref_entry) * ORDER_N);
    memtable *m = memtable_new();
    uint64_t seed = 7;
    uint8_t val[64];
    for (uint32_t i = 0; i < ORDER_N; i++) {
        ref_entry *e = &ref[i];
        /* Short keys over a small alphabet give many shared prefixes and repeated keys. */
        e->klen = (uint8_t)(1 + test_rng(&seed) % 16);
        for (int j = 0; j < e->klen; j++)
            e->ikey[j] = (uint8_t)("\0ab\xff"[test_rng(&seed) % 4]);
        if (i % 3 == 0 && i > 0) {
            e->klen = ref[i - 1].klen;
            memcpy(e->ikey, ref[i - 1].ikey, e->klen);
        }
        e->id = i;
        uint64_t seq = (uint64_t)i + 1;
        int type = i % 11 == 0 ? LSM_TYPE_DELETE : LSM_TYPE_VALUE;
        enc_fixed64(e->ikey + e->klen, ikey_pack(seq, type));
        size_t vn = val_for(i, val);
        memtable_add(m, seq, type, e->ikey, e->klen, val, vn);
    }
    assert_int_equal(memtable_entries(m), ORDER_N);
    qsort(ref, ORDER_N, sizeof(ref_entry), ref_cmp);

    iiter *it = memtable_iter_new(m);
    memtable_unref(m);                      /* the iterator's reference keeps it alive */
    size_t i = 0;
    for (iiter_seek_first(it); iiter_valid(it); iiter_next(it), i++) {
        assert_true(i < ORDER_N);
        slice k = iiter_key(it);
        assert_int_equal(k.n, ref[i].klen + LSM_TRAILER);
        assert_memory_equal(k.p, ref[i].ikey, k.n);
        slice v = iiter_value(it);
        if (ikey_type(k) == LSM_TYPE_VALUE) {
            size_t vn = val_for(ref[i].id, val);
            assert_int_equal(v.n, vn);
            if (vn)
                assert_memory_equal(v.p, val, vn);
        } else {
            assert_int_equal(v.n, 0);
        }
    }
    assert_int_equal(i, ORDER_N);
    assert_int_equal(iiter_status(it, NULL), LSM_OK);

    /* Seek to every 97th reference key exactly, and just past it. */
    for (size_t j = 0; j < ORDER_N; j += 97) {
        slice want = { ref[j].ikey, (size_t)ref[j].klen + LSM_TRAILER };
        iiter_seek(it, want);
        assert_true(iiter_valid(it));
        assert_int_equal(ikey_cmp(iiter_key(it), want), 0);
        uint8_t past[24];
        memcpy(past, ref[j].ikey, ref[j].klen);
        uint64_t t = ikey_trailer(want);
        enc_fixed64(past + ref[j].klen, t - 1);  /* same user key, just older: sorts after */
        slice ps = { past, want.n };
        iiter_seek(it, ps);
        if (j + 1 < ORDER_N) {
            assert_true(iiter_valid(it));
            slice nk = { ref[j + 1].ikey, (size_t)ref[j + 1].klen + LSM_TRAILER };
            assert_int_equal(ikey_cmp(iiter_key(it), nk), 0);
        }
    }
    iiter_free(it);
    free(ref);
}

static void seek_to(iiter *it, const char *uk, uint64_t seq, int type, buf *b)
{
    b->len = 0;
    ikey_build(b, uk, strlen(uk), seq, type);
    slice s = { b->p, b->len };
    iiter_seek(it, s);
}

static void assert_at(iiter *it, const char *uk, uint64_t seq)
{
    assert_true(iiter_valid(it));
    slice k = iiter_key(it);
    assert_int_equal(k.n - LSM_TRAILER, strlen(uk));
    assert_memory_equal(k.p, uk, strlen(uk));
    assert_int_equal(ikey_seq(k), seq);
}

static void test_seek(void **state)
{
    (void)state;
    memtable *m = memtable_new();
    iiter *it = memtable_iter_new(m);
    buf b = { 0 };
    iiter_seek_first(it);
    assert_false(iiter_valid(it));
    seek_to(it, "a", LSM_MAX_SEQ, 0xff, &b);
    assert_false(iiter_valid(it));

    put(m, 10, "b", "b10");
    put(m, 20, "b", "b20");
    put(m, 15, "d", "d15");
    put(m, 30, "f", "f30");
    seek_to(it, "a", 1, LSM_TYPE_VALUE, &b);
    assert_at(it, "b", 20);
    seek_to(it, "b", LSM_MAX_SEQ, 0xff, &b);
    assert_at(it, "b", 20);
    seek_to(it, "b", 20, LSM_TYPE_VALUE, &b);
    assert_at(it, "b", 20);
    seek_to(it, "b", 19, 0xff, &b);
    assert_at(it, "b", 10);
    seek_to(it, "b", 9, 0xff, &b);
    assert_at(it, "d", 15);
    seek_to(it, "c", 100, LSM_TYPE_VALUE, &b);
    assert_at(it, "d", 15);
    iiter_next(it);
    assert_at(it, "f", 30);
    iiter_next(it);
    assert_false(iiter_valid(it));
    seek_to(it, "f", 29, 0xff, &b);
    assert_false(iiter_valid(it));
    seek_to(it, "g", LSM_MAX_SEQ, 0xff, &b);
    assert_false(iiter_valid(it));
    iiter_seek_first(it);
    assert_at(it, "b", 20);
    assert_int_equal(iiter_value(it).n, 3);
    assert_memory_equal(iiter_value(it).p, "b20", 3);
    buf_free(&b);
    iiter_free(it);
    memtable_unref(m);
}

static void test_usage_grows(void **state)
{
    (void)state;
    memtable *m = memtable_new();
    size_t u0 = memtable_usage(m), prev = u0;
    uint8_t key[16], val[100];
    uint64_t seed = 1;
    memset(val, 'v', sizeof(val));
    for (int i = 0; i < 20000; i++) {
        for (int j = 0; j < 16; j++)
            key[j] = (uint8_t)test_rng(&seed);
        memtable_add(m, (uint64_t)i + 1, LSM_TYPE_VALUE, key, 16, val, 100);
        size_t u = memtable_usage(m);
        assert_true(u > prev);              /* every entry takes arena bytes */
        prev = u;
    }
    /* At least the payload, and not wildly more (tower and header overhead only). */
    assert_true(prev - u0 >= 20000u * (16 + 8 + 100));
    assert_true(prev - u0 <= 20000u * (16 + 8 + 100) * 2);
    memtable_unref(m);
}

/* ---- readers racing one writer ---- */

#define RACE_N 60000

typedef struct race {
    memtable *m;
    atomic_uint added;                      /* entries 0..added-1 are in the memtable */
    atomic_int failures;                    /* mismatches seen by readers */
} race;

static void race_key(uint32_t id, uint8_t *k)
{
    uint64_t s = id * 2654435761u;
    uint64_t a = test_rng(&s), b = test_rng(&s);
    memcpy(k, &a, 8);
    memcpy(k + 8, &b, 8);
}

static void *race_writer(void *arg)
{
    race *r = arg;
    uint8_t k[16], v[64];
    for (uint32_t i = 0; i < RACE_N; i++) {
        race_key(i, k);
        size_t vn = val_for(i, v);
        memtable_add(r->m, (uint64_t)i + 1, LSM_TYPE_VALUE, k, 16, v, vn);
        atomic_store_explicit(&r->added, i + 1, memory_order_release);
    }
    return NULL;
}

/* Checks one entry against the formula its sequence number names. */
static int race_entry_ok(slice k, slice v)
{
    uint8_t want[64], wk[16];
    if (k.n != 16 + LSM_TRAILER || ikey_type(k) != LSM_TYPE_VALUE)
        return 0;
    uint64_t seq = ikey_seq(k);
    if (seq < 1 || seq > RACE_N)
        return 0;
    race_key((uint32_t)(seq - 1), wk);
    size_t vn = val_for((uint32_t)(seq - 1), want);
    return memcmp(k.p, wk, 16) == 0 && v.n == vn && memcmp(v.p, want, vn) == 0;
}

static void *race_reader(void *arg)
{
    race *r = arg;
    uint64_t seed = (uint64_t)(uintptr_t)&seed;
    iiter *it = memtable_iter_new(r->m);
    int bad = 0;
    /* Start once the writer is under way, so the rounds overlap its inserts. */
    while (atomic_load_explicit(&r->added, memory_order_acquire) < 1000)
        sched_yield();
    for (int round = 0; round < 300; round++) {
        unsigned n = atomic_load_explicit(&r->added, memory_order_acquire);
        for (int g = 0; g < 200 && n; g++) {
            uint32_t id = (uint32_t)(test_rng(&seed) % n);
            uint8_t k[16];
            race_key(id, k);
            int type;
            slice v;
            if (!memtable_get(r->m, k, 16, LSM_MAX_SEQ, &type, &v)) {
                bad++;
                continue;
            }
            uint8_t ik[24];
            memcpy(ik, k, 16);
            enc_fixed64(ik + 16, ikey_pack((uint64_t)id + 1, type));
            slice ks = { ik, 24 };
            bad += !race_entry_ok(ks, v);
        }
        /* A partial scan from a random point: strictly ascending, every entry intact. */
        uint8_t start[24];
        race_key((uint32_t)test_rng(&seed), start);
        enc_fixed64(start + 16, ikey_pack(LSM_MAX_SEQ, 0xff));
        slice ss = { start, 24 };
        uint8_t prev[24];
        int have_prev = 0;
        iiter_seek(it, ss);
        for (int s = 0; s < 300 && iiter_valid(it); s++, iiter_next(it)) {
            slice k = iiter_key(it);
            bad += !race_entry_ok(k, iiter_value(it));
            if (have_prev) {
                slice ps = { prev, 24 };
                bad += ikey_cmp(ps, k) >= 0;
            }
            memcpy(prev, k.p, 24);
            have_prev = 1;
        }
    }
    iiter_free(it);
    atomic_fetch_add(&r->failures, bad);
    return NULL;
}

static void test_concurrent_readers(void **state)
{
    (void)state;
    race r;
    r.m = memtable_new();
    atomic_init(&r.added, 0);
    atomic_init(&r.failures, 0);
    pthread_t w, rd[2];
    assert_int_equal(pthread_create(&rd[0], NULL, race_reader, &r), 0);
    assert_int_equal(pthread_create(&w, NULL, race_writer, &r), 0);
    assert_int_equal(pthread_create(&rd[1], NULL, race_reader, &r), 0);
    pthread_join(w, NULL);
    pthread_join(rd[0], NULL);
    pthread_join(rd[1], NULL);
    assert_int_equal(atomic_load(&r.failures), 0);
    assert_int_equal(memtable_entries(r.m), RACE_N);

    /* After the race: the full list is complete and ordered. */
    iiter *it = memtable_iter_new(r.m);
    int count = 0;
    uint8_t prev[24];
    for (iiter_seek_first(it); iiter_valid(it); iiter_next(it), count++) {
        slice k = iiter_key(it);
        assert_true(race_entry_ok(k, iiter_value(it)));
        if (count) {
            slice ps = { prev, 24 };
            assert_true(ikey_cmp(ps, k) < 0);
        }
        memcpy(prev, k.p, 24);
    }
    assert_int_equal(count, RACE_N);
    iiter_free(it);
    memtable_unref(r.m);
}

static void test_refcount(void **state)
{
    (void)state;
    memtable *m = memtable_new();
    put(m, 1, "x", "y");
    memtable_ref(m);
    memtable_unref(m);
    iiter *it = memtable_iter_new(m);
    memtable_unref(m);
    iiter_seek_first(it);
    assert_at(it, "x", 1);
    iiter_free(it);                          /* frees the memtable: ASan would flag a leak */
    memtable_unref(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_snapshots),
        cmocka_unit_test(test_deletes),
        cmocka_unit_test(test_empty_values),
        cmocka_unit_test(test_large_values),
        cmocka_unit_test(test_prefix_and_binary_keys),
        cmocka_unit_test(test_iter_order_random),
        cmocka_unit_test(test_seek),
        cmocka_unit_test(test_usage_grows),
        cmocka_unit_test(test_concurrent_readers),
        cmocka_unit_test(test_refcount),
    };
    return cmocka_run_group_tests_name("memtable", tests, NULL, NULL);
}
