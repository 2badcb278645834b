/*
 * flush.c — the flush thread: it writes the immutable memtable as a level-0 table, records the
 * table in the manifest, and only then deletes the WAL that held the memtable's writes.
 *
 * Between flushes it hands buffered WAL records to the OS at least every 100 ms, so unsynced
 * writes do not sit in this process for long. A flush the disk has no room for is tried again at
 * once with the reserve's room (space.c), then once a second until space is freed, while writers
 * that would wait for it get LSM_NOSPACE; any other failed flush is a sticky background error:
 * writes stop (db_make_room reports it) and reads go on. It must never delete a WAL whose writes
 * are not yet in a table the manifest names.
 */
#include <errno.h>
#include <inttypes.h>
#include <time.h>
#include "builder.h"
#include "db_impl.h"

/* Writes imm as an L0 table and records it; log_number is the oldest WAL still needed afterwards. */
static int db_flush_memtable(lsm_db *db, memtable *imm, uint64_t log_number, uint64_t last_seq,
                             char *err)
{
    file_meta *f = NULL;
    uint64_t bytes = 0, t0 = now_micros();
    /* The seal of imm's WAL synced the pending blob files its maps name; a table is as durable
       as a synced WAL, so this holds whichever way imm came here. */
    int rc = blob_set_sync_pending(&db->blobs, err);
    if (rc == LSM_OK)
        rc = builder_write_memtable(db, imm, &f, &bytes, err);
    if (rc == LSM_OK && f)
        rc = db_sync_dir(db, err);
    if (rc != LSM_OK) {
        file_meta_unref(f);
        return rc;
    }
    version_edit e;
    edit_init(&e);
    if (f) {
        edit_add(&e, 0, f);
        file_meta_unref(f);
    }
    e.has_log_number = 1;
    e.log_number = log_number;
    e.has_last_seq = 1;
    e.last_seq = last_seq;
    pthread_mutex_lock(&db->manifest_mu);
    rc = vset_apply(&db->vs, &e, err);
    pthread_mutex_unlock(&db->manifest_mu);
    if (rc != LSM_OK && f) {
        char path[4096];
        file_path(db->dir, f->number, ".sst", path, sizeof path);
        db->env->unlink(db->env, path);
    }
    if (rc == LSM_OK)
        db_log(db, LSM_LOG_INFO, "flush: memtable of %zu bytes written as %s%06" PRIu64 ".sst, "
               "%" PRIu64 " bytes, in %" PRIu64 " ms", memtable_usage(imm), f ? "" : "no table ",
               f ? f->number : 0, bytes, (now_micros() - t0) / 1000);
    edit_free(&e);
    atomic_fetch_add(&db->st_flush_bytes, bytes);
    atomic_fetch_add(&db->st_flushes, 1);
    return rc;
}

/* Waits up to ms milliseconds on work_cv (caller holds mu). */
static int db_flush_wait(lsm_db *db, long ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return pthread_cond_timedwait(&db->work_cv, &db->mu, &ts);
}

void *db_flush_main(void *arg)
{
    lsm_db *db = arg;
    char err[LSM_ERRLEN];
    pthread_mutex_lock(&db->mu);
    for (;;) {
        while (!db->shutting_down && (!db->imm || db->bg_error)) {
            /* Between flushes, hand buffered WAL records to the OS at least every 100 ms, so
               unsynced writes are not held in this process for long. */
            if (db_flush_wait(db, 100) == ETIMEDOUT && db->wal)
                logw_flush(db->wal, NULL);
            if (atomic_load(&db->logq_n)) {
                /* Messages queued under a lock (a full disk met by a writer, say). */
                pthread_mutex_unlock(&db->mu);
                db_log_drain(db);
                pthread_mutex_lock(&db->mu);
            }
        }
        if (!db->imm || db->bg_error)
            break;
        memtable *imm = db->imm;
        uint64_t old_log = db->imm_log, log_number = db->wal_number, seq = db->last_seq;
        pthread_mutex_unlock(&db->mu);
        int rc = db_flush_memtable(db, imm, log_number, seq, err);
        int retry = space_retryable(db, rc);
        if (retry && space_release(db)) {
            rc = db_flush_memtable(db, imm, log_number, seq, err);
            retry = space_retryable(db, rc);
        }
        if (rc == LSM_OK) {
            char path[4096];
            file_path(db->dir, old_log, ".log", path, sizeof path);
            db->env->unlink(db->env, path);
        }
        pthread_mutex_lock(&db->mu);
        db->flush_attempts++;
        if (retry) {
            /* Writers that wait for this flush fail instead (db_make_room); a delete may free
               the space, or another program may. */
            if (!db->flush_nospace)
                db_log_later(db, LSM_LOG_WARN, "flush postponed until space is freed: %s", err);
            db->flush_nospace = 1;
            db_fail(db, rc, err);
            pthread_cond_broadcast(&db->bg_cv);
            if (db->shutting_down)
                break;          /* its writes are still in their log, replayed at the next open */
            db_flush_wait(db, 1000);
            continue;
        }
        if (rc != LSM_OK) {
            db_set_bg_error(db, rc, err);
            break;
        }
        db->flush_nospace = 0;
        db->imm = NULL;
        memtable_unref(imm);
        pthread_cond_broadcast(&db->bg_cv);
        pthread_cond_broadcast(&db->compact_cv);
        if (space_low(db)) {
            pthread_mutex_unlock(&db->mu);
            space_refill(db, 0);
            pthread_mutex_lock(&db->mu);
        }
    }
    pthread_mutex_unlock(&db->mu);
    db_log_drain(db);
    return NULL;
}
