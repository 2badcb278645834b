/*
 * test_env.c — unit tests for env.c: the POSIX env against a real temporary directory, and the
 * fault env's model of power loss, dead disks and short writes, which every crash test of the
 * engine relies on being exact.
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
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "faultenv.h"
#include "lsm_int.h"

/* ---- helpers ---- */

static char *test_env_tmpdir(void)
{
    char tmpl[] = "/tmp/lsm-test-env-XXXXXX";
    char *d = mkdtemp(tmpl);
    assert_non_null(d);
    return strdup(d);
}

static void test_env_rmtree(const char *dir)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_env_put(lsm_env *env, const char *path, const char *s, int do_sync)
{
    lsm_file *f;
    assert_int_equal(env->open(env, path, LSM_O_CREATE, &f), 0);
    assert_int_equal(env_append_all(env, f, s, strlen(s)), 0);
    if (do_sync)
        assert_int_equal(env->sync(env, f), 0);
    assert_int_equal(env->close(env, f), 0);
}

/* Returns the file's content as a NUL-terminated malloc'd string, or NULL if it does not exist. */
static char *test_env_get(lsm_env *env, const char *path)
{
    uint8_t *p;
    size_t n;
    int r = env_read_file(env, path, &p, &n);
    if (r == -ENOENT)
        return NULL;
    assert_int_equal(r, 0);
    char *s = malloc(n + 1);
    memcpy(s, p, n);
    s[n] = '\0';
    free(p);
    return s;
}

static void test_env_expect(lsm_env *env, const char *path, const char *want)
{
    char *got = test_env_get(env, path);
    if (!want) {
        assert_null(got);
        return;
    }
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

static int test_env_has_name(char **names, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(names[i], name))
            return 1;
    return 0;
}

/* ---- POSIX ---- */

static void posix_roundtrip(void **state)
{
    lsm_env *env = env_posix();
    char *dir = test_env_tmpdir();
    char sub[256], a[300], b[300];
    snprintf(sub, sizeof sub, "%s/db", dir);
    snprintf(a, sizeof a, "%s/a", sub);
    snprintf(b, sizeof b, "%s/b", sub);

    assert_int_equal(env->mkdir(env, sub), 0);
    assert_int_equal(env->mkdir(env, sub), -EEXIST);
    assert_int_equal(env->file_exists(env, a), 0);

    lsm_file *f;
    assert_int_equal(env->open(env, a, LSM_O_CREATE, &f), 0);
    assert_int_equal(env_append_all(env, f, "hello ", 6), 0);
    assert_int_equal(env->append(env, f, "world", 5), 5);
    uint64_t size;
    assert_int_equal(env->size(env, f, &size), 0);
    assert_int_equal(size, 11);
    char buf[32];
    assert_int_equal(env->pread(env, f, buf, sizeof buf, 0), 11);
    assert_memory_equal(buf, "hello world", 11);
    assert_int_equal(env->pread(env, f, buf, 5, 6), 5);
    assert_memory_equal(buf, "world", 5);
    assert_int_equal(env->pread(env, f, buf, 5, 100), 0);
    assert_int_equal(env_pread_all(env, f, buf, 5, 8), -ENODATA);
    assert_int_equal(env->sync(env, f), 0);
    assert_int_equal(env->close(env, f), 0);
    assert_int_equal(env->close(env, NULL), 0);

    assert_int_equal(env->open(env, a, LSM_O_APPEND, &f), 0);
    assert_int_equal(env_append_all(env, f, "!", 1), 0);
    assert_int_equal(env->close(env, f), 0);
    test_env_expect(env, a, "hello world!");

    /* A read-only handle cannot append. */
    assert_int_equal(env->open(env, a, LSM_O_READ, &f), 0);
    assert_true(env->append(env, f, "x", 1) < 0);
    assert_int_equal(env->close(env, f), 0);

    assert_int_equal(env->file_exists(env, a), 1);
    assert_int_equal(env->rename(env, a, b), 0);
    assert_int_equal(env->file_exists(env, a), 0);
    test_env_expect(env, b, "hello world!");
    assert_int_equal(env->sync_dir(env, sub), 0);

    char **names;
    int n;
    assert_int_equal(env->list(env, sub, &names, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(names[0], "b");
    env_free_list(names, n);

    assert_int_equal(env->unlink(env, b), 0);
    assert_int_equal(env->unlink(env, b), -ENOENT);
    assert_int_equal(env->open(env, b, LSM_O_READ, &f), -ENOENT);
    assert_int_equal(env->list(env, b, &names, &n), -ENOENT);

    /* Re-creating truncates. */
    test_env_put(env, a, "long content", 1);
    test_env_put(env, a, "short", 1);
    test_env_expect(env, a, "short");

    test_env_rmtree(dir);
    free(dir);
}

static void posix_lock_conflicts(void **state)
{
    lsm_env *env = env_posix();
    char *dir = test_env_tmpdir();
    char path[300];
    snprintf(path, sizeof path, "%s/LOCK", dir);

    lsm_file *l1, *l2;
    long pid = -1;
    assert_int_equal(env->lock(env, path, &l1, &pid), 0);
    /* A second lock in the same process conflicts: OFD locks belong to the open description. */
    assert_int_equal(env->lock(env, path, &l2, &pid), -EWOULDBLOCK);
    assert_int_equal(pid, (long)getpid());
    assert_int_equal(env->lock(env, path, &l2, NULL), -EWOULDBLOCK);

    /* Another process sees the same holder. */
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        lsm_file *l3;
        long holder = 0;
        int r = env->lock(env, path, &l3, &holder);
        _exit(r == -EWOULDBLOCK && holder == (long)getppid() ? 0 : 1);
    }
    int status;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);

    assert_int_equal(env->unlock(env, l1), 0);
    assert_int_equal(env->lock(env, path, &l2, &pid), 0);
    assert_int_equal(env->unlock(env, l2), 0);

    test_env_rmtree(dir);
    free(dir);
}

static void posix_write_file_atomic(void **state)
{
    lsm_env *env = env_posix();
    char *dir = test_env_tmpdir();
    char path[300], tmp[300];
    snprintf(path, sizeof path, "%s/CURRENT", dir);
    snprintf(tmp, sizeof tmp, "%s/CURRENT.tmp", dir);

    assert_int_equal(env_write_file_atomic(env, dir, "CURRENT", "one\n", 4), 0);
    test_env_expect(env, path, "one\n");
    assert_int_equal(env_write_file_atomic(env, dir, "CURRENT", "two\n", 4), 0);
    test_env_expect(env, path, "two\n");
    assert_int_equal(env->file_exists(env, tmp), 0);
    assert_int_equal(env_write_file_atomic(env, dir, "EMPTY", "", 0), 0);
    snprintf(path, sizeof path, "%s/EMPTY", dir);
    test_env_expect(env, path, "");

    char missing[300];
    snprintf(missing, sizeof missing, "%s/nodir", dir);
    assert_int_equal(env_write_file_atomic(env, missing, "X", "x", 1), -ENOENT);

    test_env_rmtree(dir);
    free(dir);
}

/* ---- fault env ---- */

static lsm_env *test_env_fault_db(void)
{
    lsm_env *env = faultenv_new();
    assert_int_equal(env->mkdir(env, "/db"), 0);
    assert_int_equal(env->sync_dir(env, ""), 0);
    return env;
}

static void fault_unsynced_bytes_vanish(void **state)
{
    lsm_env *env = test_env_fault_db();
    lsm_file *f;
    assert_int_equal(env->open(env, "/db/a", LSM_O_CREATE, &f), 0);
    assert_int_equal(env_append_all(env, f, "hello", 5), 0);
    assert_int_equal(env->sync(env, f), 0);
    assert_int_equal(env->sync_dir(env, "/db"), 0);
    assert_int_equal(env_append_all(env, f, " world", 6), 0);
    test_env_expect(env, "/db/a", "hello world");

    faultenv_power_loss(env);
    test_env_expect(env, "/db/a", "hello");

    /* The old handle still works and refers to the same (truncated) file. */
    uint64_t size;
    assert_int_equal(env->size(env, f, &size), 0);
    assert_int_equal(size, 5);
    assert_int_equal(env_append_all(env, f, "!", 1), 0);
    test_env_expect(env, "/db/a", "hello!");
    assert_int_equal(env->close(env, f), 0);
    faultenv_free(env);
}

static void fault_created_file_needs_dir_sync(void **state)
{
    lsm_env *env = test_env_fault_db();
    test_env_put(env, "/db/a", "aaa", 1);
    assert_int_equal(env->file_exists(env, "/db/a"), 1);
    faultenv_power_loss(env);
    assert_int_equal(env->file_exists(env, "/db/a"), 0);

    test_env_put(env, "/db/b", "bbb", 1);
    assert_int_equal(env->sync_dir(env, "/db"), 0);
    faultenv_power_loss(env);
    test_env_expect(env, "/db/b", "bbb");

    /* A durable entry whose data was never synced survives empty. */
    test_env_put(env, "/db/c", "ccc", 0);
    assert_int_equal(env->sync_dir(env, "/db"), 0);
    faultenv_power_loss(env);
    test_env_expect(env, "/db/c", "");

    /* Files need their directory to exist. */
    lsm_file *f;
    assert_int_equal(env->open(env, "/nodir/x", LSM_O_CREATE, &f), -ENOENT);
    assert_int_equal(env->mkdir(env, "/nodir/sub"), -ENOENT);
    faultenv_free(env);
}

static void fault_rename_needs_dir_sync(void **state)
{
    lsm_env *env = test_env_fault_db();
    test_env_put(env, "/db/old", "content", 1);
    test_env_put(env, "/db/target", "previous", 1);
    assert_int_equal(env->sync_dir(env, "/db"), 0);

    assert_int_equal(env->rename(env, "/db/old", "/db/target"), 0);
    test_env_expect(env, "/db/target", "content");
    test_env_expect(env, "/db/old", NULL);
    faultenv_power_loss(env);
    test_env_expect(env, "/db/target", "previous");
    test_env_expect(env, "/db/old", "content");

    assert_int_equal(env->rename(env, "/db/old", "/db/target"), 0);
    assert_int_equal(env->sync_dir(env, "/db"), 0);
    faultenv_power_loss(env);
    test_env_expect(env, "/db/target", "content");
    test_env_expect(env, "/db/old", NULL);

    assert_int_equal(env->rename(env, "/db/missing", "/db/x"), -ENOENT);
    faultenv_free(env);
}

static void fault_unlink_needs_dir_sync(void **state)
{
    lsm_env *env = test_env_fault_db();
    test_env_put(env, "/db/a", "data", 1);
    assert_int_equal(env->sync_dir(env, "/db"), 0);

    lsm_file *f;
    assert_int_equal(env->open(env, "/db/a", LSM_O_READ, &f), 0);
    assert_int_equal(env->unlink(env, "/db/a"), 0);
    assert_int_equal(env->file_exists(env, "/db/a"), 0);
    char buf[4];
    assert_int_equal(env_pread_all(env, f, buf, 4, 0), 0);   /* still readable through the handle */
    assert_memory_equal(buf, "data", 4);
    assert_int_equal(env->close(env, f), 0);

    faultenv_power_loss(env);
    test_env_expect(env, "/db/a", "data");
    assert_int_equal(env->unlink(env, "/db/a"), 0);
    assert_int_equal(env->sync_dir(env, "/db"), 0);
    faultenv_power_loss(env);
    test_env_expect(env, "/db/a", NULL);
    faultenv_free(env);
}

static void fault_list_and_exists(void **state)
{
    lsm_env *env = test_env_fault_db();
    test_env_put(env, "/db/x", "1", 0);
    test_env_put(env, "/db/y", "2", 0);
    assert_int_equal(env->mkdir(env, "/db/sub"), 0);
    assert_int_equal(env->mkdir(env, "/db/sub"), -EEXIST);
    assert_int_equal(env->mkdir(env, "/db/x"), -EEXIST);

    char **names;
    int n;
    assert_int_equal(env->list(env, "/db", &names, &n), 0);
    assert_int_equal(n, 3);
    assert_true(test_env_has_name(names, n, "x"));
    assert_true(test_env_has_name(names, n, "y"));
    assert_true(test_env_has_name(names, n, "sub"));
    env_free_list(names, n);
    assert_int_equal(env->list(env, "/nope", &names, &n), -ENOENT);
    assert_int_equal(env->file_exists(env, "/db/sub"), 1);
    assert_int_equal(env->file_exists(env, "/db/z"), 0);
    assert_int_equal(env->file_exists(env, "/nope/z"), 0);

    lsm_file *f;
    assert_int_equal(env->open(env, "/db/sub", LSM_O_CREATE, &f), -EISDIR);
    assert_int_equal(env->open(env, "/db/z", LSM_O_APPEND, &f), -ENOENT);
    faultenv_free(env);
}

static void fault_fail_after(void **state)
{
    lsm_env *env = test_env_fault_db();
    lsm_file *f;
    assert_int_equal(env->open(env, "/db/a", LSM_O_CREATE, &f), 0);
    assert_int_equal(env_append_all(env, f, "abc", 3), 0);

    long before = faultenv_mutations(env);
    faultenv_fail_after(env, 2, EIO);
    assert_int_equal(env->append(env, f, "d", 1), 1);
    assert_int_equal(env->sync(env, f), 0);
    /* The machine is now dead: nothing mutates, every read still works. */
    assert_int_equal(env->append(env, f, "e", 1), -EIO);
    assert_int_equal(env->sync(env, f), -EIO);
    assert_int_equal(env->rename(env, "/db/a", "/db/b"), -EIO);
    assert_int_equal(env->unlink(env, "/db/a"), -EIO);
    assert_int_equal(env->mkdir(env, "/db/d"), -EIO);
    assert_int_equal(env->sync_dir(env, "/db"), -EIO);
    lsm_file *g, *l;
    assert_int_equal(env->open(env, "/db/new", LSM_O_CREATE, &g), -EIO);
    assert_int_equal(env->open(env, "/db/a", LSM_O_CREATE, &g), -EIO);
    assert_int_equal(env->lock(env, "/db/LOCK", &l, NULL), -EIO);
    assert_int_equal(faultenv_mutations(env), before + 11);

    test_env_expect(env, "/db/a", "abcd");
    assert_int_equal(env->file_exists(env, "/db/b"), 0);
    assert_int_equal(env->file_exists(env, "/db/d"), 0);
    assert_int_equal(env->file_exists(env, "/db/new"), 0);
    assert_int_equal(env->file_exists(env, "/db/LOCK"), 0);
    assert_int_equal(env->open(env, "/db/a", LSM_O_READ, &g), 0);
    assert_int_equal(env->close(env, g), 0);

    faultenv_clear(env);
    assert_int_equal(env->append(env, f, "e", 1), 1);
    test_env_expect(env, "/db/a", "abcde");

    faultenv_fail_after(env, 0, ENOSPC);
    assert_int_equal(env->append(env, f, "f", 1), -ENOSPC);
    faultenv_fail_after(env, 0, 0);                       /* err 0 disarms */
    assert_int_equal(env->append(env, f, "f", 1), 1);

    /* Power loss revives the machine. */
    faultenv_fail_after(env, 0, EIO);
    faultenv_power_loss(env);
    assert_int_equal(env->sync(env, f), 0);
    assert_int_equal(env->close(env, f), 0);
    faultenv_free(env);
}

static void fault_short_writes(void **state)
{
    lsm_env *env = test_env_fault_db();
    faultenv_short_writes(env, 1);
    lsm_file *f;
    assert_int_equal(env->open(env, "/db/a", LSM_O_CREATE, &f), 0);
    assert_int_equal(env->append(env, f, "abcdefgh", 8), 4);
    assert_int_equal(env->append(env, f, "x", 1), 1);
    char big[1000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (char)('a' + i % 26);
    long before = faultenv_mutations(env);
    assert_int_equal(env_append_all(env, f, big, sizeof big), 0);
    assert_true(faultenv_mutations(env) - before >= 10);   /* it really took many short writes */
    uint64_t size;
    assert_int_equal(env->size(env, f, &size), 0);
    assert_int_equal(size, 5 + sizeof big);
    char back[sizeof big];
    assert_int_equal(env_pread_all(env, f, back, sizeof back, 5), 0);
    assert_memory_equal(back, big, sizeof big);
    assert_int_equal(env->close(env, f), 0);
    faultenv_free(env);
}

/* Whatever step the power fails at, the file holds the old content or the new, never a mixture or
   nothing; and a failing disk leaves it in one of those states too. */
static void fault_write_file_atomic_old_or_new(void **state)
{
    lsm_env *env = test_env_fault_db();
    assert_int_equal(env_write_file_atomic(env, "/db", "CURRENT", "old-content", 11), 0);
    long start = faultenv_mutations(env);
    assert_int_equal(env_write_file_atomic(env, "/db", "CURRENT", "new!", 4), 0);
    long steps = faultenv_mutations(env) - start;
    assert_true(steps >= 5);
    faultenv_free(env);

    for (long k = 0; k <= steps; k++) {
        for (int err = 0; err < 2; err++) {
            env = test_env_fault_db();
            assert_int_equal(env_write_file_atomic(env, "/db", "CURRENT", "old-content", 11), 0);
            faultenv_fail_after(env, k, err ? ENOSPC : EIO);
            int r = env_write_file_atomic(env, "/db", "CURRENT", "new!", 4);
            if (k < steps)
                assert_true(r < 0);
            else
                assert_int_equal(r, 0);
            faultenv_power_loss(env);
            char *got = test_env_get(env, "/db/CURRENT");
            assert_non_null(got);
            assert_true(!strcmp(got, "old-content") || !strcmp(got, "new!"));
            if (k == steps)
                assert_string_equal(got, "new!");
            free(got);
            faultenv_free(env);
        }
    }
}

static void fault_corrupt(void **state)
{
    lsm_env *env = test_env_fault_db();
    test_env_put(env, "/db/a", "abcd", 1);
    assert_int_equal(env->sync_dir(env, "/db"), 0);
    assert_int_equal(faultenv_corrupt(env, "/db/a", 1), 0);
    char *got = test_env_get(env, "/db/a");
    assert_int_equal((uint8_t)got[1], (uint8_t)('b' ^ 0xff));
    free(got);
    faultenv_power_loss(env);
    got = test_env_get(env, "/db/a");
    assert_int_equal((uint8_t)got[1], (uint8_t)('b' ^ 0xff));
    free(got);
    assert_int_equal(faultenv_corrupt(env, "/db/a", 1), 0);
    test_env_expect(env, "/db/a", "abcd");
    assert_int_equal(faultenv_corrupt(env, "/db/none", 0), -ENOENT);
    assert_true(faultenv_corrupt(env, "/db/a", 4) < 0);
    faultenv_free(env);
}

static void fault_lock(void **state)
{
    lsm_env *env = test_env_fault_db();
    lsm_file *l1, *l2, *l3;
    long pid = 0;
    assert_int_equal(env->lock(env, "/db/LOCK", &l1, &pid), 0);
    assert_int_equal(env->file_exists(env, "/db/LOCK"), 1);
    assert_int_equal(env->lock(env, "/db/LOCK", &l2, &pid), -EWOULDBLOCK);
    assert_int_equal(pid, (long)getpid());
    assert_int_equal(env->unlock(env, l1), 0);
    assert_int_equal(env->lock(env, "/db/LOCK", &l2, &pid), 0);

    /* Power loss releases it; the stale handle must not release the new holder's lock. */
    faultenv_power_loss(env);
    assert_int_equal(env->lock(env, "/db/LOCK", &l3, NULL), 0);
    assert_int_equal(env->unlock(env, l2), 0);
    assert_int_equal(env->lock(env, "/db/LOCK", &l1, NULL), -EWOULDBLOCK);
    assert_int_equal(env->unlock(env, l3), 0);
    assert_int_equal(env->lock(env, "/db/LOCK", &l1, NULL), 0);
    assert_int_equal(env->unlock(env, l1), 0);
    faultenv_free(env);
}

enum { TEST_ENV_THREADS = 4, TEST_ENV_WRITES = 2000 };

typedef struct test_env_worker {
    lsm_env *env;           /* shared fault env */
    int id;                 /* names the file this worker writes */
} test_env_worker;

static void *test_env_worker_run(void *p)
{
    test_env_worker *w = p;
    char path[64];
    snprintf(path, sizeof path, "/db/t%d", w->id);
    lsm_file *f;
    if (w->env->open(w->env, path, LSM_O_CREATE, &f) < 0)
        return (void *)1;
    for (int i = 0; i < TEST_ENV_WRITES; i++) {
        if (env_append_all(w->env, f, "0123456789", 10) < 0)
            return (void *)1;
        if (i % 100 == 0 && (w->env->sync(w->env, f) < 0 || w->env->sync_dir(w->env, "/db") < 0))
            return (void *)1;
    }
    w->env->close(w->env, f);
    return NULL;
}

static void fault_threads(void **state)
{
    lsm_env *env = test_env_fault_db();
    pthread_t th[TEST_ENV_THREADS];
    test_env_worker w[TEST_ENV_THREADS];
    for (int i = 0; i < TEST_ENV_THREADS; i++) {
        w[i].env = env;
        w[i].id = i;
        assert_int_equal(pthread_create(&th[i], NULL, test_env_worker_run, &w[i]), 0);
    }
    for (int i = 0; i < TEST_ENV_THREADS; i++) {
        void *ret;
        assert_int_equal(pthread_join(th[i], &ret), 0);
        assert_null(ret);
    }
    for (int i = 0; i < TEST_ENV_THREADS; i++) {
        char path[64];
        snprintf(path, sizeof path, "/db/t%d", i);
        uint8_t *p;
        size_t n;
        assert_int_equal(env_read_file(env, path, &p, &n), 0);
        assert_int_equal(n, 10 * TEST_ENV_WRITES);
        free(p);
    }
    faultenv_free(env);
}

/* The writeback calls env_append_wb makes, recorded by a fault env given a writeback operation. */
static uint64_t wb_calls[8][2];
static int wb_ncalls;

static int wb_record(lsm_env *env, lsm_file *f, uint64_t off, uint64_t n)
{
    if (wb_ncalls < 8) {
        wb_calls[wb_ncalls][0] = off;
        wb_calls[wb_ncalls][1] = n;
    }
    wb_ncalls++;
    return -EIO;                        /* a failing hint must change nothing */
}

/* env_append_wb sends every byte to writeback once, in order, a MiB or more at a time, and the
   data is written whatever writeback says. */
static void append_wb_hints_every_mib(void **state)
{
    (void)state;
    lsm_env *env = faultenv_new();
    env->writeback = wb_record;
    assert_int_equal(env->mkdir(env, "/d"), 0);
    lsm_file *f;
    assert_int_equal(env->open(env, "/d/f", LSM_O_CREATE, &f), 0);
    static uint8_t chunk[300 << 10];
    env_wb wb = { 0, 0 };
    wb_ncalls = 0;
    for (int i = 0; i < 12; i++) {      /* 12 x 300 KiB = 3.5 MiB */
        memset(chunk, 'a' + i, sizeof chunk);
        assert_int_equal(env_append_wb(env, f, chunk, sizeof chunk, &wb), 0);
    }
    assert_int_equal(wb.written, 12 * sizeof chunk);
    assert_int_equal(wb_ncalls, 3);     /* after 4, 8 and 12 chunks: 1200 KiB each */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(wb_calls[i][0], (uint64_t)i * 4 * sizeof chunk);
        assert_int_equal(wb_calls[i][1], 4 * sizeof chunk);
    }
    assert_int_equal(wb.sent, wb.written);
    uint64_t size = 0;
    assert_int_equal(env->size(env, f, &size), 0);
    assert_int_equal(size, 12 * sizeof chunk);
    env->close(env, f);
    faultenv_free(env);
}

/* POSIX: preallocate grows the file with zeros (fallocate), pwrite lands where it is told, and a
   file made with LSM_O_WRITE_AT is not in append mode. */
static void posix_preallocate_and_pwrite(void **state)
{
    char *dir = test_env_tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/f", dir);
    lsm_env *env = env_posix();
    lsm_file *f;
    assert_int_equal(env->open(env, path, LSM_O_CREATE | LSM_O_WRITE_AT, &f), 0);
    int r = env->preallocate(env, f, 0, 65536);
    if (r == -EOPNOTSUPP) {
        printf("# %s: the file system cannot preallocate; pwrite only\n", dir);
    } else {
        assert_int_equal(r, 0);
        uint64_t size;
        assert_int_equal(env->size(env, f, &size), 0);
        assert_int_equal(size, 65536);
    }
    assert_int_equal(env->pwrite(env, f, "world", 5, 6), 5);
    assert_int_equal(env->pwrite(env, f, "hello ", 6, 0), 6);
    char got[16] = "";
    assert_int_equal(env->pread(env, f, got, 11, 0), 11);
    assert_memory_equal(got, "hello world", 11);
    assert_int_equal(env->pread(env, f, got, 4, 11), r == 0 ? 4 : 0);
    if (r == 0)
        assert_memory_equal(got, "\0\0\0\0", 4);
    env_wb wb = { .written = 11 };
    assert_int_equal(env_pwrite_wb(env, f, "!", 1, &wb), 0);
    assert_int_equal(wb.written, 12);
    assert_int_equal(env->pread(env, f, got, 12, 0), 12);
    assert_memory_equal(got, "hello world!", 12);
    assert_int_equal(env->sync(env, f), 0);
    assert_int_equal(env->close(env, f), 0);
    test_env_rmtree(dir);
    free(dir);
}

/* Fault env: bytes written over synced ones survive power loss page by page, each page old or new
   by a coin toss; appended (never synced) bytes vanish; a sync makes everything durable. */
static void fault_written_over_pages_old_or_new(void **state)
{
    enum { PAGES = 8, PG = 4096 };
    int saw_mixed = 0;
    static uint8_t zeros[PAGES * PG], ones[PAGES * PG];
    memset(ones, 0xab, sizeof ones);
    for (uint64_t seed = 1; seed <= 20; seed++) {
        lsm_env *env = test_env_fault_db();
        faultenv_seed(env, seed);
        lsm_file *f;
        assert_int_equal(env->open(env, "/db/w", LSM_O_CREATE | LSM_O_WRITE_AT, &f), 0);
        assert_int_equal(env->preallocate(env, f, 0, PAGES * PG), 0);
        assert_int_equal(env->sync(env, f), 0);
        assert_int_equal(env->sync_dir(env, "/db"), 0);
        /* Page 0 rewritten and synced: it must keep its new content whatever happens. */
        assert_int_equal(env->pwrite(env, f, ones, PG, 0), PG);
        assert_int_equal(env->sync(env, f), 0);
        /* Pages 1..7 written over, then 100 bytes past the end, none of it synced. */
        assert_int_equal(env->pwrite(env, f, ones, (PAGES - 1) * PG, PG), (PAGES - 1) * PG);
        assert_int_equal(env->pwrite(env, f, ones, 100, PAGES * PG), 100);
        faultenv_power_loss(env);
        uint8_t *p;
        size_t n;
        assert_int_equal(env_read_file(env, "/db/w", &p, &n), 0);
        assert_int_equal(n, PAGES * PG);
        assert_memory_equal(p, ones, PG);
        int nnew = 0;
        for (int i = 1; i < PAGES; i++) {
            int is_new = memcmp(p + i * PG, ones, PG) == 0;
            assert_true(is_new || memcmp(p + i * PG, zeros, PG) == 0);
            nnew += is_new;
        }
        saw_mixed |= nnew > 0 && nnew < PAGES - 1;
        free(p);
        assert_int_equal(env->close(env, f), 0);
        faultenv_free(env);
    }
    assert_true(saw_mixed);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(append_wb_hints_every_mib),
        cmocka_unit_test(posix_roundtrip),
        cmocka_unit_test(posix_lock_conflicts),
        cmocka_unit_test(posix_write_file_atomic),
        cmocka_unit_test(posix_preallocate_and_pwrite),
        cmocka_unit_test(fault_written_over_pages_old_or_new),
        cmocka_unit_test(fault_unsynced_bytes_vanish),
        cmocka_unit_test(fault_created_file_needs_dir_sync),
        cmocka_unit_test(fault_rename_needs_dir_sync),
        cmocka_unit_test(fault_unlink_needs_dir_sync),
        cmocka_unit_test(fault_list_and_exists),
        cmocka_unit_test(fault_fail_after),
        cmocka_unit_test(fault_short_writes),
        cmocka_unit_test(fault_write_file_atomic_old_or_new),
        cmocka_unit_test(fault_corrupt),
        cmocka_unit_test(fault_lock),
        cmocka_unit_test(fault_threads),
    };
    return cmocka_run_group_tests_name("env", tests, NULL, NULL);
}
