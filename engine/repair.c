/*
 * repair.c — lsm_repair: rebuilds a usable database from whatever of a damaged one is readable,
 * in the spirit of LevelDB's RepairDB, and says what was lost.
 *
 * The sources are the tables the manifest names and the logs it would replay (every table and log
 * in the directory when the manifest cannot be read). A table that reads cleanly is used as it is;
 * a damaged one gives every data block that verifies (sst_salvage), so a bad block costs only the
 * keys between its neighbours; the logs give every intact record
 * before their first damage. All of it is merged by internal key — sequence numbers, not file
 * numbers, decide which version of a key is newest — into fresh tables of the deepest level (one
 * sorted run), keeping every version, tombstones and blob references included. A blob value that
 * cannot be read becomes a tombstone at its own sequence, so that the key is reported lost instead
 * of an older value coming back. A new manifest names the new tables, CURRENT is replaced last,
 * and only then are the old tables, logs and manifests moved into the subdirectory lost/ (never
 * deleted: they are the evidence). Until CURRENT is replaced the old database is untouched, so a
 * repair that fails or crashes changes nothing a reopen would see.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "db_impl.h"
#include "sst.h"

typedef struct repair_state {
    lsm_env *env;
    const char *dir;
    lsm_options opt;
    lsm_check_fn report;
    void *arg;
    char err[LSM_ERRLEN];
    blob_set blobs;
    uint64_t next_file;         /* the next number for a new file */
    uint64_t max_seq;
    uint64_t *old;              /* numbers of the tables and logs to retire */
    char **oldext;
    int nold;
    sst **open;                 /* clean tables in use as sources */
    int nopen;
    iiter **src;
    int nsrc;
    version_edit edit;          /* the new tables */
    /* the table being written */
    lsm_file *f;
    sst_builder *b;
    uint64_t number;
    buf lo, hi, last;
    uint64_t *tblobs;
    int ntblobs;
} repair_state;

static const slice no_key = { NULL, 0 };

static void repair_report(repair_state *rs, const char *file, const char *what, slice lo, slice hi)
{
    if (rs->report)
        rs->report(rs->arg, file, what, lo.p, lo.n, hi.p, hi.n);
}

static void repair_retire(repair_state *rs, uint64_t number, const char *ext)
{
    rs->old = xrealloc(rs->old, (size_t)(rs->nold + 1) * sizeof *rs->old);
    rs->oldext = xrealloc(rs->oldext, (size_t)(rs->nold + 1) * sizeof *rs->oldext);
    rs->old[rs->nold] = number;
    rs->oldext[rs->nold++] = (char *)ext;
}

static void repair_add_source(repair_state *rs, iiter *it)
{
    rs->src = xrealloc(rs->src, (size_t)(rs->nsrc + 1) * sizeof *rs->src);
    rs->src[rs->nsrc++] = it;
}

/* A damaged table read block by block (sst_salvage): the entries go to m; the report of a bad
   block waits for the next good key, which bounds the keys it lost. */
struct salvage {
    repair_state *rs;
    memtable *m;
    const char *path;
    buf prev;                   /* the last good user key (or the table's smallest) */
    char pending[LSM_ERRLEN];   /* a bad block not yet reported, or "" */
    int nbad;
};

static void salvage_flush(struct salvage *sv, slice next)
{
    if (!sv->pending[0])
        return;
    char what[LSM_ERRLEN + 96];
    snprintf(what, sizeof what, "%s; %d damaged block%s, the keys between lost", sv->pending,
             sv->nbad, sv->nbad == 1 ? "" : "s");
    repair_report(sv->rs, sv->path, what, (slice){ sv->prev.p, sv->prev.len }, next);
    sv->pending[0] = 0;
    sv->nbad = 0;
}

static void salvage_entry(void *arg, slice k, slice v)
{
    struct salvage *sv = arg;
    slice u = ikey_user(k);
    salvage_flush(sv, u);
    memtable_add(sv->m, ikey_seq(k), ikey_type(k), u.p, u.n, v.p, v.n);
    uint64_t seq = ikey_seq(k);
    if (seq > sv->rs->max_seq)
        sv->rs->max_seq = seq;
    sv->prev.len = 0;
    buf_append(&sv->prev, u.p, u.n);
}

static void salvage_bad(void *arg, const char *why)
{
    struct salvage *sv = arg;
    if (!sv->pending[0])
        snprintf(sv->pending, sizeof sv->pending, "%s", why);
    sv->nbad++;
}

/* Adds table number as a source: as it is when it reads cleanly, else what precedes the damage. */
static void repair_table(repair_state *rs, uint64_t number, const file_meta *meta)
{
    char path[4096], err[LSM_ERRLEN] = "";
    file_path(rs->dir, number, ".sst", path, sizeof path);
    slice mlo = meta ? file_meta_lo(meta) : no_key, mhi = meta ? file_meta_hi(meta) : no_key;
    repair_retire(rs, number, ".sst");
    uint64_t size = 0;
    int e = env_file_size(rs->env, path, &size);
    if (e < 0) {
        err_errno(err, e, "opening", path);
        repair_report(rs, path, err, mlo, mhi);
        return;
    }
    sst *t = NULL;
    int rc = sst_open(rs->env, path, size, NULL, &t, err);
    if (rc != LSM_OK) {
        repair_report(rs, path, err, mlo, mhi);
        return;
    }
    iiter *it = sst_iter_new(t);
    for (iiter_seek_first(it); iiter_valid(it); iiter_next(it)) {
        uint64_t seq = ikey_seq(iiter_key(it));
        if (seq > rs->max_seq)
            rs->max_seq = seq;
    }
    rc = iiter_status(it, err);
    iiter_free(it);
    if (rc == LSM_OK) {
        rs->open = xrealloc(rs->open, (size_t)(rs->nopen + 1) * sizeof *rs->open);
        rs->open[rs->nopen++] = t;
        repair_add_source(rs, sst_iter_new(t));
        return;
    }
    /* Salvage every block that verifies into a memtable; each bad block is a loss of the keys
       between its neighbours. */
    struct salvage sv = { .rs = rs, .m = memtable_new(), .path = path };
    buf_append(&sv.prev, mlo.p, mlo.n);
    int nbad = sst_salvage(t, salvage_entry, salvage_bad, &sv);
    salvage_flush(&sv, mhi);
    sst_close(t);
    if (nbad == 0) {
        /* the iterator failed where every block verifies: an entry it could not parse */
        char what[LSM_ERRLEN + 64];
        snprintf(what, sizeof what, "%s; the entries that parse were kept", err);
        repair_report(rs, path, what, mlo, mhi);
    }
    buf_free(&sv.prev);
    memtable *m = sv.m;
    repair_add_source(rs, memtable_iter_new(m));
    memtable_unref(m);
}

struct repair_log {
    repair_state *rs;
    memtable *m;
};

static int repair_log_record(void *arg, const uint8_t *p, size_t n, uint64_t off)
{
    struct repair_log *rl = arg;
    uint64_t last;
    if (db_batch_apply(NULL, rl->m, p, n, &last) != LSM_OK)
        return err_set(rl->rs->err, LSM_CORRUPT, "offset %" PRIu64 ": malformed batch record",
                       off);
    if (n >= BATCH_HEADER && dec_fixed32(p + 8) > 0 && last > rl->rs->max_seq)
        rl->rs->max_seq = last;
    return LSM_OK;
}

/* Finishes the table being written and adds it to the edit. */
static int repair_finish_table(repair_state *rs)
{
    if (!rs->b)
        return LSM_OK;
    char path[4096];
    file_path(rs->dir, rs->number, ".sst", path, sizeof path);
    uint64_t size = 0;
    int rc = sst_builder_finish(rs->b, &size, rs->err);
    sst_builder_free(rs->b);
    rs->b = NULL;
    if (rc == LSM_OK) {
        int e = rs->env->sync(rs->env, rs->f);
        if (e < 0)
            rc = err_errno(rs->err, e, "syncing", path);
    }
    rs->env->close(rs->env, rs->f);
    rs->f = NULL;
    if (rc == LSM_OK) {
        file_meta *f = file_meta_new(rs->number, size, (slice){ rs->lo.p, rs->lo.len },
                                     (slice){ rs->hi.p, rs->hi.len });
        file_meta_set_blobs(f, rs->tblobs, rs->ntblobs);
        edit_add(&rs->edit, LSM_MAX_LEVELS - 1, f);
        file_meta_unref(f);
    }
    rs->ntblobs = 0;
    return rc;
}

static void repair_note_blob(repair_state *rs, uint64_t number)
{
    for (int i = 0; i < rs->ntblobs; i++)
        if (rs->tblobs[i] == number)
            return;
    rs->tblobs = xrealloc(rs->tblobs, (size_t)(rs->ntblobs + 1) * sizeof *rs->tblobs);
    int i = rs->ntblobs++;
    while (i > 0 && rs->tblobs[i - 1] > number) {
        rs->tblobs[i] = rs->tblobs[i - 1];
        i--;
    }
    rs->tblobs[i] = number;
}

/* Whether every chunk of blob file data the value of ukey uses reads back (inline values: yes);
   reports the key lost if not, and notes the files it names for the table being written if so. */
static int repair_value_ok(repair_state *rs, slice ukey, int type, slice v)
{
    char err[LSM_ERRLEN] = "";
    uint64_t bad = 0;
    if (value_verify(&rs->blobs, type, v, &bad, err) != LSM_OK) {
        char path[4096], what[LSM_ERRLEN + 64];
        if (bad)
            file_path(rs->dir, bad, ".blob", path, sizeof path);
        else
            snprintf(path, sizeof path, "%s", rs->dir);
        snprintf(what, sizeof what, "%s; the value of this key is lost", err);
        repair_report(rs, path, what, ukey, ukey);
        return 0;
    }
    uint64_t *nums;
    int n = value_files(&rs->blobs, type, v, &nums);
    for (int i = 0; i < n; i++)
        repair_note_blob(rs, nums[i]);
    free(nums);
    return 1;
}

/* Writes the merged sources into new tables of the deepest level. */
static int repair_write(repair_state *rs)
{
    iiter *in = merge_iter_new(rs->src, rs->nsrc);
    free(rs->src);              /* the merge owns the children, not the array */
    rs->src = NULL;
    rs->nsrc = 0;
    int rc = LSM_OK;
    buf key = { 0 };
    for (iiter_seek_first(in); iiter_valid(in) && rc == LSM_OK; iiter_next(in)) {
        slice k = iiter_key(in), v = iiter_value(in), u = ikey_user(k);
        int new_ukey = !rs->last.len ||
                       ukey_cmp(rs->last.p, rs->last.len - LSM_TRAILER, u.p, u.n) != 0;
        /* The same write from a log and from a table (where a flush may have moved its value to
           a blob file, so that only the type differs): keep the first. */
        if (!new_ukey && ikey_seq((slice){ rs->last.p, rs->last.len }) == ikey_seq(k))
            continue;
        rs->last.len = 0;
        buf_append(&rs->last, k.p, k.n);
        /* A table ends only between user keys, so the run stays disjoint. */
        if (rs->b && new_ukey && sst_builder_file_size(rs->b) >= rs->opt.table_bytes)
            rc = repair_finish_table(rs);
        if (rc == LSM_OK && !rs->b) {
            char path[4096];
            rs->number = rs->next_file++;
            file_path(rs->dir, rs->number, ".sst", path, sizeof path);
            int e = rs->env->open(rs->env, path, LSM_O_CREATE, &rs->f);
            if (e < 0) {
                rc = err_errno(rs->err, e, "creating", path);
                break;
            }
            sst_options so = {
                .block_bytes = rs->opt.block_bytes,
                .restart_interval = 16,
                .bloom_bits_per_key = rs->opt.bloom_bits_per_key,
                .compression = rs->opt.compression,
                .compression_level = rs->opt.compression_level,
            };
            rs->b = sst_builder_new(rs->env, rs->f, path, &so);
            rs->lo.len = 0;
        }
        /* after the cut: the files a value names belong to the table it goes into */
        if (rc == LSM_OK && (ikey_type(k) == LSM_TYPE_BLOB || ikey_type(k) == LSM_TYPE_EXTENTS) &&
            !repair_value_ok(rs, u, ikey_type(k), v)) {
            key.len = 0;
            ikey_build(&key, u.p, u.n, ikey_seq(k), LSM_TYPE_DELETE);
            k = (slice){ key.p, key.len };
            v = (slice){ NULL, 0 };
        }
        if (rc == LSM_OK && !rs->lo.len)
            buf_append(&rs->lo, k.p, k.n);
        if (rc == LSM_OK)
            rc = sst_builder_add(rs->b, k, v, rs->err);
        rs->hi.len = 0;
        buf_append(&rs->hi, k.p, k.n);
    }
    if (rc == LSM_OK)
        rc = iiter_status(in, rs->err);
    iiter_free(in);
    buf_free(&key);
    if (rc == LSM_OK)
        rc = repair_finish_table(rs);
    if (rs->b) {
        sst_builder_free(rs->b);
        rs->env->close(rs->env, rs->f);
        rs->b = NULL;
    }
    return rc;
}

/* Writes the new manifest and points CURRENT at it. */
static int repair_commit(repair_state *rs)
{
    uint64_t mnum = rs->next_file++;
    rs->edit.has_log_number = rs->edit.has_next_file = rs->edit.has_last_seq = 1;
    rs->edit.log_number = rs->next_file;    /* the old logs are in the tables now */
    rs->edit.next_file = rs->next_file;
    rs->edit.last_seq = rs->max_seq;
    char path[4096];
    snprintf(path, sizeof path, "%s/MANIFEST-%06" PRIu64, rs->dir, mnum);
    logw *w = NULL;
    buf rec = { 0 };
    edit_encode(&rs->edit, &rec);
    int rc = logw_create(rs->env, path, MANIFEST_MAGIC, &w, rs->err);
    if (rc == LSM_OK)
        rc = logw_append(w, rec.p, rec.len, rs->err);
    if (rc == LSM_OK)
        rc = logw_sync(w, rs->err);
    logw_close(w, NULL);
    buf_free(&rec);
    if (rc == LSM_OK) {
        int e = rs->env->sync_dir(rs->env, rs->dir);
        if (e < 0)
            rc = err_errno(rs->err, e, "syncing directory", rs->dir);
    }
    if (rc == LSM_OK) {
        char text[64];
        int n = snprintf(text, sizeof text, "MANIFEST-%06" PRIu64 "\n", mnum);
        int e = env_write_file_atomic(rs->env, rs->dir, "CURRENT", text, (size_t)n);
        if (e < 0)
            rc = err_errno(rs->err, e, "writing CURRENT in", rs->dir);
    }
    return rc;
}

/* Moves the retired tables and logs, and every other manifest, into dir/lost. */
static void repair_move_old(repair_state *rs, uint64_t keep_manifest)
{
    char lost[4096], from[4096 + 256], to[4096 + 256];
    snprintf(lost, sizeof lost, "%s/lost", rs->dir);
    int e = rs->env->mkdir(rs->env, lost);
    if (e < 0 && e != -EEXIST)
        return;
    for (int i = 0; i < rs->nold; i++) {
        char name[64];
        snprintf(name, sizeof name, "%06" PRIu64 "%s", rs->old[i], rs->oldext[i]);
        snprintf(from, sizeof from, "%s/%s", rs->dir, name);
        snprintf(to, sizeof to, "%s/%s", lost, name);
        rs->env->rename(rs->env, from, to);
    }
    char **names = NULL;
    int n = 0;
    if (rs->env->list(rs->env, rs->dir, &names, &n) == 0) {
        for (int i = 0; i < n; i++)
            if (strncmp(names[i], "MANIFEST-", 9) == 0 &&
                strtoull(names[i] + 9, NULL, 10) != keep_manifest) {
                snprintf(from, sizeof from, "%s/%s", rs->dir, names[i]);
                snprintf(to, sizeof to, "%s/%s", lost, names[i]);
                rs->env->rename(rs->env, from, to);
            }
        env_free_list(names, n);
    }
    rs->env->sync_dir(rs->env, lost);
    rs->env->sync_dir(rs->env, rs->dir);
}

static int repair_run(repair_state *rs)
{
    /* What the manifest names, when it can be read. */
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    vset vs;
    memset(&vs, 0, sizeof vs);
    vs.env = rs->env;
    vs.dir = rs->dir;
    vs.db_mu = &mu;
    char err[LSM_ERRLEN] = "";
    int mrc = vset_recover(&vs, err);
    if (mrc != LSM_OK) {
        char path[4096], what[LSM_ERRLEN + 96];
        snprintf(path, sizeof path, "%s/CURRENT", rs->dir);
        snprintf(what, sizeof what, "%s; using every table and log in the directory",
                 mrc == LSM_NOTFOUND ? "CURRENT is missing" : err);
        repair_report(rs, path, what, no_key, no_key);
    } else {
        rs->max_seq = vs.last_seq;
        rs->next_file = vs.next_file;
    }
    char **names = NULL;
    int n = 0;
    int e = rs->env->list(rs->env, rs->dir, &names, &n);
    if (e < 0) {
        vset_close(&vs);
        return err_errno(rs->err, e, "listing", rs->dir);
    }
    uint64_t *logs = xmalloc((size_t)(n + 1) * sizeof *logs), *tables = NULL;
    int nlogs = 0, ntables = 0;
    if (mrc != LSM_OK)
        tables = xmalloc((size_t)(n + 1) * sizeof *tables);
    for (int i = 0; i < n; i++) {
        uint64_t num;
        if (file_parse_name(names[i], ".log", &num)) {
            if (mrc != LSM_OK || num >= vs.log_number)
                logs[nlogs++] = num;
        } else if (file_parse_name(names[i], ".sst", &num)) {
            if (mrc != LSM_OK)
                tables[ntables++] = num;
        } else if (!file_parse_name(names[i], ".blob", &num) &&
                   strncmp(names[i], "MANIFEST-", 9) == 0) {
            num = strtoull(names[i] + 9, NULL, 10);
        } else if (!file_parse_name(names[i], ".blob", &num)) {
            continue;
        }
        if (num >= rs->next_file)
            rs->next_file = num + 1;
    }
    env_free_list(names, n);
    qsort(logs, (size_t)nlogs, sizeof *logs, u64_cmp);

    if (mrc == LSM_OK) {
        version *v = vs.current;
        for (int l = 0; l < LSM_MAX_LEVELS; l++)
            for (int i = 0; i < v->nfiles[l]; i++)
                repair_table(rs, v->files[l][i]->number, v->files[l][i]);
    } else {
        qsort(tables, (size_t)ntables, sizeof *tables, u64_cmp);
        for (int i = 0; i < ntables; i++)
            repair_table(rs, tables[i], NULL);
    }
    free(tables);
    vset_close(&vs);
    pthread_mutex_destroy(&mu);

    struct repair_log rl = { .rs = rs, .m = memtable_new() };
    for (int i = 0; i < nlogs; i++) {
        char path[4096];
        uint64_t dropped = 0;
        file_path(rs->dir, logs[i], ".log", path, sizeof path);
        repair_retire(rs, logs[i], ".log");
        rs->err[0] = 0;
        int rc = log_replay(rs->env, path, WAL_MAGIC, repair_log_record, &rl, &dropped, err);
        if (rc != LSM_OK) {
            char what[2 * LSM_ERRLEN + 64];
            snprintf(what, sizeof what, "%s%s%s; the records after the damage are lost", err,
                     rs->err[0] ? ": " : "", rs->err);
            repair_report(rs, path, what, no_key, no_key);
        }
    }
    free(logs);
    repair_add_source(rs, memtable_iter_new(rl.m));
    memtable_unref(rl.m);

    rs->err[0] = 0;
    int rc = repair_write(rs);
    uint64_t mnum = rs->next_file;
    if (rc == LSM_OK)
        rc = repair_commit(rs);
    for (int i = 0; i < rs->nopen; i++)
        sst_close(rs->open[i]);
    if (rc == LSM_OK)
        repair_move_old(rs, mnum);
    return rc;
}

int lsm_repair(const char *dir, const lsm_options *opt, lsm_check_fn report, void *arg)
{
    if (!dir || !*dir)
        return LSM_INVALID;
    repair_state rs;
    memset(&rs, 0, sizeof rs);
    char *err = rs.err;
    if (opt)
        rs.opt = *opt;
    else
        options_defaults(&rs.opt);
    if (options_sanitize(&rs.opt, err) != LSM_OK)
        return db_open_fail(LSM_INVALID, err);
    rs.env = rs.opt.env ? rs.opt.env : env_posix();
    rs.dir = dir;
    rs.report = report;
    rs.arg = arg;
    rs.next_file = 2;
    if (rs.env->file_exists(rs.env, dir) <= 0)
        return db_open_fail(err_set(err, LSM_INVALID, "%s: no such directory", dir), err);
    char path[4096];
    snprintf(path, sizeof path, "%s/LOCK", dir);
    lsm_file *lock = NULL;
    long holder = 0;
    int e = rs.env->lock(rs.env, path, &lock, &holder);
    if (e == -EWOULDBLOCK || e == -EAGAIN) {
        if (holder > 0)
            err_set(err, LSM_BUSY, "%s: held by another handle or process (pid %ld)", path, holder);
        else
            err_set(err, LSM_BUSY, "%s: held by %s", path,
                    holder < 0 ? "read-only handles" : "another handle or process");
        return db_open_fail(LSM_BUSY, err);
    }
    if (e < 0)
        return db_open_fail(err_errno(err, e, "locking", path), err);
    blob_set_init(&rs.blobs, rs.env, dir, 64);
    edit_init(&rs.edit);
    int rc = repair_run(&rs);
    for (int i = 0; i < rs.nsrc; i++)
        iiter_free(rs.src[i]);
    free(rs.src);
    free(rs.open);
    free(rs.old);
    free(rs.oldext);
    free(rs.tblobs);
    buf_free(&rs.lo);
    buf_free(&rs.hi);
    buf_free(&rs.last);
    edit_free(&rs.edit);
    blob_set_destroy(&rs.blobs);
    rs.env->unlock(rs.env, lock);
    return db_open_fail(rc, err);
}
