/*
 * test_db.c — behaviour of the public API (lsm.h) on a real directory: open/create rules, point
 * operations and their limits, batches, snapshots and seeks, flush/compact/reopen, the directory
 * lock, statistics, error texts, concurrent use from several threads, and that the engine's own
 * threads leave signals to the application's.
 *
 * Each test works in its own temporary directory under /tmp and removes it. Nothing here looks at
 * engine internals or file formats: only what lsm.h promises.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "faultenv.h"
#include "helper_model.h"
#include "lsm.h"
#include "options.h"

static int setup(void **state)
{
    return db_fixture_new(state, "db");
}

static int teardown(void **state)
{
    return db_fixture_free(state);
}

static lsm_db *open_db(const char *dir, size_t memtable_bytes)
{
    lsm_options o;
    options_defaults(&o);
    if (memtable_bytes)
        o.memtable_bytes = memtable_bytes;
    lsm_db *db = NULL;
    int rc = lsm_open(dir, &o, &db);
    if (rc != LSM_OK)
        fail_msg("lsm_open(%s) = %d (%s): %s", dir, rc, lsm_strerror(rc), lsm_errmsg(NULL));
    assert_non_null(db);
    return db;
}

static void put_str(lsm_db *db, const char *k, const char *v)
{
    CHECK_OK(db, lsm_put(db, k, strlen(k), v, strlen(v)));
}

/* Asserts k holds exactly v (v NULL: absent). */
static void expect(lsm_db *db, const void *k, size_t kl, const void *v, size_t vl)
{
    void *got = NULL;
    size_t gl = 12345;
    int rc = lsm_get(db, k, kl, &got, &gl);
    if (!v) {
        if (rc != LSM_NOTFOUND)
            fail_msg("get('%s') = %d (%s), expected LSM_NOTFOUND", show(k, kl), rc, lsm_strerror(rc));
        free(got);
        return;
    }
    if (rc != LSM_OK)
        fail_msg("get('%s') = %d (%s) %s, expected a value", show(k, kl), rc, lsm_strerror(rc),
                 lsm_errmsg(db));
    assert_non_null(got);
    if (gl != vl || (vl && memcmp(got, v, vl) != 0))
        fail_msg("get('%s'): %zu bytes '%s', expected %zu bytes '%s'", show(k, kl), gl,
                 show(got, gl < 32 ? gl : 32), vl, show(v, vl < 32 ? vl : 32));
    free(got);
}

static void expect_str(lsm_db *db, const char *k, const char *v)
{
    expect(db, k, strlen(k), v, v ? strlen(v) : 0);
}

static int total_tables(const lsm_stats *st)
{
    int n = 0;
    for (int i = 0; i < LSM_MAX_LEVELS; i++)
        n += st->tables[i];
    return n;
}

/* ---- open / create ---- */

static void test_open_creates(void **state)
{
    fixture *f = *state;
    lsm_db *db = open_db(f->dir, 0);
    struct stat st;
    assert_int_equal(stat(f->dir, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    put_str(db, "a", "1");
    assert_int_equal(lsm_close(db), LSM_OK);
    db = open_db(f->dir, 0);
    expect_str(db, "a", "1");
    assert_int_equal(lsm_close(db), LSM_OK);
}

static void test_open_missing_no_create(void **state)
{
    fixture *f = *state;
    lsm_options o;
    options_defaults(&o);
    assert_int_equal(o.create_if_missing, 1);
    o.create_if_missing = 0;
    lsm_db *db = (lsm_db *)&o;  /* must be overwritten with NULL */
    int rc = lsm_open(f->dir, &o, &db);
    assert_int_not_equal(rc, LSM_OK);
    assert_null(db);
    assert_true(strlen(lsm_errmsg(NULL)) > 0);
    struct stat st;
    assert_int_not_equal(stat(f->dir, &st), 0);  /* a failed open creates nothing */

    /* An empty existing directory is not a database either. */
    assert_int_equal(mkdir(f->dir, 0700), 0);
    rc = lsm_open(f->dir, &o, &db);
    assert_int_not_equal(rc, LSM_OK);
    assert_null(db);
}

static void test_error_if_exists(void **state)
{
    fixture *f = *state;
    lsm_options o;
    options_defaults(&o);
    o.error_if_exists = 1;
    lsm_db *db = NULL;
    CHECK_OK(NULL, lsm_open(f->dir, &o, &db));  /* new: fine */
    put_str(db, "k", "v");
    assert_int_equal(lsm_close(db), LSM_OK);
    db = NULL;
    assert_int_equal(lsm_open(f->dir, &o, &db), LSM_EXISTS);
    assert_null(db);
    db = open_db(f->dir, 0);  /* and the failed open changed nothing */
    expect_str(db, "k", "v");
    lsm_close(db);
}

/* ---- point operations ---- */

static void test_put_get_delete(void **state)
{
    fixture *f = *state;
    lsm_db *db = open_db(f->dir, 0);
    expect_str(db, "missing", NULL);
    put_str(db, "alpha", "one");
    put_str(db, "beta", "two");
    expect_str(db, "alpha", "one");
    expect_str(db, "beta", "two");
    CHECK_OK(db, lsm_delete(db, "alpha", 5));
    expect_str(db, "alpha", NULL);
    expect_str(db, "beta", "two");
    CHECK_OK(db, lsm_delete(db, "never-there", 11));  /* deleting a missing key is fine */
    expect_str(db, "never-there", NULL);
    put_str(db, "alpha", "again");
    expect_str(db, "alpha", "again");
    /* Binary keys and values with NUL and 0xff bytes. */
    const uint8_t bk[] = { 0, 0xff, 0, 1 }, bv[] = { 0xff, 0, 0, 0xfe, 0 };
    CHECK_OK(db, lsm_put(db, bk, sizeof bk, bv, sizeof bv));
    expect(db, bk, sizeof bk, bv, sizeof bv);
    expect(db, bk, 1, NULL, 0);
    expect(db, bk, 3, NULL, 0);
    CHECK_OK(db, lsm_flush(db));
    expect_str(db, "alpha", "again");
    expect(db, bk, sizeof bk, bv, sizeof bv);
    expect(db, bk, 3, NULL, 0);
    assert_int_equal(lsm_close(db), LSM_OK);
}

static void test_empty_value(void **state)
{
    fixture *f = *state;
    lsm_db *db = open_db(f->dir, 0);
    CHECK_OK(db, lsm_put(db, "e", 1, "", 0));
    CHECK_OK(db, lsm_put(db, "n", 1, NULL, 0));
    for (int round = 0; round < 3; round++) {
        expect(db, "e", 1, "", 0);
        expect(db, "n", 1, "", 0);
        uint64_t sz = 99;
        CHECK_OK(db, lsm_get_size(db, "e", 1, &sz));
        assert_int_equal(sz, 0);
        /* An empty value is present: it shows up in a scan. */
        lsm_iter *it;
        CHECK_OK(db, lsm_iter_new(db, &it));
        lsm_iter_seek(it, NULL, 0);
        assert_true(lsm_iter_valid(it));
        size_t kl, vl = 7;
        const void *k = lsm_iter_key(it, &kl);
        lsm_iter_value(it, &vl);
        assert_int_equal(kl, 1);
        assert_memory_equal(k, "e", 1);
        assert_int_equal(vl, 0);
        lsm_iter_free(it);
        if (round == 0) {
            CHECK_OK(db, lsm_flush(db));
        } else if (round == 1) {
            lsm_close(db);
            db = open_db(f->dir, 0);
        }
    }
    CHECK_OK(db, lsm_delete(db, "e", 1));
    expect(db, "e", 1, NULL, 0);
    lsm_close(db);
}

static void test_key_limits(void **state)
{
    fixture *f = *state;
    lsm_db *db = open_db(f->dir, 0);
    size_t max = LSM_MAX_KEY;
    assert_int_equal(max, 65535);
    uint8_t *big = malloc(max + 1);
    for (size_t i = 0; i <= max; i++)
        big[i] = (uint8_t)('a' + i % 26);

    CHECK_OK(db, lsm_put(db, big, max, "max", 3));
    expect(db, big, max, "max", 3);
    lsm_stats st0, st1;
    CHECK_OK(db, lsm_stats_get(db, &st0, sizeof st0));

    /* One byte too long: refused, nothing changes. */
    assert_int_equal(lsm_put(db, big, max + 1, "toolong", 7), LSM_INVALID);
    assert_int_equal(lsm_delete(db, big, max + 1), LSM_INVALID);
    void *v = NULL;
    size_t vl;
    int rc = lsm_get(db, big, max + 1, &v, &vl);
    assert_true(rc == LSM_INVALID || rc == LSM_NOTFOUND);
    free(v);
    v = NULL;
    assert_int_equal(lsm_put(db, "", 0, "empty", 5), LSM_INVALID);
    assert_int_equal(lsm_delete(db, "", 0), LSM_INVALID);
    rc = lsm_get(db, "", 0, &v, &vl);
    assert_true(rc == LSM_INVALID || rc == LSM_NOTFOUND);
    free(v);
    v = NULL;

    /* A batch holding one bad key is refused as a whole. */
    lsm_batch *b = lsm_batch_new();
    lsm_batch_put(b, "good", 4, "1", 1);
    lsm_batch_delete(b, big, max);
    lsm_batch_put(b, big, max + 1, "x", 1);
    assert_int_equal(lsm_write(db, b, 0), LSM_INVALID);
    lsm_batch_clear(b);
    lsm_batch_put(b, "good2", 5, "1", 1);
    lsm_batch_put(b, "", 0, "x", 1);
    assert_int_equal(lsm_write(db, b, 1), LSM_INVALID);
    lsm_batch_free(b);

    CHECK_OK(db, lsm_stats_get(db, &st1, sizeof st1));
    assert_int_equal(st1.last_sequence, st0.last_sequence);
    expect(db, big, max, "max", 3);
    expect_str(db, "good", NULL);
    expect_str(db, "good2", NULL);
    lsm_iter *it;
    CHECK_OK(db, lsm_iter_new(db, &it));
    int n = 0;
    for (lsm_iter_seek(it, NULL, 0); lsm_iter_valid(it); lsm_iter_next(it)) {
        size_t kl;
        lsm_iter_key(it, &kl);
        assert_int_equal(kl, max);
        n++;
    }
    assert_int_equal(n, 1);
    lsm_iter_free(it);

    /* The longest key survives a flush, a compaction and a reopen. */
    CHECK_OK(db, lsm_flush(db));
    expect(db, big, max, "max", 3);
    CHECK_OK(db, lsm_compact(db));
    expect(db, big, max, "max", 3);
    lsm_close(db);
    db = open_db(f->dir, 0);
    expect(db, big, max, "max", 3);
    expect(db, big, max - 1, NULL, 0);
    lsm_close(db);
    free(big);
}

static void test_big_value(void **state)
{
    fixture *f = *state;
    lsm_db *db = open_db(f->dir, 0);
    size_t n = 10u << 20;
    uint8_t *val = malloc(n);
    trng r;
    trng_seed(&r, 42);
    trng_fill(&r, val, n);
    CHECK_OK(db, lsm_put(db, "big", 3, val, n));
    put_str(db, "small", "s");
    for (int round = 0; round < 3; round++) {
        expect(db, "big", 3, val, n);
        uint64_t sz = 0;
        CHECK_OK(db, lsm_get_size(db, "big", 3, &sz));
        assert_int_equal(sz, n);
        uint8_t part[100];
        size_t nread = 0;
        uint64_t vlen = 0;
        CHECK_OK(db, lsm_get_range(db, "big", 3, 5000000, part, sizeof part, &nread, &vlen));
        assert_int_equal(nread, sizeof part);
        assert_int_equal(vlen, n);
        assert_memory_equal(part, val + 5000000, sizeof part);
        CHECK_OK(db, lsm_get_range(db, "big", 3, n - 10, part, sizeof part, &nread, NULL));
        assert_int_equal(nread, 10);
        assert_memory_equal(part, val + n - 10, 10);
        expect_str(db, "small", "s");
        if (round == 0) {
            CHECK_OK(db, lsm_flush(db));
        } else if (round == 1) {
            lsm_close(db);
            db = open_db(f->dir, 0);
        }
    }
    lsm_close(db);
    free(val);
}

static void test_overwrite(void **state)
{
    fixture *f = *state;
    lsm_db *db = open_db(f->dir, 0);
    char v[32];
    for (int i = 0; i < 50; i++) {
        snprintf(v, sizeof v, "version-%d", i);
        put_str(db, "k", v);
        put_str(db, "other", v);
        if (i % 10 == 9)
            CHECK_OK(db, lsm_flush(db));
        expect_str(db, "k", v);
    }
    lsm_iter *it;
    CHECK_OK(db, lsm_iter_new(db, &it));
    int n = 0;
    for (lsm_iter_seek(it, NULL, 0); lsm_iter_valid(it); lsm_iter_next(it)) {
        size_t vl;
        const void *val = lsm_iter_value(it, &vl);
        assert_int_equal(vl, strlen("version-49"));
        assert_memory_equal(val, "version-49", vl);
        n++;
    }
    assert_int_equal(n, 2);
    lsm_iter_free(it);
    CHECK_OK(db, lsm_compact(db));
    expect_str(db, "k", "version-49");
    lsm_close(db);
    db = open_db(f->dir, 0);
    expect_str(db, "k", "version-49");
    lsm_close(db);
}

/* Peak resident bytes of this process since the last reset_peak_rss (VmHWM), or 0 if unknown. */
static uint64_t peak_rss(void)
{
    FILE *fp = fopen("/proc/self/status", "r");
    char line[256];
    uint64_t kb = 0;
    while (fp && fgets(line, sizeof line, fp))
        if (sscanf(line, "VmHWM: %" SCNu64, &kb) == 1)
            break;
    if (fp)
        fclose(fp);
    return kb * 1024;
}

/* Sets the peak to what is resident now (Linux: clear_refs 5). */
static int reset_peak_rss(void)
{
    FILE *fp = fopen("/proc/self/clear_refs", "w");
    if (!fp)
        return -1;
    int rc = fputs("5", fp) < 0;
    return fclose(fp) != 0 || rc ? -1 : 0;
}

/* A small range read of a large value still in the memtable copies the range, not the value: the
   peak resident size does not grow by the value's size while 4 KiB pieces are read (it grew by
   64 MiB per read when lsm_get_range copied the whole value first). */
static void test_range_read_copies_only_the_range(void **state)
{
    fixture *f = *state;
    lsm_db *db = open_db(f->dir, 0);
    size_t n = 64u << 20;
    uint8_t *val = malloc(n);
    assert_non_null(val);
    trng r;
    trng_seed(&r, 64);
    trng_fill(&r, val, n);
    CHECK_OK(db, lsm_put(db, "big", 3, val, n));
    if (reset_peak_rss() != 0)
        skip();                 /* no /proc/self/clear_refs here */
    uint64_t before = peak_rss();
    uint8_t part[4096];
    for (uint64_t off = 0; off < n; off += n / 16) {
        size_t nread = 0;
        uint64_t vlen = 0;
        CHECK_OK(db, lsm_get_range(db, "big", 3, off + 123, part, sizeof part, &nread, &vlen));
        assert_int_equal(nread, sizeof part);
        assert_int_equal(vlen, n);
        assert_memory_equal(part, val + off + 123, sizeof part);
    }
    uint64_t grew = peak_rss() - before;
    if (grew > (8u << 20))
        fail_msg("reading 16 pieces of 4 KiB raised the peak resident size by %" PRIu64 " bytes",
                 grew);
    lsm_close(db);
    free(val);
}

static void check_ranges(lsm_db *db, const char *key, const uint8_t *val, size_t n)
{
    size_t kl = strlen(key);
    uint64_t sz = 0;
    CHECK_OK(db, lsm_get_size(db, key, kl, &sz));
    assert_int_equal(sz, n);
    uint8_t buf[300];
    uint64_t offs[] = { 0, 1, n / 2, n - 1, n, n + 1, n + 100000 };
    size_t lens[] = { 0, 1, 7, 300 };
    for (size_t i = 0; i < sizeof offs / sizeof offs[0]; i++) {
        for (size_t j = 0; j < sizeof lens / sizeof lens[0]; j++) {
            size_t nread = 999;
            uint64_t vlen = 0;
            memset(buf, 0xaa, sizeof buf);
            CHECK_OK(db, lsm_get_range(db, key, kl, offs[i], buf, lens[j], &nread, &vlen));
            size_t want = offs[i] >= n ? 0 : (n - offs[i] < lens[j] ? n - offs[i] : lens[j]);
            if (nread != want)
                fail_msg("get_range(%s, off %llu, n %zu): nread %zu, want %zu", key,
                         (unsigned long long)offs[i], lens[j], nread, want);
            assert_int_equal(vlen, n);
            if (want)
                assert_memory_equal(buf, val + offs[i], want);
            if (lens[j] < sizeof buf)
                assert_int_equal(buf[lens[j]], 0xaa);  /* never writes past n */
        }
    }
}

static void test_get_size_range(void **state)
{
    fixture *f = *state;
    lsm_db *db = open_db(f->dir, 0);
    size_t sizes[] = { 1, 1000, 200000 };  /* the last is past the default blob threshold */
    uint8_t *vals[3];
    trng r;
    trng_seed(&r, 7);
    for (int i = 0; i < 3; i++) {
        vals[i] = malloc(sizes[i]);
        trng_fill(&r, vals[i], sizes[i]);
        char k[16];
        snprintf(k, sizeof k, "v%d", i);
        CHECK_OK(db, lsm_put(db, k, strlen(k), vals[i], sizes[i]));
    }
    uint64_t sz;
    assert_int_equal(lsm_get_size(db, "nope", 4, &sz), LSM_NOTFOUND);
    size_t nread;
    uint8_t b[4];
    assert_int_equal(lsm_get_range(db, "nope", 4, 0, b, 4, &nread, NULL), LSM_NOTFOUND);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 3; i++) {
            char k[16];
            snprintf(k, sizeof k, "v%d", i);
            check_ranges(db, k, vals[i], sizes[i]);
        }
        if (round == 0) {
            CHECK_OK(db, lsm_flush(db));
        } else if (round == 1) {
            lsm_close(db);
            db = open_db(f->dir, 0);
        }
    }
    CHECK_OK(db, lsm_delete(db, "v1", 2));
    assert_int_equal(lsm_get_size(db, "v1", 2, &sz), LSM_NOTFOUND);
    lsm_close(db);
    for (int i = 0; i < 3; i++)
        free(vals[i]);
}

/* ---- batches ---- */

static void test_batch_basic(void **state)
{
    fixture *f = *state;
    lsm_db *db = open_db(f->dir, 0);
    put_str(db, "gone", "x");
    put_str(db, "keep", "old");
    lsm_batch *b = lsm_batch_new();
    assert_int_equal(lsm_batch_count(b), 0);
    char k[16], v[16];
    for (int i = 0; i < 100; i++) {
        snprintf(k, sizeof k, "b%03d", i);
        snprintf(v, sizeof v, "val%d", i);
        lsm_batch_put(b, k, strlen(k), v, strlen(v));
    }
    lsm_batch_delete(b, "gone", 4);
    lsm_batch_put(b, "keep", 4, "first", 5);
    lsm_batch_put(b, "keep", 4, "second", 6);  /* later op in a batch wins */
    lsm_batch_put(b, "tmp", 3, "t", 1);
    lsm_batch_delete(b, "tmp", 3);
    assert_int_equal(lsm_batch_count(b), 105);
    lsm_iter *before;
    CHECK_OK(db, lsm_iter_new(db, &before));
    expect_str(db, "b000", NULL);  /* not applied until written */
    CHECK_OK(db, lsm_write(db, b, 1));
    for (int i = 0; i < 100; i++) {
        snprintf(k, sizeof k, "b%03d", i);
        snprintf(v, sizeof v, "val%d", i);
        expect_str(db, k, v);
    }
    expect_str(db, "gone", NULL);
    expect_str(db, "keep", "second");
    expect_str(db, "tmp", NULL);
    /* The iterator taken before sees none of it. */
    int n = 0;
    for (lsm_iter_seek(before, NULL, 0); lsm_iter_valid(before); lsm_iter_next(before))
        n++;
    assert_int_equal(n, 2);
    lsm_iter_free(before);

    lsm_batch_clear(b);
    assert_int_equal(lsm_batch_count(b), 0);
    CHECK_OK(db, lsm_write(db, b, 0));  /* an empty batch is fine */
    lsm_batch_free(b);
    lsm_batch_free(NULL);

    lsm_close(db);
    db = open_db(f->dir, 0);
    expect_str(db, "keep", "second");
    expect_str(db, "b099", "val99");
    expect_str(db, "gone", NULL);
    lsm_close(db);
}

#define ATOM_KEYS 32

typedef struct atom_arg {
    lsm_db *db;
    volatile int stop;
    long snapshots;
    char bad[256];
} atom_arg;

/* Reader: every snapshot must show all ATOM_KEYS keys with the same batch number. */
static void *atom_reader(void *p)
{
    atom_arg *a = p;
    while (!a->stop && !a->bad[0]) {
        lsm_iter *it;
        if (lsm_iter_new(a->db, &it) != LSM_OK) {
            snprintf(a->bad, sizeof a->bad, "lsm_iter_new failed");
            break;
        }
        long first = -2;
        int n = 0;
        for (lsm_iter_seek(it, "a", 1); lsm_iter_valid(it); lsm_iter_next(it)) {
            size_t kl, vl;
            const char *k = lsm_iter_key(it, &kl);
            const char *v = lsm_iter_value(it, &vl);
            if (kl < 1 || k[0] != 'a')
                break;
            char tmp[32];
            snprintf(tmp, sizeof tmp, "%.*s", (int)(vl < 31 ? vl : 31), v);
            long b = strtol(tmp, NULL, 10);
            if (first == -2)
                first = b;
            else if (b != first) {
                snprintf(a->bad, sizeof a->bad, "snapshot mixes batch %ld and %ld (key %s)", first,
                         b, show(k, kl));
                break;
            }
            n++;
        }
        if (!a->bad[0] && n != 0 && n != ATOM_KEYS)
            snprintf(a->bad, sizeof a->bad, "snapshot holds %d of %d keys", n, ATOM_KEYS);
        lsm_iter_free(it);
        a->snapshots++;
    }
    return NULL;
}

static void test_batch_atomic_visibility(void **state)
{
    fixture *f = *state;
    lsm_db *db = open_db(f->dir, 64 << 10);
    atom_arg a = { .db = db };
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, atom_reader, &a), 0);
    lsm_batch *b = lsm_batch_new();
    long rounds = test_scale(2000);
    for (long i = 0; i < rounds && !a.bad[0]; i++) {
        lsm_batch_clear(b);
        char k[16], v[64];
        snprintf(v, sizeof v, "%ld-padding-padding-padding-padding", i);
        for (int j = 0; j < ATOM_KEYS; j++) {
            snprintf(k, sizeof k, "a%02d", j);
            lsm_batch_put(b, k, strlen(k), v, strlen(v));
        }
        CHECK_OK(db, lsm_write(db, b, 0));
    }
    a.stop = 1;
    pthread_join(th, NULL);
    lsm_batch_free(b);
    if (a.bad[0])
        fail_msg("%s", a.bad);
    assert_true(a.snapshots > 0);
    lsm_close(db);
}

/* ---- iterators ---- */

static void test_iter_snapshot(void **state)
{
    fixture *f = *state;
    lsm_db *db = open_db(f->dir, 32 << 10);
    model *m = model_new();
    char k[32], v[64];
    for (int i = 0; i < 500; i++) {
        snprintf(k, sizeof k, "key%04d", i);
        snprintf(v, sizeof v, "first-%d", i);
        put_str(db, k, v);
        model_put(m, k, strlen(k), v, strlen(v));
    }
    lsm_iter *it;
    CHECK_OK(db, lsm_iter_new(db, &it));
    /* Overwrite, delete and add after the snapshot, across flushes and a compaction. */
    for (int i = 0; i < 1000; i++) {
        snprintf(k, sizeof k, "key%04d", i);
        snprintf(v, sizeof v, "second-%d", i);
        if (i % 3 == 0)
            CHECK_OK(db, lsm_delete(db, k, strlen(k)));
        else
            put_str(db, k, v);
    }
    check_iter_equals_model(it, m, "snapshot before flush");
    CHECK_OK(db, lsm_flush(db));
    check_iter_equals_model(it, m, "snapshot after flush");
    CHECK_OK(db, lsm_compact(db));
    check_iter_equals_model(it, m, "snapshot after compact");
    lsm_iter_free(it);
    expect_str(db, "key0000", NULL);
    expect_str(db, "key0001", "second-1");
    expect_str(db, "key0999", NULL);
    expect_str(db, "key0998", "second-998");
    model_free(m);
    lsm_close(db);
}

static void expect_at(lsm_iter *it, const char *want)
{
    if (!want) {
        if (lsm_iter_valid(it)) {
            size_t kl;
            const void *k = lsm_iter_key(it, &kl);
            fail_msg("iterator at '%s', expected the end", show(k, kl));
        }
        assert_int_equal(lsm_iter_status(it), LSM_OK);
        return;
    }
    if (!lsm_iter_valid(it))
        fail_msg("iterator at the end (status %d), expected '%s'", lsm_iter_status(it), want);
    size_t kl;
    const void *k = lsm_iter_key(it, &kl);
    if (kl != strlen(want) || memcmp(k, want, kl) != 0)
        fail_msg("iterator at '%s', expected '%s'", show(k, kl), want);
}

static void test_seek(void **state)
{
    fixture *f = *state;
    lsm_db *db = open_db(f->dir, 0);
    const char *keys[] = { "b", "d", "da", "f", "f\x01", "z\xff" };
    for (int round = 0; round < 3; round++) {
        if (round == 0) {
            for (size_t i = 0; i < 6; i++)
                put_str(db, keys[i], "v");
            put_str(db, "c", "deleted");
            CHECK_OK(db, lsm_delete(db, "c", 1));
        } else if (round == 1) {
            CHECK_OK(db, lsm_flush(db));
        } else {
            lsm_close(db);
            db = open_db(f->dir, 0);
        }
        lsm_iter *it;
        CHECK_OK(db, lsm_iter_new(db, &it));
        lsm_iter_seek(it, NULL, 0);
        expect_at(it, "b");
        lsm_iter_seek(it, "a", 1);
        expect_at(it, "b");
        lsm_iter_seek(it, "b", 1);
        expect_at(it, "b");
        lsm_iter_seek(it, "b\x00", 2);
        expect_at(it, "d");
        lsm_iter_seek(it, "c", 1);  /* deleted key: skipped */
        expect_at(it, "d");
        lsm_iter_next(it);
        expect_at(it, "da");
        lsm_iter_seek(it, "d\x00", 2);
        expect_at(it, "da");
        lsm_iter_seek(it, "e", 1);
        expect_at(it, "f");
        lsm_iter_next(it);
        expect_at(it, "f\x01");
        lsm_iter_next(it);
        expect_at(it, "z\xff");
        lsm_iter_next(it);
        expect_at(it, NULL);
        lsm_iter_seek(it, "z\xff\x00", 3);
        expect_at(it, NULL);
        lsm_iter_seek(it, "\xff", 1);
        expect_at(it, NULL);
        lsm_iter_seek(it, "f", 1);  /* seeking backwards after the end works */
        expect_at(it, "f");
        lsm_iter_seek(it, "", 0);
        expect_at(it, "b");
        lsm_iter_free(it);
    }
    lsm_close(db);

    /* An empty database: the iterator is at the end at once. */
    char *d2 = path_join(f->tmp, "empty");
    db = open_db(d2, 0);
    lsm_iter *it;
    CHECK_OK(db, lsm_iter_new(db, &it));
    lsm_iter_seek(it, NULL, 0);
    expect_at(it, NULL);
    lsm_iter_seek(it, "a", 1);
    expect_at(it, NULL);
    lsm_iter_free(it);
    lsm_iter_free(NULL);
    lsm_close(db);
    free(d2);
}

/* Overwrites and deletes spread over several tables and the memtable; scans must merge them. */
static void test_iter_flush_compact_reopen(void **state)
{
    fixture *f = *state;
    lsm_db *db = open_db(f->dir, 16 << 10);
    model *m = model_new();
    trng r;
    trng_seed(&r, test_seed("iter_flush_compact_reopen", 1234));
    char k[32], v[128];
    for (int round = 0; round < 8; round++) {
        for (int i = 0; i < 400; i++) {
            int key = (int)trng_below(&r, 1000);
            snprintf(k, sizeof k, "k%05d", key);
            if (trng_chance(&r, 25)) {
                CHECK_OK(db, lsm_delete(db, k, strlen(k)));
                model_del(m, k, strlen(k));
            } else {
                int n = snprintf(v, sizeof v, "r%d-i%d-", round, i);
                size_t vl = (size_t)n + trng_below(&r, 60);
                memset(v + n, 'x', vl - (size_t)n);
                CHECK_OK(db, lsm_put(db, k, strlen(k), v, vl));
                model_put(m, k, strlen(k), v, vl);
            }
        }
        if (round % 2 == 0)
            CHECK_OK(db, lsm_flush(db));
        check_db_equals_model(db, m, "after round");
    }
    lsm_stats st;
    CHECK_OK(db, lsm_stats_get(db, &st, sizeof st));
    assert_true(total_tables(&st) >= 1);
    CHECK_OK(db, lsm_compact(db));
    check_db_equals_model(db, m, "after compact");
    lsm_close(db);
    db = open_db(f->dir, 16 << 10);
    check_db_equals_model(db, m, "after reopen");
    /* Seek to every model key and to the gap just after it. */
    lsm_iter *it;
    CHECK_OK(db, lsm_iter_new(db, &it));
    for (size_t i = 0; i < model_count(m); i++) {
        const uint8_t *mk;
        size_t mkl;
        model_at(m, i, &mk, &mkl, NULL, NULL);
        lsm_iter_seek(it, mk, mkl);
        assert_true(lsm_iter_valid(it));
        size_t kl;
        const void *got = lsm_iter_key(it, &kl);
        assert_int_equal(bytes_cmp(got, kl, mk, mkl), 0);
        char gap[40];
        memcpy(gap, mk, mkl);
        gap[mkl] = 0;
        lsm_iter_seek(it, gap, mkl + 1);
        if (i + 1 < model_count(m)) {
            const uint8_t *nk;
            size_t nkl;
            model_at(m, i + 1, &nk, &nkl, NULL, NULL);
            assert_true(lsm_iter_valid(it));
            got = lsm_iter_key(it, &kl);
            assert_int_equal(bytes_cmp(got, kl, nk, nkl), 0);
        } else {
            assert_false(lsm_iter_valid(it));
        }
    }
    lsm_iter_free(it);
    model_free(m);
    lsm_close(db);
}

static void test_reopen_keeps_everything(void **state)
{
    fixture *f = *state;
    model *m = model_new();
    char k[32], v[64];
    for (int session = 0; session < 5; session++) {
        lsm_db *db = open_db(f->dir, 8 << 10);
        check_db_equals_model(db, m, "at reopen");
        for (int i = 0; i < 300; i++) {
            snprintf(k, sizeof k, "s%d-%d", session, i);
            snprintf(v, sizeof v, "value of %s", k);
            put_str(db, k, v);
            model_put(m, k, strlen(k), v, strlen(v));
            if (session > 0 && i % 7 == 0) {
                snprintf(k, sizeof k, "s%d-%d", session - 1, i);
                CHECK_OK(db, lsm_delete(db, k, strlen(k)));
                model_del(m, k, strlen(k));
            }
        }
        /* The last writes of each session are only in the log when it closes. */
        put_str(db, "last", k);
        model_put(m, "last", 4, k, strlen(k));
        assert_int_equal(lsm_close(db), LSM_OK);
    }
    lsm_db *db = open_db(f->dir, 0);
    check_db_equals_model(db, m, "final");
    lsm_close(db);
    model_free(m);
}

/* ---- lock ---- */

static void test_lock_busy(void **state)
{
    fixture *f = *state;
    lsm_db *db = open_db(f->dir, 0);
    put_str(db, "k", "v");
    lsm_db *db2 = (lsm_db *)f;
    int rc = lsm_open(f->dir, NULL, &db2);
    assert_int_equal(rc, LSM_BUSY);
    assert_null(db2);
    const char *msg = lsm_errmsg(NULL);
    if (!strstr(msg, "LOCK"))
        fail_msg("errmsg for LSM_BUSY does not name LOCK: '%s'", msg);
    expect_str(db, "k", "v");  /* the first handle is unharmed */
    put_str(db, "k2", "v2");
    assert_int_equal(lsm_close(db), LSM_OK);
    db = open_db(f->dir, 0);
    expect_str(db, "k2", "v2");
    lsm_close(db);
}

/* A second process cannot open the directory either, and is told who holds it. */
static void test_lock_other_process(void **state)
{
    fixture *f = *state;
    lsm_db *db = open_db(f->dir, 0);
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    fflush(stdout);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(pfd[0]);
        lsm_db *db2 = NULL;
        int rc = lsm_open(f->dir, NULL, &db2);
        char msg[600];
        int n = snprintf(msg, sizeof msg, "%d %s", rc, lsm_errmsg(NULL));
        if (write(pfd[1], msg, (size_t)n) < 0)
            _exit(3);
        _exit(db2 == NULL ? 0 : 1);
    }
    close(pfd[1]);
    char msg[600] = "";
    ssize_t n = read(pfd[0], msg, sizeof msg - 1);
    close(pfd[0]);
    int st;
    waitpid(pid, &st, 0);
    assert_true(n > 0);
    msg[n] = 0;
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    int rc = atoi(msg);
    if (rc != LSM_BUSY)
        fail_msg("second process: lsm_open = %s, expected LSM_BUSY (%d)", msg, LSM_BUSY);
    char pidstr[32];
    snprintf(pidstr, sizeof pidstr, "%ld", (long)getpid());
    if (!strstr(msg, "LOCK") || !strstr(msg, pidstr))
        fail_msg("second process: message does not name LOCK and the holder's pid %s: '%s'", pidstr,
                 msg);
    put_str(db, "still", "works");
    expect_str(db, "still", "works");
    lsm_close(db);
}

/* Values at and past blob_threshold go to blob files when flushed; reads are the same. */
static void test_blob_values(void **state)
{
    fixture *f = *state;
    lsm_options o;
    options_defaults(&o);
    o.blob_threshold = 1000;
    o.memtable_bytes = 256 << 10;
    lsm_db *db = NULL;
    CHECK_OK(NULL, lsm_open(f->dir, &o, &db));
    size_t sizes[] = { 0, 1, 999, 1000, 1001, 65535, 65536, 65537, 200000, 1 << 20 };
    int ns = (int)(sizeof sizes / sizeof sizes[0]);
    model *m = model_new();
    trng r;
    trng_seed(&r, 99);
    uint8_t *v = malloc(1 << 20);
    char k[32];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < ns; i++) {
            snprintf(k, sizeof k, "blob%02d", (i * 7 + round * 3) % ns);
            trng_fill(&r, v, sizes[i]);
            CHECK_OK(db, lsm_put(db, k, strlen(k), v, sizes[i]));
            model_put(m, k, strlen(k), v, sizes[i]);
        }
        snprintf(k, sizeof k, "blob%02d", round * 2);
        CHECK_OK(db, lsm_delete(db, k, strlen(k)));
        model_del(m, k, strlen(k));
        CHECK_OK(db, lsm_flush(db));
        check_db_equals_model(db, m, "blob values after flush");
        for (size_t i = 0; i < model_count(m); i++) {
            const uint8_t *mk, *mv;
            size_t mkl, mvl;
            model_at(m, i, &mk, &mkl, &mv, &mvl);
            char key[32];
            snprintf(key, sizeof key, "%.*s", (int)mkl, (const char *)mk);
            check_ranges(db, key, mv, mvl);
        }
    }
    lsm_stats st;
    CHECK_OK(db, lsm_stats_get(db, &st, sizeof st));
    if (st.blob_bytes_written < 65536)
        fail_msg("blob_threshold 1000: only %llu blob bytes written after flushing values up to 1 MiB",
                 (unsigned long long)st.blob_bytes_written);
    CHECK_OK(db, lsm_compact(db));
    check_db_equals_model(db, m, "blob values after compact");
    lsm_close(db);
    o.blob_threshold = 0;   /* reading old blobs does not depend on the current threshold */
    CHECK_OK(NULL, lsm_open(f->dir, &o, &db));
    check_db_equals_model(db, m, "blob values after reopen");
    lsm_close(db);
    free(v);
    model_free(m);
}

/* Reads of blob values while background compaction rewrites and collects blob files: every read
   of a healthy database succeeds with the right bytes. Runs on the in-memory env to be fast
   enough to meet the races. */
typedef struct blobrd_arg {
    lsm_db *db;
    volatile int stop;
    long reads;
    char bad[300];
} blobrd_arg;

/* Checks a value written by the test below: "<i>:" then filler 'a' + i % 26. */
static int blob_value_ok(const uint8_t *v, size_t n)
{
    int i = atoi((const char *)v);
    const uint8_t *colon = memchr(v, ':', n < 16 ? n : 16);
    if (!colon)
        return 0;
    for (size_t j = (size_t)(colon - v) + 1; j < n; j++)
        if (v[j] != 0 && v[j] != (uint8_t)('a' + i % 26))
            return 0;
    return 1;
}

static void *blob_reader(void *p)
{
    blobrd_arg *a = p;
    trng r;
    trng_seed(&r, (uint64_t)(uintptr_t)p);
    char k[32];
    while (!a->stop && !a->bad[0]) {
        snprintf(k, sizeof k, "key%04d", (int)trng_below(&r, 120));
        void *g = NULL;
        size_t gl = 0;
        int rc = lsm_get(a->db, k, strlen(k), &g, &gl);
        if (rc == LSM_OK && !blob_value_ok(g, gl))
            snprintf(a->bad, sizeof a->bad, "reader: lsm_get(%s) returned a torn value", k);
        else if (rc != LSM_OK && rc != LSM_NOTFOUND)
            snprintf(a->bad, sizeof a->bad, "reader: lsm_get(%s) = %d (%s) %s", k, rc,
                     lsm_strerror(rc), lsm_errmsg(a->db));
        free(g);
        a->reads++;
    }
    return NULL;
}

static void test_blob_reads_during_compaction(void **state)
{
    (void)state;
    uint64_t seed = test_seed("blob_reads_during_compaction", 18);
    int trials = (int)test_scale(40);
    static uint8_t v[5000];
    for (int t = 0; t < trials; t++) {
        lsm_env *env = faultenv_new();
        lsm_options o;
        options_defaults(&o);
        o.env = env;
        o.memtable_bytes = 4096;
        o.block_bytes = 1024;
        o.table_bytes = 16 << 10;
        o.blob_threshold = 2048;
        lsm_db *db = NULL;
        CHECK_OK(NULL, lsm_open("/db", &o, &db));
        model *m = model_new();
        trng r;
        trng_seed(&r, seed + (uint64_t)t);
        char k[32];
        blobrd_arg ra[2];
        pthread_t th[2];
        for (int j = 0; j < 2; j++) {
            memset(&ra[j], 0, sizeof ra[j]);
            ra[j].db = db;
            assert_int_equal(pthread_create(&th[j], NULL, blob_reader, &ra[j]), 0);
        }
        for (int i = 0; i < 3000 && !ra[0].bad[0] && !ra[1].bad[0]; i++) {
            snprintf(k, sizeof k, "key%04d", (int)trng_below(&r, 120));
            size_t vl = trng_chance(&r, 33) ? 2048 + trng_below(&r, 2000) : 8 + trng_below(&r, 200);
            memset(v, 'a' + i % 26, vl);
            snprintf((char *)v, 16, "%d:", i);
            CHECK_OK(db, lsm_put(db, k, strlen(k), v, vl));
            model_put(m, k, strlen(k), v, vl);
            snprintf(k, sizeof k, "key%04d", (int)trng_below(&r, 120));
            size_t ml = 0;
            const uint8_t *mv = model_get(m, k, strlen(k), &ml);
            void *g = NULL;
            size_t gl = 0;
            int rc = lsm_get(db, k, strlen(k), &g, &gl);
            if (rc != (mv ? LSM_OK : LSM_NOTFOUND))
                fail_msg("seed %" PRIu64 " trial %d op %d: lsm_get(%s) = %d (%s) %s", seed + (uint64_t)t,
                         t, i, k, rc, lsm_strerror(rc), lsm_errmsg(db));
            if (mv && (gl != ml || memcmp(g, mv, ml) != 0))
                fail_msg("seed %" PRIu64 " trial %d op %d: lsm_get(%s): wrong value", seed + (uint64_t)t,
                         t, i, k);
            free(g);
            if (mv && ml > 100) {
                uint8_t part[64];
                size_t nread = 0;
                uint64_t off = trng_below(&r, ml - 64), vlen = 0;
                rc = lsm_get_range(db, k, strlen(k), off, part, sizeof part, &nread, &vlen);
                if (rc != LSM_OK || nread != sizeof part || vlen != ml ||
                    memcmp(part, mv + off, sizeof part) != 0)
                    fail_msg("seed %" PRIu64 " trial %d op %d: lsm_get_range(%s) = %d (%s) %s",
                             seed + (uint64_t)t, t, i, k, rc, lsm_strerror(rc), lsm_errmsg(db));
            }
        }
        for (int j = 0; j < 2; j++) {
            ra[j].stop = 1;
            pthread_join(th[j], NULL);
        }
        for (int j = 0; j < 2; j++)
            if (ra[j].bad[0])
                fail_msg("seed %" PRIu64 " trial %d: %s", seed + (uint64_t)t, t, ra[j].bad);
        check_db_equals_model(db, m, "blob reads during compaction, final");
        lsm_close(db);
        model_free(m);
        faultenv_free(env);
    }
}

/* Closes db, opens dir again with o, checks it against m, closes it and frees m. */
static void close_reopen_check(lsm_db *db, const char *dir, const lsm_options *o, model *m,
                               const char *what)
{
    CHECK_OK(db, lsm_close(db));
    db = NULL;
    CHECK_OK(NULL, lsm_open(dir, o, &db));
    check_db_equals_model(db, m, what);
    CHECK_OK(db, lsm_close(db));
    model_free(m);
}

/* Files of dir whose names end in suffix. */
static int count_suffix(const char *dir, const char *suffix)
{
    char **names;
    int n = dir_names(dir, "", suffix, &names);
    names_free(names, n);
    return n;
}

/* lsm_compact_range frees what deletes and overwrites inside the range left behind, blob files
   included, without rewriting the rest of the tree; open ends reach the whole tree. */
static void test_compact_range(void **state)
{
    fixture *f = *state;
    lsm_options o;
    options_defaults(&o);
    o.memtable_bytes = 32 << 10;
    o.table_bytes = 8 << 10;
    o.level1_bytes = 32 << 10;
    o.blob_threshold = 4096;
    lsm_db *db = NULL;
    CHECK_OK(NULL, lsm_open(f->dir, &o, &db));
    model *m = model_new();
    char k[32];
    static uint8_t big[20000], v[100];
    /* 20 big values ("b..." keys, blob files), then enough small keys on both sides ("a...",
       "c...") to spread the tree over levels 1 to 3. */
    for (int i = 0; i < 20; i++) {
        snprintf(k, sizeof k, "b%03d", i);
        memset(big, 'A' + i, sizeof big);
        CHECK_OK(db, lsm_put(db, k, strlen(k), big, sizeof big));
        model_put(m, k, strlen(k), big, sizeof big);
    }
    CHECK_OK(db, lsm_flush(db));
    for (int i = 0; i < 20000; i++) {
        snprintf(k, sizeof k, "%c%06d", i % 2 ? 'a' : 'c', (i * 7919) % 10000);
        memset(v, 'a' + i % 26, sizeof v);
        CHECK_OK(db, lsm_put(db, k, strlen(k), v, sizeof v));
        model_put(m, k, strlen(k), v, sizeof v);
    }
    CHECK_OK(db, lsm_flush(db));
    /* Delete half the big values and overwrite the rest with small ones. */
    for (int i = 0; i < 20; i++) {
        snprintf(k, sizeof k, "b%03d", i);
        if (i % 2) {
            CHECK_OK(db, lsm_delete(db, k, strlen(k)));
            model_del(m, k, strlen(k));
        } else {
            CHECK_OK(db, lsm_put(db, k, strlen(k), "small", 5));
            model_put(m, k, strlen(k), "small", 5);
        }
    }
    /* Let the background merges finish first (slowly under sanitizers), so that the bytes written
       from here on are lsm_compact_range's own. */
    lsm_stats before, after;
    for (int i = 0; i < 600; i++) {
        CHECK_OK(db, lsm_stats_get(db, &before, sizeof before));
        if (before.pending_compaction_bytes == 0)
            break;
        usleep(50000);
    }
    if (before.pending_compaction_bytes != 0)
        fail_msg("background merging still has %llu bytes to do after 30 s",
                 (unsigned long long)before.pending_compaction_bytes);
    if (before.blob_bytes_live < 20 * sizeof big)
        fail_msg("%llu blob bytes live before, expected the 20 values of %zu bytes",
                 (unsigned long long)before.blob_bytes_live, sizeof big);
    int deep = 0;
    for (int l = 2; l < LSM_MAX_LEVELS; l++)
        deep += before.tables[l];
    if (deep == 0)
        fail_msg("the tree never went past level 1: the test would not test levels");
    CHECK_OK(db, lsm_compact_range(db, "b000", 4, "b019", 4));
    CHECK_OK(db, lsm_stats_get(db, &after, sizeof after));
    if (after.blob_bytes_live != 0 || count_suffix(f->dir, ".blob") != 0)
        fail_msg("after lsm_compact_range over the big keys: %llu blob bytes live, %d blob files",
                 (unsigned long long)after.blob_bytes_live, count_suffix(f->dir, ".blob"));
    uint64_t rewritten = after.compaction_bytes_written - before.compaction_bytes_written;
    if (rewritten * 2 > after.disk_bytes)
        fail_msg("a range of 20 keys rewrote %llu bytes of a %llu-byte tree",
                 (unsigned long long)rewritten, (unsigned long long)after.disk_bytes);
    printf("# compact_range: a range of 20 keys rewrote %llu bytes of a %llu-byte tree\n",
           (unsigned long long)rewritten, (unsigned long long)after.disk_bytes);
    check_db_equals_model(db, m, "after lsm_compact_range");
    /* A live iterator keeps what it can see: deleted big values stay readable through it, and
       their blob files stay. Once it is gone, another pass (the versions now sit side by side in
       the deepest level) frees them. */
    for (int i = 100; i < 104; i++) {
        snprintf(k, sizeof k, "b%03d", i);
        memset(big, 'a' + i % 26, sizeof big);
        CHECK_OK(db, lsm_put(db, k, strlen(k), big, sizeof big));
    }
    CHECK_OK(db, lsm_flush(db));
    lsm_iter *it = NULL;
    CHECK_OK(db, lsm_iter_new(db, &it));
    for (int i = 100; i < 104; i++) {
        snprintf(k, sizeof k, "b%03d", i);
        CHECK_OK(db, lsm_delete(db, k, strlen(k)));
    }
    CHECK_OK(db, lsm_compact_range(db, "b100", 4, "b103", 4));
    CHECK_OK(db, lsm_stats_get(db, &after, sizeof after));
    if (after.blob_bytes_live < 4 * sizeof big)
        fail_msg("blob files of values a live iterator sees were freed (%llu bytes live)",
                 (unsigned long long)after.blob_bytes_live);
    lsm_iter_seek(it, "b100", 4);
    for (int i = 100; i < 104; i++, lsm_iter_next(it)) {
        size_t kl = 0, vl = 0;
        snprintf(k, sizeof k, "b%03d", i);
        assert_true(lsm_iter_valid(it));
        const void *ik = lsm_iter_key(it, &kl);
        assert_int_equal(kl, 4);
        assert_memory_equal(ik, k, 4);
        const uint8_t *iv = lsm_iter_value(it, &vl);
        if (!iv || vl != sizeof big || iv[0] != 'a' + i % 26 || iv[vl - 1] != 'a' + i % 26)
            fail_msg("the iterator lost %s after lsm_compact_range: status %d", k,
                     lsm_iter_status(it));
    }
    lsm_iter_free(it);
    CHECK_OK(db, lsm_compact_range(db, "b100", 4, "b103", 4));
    CHECK_OK(db, lsm_stats_get(db, &after, sizeof after));
    if (after.blob_bytes_live != 0 || count_suffix(f->dir, ".blob") != 0)
        fail_msg("with the iterator gone, lsm_compact_range left %llu blob bytes live, %d blob files",
                 (unsigned long long)after.blob_bytes_live, count_suffix(f->dir, ".blob"));
    check_db_equals_model(db, m, "after lsm_compact_range past an iterator");
    /* Open ends: everything below the flushed memtable ends up in one level, with no L0. */
    for (int i = 0; i < 500; i++) {
        snprintf(k, sizeof k, "a%06d", i);
        CHECK_OK(db, lsm_delete(db, k, strlen(k)));
        model_del(m, k, strlen(k));
    }
    CHECK_OK(db, lsm_compact_range(db, NULL, 0, NULL, 0));
    CHECK_OK(db, lsm_stats_get(db, &after, sizeof after));
    if (after.tables[0] != 0)
        fail_msg("%d tables left in level 0 after lsm_compact_range(NULL, NULL)", after.tables[0]);
    check_db_equals_model(db, m, "after lsm_compact_range(NULL, NULL)");
    assert_int_equal(lsm_compact_range(NULL, NULL, 0, NULL, 0), LSM_INVALID);
    close_reopen_check(db, f->dir, &o, m, "after lsm_compact_range, reopened");
}

/* ---- stats, error texts, NULL ---- */

/* lsm_stats.pending_compaction_bytes: 0 while every level is within its target and L0 is below
   its trigger; at the trigger, at least L0 and L1; with a level past its target, at least its
   excess; 0 again after lsm_compact. */
static void test_pending_bytes(void **state)
{
    fixture *f = *state;
    lsm_options o;
    options_defaults(&o);
    o.background_compaction = 0;    /* nothing moves but what the test asks for */
    o.memtable_bytes = 1 << 20;
    o.level1_bytes = 64 << 10;
    lsm_db *db = NULL;
    CHECK_OK(NULL, lsm_open(f->dir, &o, &db));
    lsm_stats st;
    char k[32], v[200];
    memset(v, 'p', sizeof v);
    for (int t = 0; t < 4; t++) {
        CHECK_OK(db, lsm_stats_get(db, &st, sizeof st));
        if (st.pending_compaction_bytes != 0)
            fail_msg("%d L0 tables, below the trigger: %llu bytes pending", st.tables[0],
                     (unsigned long long)st.pending_compaction_bytes);
        for (int i = 0; i < 1000; i++) {
            snprintf(k, sizeof k, "key%06d", i * 4 + t);
            CHECK_OK(db, lsm_put(db, k, strlen(k), v, sizeof v));
        }
        CHECK_OK(db, lsm_flush(db));
    }
    CHECK_OK(db, lsm_stats_get(db, &st, sizeof st));
    assert_int_equal(st.tables[0], 4);
    if (st.pending_compaction_bytes < st.level_bytes[0] + st.level_bytes[1])
        fail_msg("4 L0 tables of %llu bytes: only %llu bytes pending",
                 (unsigned long long)st.level_bytes[0],
                 (unsigned long long)st.pending_compaction_bytes);
    /* All of it into L1 (a range merge does not look at targets): L1 is far past 64 KiB. */
    CHECK_OK(db, lsm_compact_range(db, NULL, 0, NULL, 0));
    CHECK_OK(db, lsm_stats_get(db, &st, sizeof st));
    assert_int_equal(st.tables[0], 0);
    if (st.level_bytes[1] <= (64 << 10))
        fail_msg("level 1 holds only %llu bytes after the range merge",
                 (unsigned long long)st.level_bytes[1]);
    if (st.pending_compaction_bytes < st.level_bytes[1] - (64 << 10))
        fail_msg("level 1 of %llu bytes past a 64 KiB target: only %llu bytes pending",
                 (unsigned long long)st.level_bytes[1],
                 (unsigned long long)st.pending_compaction_bytes);
    CHECK_OK(db, lsm_compact(db));
    CHECK_OK(db, lsm_stats_get(db, &st, sizeof st));
    if (st.pending_compaction_bytes != 0)
        fail_msg("after lsm_compact: %llu bytes pending", (unsigned long long)st.pending_compaction_bytes);
    CHECK_OK(db, lsm_close(db));
}

static void test_stats(void **state)
{
    fixture *f = *state;
    lsm_options o;
    options_defaults(&o);
    o.background_compaction = 0;  /* table counts depend only on our calls */
    lsm_db *db = NULL;
    CHECK_OK(NULL, lsm_open(f->dir, &o, &db));
    lsm_stats st;
    CHECK_OK(db, lsm_stats_get(db, &st, sizeof st));
    assert_int_equal(total_tables(&st), 0);
    uint64_t seq0 = st.last_sequence;
    char k[32], v[100];
    memset(v, 'v', sizeof v);
    uint64_t user = 0;
    for (int t = 0; t < 4; t++) {
        for (int i = 0; i < 200; i++) {
            snprintf(k, sizeof k, "key%06d", i * 4 + t);
            CHECK_OK(db, lsm_put(db, k, strlen(k), v, sizeof v));
            user += strlen(k) + sizeof v;
        }
        CHECK_OK(db, lsm_flush(db));
        CHECK_OK(db, lsm_stats_get(db, &st, sizeof st));
        if (total_tables(&st) < 1)
            fail_msg("no table after flush %d", t);
    }
    CHECK_OK(db, lsm_stats_get(db, &st, sizeof st));
    int before = total_tables(&st);
    assert_true(before >= 2);
    assert_true(st.flushes >= 4);
    assert_true(st.last_sequence >= seq0 + 800);
    assert_true(st.user_bytes_written >= user);
    assert_true(st.wal_bytes_written >= user);
    assert_true(st.flush_bytes_written > 0);
    uint64_t lb = 0;
    for (int i = 0; i < LSM_MAX_LEVELS; i++) {
        assert_true(st.tables[i] >= 0);
        lb += st.level_bytes[i];
    }
    assert_true(lb > 0);
    assert_true(st.disk_bytes >= lb);
    CHECK_OK(db, lsm_compact(db));
    CHECK_OK(db, lsm_stats_get(db, &st, sizeof st));
    int after = total_tables(&st);
    if (after >= before)
        fail_msg("compaction did not reduce the table count: %d before, %d after", before, after);
    assert_true(after >= 1);
    assert_true(st.compactions >= 1);
    assert_true(st.compaction_bytes_written > 0);
    assert_int_equal(st.tables[0], 0);
    expect_str(db, "key000000", "vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv");
    lsm_close(db);
}

/* Opens a database in f's directory with o, and seeds r for a randomized test (test_seed). */
static lsm_db *open_seeded(const fixture *f, const lsm_options *o, const char *test, uint64_t deflt,
                           trng *r, uint64_t *seed)
{
    lsm_db *db = NULL;
    CHECK_OK(NULL, lsm_open(f->dir, o, &db));
    *seed = test_seed(test, deflt);
    trng_seed(r, *seed);
    return db;
}

/* An env whose table writes are slow (2 ms per write), so that compactions last long enough for
   level 0 to fill up behind a deep one: the POSIX env with open and append wrapped. */
static lsm_env slow_env;
static pthread_mutex_t slow_mu = PTHREAD_MUTEX_INITIALIZER;
static lsm_file *slow_tables[64];

static int slow_open(lsm_env *env, const char *path, int flags, lsm_file **out)
{
    int rc = env_posix()->open(env_posix(), path, flags, out);
    size_t n = strlen(path);
    if (rc == 0 && (flags & LSM_O_CREATE) && n > 4 && strcmp(path + n - 4, ".sst") == 0) {
        pthread_mutex_lock(&slow_mu);
        for (int i = 0; i < 64; i++)
            if (!slow_tables[i]) {
                slow_tables[i] = *out;
                break;
            }
        pthread_mutex_unlock(&slow_mu);
    }
    return rc;
}

static int slow_close(lsm_env *env, lsm_file *f)
{
    pthread_mutex_lock(&slow_mu);
    for (int i = 0; i < 64; i++)
        if (f && slow_tables[i] == f)
            slow_tables[i] = NULL;
    pthread_mutex_unlock(&slow_mu);
    return env_posix()->close(env_posix(), f);
}

static ssize_t slow_append(lsm_env *env, lsm_file *f, const void *p, size_t n)
{
    int table = 0;
    pthread_mutex_lock(&slow_mu);
    for (int i = 0; i < 64; i++)
        table |= slow_tables[i] == f;
    pthread_mutex_unlock(&slow_mu);
    if (table)
        usleep(2000);
    return env_posix()->append(env_posix(), f, p, n);
}

/* Whether db has run every kind of merge test_parallel_compactions requires, and reached L3. */
static int merges_seen(lsm_db *db)
{
    lsm_stats st;
    CHECK_OK(db, lsm_stats_get(db, &st, sizeof st));
    return st.compactions_parallel > 0 && st.compactions_split > 0 &&
           st.compactions_grouped > 0 && st.tables[3] > 0;
}

/* With level1_bytes small, levels fill up quickly: while writes arrive, the background threads
   must run compactions on disjoint levels at the same time (L0->L1 beside L2->L3), honour the
   level sizes, and lose nothing while doing so. */
static void test_parallel_compactions(void **state)
{
    fixture *f = *state;
    slow_env = *env_posix();
    slow_env.open = slow_open;
    slow_env.close = slow_close;
    slow_env.append = slow_append;
    lsm_options o;
    options_defaults(&o);
    o.env = &slow_env;
    o.memtable_bytes = 16 << 10;
    o.table_bytes = 4 << 10;
    o.level1_bytes = 16 << 10;          /* L2 160 KiB, L3 1.6 MiB */
    uint64_t seed;
    trng r;
    lsm_db *db = open_seeded(f, &o, "parallel_compactions", 77, &r, &seed);
    model *m = model_new();
    char k[32], v[120];
    lsm_stats st;
    /* At least n writes; past that (a sanitizer build scales n down and runs slowly, so the
       timing may not have lined up yet) on, 1000 at a time, until each kind of merge the test
       requires has happened, or 20000 writes in all. */
    int n = (int)test_scale(20000);
    for (int i = 0; i < 20000; i++) {
        if (i >= n && i % 1000 == 0 && merges_seen(db))
            break;
        snprintf(k, sizeof k, "k%08u", (unsigned)trng_below(&r, 10000));
        size_t vl = 40 + trng_below(&r, 80);
        memset(v, 'a' + i % 26, vl);
        snprintf(v, 16, "%d:", i);
        if (trng_chance(&r, 10)) {
            CHECK_OK(db, lsm_delete(db, k, strlen(k)));
            model_del(m, k, strlen(k));
        } else {
            CHECK_OK(db, lsm_put(db, k, strlen(k), v, vl));
            model_put(m, k, strlen(k), v, vl);
        }
        if (i % 10000 == 9999)
            check_db_equals_model(db, m, "parallel compactions, live");
    }
    CHECK_OK(db, lsm_stats_get(db, &st, sizeof st));
    if (st.compactions_parallel == 0)
        fail_msg("%" PRIu64 " compactions, none of them beside another (seed %" PRIu64 ")",
                 st.compactions, seed);
    if (st.tables[3] == 0)
        fail_msg("nothing reached level 3 with a 16 KiB level 1 (seed %" PRIu64 ")", seed);
    /* Merges of 4 or more tables' worth with 2 or more output-level tables run as two halves. */
    if (st.compactions_split == 0)
        fail_msg("%" PRIu64 " compactions, none of them split in two (seed %" PRIu64 ")",
                 st.compactions, seed);
    /* A level swollen past its target gives up to four adjacent tables to one merge. */
    if (st.compactions_grouped == 0)
        fail_msg("%" PRIu64 " compactions, none of them of several tables of a level (seed %" PRIu64
                 ")", st.compactions, seed);
    printf("# parallel_compactions: %" PRIu64 " compactions, %" PRIu64 " beside another, %" PRIu64
           " split in two, %" PRIu64 " of several tables\n", st.compactions,
           st.compactions_parallel, st.compactions_split, st.compactions_grouped);
    check_db_equals_model(db, m, "parallel compactions, before reopen");
    close_reopen_check(db, f->dir, &o, m, "parallel compactions, after reopen");
}

/* Finding the table of a deep level that may hold a key, among many tables whose keys share a long
   prefix: keys that differ only after the prefix's next 8 bytes, keys shorter than those 8 bytes,
   keys with zero bytes there, and keys that leave the prefix early, before or after every table. */
static void test_level_search(void **state)
{
    fixture *f = *state;
    lsm_options o;
    options_defaults(&o);
    o.background_compaction = 0;
    o.memtable_bytes = 4 << 10;
    o.table_bytes = 1 << 10;            /* many tables in the level */
    uint64_t seed;
    trng r;
    lsm_db *db = open_seeded(f, &o, "level_search", 8, &r, &seed);
    model *m = model_new();
    static const char pfx[] = "tenant/0042/objects/";
    const size_t pl = sizeof pfx - 1;
    char k[64], v[96];
    size_t kl;
#define LS_PUT() do { \
        snprintf(v, sizeof v, "value of %zu bytes %u", kl, (unsigned)k[kl - 1]); \
        memset(v + strlen(v), 'v', sizeof v - 1 - strlen(v)); \
        v[sizeof v - 1] = 0; \
        CHECK_OK(db, lsm_put(db, k, kl, v, strlen(v))); \
        model_put(m, k, kl, v, strlen(v)); \
    } while (0)
    /* 300 keys equal in the 8 bytes after the prefix, differing after them. */
    for (int i = 0; i < 300; i++) {
        kl = (size_t)snprintf(k, sizeof k, "%sabcdefgh%04d", pfx, i * 3);
        LS_PUT();
    }
    /* Shorter than prefix + 8, and zero bytes where the windows are cut. */
    static const char *tails[] = { "abcdefg", "abcdefg\0", "abcdefg\0\0", "abc", "\0", "\0\0\0\0",
                                   "a\0b\0c\0d\0e", "zz", "zzzzzzzzzzzzzzz", "\xff\xff\xff\xff\xff\xff" };
    static const size_t tlen[] = { 7, 8, 9, 3, 1, 4, 9, 2, 15, 6 };
    for (size_t i = 0; i < sizeof tails / sizeof *tails; i++) {
        memcpy(k, pfx, pl);
        memcpy(k + pl, tails[i], tlen[i]);
        kl = pl + tlen[i];
        LS_PUT();
    }
    /* Keys spread over the 8 bytes after the prefix. */
    for (int i = 0; i < 1000; i++) {
        memcpy(k, pfx, pl);
        kl = pl + 1 + trng_below(&r, 12);
        for (size_t j = pl; j < kl; j++)
            k[j] = (char)("\0AMZamz\x7f\x80\xff"[trng_below(&r, 10)]);
        LS_PUT();
    }
#undef LS_PUT
    CHECK_OK(db, lsm_compact(db));
    lsm_stats st;
    CHECK_OK(db, lsm_stats_get(db, &st, sizeof st));
    int deep = 0;
    for (int l = 1; l < LSM_MAX_LEVELS; l++)
        deep = st.tables[l] > deep ? st.tables[l] : deep;
    if (deep < 20)
        fail_msg("the fixture needs many tables in one level; the largest level has %d", deep);
    check_db_equals_model(db, m, "level search");
    /* Keys that are not there: inside the prefix between and beside the keys above, and outside it
       on either side. */
    static const char *absent[] = { "t", "tenant/", "tenant/0042/objects", "tenant/0042/objects/",
                                    "tenant/0042/objects/abcdefgh", "tenant/0042/objects/abcdefgh0001",
                                    "tenant/0042/objects/abcdefgh9999", "tenant/0042/objects/abcdefh",
                                    "tenant/0042/objects/abcdef", "tenant/0042/objects/zzz",
                                    "tenant/0042/objects/\xff\xff\xff\xff\xff\xff\xff", "tenant/0043",
                                    "tenant/0041/objects/abcdefgh0003", "u", "\xff" };
    for (size_t i = 0; i < sizeof absent / sizeof *absent; i++) {
        size_t al = strlen(absent[i]);
        if (!model_get(m, absent[i], al, &kl))  /* else a random key above happened to be it */
            expect(db, absent[i], al, NULL, 0);
    }
    close_reopen_check(db, f->dir, &o, m, "level search, after reopen");
}

/* An env whose table opens for reading (what a compaction does with its inputs; flushes open
   none) take 20 ms each, so that writes outrun merging. */
static lsm_env pace_env;

static int pace_open(lsm_env *env, const char *path, int flags, lsm_file **out)
{
    size_t n = strlen(path);
    if (!(flags & LSM_O_CREATE) && n > 4 && strcmp(path + n - 4, ".sst") == 0)
        usleep(20000);
    return env_posix()->open(env_posix(), path, flags, out);
}

/* Writes that outrun compaction (tiny memtables, slow merges): level 0 may fill up to 20 tables
   before pacing starts and never holds more than 36 (lsm.h, background_compaction), the writers
   are held back (stall time counts it), and nothing written is lost. */
static void test_write_pacing(void **state)
{
    fixture *f = *state;
    pace_env = *env_posix();
    pace_env.open = pace_open;
    lsm_options o;
    options_defaults(&o);
    o.env = &pace_env;
    o.memtable_bytes = 16 << 10;
    uint64_t seed;
    trng r;
    lsm_db *db = open_seeded(f, &o, "write_pacing", 36, &r, &seed);
    model *m = model_new();
    char k[32], v[128];
    lsm_stats st;
    int most = 0, n = 16000;    /* not scaled down under sanitizers: level 0 must fill up */
    for (int i = 0; i < n; i++) {
        snprintf(k, sizeof k, "p%08u", (unsigned)trng_below(&r, 50000));
        size_t vl = 60 + trng_below(&r, 60);
        memset(v, 'a' + i % 26, vl);
        snprintf(v, 16, "%d:", i);
        CHECK_OK(db, lsm_put(db, k, strlen(k), v, vl));
        model_put(m, k, strlen(k), v, vl);
        CHECK_OK(db, lsm_stats_get(db, &st, sizeof st));
        if (st.tables[0] > 36)
            fail_msg("%d tables in level 0 after write %d (seed %" PRIu64 ")", st.tables[0], i,
                     seed);
        if (st.tables[0] > most)
            most = st.tables[0];
    }
    CHECK_OK(db, lsm_stats_get(db, &st, sizeof st));
    printf("# write_pacing: level 0 reached %d tables; writers held back %.3f s\n", most,
           (double)st.stall_micros / 1e6);
    if (most < 20)
        fail_msg("level 0 never reached 20 tables (at most %d): writes were held back too early, "
                 "or merging kept up (seed %" PRIu64 ")", most, seed);
    if (st.stall_micros == 0)
        fail_msg("level 0 reached %d tables and no writer was held back (seed %" PRIu64 ")", most,
                 seed);
    check_db_equals_model(db, m, "write pacing, live");
    close_reopen_check(db, f->dir, &o, m, "write pacing, after reopen");
}

static void test_strerror(void **state)
{
    (void)state;
    int codes[] = { LSM_OK, LSM_NOTFOUND, LSM_CORRUPT, LSM_IOERR, LSM_BUSY, LSM_NOMEM,
                    LSM_INVALID, LSM_EXISTS, LSM_CLOSED, LSM_NOSPACE };
    int n = (int)(sizeof codes / sizeof codes[0]);
    for (int i = 0; i < n; i++) {
        const char *s = lsm_strerror(codes[i]);
        assert_non_null(s);
        assert_true(strlen(s) > 0);
        for (int j = 0; j < i; j++)
            if (!strcmp(s, lsm_strerror(codes[j])))
                fail_msg("codes %d and %d share the text '%s'", codes[i], codes[j], s);
    }
    assert_non_null(lsm_strerror(-1000));
    assert_non_null(lsm_strerror(12345));
    assert_non_null(lsm_errmsg(NULL));
}

static void test_close_null(void **state)
{
    (void)state;
    assert_int_equal(lsm_close(NULL), LSM_OK);
    lsm_iter_free(NULL);
    lsm_batch_free(NULL);
}

/* ---- threads ---- */

typedef struct thr_arg {
    lsm_db *db;
    int id;
    long n;
    char bad[256];
} thr_arg;

static void thr_value(char *v, size_t cap, int id, long i)
{
    snprintf(v, cap, "thread %d item %ld payload %08lx", id, i, (unsigned long)(i * 2654435761u));
}

static void *thr_main(void *p)
{
    thr_arg *a = p;
    trng r;
    trng_seed(&r, (uint64_t)a->id * 977);
    char k[32], v[96];
    for (long i = 0; i < a->n && !a->bad[0]; i++) {
        snprintf(k, sizeof k, "t%d-%06ld", a->id, i);
        thr_value(v, sizeof v, a->id, i);
        int rc = lsm_put(a->db, k, strlen(k), v, strlen(v));
        if (rc != LSM_OK) {
            snprintf(a->bad, sizeof a->bad, "put %s: %d", k, rc);
            break;
        }
        /* Read back one of ours (must be there) and one of another thread's (may be). */
        long j = (long)trng_below(&r, (uint64_t)i + 1);
        snprintf(k, sizeof k, "t%d-%06ld", a->id, j);
        thr_value(v, sizeof v, a->id, j);
        void *got;
        size_t gl;
        rc = lsm_get(a->db, k, strlen(k), &got, &gl);
        if (rc != LSM_OK || gl != strlen(v) || memcmp(got, v, gl) != 0) {
            snprintf(a->bad, sizeof a->bad, "get %s: rc %d", k, rc);
            if (rc == LSM_OK)
                free(got);
            break;
        }
        free(got);
        int other = (a->id + 1 + (int)trng_below(&r, 3)) % 4;
        j = (long)trng_below(&r, (uint64_t)i + 1);
        snprintf(k, sizeof k, "t%d-%06ld", other, j);
        thr_value(v, sizeof v, other, j);
        rc = lsm_get(a->db, k, strlen(k), &got, &gl);
        if (rc == LSM_OK) {
            if (gl != strlen(v) || memcmp(got, v, gl) != 0)
                snprintf(a->bad, sizeof a->bad, "get %s: wrong value", k);
            free(got);
        } else if (rc != LSM_NOTFOUND) {
            snprintf(a->bad, sizeof a->bad, "get %s: rc %d", k, rc);
        }
    }
    return NULL;
}

static void test_threads(void **state)
{
    fixture *f = *state;
    lsm_db *db = open_db(f->dir, 64 << 10);
    thr_arg a[4];
    pthread_t th[4];
    long n = test_scale(20000);
    for (int i = 0; i < 4; i++) {
        memset(&a[i], 0, sizeof a[i]);
        a[i].db = db;
        a[i].id = i;
        a[i].n = n;
        assert_int_equal(pthread_create(&th[i], NULL, thr_main, &a[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 4; i++)
        if (a[i].bad[0])
            fail_msg("thread %d: %s", i, a[i].bad);
    for (int round = 0; round < 2; round++) {
        char k[48], v[96];
        for (int t = 0; t < 4; t++) {
            for (long i = 0; i < n; i++) {
                snprintf(k, sizeof k, "t%d-%06ld", t, i);
                thr_value(v, sizeof v, t, i);
                expect_str(db, k, v);
            }
        }
        lsm_iter *it;
        CHECK_OK(db, lsm_iter_new(db, &it));
        long cnt = 0;
        for (lsm_iter_seek(it, NULL, 0); lsm_iter_valid(it); lsm_iter_next(it))
            cnt++;
        assert_int_equal(lsm_iter_status(it), LSM_OK);
        assert_int_equal(cnt, 4 * n);
        lsm_iter_free(it);
        lsm_close(db);
        db = open_db(f->dir, 64 << 10);
    }
    lsm_close(db);
}

/* ---- signals ---- */

static _Atomic pid_t sig_tid;   /* thread the SIGUSR1 handler ran on (0: not run) */
static _Atomic int sig_count;

static void on_usr1(int sig)
{
    (void)sig;
    sig_tid = gettid();
    sig_count++;
}

/* A signal sent to the process must be handled by an application thread, never by one of the
   engine's. An application that blocks a signal to take it with sigwait, or that sleeps until its
   handler runs on one thread (as libfuse's loop does), would otherwise lose it to an engine thread
   started (by lsm_open) before the application blocked it. While the only application thread
   blocks SIGUSR1, one sent to the process has to stay pending (an engine thread that accepted it
   would run the handler at once); it runs on this thread when it unblocks. Done with an idle and
   a busy engine. */
static void test_signals_stay_with_the_application(void **state)
{
    fixture *f = *state;
    lsm_db *db = open_db(f->dir, 64 << 10);
    struct sigaction sa = { .sa_handler = on_usr1 }, old_sa;
    sigemptyset(&sa.sa_mask);
    assert_int_equal(sigaction(SIGUSR1, &sa, &old_sa), 0);
    sigset_t usr1, old_mask;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    for (int busy = 0; busy < 2; busy++) {
        if (busy) {
            /* Enough writes to a 64 KiB memtable that flushes and compactions run meanwhile. */
            char k[32], v[100];
            memset(v, 'v', sizeof v);
            for (int i = 0; i < 20000; i++) {
                snprintf(k, sizeof k, "k%08d", (i * 7919) % 20000);
                CHECK_OK(db, lsm_put(db, k, strlen(k), v, sizeof v));
            }
        }
        sig_tid = 0;
        sig_count = 0;
        assert_int_equal(pthread_sigmask(SIG_BLOCK, &usr1, &old_mask), 0);
        assert_int_equal(kill(getpid(), SIGUSR1), 0);
        usleep(300 * 1000);     /* the flush thread alone wakes every 100 ms */
        int before = sig_count;
        pid_t early = sig_tid;
        assert_int_equal(pthread_sigmask(SIG_SETMASK, &old_mask, NULL), 0);
        if (before != 0)
            fail_msg("%s engine: SIGUSR1 was handled by thread %d while the application blocked it",
                     busy ? "busy" : "idle", (int)early);
        assert_int_equal(sig_count, 1);
        assert_int_equal(sig_tid, gettid());
    }
    assert_int_equal(sigaction(SIGUSR1, &old_sa, NULL), 0);
    lsm_close(db);
}

/* The public options object: defaults, setters that refuse what can never be valid and then change
   nothing, options that take effect at lsm_open and may be freed right after it; lsm_version; and
   lsm_stats_get filling no more than the size it is given. */
static void test_options_api(void **state)
{
    fixture *f = *state;
    lsm_options *o = lsm_options_new();
    assert_non_null(o);
    assert_int_equal(lsm_options_set_compression(o, 99, 1), LSM_INVALID);
    assert_int_equal(lsm_options_set_compression(o, -1, 1), LSM_INVALID);
    assert_int_equal(lsm_options_set_bloom_bits_per_key(o, -1), LSM_INVALID);
    assert_int_equal(lsm_options_set_max_open_files(o, -5), LSM_INVALID);
    assert_int_equal(lsm_options_set_memtable_bytes(NULL, 1), LSM_INVALID);
    assert_int_equal(o->compression, LSM_COMPRESSION_NONE);  /* refused calls changed nothing */
    assert_int_equal(o->bloom_bits_per_key, 10);
    assert_int_equal(o->max_open_files, 1000);
    lsm_options_free(NULL);

    /* create_if_missing off: a missing directory is not made. */
    CHECK_OK(NULL, lsm_options_set_create_if_missing(o, 0));
    lsm_db *db = NULL;
    assert_int_equal(lsm_open(f->dir, o, &db), LSM_INVALID);
    assert_null(db);
    CHECK_OK(NULL, lsm_options_set_create_if_missing(o, 1));
    /* A 4 KiB memtable (the minimum) flushes after a few writes; zstd compression is accepted. */
    CHECK_OK(NULL, lsm_options_set_memtable_bytes(o, 1));
    CHECK_OK(NULL, lsm_options_set_compression(o, LSM_COMPRESSION_ZSTD, 3));
    CHECK_OK(NULL, lsm_options_set_background_compaction(o, 0));
    CHECK_OK(NULL, lsm_open(f->dir, o, &db));
    lsm_options_free(o);                               /* lsm_open kept its own copy */
    char k[16], v[200];
    memset(v, 'v', sizeof v);
    for (int i = 0; i < 100; i++) {
        snprintf(k, sizeof k, "k%03d", i);
        CHECK_OK(db, lsm_put(db, k, strlen(k), v, sizeof v));
    }
    lsm_stats st;
    CHECK_OK(db, lsm_stats_get(db, &st, sizeof st));
    assert_true(st.flushes >= 2);
    assert_int_equal(st.compactions, 0);               /* background compaction is off */

    /* A caller built against a shorter lsm_stats gets its part and nothing past it. */
    size_t part = offsetof(lsm_stats, level_bytes);
    unsigned char raw[sizeof(lsm_stats) + 16];
    memset(raw, 0xa5, sizeof raw);
    CHECK_OK(db, lsm_stats_get(db, (lsm_stats *)(void *)raw, part));
    assert_memory_equal(raw, &st, part);               /* tables[] as before: nothing ran since */
    for (size_t i = part; i < sizeof raw; i++)
        assert_int_equal(raw[i], 0xa5);
    assert_int_equal(lsm_stats_get(db, NULL, sizeof st), LSM_INVALID);
    lsm_close(db);

    /* error_if_exists refuses the database just made. */
    o = lsm_options_new();
    CHECK_OK(NULL, lsm_options_set_error_if_exists(o, 1));
    assert_int_equal(lsm_open(f->dir, o, &db), LSM_EXISTS);
    lsm_options_free(o);
    assert_string_equal(lsm_version(), LSM_VERSION_STRING);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_creates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_missing_no_create, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_if_exists, setup, teardown),
        cmocka_unit_test_setup_teardown(test_options_api, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_get_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_value, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_big_value, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overwrite, setup, teardown),
        cmocka_unit_test_setup_teardown(test_get_size_range, setup, teardown),
        cmocka_unit_test_setup_teardown(test_range_read_copies_only_the_range, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_basic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_atomic_visibility, setup, teardown),
        cmocka_unit_test_setup_teardown(test_iter_snapshot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_seek, setup, teardown),
        cmocka_unit_test_setup_teardown(test_iter_flush_compact_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_keeps_everything, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lock_busy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lock_other_process, setup, teardown),
        cmocka_unit_test_setup_teardown(test_blob_values, setup, teardown),
        cmocka_unit_test(test_blob_reads_during_compaction),
        cmocka_unit_test_setup_teardown(test_stats, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parallel_compactions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compact_range, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_pacing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_level_search, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pending_bytes, setup, teardown),
        cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_close_null),
        cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_signals_stay_with_the_application, setup, teardown),
    };
    return cmocka_run_group_tests_name("engine api (test_db)", tests, NULL, NULL);
}
