/*
 * stats.c — what a running daemon says about itself: the engine's counters (lsm_stats_get) and the
 * daemon's own, written as a short report on SIGUSR1 (to the log: syslog, or standard error with
 * -f), as people send SIGUSR1 to dd(1) for progress.
 *
 * Why a thread with sigwait: a handler may do almost nothing, and the default action of SIGUSR1
 * ends the process, which would leave a dead mount. So SIGUSR1 is blocked in the main thread
 * before any other thread exists (every thread made later inherits the mask; the engine's and
 * libfuse's threads block all signals anyway), and this one thread takes it with sigwait(3).
 * It must never be the thread that takes SIGTERM, SIGHUP or SIGINT (libfuse's loop waits for those
 * on the main thread).
 */
#include "lsmfs.h"

#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

/* Bytes as a short human figure: "512 B", "3.2 MiB". */
static const char *stats_size(uint64_t n, char *buf, size_t len)
{
    static const char *const unit[] = { "B", "KiB", "MiB", "GiB", "TiB" };
    double v = (double)n;
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    snprintf(buf, len, u ? "%.1f %s" : "%.0f %s", v, unit[u]);
    return buf;
}

void lsmfs_stats_write(struct lsmfs *fs, FILE *f)
{
    lsm_stats st;
    memset(&st, 0, sizeof st);
    lsm_db *db = __atomic_load_n(&fs->db, __ATOMIC_ACQUIRE);
    if (!db || lsm_stats_get(db, &st, sizeof st) != LSM_OK) {
        fprintf(f, "database: not open\n");
        return;
    }
    char a[32], b[32], c[32];
    fprintf(f, "levels:");
    for (int l = 0; l < LSM_MAX_LEVELS; l++)
        if (st.tables[l])
            fprintf(f, " L%d %d tables %s;", l, st.tables[l],
                    stats_size(st.level_bytes[l], a, sizeof a));
    fprintf(f, " memtable %s; on disk %s (blob files %s)\n",
            stats_size(st.memtable_bytes, a, sizeof a), stats_size(st.disk_bytes, b, sizeof b),
            stats_size(st.blob_bytes_live, c, sizeof c));
    uint64_t written = st.wal_bytes_written + st.flush_bytes_written +
                       st.compaction_bytes_written + st.blob_bytes_written;
    fprintf(f, "written: by users %s, to disk %s (write amplification %.2f); ",
            stats_size(st.user_bytes_written, a, sizeof a), stats_size(written, b, sizeof b),
            st.user_bytes_written ? (double)written / (double)st.user_bytes_written : 0.0);
    fprintf(f, "flushes %" PRIu64 ", compactions %" PRIu64 ", compaction debt %s\n", st.flushes,
            st.compactions, stats_size(st.pending_compaction_bytes, a, sizeof a));
    uint64_t lookups = st.cache_hits + st.cache_misses;
    fprintf(f, "block cache: %" PRIu64 " hits, %" PRIu64 " misses (%.1f%% hits); "
            "writers stalled %.3f s\n", st.cache_hits, st.cache_misses,
            lookups ? 100.0 * (double)st.cache_hits / (double)lookups : 0.0,
            (double)st.stall_micros / 1e6);
    pthread_mutex_lock(&fs->tmu);
    size_t inodes = fs->count;
    pthread_mutex_unlock(&fs->tmu);
    pthread_mutex_lock(&fs->bmu);
    size_t buffered = fs->buffered;
    pthread_mutex_unlock(&fs->bmu);
    fprintf(f, "daemon: %zu inodes known to the kernel, %s of file content buffered\n", inodes,
            stats_size(buffered, a, sizeof a));
}

/* Logs the report, a line at a time. */
static void stats_log(struct lsmfs *fs)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return;
    lsmfs_stats_write(fs, f);
    fclose(f);
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
        lsmfs_log(LOG_INFO, "stats: %s", line);
    free(text);
}

static void *stats_main(void *arg)
{
    struct lsmfs *fs = arg;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    for (;;) {
        int sig;
        if (sigwait(&set, &sig) != 0)
            continue;
        if (__atomic_load_n(&fs->stats_stop, __ATOMIC_ACQUIRE))
            break;
        stats_log(fs);
    }
    return NULL;
}

int lsmfs_stats_start(struct lsmfs *fs)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    int rc = pthread_sigmask(SIG_BLOCK, &set, NULL);
    if (rc == 0 && (rc = lsmfs_thread_start(&fs->stats_thread, stats_main, fs)) == 0)
        fs->stats_running = 1;
    return rc;
}

void lsmfs_stats_stop(struct lsmfs *fs)
{
    if (!fs->stats_running)
        return;
    __atomic_store_n(&fs->stats_stop, 1, __ATOMIC_RELEASE);
    pthread_kill(fs->stats_thread, SIGUSR1);
    pthread_join(fs->stats_thread, NULL);
    fs->stats_running = 0;
}
