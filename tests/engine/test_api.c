/*
 * test_api.c — the public calls issue 18 asked for beyond read-only open and checkpoint:
 * snapshot handles (lsm_snapshot_new, lsm_get_at, lsm_get_range_at, lsm_iter_new_at),
 * lsm_destroy, lsm_approximate_size and the info-log callback (lsm_options_set_logger).
 *
 * What a user relies on: a snapshot keeps showing exactly what was there when it was taken, for
 * plain values, values in blob files and extent maps alike, through flushes and full compactions,
 * and lets the old data go once freed; destroy removes the engine's files and nothing else, and
 * refuses a database in use; approximate sizes follow what was written; the logger hears about
 * recovery, flushes, compactions and a full disk. Real directories under /tmp, except the full
 * disk, which is the fault env's.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "faultenv.h"
#include "helper_model.h"
#include "lsm.h"
#include "options.h"

static int setup(void **state)
{
    return db_fixture_new(state, "api");
}

static int teardown(void **state)
{
    return db_fixture_free(state);
}

/* Small memtables and tables, blobs from 1 KiB, no background compaction (the tests compact
   when they mean to). */
static void small_options(lsm_options *o)
{
    options_defaults(o);
    o->memtable_bytes = 64 << 10;
    o->table_bytes = 64 << 10;
    o->level1_bytes = 256 << 10;
    o->blob_threshold = 1024;
    o->background_compaction = 0;
}

static lsm_db *open_with(const char *dir, const lsm_options *o)
{
    lsm_db *db = NULL;
    int rc = lsm_open(dir, o, &db);
    if (rc != LSM_OK)
        fail_msg("lsm_open(%s) = %d (%s): %s", dir, rc, lsm_strerror(rc), lsm_errmsg(NULL));
    return db;
}

static void put_str(lsm_db *db, const char *k, const char *v)
{
    CHECK_OK(db, lsm_put(db, k, strlen(k), v, strlen(v)));
}

/* Asserts k holds exactly v at snapshot s (v NULL: absent). */
static void expect_at(lsm_db *db, const lsm_snapshot *s, const char *k, const void *v, size_t vn)
{
    void *got = NULL;
    size_t n = 0;
    int rc = lsm_get_at(db, s, k, strlen(k), &got, &n);
    if (!v) {
        if (rc != LSM_NOTFOUND)
            fail_msg("%s: want absent, got rc %d (%zu bytes)", k, rc, n);
        return;
    }
    if (rc != LSM_OK)
        fail_msg("%s: rc %d (%s): %s", k, rc, lsm_strerror(rc), lsm_errmsg(db));
    if (n != vn || memcmp(got, v, vn) != 0)
        fail_msg("%s: want %zu bytes %s, got %zu bytes %s", k, vn, show(v, vn), n, show(got, n));
    free(got);
    /* The same through lsm_get_range_at, from an offset inside. */
    uint8_t buf[64];
    size_t nread = 0;
    uint64_t full = 0;
    uint64_t off = vn > 3 ? 3 : 0;
    CHECK_OK(db, lsm_get_range_at(db, s, k, strlen(k), off, buf, sizeof buf, &nread, &full));
    assert_int_equal(full, vn);
    size_t want = vn - off < sizeof buf ? vn - off : sizeof buf;
    assert_int_equal(nread, want);
    assert_memory_equal(buf, (const uint8_t *)v + off, want);
}

/* ---- snapshots ---- */

/* Plain values, overwrites, deletes and new keys after the snapshot: invisible through it, now
   and after a flush and a full compaction, which would have dropped the old versions. */
static void test_snapshot_get(void **state)
{
    fixture *f = *state;
    lsm_options o;
    small_options(&o);
    lsm_db *db = open_with(f->dir, &o);
    put_str(db, "a", "a-old");
    put_str(db, "b", "b-old");
    CHECK_OK(db, lsm_flush(db));            /* one version in a table, one in the memtable */
    put_str(db, "c", "c-old");
    lsm_snapshot *s = NULL;
    CHECK_OK(db, lsm_snapshot_new(db, &s));
    assert_non_null(s);
    put_str(db, "a", "a-new");
    CHECK_OK(db, lsm_delete(db, "b", 1));
    CHECK_OK(db, lsm_delete(db, "c", 1));
    put_str(db, "d", "d-new");
    for (int round = 0; round < 3; round++) {
        expect_at(db, s, "a", "a-old", 5);
        expect_at(db, s, "b", "b-old", 5);
        expect_at(db, s, "c", "c-old", 5);
        expect_at(db, s, "d", NULL, 0);
        expect_at(db, NULL, "a", "a-new", 5);
        expect_at(db, NULL, "b", NULL, 0);
        expect_at(db, NULL, "d", "d-new", 5);
        if (round == 0)
            CHECK_OK(db, lsm_flush(db));
        else
            CHECK_OK(db, lsm_compact(db));
    }
    /* A second snapshot sees the new state; freeing the first lets compaction drop its data. */
    lsm_snapshot *s2 = NULL;
    CHECK_OK(db, lsm_snapshot_new(db, &s2));
    assert_true(lsm_snapshot_sequence(s2) > lsm_snapshot_sequence(s));
    lsm_snapshot_free(s);
    CHECK_OK(db, lsm_compact(db));
    expect_at(db, s2, "a", "a-new", 5);
    expect_at(db, s2, "c", NULL, 0);
    lsm_snapshot_free(s2);
    lsm_snapshot_free(NULL);
    assert_int_equal(lsm_close(db), LSM_OK);
}

/* A snapshot of one handle is refused by another; NULL arguments are refused. */
static void test_snapshot_misuse(void **state)
{
    fixture *f = *state;
    lsm_options o;
    small_options(&o);
    lsm_db *db = open_with(f->dir, &o);
    char *dir2 = path_join(f->tmp, "db2");
    lsm_db *db2 = open_with(dir2, &o);
    put_str(db, "k", "v");
    lsm_snapshot *s = NULL;
    assert_int_equal(lsm_snapshot_new(NULL, &s), LSM_INVALID);
    assert_int_equal(lsm_snapshot_new(db, NULL), LSM_INVALID);
    CHECK_OK(db, lsm_snapshot_new(db, &s));
    void *v = NULL;
    size_t n;
    assert_int_equal(lsm_get_at(db2, s, "k", 1, &v, &n), LSM_INVALID);
    assert_null(v);
    lsm_iter *it = NULL;
    assert_int_equal(lsm_iter_new_at(db2, s, &it), LSM_INVALID);
    assert_null(it);
    assert_int_equal(lsm_snapshot_sequence(NULL), 0);
    lsm_snapshot_free(s);
    assert_int_equal(lsm_close(db2), LSM_OK);
    assert_int_equal(lsm_close(db), LSM_OK);
    free(dir2);
}

/* An iterator at a snapshot lists exactly the keys of the moment, also after its refresh and a
   compaction in between. */
static void test_snapshot_iter(void **state)
{
    fixture *f = *state;
    lsm_options o;
    small_options(&o);
    lsm_db *db = open_with(f->dir, &o);
    model *m = model_new();
    char k[32], v[32];
    for (int i = 0; i < 2000; i++) {
        snprintf(k, sizeof k, "key%05d", i);
        snprintf(v, sizeof v, "old%d", i);
        put_str(db, k, v);
        model_put(m, k, strlen(k), v, strlen(v));
    }
    lsm_snapshot *s = NULL;
    CHECK_OK(db, lsm_snapshot_new(db, &s));
    for (int i = 0; i < 3000; i += 2) {
        snprintf(k, sizeof k, "key%05d", i);
        if (i % 4 == 0)
            CHECK_OK(db, lsm_delete(db, k, strlen(k)));
        else
            put_str(db, k, "new");
    }
    lsm_iter *it = NULL;
    CHECK_OK(db, lsm_iter_new_at(db, s, &it));
    check_iter_equals_model(it, m, "iterator at the snapshot");
    put_str(db, "key00001", "newer");   /* same sources: the cheap refresh */
    put_str(db, "zzz", "newer");
    CHECK_OK(db, lsm_iter_refresh(it));
    check_iter_equals_model(it, m, "iterator at the snapshot, refreshed with the same sources");
    CHECK_OK(db, lsm_compact(db));
    check_iter_equals_model(it, m, "iterator at the snapshot, after a compaction");
    CHECK_OK(db, lsm_iter_refresh(it));
    check_iter_equals_model(it, m, "iterator at the snapshot, refreshed");
    lsm_iter_free(it);
    /* A fresh iterator made at it after the compaction too. */
    CHECK_OK(db, lsm_iter_new_at(db, s, &it));
    check_iter_equals_model(it, m, "new iterator at the snapshot after a compaction");
    lsm_iter_free(it);
    lsm_snapshot_free(s);
    model_free(m);
    assert_int_equal(lsm_close(db), LSM_OK);
}

/* Values in blob files and extent maps: the snapshot keeps the blob files of its versions through
   overwrites and full compactions, and they go once it is freed. */
static void test_snapshot_blobs_and_extents(void **state)
{
    fixture *f = *state;
    lsm_options o;
    small_options(&o);
    lsm_db *db = open_with(f->dir, &o);
    enum { BIG = 8000, MAP = 300000 };
    uint8_t *big_old = malloc(BIG), *map_old = malloc(MAP), *buf = malloc(MAP);
    trng r;
    trng_seed(&r, test_seed("snapshot_blobs", 7));
    trng_fill(&r, big_old, BIG);
    trng_fill(&r, map_old, MAP);
    CHECK_OK(db, lsm_put(db, "big", 3, big_old, BIG));
    lsm_value_writer *w = NULL;
    CHECK_OK(db, lsm_value_writer_open(db, "map", 3, 0, &w));
    CHECK_OK(db, lsm_value_writer_write(w, 0, map_old, MAP));
    CHECK_OK(db, lsm_value_writer_commit(w, 0));
    CHECK_OK(db, lsm_flush(db));
    lsm_snapshot *s = NULL;
    CHECK_OK(db, lsm_snapshot_new(db, &s));

    /* Overwrite both wholly, several times, compacting between. */
    for (int round = 0; round < 3; round++) {
        trng_fill(&r, buf, MAP);
        CHECK_OK(db, lsm_put(db, "big", 3, buf, BIG));
        CHECK_OK(db, lsm_value_writer_open(db, "map", 3, 0, &w));
        CHECK_OK(db, lsm_value_writer_write(w, 0, buf, MAP / 2));
        CHECK_OK(db, lsm_value_writer_commit(w, 0));
        CHECK_OK(db, lsm_compact(db));
    }
    expect_at(db, s, "big", big_old, BIG);
    void *v = NULL;
    size_t n = 0;
    CHECK_OK(db, lsm_get_at(db, s, "map", 3, &v, &n));
    assert_int_equal(n, MAP);
    assert_memory_equal(v, map_old, MAP);
    free(v);
    size_t nread = 0;
    uint64_t full = 0;
    CHECK_OK(db, lsm_get_range_at(db, s, "map", 3, 12345, buf, 1000, &nread, &full));
    assert_int_equal(full, MAP);
    assert_int_equal(nread, 1000);
    assert_memory_equal(buf, map_old + 12345, 1000);
    uint64_t now_size = 0;
    CHECK_OK(db, lsm_get_size(db, "map", 3, &now_size));
    assert_int_equal(now_size, MAP / 2);
    lsm_iter *it = NULL;
    CHECK_OK(db, lsm_iter_new_at(db, s, &it));
    lsm_iter_seek(it, "big", 3);
    assert_true(lsm_iter_valid(it));
    const void *iv = lsm_iter_value(it, &n);
    assert_int_equal(n, BIG);
    assert_memory_equal(iv, big_old, BIG);
    lsm_iter_free(it);

    /* Freed: a compaction drops the old versions and their blob files. */
    lsm_stats before, after;
    CHECK_OK(db, lsm_stats_get(db, &before, sizeof before));
    lsm_snapshot_free(s);
    CHECK_OK(db, lsm_compact(db));
    CHECK_OK(db, lsm_stats_get(db, &after, sizeof after));
    if (!(after.blob_bytes_live + MAP / 2 <= before.blob_bytes_live))
        fail_msg("live blob bytes %" PRIu64 " before freeing the snapshot, %" PRIu64 " after: "
                 "the old versions' %d bytes were not freed", before.blob_bytes_live,
                 after.blob_bytes_live, MAP + BIG);
    free(big_old);
    free(map_old);
    free(buf);
    assert_int_equal(lsm_close(db), LSM_OK);
}

/* Many threads read through one snapshot while a writer overwrites every key and background
   compactions run: each read gives the value of the moment the snapshot was taken. */
typedef struct snap_reader {
    lsm_db *db;
    const lsm_snapshot *s;
    int keys;
    int reads, bad;
    char why[160];
} snap_reader;

static void *snap_reader_main(void *arg)
{
    snap_reader *r = arg;
    for (int i = 0; i < 3000; i++) {
        char k[16], want[32];
        int j = (i * 7919) % r->keys;
        snprintf(k, sizeof k, "key%05d", j);
        snprintf(want, sizeof want, "v0-%d", j);
        void *v = NULL;
        size_t n = 0;
        int rc = lsm_get_at(r->db, r->s, k, strlen(k), &v, &n);
        if (rc != LSM_OK || n != strlen(want) || memcmp(v, want, n) != 0) {
            if (!r->bad++)
                snprintf(r->why, sizeof r->why, "%s: rc %d, %zu bytes", k, rc, n);
        }
        free(v);
        r->reads++;
    }
    return NULL;
}

static void test_snapshot_threads(void **state)
{
    fixture *f = *state;
    lsm_options o;
    small_options(&o);
    o.background_compaction = 1;
    o.memtable_bytes = 16 << 10;
    o.level1_bytes = 64 << 10;
    lsm_db *db = open_with(f->dir, &o);
    enum { KEYS = 500, READERS = 4 };
    char k[16], v[32];
    for (int i = 0; i < KEYS; i++) {
        snprintf(k, sizeof k, "key%05d", i);
        snprintf(v, sizeof v, "v0-%d", i);
        put_str(db, k, v);
    }
    lsm_snapshot *s = NULL;
    CHECK_OK(db, lsm_snapshot_new(db, &s));
    snap_reader r[READERS];
    pthread_t t[READERS];
    for (int i = 0; i < READERS; i++) {
        r[i] = (snap_reader){ .db = db, .s = s, .keys = KEYS };
        assert_int_equal(pthread_create(&t[i], NULL, snap_reader_main, &r[i]), 0);
    }
    for (int round = 1; round <= 6; round++)
        for (int i = 0; i < KEYS; i++) {
            snprintf(k, sizeof k, "key%05d", i);
            snprintf(v, sizeof v, "v%d-%d", round, i);
            put_str(db, k, v);
        }
    for (int i = 0; i < READERS; i++) {
        pthread_join(t[i], NULL);
        if (r[i].bad)
            fail_msg("reader %d: %d of %d reads at the snapshot wrong, first %s", i, r[i].bad,
                     r[i].reads, r[i].why);
    }
    lsm_stats st;
    CHECK_OK(db, lsm_stats_get(db, &st, sizeof st));
    assert_true(st.flushes > 0);
    lsm_snapshot_free(s);
    assert_int_equal(lsm_close(db), LSM_OK);
}

/* ---- destroy ---- */

static int count_files(const char *dir, const char *suffix)
{
    char **names = NULL;
    int n = dir_names(dir, "", suffix, &names);
    names_free(names, n);
    return n;
}

static void test_destroy(void **state)
{
    fixture *f = *state;
    lsm_options o;
    small_options(&o);
    o.reserve_bytes = 4096;
    lsm_db *db = open_with(f->dir, &o);
    char val[2000];
    memset(val, 'x', sizeof val);
    for (int i = 0; i < 200; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%03d", i);
        CHECK_OK(db, lsm_put(db, k, strlen(k), val, sizeof val));
    }
    CHECK_OK(db, lsm_flush(db));
    /* Busy while open read-write. */
    assert_int_equal(lsm_destroy(f->dir), LSM_BUSY);
    assert_non_null(strstr(lsm_errmsg(NULL), "LOCK"));
    put_str(db, "still", "here");
    assert_int_equal(lsm_close(db), LSM_OK);
    assert_true(count_files(f->dir, ".sst") > 0);
    assert_true(count_files(f->dir, ".blob") > 0);

    /* Busy while open read-only. */
    lsm_options ro;
    options_defaults(&ro);
    ro.read_only = 1;
    db = open_with(f->dir, &ro);
    assert_int_equal(lsm_destroy(f->dir), LSM_BUSY);
    assert_non_null(strstr(lsm_errmsg(NULL), "read-only"));
    assert_int_equal(lsm_close(db), LSM_OK);

    /* Names that are not the engine's stay, and so does the directory. */
    const char *foreign[] = { "notes.txt", "CURRENT.bak", "MANIFEST-12x", "12.sst.old", "x.log" };
    for (size_t i = 0; i < sizeof foreign / sizeof *foreign; i++) {
        char *p = path_join(f->dir, foreign[i]);
        assert_int_equal(file_write(p, "mine", 4), 0);
        free(p);
    }
    CHECK_OK(NULL, lsm_destroy(f->dir));
    char **names = NULL;
    int n = dir_names(f->dir, "", "", &names);
    assert_int_equal(n, (int)(sizeof foreign / sizeof *foreign));
    for (int i = 0; i < n; i++) {
        int ok = 0;
        for (size_t j = 0; j < sizeof foreign / sizeof *foreign; j++)
            ok |= strcmp(names[i], foreign[j]) == 0;
        if (!ok)
            fail_msg("lsm_destroy left %s", names[i]);
    }
    names_free(names, n);
    /* Nothing of the database is left to open. */
    lsm_options no;
    options_defaults(&no);
    no.create_if_missing = 0;
    lsm_db *gone = NULL;
    assert_int_not_equal(lsm_open(f->dir, &no, &gone), LSM_OK);
    assert_null(gone);

    /* Without the foreign files the directory goes too; a missing directory is fine. */
    for (size_t i = 0; i < sizeof foreign / sizeof *foreign; i++) {
        char *p = path_join(f->dir, foreign[i]);
        unlink(p);
        free(p);
    }
    db = open_with(f->dir, &o);
    put_str(db, "k", "v");
    assert_int_equal(lsm_close(db), LSM_OK);
    CHECK_OK(NULL, lsm_destroy(f->dir));
    struct stat st;
    assert_int_equal(stat(f->dir, &st), -1);
    CHECK_OK(NULL, lsm_destroy(f->dir));
    assert_int_equal(lsm_destroy(NULL), LSM_INVALID);
    /* A new database can be made there at once. */
    db = open_with(f->dir, &o);
    expect_at(db, NULL, "k", NULL, 0);
    assert_int_equal(lsm_close(db), LSM_OK);
}

/* ---- approximate sizes ---- */

static void test_approximate_size(void **state)
{
    fixture *f = *state;
    lsm_options o;
    small_options(&o);
    lsm_db *db = open_with(f->dir, &o);
    enum { N = 20000, VLEN = 100 };
    char k[16], v[VLEN];
    trng r;
    trng_seed(&r, test_seed("approximate_size", 3));
    uint64_t total;
    /* Nothing in tables yet: 0. */
    put_str(db, "k00000", "x");
    CHECK_OK(db, lsm_approximate_size(db, NULL, 0, NULL, 0, &total));
    assert_int_equal(total, 0);
    for (int i = 0; i < N; i++) {
        snprintf(k, sizeof k, "k%05d", i);
        trng_fill(&r, v, sizeof v);     /* incompressible, though nothing compresses here */
        CHECK_OK(db, lsm_put(db, k, strlen(k), v, sizeof v));
    }
    CHECK_OK(db, lsm_compact(db));
    CHECK_OK(db, lsm_approximate_size(db, NULL, 0, NULL, 0, &total));
    /* The whole: what was written (keys and values) and the tables' overhead, within 1.5x. */
    uint64_t written = (uint64_t)N * (6 + VLEN);
    if (total < written || total > written * 3 / 2)
        fail_msg("whole database: %" PRIu64 " bytes for %" PRIu64 " written", total, written);
    lsm_stats st;
    CHECK_OK(db, lsm_stats_get(db, &st, sizeof st));
    uint64_t tables = 0;
    for (int l = 0; l < LSM_MAX_LEVELS; l++)
        tables += st.level_bytes[l];
    assert_int_equal(total, tables);
    /* Any range: its share of the keys within 10% of the whole plus two blocks per table. */
    int ranges[][2] = { { 0, 1000 }, { 5000, 15000 }, { 123, 124 }, { 19000, 20000 }, { 0, N },
                        { 7000, 7100 } };
    for (size_t i = 0; i < sizeof ranges / sizeof *ranges; i++) {
        char lo[16], hi[16];
        snprintf(lo, sizeof lo, "k%05d", ranges[i][0]);
        snprintf(hi, sizeof hi, "k%05d", ranges[i][1]);
        uint64_t got;
        CHECK_OK(db, lsm_approximate_size(db, lo, strlen(lo), hi, strlen(hi), &got));
        double want = (double)total * (ranges[i][1] - ranges[i][0]) / N;
        double slack = want * 0.10 + 2.0 * 4096 * 2;
        if ((double)got < want - slack || (double)got > want + slack)
            fail_msg("[%s, %s): %" PRIu64 " bytes, want %.0f +- %.0f", lo, hi, got, want, slack);
    }
    /* Open ends, empty, inverted and outside ranges. */
    uint64_t a, b;
    CHECK_OK(db, lsm_approximate_size(db, NULL, 0, "k10000", 6, &a));
    CHECK_OK(db, lsm_approximate_size(db, "k10000", 6, NULL, 0, &b));
    assert_true(a + b >= total - 2 * 4096 && a + b <= total + 2 * 4096);
    CHECK_OK(db, lsm_approximate_size(db, "k5", 2, "k5", 2, &a));
    assert_int_equal(a, 0);
    CHECK_OK(db, lsm_approximate_size(db, "k9", 2, "k1", 2, &a));
    assert_int_equal(a, 0);
    CHECK_OK(db, lsm_approximate_size(db, "z", 1, NULL, 0, &a));
    assert_int_equal(a, 0);
    CHECK_OK(db, lsm_approximate_size(db, "a", 1, "b", 1, &a));
    assert_int_equal(a, 0);
    assert_int_equal(lsm_approximate_size(db, "", 0, NULL, 0, &a), LSM_INVALID);
    assert_int_equal(lsm_approximate_size(NULL, NULL, 0, NULL, 0, &a), LSM_INVALID);
    assert_int_equal(lsm_close(db), LSM_OK);
}

/* ---- the logger ---- */

typedef struct heard {
    pthread_mutex_t mu;
    char *text;                 /* every message, "LEVEL msg\n" */
    size_t len;
    int calls;
    int malformed;              /* calls with a bad level or a newline in msg */
} heard;

static void heard_fn(void *arg, int level, const char *msg)
{
    heard *h = arg;             /* may run on the engine's threads: no cmocka asserts here */
    pthread_mutex_lock(&h->mu);
    if (level < LSM_LOG_ERROR || level > LSM_LOG_DEBUG || strchr(msg, '\n'))
        h->malformed++;
    size_t n = strlen(msg) + 8;
    h->text = realloc(h->text, h->len + n + 1);
    h->len += (size_t)snprintf(h->text + h->len, n + 1, "%d %s\n", level, msg);
    h->calls++;
    pthread_mutex_unlock(&h->mu);
}

static void heard_init(heard *h)
{
    memset(h, 0, sizeof *h);
    pthread_mutex_init(&h->mu, NULL);
    h->text = calloc(1, 1);
}

static void heard_free(heard *h)
{
    if (h->malformed)
        fail_msg("%d messages had a bad level or a newline:\n%s", h->malformed, h->text);
    pthread_mutex_destroy(&h->mu);
    free(h->text);
}

/* Whether a message of level containing what was heard. */
static int heard_has(heard *h, int level, const char *what)
{
    pthread_mutex_lock(&h->mu);
    int found = 0;
    for (char *line = h->text; line && *line && !found;) {
        char *end = strchr(line, '\n');
        *end = 0;
        found = atoi(line) == level && strstr(line, what) != NULL;
        *end = '\n';
        line = end + 1;
    }
    pthread_mutex_unlock(&h->mu);
    return found;
}

/* A reopen after a log lost its last bytes: the logger hears the torn tail (WARN, with its bytes)
   and the replay (INFO); flushes (INFO) and compactions (DEBUG) are heard too. */
static void test_logger_recovery(void **state)
{
    fixture *f = *state;
    heard h;
    heard_init(&h);
    lsm_options o;
    small_options(&o);
    lsm_db *db = open_with(f->dir, &o);     /* no logger: silent, as before */
    for (int i = 0; i < 50; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%03d", i);
        put_str(db, k, "some value");
    }
    assert_int_equal(lsm_close(db), LSM_OK);
    /* Cut the log that holds those writes 5 bytes before its end (the log is preallocated:
       its end is its last non-zero byte), as a crash in its last write would. */
    char **names = NULL;
    int n = dir_names(f->dir, "", ".log", &names);
    assert_int_equal(n, 1);
    char *lp = path_join(f->dir, names[0]);
    uint8_t *p;
    size_t size;
    assert_int_equal(file_read(lp, &p, &size), 0);
    while (size > 0 && p[size - 1] == 0)
        size--;
    assert_true(size > 100);
    assert_int_equal(truncate(lp, (off_t)size - 5), 0);
    free(p);
    free(lp);
    names_free(names, n);

    assert_int_equal(lsm_options_set_logger(&o, heard_fn, &h), LSM_OK);
    assert_int_equal(lsm_options_set_logger(NULL, heard_fn, &h), LSM_INVALID);
    db = open_with(f->dir, &o);
    if (!heard_has(&h, LSM_LOG_WARN, "torn tail") || !heard_has(&h, LSM_LOG_INFO, "replayed"))
        fail_msg("after a reopen over a torn log, the logger heard:\n%s", h.text);
    if (!heard_has(&h, LSM_LOG_WARN, "bytes"))
        fail_msg("the torn tail's line names no byte count:\n%s", h.text);
    /* The old log goes at open (DEBUG). */
    assert_true(heard_has(&h, LSM_LOG_DEBUG, "removed obsolete"));
    /* A flush (INFO) and a compaction (DEBUG), with bytes and time. */
    char val[1000];
    memset(val, 'v', sizeof val);
    for (int i = 0; i < 300; i++) {
        char k[16];
        snprintf(k, sizeof k, "x%03d", i);
        CHECK_OK(db, lsm_put(db, k, strlen(k), val, 500));
    }
    CHECK_OK(db, lsm_flush(db));
    CHECK_OK(db, lsm_compact(db));
    if (!heard_has(&h, LSM_LOG_INFO, "flush: ") || !heard_has(&h, LSM_LOG_DEBUG, "compaction: ") ||
        !heard_has(&h, LSM_LOG_INFO, " ms"))
        fail_msg("after writes, a flush and a compaction, the logger heard:\n%s", h.text);
    assert_int_equal(lsm_close(db), LSM_OK);
    heard_free(&h);
}

/* A full disk (the fault env's capacity) with a reserve: the logger hears the reserve given back
   and low-space mode entered (WARN), and left (INFO) once deletes free space. */
static void test_logger_full_disk(void **state)
{
    (void)state;
    heard h;
    heard_init(&h);
    lsm_env *env = faultenv_new();
    faultenv_set_capacity(env, 6u << 20);
    lsm_options o;
    options_defaults(&o);
    o.env = env;
    o.memtable_bytes = 128 << 10;
    o.table_bytes = 64 << 10;
    o.level1_bytes = 256 << 10;
    o.blob_threshold = 8 << 10;
    o.reserve_bytes = 512 << 10;
    lsm_options_set_logger(&o, heard_fn, &h);
    lsm_db *db = open_with("/db", &o);
    static uint8_t v[16 << 10];
    trng r;
    trng_seed(&r, test_seed("logger_full_disk", 5));
    int keys = 0, rc = LSM_OK;
    for (; keys < 2000; keys++) {
        char k[16];
        snprintf(k, sizeof k, "k%05d", keys);
        trng_fill(&r, v, sizeof v);
        rc = lsm_put(db, k, strlen(k), v, sizeof v);
        if (rc != LSM_OK)
            break;
    }
    assert_int_equal(rc, LSM_NOSPACE);
    if (!heard_has(&h, LSM_LOG_WARN, "reserve of") ||
        !heard_has(&h, LSM_LOG_WARN, "low-space mode entered"))
        fail_msg("on a full disk the logger heard:\n%s", h.text);
    for (int i = 0; i < keys; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%05d", i);
        CHECK_OK(db, lsm_delete(db, k, strlen(k)));
    }
    CHECK_OK(db, lsm_compact(db));
    for (int i = 0; i < 50 && !heard_has(&h, LSM_LOG_INFO, "low-space mode left"); i++) {
        put_str(db, "probe", "x");      /* a refused write retries the reserve once a second */
        usleep(100000);
    }
    if (!heard_has(&h, LSM_LOG_INFO, "low-space mode left"))
        fail_msg("after freeing space the logger heard:\n%s", h.text);
    assert_int_equal(lsm_close(db), LSM_OK);
    faultenv_free(env);
    heard_free(&h);
}

/* A background write that fails (the fault env's EIO) is reported as an ERROR with its cause. */
static void test_logger_background_error(void **state)
{
    (void)state;
    heard h;
    heard_init(&h);
    lsm_env *env = faultenv_new();
    lsm_options o;
    small_options(&o);
    o.env = env;
    lsm_options_set_logger(&o, heard_fn, &h);
    lsm_db *db = open_with("/db", &o);
    put_str(db, "k", "v");
    faultenv_fail_after(env, 0, EIO);
    assert_int_not_equal(lsm_flush(db), LSM_OK);
    for (int i = 0; i < 50 && !heard_has(&h, LSM_LOG_ERROR, "background error"); i++)
        usleep(20000);
    if (!heard_has(&h, LSM_LOG_ERROR, "background error") || !heard_has(&h, LSM_LOG_ERROR, "I/O"))
        fail_msg("after a failed background write the logger heard:\n%s", h.text);
    lsm_close(db);
    faultenv_free(env);
    heard_free(&h);
}

/* A read that meets a checksum failure is reported (ERROR). */
static void test_logger_corruption(void **state)
{
    fixture *f = *state;
    heard h;
    heard_init(&h);
    lsm_options o;
    small_options(&o);
    o.cache_bytes = 0;
    lsm_db *db = open_with(f->dir, &o);
    char val[200];
    memset(val, 'q', sizeof val);
    for (int i = 0; i < 100; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%03d", i);
        CHECK_OK(db, lsm_put(db, k, strlen(k), val, sizeof val));
    }
    assert_int_equal(lsm_close(db), LSM_OK);
    db = open_with(f->dir, &o);             /* the log became a table */
    assert_int_equal(lsm_close(db), LSM_OK);
    char **names = NULL;
    int n = dir_names(f->dir, "", ".sst", &names);
    assert_int_equal(n, 1);
    char *tp = path_join(f->dir, names[0]);
    names_free(names, n);
    uint8_t *p;
    size_t len;
    assert_int_equal(file_read(tp, &p, &len), 0);
    p[100] ^= 0x40;                         /* inside the first data block */
    assert_int_equal(file_write(tp, p, len), 0);
    free(p);
    free(tp);
    lsm_options_set_logger(&o, heard_fn, &h);
    db = open_with(f->dir, &o);
    void *v = NULL;
    size_t vn;
    assert_int_equal(lsm_get(db, "k000", 4, &v, &vn), LSM_CORRUPT);
    if (!heard_has(&h, LSM_LOG_ERROR, "read: "))
        fail_msg("a read met a damaged block; the logger heard:\n%s", h.text);
    assert_int_equal(lsm_close(db), LSM_OK);
    heard_free(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_snapshot_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_misuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_iter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_blobs_and_extents, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_threads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destroy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_approximate_size, setup, teardown),
        cmocka_unit_test_setup_teardown(test_logger_recovery, setup, teardown),
        cmocka_unit_test(test_logger_full_disk),
        cmocka_unit_test(test_logger_background_error),
        cmocka_unit_test_setup_teardown(test_logger_corruption, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
