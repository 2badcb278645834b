/*
 * space.c — surviving a full disk: the reserve file, and the low-space mode it buys time for.
 *
 * On a full disk the only way to get space back is to delete, and a delete itself needs space:
 * a log record, then a flush to a table, then a compaction that drops the deleted values (and so
 * frees their tables and blob files). So, as ext4 keeps blocks back for root, a database opened
 * with a reserve (lsm_options_set_reserve_bytes) holds that many bytes in a file named RESERVE.
 * The first time the disk refuses a write — a WAL append, a flush, a compaction — the reserve is
 * given back to the file system and the refused work tried again, and the handle enters
 * low-space mode: writes that only add data fail with LSM_NOSPACE at once (nothing is written,
 * and the handle stays usable), while deletes, and batches their writer marked with
 * lsm_batch_set_frees_space, go on using the space the reserve left. Each time a flush or a
 * compaction ends, and at most once a second while writes are refused, the module tries to take
 * the reserve back; when it can, low-space mode ends. Open deletes the reserve before recovery,
 * so recovery (which writes tables and a manifest) has that room on a full disk too, and takes it
 * back afterwards when it can.
 *
 * Without a reserve (the default of the library) a refused write still fails with LSM_NOSPACE
 * without stopping the handle, but nothing is held back for deletes. Entering and leaving the
 * mode, and giving the reserve back, are told to the logger (queued: space_release may run under
 * db->mu). This module never deletes
 * a file but RESERVE, and never refuses a delete-only batch.
 */
#include <errno.h>
#include <stdio.h>
#include "db_impl.h"

#define SPACE_FILE          "RESERVE"
#define SPACE_RETRY_MICROS  1000000u    /* a refused writer retries taking the reserve this often */
#define SPACE_ZERO_CHUNK    65536u      /* where fallocate is missing, the reserve is written */

static void space_path(const lsm_db *db, char *path, size_t n)
{
    snprintf(path, n, "%s/" SPACE_FILE, db->dir);
}

void space_open(lsm_db *db)
{
    char path[4096];
    space_path(db, path, sizeof path);
    db->env->unlink(db->env, path);     /* absent is fine */
}

/* Fills f with n bytes on disk: preallocated where the env can, else written as zeros. */
static int space_fill(lsm_db *db, lsm_file *f, uint64_t n)
{
    int e = db->env->preallocate ? db->env->preallocate(db->env, f, 0, n) : -EOPNOTSUPP;
    if (e != -EOPNOTSUPP)
        return e;
    static const uint8_t zero[SPACE_ZERO_CHUNK];
    for (uint64_t done = 0; done < n && e == 0; done += SPACE_ZERO_CHUNK)
        e = env_append_all(db->env, f, zero, n - done < SPACE_ZERO_CHUNK ? (size_t)(n - done)
                                                                         : SPACE_ZERO_CHUNK);
    return e;
}

/* Creates the reserve; 1 if it is held now. Caller holds space_mu. */
static int space_take(lsm_db *db)
{
    char path[4096];
    space_path(db, path, sizeof path);
    lsm_file *f = NULL;
    int e = db->env->open(db->env, path, LSM_O_CREATE | (db->env->pwrite ? LSM_O_WRITE_AT : 0),
                          &f);
    if (e == 0)
        e = space_fill(db, f, db->opt.reserve_bytes);
    if (f)
        db->env->close(db->env, f);
    if (e < 0) {
        db->env->unlink(db->env, path);
        return 0;
    }
    return 1;
}

void space_refill(lsm_db *db, int now)
{
    if (!db->opt.reserve_bytes)
        return;
    pthread_mutex_lock(&db->space_mu);
    uint64_t t = now_micros();
    if (!db->reserve_held && (now || t - db->reserve_tried >= SPACE_RETRY_MICROS)) {
        db->reserve_tried = t;
        db->reserve_held = space_take(db);
        int was_low = atomic_exchange(&db->low_space, !db->reserve_held);
        if (was_low && db->reserve_held)
            db_log_later(db, LSM_LOG_INFO, "%s: space is free again: reserve of %zu bytes taken "
                         "back, low-space mode left (writes that add data are accepted)", db->dir,
                         db->opt.reserve_bytes);
    }
    pthread_mutex_unlock(&db->space_mu);
    db_log_drain(db);           /* callers hold no lock (this does I/O) */
}

int space_release(lsm_db *db)
{
    pthread_mutex_lock(&db->space_mu);
    int had = db->reserve_held;
    if (had) {
        char path[4096];
        space_path(db, path, sizeof path);
        db->env->unlink(db->env, path);
        db->reserve_held = 0;
        db_log_later(db, LSM_LOG_WARN, "%s: the disk is full: reserve of %zu bytes given back",
                     db->dir, db->opt.reserve_bytes);
    }
    if (db->opt.reserve_bytes && !atomic_exchange(&db->low_space, 1))
        db_log_later(db, LSM_LOG_WARN, "%s: low-space mode entered: only deletes and writes that "
                     "free space are accepted until space is freed", db->dir);
    db->reserve_tried = now_micros();
    pthread_mutex_unlock(&db->space_mu);
    return had;
}

int space_low(lsm_db *db)
{
    return atomic_load(&db->low_space);
}

int space_fits(lsm_db *db, uint64_t bytes)
{
    uint64_t avail;
    if (!db->env->space || db->env->space(db->env, db->dir, &avail) < 0)
        return 1;
    return avail >= bytes;
}

int space_retryable(lsm_db *db, int rc)
{
    /* Without manifest_mu: callers may hold mu (compact_done does), and manifest_mu is never
       taken under mu. The manifest's writer is only replaced at open, before any thread runs,
       and logw_failed takes the writer's own leaf mutex. */
    return rc == LSM_NOSPACE && !logw_failed(db->vs.manifest);
}
