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
#include "faultenv.h"
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

/* Makes a temporary directory in tmpl (a mkdtemp template) and puts its log's path in path. */
static void test_wal_posix_path(char *tmpl, char path[300])
{
    assert_non_null(mkdtemp(tmpl));
    snprintf(path, 300, "%s/000001.log", tmpl);
}

static void test_wal_posix_done(char *tmpl, const char *path)
{
    lsm_env *env = env_posix();
    assert_int_equal(env->unlink(env, path), 0);
    assert_int_equal(rmdir(tmpl), 0);
}

static void wal_roundtrip_posix(void **state)
{
    char tmpl[] = "/tmp/lsm-test-wal-XXXXXX", path[300];
    test_wal_posix_path(tmpl, path);
    test_wal_roundtrip_on(env_posix(), path);
    test_wal_posix_done(tmpl, path);
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
    enc_fixed32(p + 8, 3);
    test_wal_put_bytes(env, p, n);
    assert_int_equal(test_wal_replay(env, WAL_MAGIC, &r, NULL, err), LSM_CORRUPT);
    assert_non_null(strstr(err, "unsupported log format version 3"));
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

/* ---- version 2: preallocated logs with sync marks ---- */

/* Writes records 0..n-1 (payload test_wal_payload(i, sizes[i])) to a marked log, syncing after
   record i when sync_after[i]; offs gets each record's offset. Leaves the writer open. */
static logw *test_wal_marked(lsm_env *env, const char *path, const size_t *sizes,
                             const int *sync_after, int n, uint64_t *offs)
{
    char err[LSM_ERRLEN];
    logw *w;
    assert_int_equal(logw_create_marked(env, path, WAL_MAGIC, &w, err), LSM_OK);
    for (int i = 0; i < n; i++) {
        uint8_t *p = test_wal_payload(i, sizes[i]);
        uint64_t before = logw_size(w);
        assert_int_equal(logw_append(w, p, sizes[i], err), LSM_OK);
        /* A sync since the last record puts a 16-byte mark in front of this one. */
        uint64_t mark = logw_size(w) - before - 8 - sizes[i];
        assert_true(mark == 0 || mark == 16);
        if (offs)
            offs[i] = before + mark;
        free(p);
        if (sync_after && sync_after[i])
            assert_int_equal(logw_sync(w, err), LSM_OK);
    }
    return w;
}

static void wal_marked_roundtrip_posix(void **state)
{
    char tmpl[] = "/tmp/lsm-test-wal-XXXXXX", path[300];
    test_wal_posix_path(tmpl, path);
    lsm_env *env = env_posix();
    enum { N = 400 };
    size_t sizes[N];
    int sync_after[N];
    uint64_t offs[N];
    for (int i = 0; i < N; i++) {
        sizes[i] = (size_t)(i * 97 % 3000);
        sync_after[i] = i % 7 == 3;
    }
    sizes[200] = 3u << 20;                  /* past several preallocation steps at once */
    logw *w = test_wal_marked(env, path, sizes, sync_after, N, offs);
    char err[LSM_ERRLEN];
    assert_int_equal(logw_seal(w, err), LSM_OK);
    uint64_t logical = logw_size(w);
    assert_int_equal(logw_close(w, err), LSM_OK);
    uint64_t size;
    assert_int_equal(env_file_size(env, path, &size), 0);
    assert_true(size >= logical);           /* equal only where the file system cannot fallocate */

    test_wal_recs r = { .stop_at = -1 };
    uint64_t dropped = 99;
    assert_int_equal(log_replay(env, path, WAL_MAGIC, test_wal_collect, &r, &dropped, err), LSM_OK);
    assert_int_equal(dropped, 0);
    assert_int_equal(r.n, N);               /* the marks are not records */
    for (int i = 0; i < N; i++) {
        assert_int_equal(r.off[i], offs[i]);
        test_wal_check_payload(&r, i, i, sizes[i]);
    }
    test_wal_recs_free(&r);
    test_wal_posix_done(tmpl, path);
}

/* Buffered and short writes reach the same bytes through pwrite as through append. */
static void wal_marked_buffered_short_writes(void **state)
{
    lsm_env *env = test_wal_fault_db();
    faultenv_short_writes(env, 1);
    char err[LSM_ERRLEN];
    logw *w;
    assert_int_equal(logw_create_marked(env, LOG_PATH, WAL_MAGIC, &w, err), LSM_OK);
    logw_set_buffer(w, 4096);
    enum { N = 300 };
    for (int i = 0; i < N; i++) {
        uint8_t *p = test_wal_payload(i, (size_t)(i * 13 % 5000));
        assert_int_equal(logw_append(w, p, (size_t)(i * 13 % 5000), err), LSM_OK);
        free(p);
        if (i % 10 == 0)
            assert_int_equal(logw_flush(w, err), LSM_OK);
        if (i % 25 == 0)
            assert_int_equal(logw_sync(w, err), LSM_OK);
    }
    assert_int_equal(logw_seal(w, err), LSM_OK);
    assert_int_equal(logw_close(w, err), LSM_OK);
    test_wal_recs r = { .stop_at = -1 };
    uint64_t dropped = 99;
    assert_int_equal(test_wal_replay(env, WAL_MAGIC, &r, &dropped, err), LSM_OK);
    assert_int_equal(dropped, 0);
    assert_int_equal(r.n, N);
    for (int i = 0; i < N; i++)
        test_wal_check_payload(&r, i, i, (size_t)(i * 13 % 5000));
    test_wal_recs_free(&r);
    faultenv_free(env);
}

/* Zeros or a flipped byte where the writer had not synced yet: a torn tail, even with intact
   records after it. The same damage before a sync mark that covers it: corruption. */
static void wal_marked_holes(void **state)
{
    enum { N = 10 };
    size_t sizes[N] = { 40, 50, 60, 70, 80, 90, 100, 110, 120, 130 };
    int sync_after[N] = { 0, 0, 0, 1, 0, 0, 1, 0, 0, 0 };  /* marks before records 4 and 7 */
    uint64_t offs[N];
    char err[LSM_ERRLEN];
    test_wal_recs r = { .stop_at = -1 };
    uint64_t dropped;
    for (int sealed = 0; sealed < 2; sealed++) {
        lsm_env *env = test_wal_fault_db();
        logw *w = test_wal_marked(env, LOG_PATH, sizes, sync_after, N, offs);
        if (sealed)
            assert_int_equal(logw_seal(w, err), LSM_OK);
        assert_int_equal(logw_close(w, err), LSM_OK);
        uint8_t *full, *p;
        size_t n;
        test_wal_read(env, &full, &n);
        uint64_t end = offs[N - 1] + 8 + sizes[N - 1];
        assert_int_equal(offs[4], offs[3] + 8 + sizes[3] + 16);
        assert_int_equal(offs[7], offs[6] + 8 + sizes[6] + 16);
        p = xmalloc(n);

        /* Intact: everything, and the preallocated zeros after the records drop nothing. */
        assert_true(n > end);
        assert_int_equal(test_wal_replay(env, WAL_MAGIC, &r, &dropped, err), LSM_OK);
        assert_int_equal(r.n, N);
        assert_int_equal(dropped, 0);

        for (int victim = 0; victim < N; victim++) {
            for (int how = 0; how < 2; how++) {
                memcpy(p, full, n);
                if (how == 0)
                    memset(p + offs[victim], 0, 8 + sizes[victim]);   /* a page never written */
                else
                    p[offs[victim] + 8 + sizes[victim] / 2] ^= 0x40;  /* a byte gone wrong */
                test_wal_put_bytes(env, p, n);
                int rc = test_wal_replay(env, WAL_MAGIC, &r, &dropped, err);
                int covered = victim < 7 || sealed;
                char want[96];
                snprintf(want, sizeof want, "offset %llu: ", (unsigned long long)offs[victim]);
                if (covered) {
                    assert_int_equal(rc, LSM_CORRUPT);
                    assert_non_null(strstr(err, want));
                    assert_non_null(strstr(err, "sync mark at offset"));
                } else {
                    assert_int_equal(rc, LSM_OK);
                    assert_int_equal(r.n, victim);
                    /* Dropped: from the victim to the last non-zero byte, if any is after it. */
                    uint64_t nz = n;
                    while (nz > 0 && p[nz - 1] == 0)
                        nz--;
                    assert_int_equal(dropped, nz > offs[victim] ? nz - offs[victim] : 0);
                    assert_true(how == 1 || victim == N - 1 ? dropped <= end - offs[victim]
                                                           : dropped == end - offs[victim]);
                }
            }
        }
        /* A forged mark claiming more than precedes it is damage, not a record. */
        memcpy(p, full, n);
        uint8_t *m = p + end;
        enc_fixed32(m + 4, 0x80000008u);
        enc_fixed64(m + 8, end + 1);
        enc_fixed32(m, checksum32(m + 4, 12));
        test_wal_put_bytes(env, p, n);
        if (!sealed) {
            assert_int_equal(test_wal_replay(env, WAL_MAGIC, &r, &dropped, err), LSM_CORRUPT);
            assert_non_null(strstr(err, "sync mark past its own offset"));
        }
        free(p);
        free(full);
        faultenv_free(env);
    }
    test_wal_recs_free(&r);
}

/* Power loss at random points of a marked log with random syncs: whatever pages survive, replay
   never reports damage, returns a prefix of the records, and that prefix holds every record
   written before the last sync that returned. Some rounds must leave intact bytes after a hole. */
static void wal_marked_power_loss(void **state)
{
    int holes = 0;
    char err[LSM_ERRLEN];
    for (uint64_t seed = 1; seed <= 300; seed++) {
        lsm_env *env = test_wal_fault_db();
        faultenv_seed(env, seed * 7919);
        uint64_t x = seed;
        logw *w;
        assert_int_equal(logw_create_marked(env, LOG_PATH, WAL_MAGIC, &w, err), LSM_OK);
        assert_int_equal(logw_sync(w, err), LSM_OK);
        assert_int_equal(env->sync_dir(env, "/db"), 0);
        if (seed % 2)
            logw_set_buffer(w, 8192);
        int n = 20 + (int)(seed % 60), synced = 0;
        size_t sizes[80];
        for (int i = 0; i < n; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            sizes[i] = (size_t)(x >> 40) % 3000;
            uint8_t *p = test_wal_payload(i, sizes[i]);
            assert_int_equal(logw_append(w, p, sizes[i], err), LSM_OK);
            free(p);
            if ((x >> 20) % 9 == 0) {
                assert_int_equal(logw_sync(w, err), LSM_OK);
                synced = i + 1;
            } else if ((x >> 24) % 4 == 0) {
                assert_int_equal(logw_flush(w, err), LSM_OK);
            }
        }
        assert_int_equal(logw_flush(w, err), LSM_OK);
        faultenv_power_loss(env);
        assert_int_equal(logw_close(w, err), LSM_OK);
        test_wal_recs r = { .stop_at = -1 };
        uint64_t dropped;
        int rc = test_wal_replay(env, WAL_MAGIC, &r, &dropped, err);
        if (rc != LSM_OK)
            fail_msg("seed %llu: replay after power loss: %s", (unsigned long long)seed, err);
        assert_true(r.n >= synced && r.n <= n);
        for (int i = 0; i < r.n; i++)
            test_wal_check_payload(&r, i, i, sizes[i]);
        holes += dropped > 0;
        test_wal_recs_free(&r);
        faultenv_free(env);
    }
    printf("# wal_marked_power_loss: 300 rounds, %d with intact bytes after a hole\n", holes);
    assert_true(holes > 0);
}

/* An env whose preallocate says the file system cannot (as some FUSE and network file systems
   do), or that has no pwrite at all: the log falls back to plain writes, stays version 2, and
   replays the same. The POSIX env's operations ignore the table they are called through, so a
   copy of it with one entry changed is a working env. */
static int test_wal_no_prealloc(lsm_env *env, lsm_file *f, uint64_t off, uint64_t n)
{
    (void)env, (void)f, (void)off, (void)n;
    return -EOPNOTSUPP;
}

static void wal_marked_without_preallocation(void **state)
{
    for (int variant = 0; variant < 2; variant++) {
        char tmpl[] = "/tmp/lsm-test-wal-XXXXXX", path[300];
        test_wal_posix_path(tmpl, path);
        lsm_env env = *env_posix();
        if (variant == 0)
            env.preallocate = test_wal_no_prealloc;
        else
            env.pwrite = NULL;
        enum { N = 50 };
        size_t sizes[N];
        int sync_after[N];
        for (int i = 0; i < N; i++) {
            sizes[i] = (size_t)(i * 37 % 700);
            sync_after[i] = i % 5 == 0;
        }
        char err[LSM_ERRLEN];
        logw *w = test_wal_marked(&env, path, sizes, sync_after, N, NULL);
        assert_int_equal(logw_seal(w, err), LSM_OK);
        uint64_t logical = logw_size(w);
        assert_int_equal(logw_close(w, err), LSM_OK);
        uint64_t size;
        assert_int_equal(env_file_size(&env, path, &size), 0);
        assert_int_equal(size, logical);    /* nothing preallocated, nothing lost */
        uint8_t v[4];
        lsm_file *f;
        assert_int_equal(env.open(&env, path, LSM_O_READ, &f), 0);
        assert_int_equal(env.pread(&env, f, v, 4, 8), 4);
        assert_int_equal(dec_fixed32(v), LOG_VERSION_MARKED);
        env.close(&env, f);
        test_wal_recs r = { .stop_at = -1 };
        uint64_t dropped = 99;
        assert_int_equal(log_replay(&env, path, WAL_MAGIC, test_wal_collect, &r, &dropped, err),
                         LSM_OK);
        assert_int_equal(dropped, 0);
        assert_int_equal(r.n, N);
        for (int i = 0; i < N; i++)
            test_wal_check_payload(&r, i, i, sizes[i]);
        test_wal_recs_free(&r);
        test_wal_posix_done(tmpl, path);
    }
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
        cmocka_unit_test(wal_marked_roundtrip_posix),
        cmocka_unit_test(wal_marked_buffered_short_writes),
        cmocka_unit_test(wal_marked_holes),
        cmocka_unit_test(wal_marked_power_loss),
        cmocka_unit_test(wal_marked_without_preallocation),
    };
    return cmocka_run_group_tests_name("wal", tests, NULL, NULL);
}
