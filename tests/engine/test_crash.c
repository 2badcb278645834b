/*
 * test_crash.c — real crashes: a child process writes synced batches to a database on disk and is
 * killed with SIGKILL at a random moment (during recovery, a write, a flush or a compaction); the
 * parent then reopens the database and checks it.
 *
 * The history is linear and every value is a pure function of (key, batch number), so the state
 * after batch B is known exactly: keys k0..k9 hold batch B, and key xJ holds the newest batch
 * b <= B with b % XKEYS == J. The check: the database equals the state after some batch B, every
 * batch the child acknowledged (reported through a pipe after lsm_write(..., sync=1) returned) is
 * included (B >= last acknowledged), and at most the one batch in flight beyond it (B <= acked + 1).
 * Values carry their own checksum, so a torn value is named as such. The next child continues from
 * B + 1, so each round also checks recovery from the previous crash.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helper_model.h"
#include "lsm.h"
#include "options.h"

#define KKEYS 10       /* keys written by every batch */
#define XKEYS 400      /* one more key per batch, cycling, so tables fill and overlap */

static uint32_t fnv1a(const void *p, size_t n)
{
    const uint8_t *s = p;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 16777619u;
    return h;
}

/* The value of key (name) for batch b: "name|b=NNNNNNNNN|" + filler + "|" + 8 hex of fnv1a over
   everything before. Length and filler depend only on (name, b). */
static size_t make_value(char *out, size_t cap, const char *name, long b)
{
    int n = snprintf(out, cap, "%s|b=%09ld|", name, b);
    uint32_t h = fnv1a(out, (size_t)n);
    size_t fill = 20 + h % 700;
    if ((size_t)n + fill + 10 > cap)
        fill = cap - (size_t)n - 10;
    for (size_t i = 0; i < fill; i++)
        out[n + (int)i] = (char)('a' + (h >> (i % 24)) % 26);
    n += (int)fill;
    out[n++] = '|';
    uint32_t c = fnv1a(out, (size_t)n);
    n += snprintf(out + n, cap - (size_t)n, "%08x", c);
    return (size_t)n;
}

static void open_opts(lsm_options *o)
{
    options_defaults(o);
    o->memtable_bytes = 32 << 10;
    o->table_bytes = 16 << 10;
    o->level1_bytes = 64 << 10;    /* deep levels, and merges split between two threads */
    o->block_bytes = 1024;
    o->blob_threshold = 400;   /* about half the values go to blob files at flush */
}

/* Child: continue the history from the database's state and write batches until killed. */
static void child_main(const char *dir, int wfd)
{
    lsm_options o;
    open_opts(&o);
    lsm_db *db = NULL;
    int rc = lsm_open(dir, &o, &db);
    if (rc != LSM_OK) {
        fprintf(stderr, "child: lsm_open: %d %s\n", rc, lsm_errmsg(NULL));
        _exit(2);
    }
    long start = 0;
    void *v = NULL;
    size_t vl = 0;
    rc = lsm_get(db, "k0", 2, &v, &vl);
    if (rc == LSM_OK) {
        char tmp[32];
        snprintf(tmp, sizeof tmp, "%.*s", (int)(vl < 31 ? vl : 31), (char *)v);
        char *p = strstr(tmp, "|b=");
        start = p ? strtol(p + 3, NULL, 10) + 1 : 0;
        free(v);
    } else if (rc != LSM_NOTFOUND) {
        fprintf(stderr, "child: get k0: %d %s\n", rc, lsm_errmsg(db));
        _exit(2);
    }
    lsm_batch *b = lsm_batch_new();
    char name[16], val[1024];
    for (long n = start;; n++) {
        lsm_batch_clear(b);
        for (int i = 0; i < KKEYS; i++) {
            snprintf(name, sizeof name, "k%d", i);
            size_t l = make_value(val, sizeof val, name, n);
            lsm_batch_put(b, name, strlen(name), val, l);
        }
        snprintf(name, sizeof name, "x%03ld", n % XKEYS);
        size_t l = make_value(val, sizeof val, name, n);
        lsm_batch_put(b, name, strlen(name), val, l);
        rc = lsm_write(db, b, 1);
        if (rc != LSM_OK) {
            fprintf(stderr, "child: lsm_write batch %ld: %d %s\n", n, rc, lsm_errmsg(db));
            _exit(2);
        }
        int64_t ack = n;
        if (write(wfd, &ack, sizeof ack) != (ssize_t)sizeof ack)
            _exit(2);
    }
}

/* The expected state after batch B (B < 0: empty). */
static model *expected_state(long B)
{
    model *m = model_new();
    char name[16], val[1024];
    if (B < 0)
        return m;
    for (int i = 0; i < KKEYS; i++) {
        snprintf(name, sizeof name, "k%d", i);
        size_t l = make_value(val, sizeof val, name, B);
        model_put(m, name, strlen(name), val, l);
    }
    for (long b = B; b >= 0 && b > B - XKEYS; b--) {
        snprintf(name, sizeof name, "x%03ld", b % XKEYS);
        size_t l = make_value(val, sizeof val, name, b);
        model_put(m, name, strlen(name), val, l);
    }
    return m;
}

/* Reads the batch number of a value and checks its checksum; -1 if torn. */
static long value_batch(const uint8_t *v, size_t vl)
{
    if (vl < 12)
        return -1;
    char tmp[16];
    memcpy(tmp, v + vl - 8, 8);
    tmp[8] = 0;
    if (strtoul(tmp, NULL, 16) != fnv1a(v, vl - 8))
        return -1;
    const char *p = memmem(v, vl, "|b=", 3);
    return p ? strtol(p + 3, NULL, 10) : -1;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Reads acknowledgements until deadline (or EOF); returns the last one seen, or prev. */
static long drain(int rfd, uint64_t deadline, long prev, uint8_t *part, size_t *partn)
{
    for (;;) {
        long wait = deadline ? (long)(deadline - now_ms()) : 0;
        if (deadline && (int64_t)(deadline - now_ms()) <= 0)
            wait = 0;
        struct pollfd p = { .fd = rfd, .events = POLLIN };
        int r = poll(&p, 1, (int)wait);
        if (r <= 0)
            return prev;
        ssize_t n = read(rfd, part + *partn, 8 - *partn);
        if (n <= 0)
            return prev;
        *partn += (size_t)n;
        if (*partn == 8) {
            int64_t a;
            memcpy(&a, part, 8);
            prev = (long)a;
            *partn = 0;
        }
    }
}

static void test_sigkill_rounds(void **state)
{
    (void)state;
    uint64_t seed = test_seed("sigkill_rounds", 8086);
    trng r;
    trng_seed(&r, seed);
    char *tmp = tmpdir_new("crash");
    char *dir = path_join(tmp, "db");
    int rounds = (int)test_scale(50);
    long prev_B = -1, total_acked = 0;
    int longest = 0;
    for (int round = 0; round < rounds; round++) {
        int pfd[2];
        assert_int_equal(pipe(pfd), 0);
        fflush(stdout);
        fflush(stderr);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(pfd[0]);
            child_main(dir, pfd[1]);
            _exit(2);
        }
        close(pfd[1]);
        /* Every few rounds let the child run longer so that compactions get going. */
        uint64_t delay = round % 8 == 7 ? 200 + trng_below(&r, 300) : trng_below(&r, 51);
        uint8_t part[8];
        size_t partn = 0;
        long acked = drain(pfd[0], now_ms() + delay, -1, part, &partn);
        kill(pid, SIGKILL);
        int st;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        acked = drain(pfd[0], 0, acked, part, &partn);
        close(pfd[0]);
        if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGKILL)
            fail_msg("seed %" PRIu64 " round %d: the writer died on its own (status 0x%x); see its "
                     "message above", seed, round, st);
        if (acked >= 0)
            total_acked += acked - prev_B;

        /* Reopen and check. */
        lsm_options o;
        open_opts(&o);
        lsm_db *db = NULL;
        int rc = lsm_open(dir, &o, &db);
        if (rc != LSM_OK)
            fail_msg("seed %" PRIu64 " round %d: reopen after SIGKILL: %d (%s) %s", seed, round, rc,
                     lsm_strerror(rc), lsm_errmsg(NULL));
        model *got = NULL;
        rc = model_from_db(db, &got);
        if (rc != LSM_OK)
            fail_msg("seed %" PRIu64 " round %d: scan after SIGKILL: %d (%s) %s", seed, round, rc,
                     lsm_strerror(rc), lsm_errmsg(db));
        /* Every value intact, and all k keys from one batch. */
        long B = -2;
        for (size_t i = 0; i < model_count(got); i++) {
            const uint8_t *k, *v;
            size_t kl, vl;
            model_at(got, i, &k, &kl, &v, &vl);
            long vb = value_batch(v, vl);
            if (vb < 0)
                fail_msg("seed %" PRIu64 " round %d: key '%s' holds a torn value (%zu bytes '%s')",
                         seed, round, show(k, kl), vl, show(v, vl < 40 ? vl : 40));
            if (kl >= 1 && k[0] == 'k') {
                if (B == -2)
                    B = vb;
                else if (vb != B)
                    fail_msg("seed %" PRIu64 " round %d: batch torn: '%s' holds batch %ld, k0 holds "
                             "batch %ld", seed, round, show(k, kl), vb, B);
            }
        }
        if (B == -2)
            B = -1;
        long floor = acked >= 0 ? acked : prev_B;
        if (B < floor)
            fail_msg("seed %" PRIu64 " round %d: lost acknowledged writes: recovered batch %ld, but "
                     "batch %ld was acknowledged as synced (previous round recovered %ld)", seed,
                     round, B, floor, prev_B);
        if (B > (acked >= 0 ? acked : prev_B) + 1)
            fail_msg("seed %" PRIu64 " round %d: recovered batch %ld, more than one past the last "
                     "acknowledged %ld", seed, round, B, acked);
        model *want = expected_state(B);
        char why[512];
        if (model_diff(want, got, why, sizeof why))
            fail_msg("seed %" PRIu64 " round %d: state differs from the state after batch %ld "
                     "(first=expected): %s", seed, round, B, why);
        check_db_equals_model(db, want, "after SIGKILL (gets)");
        model_free(want);
        model_free(got);
        if (B - prev_B > longest)
            longest = (int)(B - prev_B);
        prev_B = B;
        rc = lsm_close(db);
        if (rc != LSM_OK)
            fail_msg("seed %" PRIu64 " round %d: lsm_close: %d (%s)", seed, round, rc, lsm_strerror(rc));
    }
    printf("# sigkill_rounds: %d rounds, %ld batches acknowledged, final batch %ld, at most %d in a "
           "round\n", rounds, total_acked, prev_B, longest);
    tmpdir_remove(tmp);
    free(tmp);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sigkill_rounds),
    };
    return cmocka_run_group_tests_name("engine crash by SIGKILL (test_crash)", tests, NULL, NULL);
}
