/*
 * test_refresh.c — lsm_iter_refresh and lsm_iter_set_upper_bound, the two calls that make
 * short prefix probes cheap: a refreshed iterator sees exactly the database as it is now, whether
 * or not a flush or compaction changed its sources in between (an unrefreshed one keeps its old
 * snapshot), and a bound stops iteration at the end of a prefix.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helper_model.h"
#include "lsm.h"
#include "options.h"

/* Every key and value the iterator shows from a fresh seek equals the model, in order. */
static void check_iter_equals(lsm_iter *it, const model *m, const char *when)
{
    size_t i = 0;
    for (lsm_iter_seek(it, NULL, 0); lsm_iter_valid(it); lsm_iter_next(it), i++) {
        size_t kl, vl, mkl, mvl;
        const uint8_t *mk, *mv;
        const void *k = lsm_iter_key(it, &kl), *v = lsm_iter_value(it, &vl);
        if (i >= model_count(m))
            fail_msg("%s: iterator shows extra key %s", when, show(k, kl));
        model_at(m, i, &mk, &mkl, &mv, &mvl);
        if (bytes_cmp(k, kl, mk, mkl) != 0 || bytes_cmp(v, vl, mv, mvl) != 0)
            fail_msg("%s: entry %zu is %s, model has %s", when, i, show(k, kl), show(mk, mkl));
    }
    assert_int_equal(lsm_iter_status(it), LSM_OK);
    if (i != model_count(m))
        fail_msg("%s: iterator shows %zu keys, model %zu", when, i, model_count(m));
}

static void test_refresh_follows_writes(void **state)
{
    (void)state;
    char *dir = tmpdir_new("refresh");
    lsm_options o;
    options_defaults(&o);
    o.memtable_bytes = 32 << 10;
    o.blob_threshold = 300;
    lsm_db *db;
    assert_int_equal(lsm_open(dir, &o, &db), LSM_OK);
    trng r;
    trng_seed(&r, test_seed("refresh", 99));
    model *m = model_new();
    lsm_iter *it;
    assert_int_equal(lsm_iter_new(db, &it), LSM_OK);
    for (int round = 0; round < 60; round++) {
        model *before = model_clone(m);
        for (int i = 0; i < 200; i++) {
            char k[16], v[600];
            snprintf(k, sizeof k, "k%03d", (int)trng_below(&r, 400));
            if (trng_chance(&r, 20)) {
                assert_int_equal(lsm_delete(db, k, strlen(k)), LSM_OK);
                model_del(m, k, strlen(k));
            } else {
                size_t n = 1 + trng_below(&r, sizeof v);
                trng_fill(&r, v, n);
                assert_int_equal(lsm_put(db, k, strlen(k), v, n), LSM_OK);
                model_put(m, k, strlen(k), v, n);
            }
        }
        /* Not refreshed yet: still the old snapshot. */
        check_iter_equals(it, before, "before refresh");
        model_free(before);
        if (round % 7 == 3)
            assert_int_equal(lsm_flush(db), LSM_OK);
        if (round % 13 == 5)
            assert_int_equal(lsm_compact(db), LSM_OK);
        assert_int_equal(lsm_iter_refresh(it), LSM_OK);
        assert_false(lsm_iter_valid(it));
        check_iter_equals(it, m, "after refresh");
    }
    lsm_iter_free(it);
    model_free(m);
    assert_int_equal(lsm_close(db), LSM_OK);
    tmpdir_remove(dir);
    free(dir);
}

/* An upper bound ends iteration at the first key >= bound, also when deleted keys lie beyond it. */
/* Writes that stay in the memtable the iterator already reads: refresh keeps its sources and only
   moves the snapshot, which must then show every write made before it, and no later one. */
static void test_refresh_same_memtable(void **state)
{
    (void)state;
    char *dir = tmpdir_new("refresh");
    lsm_db *db;
    assert_int_equal(lsm_open(dir, NULL, &db), LSM_OK);      /* a 4 MiB memtable: no switch */
    model *m = model_new();
    lsm_iter *it;
    assert_int_equal(lsm_iter_new(db, &it), LSM_OK);
    for (int round = 0; round < 50; round++) {
        char k[16], v[16];
        snprintf(k, sizeof k, "k%03d", (round * 7) % 31);
        snprintf(v, sizeof v, "v%d", round);
        assert_int_equal(lsm_put(db, k, strlen(k), v, strlen(v)), LSM_OK);
        model_put(m, k, strlen(k), v, strlen(v));
        assert_int_equal(lsm_iter_refresh(it), LSM_OK);
        assert_int_equal(lsm_put(db, "later", 5, "x", 1), LSM_OK);   /* after the refresh */
        check_iter_equals(it, m, "after refresh, same memtable");
        assert_int_equal(lsm_delete(db, "later", 5), LSM_OK);
    }
    lsm_stats st;
    assert_int_equal(lsm_stats_get(db, &st, sizeof st), LSM_OK);
    assert_int_equal(st.flushes, 0);                        /* the sources never changed */
    lsm_iter_free(it);
    assert_int_equal(lsm_close(db), LSM_OK);
    model_free(m);
    tmpdir_remove(dir);
    free(dir);
}

static void test_upper_bound(void **state)
{
    (void)state;
    char *dir = tmpdir_new("bound");
    lsm_db *db;
    assert_int_equal(lsm_open(dir, NULL, &db), LSM_OK);
    const char *keys[] = { "a/1", "a/2", "a0", "b", "b/x" };
    for (int i = 0; i < 5; i++)
        assert_int_equal(lsm_put(db, keys[i], strlen(keys[i]), "v", 1), LSM_OK);
    for (int i = 0; i < 1000; i++) {
        char k[16];
        snprintf(k, sizeof k, "a/3-%04d", i);
        assert_int_equal(lsm_put(db, k, strlen(k), "v", 1), LSM_OK);
        assert_int_equal(lsm_delete(db, k, strlen(k)), LSM_OK);
    }
    lsm_iter *it;
    assert_int_equal(lsm_iter_new(db, &it), LSM_OK);
    lsm_iter_set_upper_bound(it, "a0", 2);
    int n = 0;
    for (lsm_iter_seek(it, "a/", 2); lsm_iter_valid(it); lsm_iter_next(it))
        n++;
    assert_int_equal(n, 2);                    /* a/1, a/2: not a0 and beyond */
    lsm_iter_seek(it, "a/3", 3);               /* only deleted keys before the bound */
    assert_false(lsm_iter_valid(it));
    assert_int_equal(lsm_iter_status(it), LSM_OK);
    lsm_iter_set_upper_bound(it, NULL, 0);
    lsm_iter_seek(it, "a/3", 3);
    assert_true(lsm_iter_valid(it));           /* unbounded: the walk reaches a0 */
    size_t kl;
    const char *k = lsm_iter_key(it, &kl);
    assert_int_equal(kl, 2);
    assert_memory_equal(k, "a0", 2);
    lsm_iter_free(it);
    assert_int_equal(lsm_close(db), LSM_OK);
    tmpdir_remove(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refresh_follows_writes),
        cmocka_unit_test(test_refresh_same_memtable),
        cmocka_unit_test(test_upper_bound),
    };
    return cmocka_run_group_tests_name("engine iterator refresh", tests, NULL, NULL);
}
