/*
 * test_bloom.c — unit tests of the cache-blocked bloom filter (engine/bloom.c): no false negatives,
 * a measured false-positive rate close to what the bits per key promise, the documented layout
 * (whole 64-byte lines plus a probe-count byte) and a safe "may contain" for malformed filters.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include "bloom.h"

static uint64_t key_hash(const char *prefix, uint64_t i)
{
    char k[64];
    int n = snprintf(k, sizeof(k), "%s%016llu", prefix, (unsigned long long)i);
    return bloom_hash(k, (size_t)n);
}

static void build_keys(const char *prefix, size_t n, int bits, buf *out)
{
    uint64_t *h = malloc((n ? n : 1) * sizeof(*h));
    for (size_t i = 0; i < n; i++)
        h[i] = key_hash(prefix, i);
    out->len = 0;
    bloom_build(h, n, bits, out);
    free(h);
}

static double measured_fpr(const buf *f, size_t probes)
{
    size_t fp = 0;
    for (size_t i = 0; i < probes; i++)
        fp += (size_t)bloom_may_contain(f->p, f->len, key_hash("missing-", i));
    return (double)fp / (double)probes;
}

static void test_empty_filter(void **state)
{
    (void)state;
    buf f = { 0 };
    bloom_build(NULL, 0, 10, &f);
    assert_int_equal(f.len, 64 + 1);
    for (uint64_t i = 0; i < 1000; i++)
        assert_int_equal(bloom_may_contain(f.p, f.len, key_hash("k", i)), 0);
    buf_free(&f);
}

static void test_no_false_negatives(void **state)
{
    (void)state;
    static const size_t sizes[] = { 1, 2, 7, 100, 1000, 50000 };
    static const int bits[] = { 1, 2, 5, 10, 20, 64 };
    buf f = { 0 };
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        for (size_t b = 0; b < sizeof(bits) / sizeof(bits[0]); b++) {
            build_keys("key-", sizes[s], bits[b], &f);
            for (size_t i = 0; i < sizes[s]; i++)
                assert_int_equal(bloom_may_contain(f.p, f.len, key_hash("key-", i)), 1);
        }
    }
    buf_free(&f);
}

static void test_layout_and_probe_count(void **state)
{
    (void)state;
    buf f = { 0 };
    build_keys("k", 1000, 10, &f);
    /* 10000 bits -> 20 lines of 512 bits, then the probe count round(10 * 0.69) = 7. */
    assert_int_equal(f.len, 20 * 64 + 1);
    assert_int_equal(f.p[f.len - 1], 7);

    build_keys("k", 10, 1, &f);
    assert_int_equal(f.len, 64 + 1);
    assert_int_equal(f.p[f.len - 1], 1);

    build_keys("k", 10, 100, &f);
    assert_int_equal(f.len, 2 * 64 + 1);
    assert_int_equal(f.p[f.len - 1], 30);

    /* bloom_build appends: what was in the buffer stays. */
    f.len = 0;
    buf_append(&f, "xyz", 3);
    uint64_t h = key_hash("k", 1);
    bloom_build(&h, 1, 10, &f);
    assert_int_equal(f.len, 3 + 64 + 1);
    assert_memory_equal(f.p, "xyz", 3);
    assert_int_equal(bloom_may_contain(f.p + 3, f.len - 3, h), 1);
    buf_free(&f);
}

static void test_false_positive_rate(void **state)
{
    (void)state;
    buf f = { 0 };
    build_keys("key-", 100000, 10, &f);
    double fpr = measured_fpr(&f, 200000);
    print_message("# bloom: 10 bits/key, 100000 keys: false-positive rate %.3f%%\n", fpr * 100);
    assert_true(fpr > 0.003);
    assert_true(fpr < 0.02);

    build_keys("key-", 100000, 20, &f);
    double fpr20 = measured_fpr(&f, 200000);
    print_message("# bloom: 20 bits/key: %.4f%%\n", fpr20 * 100);
    assert_true(fpr20 < 0.002);

    build_keys("key-", 100000, 5, &f);
    double fpr5 = measured_fpr(&f, 200000);
    print_message("# bloom: 5 bits/key: %.3f%%\n", fpr5 * 100);
    assert_true(fpr5 > fpr && fpr5 < 0.15);
    buf_free(&f);
}

static void test_malformed_filters_admit_everything(void **state)
{
    (void)state;
    uint8_t z[200] = { 0 };
    uint64_t h = key_hash("k", 3);
    assert_int_equal(bloom_may_contain(NULL, 0, h), 1);
    assert_int_equal(bloom_may_contain(z, 1, h), 1);
    assert_int_equal(bloom_may_contain(z, 64, h), 1);        /* no probe-count byte */
    assert_int_equal(bloom_may_contain(z, 66, h), 1);        /* not whole lines */
    z[64] = 0;
    assert_int_equal(bloom_may_contain(z, 65, h), 1);        /* k = 0 */
    z[64] = 31;
    assert_int_equal(bloom_may_contain(z, 65, h), 1);        /* k > 30: a future encoding */
    z[64] = 6;
    assert_int_equal(bloom_may_contain(z, 65, h), 0);        /* well formed and empty */
}

static void test_hash_is_stable(void **state)
{
    (void)state;
    /* The hash is part of the on-disk format: XXH3_64bits of the user key, seed 0. */
    assert_int_equal(bloom_hash("", 0), UINT64_C(0x2D06800538D394C2));
    assert_int_equal(bloom_hash("abc", 3), bloom_hash("abc", 3));
    assert_true(bloom_hash("abc", 3) != bloom_hash("abd", 3));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_filter),
        cmocka_unit_test(test_no_false_negatives),
        cmocka_unit_test(test_layout_and_probe_count),
        cmocka_unit_test(test_false_positive_rate),
        cmocka_unit_test(test_malformed_filters_admit_everything),
        cmocka_unit_test(test_hash_is_stable),
    };
    return cmocka_run_group_tests_name("bloom", tests, NULL, NULL);
}
