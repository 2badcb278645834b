/*
 * log.c — the daemon's leaf services: where messages go, the one map from engine codes to errno,
 * and the clocks.
 *
 * What: lsmfs_log writes to a log file when -o logfile names one, else to stderr in the foreground
 * and to syslog once detached, dropping messages less urgent than -o loglevel; lsmfs_errno turns
 * a negative LSM_* code into the positive errno a FUSE reply carries, logging hard failures with
 * the engine's detail; lsmfs_now and lsmfs_mono_ns read the wall and the monotonic clock.
 *
 * Why so: every other module needs these and they need nothing of the others, so they sit at the
 * bottom of the dependency order. Keeping the code-to-errno map in one function means an engine
 * failure is reported the same way whichever request met it, and an EIO always leaves a line.
 *
 * Never: map engine codes to errno anywhere else; take a lock (they are called under every lock of
 * the daemon).
 */
#include "lsmfs.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <signal.h>
#include <stdarg.h>
#include <syslog.h>
#include <time.h>

/* Where messages go: set once by lsmfs_log_open before any thread starts, read-only after. Like
   syslog's own openlog state it belongs to the process, not to a mount. */
static int log_stderr;
static FILE *log_file;                  /* -o logfile, line-buffered; NULL: stderr or syslog */
static int log_level = LOG_INFO;        /* messages with a larger priority number are dropped */

static const char *const log_names[] = { "emerg", "alert", "crit", "err", "warning", "notice",
                                         "info", "debug" };

int lsmfs_log_level(const char *name)
{
    for (int i = 0; i < 8; i++)
        if (strcmp(name, log_names[i]) == 0)
            return i;
    return -1;
}

int lsmfs_log_open(int foreground, const char *path, int level)
{
    log_level = level;
    if (path) {
        if (!(log_file = fopen(path, "ae")))
            return errno;
        setvbuf(log_file, NULL, _IOLBF, 0);
        return 0;
    }
    log_stderr = foreground;
    if (!foreground) {
        /* No syslog socket (a container, say): say so while standard error still reaches
           someone, since a detached daemon's messages would go nowhere. */
        if (access("/dev/log", W_OK) != 0)
            fprintf(stderr, "lsmfs: no syslog socket (/dev/log): the daemon's messages will be "
                            "lost; give -o logfile=PATH to keep them, or run with -f\n");
        openlog("lsmfs", LOG_PID, LOG_DAEMON);
    }
    return 0;
}

/* The one place engine codes become errno values. Hard failures are logged with the engine's
   detail so that an EIO always leaves a line in syslog (or on stderr in the foreground). */
int lsmfs_errno(struct lsmfs *fs, int rc, const char *what, const char *path)
{
    switch (rc) {
    case LSM_OK:       return 0;
    case LSM_NOTFOUND: return ENOENT;
    case LSM_BUSY:     return EBUSY;
    case LSM_NOMEM:    return ENOMEM;
    case LSM_INVALID:  return EINVAL;
    case LSM_EXISTS:   return EEXIST;
    case LSM_NOSPACE:
        lsmfs_log(LOG_ERR, "%s %s: %s", what, path ? path : "", lsm_errmsg(fs->db));
        return ENOSPC;
    case LSM_CORRUPT:
    case LSM_IOERR:
    case LSM_CLOSED:
    default:
        lsmfs_log(LOG_ERR, "%s %s: %s: %s", what, path ? path : "", lsm_strerror(rc),
                  lsm_errmsg(fs->db));
        return EIO;
    }
}

void lsmfs_log(int prio, const char *fmt, ...)
{
    va_list ap;
    if (prio > log_level)
        return;
    va_start(ap, fmt);
    if (log_file) {
        char when[32];
        struct tm tm;
        time_t now = time(NULL);
        strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", localtime_r(&now, &tm));
        /* one fprintf per piece under the stream's own lock: lines of two threads may
           interleave only between pieces, so the line is built first */
        char line[2048];
        int n = snprintf(line, sizeof line, "%s lsmfs[%ld]: %s: ", when, (long)getpid(),
                         log_names[prio & 7]);
        vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
        fprintf(log_file, "%s\n", line);
    } else if (log_stderr) {
        fputs("lsmfs: ", stderr);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
    } else {
        vsyslog(prio, fmt, ap);
    }
    va_end(ap);
}

int lsmfs_thread_start(pthread_t *t, void *(*fn)(void *), void *arg)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(t, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

int64_t lsmfs_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t lsmfs_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}
