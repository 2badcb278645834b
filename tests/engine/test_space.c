/*
 * test_space.c — a full disk (the fault env's capacity): the reserve file and low-space mode.
 *
 * What a user of a full disk needs: the write that meets the full disk fails with LSM_NOSPACE and
 * changes nothing; every write acknowledged before it stays readable; deletes keep working, so
 * that space can be freed, and once it is, writes work again without a reopen; the database can
 * be closed and opened again while the disk is full. Each test fills a small in-memory disk
 * through the engine itself, as a user would.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "faultenv.h"
#include "helper_model.h"
#include "lsm.h"
#include "options.h"

#define DIR      "/db"
#define CAPACITY (6u << 20)
#define VALUE    (16u << 10)

typedef struct disk {
    lsm_env *env;
    lsm_options o;
    lsm_db *db;
    model *m;                   /* every acknowledged write */
    trng r;
    int keys;                   /* keys written so far: k00000 .. */
} disk;

static void disk_open(disk *d)
{
    if (lsm_open(DIR, &d->o, &d->db) != LSM_OK)
        fail_msg("open: %s", lsm_errmsg(NULL));
}

static void disk_init(disk *d, size_t reserve, const char *name)
{
    memset(d, 0, sizeof *d);
    d->env = faultenv_new();
    faultenv_set_capacity(d->env, CAPACITY);
    options_defaults(&d->o);
    d->o.env = d->env;
    d->o.memtable_bytes = 128 << 10;
    d->o.table_bytes = 64 << 10;
    d->o.level1_bytes = 256 << 10;
    d->o.blob_threshold = 8 << 10;
    d->o.reserve_bytes = reserve;
    d->m = model_new();
    trng_seed(&d->r, test_seed(name, 4242));
    disk_open(d);
}

static void disk_free(disk *d)
{
    if (d->db)
        assert_int_equal(lsm_close(d->db), LSM_OK);
    faultenv_free(d->env);
    model_free(d->m);
}

/* Writes new keys of VALUE bytes until the disk refuses one; returns how many were acknowledged.
   The refused write must say LSM_NOSPACE, and the next one too. */
static int disk_fill(disk *d)
{
    static uint8_t v[VALUE];
    int acked = 0;
    for (int i = 0; i < 4 * (int)(CAPACITY / VALUE); i++) {
        char k[16];
        snprintf(k, sizeof k, "k%05d", d->keys);
        trng_fill(&d->r, v, sizeof v);
        int rc = lsm_put(d->db, k, strlen(k), v, sizeof v);
        if (rc == LSM_NOSPACE) {
            assert_int_equal(lsm_put(d->db, k, strlen(k), v, sizeof v), LSM_NOSPACE);
            assert_non_null(strstr(lsm_errmsg(d->db), "space"));
            return acked;
        }
        if (rc != LSM_OK)
            fail_msg("put %s: %s (%s), expected LSM_OK or LSM_NOSPACE", k, lsm_strerror(rc),
                     lsm_errmsg(d->db));
        model_put(d->m, k, strlen(k), v, sizeof v);
        d->keys++;
        acked++;
    }
    fail_msg("%d values of %u bytes fit on a disk of %u bytes", acked, VALUE, CAPACITY);
    return acked;
}

/* Deletes every acknowledged key (each delete must work), then compacts. */
static void disk_empty(disk *d)
{
    for (int i = 0; i < d->keys; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%05d", i);
        int rc = lsm_delete(d->db, k, strlen(k));
        if (rc != LSM_OK)
            fail_msg("delete %s on a full disk: %s (%s)", k, lsm_strerror(rc), lsm_errmsg(d->db));
        model_del(d->m, k, strlen(k));
    }
    int rc = lsm_compact(d->db);
    if (rc != LSM_OK)
        fail_msg("compact after the deletes: %s (%s)", lsm_strerror(rc), lsm_errmsg(d->db));
}

static int reserve_exists(disk *d)
{
    return d->env->file_exists(d->env, DIR "/RESERVE");
}

static void test_reserve_lets_deletes_free_space(void **state)
{
    (void)state;
    disk d;
    disk_init(&d, 512 << 10, "reserve");
    assert_int_equal(reserve_exists(&d), 1);
    int acked = disk_fill(&d);
    assert_true(acked > 100);
    assert_int_equal(reserve_exists(&d), 0);        /* given back when the disk filled */
    check_db_equals_model(d.db, d.m, "after the disk filled");
    uint64_t full = faultenv_space_used(d.env);
    disk_empty(&d);
    uint64_t after = faultenv_space_used(d.env);
    if (after > full / 4)
        fail_msg("deleting everything left %llu of %llu bytes in use", (unsigned long long)after,
                 (unsigned long long)full);
    assert_int_equal(reserve_exists(&d), 1);        /* taken back once there was room */
    check_db_equals_model(d.db, d.m, "after the deletes");
    /* Writes that add data work again, without a reopen. */
    assert_true(disk_fill(&d) > 100);
    check_db_equals_model(d.db, d.m, "after filling again");
    disk_free(&d);
}

static void test_reopen_on_full_disk(void **state)
{
    (void)state;
    disk d;
    disk_init(&d, 512 << 10, "reopen");
    disk_fill(&d);
    assert_int_equal(lsm_close(d.db), LSM_OK);
    d.db = NULL;
    disk_open(&d);
    check_db_equals_model(d.db, d.m, "reopened on a full disk");
    /* Recovery may have left room for the reserve again: fill what is left, then empty it. */
    disk_fill(&d);
    assert_int_equal(lsm_put(d.db, "new", 3, "x", 1), LSM_NOSPACE);
    disk_empty(&d);
    assert_int_equal(lsm_put(d.db, "new", 3, "x", 1), LSM_OK);
    model_put(d.m, "new", 3, "x", 1);
    assert_int_equal(lsm_close(d.db), LSM_OK);
    d.db = NULL;
    disk_open(&d);
    check_db_equals_model(d.db, d.m, "reopened after the deletes");
    disk_free(&d);
}

static void test_marked_batch_accepted_when_low(void **state)
{
    (void)state;
    disk d;
    disk_init(&d, 512 << 10, "marked");
    disk_fill(&d);
    lsm_batch *b = lsm_batch_new();
    lsm_batch_put(b, "meta", 4, "small", 5);
    lsm_batch_delete(b, "k00000", 6);
    assert_int_equal(lsm_write(d.db, b, 1), LSM_NOSPACE);  /* adds data: refused */
    assert_int_equal(lsm_get(d.db, "meta", 4, &(void *){ NULL }, &(size_t){ 0 }), LSM_NOTFOUND);
    lsm_batch_set_frees_space(b, 1);
    assert_int_equal(lsm_write(d.db, b, 1), LSM_OK);
    model_put(d.m, "meta", 4, "small", 5);
    model_del(d.m, "k00000", 6);
    lsm_batch_clear(b);                                     /* clears the mark too */
    lsm_batch_put(b, "meta2", 5, "small", 5);
    assert_int_equal(lsm_write(d.db, b, 1), LSM_NOSPACE);
    lsm_batch_free(b);
    assert_int_equal(lsm_delete(d.db, "k00001", 6), LSM_OK);
    model_del(d.m, "k00001", 6);
    check_db_equals_model(d.db, d.m, "after the marked batch");
    disk_free(&d);
}

/* Without a reserve nothing is held back, but a full disk still costs only the refused writes:
   once space comes back (another program freed some), writes work again without a reopen. */
static void test_nospace_not_sticky(void **state)
{
    (void)state;
    disk d;
    disk_init(&d, 0, "sticky");
    disk_fill(&d);
    assert_int_equal(reserve_exists(&d), 0);
    faultenv_set_capacity(d.env, 4 * CAPACITY);
    int rc = LSM_NOSPACE;
    char k[] = "after";
    for (int i = 0; i < 50 && rc == LSM_NOSPACE; i++)   /* a flush may need its retry second */
        if ((rc = lsm_put(d.db, k, 5, "v", 1)) == LSM_NOSPACE)
            usleep(100000);
    if (rc != LSM_OK)
        fail_msg("put once space is back: %s (%s)", lsm_strerror(rc), lsm_errmsg(d.db));
    model_put(d.m, k, 5, "v", 1);
    assert_int_equal(lsm_flush(d.db), LSM_OK);
    check_db_equals_model(d.db, d.m, "space back");
    disk_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reserve_lets_deletes_free_space),
        cmocka_unit_test(test_reopen_on_full_disk),
        cmocka_unit_test(test_marked_batch_accepted_when_low),
        cmocka_unit_test(test_nospace_not_sticky),
    };
    return cmocka_run_group_tests_name("engine full disk", tests, NULL, NULL);
}
