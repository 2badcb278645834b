/*
 * log.c — the daemon's leaf services: where messages go, the one map from engine codes to errno,
 * and the clocks.
 *
 * What: lsmfs_log writes to stderr in the foreground and to syslog once detached; lsmfs_errno turns
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
#include <signal.h>
#include <stdarg.h>
#include <syslog.h>
#include <time.h>

/* Where messages go: set once by lsmfs_log_open before any thread starts, read-only after. Like
   syslog's own openlog state it belongs to the process, not to a mount. */
static int log_stderr;

void lsmfs_log_open(int foreground)
{
    log_stderr = foreground;
    if (!foreground)
        openlog("lsmfs", LOG_PID, LOG_DAEMON);
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
    va_start(ap, fmt);
    if (log_stderr) {
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
