/*
 * test_sst.c — unit tests of sorted string tables (engine/sst.c): round trips of tables from 0 to
 * 100,000 entries under every compression, point lookups through snapshots and tombstones, key
 * versions that straddle blocks (with a check that a lookup touches one block), iteration and
 * seeks, a 10 MiB value, the measured bloom false-positive rate, and damage: every single-byte flip
 * of a small table, truncation, and blocks whose checksum was recomputed over malformed contents.
 * A damaged table may only ever answer LSM_CORRUPT (with the offset in the message) or the right
 * bytes, and must never crash.
 *
 * Tables live in the in-memory fault env, which also injects short and failing writes.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include "bloom.h"
#include "faultenv.h"
#include "sst.h"

/* ---- entries and tables ---- */

typedef struct ent {
    uint8_t *ik;                 /* internal key */
    size_t ikn;
    uint8_t *v;
    size_t vn;
} ent;

typedef struct ents {
    ent *e;
    size_t n, cap;
} ents;

static uint64_t mix(uint64_t x)
{
    x += UINT64_C(0x9E3779B97F4A7C15);
    x = (x ^ (x >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    x = (x ^ (x >> 27)) * UINT64_C(0x94D049BB133111EB);
    return x ^ (x >> 31);
}

static void ents_add(ents *es, const void *uk, size_t ukn, uint64_t seq, int type, const void *v,
                     size_t vn)
{
    if (es->n == es->cap) {
        es->cap = es->cap ? es->cap * 2 : 64;
        es->e = realloc(es->e, es->cap * sizeof(*es->e));
    }
    ent *e = &es->e[es->n++];
    buf k = { 0 };
    ikey_build(&k, uk, ukn, seq, type);
    e->ik = k.p;
    e->ikn = k.len;
    e->v = malloc(vn ? vn : 1);
    if (vn)
        memcpy(e->v, v, vn);
    e->vn = vn;
}

static void ents_free(ents *es)
{
    for (size_t i = 0; i < es->n; i++) {
        free(es->e[i].ik);
        free(es->e[i].v);
    }
    free(es->e);
    memset(es, 0, sizeof(*es));
}

static slice ent_key(const ent *e)
{
    slice s = { e->ik, e->ikn };
    return s;
}

/* db_bench-like: 16-byte decimal keys, 100-byte values half random and half repeated. */
static int bench_key(char *k, uint64_t i)
{
    return snprintf(k, 17, "%016llu", (unsigned long long)i);
}

static void bench_value(uint8_t *v, size_t n, uint64_t i)
{
    for (size_t j = 0; j < n; j++)
        v[j] = j < n / 2 ? (uint8_t)(mix(i * 1000 + j) % 26 + 'a') : v[j - n / 2];
}

/* Entries for keys 0, 2, 4, ... (odd numbers are the missing keys), one version each. */
static void bench_ents(ents *es, size_t n)
{
    char k[17];
    uint8_t v[100];
    for (size_t i = 0; i < n; i++) {
        bench_key(k, 2 * i);
        bench_value(v, sizeof(v), 2 * i);
        ents_add(es, k, 16, 1000000 + i, LSM_TYPE_VALUE, v, sizeof(v));
    }
}

static sst_options opts(int compression, size_t block_bytes, int bits)
{
    sst_options o = {
        .block_bytes = block_bytes,
        .restart_interval = 16,
        .bloom_bits_per_key = bits,
        .compression = compression,
        .compression_level = 1,
    };
    return o;
}

static uint64_t build(lsm_env *env, const char *path, const sst_options *o, const ents *es)
{
    lsm_file *f;
    char err[LSM_ERRLEN];
    assert_int_equal(env->open(env, path, LSM_O_CREATE, &f), 0);
    sst_builder *b = sst_builder_new(env, f, path, o);
    for (size_t i = 0; i < es->n; i++) {
        slice v = { es->e[i].v, es->e[i].vn };
        int rc = sst_builder_add(b, ent_key(&es->e[i]), v, err);
        if (rc)
            fail_msg("add %zu: %s", i, err);
    }
    assert_int_equal(sst_builder_entries(b), es->n);
    uint64_t size = 0;
    int rc = sst_builder_finish(b, &size, err);
    if (rc)
        fail_msg("finish: %s", err);
    assert_int_equal(size, sst_builder_file_size(b));
    sst_builder_free(b);
    uint64_t real;
    assert_int_equal(env->size(env, f, &real), 0);
    assert_int_equal(real, size);
    env->close(env, f);
    return size;
}

static sst *open_ok(lsm_env *env, const char *path, uint64_t size, cache *c)
{
    sst *t = NULL;
    char err[LSM_ERRLEN];
    int rc = sst_open(env, path, size, c, &t, err);
    if (rc)
        fail_msg("open: %s", err);
    return t;
}

static void file_bytes(lsm_env *env, const char *path, uint8_t **p, size_t *n)
{
    lsm_file *f;
    uint64_t size;
    assert_int_equal(env->open(env, path, LSM_O_READ, &f), 0);
    assert_int_equal(env->size(env, f, &size), 0);
    *p = malloc(size ? size : 1);
    *n = (size_t)size;
    assert_int_equal(env_pread_all(env, f, *p, (size_t)size, 0), 0);
    env->close(env, f);
}

/* Where the index block of the table in f (n bytes) starts and how long it is without its
   5-byte trailer, as the footer (the last 56 bytes) says. */
static void footer_index(const uint8_t *f, size_t n, size_t *off, size_t *size)
{
    *off = (size_t)dec_fixed64(f + n - 56 + 16);
    *size = (size_t)dec_fixed64(f + n - 56 + 24);
}

static void file_put(lsm_env *env, const char *path, const void *p, size_t n)
{
    lsm_file *f;
    assert_int_equal(env->open(env, path, LSM_O_CREATE, &f), 0);
    assert_int_equal(env_append_all(env, f, p, n), 0);
    env->close(env, f);
}

/* Looks up every entry's user key at its own sequence and checks the answer. Returns LSM_OK, or
   the first failure's code with its message in err (when tolerate_corrupt). */
static int check_gets(sst *t, const ents *es, int tolerate_corrupt, char *err)
{
    for (size_t i = 0; i < es->n; i++) {
        const ent *e = &es->e[i];
        slice ik = ent_key(e);
        int found = -1, type = -1;
        void *v = NULL;
        size_t vn = 0;
        int rc = sst_get(t, ik.p, ik.n - LSM_TRAILER, ikey_seq(ik), &found, &type, NULL, &v, &vn, err);
        if (rc == LSM_CORRUPT && tolerate_corrupt)
            return rc;
        if (rc)
            fail_msg("get %zu: rc %d: %s", i, rc, err);
        if (!found)
            fail_msg("get %zu: not found", i);
        assert_int_equal(type, ikey_type(ik));
        if (type != LSM_TYPE_DELETE) {
            assert_int_equal(vn, e->vn);
            assert_memory_equal(v, e->v, vn);
            free(v);
        }
    }
    return LSM_OK;
}

/* Full scan compared with es. Returns the iterator's status. */
static int check_scan(sst *t, const ents *es, int tolerate_corrupt, char *err)
{
    iiter *it = sst_iter_new(t);
    size_t i = 0;
    for (iiter_seek_first(it); iiter_valid(it); iiter_next(it), i++) {
        assert_true(i < es->n);
        slice k = iiter_key(it), v = iiter_value(it);
        assert_int_equal(k.n, es->e[i].ikn);
        assert_memory_equal(k.p, es->e[i].ik, k.n);
        assert_int_equal(v.n, es->e[i].vn);
        assert_memory_equal(v.p, es->e[i].v, v.n);
    }
    int rc = iiter_status(it, err);
    iiter_free(it);
    if (rc == LSM_CORRUPT && tolerate_corrupt)
        return rc;
    if (rc)
        fail_msg("scan: %s", err);
    assert_int_equal(i, es->n);
    return LSM_OK;
}

static void expect_not_found(sst *t, const void *uk, size_t n, uint64_t snap)
{
    char err[LSM_ERRLEN];
    int found = -1, type;
    void *v;
    size_t vn;
    int rc = sst_get(t, uk, n, snap, &found, &type, NULL, &v, &vn, err);
    if (rc)
        fail_msg("get: %s", err);
    assert_int_equal(found, 0);
}

/* ---- round trips ---- */

static void test_empty_table(void **state)
{
    (void)state;
    lsm_env *env = faultenv_new();
    ents es = { 0 };
    for (int bits = 0; bits <= 10; bits += 10) {
        sst_options o = opts(LSM_COMPRESSION_NONE, 4096, bits);
        uint64_t size = build(env, "/empty.sst", &o, &es);
        sst *t = open_ok(env, "/empty.sst", size, NULL);
        assert_int_equal(sst_entries(t), 0);
        assert_int_equal(sst_file_size(t), size);
        expect_not_found(t, "a", 1, LSM_MAX_SEQ);
        assert_int_equal(sst_may_contain(t, "a", 1), bits == 0);
        check_scan(t, &es, 0, NULL);
        iiter *it = sst_iter_new(t);
        iiter_seek(it, (slice){ (const uint8_t *)"abcdefghij", 10 });
        assert_false(iiter_valid(it));
        iiter_free(it);
        sst_close(t);
    }
    faultenv_free(env);
}

static void test_single_entry(void **state)
{
    (void)state;
    lsm_env *env = faultenv_new();
    cache *c = cache_new(1 << 20);
    for (int comp = 0; comp <= 2; comp++) {
        ents es = { 0 };
        ents_add(&es, "only", 4, 42, LSM_TYPE_VALUE, "value", 5);
        sst_options o = opts(comp, 4096, 10);
        uint64_t size = build(env, "/one.sst", &o, &es);
        sst *t = open_ok(env, "/one.sst", size, c);
        assert_int_equal(sst_entries(t), 1);
        check_gets(t, &es, 0, NULL);
        check_scan(t, &es, 0, NULL);
        expect_not_found(t, "only", 4, 41);          /* older snapshot: the entry is invisible */
        expect_not_found(t, "onl", 3, LSM_MAX_SEQ);
        expect_not_found(t, "only!", 5, LSM_MAX_SEQ);
        expect_not_found(t, "a", 1, LSM_MAX_SEQ);
        expect_not_found(t, "z", 1, LSM_MAX_SEQ);
        sst_close(t);
        ents_free(&es);
    }
    assert_int_equal(cache_usage(c), 0);               /* close dropped the table's blocks */
    cache_free(c);
    faultenv_free(env);
}

static void big_table(int comp, cache *c)
{
    lsm_env *env = faultenv_new();
    ents es = { 0 };
    size_t n = 100000;
    bench_ents(&es, n);
    sst_options o = opts(comp, 4096, 10);
    uint64_t size = build(env, "/big.sst", &o, &es);
    print_message("# compression %d: %zu entries, %llu bytes\n", comp, n, (unsigned long long)size);
    if (comp != LSM_COMPRESSION_NONE)
        assert_true(size < n * 100);                 /* half of every value repeats */
    sst *t = open_ok(env, "/big.sst", size, c);
    assert_int_equal(sst_entries(t), n);
    check_gets(t, &es, 0, NULL);
    check_gets(t, &es, 0, NULL);                     /* again, from the cache if there is one */
    check_scan(t, &es, 0, NULL);

    /* Missing keys: never found, and the filter turns most away. */
    size_t admitted = 0;
    char k[17];
    for (size_t i = 0; i < n; i++) {
        bench_key(k, 2 * i + 1);
        admitted += (size_t)sst_may_contain(t, k, 16);
        expect_not_found(t, k, 16, LSM_MAX_SEQ);
    }
    double fpr = (double)admitted / (double)n;
    print_message("# bloom false-positive rate on missing keys: %.3f%%\n", fpr * 100);
    assert_true(fpr < 0.02);
    bench_key(k, 2 * n + 10);
    expect_not_found(t, k, 16, LSM_MAX_SEQ);

    /* Seeks to random present and absent keys land on the first entry >= the target. */
    iiter *it = sst_iter_new(t);
    buf target = { 0 };
    for (uint64_t r = 0; r < 20000; r++) {
        uint64_t x = mix(r) % (2 * n + 2);
        bench_key(k, x);
        target.len = 0;
        ikey_build(&target, k, 16, LSM_MAX_SEQ, 0xff);
        iiter_seek(it, (slice){ target.p, target.len });
        size_t want = (size_t)(x + 1) / 2;
        if (want >= n) {
            assert_false(iiter_valid(it));
            continue;
        }
        assert_true(iiter_valid(it));
        slice got = iiter_key(it);
        assert_int_equal(got.n, es.e[want].ikn);
        assert_memory_equal(got.p, es.e[want].ik, got.n);
        /* and the iterator carries on from there */
        for (size_t j = want + 1; j < want + 40 && j < n; j++) {
            iiter_next(it);
            assert_true(iiter_valid(it));
            assert_memory_equal(iiter_key(it).p, es.e[j].ik, es.e[j].ikn);
            assert_int_equal(iiter_value(it).n, 100);
        }
    }
    assert_int_equal(iiter_status(it, NULL), LSM_OK);
    iiter_free(it);
    buf_free(&target);
    sst_close(t);
    if (c)
        assert_int_equal(cache_usage(c), 0);
    ents_free(&es);
    faultenv_free(env);
}

static void test_100k_none_cached(void **state)
{
    (void)state;
    cache *c = cache_new(8 << 20);
    big_table(LSM_COMPRESSION_NONE, c);
    uint64_t hits, misses;
    cache_stats(c, &hits, &misses);
    assert_true(hits > misses);
    cache_free(c);
}

static void test_100k_lz4_small_cache(void **state)
{
    (void)state;
    cache *c = cache_new(64 << 10);
    big_table(LSM_COMPRESSION_LZ4, c);
    cache_free(c);
}

static void test_100k_zstd_no_cache(void **state)
{
    (void)state;
    big_table(LSM_COMPRESSION_ZSTD, NULL);
}

static void test_100k_lz4_cache_zero(void **state)
{
    (void)state;
    cache *c = cache_new(0);
    big_table(LSM_COMPRESSION_LZ4, c);
    cache_free(c);
}

/* ---- versions, snapshots, tombstones, straddling ---- */

/* Newest version of "key" with seq <= snap: versions have seqs 100 down to 1, every 7th a delete. */
static void check_versions(sst *t, cache *c, int check_one_block)
{
    char err[LSM_ERRLEN];
    for (uint64_t snap = 0; snap <= 120; snap++) {
        uint64_t h0, m0, h1, m1;
        cache_stats(c, &h0, &m0);
        int found = -1, type = -1;
        void *v = NULL;
        size_t vn = 0;
        int rc = sst_get(t, "key", 3, snap, &found, &type, NULL, &v, &vn, err);
        if (rc)
            fail_msg("get @%llu: %s", (unsigned long long)snap, err);
        cache_stats(c, &h1, &m1);
        if (check_one_block)
            assert_true((h1 + m1) - (h0 + m0) <= 1);
        uint64_t want = snap > 100 ? 100 : snap;
        if (want == 0) {
            assert_int_equal(found, 0);
            continue;
        }
        assert_int_equal(found, 1);
        if (want % 7 == 0) {
            assert_int_equal(type, LSM_TYPE_DELETE);
            continue;
        }
        assert_int_equal(type, LSM_TYPE_VALUE);
        char expect[64];
        int n = snprintf(expect, sizeof(expect), "value of key at seq %03llu", (unsigned long long)want);
        assert_int_equal(vn, (size_t)n);
        assert_memory_equal(v, expect, vn);
        free(v);
    }
}

static void versions_ents(ents *es)
{
    ents_add(es, "ke", 2, 500, LSM_TYPE_VALUE, "before", 6);
    for (uint64_t s = 100; s >= 1; s--) {
        char v[64];
        int n = snprintf(v, sizeof(v), "value of key at seq %03llu", (unsigned long long)s);
        ents_add(es, "key", 3, s, s % 7 == 0 ? LSM_TYPE_DELETE : LSM_TYPE_VALUE, v,
                 s % 7 == 0 ? 0 : (size_t)n);
    }
    ents_add(es, "key\0", 4, 7, LSM_TYPE_VALUE, "nul", 3);
    ents_add(es, "kez", 3, 1, LSM_TYPE_BLOB, "blobref", 7);
}

static void test_versions_straddle_blocks(void **state)
{
    (void)state;
    lsm_env *env = faultenv_new();
    static const size_t blocks[] = { 1, 64, 100, 333, 4096 };
    for (size_t bi = 0; bi < sizeof(blocks) / sizeof(blocks[0]); bi++) {
        for (int comp = 0; comp <= 2; comp++) {
            ents es = { 0 };
            versions_ents(&es);
            sst_options o = opts(comp, blocks[bi], bi % 2 ? 10 : 0);
            o.restart_interval = 1 + (int)bi * 3;
            uint64_t size = build(env, "/v.sst", &o, &es);
            cache *c = cache_new(1 << 20);
            sst *t = open_ok(env, "/v.sst", size, c);
            check_versions(t, c, 1);
            check_gets(t, &es, 0, NULL);
            check_scan(t, &es, 0, NULL);
            expect_not_found(t, "k", 1, LSM_MAX_SEQ);
            expect_not_found(t, "ke", 2, 499);
            expect_not_found(t, "key\0", 4, 6);
            expect_not_found(t, "kez\0", 4, LSM_MAX_SEQ);

            /* Seek to every version at every snapshot lands on the newest visible one. */
            iiter *it = sst_iter_new(t);
            buf target = { 0 };
            for (uint64_t snap = 1; snap <= 100; snap++) {
                target.len = 0;
                ikey_build(&target, "key", 3, snap, 0xff);
                iiter_seek(it, (slice){ target.p, target.len });
                assert_true(iiter_valid(it));
                assert_int_equal(ikey_seq(iiter_key(it)), snap);
            }
            iiter_free(it);
            buf_free(&target);
            sst_close(t);
            cache_free(c);
            ents_free(&es);
        }
    }
    faultenv_free(env);
}

static void test_huge_value(void **state)
{
    (void)state;
    lsm_env *env = faultenv_new();
    size_t big = 10 << 20;
    uint8_t *rnd = malloc(big), *rep = malloc(big);
    for (size_t i = 0; i < big; i += 8) {
        uint64_t x = mix(i);
        memcpy(rnd + i, &x, 8);
    }
    for (size_t i = 0; i < big; i++)
        rep[i] = (uint8_t)("0123456789abcdef"[i % 16] + (i >> 20));
    for (int comp = 0; comp <= 2; comp++) {
        ents es = { 0 };
        ents_add(&es, "a", 1, 1, LSM_TYPE_VALUE, "small", 5);
        ents_add(&es, "b-random", 8, 2, LSM_TYPE_VALUE, rnd, big);
        ents_add(&es, "c", 1, 3, LSM_TYPE_VALUE, "small", 5);
        ents_add(&es, "d-repeating", 11, 4, LSM_TYPE_VALUE, rep, big);
        ents_add(&es, "e", 1, 5, LSM_TYPE_VALUE, "", 0);
        sst_options o = opts(comp, 4096, 10);
        uint64_t size = build(env, "/huge.sst", &o, &es);
        if (comp)
            assert_true(size < 2 * big);             /* the repeating one compressed */
        else
            assert_true(size > 2 * big);
        cache *c = cache_new(1 << 20);               /* smaller than one block: never retained */
        sst *t = open_ok(env, "/huge.sst", size, c);
        check_gets(t, &es, 0, NULL);
        check_scan(t, &es, 0, NULL);
        sst_close(t);
        assert_int_equal(cache_usage(c), 0);
        cache_free(c);
        ents_free(&es);
    }
    free(rnd);
    free(rep);
    faultenv_free(env);
}

static void test_long_keys(void **state)
{
    (void)state;
    lsm_env *env = faultenv_new();
    ents es = { 0 };
    uint8_t *k = malloc(LSM_MAX_KEY);
    /* Keys of 0xff bytes, each a prefix of the next (so no separator can be shortened), around and
       far beyond the cursor's inline key buffer, up to the longest key allowed. */
    static const size_t lens[] = { 1, 100, 119, 120, 121, 200, 1000, 30000, LSM_MAX_KEY };
    memset(k, 0xff, LSM_MAX_KEY);
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++)
        ents_add(&es, k, lens[i], 9, LSM_TYPE_VALUE, &i, sizeof(i));
    sst_options o = opts(LSM_COMPRESSION_LZ4, 512, 10);
    o.restart_interval = 2;
    uint64_t size = build(env, "/long.sst", &o, &es);
    sst *t = open_ok(env, "/long.sst", size, NULL);
    check_gets(t, &es, 0, NULL);
    check_scan(t, &es, 0, NULL);
    sst_close(t);
    ents_free(&es);
    free(k);
    faultenv_free(env);
}

/* The index search (sst.c): a probe compares 8-byte windows of the block separators taken after
   the prefix all of them share, first over one window per group of 8 blocks, then inside the
   group; only a tie reads a separator in full. Here tables of 1 to 3000 blocks (so every shape of
   the last group) hold keys whose windows tie in runs of 50, and every key present is found while
   every key between two of them, before the first and after the last is not. */
static void test_index_groups(void **state)
{
    (void)state;
    lsm_env *env = faultenv_new();
    static const size_t counts[] = { 1, 2, 3, 8, 9, 10, 16, 17, 63, 64, 65, 200, 1001, 3000 };
    for (size_t c = 0; c < sizeof(counts) / sizeof(counts[0]); c++) {
        size_t n = counts[c];
        ents es = { 0 };
        char k[64];
        for (size_t i = 0; i < n; i++) {
            int kn = snprintf(k, sizeof k, "p%03zuSAMESAMESAMESAME%05zu", i / 50, i);
            ents_add(&es, k, (size_t)kn, 7, LSM_TYPE_VALUE, &i, sizeof(i));
        }
        sst_options o = opts(LSM_COMPRESSION_NONE, 64, 10);  /* one entry per block */
        char path[32];
        snprintf(path, sizeof path, "/groups%zu.sst", n);
        uint64_t size = build(env, path, &o, &es);
        sst *t = open_ok(env, path, size, NULL);
        check_gets(t, &es, 0, NULL);
        for (size_t i = 0; i < n; i++) {
            int kn = snprintf(k, sizeof k, "p%03zuSAMESAMESAMESAME%05zu+", i / 50, i);
            expect_not_found(t, k, (size_t)kn, 9);                  /* just after key i */
        }
        expect_not_found(t, "p", 1, 9);
        expect_not_found(t, "p000SAMESAMESAMESAMD", 20, 9);
        expect_not_found(t, "q", 1, 9);
        expect_not_found(t, "p999", 4, 9);
        check_scan(t, &es, 0, NULL);
        sst_close(t);
        ents_free(&es);
    }
    faultenv_free(env);
}

/* Restart points in data blocks: a writer restarts after 16 entries, or after 8 once those span
   an eighth of block_bytes. Decodes every data block of tables whose entries are about 115, 55
   and 17 bytes long and checks each interval (but a block's last) against that rule, and that
   with entries of 32 bytes or more a 4 KiB block keeps to 8 restarts, as many as a lookup finds
   without reading the block's tail. */
static void test_restart_spacing(void **state)
{
    (void)state;
    lsm_env *env = faultenv_new();
    static const size_t vsizes[] = { 100, 40, 4 };
    for (size_t vi = 0; vi < sizeof(vsizes) / sizeof(vsizes[0]); vi++) {
        ents es = { 0 };
        char k[17];
        uint8_t v[100];
        for (size_t i = 0; i < 3000; i++) {
            bench_key(k, i);
            bench_value(v, vsizes[vi], i);
            ents_add(&es, k, 16, 1000 + i, LSM_TYPE_VALUE, v, vsizes[vi]);
        }
        sst_options o = opts(LSM_COMPRESSION_NONE, 4096, 10);
        uint64_t size = build(env, "/rs.sst", &o, &es);
        sst *t = open_ok(env, "/rs.sst", size, NULL);
        check_gets(t, &es, 0, NULL);
        sst_close(t);

        uint8_t *f;
        size_t n;
        file_bytes(env, "/rs.sst", &f, &n);
        size_t ioff, isize;
        footer_index(f, n, &ioff, &isize);
        const uint8_t *ix = f + ioff;
        const uint8_t *ip = ix, *iend = ix + isize - 4 - 4 * (size_t)dec_fixed32(ix + isize - 4);
        size_t blocks = 0, entries = 0, intervals = 0, early = 0, max_restarts = 0;
        while (ip < iend) {
            uint64_t shared, non, vlen, boff, bsize;
            ip = dec_varint(ip, iend, &shared);
            ip = dec_varint(ip, iend, &non);
            ip = dec_varint(ip, iend, &vlen);
            assert_non_null(ip);
            const uint8_t *hv = ip + non;
            assert_non_null(dec_varint(dec_varint(hv, hv + vlen, &boff), hv + vlen, &bsize));
            ip = hv + vlen;
            const uint8_t *b = f + boff;
            uint32_t nr = dec_fixed32(b + bsize - 4);
            size_t limit = (size_t)bsize - 4 - 4 * (size_t)nr;
            if (nr > max_restarts)
                max_restarts = nr;
            for (uint32_t r = 0; r < nr; r++) {
                size_t from = dec_fixed32(b + limit + 4 * (size_t)r);
                size_t to = r + 1 < nr ? dec_fixed32(b + limit + 4 * (size_t)(r + 1)) : limit;
                /* Walk the interval; the rule says where its first restart-worthy entry ends it. */
                size_t count = 0, want_end = 0;
                const uint8_t *q = b + from;
                while (q < b + to) {
                    uint64_t sh, nn, vl;
                    q = dec_varint(q, b + to, &sh);
                    q = dec_varint(q, b + to, &nn);
                    q = dec_varint(q, b + to, &vl);
                    assert_non_null(q);
                    assert_true(count > 0 || sh == 0);
                    q += nn + vl;
                    count++;
                    if (!want_end && (count == 16 || (count >= 8 && (size_t)(q - b) - from >= 512)))
                        want_end = count;
                }
                entries += count;
                if (r + 1 < nr) {
                    intervals++;
                    if (want_end != count)
                        fail_msg("value size %zu, block at %llu, interval %u: %zu entries, where "
                                 "the rule ends it after %zu (0: not yet)", vsizes[vi],
                                 (unsigned long long)boff, r, count, want_end);
                    early += count < 16;
                }
            }
            blocks++;
        }
        assert_int_equal(entries, es.n);
        assert_true(blocks > 10 && intervals > 30);
        if (vsizes[vi] == 100) {
            assert_int_equal(early, intervals);     /* every 8 entries */
            assert_true(max_restarts <= 8);
        } else if (vsizes[vi] == 40) {
            assert_true(early > 0);
            assert_true(max_restarts <= 8);
        } else {
            assert_int_equal(early, 0);             /* small entries: every 16 */
        }
        free(f);
        ents_free(&es);
    }
    faultenv_free(env);
}

/* ---- builder misuse and write failures ---- */

static void test_builder_errors(void **state)
{
    (void)state;
    lsm_env *env = faultenv_new();
    char err[LSM_ERRLEN];
    lsm_file *f;
    assert_int_equal(env->open(env, "/e.sst", LSM_O_CREATE, &f), 0);
    sst_options o = opts(LSM_COMPRESSION_NONE, 4096, 10);
    sst_builder *b = sst_builder_new(env, f, "/e.sst", &o);
    buf k1 = { 0 }, k2 = { 0 };
    ikey_build(&k1, "b", 1, 5, LSM_TYPE_VALUE);
    ikey_build(&k2, "a", 1, 5, LSM_TYPE_VALUE);
    slice v = { (const uint8_t *)"v", 1 };
    assert_int_equal(sst_builder_add(b, (slice){ k1.p, k1.len }, v, err), LSM_OK);
    assert_int_equal(sst_builder_add(b, (slice){ k1.p, k1.len }, v, err), LSM_INVALID);
    assert_int_equal(sst_builder_add(b, (slice){ k2.p, k2.len }, v, err), LSM_INVALID);
    assert_int_equal(sst_builder_add(b, (slice){ k2.p, 3 }, v, err), LSM_INVALID);
    assert_int_equal(sst_builder_entries(b), 1);    /* misuse changed nothing */
    uint64_t size;
    assert_int_equal(sst_builder_finish(b, &size, err), LSM_OK);
    sst_builder_free(b);
    env->close(env, f);
    sst *t = open_ok(env, "/e.sst", size, NULL);
    assert_int_equal(sst_entries(t), 1);
    sst_close(t);
    sst_builder_free(NULL);
    sst_close(NULL);

    /* A failing disk: the error sticks and names the file, whichever write meets it. */
    ents es = { 0 };
    bench_ents(&es, 5000);
    long m0 = faultenv_mutations(env);
    size = build(env, "/count.sst", &o, &es);
    long writes = faultenv_mutations(env) - m0;
    assert_true(writes >= 2);
    for (long after = 0; after < writes - 1; after += writes / 12 + 1) {
        assert_int_equal(env->open(env, "/fail.sst", LSM_O_CREATE, &f), 0);
        faultenv_fail_after(env, after, ENOSPC);
        b = sst_builder_new(env, f, "/fail.sst", &o);
        int rc = LSM_OK;
        for (size_t i = 0; i < es.n && rc == LSM_OK; i++)
            rc = sst_builder_add(b, ent_key(&es.e[i]), (slice){ es.e[i].v, es.e[i].vn }, err);
        if (rc == LSM_OK)
            rc = sst_builder_finish(b, &size, err);
        assert_int_equal(rc, LSM_NOSPACE);
        assert_non_null(strstr(err, "/fail.sst"));
        err[0] = 0;
        assert_int_equal(sst_builder_finish(b, &size, err), LSM_NOSPACE);
        assert_non_null(strstr(err, "/fail.sst"));
        sst_builder_free(b);
        faultenv_clear(env);
        env->close(env, f);
    }

    /* Short writes are retried: the table is whole. */
    faultenv_short_writes(env, 1);
    size = build(env, "/short.sst", &o, &es);
    faultenv_short_writes(env, 0);
    t = open_ok(env, "/short.sst", size, NULL);
    check_gets(t, &es, 0, NULL);
    sst_close(t);
    ents_free(&es);
    buf_free(&k1);
    buf_free(&k2);
    faultenv_free(env);
}

/* ---- damage ---- */

static void assert_corrupt_msg(const char *err, const char *path)
{
    if (!strstr(err, path) || !strstr(err, ": offset "))
        fail_msg("message without path and offset: %s", err);
}

static void small_ents(ents *es)
{
    for (int i = 0; i < 30; i++) {
        char k[16], v[64];
        int kn = snprintf(k, sizeof(k), "key%03d", i);
        int vn = snprintf(v, sizeof(v), "value-%d-%.*s", i, i, "abcdefghijklmnopqrstuvwxyzabcdefgh");
        ents_add(es, k, (size_t)kn, 100 + (uint64_t)i, i % 5 == 4 ? LSM_TYPE_DELETE : LSM_TYPE_VALUE,
                 v, i % 5 == 4 ? 0 : (size_t)vn);
    }
}

static void flip_every_byte(int comp)
{
    lsm_env *env = faultenv_new();
    ents es = { 0 };
    small_ents(&es);
    sst_options o = opts(comp, 150, 10);
    o.restart_interval = 3;
    const char *path = "/flip.sst";
    uint64_t size = build(env, path, &o, &es);
    cache *c = cache_new(1 << 20);
    char err[LSM_ERRLEN];
    size_t at_open = 0, at_read = 0;
    for (uint64_t off = 0; off < size; off++) {
        assert_int_equal(faultenv_corrupt(env, path, off), 0);
        sst *t = NULL;
        int rc = sst_open(env, path, size, c, &t, err);
        if (rc) {
            assert_int_equal(rc, LSM_CORRUPT);
            assert_corrupt_msg(err, path);
            at_open++;
        } else {
            int g = check_gets(t, &es, 1, err);
            if (g)
                assert_corrupt_msg(err, path);
            int s = check_scan(t, &es, 1, err);
            if (s)
                assert_corrupt_msg(err, path);
            /* Every byte is under a checksum or is the magic: a flip never goes unnoticed. */
            if (!g && !s)
                fail_msg("flip at offset %llu of %llu went unnoticed", (unsigned long long)off,
                         (unsigned long long)size);
            at_read++;
            sst_close(t);
        }
        assert_int_equal(faultenv_corrupt(env, path, off), 0);
    }
    print_message("# compression %d: %llu flips: %zu caught at open, %zu at read\n", comp,
                  (unsigned long long)size, at_open, at_read);
    assert_true(at_read > 0 && at_open > 0);
    assert_int_equal(cache_usage(c), 0);
    cache_free(c);

    /* The pristine table still reads back. */
    sst *t = open_ok(env, path, size, NULL);
    check_gets(t, &es, 0, NULL);
    check_scan(t, &es, 0, NULL);
    sst_close(t);
    ents_free(&es);
    faultenv_free(env);
}

static void test_flip_every_byte_none(void **state)
{
    (void)state;
    flip_every_byte(LSM_COMPRESSION_NONE);
}

static void test_flip_every_byte_lz4(void **state)
{
    (void)state;
    flip_every_byte(LSM_COMPRESSION_LZ4);
}

static void test_flip_every_byte_zstd(void **state)
{
    (void)state;
    flip_every_byte(LSM_COMPRESSION_ZSTD);
}

static void test_corruption_messages(void **state)
{
    (void)state;
    lsm_env *env = faultenv_new();
    ents es = { 0 };
    small_ents(&es);
    sst_options o = opts(LSM_COMPRESSION_NONE, 150, 10);
    const char *path = "/msg.sst";
    uint64_t size = build(env, path, &o, &es);
    char err[LSM_ERRLEN];
    sst *t;

    /* A value byte of the first data block (offset 0): the block checksum catches it on read. */
    assert_int_equal(faultenv_corrupt(env, path, 20), 0);
    t = open_ok(env, path, size, NULL);
    assert_int_equal(check_gets(t, &es, 1, err), LSM_CORRUPT);
    assert_string_equal(err, "/msg.sst: offset 0: block checksum mismatch");
    assert_int_equal(check_scan(t, &es, 1, err), LSM_CORRUPT);
    assert_string_equal(err, "/msg.sst: offset 0: block checksum mismatch");
    sst_close(t);
    faultenv_corrupt(env, path, 20);

    /* Footer: magic, then checksum. */
    assert_int_equal(faultenv_corrupt(env, path, size - 1), 0);
    assert_int_equal(sst_open(env, path, size, NULL, &t, err), LSM_CORRUPT);
    assert_null(t);
    char want[200];
    snprintf(want, sizeof(want), "/msg.sst: offset %llu: bad magic number (not a table)",
             (unsigned long long)size - 8);
    assert_string_equal(err, want);
    faultenv_corrupt(env, path, size - 1);
    assert_int_equal(faultenv_corrupt(env, path, size - 30), 0);
    assert_int_equal(sst_open(env, path, size, NULL, &t, err), LSM_CORRUPT);
    snprintf(want, sizeof(want), "/msg.sst: offset %llu: footer checksum mismatch",
             (unsigned long long)size - 56);
    assert_string_equal(err, want);
    faultenv_corrupt(env, path, size - 30);

    /* The index block sits just before the footer. */
    assert_int_equal(faultenv_corrupt(env, path, size - 56 - 6), 0);
    assert_int_equal(sst_open(env, path, size, NULL, &t, err), LSM_CORRUPT);
    assert_non_null(strstr(err, "block checksum mismatch"));
    faultenv_corrupt(env, path, size - 56 - 6);

    /* A future format version with a valid checksum. */
    uint8_t *p;
    size_t n;
    file_bytes(env, path, &p, &n);
    enc_fixed32(p + n - 16, 2);
    enc_fixed32(p + n - 12, checksum32(p + n - 56, 44));
    file_put(env, "/v2.sst", p, n);
    assert_int_equal(sst_open(env, "/v2.sst", n, NULL, &t, err), LSM_CORRUPT);
    snprintf(want, sizeof(want), "/v2.sst: offset %llu: unsupported table format version",
             (unsigned long long)n - 16);
    assert_string_equal(err, want);
    free(p);

    /* Not there at all. */
    assert_int_equal(sst_open(env, "/missing.sst", size, NULL, &t, err), LSM_IOERR);
    assert_non_null(strstr(err, "/missing.sst"));
    ents_free(&es);
    faultenv_free(env);
}

static void test_truncated(void **state)
{
    (void)state;
    lsm_env *env = faultenv_new();
    ents es = { 0 };
    small_ents(&es);
    sst_options o = opts(LSM_COMPRESSION_LZ4, 150, 10);
    uint64_t size = build(env, "/t.sst", &o, &es);
    uint8_t *p;
    size_t n;
    file_bytes(env, "/t.sst", &p, &n);
    char err[LSM_ERRLEN];
    for (size_t cut = 0; cut < n; cut += (cut < 70 || cut > n - 70) ? 1 : 13) {
        file_put(env, "/cut.sst", p, cut);
        sst *t = NULL;
        /* Believing the manifest's size: the footer is past the end. */
        assert_int_equal(sst_open(env, "/cut.sst", size, NULL, &t, err), LSM_CORRUPT);
        assert_corrupt_msg(err, "/cut.sst");
        assert_non_null(strstr(err, "truncated"));
        /* Believing the file's size: no footer where it should be. */
        assert_int_equal(sst_open(env, "/cut.sst", cut, NULL, &t, err), LSM_CORRUPT);
        assert_corrupt_msg(err, "/cut.sst");
        assert_null(t);
    }
    free(p);
    ents_free(&es);
    faultenv_free(env);
}

/* Blocks whose checksum is recomputed after damage, as a buggy writer or a malicious file would
   produce: parsing must stay within bounds and answer CORRUPT or (possibly wrong) data. */
static void test_malformed_blocks_with_valid_checksums(void **state)
{
    (void)state;
    lsm_env *env = faultenv_new();
    for (int comp = 0; comp <= 2; comp++) {
        ents es = { 0 };
        small_ents(&es);
        /* One data block and no filter: the block is [0, index_off - 5). */
        sst_options o = opts(comp, 1 << 20, 0);
        o.restart_interval = 4;
        uint64_t size = build(env, "/m.sst", &o, &es);
        uint8_t *orig;
        size_t n;
        file_bytes(env, "/m.sst", &orig, &n);
        assert_int_equal(n, size);
        size_t ioff, isize;
        footer_index(orig, n, &ioff, &isize);
        size_t blk = ioff - 5;
        uint8_t *p = malloc(n);
        char err[LSM_ERRLEN];
        size_t corrupt = 0, ok = 0;
        for (uint64_t trial = 0; trial < 3000; trial++) {
            memcpy(p, orig, n);
            uint64_t r = mix(trial + 77 * (uint64_t)comp);
            int flips = 1 + (int)(r % 3);
            for (int j = 0; j < flips; j++) {
                uint64_t x = mix(r + (uint64_t)j);
                /* Aim often at the restart array at the end of an uncompressed block. */
                size_t at = comp == 0 && (x & 1) ? blk - 1 - (size_t)((x >> 8) % 24)
                                                 : (size_t)((x >> 8) % blk);
                p[at] = (x >> 40) & 1 ? (uint8_t)(x >> 48) : p[at] ^ (uint8_t)(1u << ((x >> 56) & 7));
            }
            enc_fixed32(p + blk + 1, checksum32(p, blk + 1));
            file_put(env, "/m2.sst", p, n);
            sst *t = NULL;
            assert_int_equal(sst_open(env, "/m2.sst", n, NULL, &t, err), LSM_OK);
            int bad = 0;
            for (size_t i = 0; i < es.n; i++) {
                slice ik = ent_key(&es.e[i]);
                int found, type;
                void *v = NULL;
                size_t vn;
                int rc = sst_get(t, ik.p, ik.n - 8, LSM_MAX_SEQ, &found, &type, NULL, &v, &vn, err);
                assert_true(rc == LSM_OK || rc == LSM_CORRUPT);
                if (rc == LSM_OK && found && type != LSM_TYPE_DELETE)
                    free(v);
                bad |= rc != LSM_OK;
            }
            iiter *it = sst_iter_new(t);
            size_t steps = 0;
            volatile uint8_t sink = 0;
            for (iiter_seek_first(it); iiter_valid(it) && steps < 1000; iiter_next(it), steps++) {
                slice k = iiter_key(it), v = iiter_value(it);
                assert_true(k.n >= 8);
                sink ^= k.p[0] ^ k.p[k.n - 1];          /* ASan checks both ends are in bounds */
                if (v.n)
                    sink ^= v.p[0] ^ v.p[v.n - 1];
            }
            (void)sink;
            int rc = iiter_status(it, err);
            assert_true(rc == LSM_OK || rc == LSM_CORRUPT);
            iiter_seek(it, ent_key(&es.e[13]));
            iiter_free(it);
            bad |= rc != LSM_OK;
            if (bad) {
                assert_corrupt_msg(err, "/m2.sst");
                corrupt++;
            } else {
                ok++;
            }
            sst_close(t);
        }
        print_message("# compression %d: 3000 malformed blocks: %zu reported corrupt, %zu read\n",
                      comp, corrupt, ok);
        assert_true(corrupt > 0);

        /* A restart count far beyond the block. */
        if (comp == 0) {
            memcpy(p, orig, n);
            enc_fixed32(p + blk - 4, 0xffffffffu);
            enc_fixed32(p + blk + 1, checksum32(p, blk + 1));
            file_put(env, "/m2.sst", p, n);
            sst *t = open_ok(env, "/m2.sst", n, NULL);
            assert_int_equal(check_gets(t, &es, 1, err), LSM_CORRUPT);
            assert_string_equal(err, "/m2.sst: offset 0: malformed block");
            sst_close(t);
        }
        free(p);
        free(orig);
        ents_free(&es);
    }
    faultenv_free(env);
}

/* The index is checked once at open and trusted afterwards, so a malformed index with a valid
   checksum must be refused there or be harmless. */
static void test_malformed_index_with_valid_checksum(void **state)
{
    (void)state;
    lsm_env *env = faultenv_new();
    ents es = { 0 };
    small_ents(&es);
    sst_options o = opts(LSM_COMPRESSION_NONE, 100, 10);
    uint64_t size = build(env, "/i.sst", &o, &es);
    uint8_t *orig;
    size_t n;
    file_bytes(env, "/i.sst", &orig, &n);
    assert_int_equal(n, size);
    size_t ioff, isize;
    footer_index(orig, n, &ioff, &isize);
    uint8_t *p = malloc(n);
    char err[LSM_ERRLEN];
    size_t refused = 0, opened = 0;
    for (uint64_t trial = 0; trial < 3000; trial++) {
        memcpy(p, orig, n);
        uint64_t r = mix(trial * 31 + 5);
        for (int j = 0; j < 1 + (int)(r % 2); j++) {
            uint64_t x = mix(r + (uint64_t)j);
            size_t at = ioff + (size_t)((x >> 8) % isize);
            p[at] = (x >> 40) & 1 ? (uint8_t)(x >> 48) : p[at] ^ (uint8_t)(1u << ((x >> 56) & 7));
        }
        enc_fixed32(p + ioff + isize + 1, checksum32(p + ioff, isize + 1));
        file_put(env, "/i2.sst", p, n);
        sst *t = NULL;
        int rc = sst_open(env, "/i2.sst", n, NULL, &t, err);
        if (rc) {
            assert_int_equal(rc, LSM_CORRUPT);
            assert_corrupt_msg(err, "/i2.sst");
            refused++;
            continue;
        }
        opened++;
        for (size_t i = 0; i < es.n; i++) {
            slice ik = ent_key(&es.e[i]);
            int found, type;
            void *v = NULL;
            size_t vn;
            rc = sst_get(t, ik.p, ik.n - 8, LSM_MAX_SEQ, &found, &type, NULL, &v, &vn, err);
            assert_true(rc == LSM_OK || rc == LSM_CORRUPT);
            if (rc == LSM_OK && found && type != LSM_TYPE_DELETE)
                free(v);
        }
        iiter *it = sst_iter_new(t);
        size_t steps = 0;
        for (iiter_seek_first(it); iiter_valid(it) && steps < 1000; iiter_next(it))
            steps++;
        rc = iiter_status(it, err);
        assert_true(rc == LSM_OK || rc == LSM_CORRUPT);
        iiter_free(it);
        sst_close(t);
    }
    print_message("# 3000 malformed index blocks: %zu refused at open, %zu opened\n", refused, opened);
    assert_true(refused > 0);

    /* Two index entries swapped in order: refused by name. */
    memcpy(p, orig, n);
    uint32_t nr = dec_fixed32(p + ioff + isize - 4);
    assert_true(nr >= 2);
    size_t r0 = dec_fixed32(p + ioff + isize - 4 - 4 * nr), r1 = dec_fixed32(p + ioff + isize - 4 * nr);
    size_t r2 = nr > 2 ? dec_fixed32(p + ioff + isize - 4 * nr + 4) : isize - 4 - 4 * nr;
    uint8_t *tmp = malloc(isize);
    memcpy(tmp, p + ioff + r1, r2 - r1);
    memcpy(tmp + (r2 - r1), p + ioff + r0, r1 - r0);
    memcpy(p + ioff, tmp, r2 - r0);
    enc_fixed32(p + ioff + isize - 4 * nr, (uint32_t)(r2 - r1));
    enc_fixed32(p + ioff + isize + 1, checksum32(p + ioff, isize + 1));
    file_put(env, "/i2.sst", p, n);
    sst *t = NULL;
    assert_int_equal(sst_open(env, "/i2.sst", n, NULL, &t, err), LSM_CORRUPT);
    char want[200];
    snprintf(want, sizeof(want), "/i2.sst: offset %zu: index keys out of order", ioff);
    assert_string_equal(err, want);
    free(tmp);
    free(p);
    free(orig);
    ents_free(&es);
    faultenv_free(env);
}

/* ---- concurrency ---- */

typedef struct rarg {
    sst *t;
    const ents *es;
    uint64_t seed;
} rarg;

static void *reader(void *p)
{
    rarg *a = p;
    char err[LSM_ERRLEN];
    for (int i = 0; i < 20000; i++) {
        const ent *e = &a->es->e[mix(a->seed + (uint64_t)i) % a->es->n];
        int found, type;
        void *v;
        size_t vn;
        if (sst_get(a->t, e->ik, e->ikn - 8, LSM_MAX_SEQ, &found, &type, NULL, &v, &vn, err) != LSM_OK
            || !found || vn != e->vn || memcmp(v, e->v, vn) != 0)
            abort();
        free(v);
    }
    iiter *it = sst_iter_new(a->t);
    size_t n = 0;
    for (iiter_seek_first(it); iiter_valid(it); iiter_next(it))
        n++;
    iiter_free(it);
    return n == a->es->n ? NULL : (void *)1;
}

static void test_concurrent_readers(void **state)
{
    (void)state;
    lsm_env *env = faultenv_new();
    ents es = { 0 };
    bench_ents(&es, 20000);
    sst_options o = opts(LSM_COMPRESSION_LZ4, 4096, 10);
    uint64_t size = build(env, "/mt.sst", &o, &es);
    cache *c = cache_new(256 << 10);
    sst *t = open_ok(env, "/mt.sst", size, c);
    pthread_t th[4];
    rarg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (rarg){ t, &es, (uint64_t)i * 7919 };
        assert_int_equal(pthread_create(&th[i], NULL, reader, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        void *r;
        assert_int_equal(pthread_join(th[i], &r), 0);
        assert_null(r);
    }
    sst_close(t);
    cache_free(c);
    ents_free(&es);
    faultenv_free(env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_table),
        cmocka_unit_test(test_single_entry),
        cmocka_unit_test(test_100k_none_cached),
        cmocka_unit_test(test_100k_lz4_small_cache),
        cmocka_unit_test(test_100k_zstd_no_cache),
        cmocka_unit_test(test_100k_lz4_cache_zero),
        cmocka_unit_test(test_versions_straddle_blocks),
        cmocka_unit_test(test_huge_value),
        cmocka_unit_test(test_long_keys),
        cmocka_unit_test(test_index_groups),
        cmocka_unit_test(test_restart_spacing),
        cmocka_unit_test(test_builder_errors),
        cmocka_unit_test(test_flip_every_byte_none),
        cmocka_unit_test(test_flip_every_byte_lz4),
        cmocka_unit_test(test_flip_every_byte_zstd),
        cmocka_unit_test(test_corruption_messages),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_malformed_blocks_with_valid_checksums),
        cmocka_unit_test(test_malformed_index_with_valid_checksum),
        cmocka_unit_test(test_concurrent_readers),
    };
    return cmocka_run_group_tests_name("sst", tests, NULL, NULL);
}
