/*
 * test_wal.c — unit tests for wal.c: records round-trip exactly, a torn tail of any length is
 * dropped quietly, damage before the tail is reported with its offset, and a writer that failed once
 * never writes again. Most tests run on the fault env, where files can be cut and flipped at will.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "env.h"
#include "lsm_int.h"
#include "wal.h"

#define LOG_PATH "/db/000001.log"

/* ---- helpers ---- */

typedef struct test_wal_recs {
    int n, cap;             /* records collected, allocated */
    uint8_t **p;            /* copies of the payloads */
    size_t *len;            /* payload lengths */
    uint64_t *off;          /* record offsets reported by replay */
    int stop_at;            /* return 7 from the callback at this record; -1 never */
} test_wal_recs;

static int test_wal_collect(void *arg, const uint8_t *p, size_t n, uint64_t off)
{
    test_wal_recs *r = arg;
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 16;
        r->p = realloc(r->p, (size_t)r->cap * sizeof *r->p);
        r->len = realloc(r->len, (size_t)r->cap * sizeof *r->len);
        r->off = realloc(r->off, (size_t)r->cap * sizeof *r->off);
    }
    r->p[r->n] = xmemdup(p, n);
    r->len[r->n] = n;
    r->off[r->n] = off;
    r->n++;
    return r->n - 1 == r->stop_at ? 7 : 0;
}

static void test_wal_recs_free(test_wal_recs *r)
{
    for (int i = 0; i < r->n; i++)
        free(r->p[i]);
    free(r->p);
    free(r->len);
    free(r->off);
    memset(r, 0, sizeof *r);
    r->stop_at = -1;
}

/* Replays LOG_PATH into r (freshly reset); returns the replay's code. */
static int test_wal_replay(lsm_env *env, const char *magic, test_wal_recs *r, uint64_t *dropped,
                           char *err)
{
    test_wal_recs_free(r);
    err[0] = '\0';
    return log_replay(env, LOG_PATH, magic, test_wal_collect, r, dropped, err);
}

static uint8_t *test_wal_payload(int i, size_t n)
{
    uint8_t *p = xmalloc(n);
    for (size_t j = 0; j < n; j++)
        p[j] = (uint8_t)(i * 131 + j * 7 + (j >> 8));
    return p;
}

static void test_wal_check_payload(const test_wal_recs *r, int k, int i, size_t n)
{
    assert_true(k < r->n);
    assert_int_equal(r->len[k], n);
    uint8_t *want = test_wal_payload(i, n);
    assert_memory_equal(r->p[k], want, n);
    free(want);
}

static lsm_env *test_wal_fault_db(void)
{
    lsm_env *env = faultenv_new();
    assert_int_equal(env->mkdir(env, "/db"), 0);
    assert_int_equal(env->sync_dir(env, ""), 0);
    return env;
}

/* Writes a log of records with the given sizes (payload i = test_wal_payload(i, sizes[i])) and
   returns the offset of each record in offs (may be NULL). */
static void test_wal_write(lsm_env *env, const char *path, const size_t *sizes, int n,
                           uint64_t *offs)
{
    char err[LSM_ERRLEN];
    logw *w;
    assert_int_equal(logw_create(env, path, WAL_MAGIC, &w, err), LSM_OK);
    assert_int_equal(logw_size(w), LOG_HEADER);
    for (int i = 0; i < n; i++) {
        uint8_t *p = test_wal_payload(i, sizes[i]);
        if (offs)
            offs[i] = logw_size(w);
        uint64_t before = logw_size(w);
        assert_int_equal(logw_append(w, p, sizes[i], err), LSM_OK);
        assert_int_equal(logw_size(w), before + 8 + sizes[i]);
        free(p);
    }
    assert_int_equal(logw_sync(w, err), LSM_OK);
    assert_int_equal(logw_close(w, err), LSM_OK);
}

static void test_wal_read(lsm_env *env, uint8_t **p, size_t *n)
{
    assert_int_equal(env_read_file(env, LOG_PATH, p, n), 0);
}

static void test_wal_put_bytes(lsm_env *env, const uint8_t *p, size_t n)
{
    assert_int_equal(env_write_file_atomic(env, "/db", "000001.log", p, n), 0);
}

/* ---- tests ---- */

static void test_wal_roundtrip_on(lsm_env *env, const char *path)
{
    enum { N = 3000 };
    static size_t sizes[N];
    static uint64_t offs[N];
    uint64_t seed = 12345;
    for (int i = 0; i < N; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        sizes[i] = (size_t)(seed >> 33) % 2000;
    }
    sizes[0] = 0;
    sizes[5] = 0;
    sizes[10] = 3u << 20;                   /* multi-MiB, written without copying */
    sizes[11] = (32u << 10) - 8;            /* exactly fills the coalescing buffer */
    sizes[12] = (32u << 10) - 7;            /* one byte too many */
    sizes[N - 1] = 0;
    test_wal_write(env, path, sizes, N, offs);

    test_wal_recs r = { .stop_at = -1 };
    uint64_t dropped = 99;
    char err[LSM_ERRLEN];
    assert_int_equal(log_replay(env, path, WAL_MAGIC, test_wal_collect, &r, &dropped, err), LSM_OK);
    assert_int_equal(dropped, 0);
    assert_int_equal(r.n, N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(r.off[i], offs[i]);
        test_wal_check_payload(&r, i, i, sizes[i]);
    }
    test_wal_recs_free(&r);
}

static void wal_roundtrip_fault(void **state)
{
    lsm_env *env = test_wal_fault_db();
    test_wal_roundtrip_on(env, LOG_PATH);
    faultenv_free(env);
}

static void wal_roundtrip_posix(void **state)
{
    char tmpl[] = "/tmp/lsm-test-wal-XXXXXX";
    char *dir = mkdtemp(tmpl);
    assert_non_null(dir);
    char path[300];
    snprintf(path, sizeof path, "%s/000001.log", dir);
    lsm_env *env = lsm_env_posix();
    test_wal_roundtrip_on(env, path);
    assert_int_equal(env->unlink(env, path), 0);
    assert_int_equal(rmdir(dir), 0);
}

static void wal_short_writes(void **state)
{
    lsm_env *env = test_wal_fault_db();
    faultenv_short_writes(env, 1);
    size_t sizes[] = { 0, 1, 100, 5000, 70000, 3 };
    int n = (int)(sizeof sizes / sizeof sizes[0]);
    test_wal_write(env, LOG_PATH, sizes, n, NULL);
    test_wal_recs r = { .stop_at = -1 };
    char err[LSM_ERRLEN];
    assert_int_equal(test_wal_replay(env, WAL_MAGIC, &r, NULL, err), LSM_OK);
    assert_int_equal(r.n, n);
    for (int i = 0; i < n; i++)
        test_wal_check_payload(&r, i, i, sizes[i]);
    test_wal_recs_free(&r);
    faultenv_free(env);
}

static void wal_empty_and_short_files(void **state)
{
    lsm_env *env = test_wal_fault_db();
    test_wal_recs r = { .stop_at = -1 };
    char err[LSM_ERRLEN];
    uint64_t dropped;

    test_wal_write(env, LOG_PATH, NULL, 0, NULL);
    assert_int_equal(test_wal_replay(env, WAL_MAGIC, &r, &dropped, err), LSM_OK);
    assert_int_equal(r.n, 0);
    assert_int_equal(dropped, 0);

    test_wal_put_bytes(env, (const uint8_t *)"", 0);
    assert_int_equal(test_wal_replay(env, WAL_MAGIC, &r, &dropped, err), LSM_OK);
    assert_int_equal(r.n, 0);
    assert_int_equal(dropped, 0);

    /* A torn header is an empty log. */
    test_wal_put_bytes(env, (const uint8_t *)WAL_MAGIC "\1\0", 10);
    assert_int_equal(test_wal_replay(env, WAL_MAGIC, &r, &dropped, err), LSM_OK);
    assert_int_equal(r.n, 0);
    assert_int_equal(dropped, 10);

    /* So is a file of zeros (preallocated, never written). */
    uint8_t zeros[200] = { 0 };
    test_wal_put_bytes(env, zeros, sizeof zeros);
    assert_int_equal(test_wal_replay(env, WAL_MAGIC, &r, &dropped, err), LSM_OK);
    assert_int_equal(r.n, 0);
    assert_int_equal(dropped, sizeof zeros);

    /* But a zeroed header with data behind it is damage, not emptiness. */
    zeros[100] = 1;
    test_wal_put_bytes(env, zeros, sizeof zeros);
    assert_int_equal(test_wal_replay(env, WAL_MAGIC, &r, &dropped, err), LSM_CORRUPT);
    assert_non_null(strstr(err, "offset 0: bad magic"));

    assert_int_equal(log_replay(env, "/db/missing.log", WAL_MAGIC, test_wal_collect, &r, NULL, err),
                     LSM_IOERR);
    assert_non_null(strstr(err, "/db/missing.log"));
    test_wal_recs_free(&r);
    faultenv_free(env);
}

static void wal_bad_magic_and_version(void **state)
{
    lsm_env *env = test_wal_fault_db();
    test_wal_recs r = { .stop_at = -1 };
    char err[LSM_ERRLEN];
    size_t sizes[] = { 10, 20 };
    test_wal_write(env, LOG_PATH, sizes, 2, NULL);

    assert_int_equal(test_wal_replay(env, MANIFEST_MAGIC, &r, NULL, err), LSM_CORRUPT);
    assert_string_equal(err, LOG_PATH ": offset 0: bad magic");
    assert_int_equal(r.n, 0);

    uint8_t *p;
    size_t n;
    test_wal_read(env, &p, &n);
    enc_fixed32(p + 8, 2);
    test_wal_put_bytes(env, p, n);
    assert_int_equal(test_wal_replay(env, WAL_MAGIC, &r, NULL, err), LSM_CORRUPT);
    assert_non_null(strstr(err, "unsupported log format version 2"));
    assert_int_equal(r.n, 0);

    enc_fixed32(p + 8, LOG_VERSION);
    enc_fixed32(p + 12, 1);
    test_wal_put_bytes(env, p, n);
    assert_int_equal(test_wal_replay(env, WAL_MAGIC, &r, NULL, err), LSM_CORRUPT);
    free(p);

    /* The manifest magic round-trips too. */
    logw *w;
    assert_int_equal(logw_create(env, LOG_PATH, MANIFEST_MAGIC, &w, err), LSM_OK);
    assert_int_equal(logw_append(w, "edit", 4, err), LSM_OK);
    assert_int_equal(logw_close(w, err), LSM_OK);
    assert_int_equal(test_wal_replay(env, MANIFEST_MAGIC, &r, NULL, err), LSM_OK);
    assert_int_equal(r.n, 1);
    assert_int_equal(test_wal_replay(env, WAL_MAGIC, &r, NULL, err), LSM_CORRUPT);
    test_wal_recs_free(&r);
    faultenv_free(env);
}

/* Cuts the log at every length inside its last record: replay returns the earlier records. */
static void test_wal_torn_every_cut(size_t last, size_t step)
{
    lsm_env *env = test_wal_fault_db();
    size_t sizes[] = { 10, 300, last };
    uint64_t offs[3];
    test_wal_write(env, LOG_PATH, sizes, 3, offs);
    uint8_t *full;
    size_t n;
    test_wal_read(env, &full, &n);
    assert_int_equal(n, offs[2] + 8 + last);

    test_wal_recs r = { .stop_at = -1 };
    char err[LSM_ERRLEN];
    uint64_t dropped;
    for (size_t cut = (size_t)offs[2]; cut < n; cut += (cut - offs[2] < 16 ? 1 : step)) {
        test_wal_put_bytes(env, full, cut);
        assert_int_equal(test_wal_replay(env, WAL_MAGIC, &r, &dropped, err), LSM_OK);
        assert_int_equal(r.n, 2);
        assert_int_equal(dropped, cut - offs[2]);
        test_wal_check_payload(&r, 0, 0, sizes[0]);
        test_wal_check_payload(&r, 1, 1, sizes[1]);
    }
    /* Uncut, all three come back. */
    test_wal_put_bytes(env, full, n);
    assert_int_equal(test_wal_replay(env, WAL_MAGIC, &r, &dropped, err), LSM_OK);
    assert_int_equal(r.n, 3);
    assert_int_equal(dropped, 0);
    test_wal_recs_free(&r);
    free(full);
    faultenv_free(env);
}

static void wal_torn_tail_every_length(void **state)
{
    test_wal_torn_every_cut(0, 1);
    test_wal_torn_every_cut(1, 1);
    test_wal_torn_every_cut(3000, 1);
    test_wal_torn_every_cut(40000, 7);          /* spans the coalescing threshold */
    test_wal_torn_every_cut(3u << 20, 65521);   /* written in two pieces; read across chunks */
}

/* A torn record followed by zeros (a preallocated or zero-filled tail) is still a torn tail. */
static void wal_zeroed_tail(void **state)
{
    lsm_env *env = test_wal_fault_db();
    size_t sizes[] = { 10, 300, 50 };
    uint64_t offs[3];
    test_wal_write(env, LOG_PATH, sizes, 3, offs);
    uint8_t *full;
    size_t n;
    test_wal_read(env, &full, &n);
    test_wal_recs r = { .stop_at = -1 };
    char err[LSM_ERRLEN];
    uint64_t dropped;

    const size_t pad = 4096;
    uint8_t *p = xcalloc(1, n + pad);
    memcpy(p, full, n);
    test_wal_put_bytes(env, p, n + pad);
    assert_int_equal(test_wal_replay(env, WAL_MAGIC, &r, &dropped, err), LSM_OK);
    assert_int_equal(r.n, 3);
    assert_int_equal(dropped, pad);

    /* Only a prefix of the last record made it; the rest of the file reads as zeros. */
    for (size_t keep = 1; keep < 8 + sizes[2]; keep++) {
        memcpy(p, full, n);
        memset(p + offs[2] + keep, 0, n + pad - offs[2] - keep);
        test_wal_put_bytes(env, p, n + pad);
        assert_int_equal(test_wal_replay(env, WAL_MAGIC, &r, &dropped, err), LSM_OK);
        assert_int_equal(r.n, 2);
        assert_int_equal(dropped, n + pad - offs[2]);
    }
    /* But zeros in the middle with data after them are damage. */
    memcpy(p, full, n);
    memset(p + offs[1], 0, 8 + sizes[1]);
    test_wal_put_bytes(env, p, n);
    assert_int_equal(test_wal_replay(env, WAL_MAGIC, &r, &dropped, err), LSM_CORRUPT);
    char want[64];
    snprintf(want, sizeof want, "offset %llu:", (unsigned long long)offs[1]);
    assert_non_null(strstr(err, want));
    test_wal_recs_free(&r);
    free(p);
    free(full);
    faultenv_free(env);
}

/* Flips every byte of record `victim` in turn; returns nothing, checks the outcome. */
static void test_wal_flip_each_byte(int victim, int expect_corrupt)
{
    lsm_env *env = test_wal_fault_db();
    size_t sizes[] = { 20, 40, 30 };
    uint64_t offs[3];
    test_wal_write(env, LOG_PATH, sizes, 3, offs);
    uint8_t *full;
    size_t n;
    test_wal_read(env, &full, &n);
    test_wal_recs r = { .stop_at = -1 };
    char err[LSM_ERRLEN], want[64];
    snprintf(want, sizeof want, LOG_PATH ": offset %llu: ", (unsigned long long)offs[victim]);
    uint64_t dropped;

    for (size_t i = 0; i < 8 + sizes[victim]; i++) {
        test_wal_put_bytes(env, full, n);
        assert_int_equal(faultenv_corrupt(env, LOG_PATH, offs[victim] + i), 0);
        int rc = test_wal_replay(env, WAL_MAGIC, &r, &dropped, err);
        if (expect_corrupt) {
            assert_int_equal(rc, LSM_CORRUPT);
            assert_non_null(strstr(err, want));
        } else {
            assert_int_equal(rc, LSM_OK);
            assert_int_equal(dropped, n - offs[victim]);
        }
        /* Never a damaged record, never one past the damage. */
        assert_int_equal(r.n, victim);
        for (int k = 0; k < r.n; k++)
            test_wal_check_payload(&r, k, k, sizes[k]);
    }
    test_wal_recs_free(&r);
    free(full);
    faultenv_free(env);
}

static void wal_flip_in_middle_is_corruption(void **state)
{
    test_wal_flip_each_byte(0, 1);
    test_wal_flip_each_byte(1, 1);
}

static void wal_flip_in_last_is_dropped(void **state)
{
    test_wal_flip_each_byte(2, 0);
}

/* A length field damaged to a huge value must not pass for a torn tail when records follow. */
static void wal_huge_length_in_middle(void **state)
{
    lsm_env *env = test_wal_fault_db();
    size_t sizes[] = { 20, 40, 30, 5000, 1 };
    uint64_t offs[5];
    test_wal_write(env, LOG_PATH, sizes, 5, offs);
    uint8_t *full;
    size_t n;
    test_wal_read(env, &full, &n);
    test_wal_recs r = { .stop_at = -1 };
    char err[LSM_ERRLEN];
    uint64_t dropped;
    const uint32_t bad[] = { 0x7fffffffu, 0xffffffffu, (uint32_t)n, 41, 100, 5000 };

    for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
        enc_fixed32(full + offs[1] + 4, bad[b]);
        test_wal_put_bytes(env, full, n);
        assert_int_equal(test_wal_replay(env, WAL_MAGIC, &r, &dropped, err), LSM_CORRUPT);
        char want[64];
        snprintf(want, sizeof want, "offset %llu:", (unsigned long long)offs[1]);
        assert_non_null(strstr(err, want));
        assert_int_equal(r.n, 1);
    }
    enc_fixed32(full + offs[1] + 4, (uint32_t)sizes[1]);

    /* The same damage in the last record is a torn tail. */
    enc_fixed32(full + offs[4] + 4, 0x7fffffffu);
    test_wal_put_bytes(env, full, n);
    assert_int_equal(test_wal_replay(env, WAL_MAGIC, &r, &dropped, err), LSM_OK);
    assert_int_equal(r.n, 4);
    assert_int_equal(dropped, 9);

    /* And a tail followed by a fragment shorter than a header still counts as "records follow". */
    enc_fixed32(full + offs[4] + 4, (uint32_t)sizes[4]);
    enc_fixed32(full + offs[2] + 4, 0x10000u);
    test_wal_put_bytes(env, full, n - 3);
    assert_int_equal(test_wal_replay(env, WAL_MAGIC, &r, &dropped, err), LSM_CORRUPT);
    assert_int_equal(r.n, 2);
    test_wal_recs_free(&r);
    free(full);
    faultenv_free(env);
}

static void wal_append2_equivalence(void **state)
{
    lsm_env *env = test_wal_fault_db();
    const size_t splits[][2] = {
        { 0, 0 }, { 0, 10 }, { 10, 0 }, { 3, 7 }, { 16, 100000 }, { 100000, 16 },
        { 100000, 200000 }, { (32u << 10) - 8, 1 }, { 1, (32u << 10) - 8 }, { 20000, 20000 },
    };
    const int ns = (int)(sizeof splits / sizeof splits[0]);
    char err[LSM_ERRLEN];
    logw *w1, *w2;
    assert_int_equal(logw_create(env, "/db/one.log", WAL_MAGIC, &w1, err), LSM_OK);
    assert_int_equal(logw_create(env, LOG_PATH, WAL_MAGIC, &w2, err), LSM_OK);
    for (int i = 0; i < ns; i++) {
        size_t an = splits[i][0], bn = splits[i][1];
        uint8_t *p = test_wal_payload(i, an + bn);
        assert_int_equal(logw_append(w1, p, an + bn, err), LSM_OK);
        assert_int_equal(logw_append2(w2, p, an, p + an, bn, err), LSM_OK);
        free(p);
        assert_int_equal(logw_size(w1), logw_size(w2));
    }
    assert_int_equal(logw_close(w1, err), LSM_OK);
    assert_int_equal(logw_close(w2, err), LSM_OK);
    uint8_t *a, *b;
    size_t an, bn;
    assert_int_equal(env_read_file(env, "/db/one.log", &a, &an), 0);
    test_wal_read(env, &b, &bn);
    assert_int_equal(an, bn);
    assert_memory_equal(a, b, an);
    free(a);
    free(b);

    test_wal_recs r = { .stop_at = -1 };
    assert_int_equal(test_wal_replay(env, WAL_MAGIC, &r, NULL, err), LSM_OK);
    assert_int_equal(r.n, ns);
    for (int i = 0; i < ns; i++)
        test_wal_check_payload(&r, i, i, splits[i][0] + splits[i][1]);
    test_wal_recs_free(&r);
    faultenv_free(env);
}

/* A buffering writer hands records to the OS only when the buffer fills, at flush and at sync:
   a power loss keeps exactly the synced prefix, and replay sees every record after a flush. */
static void wal_buffered_writer(void **state)
{
    (void)state;
    lsm_env *env = test_wal_fault_db();
    char err[LSM_ERRLEN];
    logw *w;
    assert_int_equal(logw_create(env, LOG_PATH, WAL_MAGIC, &w, err), LSM_OK);
    assert_int_equal(logw_sync(w, err), LSM_OK);
    assert_int_equal(env->sync_dir(env, "/db"), 0);
    logw_set_buffer(w, 4096);
    long before = faultenv_mutations(env);
    assert_int_equal(logw_append(w, "one", 3, err), LSM_OK);
    assert_int_equal(logw_append2(w, "tw", 2, "o", 1, err), LSM_OK);
    assert_int_equal(faultenv_mutations(env), before);          /* nothing written yet */
    assert_int_equal(logw_size(w), LOG_HEADER + 2 * (8 + 3));
    assert_int_equal(logw_sync(w, err), LSM_OK);                /* both reach the disk */
    assert_true(faultenv_mutations(env) > before);
    assert_int_equal(logw_append(w, "lost", 4, err), LSM_OK);  /* buffered, never synced */
    uint8_t big[3000];
    memset(big, 'b', sizeof big);
    assert_int_equal(logw_append(w, big, sizeof big, err), LSM_OK);  /* too big: written through */
    faultenv_power_loss(env);
    assert_int_equal(logw_close(w, err), LSM_OK);
    test_wal_recs r = { .stop_at = -1 };
    uint64_t dropped;
    assert_int_equal(test_wal_replay(env, WAL_MAGIC, &r, &dropped, err), LSM_OK);
    assert_int_equal(r.n, 2);                                   /* exactly the synced prefix */
    assert_memory_equal(r.p[1], "two", 3);
    test_wal_recs_free(&r);

    /* Filling the buffer hands it over without a sync; logw_flush hands over the rest. */
    assert_int_equal(logw_create(env, LOG_PATH, WAL_MAGIC, &w, err), LSM_OK);
    logw_set_buffer(w, 1024);
    for (int i = 0; i < 300; i++)
        assert_int_equal(logw_append(w, "0123456789", 10, err), LSM_OK);
    assert_int_equal(logw_flush(w, err), LSM_OK);
    assert_int_equal(test_wal_replay(env, WAL_MAGIC, &r, &dropped, err), LSM_OK);
    assert_int_equal(r.n, 300);
    test_wal_recs_free(&r);
    assert_int_equal(logw_close(w, err), LSM_OK);
    faultenv_free(env);
}

static void wal_poisoned_writer(void **state)
{
    lsm_env *env = test_wal_fault_db();
    char err[LSM_ERRLEN];
    logw *w;
    assert_int_equal(logw_create(env, LOG_PATH, WAL_MAGIC, &w, err), LSM_OK);
    assert_int_equal(logw_append(w, "one", 3, err), LSM_OK);
    assert_int_equal(logw_append(w, "two", 3, err), LSM_OK);
    uint64_t good = logw_size(w);

    /* The disk writes half a record, then dies. */
    faultenv_short_writes(env, 1);
    faultenv_fail_after(env, 1, EIO);
    assert_int_equal(logw_append(w, "three-three", 11, err), LSM_IOERR);
    assert_non_null(strstr(err, LOG_PATH));
    faultenv_clear(env);

    /* The disk is healthy again, but the log must not grow past the half record. */
    long before = faultenv_mutations(env);
    assert_int_equal(logw_append(w, "four", 4, err), LSM_IOERR);
    assert_int_equal(logw_append2(w, "fi", 2, "ve", 2, err), LSM_IOERR);
    assert_int_equal(logw_sync(w, err), LSM_IOERR);
    assert_int_equal(faultenv_mutations(env), before);
    assert_int_equal(logw_size(w), good);
    assert_int_equal(logw_close(w, err), LSM_OK);
    assert_int_equal(logw_close(NULL, err), LSM_OK);

    test_wal_recs r = { .stop_at = -1 };
    uint64_t dropped;
    assert_int_equal(test_wal_replay(env, WAL_MAGIC, &r, &dropped, err), LSM_OK);
    assert_int_equal(r.n, 2);
    assert_memory_equal(r.p[1], "two", 3);
    assert_true(dropped > 0 && dropped < 8 + 11);

    /* A failed sync poisons it too. */
    assert_int_equal(logw_create(env, LOG_PATH, WAL_MAGIC, &w, err), LSM_OK);
    faultenv_fail_after(env, 0, EIO);
    assert_int_equal(logw_sync(w, err), LSM_IOERR);
    faultenv_clear(env);
    assert_int_equal(logw_append(w, "x", 1, err), LSM_IOERR);
    assert_int_equal(logw_close(w, err), LSM_OK);

    /* Creation on a dead disk fails cleanly. */
    faultenv_fail_after(env, 1, ENOSPC);
    assert_int_equal(logw_create(env, "/db/2.log", WAL_MAGIC, &w, err), LSM_NOSPACE);
    faultenv_clear(env);
    test_wal_recs_free(&r);
    faultenv_free(env);
}

static void wal_power_loss_keeps_synced_records(void **state)
{
    lsm_env *env = test_wal_fault_db();
    char err[LSM_ERRLEN];
    logw *w;
    assert_int_equal(logw_create(env, LOG_PATH, WAL_MAGIC, &w, err), LSM_OK);
    assert_int_equal(env->sync_dir(env, "/db"), 0);
    assert_int_equal(logw_append(w, "one", 3, err), LSM_OK);
    assert_int_equal(logw_append(w, "two", 3, err), LSM_OK);
    assert_int_equal(logw_sync(w, err), LSM_OK);
    assert_int_equal(logw_append(w, "three", 5, err), LSM_OK);
    faultenv_power_loss(env);
    assert_int_equal(logw_close(w, err), LSM_OK);

    test_wal_recs r = { .stop_at = -1 };
    uint64_t dropped;
    assert_int_equal(test_wal_replay(env, WAL_MAGIC, &r, &dropped, err), LSM_OK);
    assert_int_equal(r.n, 2);
    assert_int_equal(dropped, 0);
    assert_memory_equal(r.p[0], "one", 3);
    assert_memory_equal(r.p[1], "two", 3);
    test_wal_recs_free(&r);
    faultenv_free(env);
}

static void wal_callback_stops_replay(void **state)
{
    lsm_env *env = test_wal_fault_db();
    size_t sizes[] = { 1, 2, 3, 4 };
    test_wal_write(env, LOG_PATH, sizes, 4, NULL);
    test_wal_recs r = { .stop_at = -1 };
    char err[LSM_ERRLEN];
    test_wal_recs_free(&r);
    r.stop_at = 1;
    assert_int_equal(log_replay(env, LOG_PATH, WAL_MAGIC, test_wal_collect, &r, NULL, err), 7);
    assert_int_equal(r.n, 2);
    test_wal_recs_free(&r);
    faultenv_free(env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(wal_roundtrip_fault),
        cmocka_unit_test(wal_roundtrip_posix),
        cmocka_unit_test(wal_short_writes),
        cmocka_unit_test(wal_empty_and_short_files),
        cmocka_unit_test(wal_bad_magic_and_version),
        cmocka_unit_test(wal_torn_tail_every_length),
        cmocka_unit_test(wal_zeroed_tail),
        cmocka_unit_test(wal_flip_in_middle_is_corruption),
        cmocka_unit_test(wal_flip_in_last_is_dropped),
        cmocka_unit_test(wal_huge_length_in_middle),
        cmocka_unit_test(wal_append2_equivalence),
        cmocka_unit_test(wal_buffered_writer),
        cmocka_unit_test(wal_poisoned_writer),
        cmocka_unit_test(wal_power_loss_keeps_synced_records),
        cmocka_unit_test(wal_callback_stops_replay),
    };
    return cmocka_run_group_tests_name("wal", tests, NULL, NULL);
}
