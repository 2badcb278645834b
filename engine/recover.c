/*
 * recover.c — opening an existing database: the manifest, the tables it names, the logs written
 * since, and the files nothing needs any more.
 *
 * Recovery reads CURRENT and replays its manifest into the version set, checks that every table it
 * names exists, replays every WAL at or after the manifest's log number into level-0 tables
 * (flushing as it goes, so a long log never needs more than one memtable), starts a new WAL and a
 * fresh manifest, and records all of it in one edit. A torn tail is normal only in the log that was
 * live at the crash; in an older log it is damage, reported as such. A record whose extent map
 * names blob bytes that are not there (an unsynced value writer commit whose WAL page reached the
 * disk before its blob file did: extent.c) ends replay as a torn tail does. Only then are orphan files
 * (tables, logs and blob files no version names, old manifests, temporaries) deleted. It must never
 * start an empty database over files that may hold data, and never delete a file before the edit
 * that stops naming it is durable. A read-only open (lsm_options_set_read_only) stops after
 * replaying the logs into the memtable it reads from: it writes, renames and deletes nothing.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "builder.h"
#include "db_impl.h"
#include "extent.h"

struct recover_state {
    lsm_db *db;
    memtable **mem;
    uint64_t max_seq;
    const char *path;
    char *err;
    version_edit *edit;
    uint64_t *bytes;
    char torn[4096];            /* an earlier log that ended in a torn tail, or "" */
    uint64_t torn_bytes;        /* the bytes it dropped */
    uint64_t records;           /* batch records replayed, for the logger */
    uint64_t record_bytes;      /* their bytes */
    uint64_t missing_at;        /* offset of a record whose maps name missing blob bytes */
    uint64_t *sizes;            /* blob file sizes seen by the check: (number + 1, size) pairs,
                                   open addressing; a missing file has size 0 */
    size_t nsizes, capsizes;    /* pairs used, slots */
};

/* The size of blob file number (0 if it is missing), looked up once per recovery: blob files do
   not change while it runs. */
static uint64_t db_recover_blob_size(struct recover_state *st, uint64_t number)
{
    if (2 * (st->nsizes + 1) > st->capsizes) {
        size_t cap = st->capsizes ? 2 * st->capsizes : 256;
        uint64_t *t = xcalloc(2 * cap, sizeof *t);
        for (size_t i = 0; i < st->capsizes; i++)
            if (st->sizes[2 * i]) {
                size_t j = (size_t)(st->sizes[2 * i] * 0x9E3779B97F4A7C15u) & (cap - 1);
                while (t[2 * j])
                    j = (j + 1) & (cap - 1);
                t[2 * j] = st->sizes[2 * i];
                t[2 * j + 1] = st->sizes[2 * i + 1];
            }
        free(st->sizes);
        st->sizes = t;
        st->capsizes = cap;
    }
    size_t j = (size_t)((number + 1) * 0x9E3779B97F4A7C15u) & (st->capsizes - 1);
    while (st->sizes[2 * j] && st->sizes[2 * j] != number + 1)
        j = (j + 1) & (st->capsizes - 1);
    if (!st->sizes[2 * j]) {
        lsm_db *db = st->db;
        char path[4096];
        lsm_file *f = NULL;
        uint64_t size = 0;
        file_path(db->dir, number, ".blob", path, sizeof path);
        if (db->env->open(db->env, path, LSM_O_READ, &f) != 0 || db->env->size(db->env, f, &size) != 0)
            size = 0;
        db->env->close(db->env, f);
        st->sizes[2 * j] = number + 1;
        st->sizes[2 * j + 1] = size;
        st->nsizes++;
    }
    return st->sizes[2 * j + 1];
}

/* Whether every blob file that map names exists and is long enough to hold the records its
   extents lie in. A malformed map passes: db_batch_apply reports it. */
static int db_recover_map_present(struct recover_state *st, slice map)
{
    extent_map m = { 0 };
    int ok = 1;
    if (extent_map_decode(map, &m) == 0)
        for (size_t i = 0; i < m.n && ok; i++) {
            const extent *e = &m.v[i];
            uint64_t sums = (e->rec_len + BLOB_CHUNK - 1) / BLOB_CHUNK * 4;
            ok = db_recover_blob_size(st, e->file) >= e->rec_off + e->rec_len + sums;
        }
    extent_map_free(&m);
    return ok;
}

/* Writes a memtable rebuilt from the logs as an L0 table added to edit. */
static int db_recover_flush(lsm_db *db, memtable *mem, version_edit *edit, uint64_t *bytes,
                            char *err)
{
    file_meta *f = NULL;
    int rc = builder_write_memtable(db, mem, &f, bytes, err);
    if (f) {
        edit_add(edit, 0, f);
        file_meta_unref(f);
        atomic_fetch_add(&db->st_flushes, 1);
    }
    return rc;
}

#define REPLAY_MISSING 1        /* db_recover_record: a map names blob bytes that are not there */

/* Whether every extent map in batch record p names blob bytes that exist. A map whose WAL record
   was synced does (its files were synced first: extent.c); one that was not may have reached the
   disk before its blob file did, and then it is as torn as a record cut short. A malformed
   record passes: db_batch_apply reports it. */
static int db_record_maps_present(struct recover_state *st, const uint8_t *p, size_t n)
{
    if (n < BATCH_HEADER)
        return 1;
    uint32_t count = dec_fixed32(p + 8);
    const uint8_t *q = p + BATCH_HEADER, *end = p + n;
    for (uint32_t i = 0; i < count && q < end; i++) {
        slice k, v;
        int type = *q++;
        if (!(q = dec_lenslice(q, end, &k)))
            return 1;
        if (type == LSM_TYPE_DELETE)
            continue;
        if (!(q = dec_lenslice(q, end, &v)))
            return 1;
        if (type == LSM_TYPE_EXTENTS && !db_recover_map_present(st, v))
            return 0;
    }
    return 1;
}

static int db_recover_record(void *arg, const uint8_t *p, size_t n, uint64_t off)
{
    struct recover_state *st = arg;
    uint64_t last;
    if (st->torn[0])
        return err_set(st->err, LSM_CORRUPT,
                       "%s: its last %" PRIu64 " bytes are damaged although a newer log (%s) "
                       "holds writes", st->torn, st->torn_bytes, st->path);
    if (!db_record_maps_present(st, p, n)) {
        st->missing_at = off;
        return REPLAY_MISSING;
    }
    if (db_batch_apply(st->db, *st->mem, p, n, &last) != LSM_OK)
        return err_set(st->err, LSM_CORRUPT, "%s: offset %" PRIu64 ": malformed batch record",
                       st->path, off);
    if (n >= BATCH_HEADER && dec_fixed32(p + 8) > 0 && last > st->max_seq)
        st->max_seq = last;
    st->records++;
    st->record_bytes += n;
    if (memtable_usage(*st->mem) >= st->db->opt.memtable_bytes && !st->db->opt.read_only) {
        /* Recovery flushes as it goes so a long log never needs more than one memtable. */
        int rc = db_recover_flush(st->db, *st->mem, st->edit, st->bytes, st->err);
        if (rc != LSM_OK)
            return rc;
        memtable_unref(*st->mem);
        *st->mem = memtable_new();
    }
    return LSM_OK;
}

/* Replays every WAL at or after the manifest's log number into L0 tables added to edit. */
static int db_replay_logs(lsm_db *db, version_edit *edit, char *err)
{
    char **names = NULL;
    int n = 0;
    int e = db->env->list(db->env, db->dir, &names, &n);
    if (e < 0)
        return err_errno(err, e, "listing", db->dir);
    uint64_t *logs = xmalloc((size_t)(n + 1) * sizeof *logs);
    int nlogs = 0;
    for (int i = 0; i < n; i++) {
        uint64_t num;
        if (file_parse_name(names[i], ".log", &num)) {
            if (num >= db->vs.log_number)
                logs[nlogs++] = num;
            if (num >= db->vs.next_file)
                db->vs.next_file = num + 1;
        } else if ((file_parse_name(names[i], ".sst", &num) || file_parse_name(names[i], ".blob", &num)) &&
                   num >= db->vs.next_file) {
            db->vs.next_file = num + 1;
        }
    }
    env_free_list(names, n);
    qsort(logs, (size_t)nlogs, sizeof *logs, u64_cmp);

    memtable *mem = memtable_new();
    uint64_t bytes = 0;
    struct recover_state st = { .db = db, .mem = &mem, .max_seq = db->vs.last_seq, .err = err,
                                .edit = edit, .bytes = &bytes };
    int rc = LSM_OK;
    for (int i = 0; i < nlogs && rc == LSM_OK; i++) {
        char path[4096];
        uint64_t dropped = 0;
        file_path(db->dir, logs[i], ".log", path, sizeof path);
        st.path = path;
        rc = log_replay(db->env, path, WAL_MAGIC, db_recover_record, &st, &dropped, err);
        if (rc == REPLAY_MISSING) {
            /* The record and all after it are dropped, as a torn tail is (and, like one, are
               damage if a newer log holds writes). */
            rc = LSM_OK;
            dropped = 1;
            uint64_t size = 0;
            lsm_file *f = NULL;
            if (db->env->open(db->env, path, LSM_O_READ, &f) == 0 &&
                db->env->size(db->env, f, &size) == 0 && size > st.missing_at)
                dropped = size - st.missing_at;
            db->env->close(db->env, f);
        }
        /* A torn tail is normal only in the log that was live at the crash. An older log was
           sealed before a newer one received writes, so a torn tail there is damage, once a
           newer log shows writes. Newer logs without records were made by an open that crashed
           before its manifest edit (it replays the torn log, makes a new log, and only then
           retires the old one); they are no evidence. */
        if (rc == LSM_OK && dropped && !st.torn[0]) {
            snprintf(st.torn, sizeof st.torn, "%s", path);
            st.torn_bytes = dropped;
        }
        if (rc == LSM_OK && dropped)
            db_log(db, LSM_LOG_WARN, "recovery: %s: dropped a torn tail of %" PRIu64 " bytes "
                   "(writes never acknowledged as synced, cut short by a crash)", path, dropped);
    }
    if (nlogs)
        db_log(db, LSM_LOG_INFO, "recovery: replayed %d log%s: %" PRIu64 " records, %" PRIu64
               " bytes, up to sequence %" PRIu64, nlogs, nlogs == 1 ? "" : "s", st.records,
               st.record_bytes, st.max_seq);
    free(logs);
    free(st.sizes);
    if (db->opt.read_only) {
        /* Nothing is written: the logs' writes stay in the memtable the handle reads. */
        db->mem = mem;
        db->last_seq = st.max_seq;
        return rc;
    }
    if (rc == LSM_OK && memtable_entries(mem) > 0)
        rc = db_recover_flush(db, mem, edit, &bytes, err);
    memtable_unref(mem);
    atomic_fetch_add(&db->st_flush_bytes, bytes);
    if (rc == LSM_OK && edit->nadded)
        rc = db_sync_dir(db, err);
    db->last_seq = st.max_seq;
    return rc;
}

/* Deletes every file of ours that the current state does not need. */
static void db_remove_obsolete(lsm_db *db)
{
    char **names = NULL;
    int n = 0;
    if (db->env->list(db->env, db->dir, &names, &n) < 0)
        return;
    version *v = db->vs.current;
    for (int i = 0; i < n; i++) {
        uint64_t num;
        int drop = 0;
        if (file_parse_name(names[i], ".log", &num)) {
            drop = num != db->wal_number;
        } else if (file_parse_name(names[i], ".sst", &num)) {
            drop = 1;
            for (int l = 0; l < LSM_MAX_LEVELS && drop; l++)
                for (int j = 0; j < v->nfiles[l] && drop; j++)
                    drop = v->files[l][j]->number != num;
        } else if (file_parse_name(names[i], ".blob", &num)) {
            drop = !blob_set_live(&db->blobs, num);
            if (!drop) {
                char path[4096];
                uint64_t size = 0;
                snprintf(path, sizeof path, "%s/%s", db->dir, names[i]);
                env_file_size(db->env, path, &size);
                blob_set_note_size(&db->blobs, num, size);
            }
        } else if (strncmp(names[i], "MANIFEST-", 9) == 0) {
            drop = strtoull(names[i] + 9, NULL, 10) != db->vs.manifest_number;
        } else {
            size_t len = strlen(names[i]);
            drop = len > 4 && strcmp(names[i] + len - 4, ".tmp") == 0;
        }
        if (drop) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", db->dir, names[i]);
            int e = db->env->unlink(db->env, path);
            /* The replayed logs and the previous manifest go at every open; a table, a blob file
               or a temporary nothing names was left by a crash (or a failed write). */
            int normal = file_parse_name(names[i], ".log", &num) ||
                         strncmp(names[i], "MANIFEST-", 9) == 0;
            db_log(db, normal ? LSM_LOG_DEBUG : LSM_LOG_INFO, "recovery: removed %s %s%s%s",
                   normal ? "obsolete" : "orphan file", path, e < 0 ? ": " : "",
                   e < 0 ? strerror(-e) : "");
        }
    }
    env_free_list(names, n);
}

/* With CURRENT missing: the name of a file that may hold data (a table, a blob file, a log longer
   than its header), so open refuses instead of starting an empty database beside it; NULL if
   none. */
static char *db_find_orphan_data(lsm_db *db)
{
    char **names = NULL, *found = NULL;
    int n = 0;
    if (db->env->list(db->env, db->dir, &names, &n) < 0)
        return NULL;
    for (int i = 0; i < n && !found; i++) {
        uint64_t num, size = 0;
        if (file_parse_name(names[i], ".sst", &num) || file_parse_name(names[i], ".blob", &num)) {
            found = xmemdup(names[i], strlen(names[i]) + 1);
        } else if (file_parse_name(names[i], ".log", &num)) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", db->dir, names[i]);
            env_file_size(db->env, path, &size);
            if (size > LOG_HEADER)
                found = xmemdup(names[i], strlen(names[i]) + 1);
        }
    }
    env_free_list(names, n);
    return found;
}

/* Checks that every table the version names exists, so a lost file is reported at open. */
static int db_check_tables(lsm_db *db, char *err)
{
    version *v = db->vs.current;
    for (int l = 0; l < LSM_MAX_LEVELS; l++)
        for (int j = 0; j < v->nfiles[l]; j++) {
            char path[4096];
            file_path(db->dir, v->files[l][j]->number, ".sst", path, sizeof path);
            int e = db->env->file_exists(db->env, path);
            if (e == 0)
                return err_set(err, LSM_CORRUPT, "%s: missing table named by the manifest", path);
            if (e < 0)
                return err_errno(err, e, "checking", path);
        }
    return LSM_OK;
}

/* Reads the manifest into db->vs, or starts an empty version where there is no database yet. */
static int db_recover_manifest(lsm_db *db, char *err)
{
    int rc = vset_recover(&db->vs, err);
    if (rc == LSM_NOTFOUND) {
        char *orphan = db_find_orphan_data(db);
        if (orphan) {
            rc = err_set(err, LSM_CORRUPT,
                         "%s/CURRENT: missing, but the directory holds database files (%s); "
                         "refusing to start an empty database over them", db->dir, orphan);
            free(orphan);
            return rc;
        }
        if (!db->opt.create_if_missing || db->opt.read_only)
            return err_set(err, LSM_INVALID, "%s: no database here (%s)", db->dir,
                           db->opt.read_only ? "opened read-only" : "create_if_missing is off");
        version *v = xcalloc(1, sizeof *v);
        atomic_init(&v->refs, 1);
        v->vs = &db->vs;
        db->vs.current = v;
        db->vs.next_file = 2;
        return LSM_OK;
    }
    if (rc == LSM_OK && db->opt.error_if_exists)
        return err_set(err, LSM_EXISTS, "%s: a database exists here (error_if_exists is set)",
                       db->dir);
    return rc;
}

int db_recover(lsm_db *db, char *err)
{
    int rc = db_recover_manifest(db, err);
    if (rc == LSM_OK)
        rc = db_check_tables(db, err);
    if (rc != LSM_OK)
        return rc;
    version *cur = db->vs.current;
    for (int l = 0; l < LSM_MAX_LEVELS; l++)
        for (int j = 0; j < cur->nfiles[l]; j++)
            blob_set_ref(&db->blobs, cur->files[l][j]->blobs, cur->files[l][j]->nblobs);
    extent_load_garbage(db);        /* for the files just counted live */

    /* The logs become L0 tables, a new log starts, and one edit (after a fresh manifest) names
       both: a crash before it leaves the old logs to replay again. */
    version_edit edit;
    edit_init(&edit);
    rc = db_replay_logs(db, &edit, err);
    if (db->opt.read_only) {
        /* A read-only handle reads the logs into its memtable and stops there: no new log, no
           new manifest, nothing deleted. */
        edit_free(&edit);
        return rc;
    }
    if (rc == LSM_OK && edit.nadded)
        db_log(db, LSM_LOG_INFO, "recovery: wrote %d level-0 table%s from the logs",
               edit.nadded, edit.nadded == 1 ? "" : "s");
    if (rc == LSM_OK) {
        db->wal_number = db->vs.next_file++;
        rc = db_new_wal(db, db->wal_number, &db->wal, err);
    }
    if (rc == LSM_OK)
        rc = vset_write_snapshot(&db->vs, err);
    if (rc == LSM_OK) {
        edit.has_log_number = 1;
        edit.log_number = db->wal_number;
        edit.has_last_seq = 1;
        edit.last_seq = db->last_seq;
        rc = vset_apply(&db->vs, &edit, err);
    }
    edit_free(&edit);
    if (rc == LSM_OK)
        db_remove_obsolete(db);
    return rc;
}
