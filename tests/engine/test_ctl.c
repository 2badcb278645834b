/*
 * test_ctl.c — the API that operating a database needs (lsm.h): read-only opens and their shared
 * lock, consistent copies (lsm_checkpoint), verification (lsm_check) and salvage (lsm_repair).
 *
 * Each test works in its own temporary directory under /tmp and removes it. The tests damage files
 * by flipping bytes (helper_model's file surgery) and compare what the engine reads with models;
 * they use nothing but lsm.h, except options.h to build options on the stack.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "helper_model.h"
#include "lsm.h"
#include "options.h"

static int setup(void **state)
{
    return db_fixture_new(state, "ctl");
}

static int teardown(void **state)
{
    return db_fixture_free(state);
}

static lsm_db *open_opt(const char *dir, int read_only, size_t memtable_bytes)
{
    lsm_options o;
    options_defaults(&o);
    o.background_compaction = 0;
    o.read_only = read_only;
    if (memtable_bytes)
        o.memtable_bytes = memtable_bytes;
    lsm_db *db = NULL;
    int rc = lsm_open(dir, &o, &db);
    if (rc != LSM_OK)
        fail_msg("lsm_open(%s) = %d (%s): %s", dir, rc, lsm_strerror(rc), lsm_errmsg(NULL));
    return db;
}

static int try_open(const char *dir, int read_only)
{
    lsm_options *o = lsm_options_new();
    lsm_options_set_read_only(o, read_only);
    lsm_options_set_create_if_missing(o, 0);
    lsm_db *db = NULL;
    int rc = lsm_open(dir, o, &db);
    lsm_options_free(o);
    lsm_close(db);
    return rc;
}

/* "name size hash\n" for every file of dir, in name order: equal strings mean equal contents. */
static char *dir_state(const char *dir)
{
    char **names;
    int n = dir_names(dir, "", "", &names);
    size_t cap = 64 + (size_t)n * 300, len = 0;
    char *s = malloc(cap);
    s[0] = 0;
    for (int i = 0; i < n; i++) {
        char *p = path_join(dir, names[i]);
        uint8_t *d = NULL;
        size_t dn = 0;
        uint64_t h = 1469598103934665603ull;
        if (file_read(p, &d, &dn) == 0)
            for (size_t j = 0; j < dn; j++)
                h = (h ^ d[j]) * 1099511628211ull;
        len += (size_t)snprintf(s + len, cap - len, "%s %zu %016llx\n", names[i], dn,
                                (unsigned long long)h);
        free(d);
        free(p);
    }
    names_free(names, n);
    return s;
}

/* Puts n keys "k%06d" = "v%06d.gen" in m and db, flushing every flush_every (0: never). */
static void fill(lsm_db *db, model *m, int from, int n, int gen, int flush_every)
{
    for (int i = from; i < from + n; i++) {
        char k[32], v[64];
        int kl = snprintf(k, sizeof k, "k%06d", i), vl = snprintf(v, sizeof v, "v%06d.%d", i, gen);
        CHECK_OK(db, lsm_put(db, k, (size_t)kl, v, (size_t)vl));
        model_put(m, k, (size_t)kl, v, (size_t)vl);
        if (flush_every && (i - from + 1) % flush_every == 0)
            CHECK_OK(db, lsm_flush(db));
    }
}

/* ---- read-only open ---- */

static void test_read_only_changes_nothing(void **state)
{
    fixture *f = *state;
    model *m = model_new();
    lsm_db *db = open_opt(f->dir, 0, 0);
    fill(db, m, 0, 300, 1, 100);
    fill(db, m, 50, 20, 2, 0);                  /* in the WAL only */
    CHECK_OK(db, lsm_delete(db, "k000007", 7));
    model_del(m, "k000007", 7);
    CHECK_OK(db, lsm_close(db));
    char *before = dir_state(f->dir);

    db = open_opt(f->dir, 1, 4096);             /* a small memtable must not cause a flush */
    check_db_equals_model(db, m, "read-only open");
    assert_int_equal(lsm_put(db, "x", 1, "y", 1), LSM_INVALID);
    assert_non_null(strstr(lsm_errmsg(db), "read-only"));
    assert_int_equal(lsm_delete(db, "k000001", 7), LSM_INVALID);
    lsm_batch *b = lsm_batch_new();
    lsm_batch_put(b, "x", 1, "y", 1);
    assert_int_equal(lsm_write(db, b, 1), LSM_INVALID);
    lsm_batch_free(b);
    assert_int_equal(lsm_flush(db), LSM_INVALID);
    assert_int_equal(lsm_compact(db), LSM_INVALID);
    assert_int_equal(lsm_compact_range(db, "a", 1, "z", 1), LSM_INVALID);
    CHECK_OK(db, lsm_sync(db));
    lsm_stats st;
    CHECK_OK(db, lsm_stats_get(db, &st, sizeof st));
    check_db_equals_model(db, m, "after refused writes");
    CHECK_OK(db, lsm_close(db));

    char *after = dir_state(f->dir);
    assert_string_equal(before, after);
    free(before);
    free(after);
    model_free(m);
}

static void test_read_only_locks(void **state)
{
    fixture *f = *state;
    lsm_db *rw = open_opt(f->dir, 0, 0);
    CHECK_OK(rw, lsm_put(rw, "a", 1, "1", 1));
    /* a read-write handle excludes read-only ones, and the refusal names its pid */
    assert_int_equal(try_open(f->dir, 1), LSM_BUSY);
    char pid[32];
    snprintf(pid, sizeof pid, "pid %ld", (long)getpid());
    assert_non_null(strstr(lsm_errmsg(NULL), pid));
    CHECK_OK(rw, lsm_close(rw));

    /* read-only handles share the directory ... */
    lsm_db *r1 = open_opt(f->dir, 1, 0), *r2 = open_opt(f->dir, 1, 0);
    void *v;
    size_t vl;
    CHECK_OK(r2, lsm_get(r2, "a", 1, &v, &vl));
    free(v);
    /* ... and exclude a read-write one */
    assert_int_equal(try_open(f->dir, 0), LSM_BUSY);
    assert_non_null(strstr(lsm_errmsg(NULL), "read-only"));
    CHECK_OK(r1, lsm_close(r1));
    assert_int_equal(try_open(f->dir, 0), LSM_BUSY);
    CHECK_OK(r2, lsm_close(r2));
    assert_int_equal(try_open(f->dir, 0), LSM_OK);
}

static void test_read_only_without_lock_file(void **state)
{
    fixture *f = *state;
    model *m = model_new();
    lsm_db *db = open_opt(f->dir, 0, 0);
    fill(db, m, 0, 50, 1, 25);
    CHECK_OK(db, lsm_close(db));
    char *lock = path_join(f->dir, "LOCK");
    assert_int_equal(unlink(lock), 0);
    char *before = dir_state(f->dir);
    db = open_opt(f->dir, 1, 0);
    check_db_equals_model(db, m, "read-only open without LOCK");
    CHECK_OK(db, lsm_close(db));
    assert_int_equal(file_size(lock), -1);      /* not created */
    char *after = dir_state(f->dir);
    assert_string_equal(before, after);
    /* no database: refused, and nothing made */
    char *empty = path_join(f->tmp, "empty");
    assert_int_equal(mkdir(empty, 0700), 0);
    assert_int_not_equal(try_open(empty, 1), LSM_OK);
    char **names;
    assert_int_equal(dir_names(empty, "", "", &names), 0);
    names_free(names, 0);
    free(empty);
    free(before);
    free(after);
    free(lock);
    model_free(m);
}

/* ---- checkpoint ---- */

typedef struct writer_arg {
    lsm_db *db;
    history h;                 /* batch i writes "n" = i among its other changes */
    atomic_int stop;
    atomic_long done;          /* batches acknowledged */
} writer_arg;

static void *writer_main(void *p)
{
    writer_arg *w = p;
    trng r;
    trng_seed(&r, 77);
    lsm_batch *b = lsm_batch_new();
    for (long i = 0; !atomic_load(&w->stop) || i < 200; i++) {
        hbatch *hb = history_add(&w->h);
        char n[32], k[32];
        int nl = snprintf(n, sizeof n, "%ld", i);
        hbatch_put(hb, "n", 1, n, (size_t)nl);
        for (int j = 0; j < 4; j++) {
            int kl = snprintf(k, sizeof k, "key%04u", (unsigned)trng_below(&r, 2000));
            if (trng_chance(&r, 20)) {
                hbatch_del(hb, k, (size_t)kl);
            } else {
                uint8_t v[300];
                size_t vl = (size_t)trng_below(&r, trng_chance(&r, 5) ? 300 : 40);
                trng_fill(&r, v, vl);
                hbatch_put(hb, k, (size_t)kl, v, vl);
            }
        }
        hbatch_to_lsm(hb, b);
        int rc = lsm_write(w->db, b, 0);
        if (rc != LSM_OK)
            fail_msg("lsm_write: %s", lsm_errmsg(w->db));
        hb->acked = 1;
        atomic_store(&w->done, i + 1);
    }
    lsm_batch_free(b);
    return NULL;
}

/* The model of batches 0..last of h. */
static model *history_model(const history *h, long last)
{
    model *m = model_new();
    for (long i = 0; i <= last; i++)
        hbatch_apply(&h->b[i], m);
    return m;
}

static void test_checkpoint_under_writes(void **state)
{
    fixture *f = *state;
    lsm_options o;
    options_defaults(&o);
    o.memtable_bytes = 16384;          /* flushes and compactions run while checkpoints are made */
    o.table_bytes = 8192;
    o.level1_bytes = 32768;
    o.blob_threshold = 200;            /* and some values live in blob files */
    lsm_db *db = NULL;
    CHECK_OK(NULL, lsm_open(f->dir, &o, &db));
    writer_arg w = { .db = db };
    history_init(&w.h);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, writer_main, &w), 0);
    char *dests[5];
    long before[5];
    for (int i = 0; i < 5; i++) {
        char name[32];
        snprintf(name, sizeof name, "ckpt%d", i);
        dests[i] = path_join(f->tmp, name);
        usleep(20000);
        before[i] = atomic_load(&w.done);
        CHECK_OK(db, lsm_checkpoint(db, dests[i]));
    }
    atomic_store(&w.stop, 1);
    pthread_join(t, NULL);
    assert_int_equal(lsm_checkpoint(db, dests[0]), LSM_EXISTS);
    for (int i = 0; i < 5; i++) {
        /* the copy is exactly the state after some batch n: every batch up to it, none after */
        lsm_db *c = open_opt(dests[i], 1, 0);
        void *v;
        size_t vl;
        CHECK_OK(c, lsm_get(c, "n", 1, &v, &vl));
        char nb[32];
        snprintf(nb, sizeof nb, "%.*s", (int)vl, (char *)v);
        free(v);
        long n = atol(nb);
        /* not older than what was acknowledged before the call */
        assert_true(n >= before[i] - 1);
        assert_true(n < atomic_load(&w.done));
        model *m = history_model(&w.h, n);
        check_db_equals_model(c, m, dests[i]);
        CHECK_OK(c, lsm_close(c));
        /* and it opens read-write, independent of the source */
        c = open_opt(dests[i], 0, 0);
        CHECK_OK(c, lsm_put(c, "n", 1, "x", 1));
        CHECK_OK(c, lsm_compact(c));
        model_put(m, "n", 1, "x", 1);
        check_db_equals_model(c, m, "checkpoint reopened read-write");
        CHECK_OK(c, lsm_close(c));
        model_free(m);
        free(dests[i]);
    }
    model *all = history_model(&w.h, atomic_load(&w.done) - 1);
    check_db_equals_model(db, all, "source after the checkpoints");
    model_free(all);
    CHECK_OK(db, lsm_close(db));
    history_free(&w.h);
}

static void test_checkpoint_read_only(void **state)
{
    fixture *f = *state;
    model *m = model_new();
    lsm_db *db = open_opt(f->dir, 0, 0);
    fill(db, m, 0, 100, 1, 50);
    fill(db, m, 20, 10, 2, 0);                  /* in the WAL only */
    CHECK_OK(db, lsm_close(db));
    char *before = dir_state(f->dir);
    db = open_opt(f->dir, 1, 0);
    char *dest = path_join(f->tmp, "copy");
    CHECK_OK(db, lsm_checkpoint(db, dest));
    CHECK_OK(db, lsm_close(db));
    char *after = dir_state(f->dir);
    assert_string_equal(before, after);
    db = open_opt(dest, 1, 0);
    check_db_equals_model(db, m, "checkpoint of a read-only handle");
    CHECK_OK(db, lsm_close(db));
    free(dest);
    free(before);
    free(after);
    model_free(m);
}

/* ---- check and repair ---- */

typedef struct reports {
    int n;
    char file[8][512], what[8][512], lo[8][64], hi[8][64];
} reports;

static void collect(void *arg, const char *file, const char *what, const void *lo, size_t lon,
                    const void *hi, size_t hin)
{
    reports *r = arg;
    if (r->n < 8) {
        snprintf(r->file[r->n], sizeof r->file[0], "%s", file);
        snprintf(r->what[r->n], sizeof r->what[0], "%s", what);
        snprintf(r->lo[r->n], sizeof r->lo[0], "%.*s", (int)lon, lo ? (const char *)lo : "");
        snprintf(r->hi[r->n], sizeof r->hi[0], "%.*s", (int)hin, hi ? (const char *)hi : "");
    }
    r->n++;
}

/* Builds: table 1 = a000..a099 and "big1" = "old", table 2 = b000..b099 (many small blocks),
   table 3 = big1..big3 with their 5000-byte values in one blob file, and c000..c009 only in the
   WAL. names[0..2] get the tables' paths, names[3] the blob file's. */
static void build_db(const char *dir, model *m, char *names[4])
{
    lsm_options o;
    options_defaults(&o);
    o.background_compaction = 0;
    o.block_bytes = 256;
    o.blob_threshold = 1000;
    lsm_db *db = NULL;
    CHECK_OK(NULL, lsm_open(dir, &o, &db));
    fill(db, m, 0, 0, 0, 0);
    char k[32], v[5000];
    for (int i = 0; i < 100; i++) {
        int kl = snprintf(k, sizeof k, "a%03d", i);
        CHECK_OK(db, lsm_put(db, k, (size_t)kl, "va", 2));
        model_put(m, k, (size_t)kl, "va", 2);
    }
    CHECK_OK(db, lsm_put(db, "big1", 4, "old", 3));
    CHECK_OK(db, lsm_flush(db));
    for (int i = 0; i < 100; i++) {
        int kl = snprintf(k, sizeof k, "b%03d", i);
        CHECK_OK(db, lsm_put(db, k, (size_t)kl, "value of b", 10));
        model_put(m, k, (size_t)kl, "value of b", 10);
    }
    CHECK_OK(db, lsm_flush(db));
    for (int i = 1; i <= 3; i++) {
        int kl = snprintf(k, sizeof k, "big%d", i);
        memset(v, 'A' + i, sizeof v);
        CHECK_OK(db, lsm_put(db, k, (size_t)kl, v, sizeof v));
        model_put(m, k, (size_t)kl, v, sizeof v);
    }
    CHECK_OK(db, lsm_flush(db));
    for (int i = 0; i < 10; i++) {
        int kl = snprintf(k, sizeof k, "c%03d", i);
        CHECK_OK(db, lsm_put(db, k, (size_t)kl, "vc", 2));
        model_put(m, k, (size_t)kl, "vc", 2);
    }
    reports r = { 0 };
    CHECK_OK(db, lsm_check(db, collect, &r));
    assert_int_equal(r.n, 0);
    CHECK_OK(db, lsm_close(db));
    char **t;
    assert_int_equal(dir_names(dir, "", ".sst", &t), 3);
    for (int i = 0; i < 3; i++)
        names[i] = path_join(dir, t[i]);
    names_free(t, 3);
    assert_int_equal(dir_names(dir, "", ".blob", &t), 1);
    names[3] = path_join(dir, t[0]);
    names_free(t, 1);
}

static void free_names(char *names[4])
{
    for (int i = 0; i < 4; i++)
        free(names[i]);
}

static int check_dir(const char *dir, reports *r)
{
    lsm_db *db = open_opt(dir, 1, 0);
    int rc = lsm_check(db, collect, r);
    CHECK_OK(db, lsm_close(db));
    return rc;
}

static void test_check_finds_damage(void **state)
{
    fixture *f = *state;
    model *m = model_new();
    char *names[4];
    build_db(f->dir, m, names);

    /* a flipped byte in a data block of the table of b000..b099 */
    assert_int_equal(file_flip(names[1], 40), 0);
    reports r = { 0 };
    assert_int_equal(check_dir(f->dir, &r), LSM_CORRUPT);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.file[0], names[1]);
    assert_string_equal(r.lo[0], "b000");
    assert_string_equal(r.hi[0], "b099");
    assert_true(strlen(r.what[0]) > 0);
    assert_int_equal(file_flip(names[1], 40), 0);       /* undo */
    memset(&r, 0, sizeof r);
    assert_int_equal(check_dir(f->dir, &r), LSM_OK);

    /* a flipped byte in the value of big2 in the blob file */
    long long at = 16 + 5000 + 4 + 100;                 /* big1's bytes and checksum, then big2 */
    assert_int_equal(file_flip(names[3], (uint64_t)at), 0);
    memset(&r, 0, sizeof r);
    assert_int_equal(check_dir(f->dir, &r), LSM_CORRUPT);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.file[0], names[3]);
    assert_string_equal(r.lo[0], "big2");
    assert_string_equal(r.hi[0], "big2");
    assert_int_equal(file_flip(names[3], (uint64_t)at), 0);

    /* and in the live WAL of a read-write handle: reported without a key range */
    lsm_db *db = open_opt(f->dir, 0, 0);
    for (int i = 0; i < 3; i++) {               /* synced, so that sync marks vouch for it */
        CHECK_OK(db, lsm_put(db, "d1", 2, "v", 1));
        CHECK_OK(db, lsm_sync(db));
    }
    char **logs;
    assert_int_equal(dir_names(f->dir, "", ".log", &logs), 1);
    char *log = path_join(f->dir, logs[0]);
    names_free(logs, 1);
    assert_int_equal(file_flip(log, 20), 0);
    memset(&r, 0, sizeof r);
    assert_int_equal(lsm_check(db, collect, &r), LSM_CORRUPT);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.file[0], log);
    assert_string_equal(r.lo[0], "");
    assert_non_null(strstr(lsm_errmsg(db), "1 damaged file"));
    lsm_close(db);
    free(log);
    free_names(names);
    model_free(m);
}

static void test_repair_salvages(void **state)
{
    fixture *f = *state;
    model *m = model_new();
    char *names[4];
    build_db(f->dir, m, names);
    /* the middle of table 2's data blocks, and big2's value */
    assert_int_equal(file_flip(names[1], 700), 0);
    assert_int_equal(file_flip(names[3], 16 + 5000 + 4 + 100), 0);

    reports r = { 0 };
    CHECK_OK(NULL, lsm_repair(f->dir, NULL, collect, &r));
    assert_int_equal(r.n, 2);
    int t = strcmp(r.file[0], names[1]) == 0 ? 0 : 1;
    assert_string_equal(r.file[t], names[1]);
    assert_string_equal(r.file[1 - t], names[3]);
    assert_string_equal(r.lo[1 - t], "big2");

    /* the repaired database: clean, and every key outside the damage as it was */
    reports r2 = { 0 };
    assert_int_equal(check_dir(f->dir, &r2), LSM_OK);
    lsm_db *db = open_opt(f->dir, 0, 0);
    model *got;
    CHECK_OK(db, model_from_db(db, &got));
    int bkept = 0;
    for (size_t i = 0; i < model_count(m); i++) {
        const uint8_t *k, *v, *gv;
        size_t kl, vl, gvl;
        model_at(m, i, &k, &kl, &v, &vl);
        gv = model_get(got, k, kl, &gvl);
        if (kl == 4 && memcmp(k, "big2", 4) == 0) {
            assert_null(gv);                    /* lost, and "old" did not come back */
            continue;
        }
        if (k[0] == 'b' && kl == 4 && !gv)
            continue;                           /* after the damage in table 2 */
        if (!gv)
            fail_msg("%s lost", show(k, kl));
        assert_int_equal(gvl, vl);
        assert_memory_equal(gv, v, vl);
        bkept += k[0] == 'b' && k[1] != 'i';
    }
    assert_int_equal(model_count(got), model_count(m) - 1 - (100 - (size_t)bkept));
    assert_true(bkept > 0 && bkept < 100);      /* all but the damaged block's */
    /* the blocks after the damaged one are kept too, and the report bounds what was lost */
    assert_non_null(model_get(got, "b000", 4, &(size_t){ 0 }));
    assert_non_null(model_get(got, "b099", 4, &(size_t){ 0 }));
    for (int i = 0; i < 100; i++) {
        char k[16];
        snprintf(k, sizeof k, "b%03d", i);
        if (!model_get(got, k, 4, &(size_t){ 0 }))
            assert_true(strcmp(k, r.lo[t]) > 0 && strcmp(k, r.hi[t]) < 0);
    }
    /* usable: writes, reopen, compaction */
    CHECK_OK(db, lsm_put(db, "b050", 4, "new", 3));
    CHECK_OK(db, lsm_compact(db));
    CHECK_OK(db, lsm_close(db));
    db = open_opt(f->dir, 0, 0);
    void *v;
    size_t vl;
    CHECK_OK(db, lsm_get(db, "b050", 4, &v, &vl));
    assert_memory_equal(v, "new", 3);
    free(v);
    CHECK_OK(db, lsm_close(db));
    /* the old files are kept in lost/ */
    char *lost = path_join(f->dir, "lost");
    char **old;
    int nold = dir_names(lost, "", ".sst", &old);
    assert_int_equal(nold, 3);
    names_free(old, nold);
    free(lost);
    model_free(got);
    free_names(names);
    model_free(m);
}

static void test_repair_without_manifest(void **state)
{
    fixture *f = *state;
    model *m = model_new();
    char *names[4];
    build_db(f->dir, m, names);
    /* the manifest lost: every table and log in the directory is used, newest version by
       sequence number, whatever the file numbers say */
    lsm_db *db = open_opt(f->dir, 0, 0);
    CHECK_OK(db, lsm_put(db, "a001", 4, "newer", 5));
    model_put(m, "a001", 4, "newer", 5);
    CHECK_OK(db, lsm_close(db));
    char **man;
    int nm = dir_names(f->dir, "MANIFEST-", "", &man);
    for (int i = 0; i < nm; i++) {
        char *p = path_join(f->dir, man[i]);
        unlink(p);
        free(p);
    }
    names_free(man, nm);
    char *cur = path_join(f->dir, "CURRENT");
    unlink(cur);
    free(cur);
    reports r = { 0 };
    CHECK_OK(NULL, lsm_repair(f->dir, NULL, collect, &r));
    assert_int_equal(r.n, 1);                   /* only that the manifest was gone */
    assert_non_null(strstr(r.what[0], "CURRENT is missing"));
    db = open_opt(f->dir, 1, 0);
    check_db_equals_model(db, m, "repaired without a manifest");
    CHECK_OK(db, lsm_close(db));
    /* and refused while a handle holds the directory */
    db = open_opt(f->dir, 1, 0);
    assert_int_equal(lsm_repair(f->dir, NULL, NULL, NULL), LSM_BUSY);
    assert_non_null(strstr(lsm_errmsg(NULL), "LOCK"));
    CHECK_OK(db, lsm_close(db));
    free_names(names);
    model_free(m);
}

/* ---- values written with a value writer (extent maps in blob files) ---- */

static void put_extent_value(lsm_db *db, const char *key, char fill, size_t n)
{
    lsm_value_writer *w;
    CHECK_OK(db, lsm_value_writer_open(db, key, strlen(key), 0, &w));
    char *p = malloc(n);
    memset(p, fill, n);
    CHECK_OK(db, lsm_value_writer_write(w, 0, p, n));
    free(p);
    CHECK_OK(db, lsm_value_writer_commit(w, 1));
}

static void check_extent_value(lsm_db *db, const char *key, char fill, size_t n)
{
    char *p = malloc(n + 1);
    size_t got = 0;
    uint64_t vlen = 0;
    CHECK_OK(db, lsm_get_range(db, key, strlen(key), 0, p, n + 1, &got, &vlen));
    assert_int_equal(got, n);
    assert_int_equal(vlen, n);
    for (size_t i = 0; i < n; i++)
        if (p[i] != fill)
            fail_msg("%s: byte %zu is %d, not %d", key, i, p[i], fill);
    free(p);
}

static void test_extent_values(void **state)
{
    fixture *f = *state;
    lsm_db *db = open_opt(f->dir, 0, 0);
    put_extent_value(db, "flushed", 'F', 200000);
    CHECK_OK(db, lsm_flush(db));
    put_extent_value(db, "in-memtable", 'M', 150000);
    CHECK_OK(db, lsm_put(db, "small", 5, "s", 1));

    /* a checkpoint carries both: the map in a table and the map still in the memtable */
    char *ck = path_join(f->tmp, "ck");
    CHECK_OK(db, lsm_checkpoint(db, ck));
    CHECK_OK(db, lsm_close(db));
    lsm_db *c = open_opt(ck, 1, 0);
    check_extent_value(c, "flushed", 'F', 200000);
    check_extent_value(c, "in-memtable", 'M', 150000);
    reports r = { 0 };
    CHECK_OK(c, lsm_check(c, collect, &r));
    assert_int_equal(r.n, 0);
    CHECK_OK(c, lsm_close(c));
    /* the copy's blob files are its own: compacting the copy read-write keeps its values */
    c = open_opt(ck, 0, 0);
    CHECK_OK(c, lsm_compact(c));
    check_extent_value(c, "in-memtable", 'M', 150000);
    CHECK_OK(c, lsm_close(c));

    /* read-only: no value writer */
    db = open_opt(f->dir, 1, 0);
    lsm_value_writer *w = NULL;
    assert_int_equal(lsm_value_writer_open(db, "x", 1, 0, &w), LSM_INVALID);
    assert_null(w);
    CHECK_OK(db, lsm_close(db));

    /* check finds a flipped byte in the blob file of "flushed", and names the key */
    db = open_opt(f->dir, 0, 0);
    CHECK_OK(db, lsm_compact(db));              /* both maps in tables now */
    CHECK_OK(db, lsm_close(db));
    char **blobs;
    int nb = dir_names(f->dir, "", ".blob", &blobs);
    assert_true(nb >= 1);
    char *hit = NULL;
    for (int i = 0; i < nb && !hit; i++) {
        char *p = path_join(f->dir, blobs[i]);
        uint8_t *d;
        size_t dn;
        assert_int_equal(file_read(p, &d, &dn), 0);
        if (dn > 1000 && d[1000] == 'F')
            hit = p;
        else
            free(p);
        free(d);
    }
    names_free(blobs, nb);
    assert_non_null(hit);
    assert_int_equal(file_flip(hit, 1000), 0);
    memset(&r, 0, sizeof r);
    assert_int_equal(check_dir(f->dir, &r), LSM_CORRUPT);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.file[0], hit);
    assert_string_equal(r.lo[0], "flushed");
    /* repair: "flushed" is lost, the rest stays */
    memset(&r, 0, sizeof r);
    CHECK_OK(NULL, lsm_repair(f->dir, NULL, collect, &r));
    assert_int_equal(r.n, 1);
    db = open_opt(f->dir, 0, 0);
    void *v;
    size_t vl;
    assert_int_equal(lsm_get(db, "flushed", 7, &v, &vl), LSM_NOTFOUND);
    check_extent_value(db, "in-memtable", 'M', 150000);
    CHECK_OK(db, lsm_compact(db));
    check_extent_value(db, "in-memtable", 'M', 150000);
    memset(&r, 0, sizeof r);
    CHECK_OK(db, lsm_check(db, collect, &r));
    CHECK_OK(db, lsm_close(db));
    free(hit);
    free(ck);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_read_only_changes_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_only_locks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_only_without_lock_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checkpoint_under_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checkpoint_read_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_finds_damage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_repair_salvages, setup, teardown),
        cmocka_unit_test_setup_teardown(test_repair_without_manifest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_extent_values, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
