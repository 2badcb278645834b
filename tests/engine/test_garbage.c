/*
 * test_garbage.c — crashes in the middle of flushes and compactions leave no garbage that grows.
 *
 * A child process overwrites a small key space (with values on both sides of the blob threshold,
 * a tiny memtable and background compaction, so flushes, compactions and blob garbage collection
 * run all the time) and is SIGKILLed at a random moment, many times over. After each kill the
 * parent reopens the database and checks the directory against what the engine says is live:
 * exactly one WAL, one manifest, CURRENT and LOCK, as many tables as lsm_stats counts, and blob
 * files adding up to exactly the live blob bytes. A leftover output of an interrupted flush or
 * compaction would break one of those equalities, and its bytes would pile up round after round.
 * The same holds on the fault env after a power loss at a random point.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "faultenv.h"
#include "helper_model.h"
#include "lsm.h"
#include "options.h"

#define NKEYS 300

static void garbage_options(lsm_options *o)
{
    options_defaults(o);
    o->memtable_bytes = 16 << 10;
    o->table_bytes = 4 << 10;
    o->level1_bytes = 16 << 10;    /* deep levels, and merges split between two threads */
    o->blob_threshold = 700;
    o->cache_bytes = 256 << 10;
}

/* The writer: overwrites and deletes keys forever (until killed). */
static void garbage_child(const char *dir, uint64_t seed)
{
    lsm_options o;
    garbage_options(&o);
    lsm_db *db;
    if (lsm_open(dir, &o, &db) != LSM_OK)
        _exit(2);
    trng r;
    trng_seed(&r, seed);
    static uint8_t val[3000];
    for (;;) {
        char k[16];
        snprintf(k, sizeof k, "k%04d", (int)trng_below(&r, NKEYS));
        if (trng_chance(&r, 10)) {
            lsm_delete(db, k, strlen(k));
        } else {
            size_t n = 50 + trng_below(&r, sizeof val - 50);
            trng_fill(&r, val, n);
            lsm_put(db, k, strlen(k), val, n);
        }
    }
}

typedef struct dir_census {
    int sst, blob, log, manifest, current, lock, other;
    uint64_t blob_bytes, total_bytes;
    char other_name[256];
} dir_census;

static void census_add(dir_census *c, const char *name, uint64_t size)
{
    size_t n = strlen(name);
    c->total_bytes += size;
    if (n > 4 && strcmp(name + n - 4, ".sst") == 0)
        c->sst++;
    else if (n > 5 && strcmp(name + n - 5, ".blob") == 0) {
        c->blob++;
        c->blob_bytes += size;
    } else if (n > 4 && strcmp(name + n - 4, ".log") == 0)
        c->log++;
    else if (strncmp(name, "MANIFEST-", 9) == 0)
        c->manifest++;
    else if (strcmp(name, "CURRENT") == 0)
        c->current++;
    else if (strcmp(name, "LOCK") == 0)
        c->lock++;
    else {
        c->other++;
        snprintf(c->other_name, sizeof c->other_name, "%s", name);
    }
}

static void census_posix(const char *dir, dir_census *c)
{
    memset(c, 0, sizeof *c);
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[4096];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        assert_int_equal(stat(path, &st), 0);
        census_add(c, e->d_name, (uint64_t)st.st_size);
    }
    closedir(d);
}

static void census_env(lsm_env *env, const char *dir, dir_census *c)
{
    memset(c, 0, sizeof *c);
    char **names;
    int n;
    assert_int_equal(env->list(env, dir, &names, &n), 0);
    for (int i = 0; i < n; i++) {
        char path[4096];
        uint64_t size;
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        env_file_size(env, path, &size);
        census_add(c, names[i], size);
    }
    env_free_list(names, n);
}

/* The directory of an open db holds exactly what the engine says is live. */
static void check_census(lsm_db *db, const dir_census *c, const char *when)
{
    lsm_stats st;
    assert_int_equal(lsm_stats_get(db, &st, sizeof st), LSM_OK);
    int tables = 0;
    for (int l = 0; l < LSM_MAX_LEVELS; l++)
        tables += st.tables[l];
    if (c->sst != tables || c->log != 1 || c->manifest != 1 || c->current != 1 || c->lock != 1 ||
        c->other != 0 || c->blob_bytes != st.blob_bytes_live)
        fail_msg("%s: directory holds %d tables (engine: %d), %d logs, %d manifests, %d CURRENT, "
                 "%d LOCK, %d other (%s), %d blob files of %llu bytes (engine: %llu live)",
                 when, c->sst, tables, c->log, c->manifest, c->current, c->lock, c->other,
                 c->other_name, c->blob, (unsigned long long)c->blob_bytes,
                 (unsigned long long)st.blob_bytes_live);
}

static void test_sigkill_leaves_no_garbage(void **state)
{
    (void)state;
    uint64_t seed = test_seed("sigkill_garbage", 777);
    trng r;
    trng_seed(&r, seed);
    char *dir = tmpdir_new("garbage");
    int rounds = (int)test_scale(24);
    uint64_t first_half_max = 0, second_half_max = 0;
    for (int round = 0; round < rounds; round++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0)
            garbage_child(dir, seed + (uint64_t)round);
        struct timespec ts = { 0, (long)(20 + trng_below(&r, 120)) * 1000000L };
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        if (WIFEXITED(status))
            fail_msg("round %d: writer exited with %d before it was killed", round, WEXITSTATUS(status));

        lsm_options o;
        garbage_options(&o);
        o.background_compaction = 0;     /* census a still directory */
        lsm_db *db;
        int rc = lsm_open(dir, &o, &db);
        if (rc != LSM_OK)
            fail_msg("round %d: reopen after SIGKILL: %s", round, lsm_errmsg(NULL));
        dir_census c;
        census_posix(dir, &c);
        char when[64];
        snprintf(when, sizeof when, "after kill %d", round);
        check_census(db, &c, when);
        assert_int_equal(lsm_close(db), LSM_OK);
        if (round < rounds / 2 && c.total_bytes > first_half_max)
            first_half_max = c.total_bytes;
        if (round >= rounds / 2 && c.total_bytes > second_half_max)
            second_half_max = c.total_bytes;
    }
    /* The live data is a few hundred KiB: the directory must not keep growing with the kills. */
    if (second_half_max > 3 * first_half_max + (4 << 20))
        fail_msg("directory grew from at most %llu bytes in the first half of the kills to %llu "
                 "in the second", (unsigned long long)first_half_max,
                 (unsigned long long)second_half_max);
    lsm_options o;
    garbage_options(&o);
    lsm_db *db;
    assert_int_equal(lsm_open(dir, &o, &db), LSM_OK);
    assert_int_equal(lsm_compact(db), LSM_OK);
    dir_census c;
    census_posix(dir, &c);
    check_census(db, &c, "after a full compaction");
    assert_int_equal(lsm_close(db), LSM_OK);
    tmpdir_remove(dir);
    free(dir);
}

static void test_power_loss_leaves_no_garbage(void **state)
{
    (void)state;
    uint64_t seed = test_seed("power_loss_garbage", 4321);
    trng r;
    trng_seed(&r, seed);
    lsm_env *env = faultenv_new();
    const char *dir = "/gdb";
    int rounds = (int)test_scale(40);
    static uint8_t val[3000];
    for (int round = 0; round < rounds; round++) {
        lsm_options o;
        garbage_options(&o);
        o.env = env;
        lsm_db *db;
        int rc = lsm_open(dir, &o, &db);
        if (rc != LSM_OK)
            fail_msg("round %d: open after power loss: %s", round, lsm_errmsg(NULL));
        /* The machine dies after a random number of file-system mutations. */
        faultenv_fail_after(env, (long)(50 + trng_below(&r, 400)), 5 /* EIO */);
        for (int i = 0; i < 3000; i++) {
            char k[16];
            snprintf(k, sizeof k, "k%04d", (int)trng_below(&r, NKEYS));
            size_t n = 50 + trng_below(&r, sizeof val - 50);
            trng_fill(&r, val, n);
            if (lsm_put(db, k, strlen(k), val, n) != LSM_OK)
                break;
        }
        lsm_close(db);                   /* may fail: the disk is dead */
        faultenv_power_loss(env);
        garbage_options(&o);
        o.env = env;
        o.background_compaction = 0;
        rc = lsm_open(dir, &o, &db);
        if (rc != LSM_OK)
            fail_msg("round %d: reopen after power loss: %s", round, lsm_errmsg(NULL));
        dir_census c;
        census_env(env, dir, &c);
        char when[64];
        snprintf(when, sizeof when, "after power loss %d", round);
        check_census(db, &c, when);
        assert_int_equal(lsm_close(db), LSM_OK);
    }
    faultenv_free(env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sigkill_leaves_no_garbage),
        cmocka_unit_test(test_power_loss_leaves_no_garbage),
    };
    return cmocka_run_group_tests_name("engine garbage after crashes", tests, NULL, NULL);
}
