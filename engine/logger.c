/*
 * logger.c — the handle's messages to its owner: the info-log callback set with
 * lsm_options_set_logger (recovery, flushes, compactions, a full disk, background errors,
 * checksum failures met by reads).
 *
 * The callback belongs to the caller, who may do anything in it but call back into the handle,
 * so the engine never calls it while holding one of its own locks: a callback that blocks, or
 * that takes a lock of the caller's that a caller's thread holds while it waits on the engine,
 * must not stall a flush that holds db->mu. Messages that arise under a lock (a background error
 * is set under mu; the reserve is given back under space_mu) are queued with db_log_later and
 * delivered by db_log_drain, which the flush thread (at least every 100 ms while it waits), the
 * compaction threads, the write path and lsm_close call with no lock held. The queue is bounded:
 * what overflows it is counted and said in the next message. Without a callback everything here
 * is a test of one pointer. It must never format a message nobody asked for, and never call the
 * callback with an engine lock held.
 */
#include <stdarg.h>
#include <stdio.h>
#include "db_impl.h"

static int db_logging(const lsm_db *db)
{
    return db->opt.logger != NULL;
}

void db_log_drain(lsm_db *db)
{
    if (!db_logging(db) || atomic_load(&db->logq_n) == 0)
        return;
    /* Taken one at a time, so that the callback runs with logmu released too. */
    for (;;) {
        int level;
        char msg[LSM_ERRLEN + 64];
        pthread_mutex_lock(&db->logmu);
        int n = atomic_load(&db->logq_n);
        if (n == 0) {
            pthread_mutex_unlock(&db->logmu);
            return;
        }
        level = db->logq[0].level;
        if (db->log_dropped)
            snprintf(msg, sizeof msg, "%s (and %d more messages lost)", db->logq[0].msg,
                     db->log_dropped);
        else
            snprintf(msg, sizeof msg, "%s", db->logq[0].msg);
        db->log_dropped = 0;
        memmove(&db->logq[0], &db->logq[1], (size_t)(n - 1) * sizeof db->logq[0]);
        atomic_store(&db->logq_n, n - 1);
        pthread_mutex_unlock(&db->logmu);
        db->opt.logger(db->opt.logger_arg, level, msg);
    }
}

void db_log(lsm_db *db, int level, const char *fmt, ...)
{
    if (!db_logging(db))
        return;
    db_log_drain(db);           /* what was queued happened first */
    char msg[LSM_ERRLEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    db->opt.logger(db->opt.logger_arg, level, msg);
}

void db_log_later(lsm_db *db, int level, const char *fmt, ...)
{
    if (!db_logging(db))
        return;
    pthread_mutex_lock(&db->logmu);
    int n = atomic_load(&db->logq_n);
    if (n == DB_LOG_QUEUE) {
        db->log_dropped++;
    } else {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(db->logq[n].msg, sizeof db->logq[n].msg, fmt, ap);
        va_end(ap);
        db->logq[n].level = level;
        atomic_store(&db->logq_n, n + 1);
    }
    pthread_mutex_unlock(&db->logmu);
}
