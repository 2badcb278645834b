/*
 * test_corrupt.c — damaged files on disk. A child process builds a database (three overlapping
 * tables, a manifest, and a write-ahead log holding synced writes that were never flushed) and
 * exits without closing, as a crash would. Every case then works on a fresh copy of that directory
 * with one file damaged:
 *
 *  - a table byte flipped (many positions, with and without compression): opening may fail with
 *    LSM_CORRUPT, and reads may fail with LSM_CORRUPT naming the table and an offset, but every
 *    answer given is right: a value returned is the original, "not found" only for keys that are
 *    absent, and a scan is an exact prefix of the real contents that ends in an error if it ends
 *    early. Nothing crashes.
 *  - an older table that can no longer be opened, under a newer one: keys the newer table holds
 *    read as before, the others fail naming the damaged table.
 *  - a log byte flipped in a record before the last: open fails with LSM_CORRUPT naming the .log
 *    file and the offset. In the last record: open succeeds without that record (torn tail). Log
 *    truncated at any length: open succeeds with exactly the complete records before the cut.
 *  - a manifest byte flipped: LSM_CORRUPT naming the MANIFEST, or an open that lost nothing. A
 *    well-formed manifest that moves overlapping tables into level 1: LSM_CORRUPT naming the
 *    MANIFEST, the level and the tables.
 *  - CURRENT missing, garbled, or naming a missing manifest; a table named by the manifest missing:
 *    a clear error naming the file, and the failed open destroys nothing (putting the file back
 *    gives the full database again).
 *
 * File names (db.c, version.c): NNNNNN.log, NNNNNN.sst, MANIFEST-NNNNNN, CURRENT, LOCK. The log
 * framing parsed here is the one wal.c documents: a 16-byte header, then records of fixed32
 * checksum, fixed32 length, payload.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helper_model.h"
#include "lsm.h"
#include "options.h"
#include "lsm_int.h"
#include "wal.h"

#define NKEYS 600
#define NWAL  24       /* synced writes left in the log */

typedef struct base {
    char *tmp;                 /* temp root */
    char *dir;                 /* the pristine database */
    model *full;               /* its contents */
    model *before_wal;         /* its contents without the log's writes */
    history wal;               /* the log's writes, one batch per record, in order */
    char *log_name;            /* the live log's file name */
    char *manifest_name;
    char **tables;             /* table file names */
    int ntables;
    char **blobs;              /* blob file names */
    int nblobs;
    int copies;                /* counter for copy names */
} base;

static base *g;                /* set up once per group */
static int g_need_offset = 1;  /* whether expect_msg insists on an offset */

static void key_name(char *k, size_t cap, int i)
{
    snprintf(k, cap, "key%05d", i);
}

static size_t value_for(uint8_t *v, size_t cap, int key, int version)
{
    int n = snprintf((char *)v, cap, "key%05d-v%d:", key, version);
    size_t len = (size_t)n + (size_t)((key * 7 + version * 13) % 300);
    if (key % 40 == 0)   /* past the blob threshold: kept in blob files */
        len = 3000 + (size_t)((key * 131 + version * 977) % 70000);
    if (len > cap)
        len = cap;
    for (size_t i = (size_t)n; i < len; i++)
        v[i] = (uint8_t)('A' + (key + version + (int)i) % 26);
    return len;
}

static void build_ops(history *phases, history *wal)
{
    /* Phase 0: every key. Phases 1, 2: overwrite a third, delete a sixth, add new keys. */
    static uint8_t v[80000];
    char k[16];
    for (int p = 0; p < 3; p++) {
        hbatch *b = history_add(phases);
        for (int i = 0; i < NKEYS + p * 50; i++) {
            key_name(k, sizeof k, i);
            if (p == 0 || i >= NKEYS + (p - 1) * 50 || i % 3 == p) {
                size_t vl = value_for(v, sizeof v, i, p);
                hbatch_put(b, k, strlen(k), v, vl);
            } else if (i % 6 == p + 2) {
                hbatch_del(b, k, strlen(k));
            }
        }
    }
    /* The log: small synced writes touching keys of every table. */
    for (int w = 0; w < NWAL; w++) {
        hbatch *b = history_add(wal);
        int i = (w * 37) % (NKEYS + 100);
        key_name(k, sizeof k, i);
        if (w % 5 == 4) {
            hbatch_del(b, k, strlen(k));
        } else {
            size_t vl = value_for(v, sizeof v, i, 10 + w);
            hbatch_put(b, k, strlen(k), v, vl);
        }
        if (w % 3 == 0) {
            key_name(k, sizeof k, 2000 + w);
            size_t vl = value_for(v, sizeof v, 2000 + w, 10 + w);
            hbatch_put(b, k, strlen(k), v, vl);
        }
    }
}

static void opts(lsm_options *o, int compression)
{
    options_defaults(o);
    o->memtable_bytes = 4 << 20;       /* only our explicit flushes write tables */
    o->background_compaction = 0;
    o->block_bytes = 1024;
    o->compression = compression;
    o->blob_threshold = 2048;
}

static void child_build(const char *dir, history *phases, history *wal, int compression)
{
    lsm_options o;
    opts(&o, compression);
    lsm_db *db = NULL;
    if (lsm_open(dir, &o, &db) != LSM_OK)
        _exit(2);
    lsm_batch *lb = lsm_batch_new();
    for (long p = 0; p < phases->n; p++) {
        hbatch_to_lsm(&phases->b[p], lb);
        if (lsm_write(db, lb, 0) != LSM_OK || lsm_flush(db) != LSM_OK)
            _exit(3);
    }
    for (long w = 0; w < wal->n; w++) {
        hbatch_to_lsm(&wal->b[w], lb);
        if (lsm_write(db, lb, 1) != LSM_OK)
            _exit(4);
    }
    _exit(0);   /* no lsm_close: the log keeps its writes, as after a crash */
}

static base *base_build(int compression)
{
    base *b = calloc(1, sizeof *b);
    b->tmp = tmpdir_new("corrupt");
    b->dir = path_join(b->tmp, "pristine");
    history phases;
    history_init(&phases);
    history_init(&b->wal);
    build_ops(&phases, &b->wal);
    b->before_wal = model_new();
    for (long p = 0; p < phases.n; p++)
        hbatch_apply(&phases.b[p], b->before_wal);
    b->full = model_clone(b->before_wal);
    for (long w = 0; w < b->wal.n; w++)
        hbatch_apply(&b->wal.b[w], b->full);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0)
        child_build(b->dir, &phases, &b->wal, compression);
    int st;
    waitpid(pid, &st, 0);
    history_free(&phases);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("building the database failed in the child (status 0x%x)", st);
    char **names;
    int n = dir_names(b->dir, "", ".log", &names);
    if (n != 1)
        fail_msg("expected exactly one .log in the built database, found %d", n);
    b->log_name = strdup(names[0]);
    names_free(names, n);
    n = dir_names(b->dir, "MANIFEST-", "", &names);
    if (n != 1)
        fail_msg("expected exactly one MANIFEST in the built database, found %d", n);
    b->manifest_name = strdup(names[0]);
    names_free(names, n);
    b->ntables = dir_names(b->dir, "", ".sst", &b->tables);
    b->nblobs = dir_names(b->dir, "", ".blob", &b->blobs);
    if (b->ntables < 3)
        fail_msg("expected at least 3 tables after 3 flushes, found %d", b->ntables);
    return b;
}

static void base_free(base *b)
{
    if (!b)
        return;
    tmpdir_remove(b->tmp);
    free(b->tmp);
    free(b->dir);
    model_free(b->full);
    model_free(b->before_wal);
    history_free(&b->wal);
    free(b->log_name);
    free(b->manifest_name);
    names_free(b->tables, b->ntables);
    names_free(b->blobs, b->nblobs);
    free(b);
}

static int group_setup(void **state)
{
    (void)state;
    g = base_build(LSM_COMPRESSION_NONE);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    base_free(g);
    g = NULL;
    return 0;
}

/* A fresh copy of the pristine database; caller frees the path and removes it with copy_drop. */
static char *copy_new(base *b)
{
    char name[32];
    snprintf(name, sizeof name, "copy%d", b->copies++);
    g_need_offset = 1;   /* in case a failed case left it off */
    char *c = path_join(b->tmp, name);
    if (dir_copy(b->dir, c) != 0)
        fail_msg("copying %s to %s failed", b->dir, c);
    return c;
}

static void copy_drop(char *c)
{
    tmpdir_remove(c);
    free(c);
}

static void flip_in(const char *dir, const char *file, uint64_t off)
{
    char *p = path_join(dir, file);
    if (file_flip(p, off) != 0)
        fail_msg("flipping %s at %" PRIu64 " failed", p, off);
    free(p);
}

static int open_copy(const char *dir, lsm_db **db)
{
    lsm_options o;
    opts(&o, LSM_COMPRESSION_NONE);
    o.create_if_missing = 0;
    *db = NULL;
    return lsm_open(dir, &o, db);
}

static void expect_msg(const char *msg, const char *file, const char *what)
{
    if (!strstr(msg, file) || (g_need_offset && !strstr(msg, "offset")))
        fail_msg("%s: message does not name %s%s: '%s'", what, file,
                 g_need_offset ? " and an offset" : "", msg);
}

/* Every answer of db is right or LSM_CORRUPT (naming file). Returns 1 if any read reported
   corruption. */
static int check_answers(lsm_db *db, const model *want, const char *file, const char *what)
{
    int detected = 0;
    char k[16];
    for (int i = 0; i < 2100 + NWAL; i++) {
        if (i == NKEYS + 200)
            i = 2000;
        key_name(k, sizeof k, i);
        size_t wl = 0;
        const uint8_t *wv = model_get(want, k, strlen(k), &wl);
        void *v = NULL;
        size_t vl = 0;
        int rc = lsm_get(db, k, strlen(k), &v, &vl);
        if (rc == LSM_OK) {
            if (!wv)
                fail_msg("%s: get(%s) returned %zu bytes '%s' for a key that is absent", what, k, vl,
                         show(v, vl < 30 ? vl : 30));
            if (vl != wl || memcmp(v, wv, wl) != 0)
                fail_msg("%s: get(%s) returned wrong bytes: %zu '%s', original %zu '%s'", what, k,
                         vl, show(v, vl < 30 ? vl : 30), wl, show(wv, wl < 30 ? wl : 30));
            free(v);
        } else if (rc == LSM_NOTFOUND) {
            if (wv)
                fail_msg("%s: get(%s) said not found, but it holds %zu bytes", what, k, wl);
        } else if (rc == LSM_CORRUPT) {
            expect_msg(lsm_errmsg(db), file, what);
            detected = 1;
        } else {
            fail_msg("%s: get(%s) = %d (%s) %s", what, k, rc, lsm_strerror(rc), lsm_errmsg(db));
        }
    }
    lsm_iter *it;
    int rc = lsm_iter_new(db, &it);
    if (rc == LSM_CORRUPT) {
        expect_msg(lsm_errmsg(db), file, what);
        return 1;
    }
    if (rc != LSM_OK)
        fail_msg("%s: lsm_iter_new = %d", what, rc);
    size_t i = 0;
    for (lsm_iter_seek(it, NULL, 0); lsm_iter_valid(it); lsm_iter_next(it), i++) {
        size_t kl, vl;
        const void *key = lsm_iter_key(it, &kl);
        const void *val = lsm_iter_value(it, &vl);
        if (!val) {   /* the value could not be read: the iterator must have failed */
            if (lsm_iter_valid(it) || lsm_iter_status(it) == LSM_OK)
                fail_msg("%s: lsm_iter_value returned NULL at '%s' but the iterator did not fail",
                         what, show(key, kl));
            break;
        }
        const uint8_t *mk, *mv;
        size_t mkl, mvl;
        if (i >= model_count(want))
            fail_msg("%s: scan returned extra key '%s'", what, show(key, kl));
        model_at(want, i, &mk, &mkl, &mv, &mvl);
        if (bytes_cmp(key, kl, mk, mkl) != 0)
            fail_msg("%s: scan entry %zu is '%s', expected '%s' (skipped or invented a key)", what,
                     i, show(key, kl), show(mk, mkl));
        if (vl != mvl || memcmp(val, mv, vl) != 0) {
            size_t at = 0;
            while (at < vl && at < mvl && ((const uint8_t *)val)[at] == mv[at])
                at++;
            fail_msg("%s: scan of '%s' returned wrong bytes: %zu bytes '%s', original %zu bytes "
                     "'%s', first difference at %zu", what, show(key, kl), vl,
                     show(val, vl < 30 ? vl : 30), mvl, show(mv, mvl < 30 ? mvl : 30), at);
        }
    }
    rc = lsm_iter_status(it);
    lsm_iter_free(it);
    if (rc == LSM_CORRUPT) {
        expect_msg(lsm_errmsg(db), file, what);
        detected = 1;
    } else if (rc != LSM_OK) {
        fail_msg("%s: scan status %d (%s)", what, rc, lsm_strerror(rc));
    } else if (i != model_count(want)) {
        fail_msg("%s: scan ended cleanly after %zu of %zu keys", what, i, model_count(want));
    }
    return detected;
}

/* check_answers for a file that is missing or cut short: the message must name it. */
static int check_answers_named(lsm_db *db, const model *want, const char *file, const char *what)
{
    g_need_offset = 0;
    int d = check_answers(db, want, file, what);
    g_need_offset = 1;
    return d;
}

/* ---- tables ---- */

static void table_flips(base *b, const char *tag)
{
    trng r;
    trng_seed(&r, test_seed(tag, 99));
    int per_table = (int)test_scale(48);
    int cases = 0, at_open = 0, on_read = 0, unnoticed = 0;
    for (int t = 0; t < b->ntables; t++) {
        char *tp = path_join(b->dir, b->tables[t]);
        long long size = file_size(tp);
        free(tp);
        assert_true(size > 64);
        for (int j = 0; j < per_table; j++) {
            uint64_t off;
            if (j == 0)
                off = 0;
            else if (j == 1)
                off = (uint64_t)size - 1;
            else if (j < 14)
                off = (uint64_t)size - 1 - trng_below(&r, 56);    /* the footer */
            else if (j < 20)
                off = (uint64_t)size - 57 - trng_below(&r, 2048); /* index and filter */
            else
                off = trng_below(&r, (uint64_t)size);
            char what[128];
            snprintf(what, sizeof what, "%s: %s flipped at %" PRIu64 " of %lld", tag, b->tables[t],
                     off, size);
            char *c = copy_new(b);
            flip_in(c, b->tables[t], off);
            lsm_db *db;
            int rc = open_copy(c, &db);
            cases++;
            if (rc == LSM_CORRUPT) {
                expect_msg(lsm_errmsg(NULL), b->tables[t], what);
                at_open++;
            } else if (rc != LSM_OK) {
                fail_msg("%s: open = %d (%s) %s", what, rc, lsm_strerror(rc), lsm_errmsg(NULL));
            } else {
                if (check_answers(db, b->full, b->tables[t], what))
                    on_read++;
                else
                    unnoticed++;
                lsm_close(db);
            }
            copy_drop(c);
        }
    }
    printf("# %s: %d flips: %d refused at open, %d reported on read, %d harmless (all answers "
           "right)\n", tag, cases, at_open, on_read, unnoticed);
}

static void test_table_flips(void **state)
{
    (void)state;
    table_flips(g, "table_flips");
}

static void test_table_flips_lz4(void **state)
{
    (void)state;
    base *b = base_build(LSM_COMPRESSION_LZ4);
    table_flips(b, "table_flips_lz4");
    base_free(b);
}

static void test_table_truncated(void **state)
{
    (void)state;
    for (int t = 0; t < g->ntables; t++) {
        char *tp = path_join(g->dir, g->tables[t]);
        long long size = file_size(tp);
        free(tp);
        uint64_t lens[] = { 0, 10, (uint64_t)size / 2, (uint64_t)size - 56, (uint64_t)size - 1 };
        for (int j = 0; j < 5; j++) {
            char what[128];
            snprintf(what, sizeof what, "%s truncated to %" PRIu64 " of %lld", g->tables[t], lens[j],
                     size);
            char *c = copy_new(g);
            char *p = path_join(c, g->tables[t]);
            assert_int_equal(file_truncate(p, lens[j]), 0);
            free(p);
            lsm_db *db;
            int rc = open_copy(c, &db);
            if (rc == LSM_CORRUPT) {
                if (!strstr(lsm_errmsg(NULL), g->tables[t]))
                    fail_msg("%s: message does not name the table: '%s'", what, lsm_errmsg(NULL));
            } else if (rc != LSM_OK) {
                fail_msg("%s: open = %d (%s) %s", what, rc, lsm_strerror(rc), lsm_errmsg(NULL));
            } else {
                if (!check_answers_named(db, g->full, g->tables[t], what))
                    fail_msg("%s: nothing noticed a truncated table", what);
                lsm_close(db);
            }
            copy_drop(c);
        }
    }
}

/* ---- blob files ---- */

static void test_blob_damage(void **state)
{
    (void)state;
    trng r;
    trng_seed(&r, test_seed("blob_damage", 17));
    if (g->nblobs < 1)
        fail_msg("no .blob file in the database although values up to 73000 bytes were flushed with "
                 "blob_threshold 2048");
    int per_file = (int)test_scale(24), cases = 0, on_read = 0, unnoticed = 0;
    for (int t = 0; t < g->nblobs; t++) {
        char *bp = path_join(g->dir, g->blobs[t]);
        long long size = file_size(bp);
        free(bp);
        for (int j = 0; j < per_file + 3; j++) {
            char *c = copy_new(g);
            char *p = path_join(c, g->blobs[t]);
            char what[160];
            if (j < per_file) {
                uint64_t off = j < 3 ? (uint64_t[]){ 0, 8, 12 }[j] : trng_below(&r, (uint64_t)size);
                snprintf(what, sizeof what, "%s flipped at %" PRIu64 " of %lld", g->blobs[t], off,
                         size);
                assert_int_equal(file_flip(p, off), 0);
            } else if (j == per_file) {
                snprintf(what, sizeof what, "%s removed", g->blobs[t]);
                assert_int_equal(unlink(p), 0);
            } else {
                uint64_t len = j == per_file + 1 ? 0 : (uint64_t)size / 2;
                snprintf(what, sizeof what, "%s truncated to %" PRIu64, g->blobs[t], len);
                assert_int_equal(file_truncate(p, len), 0);
            }
            free(p);
            lsm_db *db;
            int rc = open_copy(c, &db);
            cases++;
            if (rc == LSM_CORRUPT) {
                if (!strstr(lsm_errmsg(NULL), g->blobs[t]))
                    fail_msg("%s: open refused, message does not name the file: '%s'", what,
                             lsm_errmsg(NULL));
            } else if (rc != LSM_OK) {
                fail_msg("%s: open = %d (%s) %s", what, rc, lsm_strerror(rc), lsm_errmsg(NULL));
            } else {
                int detected;
                if (j < per_file) {
                    detected = check_answers(db, g->full, g->blobs[t], what);
                } else {
                    /* "offset" need not apply to a missing file: check the name only. */
                    detected = check_answers_named(db, g->full, g->blobs[t], what);
                }
                if (detected)
                    on_read++;
                else if (j >= per_file)
                    fail_msg("%s: nothing noticed", what);
                else
                    unnoticed++;
                lsm_close(db);
            }
            copy_drop(c);
        }
    }
    printf("# blob_damage: %d cases over %d blob files: %d reported on read, %d harmless\n", cases,
           g->nblobs, on_read, unnoticed);
}

/* ---- the write-ahead log ---- */

typedef struct logrec {
    uint64_t off, len;         /* record offset and payload length */
} logrec;

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Finds the records of a log (lsm-format(5)): a version-1 log ends at the end of the file; a
   version-2 log (the WAL) ends where preallocated zeros begin, and its sync marks go to marks
   (their offsets; may be NULL with cap 0), not recs. *size is where the records end. */
static int parse_log(const char *path, logrec *recs, int cap, uint64_t *marks, int *nmarks,
                     uint64_t *size)
{
    uint8_t *p;
    size_t n;
    if (file_read(path, &p, &n) != 0)
        fail_msg("reading %s", path);
    int v2 = n >= LOG_HEADER && le32(p + 8) == 2;
    int cnt = 0, nm = 0;
    uint64_t off = LOG_HEADER;
    while (off + 8 <= n) {
        uint32_t len = le32(p + off + 4);
        if (v2 && len == 0 && le32(p + off) == 0)
            break;                              /* preallocated zeros */
        if (v2 && len == 0x80000008u) {
            if (marks && nm == 64)
                fail_msg("%s: too many sync marks", path);
            if (marks)
                marks[nm] = off;
            nm++;
            off += 16;
            continue;
        }
        if (off + 8 + len > n || cnt == cap)
            break;
        recs[cnt].off = off;
        recs[cnt].len = len;
        cnt++;
        off += 8 + len;
    }
    for (uint64_t i = off; v2 && i < n; i++)
        if (p[i])
            fail_msg("%s: non-zero byte at %" PRIu64 " after the records, which end at %" PRIu64,
                     path, i, off);
    if (!v2 && off != n)
        fail_msg("%s: records do not end at the end of the file (%" PRIu64 " vs %zu)", path, off, n);
    if (nmarks)
        *nmarks = nm;
    *size = off;
    free(p);
    return cnt;
}

/* The state with the first j log records applied. */
static model *state_with(base *b, long j)
{
    model *m = model_clone(b->before_wal);
    for (long i = 0; i < j; i++)
        hbatch_apply(&b->wal.b[i], m);
    return m;
}

static void expect_state(const char *dir, const model *want, const char *what)
{
    lsm_db *db;
    int rc = open_copy(dir, &db);
    if (rc != LSM_OK)
        fail_msg("%s: open = %d (%s) %s, expected success", what, rc, lsm_strerror(rc),
                 lsm_errmsg(NULL));
    check_db_equals_model(db, want, what);
    lsm_close(db);
}

/* Opening dir must fail with LSM_CORRUPT and a message naming file (and an offset while
   g_need_offset is set). */
static void expect_corrupt(const char *dir, const char *file, const char *what)
{
    lsm_db *db;
    int rc = open_copy(dir, &db);
    if (rc == LSM_OK)
        lsm_close(db);
    if (rc != LSM_CORRUPT)
        fail_msg("%s: open = %d (%s) %s, expected LSM_CORRUPT", what, rc, lsm_strerror(rc),
                 rc == LSM_OK ? "" : lsm_errmsg(NULL));
    expect_msg(lsm_errmsg(NULL), file, what);
}

static void test_wal_flips(void **state)
{
    (void)state;
    trng r;
    trng_seed(&r, test_seed("wal_flips", 7));
    char *lp = path_join(g->dir, g->log_name);
    logrec recs[NWAL + 8];
    uint64_t size, marks[64];
    int nmarks;
    int n = parse_log(lp, recs, NWAL + 8, marks, &nmarks, &size);
    free(lp);
    if (n != NWAL)
        fail_msg("%s holds %d records, expected one per synced write (%d)", g->log_name, n, NWAL);
    /* Each synced write follows the sync mark that vouches for what came before it (for the first,
       the header, synced when the log was made). */
    if (nmarks != NWAL)
        fail_msg("%s holds %d sync marks, expected %d", g->log_name, nmarks, NWAL);
    for (int i = 0; i < nmarks; i++)
        if (marks[i] != (i ? recs[i - 1].off + 8 + recs[i - 1].len : LOG_HEADER) ||
            marks[i] + 16 != recs[i].off)
            fail_msg("%s: sync mark %d at %" PRIu64 " is not right before record %d",
                     g->log_name, i, marks[i], i);

    /* The header, and records before the last: corruption, named with file and offset. */
    uint64_t hdr[] = { 0, 7, 8, 12, 15 };
    for (int j = 0; j < 5; j++) {
        char what[128];
        snprintf(what, sizeof what, "log header flipped at %" PRIu64, hdr[j]);
        char *c = copy_new(g);
        flip_in(c, g->log_name, hdr[j]);
        expect_corrupt(c, g->log_name, what);
        copy_drop(c);
    }
    int cases = (int)test_scale(30);
    for (int j = 0; j < cases; j++) {
        int i = (int)trng_below(&r, (uint64_t)n - 1);
        uint64_t off;
        const char *part;
        if (j % 3 == 0) {
            off = recs[i].off + trng_below(&r, 4);
            part = "checksum";
        } else if (j % 3 == 1) {
            off = recs[i].off + 4 + trng_below(&r, 4);
            part = "length";
        } else {
            off = recs[i].off + 8 + trng_below(&r, recs[i].len);
            part = "payload";
        }
        char what[160];
        snprintf(what, sizeof what, "log record %d of %d: %s byte at %" PRIu64 " flipped", i, n, part,
                 off);
        char *c = copy_new(g);
        flip_in(c, g->log_name, off);
        expect_corrupt(c, g->log_name, what);
        copy_drop(c);
    }

    /* A damaged sync mark: corruption while a later mark vouches for the bytes it covers. */
    model *without_last = state_with(g, n - 1);
    for (int j = 0; j < 6; j++) {
        int i = j < 3 ? (int)trng_below(&r, (uint64_t)nmarks - 1) : nmarks - 1;
        uint64_t off = marks[i] + trng_below(&r, 16);
        char what[160];
        snprintf(what, sizeof what, "sync mark %d of %d: byte at %" PRIu64 " flipped", i, nmarks,
                 off);
        char *c = copy_new(g);
        flip_in(c, g->log_name, off);
        if (i < nmarks - 1)
            expect_corrupt(c, g->log_name, what);
        else    /* the last mark has none after it: the last write goes as a torn tail would */
            expect_state(c, without_last, what);
        copy_drop(c);
    }

    /* The last record: a torn tail, dropped; everything before it intact. */
    logrec last = recs[n - 1];
    uint64_t offs[] = { last.off, last.off + 3, last.off + 8, last.off + 8 + last.len / 2,
                        last.off + 8 + last.len - 1 };
    for (int j = 0; j < 5; j++) {
        char what[128];
        snprintf(what, sizeof what, "last log record flipped at %" PRIu64, offs[j]);
        char *c = copy_new(g);
        flip_in(c, g->log_name, offs[j]);
        expect_state(c, without_last, what);
        copy_drop(c);
    }
    /* Its length field: dropped as torn, or reported. */
    for (int j = 4; j < 8; j++) {
        char what[128];
        snprintf(what, sizeof what, "last log record's length byte %d flipped", j - 4);
        char *c = copy_new(g);
        flip_in(c, g->log_name, last.off + (uint64_t)j);
        lsm_db *db;
        int rc = open_copy(c, &db);
        if (rc == LSM_OK) {
            check_db_equals_model(db, without_last, what);
            lsm_close(db);
        } else if (rc == LSM_CORRUPT) {
            expect_msg(lsm_errmsg(NULL), g->log_name, what);
        } else {
            fail_msg("%s: open = %d (%s)", what, rc, lsm_strerror(rc));
        }
        copy_drop(c);
    }
    model_free(without_last);
}

static void test_wal_truncated(void **state)
{
    (void)state;
    trng r;
    trng_seed(&r, test_seed("wal_truncated", 11));
    char *lp = path_join(g->dir, g->log_name);
    logrec recs[NWAL + 8];
    uint64_t size;
    int n = parse_log(lp, recs, NWAL + 8, NULL, NULL, &size);
    free(lp);
    int cases = (int)test_scale(40);
    for (int j = 0; j < cases; j++) {
        uint64_t len;
        if (j < 4)
            len = (uint64_t[]){ 0, 8, LOG_HEADER, size - 1 }[j];
        else if (j < 10)
            len = recs[trng_below(&r, (uint64_t)n)].off;            /* at a record boundary */
        else
            len = trng_below(&r, size + 1);
        long complete = 0;
        for (int i = 0; i < n; i++)
            if (recs[i].off + 8 + recs[i].len <= len)
                complete = i + 1;
        char what[128];
        snprintf(what, sizeof what, "log truncated to %" PRIu64 " of %" PRIu64 " (%ld whole records)",
                 len, size, complete);
        char *c = copy_new(g);
        char *p = path_join(c, g->log_name);
        assert_int_equal(file_truncate(p, len), 0);
        free(p);
        model *want = state_with(g, complete);
        expect_state(c, want, what);
        model_free(want);
        copy_drop(c);
    }
}

/* A torn tail in a log that a newer log follows: normal while the newer logs hold no writes (an
   open that crashed after making its new log), damage once one does. */
static void test_wal_torn_then_newer(void **state)
{
    (void)state;
    char *lp = path_join(g->dir, g->log_name);
    logrec recs[NWAL + 8];
    uint64_t size;
    int n = parse_log(lp, recs, NWAL + 8, NULL, NULL, &size);
    free(lp);
    unsigned long long num = strtoull(g->log_name, NULL, 10);
    char newer[64];
    snprintf(newer, sizeof newer, "%06llu.log", num + 1000);
    model *without_last = state_with(g, n - 1);
    for (int writes = 0; writes < 2; writes++) {
        char what[160];
        snprintf(what, sizeof what, "last record of %s flipped, newer %s with%s writes",
                 g->log_name, newer, writes ? "" : "out");
        char *c = copy_new(g);
        flip_in(c, g->log_name, recs[n - 1].off + 8 + recs[n - 1].len / 2);
        char *np = path_join(c, newer), err[LSM_ERRLEN];
        logw *w;
        assert_int_equal(logw_create_marked(env_posix(), np, WAL_MAGIC, &w, err), LSM_OK);
        if (writes) {
            /* One batch: sequence 2^40, one put of "zz" = "v". */
            uint8_t b[12 + 1 + 1 + 2 + 1 + 1];
            enc_fixed64(b, 1ull << 40);
            enc_fixed32(b + 8, 1);
            memcpy(b + 12, "\x01\x02zz\x01v", 6);
            assert_int_equal(logw_append(w, b, sizeof b, err), LSM_OK);
        }
        assert_int_equal(logw_seal(w, err), LSM_OK);
        assert_int_equal(logw_close(w, err), LSM_OK);
        free(np);
        if (writes) {
            g_need_offset = 0;
            expect_corrupt(c, g->log_name, what);
            expect_msg(lsm_errmsg(NULL), newer, what);
        } else {
            expect_state(c, without_last, what);
        }
        copy_drop(c);
    }
    model_free(without_last);
}

/* ---- manifest, CURRENT, missing files ---- */

static void test_manifest_flips(void **state)
{
    (void)state;
    trng r;
    trng_seed(&r, test_seed("manifest_flips", 13));
    char *mp = path_join(g->dir, g->manifest_name);
    logrec recs[256];
    uint64_t size;
    int n = parse_log(mp, recs, 256, NULL, NULL, &size);
    free(mp);
    assert_true(n >= 1);
    int cases = (int)test_scale(40), lost = 0;
    char lostwhat[800] = "", lostrecs[200] = "";
    for (int j = 0; j < cases; j++) {
        uint64_t off;
        if (j < 4)
            off = (uint64_t[]){ 0, 8, 12, 15 }[j];
        else if (j < 10)
            off = recs[n - 1].off + trng_below(&r, 8 + recs[n - 1].len);  /* the last record */
        else
            off = LOG_HEADER + trng_below(&r, size - LOG_HEADER);
        int rec = -1;
        for (int i = 0; i < n; i++)
            if (off >= recs[i].off && off < recs[i].off + 8 + recs[i].len)
                rec = i;
        char what[160];
        snprintf(what, sizeof what, "%s (%d records) flipped at %" PRIu64 " (record %d)",
                 g->manifest_name, n, off, rec);
        char *c = copy_new(g);
        flip_in(c, g->manifest_name, off);
        lsm_db *db;
        int rc = open_copy(c, &db);
        if (rc == LSM_CORRUPT) {
            if (!strstr(lsm_errmsg(NULL), "MANIFEST"))
                fail_msg("%s: message does not name the manifest: '%s'", what, lsm_errmsg(NULL));
        } else if (rc == LSM_OK) {
            /* Accepted (a torn tail, say): then nothing may be lost. */
            model *got = NULL;
            int src = model_from_db(db, &got);
            char why[300] = "";
            if (src != LSM_OK || model_diff(g->full, got, why, sizeof why)) {
                lost++;
                snprintf(lostwhat, sizeof lostwhat, "%s: scan %d, %s", what, src, why);
                size_t l = strlen(lostrecs);
                snprintf(lostrecs + l, sizeof lostrecs - l, " %d", rec);
            }
            model_free(got);
            lsm_close(db);
        } else {
            fail_msg("%s: open = %d (%s) %s", what, rc, lsm_strerror(rc), lsm_errmsg(NULL));
        }
        copy_drop(c);
    }
    if (lost)
        fail_msg("%d of %d manifest flips opened without error and silently lost data (flipped "
                 "records:%s of %d); e.g. %s", lost, cases, lostrecs, n, lostwhat);
}

/* Opens c expecting failure whose message contains needle; then runs fix and expects the full
   database (the failed open destroyed nothing). */
static void expect_refused(char *c, const char *needle, const char *what)
{
    lsm_db *db;
    int rc = open_copy(c, &db);
    if (rc == LSM_OK) {
        model *got = NULL;
        int src = model_from_db(db, &got);
        char why[300] = "";
        int differs = src != LSM_OK || model_diff(g->full, got, why, sizeof why);
        model_free(got);
        lsm_close(db);
        fail_msg("%s: open succeeded (%s)", what,
                 differs ? "and the database lost data" : "though with all data");
    }
    if (!strstr(lsm_errmsg(NULL), needle))
        fail_msg("%s: open = %d (%s), message does not name %s: '%s'", what, rc, lsm_strerror(rc),
                 needle, lsm_errmsg(NULL));
}

static void restore(const char *c, const char *name)
{
    char *from = path_join(g->dir, name), *to = path_join(c, name);
    uint8_t *p;
    size_t n;
    assert_int_equal(file_read(from, &p, &n), 0);
    assert_int_equal(file_write(to, p, n), 0);
    free(p);
    free(from);
    free(to);
}

static void after_restore(const char *c, const char *what)
{
    char w[160];
    snprintf(w, sizeof w, "%s, then restored", what);
    expect_state(c, g->full, w);
}

/* A manifest whose edits put overlapping tables into level 1 (the fixture's L0 tables overlap)
   describes a tree no compaction can make, and reads would answer from the wrong table: the open
   must refuse it, naming the manifest and the level, and destroy nothing. The manifest is written
   anew with the original edits and one more that moves two L0 tables to level 1. */
static void test_manifest_overlap(void **state)
{
    (void)state;
    char *mp = path_join(g->dir, g->manifest_name);
    logrec recs[256];
    uint64_t size;
    int n = parse_log(mp, recs, 256, NULL, NULL, &size);
    uint8_t *m;
    size_t mn;
    assert_int_equal(file_read(mp, &m, &mn), 0);
    free(mp);
    /* The tables the edits add to level 0 (tag 5: level, number, size, smallest, largest; tag 6:
       the same, then the blob files it refers to), as their encoded bytes after the level. */
    struct { const uint8_t *p; size_t n; uint64_t tag, number; } l0[64];
    int nl0 = 0;
    for (int i = 0; i < n; i++) {
        const uint8_t *p = m + recs[i].off + 8, *end = p + recs[i].len;
        while (p < end) {
            uint64_t tag, v;
            p = dec_varint(p, end, &tag);
            assert_non_null(p);
            if (tag == 1 || tag == 2 || tag == 3) {
                p = dec_varint(p, end, &v);
            } else if (tag == 4) {
                p = dec_varint(p, end, &v);
                p = dec_varint(p, end, &v);
            } else if (tag == 5 || tag == 6) {
                const uint8_t *start = p;
                uint64_t level, number, len;
                p = dec_varint(p, end, &level);
                p = dec_varint(p, end, &number);
                p = dec_varint(p, end, &v);
                for (int k = 0; k < 2; k++) {
                    p = dec_varint(p, end, &len);
                    p += len;
                }
                for (uint64_t b = 0, nb = 0; tag == 6 && b <= nb; b++)
                    p = dec_varint(p, end, b == 0 ? &nb : &v);
                if (level == 0 && nl0 < 64) {
                    l0[nl0].tag = tag;
                    l0[nl0].p = start + 1;       /* level 0 is one byte */
                    l0[nl0].n = (size_t)(p - start - 1);
                    l0[nl0].number = number;
                    nl0++;
                }
            } else {
                fail_msg("%s: unexpected tag %" PRIu64 " in the fixture's manifest", g->manifest_name, tag);
            }
            assert_non_null(p);
        }
    }
    if (nl0 < 2)
        fail_msg("the fixture's manifest adds %d tables to level 0, expected 2 or more", nl0);
    buf extra = { 0 };
    for (int k = 0; k < 2; k++) {
        buf_put_varint(&extra, 4);
        buf_put_varint(&extra, 0);
        buf_put_varint(&extra, l0[k].number);
    }
    for (int k = 0; k < 2; k++) {
        buf_put_varint(&extra, l0[k].tag);
        buf_put_varint(&extra, 1);
        buf_append(&extra, l0[k].p, l0[k].n);
    }
    char *c = copy_new(g);
    char *cp = path_join(c, g->manifest_name);
    char err[LSM_ERRLEN];
    logw *w;
    assert_int_equal(logw_create(env_posix(), cp, MANIFEST_MAGIC, &w, err), LSM_OK);
    for (int i = 0; i < n; i++)
        assert_int_equal(logw_append(w, m + recs[i].off + 8, recs[i].len, err), LSM_OK);
    assert_int_equal(logw_append(w, extra.p, extra.len, err), LSM_OK);
    assert_int_equal(logw_close(w, err), LSM_OK);
    free(cp);
    free(m);
    buf_free(&extra);
    char what[96];
    snprintf(what, sizeof what, "tables %06" PRIu64 " and %06" PRIu64 " moved to level 1",
             l0[0].number, l0[1].number);
    expect_refused(c, g->manifest_name, what);
    if (!strstr(lsm_errmsg(NULL), "level 1") || !strstr(lsm_errmsg(NULL), "overlap"))
        fail_msg("%s: message does not say level 1 overlaps: '%s'", what, lsm_errmsg(NULL));
    restore(c, g->manifest_name);
    after_restore(c, what);
    copy_drop(c);
}

static void test_current_missing(void **state)
{
    (void)state;
    char *c = copy_new(g);
    char *p = path_join(c, "CURRENT");
    assert_int_equal(unlink(p), 0);
    lsm_options o;
    opts(&o, LSM_COMPRESSION_NONE);   /* create_if_missing on: must still not start afresh */
    lsm_db *db = NULL;
    int rc = lsm_open(c, &o, &db);
    if (rc == LSM_OK) {
        model *got = NULL;
        model_from_db(db, &got);
        size_t have = got ? model_count(got) : 0;
        model_free(got);
        lsm_close(db);
        char **names;
        int nt = dir_names(c, "", ".sst", &names);
        names_free(names, nt);
        fail_msg("CURRENT removed, create_if_missing=1: open succeeded with %zu of %zu keys, and "
                 "%d of %d tables remain in the directory (expected a refusal naming CURRENT)",
                 have, model_count(g->full), nt, g->ntables);
    }
    if (!strstr(lsm_errmsg(NULL), "CURRENT"))
        fail_msg("CURRENT removed: open = %d, message does not name CURRENT: '%s'", rc,
                 lsm_errmsg(NULL));
    restore(c, "CURRENT");
    after_restore(c, "CURRENT removed");
    free(p);
    copy_drop(c);
    /* With create_if_missing off too (on a fresh copy: the open above wrote a new manifest). */
    c = copy_new(g);
    p = path_join(c, "CURRENT");
    assert_int_equal(unlink(p), 0);
    expect_refused(c, "CURRENT", "CURRENT removed, create_if_missing=0");
    restore(c, "CURRENT");
    after_restore(c, "CURRENT removed (2)");
    free(p);
    copy_drop(c);
}

static void test_current_bad(void **state)
{
    (void)state;
    const char *bad[] = { "MANIFEST-999999\n", "garbage", "", "MANIFEST-\n", "MANIFEST-00000x\n" };
    for (int j = 0; j < 5; j++) {
        char what[96];
        snprintf(what, sizeof what, "CURRENT = \"%s\"", show(bad[j], strlen(bad[j])));
        char *c = copy_new(g);
        char *p = path_join(c, "CURRENT");
        assert_int_equal(file_write(p, bad[j], strlen(bad[j])), 0);
        free(p);
        expect_refused(c, j == 0 ? "MANIFEST-999999" : "CURRENT", what);
        restore(c, "CURRENT");
        after_restore(c, what);
        copy_drop(c);
    }
    /* The manifest CURRENT names is gone. */
    char *c = copy_new(g);
    char *p = path_join(c, g->manifest_name);
    assert_int_equal(unlink(p), 0);
    free(p);
    expect_refused(c, g->manifest_name, "manifest removed");
    restore(c, g->manifest_name);
    after_restore(c, "manifest removed");
    copy_drop(c);
}

static void test_table_missing(void **state)
{
    (void)state;
    for (int t = 0; t < g->ntables; t++) {
        char what[96];
        snprintf(what, sizeof what, "%s removed", g->tables[t]);
        char *c = copy_new(g);
        char *p = path_join(c, g->tables[t]);
        assert_int_equal(unlink(p), 0);
        free(p);
        lsm_db *db;
        int rc = open_copy(c, &db);
        if (rc == LSM_OK) {
            /* Allowed only if reads then report the table. */
            if (!check_answers_named(db, g->full, g->tables[t], what))
                fail_msg("%s: open succeeded and nothing noticed", what);
            lsm_close(db);
        } else {
            if (rc != LSM_CORRUPT)
                fail_msg("%s: open = %d (%s), expected LSM_CORRUPT", what, rc, lsm_strerror(rc));
            if (!strstr(lsm_errmsg(NULL), g->tables[t]))
                fail_msg("%s: message does not name the table: '%s'", what, lsm_errmsg(NULL));
        }
        restore(c, g->tables[t]);
        after_restore(c, what);
        copy_drop(c);
    }
}

/* A lookup opens every table that may hold its key before it searches the first. A damaged older
   table must still cost only the keys it alone answers: keys a newer table holds are read as
   before, and the rest fail naming the table. */
static void test_newer_table_answers(void **state)
{
    (void)state;
    char *dir = tmpdir_new("newer");
    lsm_options o;
    opts(&o, 0);
    lsm_db *db;
    char k[16], v[32];
    assert_int_equal(lsm_open(dir, &o, &db), LSM_OK);
    for (int i = 0; i < 100; i++) {
        snprintf(k, sizeof k, "s%03d", i);
        snprintf(v, sizeof v, "old-%d", i);
        assert_int_equal(lsm_put(db, k, strlen(k), v, strlen(v)), LSM_OK);
    }
    assert_int_equal(lsm_compact(db), LSM_OK);
    char **old;
    int nold = dir_names(dir, "", ".sst", &old);
    assert_true(nold >= 1);
    for (int i = 0; i < 100; i += 2) {
        snprintf(k, sizeof k, "s%03d", i);
        snprintf(v, sizeof v, "new-%d", i);
        assert_int_equal(lsm_put(db, k, strlen(k), v, strlen(v)), LSM_OK);
    }
    assert_int_equal(lsm_flush(db), LSM_OK);
    assert_int_equal(lsm_close(db), LSM_OK);
    /* The footer's checksum: the table can no longer be opened at all. */
    for (int t = 0; t < nold; t++) {
        char *p = path_join(dir, old[t]);
        assert_int_equal(file_flip(p, (uint64_t)file_size(p) - 2), 0);
        free(p);
    }
    assert_int_equal(lsm_open(dir, &o, &db), LSM_OK);
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < 100; i++) {
            snprintf(k, sizeof k, "s%03d", i);
            void *got = NULL;
            size_t gl = 0;
            int rc = lsm_get(db, k, strlen(k), &got, &gl);
            if (i % 2 == 0) {
                snprintf(v, sizeof v, "new-%d", i);
                if (rc != LSM_OK || gl != strlen(v) || memcmp(got, v, gl) != 0)
                    fail_msg("get(%s) = %d '%s', want '%s' from the newer table", k, rc,
                             rc == LSM_OK ? show(got, gl) : lsm_errmsg(db), v);
            } else {
                if (rc != LSM_CORRUPT)
                    fail_msg("get(%s) = %d, want LSM_CORRUPT from the damaged table", k, rc);
                int named = 0;
                for (int t = 0; t < nold; t++)
                    named |= strstr(lsm_errmsg(db), old[t]) != NULL;
                if (!named)
                    fail_msg("get(%s): message does not name the damaged table: '%s'", k,
                             lsm_errmsg(db));
            }
            free(got);
        }
    lsm_close(db);
    names_free(old, nold);
    tmpdir_remove(dir);
    free(dir);
}

static void test_pristine(void **state)
{
    (void)state;
    /* The undamaged copy opens with everything: the baseline every other case departs from. */
    char *c = copy_new(g);
    expect_state(c, g->full, "undamaged copy");
    copy_drop(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pristine),
        cmocka_unit_test(test_table_flips),
        cmocka_unit_test(test_table_flips_lz4),
        cmocka_unit_test(test_table_truncated),
        cmocka_unit_test(test_table_missing),
        cmocka_unit_test(test_newer_table_answers),
        cmocka_unit_test(test_blob_damage),
        cmocka_unit_test(test_wal_flips),
        cmocka_unit_test(test_wal_truncated),
        cmocka_unit_test(test_wal_torn_then_newer),
        cmocka_unit_test(test_manifest_flips),
        cmocka_unit_test(test_manifest_overlap),
        cmocka_unit_test(test_current_missing),
        cmocka_unit_test(test_current_bad),
    };
    return cmocka_run_group_tests_name("engine corruption (test_corrupt)", tests, group_setup,
                                       group_teardown);
}
