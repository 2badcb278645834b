/*
 * test_extent.c — values written a piece at a time (lsm_value_writer) and stored as extent maps:
 * holes, partial rewrites and truncates against an in-memory oracle with reopens between, range
 * reads, sparse values of several GiB and up to 1 TiB, sharing of unchanged extents (bytes written
 * for a small rewrite), power loss in the middle of writing and of committing (afterwards a value
 * is exactly an old or a new version), unsynced commits (no sync of their own; their files synced
 * before any later synced write, switch, flush or checkpoint makes their maps durable; a map
 * written back ahead of its file dropped at recovery), removal of orphan blob files at open, and
 * garbage collection giving back the space of dead extents (directory's allocated bytes measured).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "db_impl.h"
#include "extent.h"
#include "faultenv.h"
#include "helper_model.h"
#include "lsm.h"
#include "options.h"

#define GiB (UINT64_C(1) << 30)
#define MiB (UINT64_C(1) << 20)
#define KiB (UINT64_C(1) << 10)

static void small_options(lsm_options *o)
{
    options_defaults(o);
    o->memtable_bytes = 64 << 10;
    o->table_bytes = 32 << 10;
    o->level1_bytes = 128 << 10;
    o->blob_threshold = 4096;
}

static lsm_db *open_dir(const char *dir, lsm_options *o)
{
    lsm_db *db = NULL;
    int rc = lsm_open(dir, o, &db);
    if (rc != LSM_OK)
        fail_msg("lsm_open %s: %s: %s", dir, lsm_strerror(rc), lsm_errmsg(NULL));
    return db;
}

/* Bytes the files of dir occupy on disk (st_blocks), and how many of them end in ext. */
static uint64_t dir_usage(const char *dir, const char *ext, int *count)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    uint64_t bytes = 0;
    if (count)
        *count = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        bytes += (uint64_t)st.st_blocks * 512;
        size_t n = strlen(e->d_name), k = ext ? strlen(ext) : 0;
        if (count && ext && n > k && strcmp(e->d_name + n - k, ext) == 0)
            (*count)++;
    }
    closedir(d);
    return bytes;
}

/* Sum of the lengths (st_size) of the blob files in dir. */
static uint64_t blob_lengths(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    uint64_t bytes = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (strstr(e->d_name, ".blob") && stat(path, &st) == 0)
            bytes += (uint64_t)st.st_size;
    }
    closedir(d);
    return bytes;
}

/* The oracle: a value as a plain byte array. */
typedef struct oracle {
    uint8_t *p;
    uint64_t size, cap;
} oracle;

static void oracle_write(oracle *o, uint64_t off, const void *b, size_t n)
{
    if (off + n > o->cap) {
        uint64_t cap = (off + n) * 2;
        o->p = realloc(o->p, cap);
        memset(o->p + o->cap, 0, cap - o->cap);
        o->cap = cap;
    }
    memcpy(o->p + off, b, n);
    if (off + n > o->size)
        o->size = off + n;
}

static void oracle_truncate(oracle *o, uint64_t size)
{
    if (size > o->cap) {
        o->p = realloc(o->p, size);
        memset(o->p + o->cap, 0, size - o->cap);
        o->cap = size;
    }
    if (size < o->size)
        memset(o->p + size, 0, o->size - size);
    o->size = size;
}

/* Checks key's whole value and some random ranges against o. */
static void check_value(lsm_db *db, const char *key, const oracle *o, trng *r)
{
    uint64_t size = 0;
    int rc = lsm_get_size(db, key, strlen(key), &size);
    assert_int_equal(rc, LSM_OK);
    assert_int_equal(size, o->size);
    void *v = NULL;
    size_t vl = 0;
    rc = lsm_get(db, key, strlen(key), &v, &vl);
    if (rc != LSM_OK)
        fail_msg("lsm_get %s: %s: %s", key, lsm_strerror(rc), lsm_errmsg(db));
    assert_int_equal(vl, o->size);
    if (vl && memcmp(v, o->p, vl) != 0) {
        size_t i = 0;
        while (((uint8_t *)v)[i] == o->p[i])
            i++;
        fail_msg("%s: first difference at byte %zu of %zu", key, i, vl);
    }
    free(v);
    uint8_t *b = malloc(300 * KiB);
    for (int i = 0; i < 20; i++) {
        uint64_t off = trng_below(r, o->size + 1000);
        size_t n = (size_t)trng_below(r, 300 * KiB);
        size_t got = 0;
        uint64_t full = 0;
        rc = lsm_get_range(db, key, strlen(key), off, b, n, &got, &full);
        assert_int_equal(rc, LSM_OK);
        assert_int_equal(full, o->size);
        size_t want = off < o->size ? (o->size - off < n ? (size_t)(o->size - off) : n) : 0;
        assert_int_equal(got, want);
        if (want && memcmp(b, o->p + off, want) != 0)
            fail_msg("%s: range [%" PRIu64 ", +%zu) differs", key, off, want);
    }
    free(b);
}

/* How many descriptors of this process point to removed blob files. */
static int deleted_blobs_open(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char path[300], target[4096];
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        ssize_t k = readlink(path, target, sizeof target - 1);
        if (k > 0) {
            target[k] = 0;
            n += strstr(target, ".blob (deleted)") != NULL;
        }
    }
    closedir(d);
    return n;
}

/* ---- basics: holes, sizes, ranges, the iterator, reopen ---- */

static void test_basic(void **state)
{
    char *dir = tmpdir_new("extent");
    lsm_options o;
    small_options(&o);
    lsm_db *db = open_dir(dir, &o);
    lsm_value_writer *w;
    assert_int_equal(lsm_value_writer_open(db, "a", 1, 0, &w), LSM_OK);
    assert_int_equal(lsm_value_writer_write(w, 100, "hello", 5), LSM_OK);
    assert_int_equal(lsm_value_writer_write(w, 105, " world", 6), LSM_OK);
    assert_int_equal(lsm_value_writer_size(w), 111);
    char rb[16];
    size_t got;
    assert_int_equal(lsm_value_writer_read(w, 98, rb, 16, &got), LSM_OK);
    assert_int_equal(got, 13);
    assert_memory_equal(rb, "\0\0hello world", 13);
    /* Nothing is visible before commit. */
    uint64_t size;
    assert_int_equal(lsm_get_size(db, "a", 1, &size), LSM_NOTFOUND);
    assert_int_equal(lsm_value_writer_commit(w, 1), LSM_OK);
    for (int round = 0; round < 3; round++) {
        assert_int_equal(lsm_get_size(db, "a", 1, &size), LSM_OK);
        assert_int_equal(size, 111);
        void *v;
        size_t vl;
        assert_int_equal(lsm_get(db, "a", 1, &v, &vl), LSM_OK);
        assert_int_equal(vl, 111);
        uint8_t zero[100] = { 0 };
        assert_memory_equal(v, zero, 100);
        assert_memory_equal((char *)v + 100, "hello world", 11);
        free(v);
        lsm_iter *it;
        assert_int_equal(lsm_iter_new(db, &it), LSM_OK);
        lsm_iter_seek(it, "a", 1);
        assert_true(lsm_iter_valid(it));
        const void *iv = lsm_iter_value(it, &vl);
        assert_non_null(iv);
        assert_int_equal(vl, 111);
        assert_memory_equal((const char *)iv + 100, "hello world", 11);
        lsm_iter_free(it);
        if (round == 0)
            assert_int_equal(lsm_flush(db), LSM_OK);
        if (round == 1) {
            assert_int_equal(lsm_close(db), LSM_OK);
            db = open_dir(dir, &o);
        }
    }
    /* An empty value, and a value that is one hole. */
    assert_int_equal(lsm_value_writer_open(db, "empty", 5, 0, &w), LSM_OK);
    assert_int_equal(lsm_value_writer_commit(w, 0), LSM_OK);
    assert_int_equal(lsm_value_writer_open(db, "hole", 4, 0, &w), LSM_OK);
    assert_int_equal(lsm_value_writer_truncate(w, 5000), LSM_OK);
    assert_int_equal(lsm_value_writer_commit(w, 0), LSM_OK);
    void *v;
    size_t vl;
    assert_int_equal(lsm_get(db, "empty", 5, &v, &vl), LSM_OK);
    assert_int_equal(vl, 0);
    free(v);
    assert_int_equal(lsm_get(db, "hole", 4, &v, &vl), LSM_OK);
    assert_int_equal(vl, 5000);
    for (size_t i = 0; i < vl; i++)
        assert_int_equal(((uint8_t *)v)[i], 0);
    free(v);
    /* Abort leaves nothing, not even an open descriptor of the removed file; misuse is
       refused. */
    assert_int_equal(lsm_value_writer_open(db, "b", 1, 0, &w), LSM_OK);
    assert_int_equal(lsm_value_writer_write(w, 0, "x", 1), LSM_OK);
    assert_int_equal(lsm_value_writer_read(w, 0, rb, 1, &got), LSM_OK);
    lsm_value_writer_abort(w);
    assert_int_equal(deleted_blobs_open(), 0);
    assert_int_equal(lsm_get_size(db, "b", 1, &size), LSM_NOTFOUND);
    assert_int_equal(lsm_value_writer_open(db, "b", 1, 0x80, &w), LSM_INVALID);
    assert_null(w);
    assert_int_equal(lsm_value_writer_open(db, "b", 1, 0, &w), LSM_OK);
    assert_int_equal(lsm_value_writer_write(w, LSM_MAX_EXTENT_VALUE, "x", 1), LSM_INVALID);
    lsm_value_writer_abort(w);
    lsm_value_writer_abort(NULL);
    assert_int_equal(lsm_close(db), LSM_OK);
    tmpdir_remove(dir);
    free(dir);
}

/* A writer may start from a plain value in the memtable, in a table, or in a blob file. */
static void test_keep_plain(void **state)
{
    char *dir = tmpdir_new("extent");
    lsm_options o;
    small_options(&o);
    lsm_db *db = open_dir(dir, &o);
    trng r;
    trng_seed(&r, test_seed("keep_plain", 7));
    size_t sizes[] = { 10, 3000, 100000 };  /* small, in a table block, in a blob file */
    for (int flush = 0; flush < 2; flush++)
        for (int i = 0; i < 3; i++) {
            char key[32];
            snprintf(key, sizeof key, "p%d%d", flush, i);
            oracle or = { 0 };
            uint8_t *b = malloc(sizes[i]);
            trng_fill(&r, b, sizes[i]);
            oracle_write(&or, 0, b, sizes[i]);
            assert_int_equal(lsm_put(db, key, strlen(key), b, sizes[i]), LSM_OK);
            if (flush)
                assert_int_equal(lsm_flush(db), LSM_OK);
            lsm_value_writer *w;
            assert_int_equal(lsm_value_writer_open(db, key, strlen(key), LSM_VW_KEEP, &w), LSM_OK);
            assert_int_equal(lsm_value_writer_size(w), sizes[i]);
            assert_int_equal(lsm_value_writer_write(w, 5, "XYZ", 3), LSM_OK);
            oracle_write(&or, 5, "XYZ", 3);
            assert_int_equal(lsm_value_writer_write(w, sizes[i] + 10, "END", 3), LSM_OK);
            oracle_write(&or, sizes[i] + 10, "END", 3);
            assert_int_equal(lsm_value_writer_commit(w, 0), LSM_OK);
            check_value(db, key, &or, &r);
            free(b);
            free(or.p);
        }
    assert_int_equal(lsm_close(db), LSM_OK);
    tmpdir_remove(dir);
    free(dir);
}

/* ---- random rewrites, truncates and holes against the oracle, with reopens ---- */

static void random_ops(lsm_db *db, const char *key, oracle *or, trng *r, uint64_t span, int ops)
{
    lsm_value_writer *w;
    int exists = or->p != NULL;
    oracle committed = { 0 };           /* the key's value before this writer */
    if (exists)
        oracle_write(&committed, 0, or->p, or->size);
    committed.size = or->size;
    int keep = or->size > 0 || trng_chance(r, 50);
    if (!keep)
        oracle_truncate(or, 0);
    assert_int_equal(lsm_value_writer_open(db, key, strlen(key), keep ? LSM_VW_KEEP : 0, &w), LSM_OK);
    uint8_t *b = malloc(256 * KiB);
    for (int i = 0; i < ops; i++) {
        int what = (int)trng_below(r, 12);
        if (what == 10) {
            uint64_t off = trng_below(r, or->size + 100), n = trng_below(r, span / 4);
            assert_int_equal(lsm_value_writer_punch(w, off, n), LSM_OK);
            if (off < or->size)
                memset(or->p + off, 0, (size_t)(or->size - off < n ? or->size - off : n));
        } else if (what == 11 && exists) {
            /* Copy from the key's own committed value: shared extents, moved. */
            uint64_t src = trng_below(r, committed.size + 100), off = trng_below(r, span);
            uint64_t n = trng_below(r, span / 2), copied;
            assert_int_equal(lsm_value_writer_copy(w, off, key, strlen(key), src, n, &copied),
                             LSM_OK);
            uint64_t k = src < committed.size ? (committed.size - src < n ? committed.size - src : n) : 0;
            assert_int_equal(copied, k);
            if (k)
                oracle_write(or, off, committed.p + src, (size_t)k);
        } else if (what < 7) {
            uint64_t off = trng_below(r, span);
            size_t n = 1 + (size_t)trng_below(r, trng_chance(r, 80) ? 8 * KiB : 256 * KiB);
            trng_fill(r, b, n);
            assert_int_equal(lsm_value_writer_write(w, off, b, n), LSM_OK);
            oracle_write(or, off, b, n);
            /* Sometimes go on sequentially: one record grows. */
            if (trng_chance(r, 40)) {
                trng_fill(r, b, n);
                assert_int_equal(lsm_value_writer_write(w, off + n, b, n), LSM_OK);
                oracle_write(or, off + n, b, n);
            }
        } else if (what < 9) {
            uint64_t size = trng_below(r, span + span / 4);
            assert_int_equal(lsm_value_writer_truncate(w, size), LSM_OK);
            oracle_truncate(or, size);
        } else {
            uint64_t off = trng_below(r, or->size + 100);
            size_t n = (size_t)trng_below(r, 64 * KiB), got;
            uint8_t *rb = malloc(n + 1);
            assert_int_equal(lsm_value_writer_read(w, off, rb, n, &got), LSM_OK);
            size_t want = off < or->size ? (or->size - off < n ? (size_t)(or->size - off) : n) : 0;
            assert_int_equal(got, want);
            if (want)
                assert_memory_equal(rb, or->p + off, want);
            free(rb);
        }
        assert_int_equal(lsm_value_writer_size(w), or->size);
    }
    free(b);
    free(committed.p);
    assert_int_equal(lsm_value_writer_commit(w, trng_chance(r, 50)), LSM_OK);
}

static void test_model(void **state)
{
    char *dir = tmpdir_new("extent");
    lsm_options o;
    small_options(&o);
    lsm_db *db = open_dir(dir, &o);
    trng r;
    trng_seed(&r, test_seed("extent_model", 42));
    enum { NK = 4 };
    oracle ors[NK] = { { 0 } };
    long rounds = test_scale(60);
    for (long round = 0; round < rounds; round++) {
        int k = (int)trng_below(&r, NK);
        char key[16];
        snprintf(key, sizeof key, "k%d", k);
        random_ops(db, key, &ors[k], &r, k == 0 ? 64 * KiB : 4 * MiB, 1 + (int)trng_below(&r, 30));
        check_value(db, key, &ors[k], &r);
        if (trng_chance(&r, 15))
            assert_int_equal(lsm_flush(db), LSM_OK);
        if (trng_chance(&r, 10))
            assert_int_equal(lsm_compact(db), LSM_OK);
        if (trng_chance(&r, 15)) {
            assert_int_equal(lsm_close(db), LSM_OK);
            db = open_dir(dir, &o);
            for (int j = 0; j < NK; j++) {
                snprintf(key, sizeof key, "k%d", j);
                if (ors[j].p)
                    check_value(db, key, &ors[j], &r);
            }
        }
    }
    assert_int_equal(lsm_close(db), LSM_OK);
    for (int j = 0; j < NK; j++)
        free(ors[j].p);
    tmpdir_remove(dir);
    free(dir);
}

/* ---- sparse values of several GiB and 1 TiB ---- */

static void test_huge_sparse(void **state)
{
    char *dir = tmpdir_new("extent");
    lsm_options o;
    small_options(&o);
    lsm_db *db = open_dir(dir, &o);
    const uint64_t T = UINT64_C(1) << 40;
    uint64_t offs[] = { 0, 3 * GiB + 12345, 5 * GiB - 4 * KiB, T - 4 * KiB };
    lsm_value_writer *w;
    assert_int_equal(lsm_value_writer_open(db, "big", 3, 0, &w), LSM_OK);
    uint8_t piece[4 * KiB];
    for (int i = 0; i < 4; i++) {
        memset(piece, 'a' + i, sizeof piece);
        assert_int_equal(lsm_value_writer_write(w, offs[i], piece, sizeof piece), LSM_OK);
    }
    assert_int_equal(lsm_value_writer_size(w), T);
    assert_int_equal(lsm_value_writer_commit(w, 1), LSM_OK);
    for (int round = 0; round < 2; round++) {
        uint64_t size;
        assert_int_equal(lsm_get_size(db, "big", 3, &size), LSM_OK);
        assert_int_equal(size, T);
        for (int i = 0; i < 4; i++) {
            /* A range straddling the piece's start: zeros, then the piece. */
            uint8_t b[8 * KiB];
            size_t got;
            uint64_t at = offs[i] >= 100 ? offs[i] - 100 : 0;
            assert_int_equal(lsm_get_range(db, "big", 3, at, b, sizeof b, &got, &size), LSM_OK);
            size_t want = T - at < sizeof b ? (size_t)(T - at) : sizeof b;
            assert_int_equal(got, want);
            for (size_t j = 0; j < got; j++) {
                uint64_t x = at + j;
                int in = x >= offs[i] && x < offs[i] + 4 * KiB;
                if (b[j] != (in ? 'a' + i : 0))
                    fail_msg("byte %" PRIu64 ": %d", x, b[j]);
            }
        }
        /* Sizes and data ranges come from the map alone. */
    uint64_t sz, alloc, ds, de;
    assert_int_equal(lsm_get_allocated(db, "big", 3, &sz, &alloc), LSM_OK);
    assert_int_equal(sz, T);
    assert_int_equal(alloc, 16 * KiB);
    assert_int_equal(lsm_get_next_data(db, "big", 3, 5000, &ds, &de), LSM_OK);
    assert_int_equal(ds, offs[1]);
    assert_int_equal(de, offs[1] + 4 * KiB);
    assert_int_equal(lsm_get_next_data(db, "big", 3, 1000, &ds, &de), LSM_OK);
    assert_int_equal(ds, 0);
    assert_int_equal(de, 4 * KiB);
    assert_int_equal(lsm_get_next_data(db, "big", 3, T - 1, &ds, &de), LSM_OK);
    assert_int_equal(ds, T - 4 * KiB);
    assert_int_equal(lsm_get_next_data(db, "big", 3, T, &ds, &de), LSM_OK);
    assert_int_equal(ds, T);
    assert_int_equal(de, T);
    assert_int_equal(lsm_get_next_data(db, "nope", 4, 0, &ds, &de), LSM_NOTFOUND);
    assert_int_equal(lsm_put(db, "plain", 5, "abc", 3), LSM_OK);
    assert_int_equal(lsm_get_allocated(db, "plain", 5, &sz, &alloc), LSM_OK);
    assert_int_equal(sz, 3);
    assert_int_equal(alloc, 3);
    assert_int_equal(lsm_get_next_data(db, "plain", 5, 1, &ds, &de), LSM_OK);
    assert_int_equal(ds, 0);
    assert_int_equal(de, 3);
    /* Too large to return whole: a clear error, nothing allocated. */
        void *v = NULL;
        size_t vl;
        assert_int_equal(lsm_get(db, "big", 3, &v, &vl), LSM_NOMEM);
        assert_null(v);
        assert_non_null(strstr(lsm_errmsg(db), "lsm_get_range"));
        lsm_iter *it;
        assert_int_equal(lsm_iter_new(db, &it), LSM_OK);
        lsm_iter_seek(it, "big", 3);
        assert_true(lsm_iter_valid(it));
        assert_null(lsm_iter_value(it, &vl));
        assert_int_equal(lsm_iter_status(it), LSM_NOMEM);
        lsm_iter_free(it);
        assert_int_equal(lsm_close(db), LSM_OK);
        db = open_dir(dir, &o);
    }
    /* A 1 TiB value of four pieces takes about four pieces of disk. */
    uint64_t used = dir_usage(dir, NULL, NULL);
    assert_true(used < 4 * MiB);
    assert_int_equal(lsm_close(db), LSM_OK);
    tmpdir_remove(dir);
    free(dir);
}

/* ---- sharing: a small rewrite of a large value costs about what it writes ---- */

static void test_sharing(void **state)
{
    char *dir = tmpdir_new("extent");
    lsm_options o;
    small_options(&o);
    lsm_db *db = open_dir(dir, &o);
    trng r;
    trng_seed(&r, test_seed("extent_sharing", 3));
    const size_t N = 32 * MiB;
    uint8_t *b = malloc(MiB);
    lsm_value_writer *w;
    assert_int_equal(lsm_value_writer_open(db, "v", 1, 0, &w), LSM_OK);
    for (size_t off = 0; off < N; off += MiB) {
        trng_fill(&r, b, MiB);
        assert_int_equal(lsm_value_writer_write(w, off, b, MiB), LSM_OK);
    }
    assert_int_equal(lsm_value_writer_commit(w, 1), LSM_OK);
    assert_int_equal(lsm_flush(db), LSM_OK);
    lsm_stats st0, st1;
    assert_int_equal(lsm_stats_get(db, &st0, sizeof st0), LSM_OK);
    uint64_t disk0 = dir_usage(dir, NULL, NULL);
    /* 4 KiB into the middle. */
    assert_int_equal(lsm_value_writer_open(db, "v", 1, LSM_VW_KEEP, &w), LSM_OK);
    memset(b, 'z', 4 * KiB);
    assert_int_equal(lsm_value_writer_write(w, 17 * MiB + 123, b, 4 * KiB), LSM_OK);
    assert_int_equal(lsm_value_writer_commit(w, 1), LSM_OK);
    assert_int_equal(lsm_stats_get(db, &st1, sizeof st1), LSM_OK);
    uint64_t blob = st1.blob_bytes_written - st0.blob_bytes_written;
    uint64_t wal = st1.wal_bytes_written - st0.wal_bytes_written;
    uint64_t disk1 = dir_usage(dir, NULL, NULL);
    print_message("# 4 KiB rewrite of a 32 MiB value: %" PRIu64 " blob bytes, %" PRIu64
                  " WAL bytes, directory grew by %" PRId64 " bytes\n",
                  blob, wal, (int64_t)(disk1 - disk0));
    assert_int_equal(blob, 4 * KiB);
    assert_true(wal < 1024);
    assert_true(disk1 < disk0 + 64 * KiB);
    size_t got;
    uint8_t rb[4 * KiB + 2];
    assert_int_equal(lsm_get_range(db, "v", 1, 17 * MiB + 122, rb, sizeof rb, &got, NULL), LSM_OK);
    assert_int_equal(got, sizeof rb);
    for (size_t i = 1; i <= 4 * KiB; i++)
        assert_int_equal(rb[i], 'z');
    free(b);
    assert_int_equal(lsm_close(db), LSM_OK);
    tmpdir_remove(dir);
    free(dir);
}

/* ---- garbage collection ---- */

static void write_dense(lsm_db *db, const char *key, uint64_t at, size_t n, int flags, trng *r,
                        oracle *or)
{
    uint8_t *b = malloc(MiB);
    lsm_value_writer *w;
    assert_int_equal(lsm_value_writer_open(db, key, strlen(key), flags, &w), LSM_OK);
    if (!(flags & LSM_VW_KEEP))
        oracle_truncate(or, 0);
    for (size_t off = 0; off < n; off += MiB) {
        size_t k = n - off < MiB ? n - off : MiB;
        trng_fill(r, b, k);
        assert_int_equal(lsm_value_writer_write(w, at + off, b, k), LSM_OK);
        oracle_write(or, at + off, b, k);
    }
    assert_int_equal(lsm_value_writer_commit(w, 1), LSM_OK);
    free(b);
}

static void test_gc(void **state)
{
    char *dir = tmpdir_new("extent");
    lsm_options o;
    small_options(&o);
    lsm_db *db = open_dir(dir, &o);
    trng r;
    trng_seed(&r, test_seed("extent_gc", 5));
    oracle a = { 0 }, b = { 0 };
    /* a: 16 MiB, then its first 12 MiB rewritten (the old file keeps 4 MiB live); b: 16 MiB,
       then rewritten whole (the old file is dead). */
    write_dense(db, "a", 0, 16 * MiB, 0, &r, &a);
    write_dense(db, "b", 0, 16 * MiB, 0, &r, &b);
    assert_int_equal(lsm_flush(db), LSM_OK);
    write_dense(db, "a", 0, 12 * MiB, LSM_VW_KEEP, &r, &a);
    write_dense(db, "b", 0, 16 * MiB, 0, &r, &b);
    assert_int_equal(lsm_flush(db), LSM_OK);
    int nblobs;
    uint64_t before = dir_usage(dir, ".blob", &nblobs);
    /* The first compaction drops the old versions and counts their garbage (recorded in the
       manifest, so a reopen keeps it); the next moves a's live 4 MiB out of its half-dead file. */
    assert_int_equal(lsm_compact(db), LSM_OK);
    assert_int_equal(lsm_close(db), LSM_OK);
    db = open_dir(dir, &o);
    assert_int_equal(lsm_compact(db), LSM_OK);
    int nafter;
    uint64_t after = dir_usage(dir, ".blob", &nafter);
    print_message("# directory: %" PRIu64 " bytes in %d blob files before, %" PRIu64
                  " bytes in %d after\n", before, nblobs, after, nafter);
    assert_true(before > 60 * MiB);
    assert_true(after < 34 * MiB);      /* 32 MiB live, plus tables and the WAL */
    check_value(db, "a", &a, &r);
    check_value(db, "b", &b, &r);
    assert_int_equal(lsm_close(db), LSM_OK);
    db = open_dir(dir, &o);
    check_value(db, "a", &a, &r);
    check_value(db, "b", &b, &r);
    lsm_stats st;
    assert_int_equal(lsm_stats_get(db, &st, sizeof st), LSM_OK);
    assert_true(st.blob_bytes_live < 33 * MiB);
    assert_int_equal(lsm_close(db), LSM_OK);
    free(a.p);
    free(b.p);
    tmpdir_remove(dir);
    free(dir);
}

/* Extents in key's map (engine internals: the test links the static library). */
static size_t map_extents(lsm_db *db, const char *key)
{
    read_view rv;
    void *v = NULL;
    size_t vl = 0;
    int type = 0;
    char err[LSM_ERRLEN];
    assert_int_equal(db_lookup(db, &rv, key, strlen(key), &v, &vl, &type, err), LSM_OK);
    read_view_put(&rv);
    assert_int_equal(type, LSM_TYPE_EXTENTS);
    extent_map m = { 0 };
    assert_int_equal(extent_map_decode((slice){ v, vl }, &m), 0);
    size_t n = m.n;
    extent_map_free(&m);
    free(v);
    return n;
}

/* Relocation copies a fragmented live remainder into one record. */
static void test_gc_defragments(void **state)
{
    char *dir = tmpdir_new("extent");
    lsm_options o;
    small_options(&o);
    lsm_db *db = open_dir(dir, &o);
    trng r;
    trng_seed(&r, 31);
    oracle a = { 0 };
    uint8_t *b = malloc(64 * KiB);
    lsm_value_writer *w;
    /* 64 pieces of 64 KiB written last to first: 64 records, 64 extents. */
    assert_int_equal(lsm_value_writer_open(db, "a", 1, 0, &w), LSM_OK);
    for (int i = 63; i >= 0; i--) {
        trng_fill(&r, b, 64 * KiB);
        assert_int_equal(lsm_value_writer_write(w, (uint64_t)i * 64 * KiB, b, 64 * KiB), LSM_OK);
        oracle_write(&a, (uint64_t)i * 64 * KiB, b, 64 * KiB);
    }
    assert_int_equal(lsm_value_writer_commit(w, 0), LSM_OK);
    assert_int_equal(map_extents(db, "a"), 64);
    /* Reopened, so that the rewrite goes to a file of its own (a key's writers append to the
       file its last writer left only within one open: test_reuse_appends). */
    assert_int_equal(lsm_close(db), LSM_OK);
    db = open_dir(dir, &o);
    /* The first 3 MiB rewritten in one run: the old file keeps 16 live pieces of 64. */
    write_dense(db, "a", 0, 3 * MiB, LSM_VW_KEEP, &r, &a);
    assert_int_equal(map_extents(db, "a"), 17);
    assert_int_equal(lsm_compact(db), LSM_OK);
    assert_int_equal(lsm_compact(db), LSM_OK);
    assert_int_equal(map_extents(db, "a"), 2);
    check_value(db, "a", &a, &r);
    assert_int_equal(lsm_close(db), LSM_OK);
    free(b);
    free(a.p);
    tmpdir_remove(dir);
    free(dir);
}

/* A snapshot (an open iterator) keeps the old version's extents readable through compaction. */
static void test_snapshot_keeps(void **state)
{
    char *dir = tmpdir_new("extent");
    lsm_options o;
    small_options(&o);
    lsm_db *db = open_dir(dir, &o);
    trng r;
    trng_seed(&r, 11);
    oracle a = { 0 }, old = { 0 };
    write_dense(db, "a", 0, 3 * MiB, 0, &r, &a);
    oracle_write(&old, 0, a.p, a.size);
    lsm_iter *it;
    assert_int_equal(lsm_iter_new(db, &it), LSM_OK);
    write_dense(db, "a", 0, 3 * MiB, 0, &r, &a);
    assert_int_equal(lsm_compact(db), LSM_OK);
    assert_int_equal(lsm_compact(db), LSM_OK);
    lsm_iter_seek(it, "a", 1);
    assert_true(lsm_iter_valid(it));
    size_t vl;
    const void *v = lsm_iter_value(it, &vl);
    assert_non_null(v);
    assert_int_equal(vl, old.size);
    assert_memory_equal(v, old.p, vl);
    lsm_iter_free(it);
    check_value(db, "a", &a, &r);
    assert_int_equal(lsm_close(db), LSM_OK);
    free(a.p);
    free(old.p);
    tmpdir_remove(dir);
    free(dir);
}

/* ---- pins: a blob file named only by an open writer or a memtable's map stays ---- */

static uint64_t only_blob(const char *dir)
{
    DIR *d = opendir(dir);
    uint64_t num = 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".blob")) {
            num = strtoull(e->d_name, NULL, 10);
            n++;
        }
    closedir(d);
    assert_int_equal(n, 1);
    return num;
}

static void test_pins(void **state)
{
    char *dir = tmpdir_new("extent");
    lsm_options o;
    small_options(&o);
    o.background_compaction = 0;
    lsm_db *db = open_dir(dir, &o);
    trng r;
    trng_seed(&r, 19);
    oracle a = { 0 };
    write_dense(db, "a", 0, 2 * MiB, 0, &r, &a);
    assert_int_equal(lsm_flush(db), LSM_OK);
    uint64_t b1 = only_blob(dir);
    /* A writer starts from v1; meanwhile the key is deleted and compaction drops v1: the last
       table naming v1's blob file goes, but the writer still shares its extents. */
    lsm_value_writer *w;
    assert_int_equal(lsm_value_writer_open(db, "a", 1, LSM_VW_KEEP, &w), LSM_OK);
    assert_int_equal(lsm_value_writer_write(w, 5, "new", 3), LSM_OK);
    oracle_write(&a, 5, "new", 3);
    assert_int_equal(lsm_delete(db, "a", 1), LSM_OK);
    assert_int_equal(lsm_compact(db), LSM_OK);
    assert_int_equal(lsm_value_writer_commit(w, 0), LSM_OK);
    check_value(db, "a", &a, &r);
    /* Now only the memtable's map names v1's file: a table reference coming and going (as a
       compaction's would) must not delete it. */
    blob_set_ref(&db->blobs, &b1, 1);
    blob_set_unref(&db->blobs, &b1, 1);
    check_value(db, "a", &a, &r);
    assert_int_equal(lsm_close(db), LSM_OK);
    db = open_dir(dir, &o);
    check_value(db, "a", &a, &r);
    assert_int_equal(lsm_close(db), LSM_OK);
    free(a.p);
    tmpdir_remove(dir);
    free(dir);
}

/* ---- copy (reflink), punch, commit with a batch ---- */

static void test_copy_punch(void **state)
{
    char *dir = tmpdir_new("extent");
    lsm_options o;
    small_options(&o);
    lsm_db *db = open_dir(dir, &o);
    trng r;
    trng_seed(&r, test_seed("extent_copy", 23));
    oracle a = { 0 }, b = { 0 };
    write_dense(db, "a", 0, 8 * MiB, 0, &r, &a);
    lsm_stats st0, st1;
    assert_int_equal(lsm_stats_get(db, &st0, sizeof st0), LSM_OK);
    lsm_value_writer *w;
    assert_int_equal(lsm_value_writer_open(db, "b", 1, 0, &w), LSM_OK);
    uint64_t copied;
    assert_int_equal(lsm_value_writer_copy(w, 100, "a", 1, MiB, 4 * MiB, &copied), LSM_OK);
    assert_int_equal(copied, 4 * MiB);
    oracle_write(&b, 100, a.p + MiB, 4 * MiB);
    /* Past the source's end: only what it holds. */
    assert_int_equal(lsm_value_writer_copy(w, 10 * MiB, "a", 1, 7 * MiB, 4 * MiB, &copied), LSM_OK);
    assert_int_equal(copied, 1 * MiB);
    oracle_write(&b, 10 * MiB, a.p + 7 * MiB, MiB);
    assert_int_equal(lsm_value_writer_copy(w, 0, "nope", 4, 0, 10, &copied), LSM_NOTFOUND);
    assert_int_equal(lsm_value_writer_punch(w, 200, 300), LSM_OK);
    memset(b.p + 200, 0, 300);
    assert_int_equal(lsm_value_writer_punch(w, 11 * MiB - 10, 100), LSM_OK);   /* past the end */
    memset(b.p + 11 * MiB - 10, 0, 10);
    assert_int_equal(lsm_value_writer_size(w), b.size);
    lsm_batch *bt = lsm_batch_new();
    lsm_batch_put(bt, "attr-b", 6, "meta", 4);
    assert_int_equal(lsm_value_writer_commit_batch(w, bt, 1), LSM_OK);
    lsm_batch_free(bt);
    assert_int_equal(lsm_stats_get(db, &st1, sizeof st1), LSM_OK);
    assert_int_equal(st1.blob_bytes_written, st0.blob_bytes_written);  /* nothing copied */
    check_value(db, "b", &b, &r);
    void *v;
    size_t vl;
    assert_int_equal(lsm_get(db, "attr-b", 6, &v, &vl), LSM_OK);
    assert_int_equal(vl, 4);
    free(v);
    /* The source goes; the copy keeps the shared extents alive. */
    assert_int_equal(lsm_delete(db, "a", 1), LSM_OK);
    assert_int_equal(lsm_compact(db), LSM_OK);
    assert_int_equal(lsm_compact(db), LSM_OK);
    check_value(db, "b", &b, &r);
    assert_int_equal(lsm_close(db), LSM_OK);
    db = open_dir(dir, &o);
    check_value(db, "b", &b, &r);
    assert_int_equal(lsm_close(db), LSM_OK);
    free(a.p);
    free(b.p);
    tmpdir_remove(dir);
    free(dir);
}

/* ---- threads: writers on several keys while flushes, compactions and relocation run ---- */

typedef struct thread_arg {
    lsm_db *db;
    int id;
    int rounds;
    int bad;                    /* rounds whose value differed from the oracle */
    char why[200];
} thread_arg;

static void *writer_thread(void *p)
{
    thread_arg *t = p;
    trng r;
    trng_seed(&r, (uint64_t)t->id * 1000 + 7);
    oracle o = { 0 };
    char key[16];
    snprintf(key, sizeof key, "t%d", t->id);
    uint8_t *b = malloc(64 * KiB);
    for (int round = 0; round < t->rounds && !t->bad; round++) {
        lsm_value_writer *w;
        if (lsm_value_writer_open(t->db, key, strlen(key), LSM_VW_KEEP, &w) != LSM_OK) {
            snprintf(t->why, sizeof t->why, "open: %s", lsm_errmsg(t->db));
            t->bad = 1;
            break;
        }
        int n = 1 + (int)trng_below(&r, 6);
        for (int i = 0; i < n; i++) {
            uint64_t off = trng_below(&r, MiB);
            size_t k = 1 + (size_t)trng_below(&r, 64 * KiB);
            trng_fill(&r, b, k);
            if (lsm_value_writer_write(w, off, b, k) != LSM_OK)
                t->bad = 1;
            oracle_write(&o, off, b, k);
        }
        if (trng_chance(&r, 10)) {
            uint64_t size = trng_below(&r, MiB);
            if (lsm_value_writer_truncate(w, size) != LSM_OK)
                t->bad = 1;
            oracle_truncate(&o, size);
        }
        if (lsm_value_writer_commit(w, 0) != LSM_OK)
            t->bad = 1;
        void *v = NULL;
        size_t vl = 0;
        int rc = lsm_get(t->db, key, strlen(key), &v, &vl);
        if (t->bad || rc != LSM_OK || vl != o.size || (vl && memcmp(v, o.p, vl) != 0)) {
            snprintf(t->why, sizeof t->why, "%s round %d: rc %d (%s), %zu bytes, want %" PRIu64,
                     key, round, rc, lsm_errmsg(t->db), vl, o.size);
            t->bad = 1;
        }
        free(v);
    }
    free(b);
    free(o.p);
    return NULL;
}

static void test_threads(void **state)
{
    char *dir = tmpdir_new("extent");
    lsm_options o;
    small_options(&o);
    o.memtable_bytes = 16 << 10;   /* flushes and compactions all the time */
    o.table_bytes = 8 << 10;
    o.level1_bytes = 32 << 10;
    lsm_db *db = open_dir(dir, &o);
    enum { NT = 3 };
    pthread_t th[NT];
    thread_arg ta[NT];
    for (int i = 0; i < NT; i++) {
        ta[i] = (thread_arg){ .db = db, .id = i, .rounds = (int)test_scale(150) };
        assert_int_equal(pthread_create(&th[i], NULL, writer_thread, &ta[i]), 0);
    }
    /* Meanwhile: plain writes that keep memtables turning over, and manual compactions. */
    char val[300];
    memset(val, 'p', sizeof val);
    for (int i = 0; i < 400; i++) {
        char k[16];
        snprintf(k, sizeof k, "p%d", i % 37);
        assert_int_equal(lsm_put(db, k, strlen(k), val, sizeof val), LSM_OK);
        if (i % 100 == 99)
            assert_int_equal(lsm_compact(db), LSM_OK);
    }
    for (int i = 0; i < NT; i++) {
        pthread_join(th[i], NULL);
        if (ta[i].bad)
            fail_msg("%s", ta[i].why);
    }
    assert_int_equal(lsm_close(db), LSM_OK);
    tmpdir_remove(dir);
    free(dir);
}

/* ---- readers: one version, by range, for as long as they are open ---- */

static void test_reader(void **state)
{
    char *dir = tmpdir_new("extent");
    lsm_options o;
    small_options(&o);
    o.background_compaction = 0;
    lsm_db *db = open_dir(dir, &o);
    trng r;
    trng_seed(&r, 37);
    oracle v1 = { 0 }, v2 = { 0 };
    write_dense(db, "r", 0, 3 * MiB, 0, &r, &v1);
    lsm_value_reader *rd;
    assert_int_equal(lsm_value_reader_open(db, "r", 1, &rd), LSM_OK);
    assert_int_equal(lsm_value_reader_size(rd), 3 * MiB);
    /* The key is rewritten whole and compacted: v1's blob file is named by no table any more. */
    write_dense(db, "r", 0, 2 * MiB, 0, &r, &v2);
    assert_int_equal(lsm_compact(db), LSM_OK);
    assert_int_equal(lsm_compact(db), LSM_OK);
    int n;
    dir_usage(dir, ".blob", &n);
    assert_int_equal(n, 2);
    uint8_t *b = malloc(MiB);
    for (int i = 0; i < 30; i++) {
        uint64_t off = trng_below(&r, 3 * MiB + 10);
        size_t k = (size_t)trng_below(&r, MiB), got;
        assert_int_equal(lsm_value_reader_read(rd, off, b, k, &got), LSM_OK);
        size_t want = off < v1.size ? (v1.size - off < k ? (size_t)(v1.size - off) : k) : 0;
        assert_int_equal(got, want);
        if (want)
            assert_memory_equal(b, v1.p + off, want);
    }
    /* Closing the last holder of v1's file deletes it at once. */
    lsm_value_reader_close(rd);
    dir_usage(dir, ".blob", &n);
    assert_int_equal(n, 1);
    check_value(db, "r", &v2, &r);
    /* Plain values, small and in a blob file; an absent key. */
    assert_int_equal(lsm_put(db, "s", 1, "small", 5), LSM_OK);
    trng_fill(&r, b, 200000);
    assert_int_equal(lsm_put(db, "l", 1, b, 200000), LSM_OK);
    assert_int_equal(lsm_flush(db), LSM_OK);
    size_t got;
    uint8_t rb[8];
    assert_int_equal(lsm_value_reader_open(db, "s", 1, &rd), LSM_OK);
    assert_int_equal(lsm_value_reader_read(rd, 1, rb, 8, &got), LSM_OK);
    assert_int_equal(got, 4);
    assert_memory_equal(rb, "mall", 4);
    lsm_value_reader_close(rd);
    assert_int_equal(lsm_value_reader_open(db, "l", 1, &rd), LSM_OK);
    assert_int_equal(lsm_value_reader_size(rd), 200000);
    assert_int_equal(lsm_value_reader_read(rd, 199996, rb, 8, &got), LSM_OK);
    assert_int_equal(got, 4);
    assert_memory_equal(rb, b + 199996, 4);
    lsm_value_reader_close(rd);
    assert_int_equal(lsm_value_reader_open(db, "nope", 4, &rd), LSM_NOTFOUND);
    assert_null(rd);
    lsm_value_reader_close(NULL);
    /* A writer that started from a version whose file then lost its last table gives the file
       back when it aborts. */
    oracle z = { 0 };
    write_dense(db, "z", 0, MiB, 0, &r, &z);
    assert_int_equal(lsm_flush(db), LSM_OK);
    int before;
    dir_usage(dir, ".blob", &before);
    lsm_value_writer *w;
    assert_int_equal(lsm_value_writer_open(db, "z", 1, LSM_VW_KEEP, &w), LSM_OK);
    assert_int_equal(lsm_delete(db, "z", 1), LSM_OK);
    assert_int_equal(lsm_compact(db), LSM_OK);
    dir_usage(dir, ".blob", &n);
    assert_int_equal(n, before);
    lsm_value_writer_abort(w);
    dir_usage(dir, ".blob", &n);
    assert_int_equal(n, before - 1);
    free(b);
    free(v1.p);
    free(v2.p);
    free(z.p);
    assert_int_equal(lsm_close(db), LSM_OK);
    tmpdir_remove(dir);
    free(dir);
}

/* ---- orphans: a writer that never committed leaves no file after the next open ---- */

static void test_orphans(void **state)
{
    char *dir = tmpdir_new("extent");
    lsm_options o;
    small_options(&o);
    lsm_db *db = open_dir(dir, &o);
    trng r;
    trng_seed(&r, 13);
    oracle a = { 0 };
    write_dense(db, "a", 0, 2 * MiB, 0, &r, &a);    /* committed, in the memtable and WAL only */
    assert_int_equal(lsm_close(db), LSM_OK);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        lsm_db *cdb;
        if (lsm_open(dir, &o, &cdb) != LSM_OK)
            _exit(2);
        lsm_value_writer *w;
        uint8_t b[64 * 1024];
        memset(b, 7, sizeof b);
        if (lsm_value_writer_open(cdb, "a", 1, LSM_VW_KEEP, &w) != LSM_OK)
            _exit(3);
        for (int i = 0; i < 32; i++)
            if (lsm_value_writer_write(w, (uint64_t)i * sizeof b, b, sizeof b) != LSM_OK)
                _exit(4);
        if (lsm_value_writer_open(cdb, "c", 1, 0, &w) != LSM_OK ||
            lsm_value_writer_write(w, 0, b, sizeof b) != LSM_OK)
            _exit(5);
        _exit(0);               /* a crash: neither writer committed */
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    int n;
    dir_usage(dir, ".blob", &n);
    assert_int_equal(n, 3);     /* a's, and the two uncommitted writers' */
    db = open_dir(dir, &o);
    dir_usage(dir, ".blob", &n);
    assert_int_equal(n, 1);
    check_value(db, "a", &a, &r);
    uint64_t size;
    assert_int_equal(lsm_get_size(db, "c", 1, &size), LSM_NOTFOUND);
    assert_int_equal(lsm_close(db), LSM_OK);
    free(a.p);
    tmpdir_remove(dir);
    free(dir);
}

/* ---- per-key reuse: a key's appending writers share one blob file ---- */

static void append_commit(lsm_db *db, const char *key, trng *r, oracle *or, size_t n, int sync)
{
    uint8_t line[512];
    lsm_value_writer *w;
    assert_true(n <= sizeof line);
    assert_int_equal(lsm_value_writer_open(db, key, strlen(key), LSM_VW_KEEP, &w), LSM_OK);
    trng_fill(r, line, n);
    assert_int_equal(lsm_value_writer_write(w, or->size, line, n), LSM_OK);
    oracle_write(or, or->size, line, n);
    assert_int_equal(lsm_value_writer_commit(w, sync), LSM_OK);
}

/* Many commits of appends to one key make O(1) blob files and O(1) extents, not one each; an
   uncommitted writer's bytes in the shared file are garbage after a crash, not a reason to
   remove the file; whole rewrites still make files of their own. */
static void test_reuse_appends(void **state)
{
    char *dir = tmpdir_new("extent");
    lsm_options o;
    small_options(&o);
    lsm_db *db = open_dir(dir, &o);
    trng r;
    trng_seed(&r, 43);
    oracle a = { 0 }, b = { 0 };
    write_dense(db, "log", 0, MiB, 0, &r, &a);
    int n0, n;
    dir_usage(dir, ".blob", &n0);
    assert_int_equal(n0, 1);
    const int commits = 600;
    for (int i = 0; i < commits; i++) {
        append_commit(db, "log", &r, &a, 100, i % 50 == 0);
        if (i % 20 == 0)
            append_commit(db, "other", &r, &b, 1 + (size_t)trng_below(&r, 500), 0);
        if (i == 300)
            assert_int_equal(lsm_flush(db), LSM_OK);    /* tables name the file now */
    }
    dir_usage(dir, ".blob", &n);
    size_t ext = map_extents(db, "log");
    print_message("# %d appending commits: %d blob files, %zu extents\n", commits, n, ext);
    assert_true(n <= n0 + 1);                           /* "log"'s and "other"'s */
    /* The first MiB, then the appends: a new extent each EXTENT_COALESCE bytes at most. */
    assert_true(ext <= 2 + (size_t)commits * 100 / EXTENT_COALESCE + 1);
    check_value(db, "log", &a, &r);
    check_value(db, "other", &b, &r);
    assert_int_equal(lsm_compact(db), LSM_OK);
    check_value(db, "log", &a, &r);
    assert_int_equal(lsm_close(db), LSM_OK);

    /* A process that commits appends and then dies with a writer open on the same file. */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        lsm_db *cdb;
        if (lsm_open(dir, &o, &cdb) != LSM_OK)
            _exit(2);
        for (int i = 0; i < 2; i++)     /* the second synced: no WAL buffer holds them */
            append_commit(cdb, "log", &r, &a, 100, i == 1);
        lsm_value_writer *w;
        uint8_t x[4096];
        memset(x, 7, sizeof x);
        if (lsm_value_writer_open(cdb, "log", 3, LSM_VW_KEEP, &w) != LSM_OK ||
            lsm_value_writer_write(w, a.size, x, sizeof x) != LSM_OK)
            _exit(3);
        _exit(0);               /* a crash: the last writer never committed */
    }
    for (int i = 0; i < 2; i++) {   /* what the child committed, in the parent's oracle */
        uint8_t line[100];
        trng_fill(&r, line, sizeof line);
        oracle_write(&a, a.size, line, sizeof line);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    db = open_dir(dir, &o);
    check_value(db, "log", &a, &r);
    int after;
    dir_usage(dir, ".blob", &after);
    assert_true(after >= 1 && after <= n0 + 2);
    /* Appends after a reopen: one new file, then reused again. */
    for (int i = 0; i < 50; i++)
        append_commit(db, "log", &r, &a, 100, i == 49);
    dir_usage(dir, ".blob", &n);
    assert_true(n <= after + 1);
    /* A checkpoint may hard-link the key's file: later appends go to a new file, and the
       checkpoint's files keep their length. */
    char *ck = tmpdir_new("extent-ckpt"), ckdb[4200];
    snprintf(ckdb, sizeof ckdb, "%s/db", ck);
    assert_int_equal(lsm_checkpoint(db, ckdb), LSM_OK);
    uint64_t ck_before = blob_lengths(ckdb);
    assert_true(ck_before > MiB);
    int ck_blobs;
    dir_usage(dir, ".blob", &ck_blobs);
    for (int i = 0; i < 20; i++)
        append_commit(db, "log", &r, &a, 100, i == 19);
    assert_int_equal(blob_lengths(ckdb), ck_before);
    dir_usage(dir, ".blob", &n);
    assert_int_equal(n, ck_blobs + 1);
    check_value(db, "log", &a, &r);
    tmpdir_remove(ck);
    free(ck);
    /* A whole rewrite (no LSM_VW_KEEP) makes its own file, and the old ones go at compaction. */
    write_dense(db, "log", 0, 2 * MiB, 0, &r, &a);
    assert_int_equal(lsm_compact(db), LSM_OK);
    check_value(db, "log", &a, &r);
    assert_int_equal(lsm_close(db), LSM_OK);
    free(a.p);
    free(b.p);
    tmpdir_remove(dir);
    free(dir);
}

/* ---- SIGKILL at random moments of a history of writers ---- */

/* Version v of the value "f": version v - 1 changed by a few writes and maybe a truncate, all
   derived from v alone. */
static void history_step(oracle *o, long v, lsm_value_writer *w)
{
    trng r;
    trng_seed(&r, (uint64_t)v * 7919 + 1);
    static uint8_t b[160 * 1024];
    int n = 1 + (int)trng_below(&r, 5);
    for (int i = 0; i < n; i++) {
        uint64_t off = trng_below(&r, 3 * MiB);
        size_t k = 1 + (size_t)trng_below(&r, sizeof b);
        trng_fill(&r, b, k);
        if (w && lsm_value_writer_write(w, off, b, k) != LSM_OK)
            _exit(7);
        oracle_write(o, off, b, k);
    }
    if (trng_chance(&r, 20)) {
        uint64_t size = trng_below(&r, 3 * MiB);
        if (w && lsm_value_writer_truncate(w, size) != LSM_OK)
            _exit(8);
        oracle_truncate(o, size);
    }
}

static void kill_options(lsm_options *o)
{
    small_options(o);
    o->memtable_bytes = 16 << 10;   /* flushes and compactions all the time */
    o->table_bytes = 8 << 10;
    o->level1_bytes = 32 << 10;
}

static int value_is(lsm_db *db, const char *key, const oracle *o);

static void test_sigkill(void **state)
{
    char *dir = tmpdir_new("extent");
    trng r;
    trng_seed(&r, test_seed("extent_sigkill", 29));
    lsm_options o;
    kill_options(&o);
    long done = 0;              /* the version the database holds */
    oracle cur = { 0 };         /* version `done` */
    lsm_db *first = open_dir(dir, &o);  /* made here: a kill inside the very first open leaves a
                                           directory that open refuses, by design */
    assert_int_equal(lsm_close(first), LSM_OK);
    int rounds = (int)test_scale(12);
    for (int round = 0; round < rounds; round++) {
        int fds[2];
        assert_int_equal(pipe(fds), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            lsm_db *db;
            if (lsm_open(dir, &o, &db) != LSM_OK)
                _exit(2);
            for (long v = done + 1;; v++) {
                lsm_value_writer *w;
                if (lsm_value_writer_open(db, "f", 1, LSM_VW_KEEP, &w) != LSM_OK)
                    _exit(3);
                oracle scratch = { 0 };
                history_step(&scratch, v, w);
                free(scratch.p);
                /* Small plain writes beside it keep flushes and compactions going. */
                char k[16], val[200];
                snprintf(k, sizeof k, "x%ld", v % 50);
                memset(val, 'v', sizeof val);
                if (lsm_put(db, k, strlen(k), val, sizeof val) != LSM_OK)
                    _exit(4);
                if (lsm_value_writer_commit(w, 1) != LSM_OK)
                    _exit(5);
                if (write(fds[1], &v, sizeof v) != sizeof v)
                    _exit(6);
            }
        }
        close(fds[1]);
        struct timespec ts = { 0, (long)(20 + trng_below(&r, 200)) * 1000000L };
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        long acked = done, v;
        while (read(fds[0], &v, sizeof v) == sizeof v)
            acked = v;
        close(fds[0]);
        assert_true(WIFSIGNALED(status));
        /* Versions up to `acked` committed with sync; `acked + 1` may or may not have. */
        for (long x = done + 1; x <= acked; x++)
            history_step(&cur, x, NULL);
        oracle next = { 0 };
        oracle_write(&next, 0, cur.p ? cur.p : (uint8_t *)"", cur.size);
        next.size = cur.size;
        history_step(&next, acked + 1, NULL);
        lsm_options co = o;
        co.background_compaction = 0;   /* no new blob file appears while the files are counted */
        lsm_db *db = open_dir(dir, &co);
        int is_acked = value_is(db, "f", &cur), is_next = value_is(db, "f", &next);
        if (acked == 0 && !is_next) {
            uint64_t sz;
            is_acked = lsm_get_size(db, "f", 1, &sz) == LSM_NOTFOUND;
        }
        if (!is_acked && !is_next)
            fail_msg("round %d: \"f\" is neither version %ld nor %ld", round, acked, acked + 1);
        if (is_next && !is_acked) {
            free(cur.p);
            cur = next;
            done = acked + 1;
        } else {
            free(next.p);
            done = acked;
        }
        /* Every blob file left is live: orphans of the killed writer went at open. */
        lsm_stats st;
        assert_int_equal(lsm_stats_get(db, &st, sizeof st), LSM_OK);
        uint64_t files = 0;
        DIR *d = opendir(dir);
        struct dirent *e;
        while ((e = readdir(d)))
            if (strstr(e->d_name, ".blob")) {
                char path[4096];
                struct stat sb;
                snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
                assert_int_equal(stat(path, &sb), 0);
                files += (uint64_t)sb.st_size;
            }
        closedir(d);
        assert_int_equal(files, st.blob_bytes_live);
        assert_int_equal(lsm_close(db), LSM_OK);
    }
    print_message("# %d kills, %ld versions\n", rounds, done);
    assert_true(done > rounds);
    free(cur.p);
    tmpdir_remove(dir);
    free(dir);
}

/* ---- power loss while writing pieces and while committing ---- */

#define FDB "/db"

static lsm_db *fopen_db(lsm_env *env)
{
    lsm_options o;
    small_options(&o);
    o.env = env;
    lsm_db *db = NULL;
    int rc = lsm_open(FDB, &o, &db);
    if (rc != LSM_OK)
        fail_msg("lsm_open: %s: %s", lsm_strerror(rc), lsm_errmsg(NULL));
    return db;
}

/* Whether key's value equals o exactly. */
static int value_is(lsm_db *db, const char *key, const oracle *o)
{
    void *v = NULL;
    size_t vl = 0;
    int rc = lsm_get(db, key, strlen(key), &v, &vl);
    int same = rc == LSM_OK && vl == o->size && (vl == 0 || memcmp(v, o->p, vl) == 0);
    if (rc == LSM_NOTFOUND && o->size == (uint64_t)-1)
        same = 1;
    free(v);
    return same;
}

static int count_blobs(lsm_env *env)
{
    char **names;
    int n, k = 0;
    assert_int_equal(env->list(env, FDB, &names, &n), 0);
    for (int i = 0; i < n; i++)
        if (strstr(names[i], ".blob"))
            k++;
    env_free_list(names, n);
    return k;
}

static void test_power_loss(void **state)
{
    trng r;
    trng_seed(&r, test_seed("extent_power", 17));
    /* The new version: random rewrites of the old one, including a hole and growth. */
    long steps = 0;
    for (long fail_at = 0;; fail_at += 1 + (steps > 200 ? fail_at / 8 : 0)) {
        lsm_env *env = faultenv_new();
        faultenv_seed(env, trng_next(&r));
        lsm_db *db = fopen_db(env);
        oracle v1 = { 0 }, v2 = { 0 };
        trng wr;
        trng_seed(&wr, 99);
        write_dense(db, "k", 0, 700 * KiB, 0, &wr, &v1);
        oracle_write(&v2, 0, v1.p, v1.size);
        if (fail_at % 3 == 0)
            assert_int_equal(lsm_flush(db), LSM_OK);
        /* From here on, the machine dies after fail_at more mutating calls. */
        faultenv_fail_after(env, fail_at, EIO);
        lsm_value_writer *w;
        int rc = lsm_value_writer_open(db, "k", 1, LSM_VW_KEEP, &w);
        uint8_t b[100 * 1024];
        for (int i = 0; rc == LSM_OK && i < 6; i++) {
            uint64_t off = trng_below(&wr, 900 * KiB);
            size_t n = 1 + (size_t)trng_below(&wr, sizeof b);
            trng_fill(&wr, b, n);
            rc = lsm_value_writer_write(w, off, b, n);
            oracle_write(&v2, off, b, n);
        }
        if (rc == LSM_OK)
            rc = lsm_value_writer_truncate(w, 850 * KiB);
        oracle_truncate(&v2, 850 * KiB);
        if (rc == LSM_OK)
            rc = lsm_value_writer_commit(w, 1);
        else if (w)
            lsm_value_writer_abort(w);
        int committed = rc == LSM_OK;
        /* Power loss: unsynced bytes and directory entries vanish. */
        faultenv_power_loss(env);
        lsm_close(db);
        db = fopen_db(env);
        int old = value_is(db, "k", &v1), new = value_is(db, "k", &v2);
        if (!(old || new))
            fail_msg("fail_at %ld: the value is neither the old nor the new version", fail_at);
        if (committed && !new)
            fail_msg("fail_at %ld: a synced commit was lost", fail_at);
        /* Every blob file left is named: the old version's and the new one's at most. */
        assert_true(count_blobs(env) <= (new ? 2 : 1));
        /* And the database still works. */
        assert_int_equal(lsm_compact(db), LSM_OK);
        assert_true(value_is(db, "k", new ? &v2 : &v1));
        assert_int_equal(lsm_close(db), LSM_OK);
        faultenv_free(env);
        free(v1.p);
        free(v2.p);
        steps++;
        if (committed)
            break;
    }
    print_message("# power loss at %ld points of a writer's life\n", steps);
    assert_true(steps > 5);
}

/* A commit that fails part way (one I/O error, at every possible point in turn; the database is
   then reopened without a power loss, so whatever reached the files stays): the value is the old
   or the new version, and readable. A map that went to the WAL although the commit failed must
   find its blob files at the next open. */

static int write_other_synced(lsm_db *db)
{
    lsm_batch *b = lsm_batch_new();
    lsm_batch_put(b, "other", 5, "x", 1);
    int rc = lsm_write(b ? db : NULL, b, 1);
    lsm_batch_free(b);
    return rc;
}

/* ---- unsynced commits: their files are synced before anything makes their maps durable ---- */

#define UNSYNCED_KEYS 4
#define UNSYNCED_MAX_VERSIONS 64

/* One key's versions since the last one known durable: after a power loss the key holds one of
   them, complete. */
typedef struct key_versions {
    oracle v[UNSYNCED_MAX_VERSIONS];   /* v[0]: durable; v[1..n-1]: written since, maybe lost */
    int n;
} key_versions;

static void kv_push(key_versions *k, const oracle *o)
{
    assert_true(k->n < UNSYNCED_MAX_VERSIONS);
    oracle *d = &k->v[k->n++];
    *d = (oracle){ 0 };
    if (o->size == (uint64_t)-1) {
        d->size = (uint64_t)-1;
    } else {
        oracle_truncate(d, 0);
        if (o->size)
            oracle_write(d, 0, o->p, o->size);
        else
            oracle_truncate(d, 0);
    }
}

/* The newest version became durable: it is the only one left. */
static void kv_settle(key_versions *k)
{
    for (int i = 0; i < k->n - 1; i++)
        free(k->v[i].p);
    k->v[0] = k->v[k->n - 1];
    k->n = 1;
}

static void kv_free(key_versions *k)
{
    for (int i = 0; i < k->n; i++)
        free(k->v[i].p);
    k->n = 0;
}

/* A random model of unsynced commits (writers, some keeping the old value, some starting anew)
   mixed with what makes the WAL durable: synced commits, a synced lsm_write of another key,
   lsm_sync, lsm_flush (a memtable switch and a table), a checkpoint. The machine dies after a
   random number of mutating calls, then the power goes. Each key must then hold one of the
   versions written since its last durable one, complete and readable; where a synced call
   succeeded after an unsynced commit, exactly the newest. */
static void unsynced_round(uint64_t seed, int appends, int *settled_ok)
{
    trng r;
    trng_seed(&r, seed);
    lsm_env *env = faultenv_new();
    faultenv_seed(env, trng_next(&r));
    lsm_db *db = fopen_db(env);
    key_versions kv[UNSYNCED_KEYS];
    oracle cur[UNSYNCED_KEYS];
    for (int k = 0; k < UNSYNCED_KEYS; k++) {
        kv[k].n = 0;
        cur[k] = (oracle){ .size = (uint64_t)-1 };
        kv_push(&kv[k], &cur[k]);
    }
    long die_after = (long)trng_below(&r, 300);
    faultenv_fail_after(env, die_after, EIO);
    int ops = 10 + (int)trng_below(&r, 30), dead = 0;
    uint8_t b[24 * 1024];
    for (int i = 0; i < ops && !dead; i++) {
        int what = (int)trng_below(&r, 100), rc;
        if (what < 70) {
            /* appends: writers keep the value and mostly append short runs, so each commit
               goes to the file the key's last writer left (and coalesces with its extent). */
            int k = (int)trng_below(&r, UNSYNCED_KEYS);
            int keep = trng_below(&r, appends ? 12 : 4) != 0;
            char key[2] = { (char)('a' + k), 0 };
            lsm_value_writer *w = NULL;
            rc = lsm_value_writer_open(db, key, 1, keep ? LSM_VW_KEEP : 0, &w);
            oracle next = { 0 };
            oracle_truncate(&next, 0);
            if (keep && cur[k].size != (uint64_t)-1 && cur[k].size)
                oracle_write(&next, 0, cur[k].p, cur[k].size);
            int pieces = 1 + (int)trng_below(&r, 3);
            for (int j = 0; rc == LSM_OK && j < pieces; j++) {
                uint64_t off = trng_below(&r, appends ? 8 : 3) != 0 && appends ? next.size
                               : trng_below(&r, 3) == 0 ? next.size : trng_below(&r, 160 * KiB);
                size_t n = 1 + (size_t)trng_below(&r, appends && trng_below(&r, 2) ? 300
                                                                                   : sizeof b);
                trng_fill(&r, b, n);
                rc = lsm_value_writer_write(w, off, b, n);
                oracle_write(&next, off, b, n);
            }
            if (rc == LSM_OK && trng_below(&r, appends ? 20 : 5) == 0) {
                uint64_t size = trng_below(&r, 200 * KiB);
                rc = lsm_value_writer_truncate(w, size);
                oracle_truncate(&next, size);
            }
            int sync = trng_below(&r, appends ? 4 : 8) == 0;
            if (rc == LSM_OK) {
                rc = lsm_value_writer_commit(w, sync);
                /* Failed or not, the map may be in the WAL: the version is possible. */
                kv_push(&kv[k], &next);
                free(cur[k].p);
                cur[k] = next;
            } else {
                if (w)
                    lsm_value_writer_abort(w);
                free(next.p);
            }
            if (rc == LSM_OK && sync)
                for (int x = 0; x < UNSYNCED_KEYS; x++)
                    kv_settle(&kv[x]);
        } else {
            if (what < 82) {
                /* A synced write of another key: its WAL sync makes every earlier map durable. */
                lsm_batch *bt = lsm_batch_new();
                lsm_batch_put(bt, "other", 5, "x", 1);
                rc = lsm_write(db, bt, 1);
                lsm_batch_free(bt);
            } else if (what < 90) {
                rc = lsm_sync(db);
            } else if (what < 97) {
                rc = lsm_flush(db);
            } else {
                char dest[64];
                snprintf(dest, sizeof dest, "/ckpt%d", i);
                rc = lsm_checkpoint(db, dest);
            }
            if (rc == LSM_OK && what < 97)
                for (int x = 0; x < UNSYNCED_KEYS; x++)
                    kv_settle(&kv[x]);
        }
        dead = faultenv_mutations(env) > die_after;
    }
    for (int k = 0; k < UNSYNCED_KEYS; k++)
        if (kv[k].n == 1 && kv[k].v[0].size != (uint64_t)-1)
            (*settled_ok)++;
    /* The machine dies (if it has not), the process closes what it can, the power goes. */
    faultenv_fail_after(env, 0, EIO);
    lsm_close(db);
    faultenv_power_loss(env);
    db = fopen_db(env);
    for (int k = 0; k < UNSYNCED_KEYS; k++) {
        char key[2] = { (char)('a' + k), 0 };
        int found = 0;
        for (int j = 0; j < kv[k].n && !found; j++)
            found = value_is(db, key, &kv[k].v[j]);
        if (!found)
            fail_msg("seed %" PRIu64 ": key %s holds none of its %d possible versions (%s)", seed,
                     key, kv[k].n, kv[k].n == 1 ? "a synced call made it durable" : "torn?");
    }
    assert_int_equal(lsm_compact(db), LSM_OK);
    assert_int_equal(lsm_close(db), LSM_OK);
    for (int k = 0; k < UNSYNCED_KEYS; k++) {
        kv_free(&kv[k]);
        free(cur[k].p);
    }
    faultenv_free(env);
}

static void test_unsynced_power_loss(void **state)
{
    uint64_t seed0 = test_seed("extent_unsynced", 31);
    int rounds = (int)test_scale(150), settled = 0;
    for (int i = 0; i < rounds; i++)
        unsynced_round(seed0 + (uint64_t)i, 0, &settled);
    print_message("# %d rounds, %d keys made durable by a later synced call\n", rounds, settled);
    assert_true(settled > rounds / 4);
    (void)state;
}

/* The same with appends committed synced and unsynced into the file each key's last writer left:
   every acknowledged synced commit survives, and no record names bytes a power loss took. */
static void test_reuse_power_loss(void **state)
{
    uint64_t seed0 = test_seed("extent_reuse_power", 41);
    int rounds = (int)test_scale(150), settled = 0;
    for (int i = 0; i < rounds; i++)
        unsynced_round(seed0 + (uint64_t)i, 1, &settled);
    print_message("# %d rounds, %d keys made durable by a later synced call\n", rounds, settled);
    assert_true(settled > rounds / 4);
    (void)state;
}

/* An unsynced commit costs no sync; a synced one, or a synced write after unsynced commits, syncs
   the files those commits left pending, then the directory, then the WAL. */
static void test_unsynced_no_fsync(void **state)
{
    lsm_env *env = faultenv_new();
    lsm_options o;
    options_defaults(&o);
    o.env = env;
    lsm_db *db = NULL;
    assert_int_equal(lsm_open(FDB, &o, &db), LSM_OK);
    trng r;
    trng_seed(&r, 5);
    oracle or = { 0 };
    write_dense(db, "log", 0, 10 * MiB, 0, &r, &or);
    uint8_t line[100];
    const int n = 50;
    long s0 = faultenv_syncs(env);
    for (int i = 0; i < n; i++) {
        lsm_value_writer *w;
        assert_int_equal(lsm_value_writer_open(db, "log", 3, LSM_VW_KEEP, &w), LSM_OK);
        trng_fill(&r, line, sizeof line);
        assert_int_equal(lsm_value_writer_write(w, or.size, line, sizeof line), LSM_OK);
        oracle_write(&or, or.size, line, sizeof line);
        assert_int_equal(lsm_value_writer_commit(w, 0), LSM_OK);
    }
    long s1 = faultenv_syncs(env);
    print_message("# %d unsynced commits: %ld syncs\n", n, s1 - s0);
    assert_int_equal(s1 - s0, 0);
    /* A synced write of another key: the one file the n commits appended to (the key's, which
       write_dense created and synced with its directory), then the WAL. */
    assert_int_equal(write_other_synced(db), LSM_OK);
    long s2 = faultenv_syncs(env);
    print_message("# then a synced write of another key: %ld syncs\n", s2 - s1);
    assert_true(s2 - s1 >= 2 && s2 - s1 <= 3);
    /* A synced commit with nothing pending: its file (the key's again: no directory sync), the
       WAL. */
    lsm_value_writer *w;
    assert_int_equal(lsm_value_writer_open(db, "log", 3, LSM_VW_KEEP, &w), LSM_OK);
    assert_int_equal(lsm_value_writer_write(w, or.size, line, sizeof line), LSM_OK);
    oracle_write(&or, or.size, line, sizeof line);
    assert_int_equal(lsm_value_writer_commit(w, 1), LSM_OK);
    long s3 = faultenv_syncs(env);
    print_message("# a synced commit: %ld syncs\n", s3 - s2);
    assert_true(s3 - s2 >= 2 && s3 - s2 <= 3);
    /* Nothing pending: a synced write syncs the WAL only. */
    assert_int_equal(write_other_synced(db), LSM_OK);
    long s4 = faultenv_syncs(env);
    assert_true(s4 - s3 >= 1 && s4 - s3 <= 2);
    /* And unsynced commits then lsm_sync survive a power loss. */
    for (int i = 0; i < 5; i++) {
        assert_int_equal(lsm_value_writer_open(db, "log", 3, LSM_VW_KEEP, &w), LSM_OK);
        trng_fill(&r, line, sizeof line);
        assert_int_equal(lsm_value_writer_write(w, or.size, line, sizeof line), LSM_OK);
        oracle_write(&or, or.size, line, sizeof line);
        assert_int_equal(lsm_value_writer_commit(w, 0), LSM_OK);
    }
    assert_int_equal(lsm_sync(db), LSM_OK);
    faultenv_power_loss(env);
    faultenv_fail_after(env, 0, EIO);
    lsm_close(db);
    faultenv_clear(env);
    db = fopen_db(env);
    assert_true(value_is(db, "log", &or));
    assert_int_equal(lsm_close(db), LSM_OK);
    free(or.p);
    faultenv_free(env);
    (void)state;
}

/* The OS may write an unsynced WAL record to the disk before the blob file its map names (the
   log is preallocated: its pages need no metadata commit; the new file's entry does). After such
   a power loss recovery drops that record and what follows as a torn tail: the old version. */
static void test_unsynced_wal_first(void **state)
{
    lsm_env *env = faultenv_new();
    lsm_options o;
    small_options(&o);
    o.env = env;
    o.wal_buffer_bytes = 0;     /* each record goes to the env at once */
    lsm_db *db = NULL;
    assert_int_equal(lsm_open(FDB, &o, &db), LSM_OK);
    trng r;
    trng_seed(&r, 8);
    oracle v1 = { 0 }, v2 = { 0 };
    write_dense(db, "k", 0, 300 * KiB, 0, &r, &v1);
    oracle_write(&v2, 0, v1.p, v1.size);
    lsm_value_writer *w;
    uint8_t b[50 * 1024];
    trng_fill(&r, b, sizeof b);
    assert_int_equal(lsm_value_writer_open(db, "k", 1, LSM_VW_KEEP, &w), LSM_OK);
    assert_int_equal(lsm_value_writer_write(w, 280 * KiB, b, sizeof b), LSM_OK);
    oracle_write(&v2, 280 * KiB, b, sizeof b);
    assert_int_equal(lsm_value_writer_commit(w, 0), LSM_OK);
    /* The commit appended to the file the first writer made and synced: the record's map names
       bytes past what is durable of a file that exists. */
    assert_int_equal(count_blobs(env), 1);
    assert_int_equal(lsm_put(db, "after", 5, "x", 1), LSM_OK);
    /* Writeback of the log alone. */
    char **names, newest[64] = "", path[256];
    int n;
    assert_int_equal(env->list(env, FDB, &names, &n), 0);
    for (int i = 0; i < n; i++)     /* numbers are zero-padded: the greatest name is the newest */
        if (strstr(names[i], ".log") && strcmp(names[i], newest) > 0)
            snprintf(newest, sizeof newest, "%s", names[i]);
    env_free_list(names, n);
    assert_true(newest[0] != 0);
    snprintf(path, sizeof path, "%s/%s", FDB, newest);
    lsm_file *f;
    assert_int_equal(env->open(env, path, LSM_O_READ, &f), 0);
    assert_int_equal(env->sync(env, f), 0);
    env->close(env, f);
    faultenv_fail_after(env, 0, EIO);
    lsm_close(db);
    faultenv_power_loss(env);
    db = fopen_db(env);
    assert_true(value_is(db, "k", &v1));
    void *v = NULL;
    size_t vl;
    assert_int_equal(lsm_get(db, "after", 5, &v, &vl), LSM_NOTFOUND);   /* dropped after it */
    assert_int_equal(lsm_compact(db), LSM_OK);
    assert_true(value_is(db, "k", &v1));
    assert_int_equal(lsm_close(db), LSM_OK);
    free(v1.p);
    free(v2.p);
    faultenv_free(env);
    (void)state;
}

static void test_commit_failure(void **state)
{
    long steps = 0;
    for (long fail_at = 0;; fail_at++) {
        lsm_env *env = faultenv_new();
        lsm_db *db = fopen_db(env);
        oracle v1 = { 0 }, v2 = { 0 };
        trng wr;
        trng_seed(&wr, 77);
        write_dense(db, "k", 0, 300 * KiB, 0, &wr, &v1);
        oracle_write(&v2, 0, v1.p, v1.size);
        lsm_value_writer *w;
        assert_int_equal(lsm_value_writer_open(db, "k", 1, LSM_VW_KEEP, &w), LSM_OK);
        uint8_t b[50 * 1024];
        trng_fill(&wr, b, sizeof b);
        assert_int_equal(lsm_value_writer_write(w, 100 * KiB, b, sizeof b), LSM_OK);
        oracle_write(&v2, 100 * KiB, b, sizeof b);
        faultenv_fail_once(env, fail_at, EIO);
        int rc = lsm_value_writer_commit(w, 1);
        faultenv_clear(env);
        lsm_close(db);
        db = fopen_db(env);
        int old = value_is(db, "k", &v1), new = value_is(db, "k", &v2);
        if (!(old || new))
            fail_msg("fail_at %ld: the value is neither version (%s)", fail_at, lsm_errmsg(db));
        if (rc == LSM_OK && !new)
            fail_msg("fail_at %ld: a commit that succeeded was lost", fail_at);
        assert_int_equal(lsm_close(db), LSM_OK);
        faultenv_free(env);
        free(v1.p);
        free(v2.p);
        steps++;
        if (rc == LSM_OK)
            break;
    }
    assert_true(steps > 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic),
        cmocka_unit_test(test_keep_plain),
        cmocka_unit_test(test_model),
        cmocka_unit_test(test_huge_sparse),
        cmocka_unit_test(test_sharing),
        cmocka_unit_test(test_gc),
        cmocka_unit_test(test_gc_defragments),
        cmocka_unit_test(test_snapshot_keeps),
        cmocka_unit_test(test_pins),
        cmocka_unit_test(test_copy_punch),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_reader),
        cmocka_unit_test(test_orphans),
        cmocka_unit_test(test_reuse_appends),
        cmocka_unit_test(test_power_loss),
        cmocka_unit_test(test_sigkill),
        cmocka_unit_test(test_commit_failure),
        cmocka_unit_test(test_unsynced_power_loss),
        cmocka_unit_test(test_reuse_power_loss),
        cmocka_unit_test(test_unsynced_no_fsync),
        cmocka_unit_test(test_unsynced_wal_first),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
