/*
 * test_fault.c — the engine on the fault-injecting in-memory env (env.h faultenv_*): power loss at
 * random points of a workload, a full disk or failing disk under a write, short writes, a failed
 * fsync, and a power cut after each mutating call of an lsm_compact_range in turn.
 *
 * The invariant checked after every power loss: reopening succeeds, and the database equals the
 * workload's model after exactly some prefix of its batches — never a mixture, never a torn batch —
 * and that prefix contains every batch acknowledged as durable (written with sync, or before a
 * successful lsm_sync or lsm_close). A batch the engine refused with an error may be in the prefix
 * or not, but whole. While the "machine is dead" (every mutating call fails), nothing can become
 * durable, so the prefix ends at the first refused batch at the latest.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "faultenv.h"
#include "helper_model.h"
#include "lsm.h"
#include "options.h"

#define DBDIR "/db"

static char g_where[256];   /* what the test is doing, for the watchdog */

static void watchdog(int sig)
{
    (void)sig;
    char msg[400];
    int n = snprintf(msg, sizeof msg, "\nnot ok - test_fault: HANG (no progress for 300 s) in %s\n",
                     g_where);
    if (write(2, msg, (size_t)n) < 0)
        _exit(3);
    _exit(3);
}

static void arm_watchdog(void)
{
    signal(SIGALRM, watchdog);
    alarm(300);
}

/* A workload on one env: the state before `h` (base) and the batches since. */
typedef struct wl {
    uint64_t seed;
    trng r;
    lsm_env *env;
    lsm_db *db;
    model *base;            /* the state the history starts from */
    history h;              /* batches attempted since base */
    long durable;           /* the first `durable` batches of h must survive */
    long first_failed;      /* index in h of the first refused batch, -1 if none */
    int nkeys;
    size_t memtable;
    int failures;           /* refused batches */
    int background;         /* lsm_options.background_compaction */
    size_t table_bytes;     /* lsm_options.table_bytes */
    uint64_t level1_bytes;  /* lsm_options.level1_bytes */
    char ctx[160];
} wl;

#define FAILW(W, ...) do { \
        char m_[1200]; \
        snprintf(m_, sizeof m_, __VA_ARGS__); \
        fail_msg("seed %" PRIu64 " %s: %s", (W)->seed, (W)->ctx, m_); \
    } while (0)

static void wl_init(wl *w, uint64_t seed, int nkeys, size_t memtable)
{
    memset(w, 0, sizeof *w);
    w->seed = seed;
    trng_seed(&w->r, seed);
    w->env = faultenv_new();
    w->base = model_new();
    history_init(&w->h);
    w->first_failed = -1;
    w->nkeys = nkeys;
    w->memtable = memtable;
    w->background = 1;
    w->table_bytes = 16 << 10;
    w->level1_bytes = 64 << 10;
}

static void wl_free(wl *w)
{
    if (w->db)
        lsm_close(w->db);
    faultenv_free(w->env);
    model_free(w->base);
    history_free(&w->h);
}

static int wl_open(wl *w)
{
    lsm_options o;
    options_defaults(&o);
    o.env = w->env;
    o.memtable_bytes = w->memtable;
    o.block_bytes = 1024;
    o.table_bytes = w->table_bytes;
    o.level1_bytes = w->level1_bytes;
    o.blob_threshold = 2048;   /* exercise blob files too */
    o.background_compaction = w->background;
    w->db = NULL;
    return lsm_open(DBDIR, &o, &w->db);
}

/* Writes one random batch; records it, its sync flag and whether the engine acknowledged it. */
static int wl_batch(wl *w, lsm_batch *lb, int sync)
{
    hbatch *b = history_add(&w->h);
    long idx = w->h.n - 1;
    int n = 1 + (int)trng_below(&w->r, 6);
    char k[32];
    uint8_t v[4200];
    for (int i = 0; i < n; i++) {
        int kl = snprintf(k, sizeof k, "key%04d", (int)trng_below(&w->r, (uint64_t)w->nkeys));
        if (trng_chance(&w->r, 20)) {
            hbatch_del(b, k, (size_t)kl);
            continue;
        }
        size_t vl = trng_chance(&w->r, 5) ? 0 : trng_chance(&w->r, 3) ? 2048 + trng_below(&w->r, 2000)
                                                                      : 8 + trng_below(&w->r, 200);
        int h = snprintf((char *)v, sizeof v, "b%ld/%d:", idx, i);
        for (size_t j = 0; j < vl; j++)
            v[j] = j < (size_t)h ? v[j] : (uint8_t)('a' + (idx + (long)j) % 26);
        hbatch_put(b, k, (size_t)kl, v, vl);
    }
    b->sync = sync;
    hbatch_to_lsm(b, lb);
    int rc = lsm_write(w->db, lb, sync);
    b->acked = rc == LSM_OK;
    if (rc == LSM_OK) {
        if (sync)
            w->durable = w->h.n;
    } else {
        w->failures++;
        if (w->first_failed < 0)
            w->first_failed = idx;
        if (rc != LSM_IOERR && rc != LSM_NOSPACE && rc != LSM_CLOSED)
            FAILW(w, "lsm_write of batch %ld: %d (%s), expected LSM_IOERR, LSM_NOSPACE or "
                  "LSM_CLOSED", idx, rc, lsm_strerror(rc));
        if (!lsm_errmsg(w->db)[0])
            FAILW(w, "lsm_write failed with %d but lsm_errmsg is empty", rc);
    }
    return rc;
}

/* After power loss and reopen: the database must equal base + some prefix of h, as the header says.
   kmax bounds the prefix; refused batches below it may each be in or out. Then the recovered state
   becomes the new base. Returns the prefix length found. */
static long wl_check_prefix(wl *w, long kmax)
{
    model *got = NULL;
    int rc = model_from_db(w->db, &got);
    if (rc != LSM_OK)
        FAILW(w, "full scan after reopen: %d (%s) %s", rc, lsm_strerror(rc), lsm_errmsg(w->db));
    long kmin = w->durable;
    if (kmax > w->h.n)
        kmax = w->h.n;
    if (kmax < kmin)
        kmax = kmin;   /* a durable batch after a refused one: the refused one is optional */
    /* Refused batches followed by an acknowledged one may each be in or out. A run of refused
       batches at the end is taken as part of the prefix, in order (an engine that logs them at
       all logs them in order). */
    long last_acked = -1;
    for (long i = 0; i < kmax; i++)
        if (w->h.b[i].acked)
            last_acked = i;
    long opt[12];
    int nopt = 0;
    for (long i = 0; i < last_acked; i++)
        if (!w->h.b[i].acked) {
            if (nopt == 12)
                FAILW(w, "too many refused batches (%d) before the prefix bound to check", nopt);
            opt[nopt++] = i;
        }
    for (long mask = 0; mask < (1L << nopt); mask++) {
        model *m = model_clone(w->base);
        int o = 0;
        for (long i = 0; i <= kmax; i++) {
            if (i >= kmin && !model_diff(m, got, NULL, 0)) {
                model_free(w->base);
                w->base = got;
                model_free(m);
                return i;
            }
            if (i == kmax)
                break;
            if (o < nopt && opt[o] == i) {
                int in = (int)((mask >> o) & 1);
                o++;
                if (!in)
                    continue;
            }
            hbatch_apply(&w->h.b[i], m);
        }
        model_free(m);
    }
    /* Describe the mismatch against the smallest legal state and the largest. */
    model *lo = model_clone(w->base), *hi;
    for (long i = 0; i < kmin; i++)
        hbatch_apply(&w->h.b[i], lo);
    hi = model_clone(lo);
    for (long i = kmin; i < kmax; i++)
        hbatch_apply(&w->h.b[i], hi);
    char why1[300], why2[300];
    model_diff(lo, got, why1, sizeof why1);
    model_diff(hi, got, why2, sizeof why2);
    FAILW(w, "recovered state is no prefix of the history: %ld batches attempted, first %ld durable, "
             "prefix bound %ld, %d refused. vs shortest legal (first=legal, second=recovered): %s; "
             "vs longest: %s", w->h.n, kmin, kmax, nopt, why1, why2);
    return -1;
}

/* Power loss, reopen (must succeed), prefix check; history restarts from the recovered state.
   With recovery_faults, the first reopen attempts meet a dead machine part way through recovery,
   followed by another power loss, before the real reopen. */
static long wl_crash_and_check_x(wl *w, long kmax, int recovery_faults)
{
    if (w->db) {
        lsm_close(w->db);      /* may fail on a dead machine; must not crash or hang */
        w->db = NULL;
    }
    faultenv_power_loss(w->env);
    for (int i = 0; i < recovery_faults; i++) {
        faultenv_fail_after(w->env, (long)trng_below(&w->r, 40), EIO);
        if (wl_open(w) == LSM_OK)
            lsm_close(w->db);
        w->db = NULL;
        faultenv_power_loss(w->env);
    }
    int rc = wl_open(w);
    if (rc != LSM_OK)
        FAILW(w, "reopen after power loss: %d (%s) %s", rc, lsm_strerror(rc), lsm_errmsg(NULL));
    long k = wl_check_prefix(w, kmax);
    history_free(&w->h);
    history_init(&w->h);
    w->durable = 0;
    w->first_failed = -1;
    return k;
}

static long wl_crash_and_check(wl *w, long kmax)
{
    return wl_crash_and_check_x(w, kmax, 0);
}

/* ---- (a) power loss at random points ---- */

/* Runs nbatches random batches (a third synced, an occasional lsm_sync), stopping `extra` batches
   after the first refusal. */
static void wl_run(wl *w, long nbatches, int extra)
{
    lsm_batch *lb = lsm_batch_new();
    int after_fail = 0;
    for (long i = 0; i < nbatches; i++) {
        int rc = wl_batch(w, lb, trng_chance(&w->r, 30));
        if (rc != LSM_OK && ++after_fail > extra)
            break;
        if (after_fail)
            continue;
        if (trng_chance(&w->r, 3)) {
            long n = w->h.n;
            if (lsm_sync(w->db) == LSM_OK && w->first_failed < 0)
                w->durable = n;
        }
        if (trng_chance(&w->r, 1)) {
            /* reads must keep working while things break */
            char k[32];
            int kl = snprintf(k, sizeof k, "key%04d", (int)trng_below(&w->r, (uint64_t)w->nkeys));
            void *v = NULL;
            size_t vl;
            int g = lsm_get(w->db, k, (size_t)kl, &v, &vl);
            if (g != LSM_OK && g != LSM_NOTFOUND && g != LSM_IOERR && g != LSM_CLOSED)
                FAILW(w, "lsm_get(%s) during the workload: %d (%s) %s", k, g, lsm_strerror(g),
                      lsm_errmsg(w->db));
            free(v);
        }
    }
    lsm_batch_free(lb);
}

static void test_power_loss_random(void **state)
{
    (void)state;
    arm_watchdog();
    uint64_t seed0 = test_seed("power_loss_random", 9001);
    int series = (int)test_scale(40), rounds = 10;
    long found_total = 0, dead_rounds = 0;
    uint64_t splits = 0;
    for (int s = 0; s < series; s++) {
        wl w;
        /* Every fourth series is deep: more keys, 4 KiB tables and a 16 KiB level 1, so that
           power fails in the middle of merges split between two threads, too. */
        int deep = s % 4 == 3;
        wl_init(&w, seed0 + (uint64_t)s, deep ? 1500 : 120, 4096);
        if (deep) {
            w.table_bytes = 4 << 10;
            w.level1_bytes = 16 << 10;
        }
        snprintf(w.ctx, sizeof w.ctx, "series %d calibration", s);
        snprintf(g_where, sizeof g_where, "power_loss_random seed %" PRIu64 " %s", w.seed, w.ctx);
        if (wl_open(&w) != LSM_OK)
            FAILW(&w, "open: %s", lsm_errmsg(NULL));
        /* Calibration: a clean run and a clean close lose nothing at power loss. */
        long m0 = faultenv_mutations(w.env);
        wl_run(&w, 300, 0);
        long per_round = faultenv_mutations(w.env) - m0;
        if (w.failures)
            FAILW(&w, "%d batches refused without any fault armed", w.failures);
        lsm_stats st;
        assert_int_equal(lsm_stats_get(w.db, &st, sizeof st), LSM_OK);
        if (st.flushes < 3)   /* else this test would not test flushes */
            FAILW(&w, "only %" PRIu64 " flushes in the calibration run", st.flushes);
        splits += st.compactions_split;
        int rc = lsm_close(w.db);
        w.db = NULL;
        if (rc != LSM_OK)
            FAILW(&w, "clean lsm_close: %d (%s)", rc, lsm_strerror(rc));
        w.durable = w.h.n;  /* close syncs */
        wl_crash_and_check(&w, w.h.n);

        for (int round = 0; round < rounds; round++) {
            snprintf(w.ctx, sizeof w.ctx, "series %d round %d", s, round);
            snprintf(g_where, sizeof g_where, "power_loss_random seed %" PRIu64 " %s", w.seed, w.ctx);
            long n = (long)trng_below(&w.r, (uint64_t)per_round + 1);
            snprintf(w.ctx, sizeof w.ctx, "series %d round %d (fail after %ld mutations)", s, round, n);
            faultenv_fail_after(w.env, n, trng_chance(&w.r, 50) ? EIO : ENOSPC);
            wl_run(&w, 300, 20);
            if (w.first_failed >= 0)
                dead_rounds++;
            long kmax = w.first_failed >= 0 ? w.first_failed + 1 : w.h.n;
            found_total += wl_crash_and_check_x(&w, kmax, trng_chance(&w.r, 30) ? 2 : 0);
        }
        wl_free(&w);
    }
    printf("# power_loss_random: %d rounds, %ld with refused writes, %ld batches recovered, %"
           PRIu64 " split merges in the calibration runs\n", series * (rounds + 1), dead_rounds,
           found_total, splits);
    if (series >= 4 && splits == 0)
        fail_msg("no merge was split in two in the deep series' calibration runs");
    alarm(0);
}

/* ---- (b) a full disk / failing disk under a write ---- */

static void test_write_error(void **state)
{
    (void)state;
    arm_watchdog();
    uint64_t seed0 = test_seed("write_error", 31337);
    int errs[2] = { ENOSPC, EIO };
    for (int e = 0; e < 2; e++) {
        for (int t = 0; t < (int)test_scale(8); t++) {
            wl w;
            wl_init(&w, seed0 + (uint64_t)(e * 100 + t), 60, 8192);
            snprintf(w.ctx, sizeof w.ctx, "%s trial %d", e ? "EIO" : "ENOSPC", t);
            snprintf(g_where, sizeof g_where, "write_error seed %" PRIu64 " %s", w.seed, w.ctx);
            w.background = 0;
            if (wl_open(&w) != LSM_OK)
                FAILW(&w, "open: %s", lsm_errmsg(NULL));
            wl_run(&w, 50 + (long)trng_below(&w.r, 200), 0);
            /* No background work may meet the fault first: this write must be the one to see it. */
            if (lsm_flush(w.db) != LSM_OK)
                FAILW(&w, "lsm_flush: %s", lsm_errmsg(w.db));
            lsm_batch *lb = lsm_batch_new();
            assert_int_equal(wl_batch(&w, lb, 1), LSM_OK);   /* everything so far durable */
            faultenv_fail_after(w.env, 0, errs[e]);
            /* A full disk has its own code, so that a file system can say ENOSPC. */
            int want = errs[e] == ENOSPC ? LSM_NOSPACE : LSM_IOERR;
            int rc;
            if (t % 2 == 0) {
                rc = wl_batch(&w, lb, 1);
                if (rc != want)
                    FAILW(&w, "synced write on a failing disk: %d (%s), expected %d (%s)", rc,
                          lsm_strerror(rc), want, lsm_strerror(want));
            } else {
                /* A plain lsm_put (no sync) may be acknowledged from the WAL buffer before the
                   disk is touched (an unsynced write, optional after a crash), or fail. */
                hbatch *pb = history_add(&w.h);
                hbatch_put(pb, "plain", 5, "put", 3);
                rc = lsm_put(w.db, "plain", 5, "put", 3);
                pb->acked = rc == LSM_OK;
                if (rc != LSM_OK && rc != want)
                    FAILW(&w, "lsm_put on a failing disk: %d (%s), expected LSM_OK or %d (%s)",
                          rc, lsm_strerror(rc), want, lsm_strerror(want));
                if (rc != LSM_OK) {
                    w.failures++;
                    w.first_failed = w.h.n - 1;
                }
            }
            const char *msg = lsm_errmsg(w.db);
            if (rc != LSM_OK && !msg[0])
                FAILW(&w, "no message after %d (%s)", rc, lsm_strerror(rc));
            /* put/delete through the simple calls fail too once the WAL cannot be written */
            rc = lsm_put(w.db, "zz", 2, "v", 1);
            if (rc == LSM_OK) {
                hbatch *b = history_add(&w.h);   /* acknowledged but unsynced: optional */
                hbatch_put(b, "zz", 2, "v", 1);
                b->acked = 1;
            } else {
                if (rc != want)
                    FAILW(&w, "lsm_put after the failure: %d (%s), expected %d (%s) again", rc,
                          lsm_strerror(rc), want, lsm_strerror(want));
                hbatch *b = history_add(&w.h);
                hbatch_put(b, "zz", 2, "v", 1);
                if (w.first_failed < 0)
                    w.first_failed = w.h.n - 1;
            }
            rc = lsm_sync(w.db);
            if (rc == LSM_OK)
                FAILW(&w, "lsm_sync succeeded on a dead disk");
            if (!lsm_errmsg(w.db)[0])
                FAILW(&w, "no message after a failed lsm_sync");
            lsm_batch_free(lb);
            wl_crash_and_check(&w, w.first_failed >= 0 ? w.first_failed + 1 : w.h.n);
            /* The reopened database works normally. */
            lsm_batch *lb2 = lsm_batch_new();
            for (int i = 0; i < 50; i++)
                assert_int_equal(wl_batch(&w, lb2, i % 5 == 0), LSM_OK);
            lsm_batch_free(lb2);
            w.durable = w.h.n;
            rc = lsm_close(w.db);
            w.db = NULL;
            assert_int_equal(rc, LSM_OK);
            wl_crash_and_check(&w, w.h.n);
            wl_free(&w);
        }
    }
    alarm(0);
}

/* ---- (c) short writes ---- */

static void test_short_writes(void **state)
{
    (void)state;
    arm_watchdog();
    wl w;
    wl_init(&w, test_seed("short_writes", 5150), 200, 4096);
    snprintf(w.ctx, sizeof w.ctx, "short writes");
    snprintf(g_where, sizeof g_where, "short_writes seed %" PRIu64, w.seed);
    faultenv_short_writes(w.env, 1);
    if (wl_open(&w) != LSM_OK)
        FAILW(&w, "open with short writes: %s", lsm_errmsg(NULL));
    for (int round = 0; round < 4; round++) {
        wl_run(&w, test_scale(1500), 0);
        if (w.failures)
            FAILW(&w, "%d writes refused with short writes on", w.failures);
        model *m = model_clone(w.base);
        for (long i = 0; i < w.h.n; i++)
            hbatch_apply(&w.h.b[i], m);
        check_db_equals_model(w.db, m, "short writes, live");
        if (round == 2)
            assert_int_equal(lsm_compact(w.db), LSM_OK);
        int rc = lsm_close(w.db);
        w.db = NULL;
        if (rc != LSM_OK)
            FAILW(&w, "lsm_close with short writes: %d (%s)", rc, lsm_strerror(rc));
        w.durable = w.h.n;
        faultenv_power_loss(w.env);
        faultenv_short_writes(w.env, 1);
        rc = wl_open(&w);
        if (rc != LSM_OK)
            FAILW(&w, "reopen with short writes: %d (%s) %s", rc, lsm_strerror(rc), lsm_errmsg(NULL));
        check_db_equals_model(w.db, m, "short writes, after close + power loss + reopen");
        model_free(w.base);
        w.base = m;
        history_free(&w.h);
        history_init(&w.h);
        w.durable = 0;
    }
    wl_free(&w);
    alarm(0);
}

/* ---- (d) a failed fsync ---- */

static void test_failed_sync(void **state)
{
    (void)state;
    arm_watchdog();
    uint64_t seed0 = test_seed("failed_sync", 2718);
    /* Learn how many mutating calls one synced write of one small key takes (no flush happens: the
       memtable is large). */
    long per_write;
    {
        lsm_env *env = faultenv_new();
        lsm_options o;
        options_defaults(&o);
        o.env = env;
        lsm_db *db;
        assert_int_equal(lsm_open(DBDIR, &o, &db), LSM_OK);
        lsm_batch *b = lsm_batch_new();
        lsm_batch_put(b, "k", 1, "v", 1);
        assert_int_equal(lsm_write(db, b, 1), LSM_OK);
        long m0 = faultenv_mutations(env);
        assert_int_equal(lsm_write(db, b, 1), LSM_OK);
        per_write = faultenv_mutations(env) - m0;
        lsm_batch_free(b);
        lsm_close(db);
        faultenv_free(env);
        if (per_write < 1)
            fail_msg("a synced write made %ld mutating calls: it cannot be durable", per_write);
    }
    printf("# failed_sync: a synced write makes %ld mutating calls\n", per_write);
    for (long j = 0; j < per_write; j++) {
        for (int t = 0; t < 3; t++) {
            wl w;
            wl_init(&w, seed0 + (uint64_t)(j * 10 + t), 40, 1 << 20);
            snprintf(w.ctx, sizeof w.ctx, "failing call %ld of the write, trial %d", j, t);
            snprintf(g_where, sizeof g_where, "failed_sync seed %" PRIu64 " %s", w.seed, w.ctx);
            if (wl_open(&w) != LSM_OK)
                FAILW(&w, "open: %s", lsm_errmsg(NULL));
            lsm_batch *lb = lsm_batch_new();
            for (int i = 0; i < 20; i++)
                assert_int_equal(wl_batch(&w, lb, i % 4 == 0), LSM_OK);
            /* One small batch, the same shape as the calibrating one. */
            hbatch *b = history_add(&w.h);
            hbatch_put(b, "k", 1, "v", 1);
            hbatch_to_lsm(b, lb);
            faultenv_fail_after(w.env, j, EIO);
            int rc = lsm_write(w.db, lb, 1);
            if (rc == LSM_OK)
                FAILW(&w, "synced write whose call %ld of %ld failed returned LSM_OK", j, per_write);
            w.first_failed = w.h.n - 1;
            w.failures++;
            /* The disk comes back. Whatever the engine does now, what it acknowledges as synced must
               survive, and what it cannot guarantee it must refuse. */
            faultenv_clear(w.env);
            int acked_after = 0;
            for (int i = 0; i < 30; i++) {
                hbatch *nb = history_add(&w.h);
                char k[32], v[64];
                snprintf(k, sizeof k, "after%02d", i);
                snprintf(v, sizeof v, "value after the failed sync %d", i);
                hbatch_put(nb, k, strlen(k), v, strlen(v));
                nb->sync = 1;
                hbatch_to_lsm(nb, lb);
                rc = lsm_write(w.db, lb, 1);
                nb->acked = rc == LSM_OK;
                if (rc == LSM_OK) {
                    w.durable = w.h.n;
                    acked_after++;
                } else if (rc != LSM_IOERR && rc != LSM_CLOSED) {
                    FAILW(&w, "write after a failed sync: %d (%s)", rc, lsm_strerror(rc));
                }
            }
            rc = lsm_sync(w.db);
            if (rc == LSM_OK)
                w.durable = w.h.n;
            lsm_batch_free(lb);
            /* The refused batch may or may not be there; every acknowledged one must be. */
            wl_crash_and_check(&w, w.h.n);
            if (t == 0 && j == per_write - 1)
                printf("# failed_sync: after the failed call, %d of 30 synced writes were accepted\n",
                       acked_after);
            wl_free(&w);
        }
    }
    alarm(0);
}

/* ---- (e) power cut inside lsm_compact_range ---- */

static void cr_options(lsm_options *o, lsm_env *env)
{
    options_defaults(o);
    o->env = env;
    o->memtable_bytes = 16 << 10;
    o->table_bytes = 4 << 10;
    o->level1_bytes = 16 << 10;
    o->blob_threshold = 2048;
    o->background_compaction = 0;   /* the mutating calls are the same in every round */
}

/* A tree with big (blob) and small values in a deep level, newer overwrites and deletes in L0,
   every write synced; m gets the same. */
static lsm_db *cr_build(lsm_env *env, model *m)
{
    lsm_options o;
    cr_options(&o, env);
    lsm_db *db = NULL;
    assert_int_equal(lsm_open(DBDIR, &o, &db), LSM_OK);
    char k[32];
    static uint8_t v[3000];
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < 400; i++) {
            snprintf(k, sizeof k, "k%04d", (i * 37) % 400);
            size_t vl = i % 10 == 0 ? sizeof v : 50 + (size_t)(i % 100);
            memset(v, 'a' + (i + pass) % 26, vl);
            if (pass == 1 && i % 3 == 0) {
                assert_int_equal(lsm_delete(db, k, strlen(k)), LSM_OK);
                model_del(m, k, strlen(k));
            } else {
                assert_int_equal(lsm_put(db, k, strlen(k), v, vl), LSM_OK);
                model_put(m, k, strlen(k), v, vl);
            }
        }
        if (pass == 0)
            assert_int_equal(lsm_compact(db), LSM_OK);
    }
    assert_int_equal(lsm_sync(db), LSM_OK);
    return db;
}

/* Cuts the power after each mutating call lsm_compact_range makes, in turn: whatever step it
   was in (the flush, a merge into the next level, the rewrite of the deepest level, the manifest
   edit, the deletion of old tables and blob files), the reopened database holds exactly what was
   synced before, and a second lsm_compact_range on it then succeeds and frees what it should. */
static void test_power_cut_compact_range(void **state)
{
    (void)state;
    arm_watchdog();
    snprintf(g_where, sizeof g_where, "power_cut_compact_range calibration");
    lsm_env *env = faultenv_new();
    model *m = model_new();
    lsm_db *db = cr_build(env, m);
    long start = faultenv_mutations(env);
    assert_int_equal(lsm_compact_range(db, "k0100", 5, "k0300", 5), LSM_OK);
    long calls = faultenv_mutations(env) - start;
    assert_int_equal(lsm_close(db), LSM_OK);
    model_free(m);
    faultenv_free(env);
    if (calls < 10)
        fail_msg("lsm_compact_range made only %ld mutating calls: nothing to cut", calls);

    long step = calls > 300 ? calls / 300 : 1;
    int rounds = 0, ok_anyway = 0;
    for (long cut = 0; cut < calls; cut += step, rounds++) {
        snprintf(g_where, sizeof g_where, "power_cut_compact_range cut after %ld of %ld calls",
                 cut, calls);
        env = faultenv_new();
        faultenv_seed(env, (uint64_t)cut + 1);
        m = model_new();
        db = cr_build(env, m);
        faultenv_fail_after(env, cut, EIO);
        /* Cut among the last calls, which only delete replaced files, it may still succeed:
           a file left behind is garbage for the next open, not an error. */
        int rc = lsm_compact_range(db, "k0100", 5, "k0300", 5);
        ok_anyway += rc == LSM_OK;
        lsm_close(db);                      /* may fail on a dead machine */
        faultenv_power_loss(env);
        lsm_options o;
        cr_options(&o, env);
        db = NULL;
        rc = lsm_open(DBDIR, &o, &db);
        if (rc != LSM_OK)
            fail_msg("%s: reopen: %d (%s) %s", g_where, rc, lsm_strerror(rc), lsm_errmsg(NULL));
        check_db_equals_model(db, m, g_where);
        assert_int_equal(lsm_compact_range(db, "k0100", 5, "k0300", 5), LSM_OK);
        check_db_equals_model(db, m, g_where);
        assert_int_equal(lsm_close(db), LSM_OK);
        model_free(m);
        faultenv_free(env);
    }
    printf("# power_cut_compact_range: %d cuts over the %ld mutating calls of one range merge, %d "
           "of them late enough for the call to succeed\n", rounds, calls, ok_anyway);
    if (ok_anyway * 4 > rounds)
        fail_msg("%d of %d cut range merges reported success", ok_anyway, rounds);
    alarm(0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_power_loss_random),
        cmocka_unit_test(test_write_error),
        cmocka_unit_test(test_short_writes),
        cmocka_unit_test(test_failed_sync),
        cmocka_unit_test(test_power_cut_compact_range),
    };
    return cmocka_run_group_tests_name("engine fault injection (test_fault)", tests, NULL, NULL);
}
