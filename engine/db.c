/*
 * db.c — the lsm_db handle: lsm_open in named steps (options, lock, give back the
 * reserve, recover, start threads, take the reserve),
 * lsm_close, lsm_destroy, statistics, error messages, and the small services every part of the
 * handle shares (file numbers, directory syncs, the version set's table callbacks).
 *
 * The rest of the handle lives beside it by concern (db_impl.h lists the rooms). Open either
 * returns a handle whose recovery is complete, whose WAL is durable and whose threads run, or
 * frees everything it made and says why in lsm_errmsg(NULL). It must never open a directory
 * another handle has locked, and close must never return before the background threads have
 * stopped and the WAL is sealed.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include "db_impl.h"

static _Thread_local char tl_open_err[LSM_ERRLEN];
static _Thread_local char tl_errmsg[LSM_ERRLEN];

const char *lsm_strerror(int rc)
{
    switch (rc) {
    case LSM_OK: return "ok";
    case LSM_NOTFOUND: return "not found";
    case LSM_CORRUPT: return "corrupt data";
    case LSM_IOERR: return "I/O error";
    case LSM_BUSY: return "database is locked";
    case LSM_NOMEM: return "out of memory";
    case LSM_INVALID: return "invalid argument";
    case LSM_EXISTS: return "database already exists";
    case LSM_CLOSED: return "database failed earlier; reopen it";
    case LSM_NOSPACE: return "no space left on device";
    default: return "unknown error";
    }
}

const char *lsm_errmsg(lsm_db *db)
{
    if (!db) {
        memcpy(tl_errmsg, tl_open_err, sizeof tl_errmsg);
        return tl_errmsg;
    }
    pthread_mutex_lock(&db->errmu);
    memcpy(tl_errmsg, db->errmsg, sizeof tl_errmsg);
    pthread_mutex_unlock(&db->errmu);
    return tl_errmsg;
}

int db_open_fail(int rc, const char *msg)
{
    snprintf(tl_open_err, sizeof tl_open_err, "%s", rc == LSM_OK ? "" : msg && *msg ? msg
                                                                   : lsm_strerror(rc));
    return rc;
}

int db_fail(lsm_db *db, int rc, const char *msg)
{
    if (rc == LSM_OK || rc == LSM_NOTFOUND)
        return rc;
    pthread_mutex_lock(&db->errmu);
    snprintf(db->errmsg, sizeof db->errmsg, "%s", msg && *msg ? msg : lsm_strerror(rc));
    pthread_mutex_unlock(&db->errmu);
    return rc;
}

void db_set_bg_error(lsm_db *db, int rc, const char *msg)
{
    if (!db->bg_error) {
        db->bg_error = rc;
        snprintf(db->bg_errmsg, sizeof db->bg_errmsg, "%s", msg);
        db_log_later(db, LSM_LOG_ERROR, "background error, writes stop until a reopen: %s: %s",
                     lsm_strerror(rc), msg);
    }
    pthread_cond_broadcast(&db->bg_cv);
}

uint64_t db_new_file_number(lsm_db *db)
{
    pthread_mutex_lock(&db->mu);
    uint64_t n = db->vs.next_file++;
    pthread_mutex_unlock(&db->mu);
    return n;
}

int db_sync_dir(lsm_db *db, char *err)
{
    int e = db->env->sync_dir(db->env, db->dir);
    return e < 0 ? err_errno(err, e, "syncing directory", db->dir) : LSM_OK;
}

/* Tells the flush thread and the db->nthreads compaction threads to stop, and waits for them (a
   running compaction finishes first). */
static void db_stop_threads(lsm_db *db)
{
    pthread_mutex_lock(&db->mu);
    db->shutting_down = 1;
    pthread_cond_broadcast(&db->work_cv);
    pthread_cond_broadcast(&db->compact_cv);
    pthread_mutex_unlock(&db->mu);
    pthread_join(db->flush_thread, NULL);
    for (int i = 0; i < db->nthreads; i++)
        pthread_join(db->compact_thread[i], NULL);
}

static void db_free(lsm_db *db)
{
    file_meta_unref(db->seek_file);
    memtable_unref(db->mem);
    memtable_unref(db->imm);
    logw_close(db->wal, NULL);
    vset_close(&db->vs);
    table_cache_destroy(&db->tables);
    blob_set_destroy(&db->blobs);
    cache_free(db->bcache);
    if (db->lock)
        db->env->unlock(db->env, db->lock);
    buf_free(&db->group);
    for (int l = 0; l < LSM_MAX_LEVELS; l++)
        buf_free(&db->compact_pointer[l]);
    pthread_mutex_destroy(&db->mu);
    pthread_mutex_destroy(&db->manifest_mu);
    pthread_mutex_destroy(&db->errmu);
    pthread_mutex_destroy(&db->space_mu);
    pthread_mutex_destroy(&db->logmu);
    pthread_cond_destroy(&db->bg_cv);
    pthread_cond_destroy(&db->work_cv);
    pthread_cond_destroy(&db->compact_cv);
    free(db->dir);
    free(db);
}

/* A table entering the current version: count its blob references. */
static void db_add_table(void *arg, file_meta *f)
{
    lsm_db *db = arg;
    blob_set_ref(&db->blobs, f->blobs, f->nblobs);
}

/* Called when no version names table f any more: delete it, and every blob file no table names. */
static void db_drop_table(void *arg, file_meta *f)
{
    lsm_db *db = arg;
    char path[4096];
    table_cache_evict(&db->tables, f->number);
    file_path(db->dir, f->number, ".sst", path, sizeof path);
    db->env->unlink(db->env, path);
    blob_set_unref(&db->blobs, f->blobs, f->nblobs);
}

/* A handle for dir with sanitized options, its locks, caches and version set ready; nothing on
   disk touched yet. NULL (with a message in err) if the options are invalid. */
static lsm_db *db_new(const char *dir, const lsm_options *opt, char *err)
{
    lsm_db *db = xcalloc(1, sizeof *db);
    if (opt)
        db->opt = *opt;
    else
        options_defaults(&db->opt);
    if (options_sanitize(&db->opt, err) != LSM_OK) {
        free(db);
        return NULL;
    }
    db->env = db->opt.env ? db->opt.env : env_posix();
    db->dir = xmemdup(dir, strlen(dir) + 1);
    pthread_mutex_init(&db->mu, NULL);
    pthread_mutex_init(&db->manifest_mu, NULL);
    pthread_mutex_init(&db->errmu, NULL);
    pthread_mutex_init(&db->space_mu, NULL);
    pthread_mutex_init(&db->logmu, NULL);
    pthread_cond_init(&db->bg_cv, NULL);
    pthread_cond_init(&db->work_cv, NULL);
    pthread_cond_init(&db->compact_cv, NULL);
    db->snapshots.next = db->snapshots.prev = &db->snapshots;
    db->bcache = cache_new(db->opt.cache_bytes);
    table_cache_init(&db->tables, db->env, db->dir, db->bcache, (size_t)db->opt.max_open_files);
    blob_set_init(&db->blobs, db->env, db->dir, (size_t)db->opt.max_open_files / 4 + 16);
    db->vs.env = db->env;
    db->vs.dir = db->dir;
    db->vs.db_mu = &db->mu;
    db->vs.drop = db_drop_table;
    db->vs.add = db_add_table;
    db->vs.drop_arg = db;
    return db;
}

/* Read-only: takes a shared lock of an existing LOCK, creating nothing. A directory whose LOCK
   is missing (a copy, a read-only file system) is opened without a lock. */
static int db_lock_dir_shared(lsm_db *db, char *err)
{
    const char *dir = db->dir;
    int e = db->env->file_exists(db->env, dir);
    if (e == 0)
        return err_set(err, LSM_INVALID, "%s: no such directory", dir);
    char path[4096];
    snprintf(path, sizeof path, "%s/LOCK", dir);
    long holder = 0;
    e = db->env->lock_shared ? db->env->lock_shared(db->env, path, &db->lock, &holder) : -ENOENT;
    if (e == 0)
        return LSM_OK;
    db->lock = NULL;
    if (e == -ENOENT)
        return LSM_OK;
    if (e != -EWOULDBLOCK && e != -EAGAIN)
        return err_errno(err, e, "locking", path);
    if (holder > 0)
        return err_set(err, LSM_BUSY, "%s: held by a read-write handle or process (pid %ld)",
                       path, holder);
    return err_set(err, LSM_BUSY, "%s: held by a read-write handle or process", path);
}

/* Makes the directory when allowed and takes its LOCK; a held lock says who holds it. */
static int db_lock_dir(lsm_db *db, char *err)
{
    const char *dir = db->dir;
    if (db->opt.read_only)
        return db_lock_dir_shared(db, err);
    int e = db->env->file_exists(db->env, dir);
    if (e == 0 && !db->opt.create_if_missing)
        return err_set(err, LSM_INVALID, "%s: no such directory (create_if_missing is off)", dir);
    if (e == 0) {
        e = db->env->mkdir(db->env, dir);
        if (e < 0 && e != -EEXIST)
            return err_errno(err, e, "creating directory", dir);
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/LOCK", dir);
    long holder = 0;
    e = db->env->lock(db->env, path, &db->lock, &holder);
    if (e == 0)
        return LSM_OK;
    db->lock = NULL;
    if (e != -EWOULDBLOCK && e != -EAGAIN)
        return err_errno(err, e, "locking", path);
    if (holder < 0)
        return err_set(err, LSM_BUSY, "%s: held by read-only handles", path);
    if (holder > 0)
        return err_set(err, LSM_BUSY, "%s: held by another handle or process (pid %ld)", path,
                       holder);
    return err_set(err, LSM_BUSY, "%s: held by another handle or process", path);
}

/* Starts the flush thread and the compaction threads. */
static int db_start_threads(lsm_db *db, char *err)
{
    if (thread_start(&db->flush_thread, db_flush_main, db) != 0)
        return err_set(err, LSM_NOMEM, "cannot start the flush thread");
    for (; db->nthreads < COMPACT_THREADS; db->nthreads++)
        if (thread_start(&db->compact_thread[db->nthreads], compact_thread_main, db) != 0) {
            db_stop_threads(db);
            return err_set(err, LSM_NOMEM, "cannot start a compaction thread");
        }
    db->threads_started = 1;
    return LSM_OK;
}

int lsm_open(const char *dir, const lsm_options *opt, lsm_db **out)
{
    char *err = tl_open_err;
    err[0] = 0;
    if (!out)
        return err_set(err, LSM_INVALID, "lsm_open: out is NULL");
    *out = NULL;
    if (!dir || !*dir)
        return err_set(err, LSM_INVALID, "lsm_open: no directory given");
    lsm_db *db = db_new(dir, opt, err);
    if (!db)
        return LSM_INVALID;
    int rc = db_lock_dir(db, err);
    if (rc == LSM_OK && !db->opt.read_only)
        space_open(db);
    if (db->opt.read_only)
        blob_set_keep_unpinned(&db->blobs);     /* a last unpin deletes nothing */
    if (rc == LSM_OK)
        rc = db_recover(db, err);
    if (rc == LSM_OK && !db->opt.read_only) {
        db->mem = memtable_new();
        rc = db_start_threads(db, err);
    }
    if (rc != LSM_OK) {
        db_log(db, LSM_LOG_ERROR, "%s: open failed: %s", dir, err);
        db_free(db);
        return rc;
    }
    if (!db->opt.read_only)
        space_refill(db, 1);
    db_log_drain(db);
    *out = db;
    return LSM_OK;
}

int lsm_close(lsm_db *db)
{
    if (!db)
        return LSM_OK;
    char err[LSM_ERRLEN] = "";
    if (db->threads_started)
        db_stop_threads(db);
    int rc = db->bg_error;
    if (rc == LSM_OK && db->wal)
        rc = blob_set_sync_pending(&db->blobs, err);   /* before the seal: see blob.h */
    if (rc == LSM_OK && db->wal)
        rc = logw_seal(db->wal, err);
    db_log_drain(db);           /* the threads are gone: whatever they queued */
    if (rc != LSM_OK && rc != db->bg_error)
        db_log(db, LSM_LOG_ERROR, "closing: %s", err);
    db_free(db);
    return rc;
}

/* Whether name is a file of the engine's that lsm_destroy removes (man/lsm-format.5, FILES), and
   whether it is CURRENT (removed first) or LOCK (removed last). */
static int db_destroy_name(const char *name, int *current, int *lock)
{
    uint64_t num;
    *current = strcmp(name, "CURRENT") == 0;
    *lock = strcmp(name, "LOCK") == 0;
    if (*current || *lock || strcmp(name, "CURRENT.tmp") == 0 || strcmp(name, "RESERVE") == 0)
        return 1;
    if (file_parse_name(name, ".log", &num) || file_parse_name(name, ".sst", &num) ||
        file_parse_name(name, ".blob", &num))
        return 1;
    if (strncmp(name, "MANIFEST-", 9) != 0 || !name[9])
        return 0;
    for (const char *p = name + 9; *p; p++)
        if (*p < '0' || *p > '9')
            return 0;
    return 1;
}

/* Removes dir/name; LSM_OK when it is gone (or was already). */
static int db_destroy_unlink(lsm_env *env, const char *dir, const char *name, char *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int e = env->unlink(env, path);
    return e < 0 && e != -ENOENT ? err_errno(err, e, "deleting", path) : LSM_OK;
}

int lsm_destroy(const char *dir)
{
    char *err = tl_open_err;
    err[0] = 0;
    if (!dir || !*dir)
        return err_set(err, LSM_INVALID, "lsm_destroy: no directory given");
    lsm_env *env = env_posix();
    int e = env->file_exists(env, dir);
    if (e == 0)
        return LSM_OK;          /* nothing to destroy */
    if (e < 0)
        return err_errno(err, e, "checking", dir);
    /* The lock, as a read-write open takes it, excludes every handle while the files go. */
    char path[4096];
    snprintf(path, sizeof path, "%s/LOCK", dir);
    lsm_file *lock = NULL;
    long holder = 0;
    e = env->lock(env, path, &lock, &holder);
    if (e == -EWOULDBLOCK || e == -EAGAIN) {
        if (holder < 0)
            return err_set(err, LSM_BUSY, "%s: held by read-only handles", path);
        if (holder > 0)
            return err_set(err, LSM_BUSY, "%s: held by another handle or process (pid %ld)",
                           path, holder);
        return err_set(err, LSM_BUSY, "%s: held by another handle or process", path);
    }
    if (e < 0)
        return err_errno(err, e, "locking", path);
    char **names = NULL;
    int n = 0;
    int rc = LSM_OK;
    e = env->list(env, dir, &names, &n);
    if (e < 0)
        rc = err_errno(err, e, "listing", dir);
    /* CURRENT first: from then on no open takes what is left for a database. */
    for (int i = 0; i < n && rc == LSM_OK; i++) {
        int cur, lk;
        if (db_destroy_name(names[i], &cur, &lk) && cur)
            rc = db_destroy_unlink(env, dir, names[i], err);
    }
    if (rc == LSM_OK && env->sync_dir(env, dir) < 0)
        rc = err_set(err, LSM_IOERR, "%s: cannot sync the directory", dir);
    for (int i = 0; i < n && rc == LSM_OK; i++) {
        int cur, lk;
        if (db_destroy_name(names[i], &cur, &lk) && !cur && !lk)
            rc = db_destroy_unlink(env, dir, names[i], err);
    }
    env_free_list(names, n);
    /* LOCK last, still held: an open racing with us fails on it rather than see half a
       database; one after the unlink makes a new LOCK and finds an empty directory. */
    if (rc == LSM_OK)
        rc = db_destroy_unlink(env, dir, "LOCK", err);
    env->unlock(env, lock);
    if (rc == LSM_OK && env->rmdir)
        env->rmdir(env, dir);   /* fails, as it should, while other names remain */
    return rc;
}

int lsm_stats_get(lsm_db *db, lsm_stats *out, size_t size)
{
    if (!db || !out)
        return LSM_INVALID;
    lsm_stats full, *st = &full;
    memset(st, 0, sizeof *st);
    pthread_mutex_lock(&db->mu);
    version *v = db->vs.current;
    version_ref(v);
    st->last_sequence = db->last_seq;
    st->memtable_bytes = memtable_usage(db->mem);
    uint64_t wal = db->wal ? logw_size(db->wal) : 0;
    pthread_mutex_unlock(&db->mu);
    for (int l = 0; l < LSM_MAX_LEVELS; l++) {
        st->tables[l] = v->nfiles[l];
        st->level_bytes[l] = version_level_bytes(v, l);
        st->disk_bytes += st->level_bytes[l];
    }
    st->pending_compaction_bytes = compact_pending_bytes(db, v);
    version_unref(v);
    st->disk_bytes += wal;
    st->user_bytes_written = atomic_load(&db->st_user_bytes);
    st->wal_bytes_written = atomic_load(&db->st_wal_bytes);
    st->flush_bytes_written = atomic_load(&db->st_flush_bytes);
    st->compaction_bytes_written = atomic_load(&db->st_compact_bytes);
    st->compaction_bytes_read = atomic_load(&db->st_compact_read);
    st->stall_micros = atomic_load(&db->st_stall_micros);
    st->flushes = atomic_load(&db->st_flushes);
    st->compactions = atomic_load(&db->st_compactions);
    st->compactions_parallel = atomic_load(&db->st_compactions_parallel);
    st->compactions_split = atomic_load(&db->st_compactions_split);
    st->compactions_grouped = atomic_load(&db->st_compactions_grouped);
    cache_stats(db->bcache, &st->cache_hits, &st->cache_misses);
    st->blob_bytes_written = atomic_load(&db->st_blob_bytes);
    st->blob_bytes_live = blob_set_live_bytes(&db->blobs);
    st->disk_bytes += st->blob_bytes_live;
    memcpy(out, st, size < sizeof *st ? size : sizeof *st);
    return LSM_OK;
}

const char *lsm_version(void)
{
    return LSM_VERSION_STRING;
}
