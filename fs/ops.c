/*
 * ops.c — the FUSE low-level callbacks of lsmfs: one function per request, all named lsmfs_*.
 *
 * What: every operation of a local filesystem on top of the key layout of meta.c. Reads go to
 * the engine (lsm_get_range: a read never copies the whole value) unless the file is being written,
 * in which case its whole content sits in the inode's buffer and is written back as one batch on
 * flush, fsync, last close, or when the buffer budget is exceeded. Namespace changes (create,
 * unlink, rename, mkdir, rmdir, symlink) are each one batch, done under fs.ns held for writing.
 *
 * Why so: the kernel caches entries and attributes for fs.timeout seconds and pages across opens
 * (keep_cache); that is safe because this daemon is the only writer of the database while mounted
 * and every change goes through the kernel. Listing is a merge of two streams (data keys and
 * directory records) in key order, restarted per request by a seek to the cursor the directory
 * handle keeps, so a listing never holds a directory in memory and never rescans it.
 *
 * Never: reply twice or not at all to a request (each callback ends in exactly one fuse_reply_*);
 * hold an inode mutex while taking fs.ns; let a request on an unlinked file write its old key.
 */
#include "lsmfs.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <syslog.h>
#include <unistd.h>
#include <xxhash.h>

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

static fuse_ino_t ino_id(const struct lsmfs_inode *ino)
{
    return ino == fs.root ? FUSE_ROOT_ID : (fuse_ino_t)(uintptr_t)ino;
}

static void fill_entry(struct lsmfs_inode *ino, struct fuse_entry_param *e)
{
    memset(e, 0, sizeof *e);
    e->ino = ino_id(ino);
    e->generation = 1;
    e->attr_timeout = fs.timeout;
    e->entry_timeout = fs.timeout;
    pthread_mutex_lock(&ino->mu);
    lsmfs_meta_to_stat(ino, &e->attr);
    pthread_mutex_unlock(&ino->mu);
}

/* What is at path right now: the live inode's attributes when there is one, else the engine's.
   *inop is the live inode (NULL if none). fs.ns held for writing. */
static int resolve(const char *path, size_t plen, struct lsmfs_meta *m, struct lsmfs_inode **inop)
{
    struct lsmfs_inode *ino = lsmfs_table_find(path, plen);
    if (inop)
        *inop = ino;
    if (ino) {
        pthread_mutex_lock(&ino->mu);
        *m = ino->m;
        pthread_mutex_unlock(&ino->mu);
        return 0;
    }
    return lsmfs_stat_path(path, plen, m);
}

/* Looks up name in parent; on success *out holds one more lookup reference. fs.ns held. */
static int do_lookup(struct lsmfs_inode *parent, const char *name, struct lsmfs_inode **out)
{
    struct lsmfs_meta m;
    size_t plen;
    int err = lsmfs_name_check(name);
    if (err)
        return err == EINVAL ? ENOENT : err;
    if (parent->m.type != LSMFS_DIR)
        return ENOTDIR;
    char *path = lsmfs_child_path(parent, name, &plen);
    if (!path)
        return errno;
    pthread_mutex_lock(&fs.tmu);
    struct lsmfs_inode *ino = NULL;
    for (struct lsmfs_inode *e = fs.tab[XXH3_64bits(path, plen) & (fs.tabsize - 1)]; e;
         e = e->hnext) {
        if (e->plen == plen && memcmp(e->path, path, plen) == 0) {
            ino = e;
            ino->nlookup++;
            break;
        }
    }
    pthread_mutex_unlock(&fs.tmu);
    if (ino) {
        free(path);
        *out = ino;
        return 0;
    }
    int rc = lsmfs_stat_path(path, plen, &m);
    if (rc < 0 || m.type == LSMFS_NONE) {
        free(path);
        return rc < 0 ? -rc : ENOENT;
    }
    if (!(*out = lsmfs_table_get(path, plen, &m)))
        return ENOMEM;
    return 0;
}

/* Adds the record of a directory that is only implicit (e.g. its last child is going away) to b, so
   that it stays, as an emptied directory does on a local filesystem. fs.ns held for writing. */
static void keep_parent(lsm_batch *b, struct lsmfs_inode *p)
{
    pthread_mutex_lock(&p->mu);
    if (p->m.type == LSMFS_DIR && !p->m.explicit_dir && p->plen > 0)
        lsmfs_add_record(b, p);
    pthread_mutex_unlock(&p->mu);
}

static void set_times_now(struct lsmfs_meta *m)
{
    m->mtime_ns = m->ctime_ns = lsmfs_now();
}

/* ---- session ---- */

static void lsmfs_init(void *userdata, struct fuse_conn_info *conn)
{
    if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
        conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
    if (fs.writeback && (conn->capable & FUSE_CAP_WRITEBACK_CACHE))
        conn->want |= FUSE_CAP_WRITEBACK_CACHE;
    if (conn->capable & FUSE_CAP_READDIRPLUS)
        conn->want |= FUSE_CAP_READDIRPLUS;
    if (conn->capable & FUSE_CAP_READDIRPLUS_AUTO)
        conn->want |= FUSE_CAP_READDIRPLUS_AUTO;   /* plain READDIR when attributes are cached */
    if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
        conn->want |= FUSE_CAP_PARALLEL_DIROPS;
    if (conn->capable & FUSE_CAP_CACHE_SYMLINKS)
        conn->want |= FUSE_CAP_CACHE_SYMLINKS;
    conn->max_write = 1u << 20;
    conn->time_gran = 1;
}

static void lsmfs_destroy(void *userdata)
{
    pthread_rwlock_wrlock(&fs.ns);
    lsmfs_table_flush_all();
    pthread_rwlock_unlock(&fs.ns);
}

/* ---- lookup and attributes ---- */

static void lsmfs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct fuse_entry_param e;
    struct lsmfs_inode *ino;
    pthread_rwlock_rdlock(&fs.ns);
    int err = do_lookup(lsmfs_ino(parent), name, &ino);
    if (!err)
        fill_entry(ino, &e);
    pthread_rwlock_unlock(&fs.ns);
    if (err == ENOENT) {
        memset(&e, 0, sizeof e);   /* a negative entry, cached like a positive one */
        e.entry_timeout = fs.timeout;
        fuse_reply_entry(req, &e);
    } else if (err) {
        fuse_reply_err(req, err);
    } else {
        fuse_reply_entry(req, &e);
    }
}

static void lsmfs_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
    lsmfs_table_forget(lsmfs_ino(ino), nlookup);
    fuse_reply_none(req);
}

static void lsmfs_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
    for (size_t i = 0; i < count; i++)
        lsmfs_table_forget(lsmfs_ino(forgets[i].ino), forgets[i].nlookup);
    fuse_reply_none(req);
}

static void lsmfs_getattr(fuse_req_t req, fuse_ino_t n, struct fuse_file_info *fi)
{
    struct lsmfs_inode *ino = lsmfs_ino(n);
    struct stat st;
    pthread_mutex_lock(&ino->mu);
    lsmfs_meta_to_stat(ino, &st);
    pthread_mutex_unlock(&ino->mu);
    fuse_reply_attr(req, &st, fs.timeout);
}

static int64_t ts_ns(const struct timespec *ts)
{
    return (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
}

/* Sets the size of a file's content (buffer loaded and grown/shrunk). ino->mu held. */
static int resize_locked(struct lsmfs_inode *ino, uint64_t size)
{
    int rc;
    if (size > fs.max_file_size)
        return -EFBIG;
    if (size == 0) {
        if (!ino->data && ino->m.size >= LSMFS_RECLAIM_MIN)
            ino->replaces_big = 1;          /* superseded without being read */
        if ((rc = lsmfs_buf_reserve(ino, 1)) < 0)
            return rc;
    } else {
        if ((rc = lsmfs_buf_load(ino)) < 0 || (rc = lsmfs_buf_reserve(ino, size)) < 0)
            return rc;
        if (size > ino->m.size)
            memset(ino->data + ino->m.size, 0, size - ino->m.size);
    }
    ino->m.size = size;
    return 0;
}

static void lsmfs_setattr(fuse_req_t req, fuse_ino_t n, struct stat *attr, int to_set,
                          struct fuse_file_info *fi)
{
    struct lsmfs_inode *ino = lsmfs_ino(n);
    struct stat st;
    int rc = 0;
    int64_t now = lsmfs_now();

    pthread_rwlock_rdlock(&fs.ns);
    pthread_mutex_lock(&ino->mu);
    if (to_set & FUSE_SET_ATTR_SIZE) {
        if (ino->m.type == LSMFS_DIR)
            rc = -EISDIR;
        else if (ino->m.type != LSMFS_REG)
            rc = -EINVAL;
        else if ((rc = resize_locked(ino, (uint64_t)attr->st_size)) == 0)
            ino->m.mtime_ns = now;
    }
    if (rc == 0) {
        if (to_set & FUSE_SET_ATTR_MODE)
            ino->m.mode = (ino->m.mode & S_IFMT) | (attr->st_mode & 07777);
        if (to_set & FUSE_SET_ATTR_UID)
            ino->m.uid = attr->st_uid;
        if (to_set & FUSE_SET_ATTR_GID)
            ino->m.gid = attr->st_gid;
        if (to_set & FUSE_SET_ATTR_MTIME_NOW)
            ino->m.mtime_ns = now;
        else if (to_set & FUSE_SET_ATTR_MTIME)
            ino->m.mtime_ns = ts_ns(&attr->st_mtim);
        ino->m.ctime_ns = (to_set & FUSE_SET_ATTR_CTIME) ? ts_ns(&attr->st_ctim) : now;
        ino->dirty = 1;
        rc = lsmfs_flush_locked(ino, 0);
        pthread_mutex_lock(&fs.tmu);
        int unopened = ino->nopen == 0;
        pthread_mutex_unlock(&fs.tmu);
        if (rc == 0 && unopened)
            lsmfs_buf_drop(ino);
    }
    lsmfs_meta_to_stat(ino, &st);
    pthread_mutex_unlock(&ino->mu);
    pthread_rwlock_unlock(&fs.ns);
    if (rc < 0)
        fuse_reply_err(req, -rc);
    else
        fuse_reply_attr(req, &st, fs.timeout);
}

static void lsmfs_access(fuse_req_t req, fuse_ino_t n, int mask)
{
    struct lsmfs_inode *ino = lsmfs_ino(n);
    const struct fuse_ctx *ctx = fuse_req_ctx(req);
    pthread_mutex_lock(&ino->mu);
    uint32_t mode = ino->m.mode, uid = ino->m.uid, gid = ino->m.gid;
    pthread_mutex_unlock(&ino->mu);
    int err = 0;
    if (mask == F_OK) {
        err = 0;
    } else if (ctx->uid == 0) {
        if ((mask & X_OK) && !S_ISDIR(mode) && !(mode & 0111))
            err = EACCES;
    } else {
        unsigned bits = mode & 07;
        if (ctx->uid == uid) {
            bits = (mode >> 6) & 07;
        } else {
            gid_t groups[64];
            int ng = fuse_req_getgroups(req, 64, groups);
            int in = ctx->gid == gid;
            for (int i = 0; !in && i < ng && i < 64; i++)
                in = groups[i] == gid;
            if (in)
                bits = (mode >> 3) & 07;
        }
        if ((mask & R_OK && !(bits & 4)) || (mask & W_OK && !(bits & 2)) ||
            (mask & X_OK && !(bits & 1)))
            err = EACCES;
    }
    fuse_reply_err(req, err);
}

/* ---- making and removing names ---- */

/* Creates a regular file, directory or symlink at parent/name as one batch. On success *out holds
   one lookup reference (and one open reference if opening). fs.ns held for writing. */
static int make_node(fuse_req_t req, struct lsmfs_inode *parent, const char *name, int type,
                     mode_t mode, const char *target, int opening, struct lsmfs_inode **out)
{
    struct lsmfs_meta m;
    size_t plen, kl;
    int rc, err = lsmfs_name_check(name);
    if (err)
        return err == EINVAL ? EEXIST : err;
    if (parent->m.type != LSMFS_DIR)
        return ENOTDIR;
    char *path = lsmfs_child_path(parent, name, &plen);
    if (!path)
        return errno;
    if ((rc = resolve(path, plen, &m, NULL)) < 0 || m.type != LSMFS_NONE) {
        free(path);
        return rc < 0 ? -rc : EEXIST;
    }
    const struct fuse_ctx *ctx = fuse_req_ctx(req);
    lsmfs_meta_default(&m, type);
    m.mode = (m.mode & S_IFMT) | (type == LSMFS_LNK ? 0777 : (mode & 07777));
    m.uid = ctx->uid;
    m.gid = ctx->gid;
    set_times_now(&m);

    lsm_batch *b = lsm_batch_new();
    if (type == LSMFS_DIR) {
        m.explicit_dir = 1;
    } else {
        m.size = target ? strlen(target) : 0;
        lsm_batch_put(b, path, plen, target ? target : "", m.size);
    }
    unsigned char rec[64];
    size_t rl = lsmfs_meta_encode(&m, rec);
    char *k = lsmfs_key(type == LSMFS_DIR ? 'd' : 'a', path, plen, type == LSMFS_DIR, &kl);
    if (!k) {
        lsm_batch_free(b);
        free(path);
        return ENOMEM;
    }
    lsm_batch_put(b, k, kl, rec, rl);
    free(k);
    rc = lsmfs_write_batch(b, 0);
    lsm_batch_free(b);
    if (rc < 0) {
        free(path);
        return -rc;
    }
    struct lsmfs_inode *ino = lsmfs_table_get(path, plen, &m);
    if (!ino)
        return ENOMEM;
    if (opening)
        lsmfs_table_open(ino);
    *out = ino;
    return 0;
}

static void reply_made(fuse_req_t req, int err, struct lsmfs_inode *ino)
{
    struct fuse_entry_param e;
    if (err) {
        fuse_reply_err(req, err);
        return;
    }
    fill_entry(ino, &e);
    if (fuse_reply_entry(req, &e) != 0)
        lsmfs_table_forget(ino, 1);
}

static void lsmfs_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                        dev_t rdev)
{
    struct lsmfs_inode *ino = NULL;
    int err = EPERM;   /* device nodes, fifos and sockets are not kept */
    if (S_ISREG(mode)) {
        pthread_rwlock_wrlock(&fs.ns);
        err = make_node(req, lsmfs_ino(parent), name, LSMFS_REG, mode, NULL, 0, &ino);
        pthread_rwlock_unlock(&fs.ns);
    }
    reply_made(req, err, ino);
}

static void lsmfs_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
    struct lsmfs_inode *ino = NULL;
    pthread_rwlock_wrlock(&fs.ns);
    int err = make_node(req, lsmfs_ino(parent), name, LSMFS_DIR, mode, NULL, 0, &ino);
    pthread_rwlock_unlock(&fs.ns);
    reply_made(req, err, ino);
}

static void lsmfs_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
    struct lsmfs_inode *ino = NULL;
    int err = strlen(link) > PATH_MAX ? ENAMETOOLONG : 0;
    pthread_rwlock_wrlock(&fs.ns);
    if (!err)
        err = make_node(req, lsmfs_ino(parent), name, LSMFS_LNK, 0777, link, 0, &ino);
    pthread_rwlock_unlock(&fs.ns);
    reply_made(req, err, ino);
}

static void lsmfs_readlink(fuse_req_t req, fuse_ino_t n)
{
    struct lsmfs_inode *ino = lsmfs_ino(n);
    void *v = NULL;
    size_t vl = 0;
    int err = 0;
    pthread_rwlock_rdlock(&fs.ns);
    if (ino->m.type != LSMFS_LNK) {
        err = EINVAL;
    } else {
        int rc = lsm_get(fs.db, ino->path, ino->plen, &v, &vl);
        if (rc != LSM_OK)
            err = lsmfs_errno(rc, "readlink", ino->path);
    }
    pthread_rwlock_unlock(&fs.ns);
    if (err) {
        fuse_reply_err(req, err);
        return;
    }
    char *s = malloc(vl + 1);
    if (!s) {
        free(v);
        fuse_reply_err(req, ENOMEM);
        return;
    }
    memcpy(s, v, vl);
    s[vl] = '\0';
    free(v);
    fuse_reply_readlink(req, s);
    free(s);
}

static void lsmfs_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
    fuse_reply_err(req, EPERM);   /* hard links are not supported */
}

/* Before a live inode's key goes away: if it is open, load its content so that its handles keep
   reading it, as on a local filesystem. fs.ns held for writing. */
static void preserve(struct lsmfs_inode *ino)
{
    if (!ino)
        return;
    pthread_mutex_lock(&fs.tmu);
    int open = ino->nopen > 0;
    pthread_mutex_unlock(&fs.tmu);
    pthread_mutex_lock(&ino->mu);
    if (ino->m.type != LSMFS_DIR)
        lsmfs_snap_readers(ino);
    if (open && ino->m.type != LSMFS_DIR && lsmfs_buf_load(ino) < 0)
        lsmfs_log(LOG_WARNING, "%s: removed while open; its content could not be kept", ino->path);
    pthread_mutex_unlock(&ino->mu);
}

/* After its key went away: the inode serves its open handles from its buffer, is never written
   back, and is no longer found by path. fs.ns held for writing. */
static void bury(struct lsmfs_inode *ino)
{
    if (!ino)
        return;
    pthread_mutex_lock(&ino->mu);
    ino->deleted = 1;
    ino->dirty = 0;
    pthread_mutex_unlock(&ino->mu);
    lsmfs_table_unhash(ino);
}

/* The batch that deletes what is at path (file, symlink or explicit directory record). */
static void add_delete(lsm_batch *b, const char *path, size_t plen, int type)
{
    size_t kl;
    char *k;
    if (type == LSMFS_DIR) {
        if ((k = lsmfs_key('d', path, plen, 1, &kl)))
            lsm_batch_delete(b, k, kl);
    } else {
        lsm_batch_delete(b, path, plen);
        if ((k = lsmfs_key('a', path, plen, 0, &kl)))
            lsm_batch_delete(b, k, kl);
    }
    free(k);
}

static int do_remove(struct lsmfs_inode *parent, const char *name, int dir)
{
    struct lsmfs_meta m;
    struct lsmfs_inode *ino;
    size_t plen;
    int rc, err = lsmfs_name_check(name);
    if (err)
        return err == EINVAL ? (dir ? EINVAL : EISDIR) : err;
    char *path = lsmfs_child_path(parent, name, &plen);
    if (!path)
        return errno;
    if ((rc = resolve(path, plen, &m, &ino)) < 0 || m.type == LSMFS_NONE) {
        free(path);
        return rc < 0 ? -rc : ENOENT;
    }
    if (dir && m.type != LSMFS_DIR)
        err = ENOTDIR;
    else if (!dir && m.type == LSMFS_DIR)
        err = EISDIR;
    if (!err && dir) {
        int has;
        if ((rc = lsmfs_dir_has_children(path, plen, &has)) < 0)
            err = -rc;
        else if (has)
            err = ENOTEMPTY;
    }
    if (err) {
        free(path);
        return err;
    }
    preserve(ino);
    lsm_batch *b = lsm_batch_new();
    add_delete(b, path, plen, m.type);
    keep_parent(b, parent);
    rc = lsmfs_write_batch(b, 0);
    lsm_batch_free(b);
    if (rc == 0 && m.type == LSMFS_DIR)
        lsmfs_reclaim_note_dir(path, plen);
    else if (rc == 0 && m.size >= LSMFS_RECLAIM_MIN)
        lsmfs_reclaim_note(path, plen);
    else if (rc == 0)
        lsmfs_reclaim_removed(m.size + plen);
    free(path);
    if (rc < 0)
        return -rc;
    bury(ino);
    return 0;
}

static void lsmfs_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    pthread_rwlock_wrlock(&fs.ns);
    int err = do_remove(lsmfs_ino(parent), name, 0);
    pthread_rwlock_unlock(&fs.ns);
    fuse_reply_err(req, err);
}

static void lsmfs_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    pthread_rwlock_wrlock(&fs.ns);
    int err = do_remove(lsmfs_ino(parent), name, 1);
    pthread_rwlock_unlock(&fs.ns);
    fuse_reply_err(req, err);
}

/* ---- rename ---- */

/* Adds to b what moves the object at from (described by m, live inode ino) to to: in phase 0 the
   deletes of its old keys, in phase 1 the puts of its new ones. A batch is applied in order, so
   all deletes go first and an exchange's puts win. *bytes counts what phase 1 copies. */
static int add_move(lsm_batch *b, int phase, const char *from, size_t flen, const char *to,
                    size_t tlen, struct lsmfs_meta *m, struct lsmfs_inode *ino, size_t *bytes)
{
    size_t kl;
    int rc;
    if (m->type != LSMFS_DIR) {
        if (phase == 0) {
            add_delete(b, from, flen, m->type);
            return 0;
        }
        void *v = NULL;
        size_t vl = 0;
        int own = 0;
        if (ino) {
            pthread_mutex_lock(&ino->mu);
            if (ino->data) {
                v = ino->data;
                vl = ino->m.size;
            }
        }
        if (!v) {
            rc = lsm_get(fs.db, from, flen, &v, &vl);
            if (rc != LSM_OK) {
                if (ino)
                    pthread_mutex_unlock(&ino->mu);
                return -lsmfs_errno(rc, "rename", from);
            }
            own = 1;
        }
        lsm_batch_put(b, to, tlen, v, vl);
        if (own)
            free(v);
        if (ino)
            pthread_mutex_unlock(&ino->mu);
        *bytes += vl;
        unsigned char rec[64];
        m->ctime_ns = lsmfs_now();
        size_t rl = lsmfs_meta_encode(m, rec);
        char *k = lsmfs_key('a', to, tlen, 0, &kl);
        if (!k)
            return -ENOMEM;
        lsm_batch_put(b, k, kl, rec, rl);
        free(k);
        return 0;
    }

    /* A directory: every data key, attribute record and directory record at or below it. */
    static const char tags[3] = { 0, 'a', 'd' };
    lsm_iter *it;
    if ((rc = lsm_iter_new(fs.db, &it)) != LSM_OK)
        return -lsmfs_errno(rc, "rename", from);
    rc = 0;
    for (int t = 0; t < 3 && rc == 0; t++) {
        size_t pl, pre = tags[t] ? 2 : 0;
        char *p = lsmfs_key(tags[t], from, flen, 1, &pl);
        if (!p) {
            rc = -ENOMEM;
            break;
        }
        for (lsm_iter_seek(it, p, pl); lsm_iter_valid(it); lsm_iter_next(it)) {
            size_t n, vl;
            const char *k = lsm_iter_key(it, &n);
            if (n < pl || memcmp(k, p, pl) != 0)
                break;
            if (phase == 0) {
                lsm_batch_delete(b, k, n);
                continue;
            }
            const void *v = lsm_iter_value(it, &vl);
            if (!v) {
                rc = -lsmfs_errno(lsm_iter_status(it), "rename", from);
                break;
            }
            *bytes += n + vl;
            if (*bytes > fs.dirty_limit) {
                rc = -EXDEV;   /* too big for one batch: mv(1) falls back to copy and remove */
                break;
            }
            size_t nl = n - flen + tlen;
            char *nk = malloc(nl);
            if (!nk) {
                rc = -ENOMEM;
                break;
            }
            memcpy(nk, k, pre);
            memcpy(nk + pre, to, tlen);
            memcpy(nk + pre + tlen, k + pre + flen, n - pre - flen);
            lsm_batch_put(b, nk, nl, v, vl);
            free(nk);
        }
        free(p);
        if (rc == 0 && (rc = lsm_iter_status(it)) != LSM_OK)
            rc = -lsmfs_errno(rc, "rename", from);
    }
    lsm_iter_free(it);
    if (rc == 0 && phase == 1 && !m->explicit_dir) {
        /* the directory was only implicit: keep it as a directory at its new place */
        unsigned char rec[64];
        size_t rl = lsmfs_meta_encode(m, rec);
        char *k = lsmfs_key('d', to, tlen, 1, &kl);
        if (!k)
            return -ENOMEM;
        lsm_batch_put(b, k, kl, rec, rl);
        free(k);
    }
    return rc;
}

/* Moves the live inode of a file (or every live inode at or below a directory) to its new path. */
static void move_inodes(const char *from, size_t flen, const char *to, size_t tlen, int type,
                        struct lsmfs_inode *ino)
{
    if (type == LSMFS_DIR) {
        lsmfs_table_move_prefix(from, flen, to, tlen);
    } else if (ino) {
        char *p = malloc(tlen + 1);
        if (p) {
            memcpy(p, to, tlen);
            p[tlen] = '\0';
            lsmfs_table_rename(ino, p, tlen);
        } else {
            lsmfs_table_unhash(ino);
        }
    }
}

/* A moved file's buffer is now in the engine at its new key. */
static void moved_clean(struct lsmfs_inode *ino, const struct lsmfs_meta *m)
{
    if (!ino || m->type == LSMFS_DIR)
        return;
    pthread_mutex_lock(&ino->mu);
    ino->dirty = 0;
    ino->m.ctime_ns = m->ctime_ns;
    pthread_mutex_unlock(&ino->mu);
}

static int do_rename(struct lsmfs_inode *sp, const char *sname, struct lsmfs_inode *tp,
                     const char *tname, unsigned flags)
{
    struct lsmfs_meta sm, tm;
    struct lsmfs_inode *sino, *tino;
    size_t slen, tlen, bytes = 0;
    char *spath = NULL, *tpath = NULL;
    int rc, err;
    int exchange = (flags & RENAME_EXCHANGE) != 0;

    if ((err = lsmfs_name_check(sname)) || (err = lsmfs_name_check(tname)))
        return err;
    if (sp->m.type != LSMFS_DIR || tp->m.type != LSMFS_DIR)
        return ENOTDIR;
    if (!(spath = lsmfs_child_path(sp, sname, &slen)) ||
        !(tpath = lsmfs_child_path(tp, tname, &tlen))) {
        err = errno;
        goto out;
    }
    if ((rc = resolve(spath, slen, &sm, &sino)) < 0 || (sm.type == LSMFS_NONE && (rc = -ENOENT)) ||
        (rc = resolve(tpath, tlen, &tm, &tino)) < 0) {
        err = -rc;
        goto out;
    }
    int texists = tm.type != LSMFS_NONE;
    if ((flags & RENAME_NOREPLACE) && texists) {
        err = EEXIST;
        goto out;
    }
    if (exchange && !texists) {
        err = ENOENT;
        goto out;
    }
    if (slen == tlen && memcmp(spath, tpath, slen) == 0)
        goto out;
    if ((sm.type == LSMFS_DIR && tlen > slen && tpath[slen] == '/' && !memcmp(tpath, spath, slen)) ||
        (exchange && tm.type == LSMFS_DIR && slen > tlen && spath[tlen] == '/' &&
         !memcmp(spath, tpath, tlen))) {
        err = EINVAL;
        goto out;
    }
    if (texists && !exchange) {
        if (sm.type == LSMFS_DIR && tm.type != LSMFS_DIR) {
            err = ENOTDIR;
            goto out;
        }
        if (sm.type != LSMFS_DIR && tm.type == LSMFS_DIR) {
            err = EISDIR;
            goto out;
        }
        if (tm.type == LSMFS_DIR) {
            int has;
            if ((rc = lsmfs_dir_has_children(tpath, tlen, &has)) < 0) {
                err = -rc;
                goto out;
            }
            if (has) {
                err = ENOTEMPTY;
                goto out;
            }
        }
    }
    if (sm.type == LSMFS_DIR)
        lsmfs_table_flush_prefix(spath, slen);
    if (exchange && tm.type == LSMFS_DIR)
        lsmfs_table_flush_prefix(tpath, tlen);
    if (texists && !exchange)
        preserve(tino);

    lsm_batch *b = lsm_batch_new();
    rc = 0;
    for (int phase = 0; phase < 2 && rc == 0; phase++) {
        rc = add_move(b, phase, spath, slen, tpath, tlen, &sm, sino, &bytes);
        if (rc == 0 && exchange)
            rc = add_move(b, phase, tpath, tlen, spath, slen, &tm, tino, &bytes);
        else if (rc == 0 && texists && phase == 0)
            add_delete(b, tpath, tlen, tm.type);
    }
    if (rc == 0) {
        keep_parent(b, sp);
        rc = lsmfs_write_batch(b, 0);
    }
    lsm_batch_free(b);
    if (rc < 0) {
        err = -rc;
        goto out;
    }
    /* The values moved were copied to their new keys: the old copies, and a file replaced, are
       garbage. */
    if (sm.type == LSMFS_DIR)
        lsmfs_reclaim_note_tree(spath, slen);
    else if (sm.size >= LSMFS_RECLAIM_MIN)
        lsmfs_reclaim_note(spath, slen);
    if (texists && tm.type == LSMFS_DIR && exchange)
        lsmfs_reclaim_note_tree(tpath, tlen);
    else if (texists && tm.type != LSMFS_DIR && tm.size >= LSMFS_RECLAIM_MIN)
        lsmfs_reclaim_note(tpath, tlen);

    if (exchange) {
        static const char tmp[2] = { '\0', 'x' };   /* can never be a path */
        move_inodes(spath, slen, tmp, 2, sm.type, sino);
        move_inodes(tpath, tlen, spath, slen, tm.type, tino);
        move_inodes(tmp, 2, tpath, tlen, sm.type, sino);
        moved_clean(tino, &tm);
    } else {
        if (texists)
            bury(tino);
        move_inodes(spath, slen, tpath, tlen, sm.type, sino);
    }
    moved_clean(sino, &sm);
    err = 0;
out:
    free(spath);
    free(tpath);
    return err;
}

static void lsmfs_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                         const char *newname, unsigned int flags)
{
    int err;
    if (flags & ~(unsigned)(RENAME_NOREPLACE | RENAME_EXCHANGE) ||
        ((flags & RENAME_NOREPLACE) && (flags & RENAME_EXCHANGE))) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    pthread_rwlock_wrlock(&fs.ns);
    err = do_rename(lsmfs_ino(parent), name, lsmfs_ino(newparent), newname, flags);
    pthread_rwlock_unlock(&fs.ns);
    fuse_reply_err(req, err);
}

/* ---- files ---- */

static int is_writable(int flags)
{
    return (flags & O_ACCMODE) != O_RDONLY;
}

/* Every open handle, so those the kernel never released can be freed at unmount. */
static pthread_mutex_t handles_mu = PTHREAD_MUTEX_INITIALIZER;
static struct lsmfs_handle *handles;        /* guarded by handles_mu */

static void handle_link(struct lsmfs_handle *h)
{
    pthread_mutex_lock(&handles_mu);
    h->aprev = NULL;
    h->anext = handles;
    if (handles)
        handles->aprev = h;
    handles = h;
    pthread_mutex_unlock(&handles_mu);
}

static void handle_unlink(struct lsmfs_handle *h)
{
    pthread_mutex_lock(&handles_mu);
    if (h->aprev)
        h->aprev->anext = h->anext;
    else
        handles = h->anext;
    if (h->anext)
        h->anext->aprev = h->aprev;
    pthread_mutex_unlock(&handles_mu);
}

/* Makes a handle for ino (which holds an open reference) and applies O_TRUNC. */
static int open_handle(struct lsmfs_inode *ino, struct fuse_file_info *fi)
{
    struct lsmfs_handle *h = calloc(1, sizeof *h);
    if (!h)
        return ENOMEM;
    h->ino = ino;
    h->flags = fi->flags;
    if ((fi->flags & O_TRUNC) && is_writable(fi->flags)) {
        pthread_mutex_lock(&ino->mu);
        int rc = 0;
        if (ino->m.size != 0 || !ino->data) {
            rc = resize_locked(ino, 0);
            if (rc == 0) {
                set_times_now(&ino->m);
                ino->dirty = 1;
            }
        }
        pthread_mutex_unlock(&ino->mu);
        if (rc < 0) {
            free(h);
            return -rc;
        }
        h->wrote = 1;
    }
    if (!is_writable(fi->flags) && !fs.kernel_cache) {
        pthread_mutex_lock(&ino->mu);
        h->rnext = ino->readers;
        if (ino->readers)
            ino->readers->rprev = h;
        ino->readers = h;
        pthread_mutex_unlock(&ino->mu);
    }
    fi->fh = (uint64_t)(uintptr_t)h;
    handle_link(h);
    if (fs.kernel_cache) {
        fi->keep_cache = 1;   /* this daemon is the only writer: pages stay valid across opens */
    } else {
        /* The kernel keeps one size and one page cache per inode, so it cannot show a writer its
           pending bytes and a reader the last flushed value: every read comes here instead. */
        fi->direct_io = 1;
        if (!is_writable(fi->flags))
            fi->noflush = 1;   /* nothing to write back: spare the FLUSH request */
    }
    return 0;
}

static void close_handle(struct lsmfs_handle *h)
{
    struct lsmfs_inode *ino = h->ino;
    pthread_mutex_lock(&ino->mu);
    if (h->rprev)
        h->rprev->rnext = h->rnext;
    else if (ino->readers == h)
        ino->readers = h->rnext;
    if (h->rnext)
        h->rnext->rprev = h->rprev;
    if (h->snap && --h->snap->refs == 0)
        free(h->snap);
    pthread_mutex_unlock(&ino->mu);
    lsmfs_table_close(ino);
    handle_unlink(h);
    free(h);
}

void lsmfs_handles_free(void)
{
    while (handles)
        close_handle(handles);
}

static void lsmfs_open(fuse_req_t req, fuse_ino_t n, struct fuse_file_info *fi)
{
    struct lsmfs_inode *ino = lsmfs_ino(n);
    int err = 0;
    pthread_rwlock_rdlock(&fs.ns);
    if (ino->m.type == LSMFS_DIR) {
        err = EISDIR;
    } else if (ino->m.type == LSMFS_LNK) {
        err = ELOOP;
    } else {
        lsmfs_table_open(ino);
        if ((err = open_handle(ino, fi)) != 0)
            lsmfs_table_close(ino);
    }
    pthread_rwlock_unlock(&fs.ns);
    if (err) {
        fuse_reply_err(req, err);
    } else if (fuse_reply_open(req, fi) != 0) {
        pthread_rwlock_rdlock(&fs.ns);
        close_handle((struct lsmfs_handle *)(uintptr_t)fi->fh);
        pthread_rwlock_unlock(&fs.ns);
    }
}

static void lsmfs_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                         struct fuse_file_info *fi)
{
    struct lsmfs_inode *ino = NULL, *p = lsmfs_ino(parent);
    struct fuse_entry_param e;
    int err;
    pthread_rwlock_wrlock(&fs.ns);
    err = make_node(req, p, name, LSMFS_REG, mode, NULL, 1, &ino);
    if (err == EEXIST && !(fi->flags & O_EXCL) && lsmfs_name_check(name) == 0) {
        /* lost a race with another creator: open what is there */
        if ((err = do_lookup(p, name, &ino)) == 0) {
            if (ino->m.type == LSMFS_DIR)
                err = EISDIR;
            else
                lsmfs_table_open(ino);
            if (err) {
                pthread_rwlock_unlock(&fs.ns);
                lsmfs_table_forget(ino, 1);
                fuse_reply_err(req, err);
                return;
            }
        }
    }
    if (!err && (err = open_handle(ino, fi)) != 0) {
        lsmfs_table_close(ino);
        pthread_rwlock_unlock(&fs.ns);
        lsmfs_table_forget(ino, 1);
        fuse_reply_err(req, err);
        return;
    }
    pthread_rwlock_unlock(&fs.ns);
    if (err) {
        fuse_reply_err(req, err);
        return;
    }
    fill_entry(ino, &e);
    if (fuse_reply_create(req, &e, fi) != 0) {
        pthread_rwlock_rdlock(&fs.ns);
        close_handle((struct lsmfs_handle *)(uintptr_t)fi->fh);
        pthread_rwlock_unlock(&fs.ns);
        lsmfs_table_forget(ino, 1);
    }
}

static void lsmfs_read(fuse_req_t req, fuse_ino_t n, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    struct lsmfs_inode *ino = lsmfs_ino(n);
    pthread_rwlock_rdlock(&fs.ns);
    struct lsmfs_handle *h = (struct lsmfs_handle *)(uintptr_t)fi->fh;
    pthread_mutex_lock(&ino->mu);
    /* close-to-open: a read-only descriptor sees the last flushed value (or, once the file is
       unlinked, what it held then); a descriptor open for writing sees the pending bytes */
    const char *src = NULL;
    size_t srclen = 0;
    if (h->snap) {
        src = h->snap->data;
        srclen = h->snap->len;
    } else if (ino->data && (is_writable(h->flags) || ino->deleted || fs.kernel_cache)) {
        src = ino->data;
        srclen = ino->m.size;
    }
    if (src) {
        size_t len = (uint64_t)off >= srclen ? 0 : srclen - (uint64_t)off;
        if (len > size)
            len = size;
        fuse_reply_buf(req, src + (len ? off : 0), len);
        pthread_mutex_unlock(&ino->mu);
        pthread_rwlock_unlock(&fs.ns);
        return;
    }
    /* from the engine, with ino->mu held so that no write-back lands in the middle of it */
    char *buf = malloc(size ? size : 1);
    size_t got = 0;
    int rc = buf ? lsm_get_range(fs.db, ino->path, ino->plen, (uint64_t)off, buf, size, &got, NULL)
                 : LSM_NOMEM;
    pthread_mutex_unlock(&ino->mu);
    int err = rc == LSM_OK || rc == LSM_NOTFOUND ? 0 : lsmfs_errno(rc, "read", ino->path);
    pthread_rwlock_unlock(&fs.ns);
    if (err)
        fuse_reply_err(req, err);
    else
        fuse_reply_buf(req, buf, rc == LSM_OK ? got : 0);
    free(buf);
}

static void lsmfs_write(fuse_req_t req, fuse_ino_t n, const char *buf, size_t size, off_t off,
                        struct fuse_file_info *fi)
{
    struct lsmfs_handle *h = (struct lsmfs_handle *)(uintptr_t)fi->fh;
    struct lsmfs_inode *ino = lsmfs_ino(n);
    int rc = 0;
    pthread_rwlock_rdlock(&fs.ns);
    pthread_mutex_lock(&ino->mu);
    if ((h->flags & O_APPEND) && !fs.writeback)
        off = (off_t)ino->m.size;   /* our size is the truth, not the kernel's cached one */
    if (off < 0 || (uint64_t)off >= fs.max_file_size) {
        rc = size ? -EFBIG : 0;
        size = 0;
    } else if ((uint64_t)off + size > fs.max_file_size) {
        size = fs.max_file_size - (uint64_t)off;   /* a short write, then EFBIG */
    }
    if (size > 0) {
        uint64_t end = (uint64_t)off + size;
        if ((rc = lsmfs_buf_load(ino)) == 0 && (rc = lsmfs_buf_reserve(ino, end)) == 0) {
            if ((uint64_t)off > ino->m.size)
                memset(ino->data + ino->m.size, 0, (uint64_t)off - ino->m.size);
            memcpy(ino->data + off, buf, size);
            if (end > ino->m.size)
                ino->m.size = end;
            set_times_now(&ino->m);
            ino->dirty = 1;
            h->wrote = 1;
        }
    }
    pthread_mutex_unlock(&ino->mu);
    if (rc < 0)
        fuse_reply_err(req, -rc);
    else
        fuse_reply_write(req, size);
    lsmfs_budget_enforce();
    pthread_rwlock_unlock(&fs.ns);
}

static void lsmfs_flush(fuse_req_t req, fuse_ino_t n, struct fuse_file_info *fi)
{
    struct lsmfs_handle *h = (struct lsmfs_handle *)(uintptr_t)fi->fh;
    struct lsmfs_inode *ino = lsmfs_ino(n);
    pthread_rwlock_rdlock(&fs.ns);
    pthread_mutex_lock(&ino->mu);
    int rc = lsmfs_flush_locked(ino, fs.sync_mode != LSMFS_SYNC_FSYNC && h->wrote);
    if (rc == 0)
        h->wrote = 0;
    pthread_mutex_unlock(&ino->mu);
    pthread_rwlock_unlock(&fs.ns);
    fuse_reply_err(req, -rc);
}

static void lsmfs_release(fuse_req_t req, fuse_ino_t n, struct fuse_file_info *fi)
{
    pthread_rwlock_rdlock(&fs.ns);
    close_handle((struct lsmfs_handle *)(uintptr_t)fi->fh);
    pthread_rwlock_unlock(&fs.ns);
    fuse_reply_err(req, 0);
}

static void lsmfs_fsync(fuse_req_t req, fuse_ino_t n, int datasync, struct fuse_file_info *fi)
{
    struct lsmfs_inode *ino = lsmfs_ino(n);
    pthread_rwlock_rdlock(&fs.ns);
    pthread_mutex_lock(&ino->mu);
    int rc = lsmfs_flush_locked(ino, 1);
    pthread_mutex_unlock(&ino->mu);
    pthread_rwlock_unlock(&fs.ns);
    fuse_reply_err(req, -rc);
}

/* ---- directories ---- */

/* One listing pass over directory dir: two iterators, data keys below dir and directory records
   below dir, merged in key order. A child's position is its name for a file and its name plus '/'
   for a directory, so the order is the key order of both streams. */
struct lister {
    lsm_iter *di, *ri;
    const char *dpath;           /* the directory's path */
    size_t dplen;
    char *dpre, *rpre;           /* dpath "/" (or "" for the root), "\0d" dpath "/" (or "\0d") */
    size_t dprelen, rprelen;
    char *kbuf;                  /* scratch for building keys */
    size_t kcap;
};

static char *kbuild(struct lister *l, const char *pre, size_t prelen, const char *s, size_t sl,
                    size_t *kl)
{
    if (prelen + sl + 1 > l->kcap) {
        size_t ncap = (prelen + sl + 1) * 2;
        char *nb = realloc(l->kbuf, ncap);
        if (!nb)
            return NULL;
        l->kbuf = nb;
        l->kcap = ncap;
    }
    memcpy(l->kbuf, pre, prelen);
    memcpy(l->kbuf + prelen, s, sl);
    *kl = prelen + sl;
    return l->kbuf;
}

/* Positions both streams at the first child at or after position s. */
static void lister_seek(struct lister *l, const char *s, size_t sl, int which)
{
    size_t kl;
    char *k;
    if (which & 1) {
        if (l->dplen == 0 && sl == 0)
            lsm_iter_seek(l->di, "\x01", 1);   /* keys starting with NUL are reserved */
        else if ((k = kbuild(l, l->dpre, l->dprelen, s, sl, &kl)))
            lsm_iter_seek(l->di, k, kl);
    }
    if ((which & 2) && (k = kbuild(l, l->rpre, l->rprelen, s, sl, &kl)))
        lsm_iter_seek(l->ri, k, kl);
}

static const char *suffix(lsm_iter *it, const char *pre, size_t prelen, size_t *sl)
{
    if (!lsm_iter_valid(it))
        return NULL;
    size_t n;
    const char *k = lsm_iter_key(it, &n);
    if (n < prelen || memcmp(k, pre, prelen) != 0)
        return NULL;
    *sl = n - prelen;
    return k + prelen;
}

static int poscmp(const char *a, size_t al, const char *b, size_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);
    return c ? c : (al > bl) - (al < bl);
}

/* Next child: its name (copied to name, NUL-terminated) and whether it is a directory. Fills
   next/nextlen with the position after it (the cursor). Returns 1, 0 at the end, or -errno. */
static int lister_next(struct lister *l, char *name, int *isdir, char *next, size_t *nextlen)
{
    for (;;) {
        size_t dsl = 0, rsl = 0;
        const char *ds = suffix(l->di, l->dpre, l->dprelen, &dsl);
        const char *rs = suffix(l->ri, l->rpre, l->rprelen, &rsl);
        if (l->dplen == 0 && ds && dsl > 0 && ds[0] == '\0')
            ds = NULL;   /* root listing reached the reserved namespace (cannot happen) */
        if (!ds && !rs) {
            int rc = lsm_iter_status(l->di);
            if (rc == LSM_OK)
                rc = lsm_iter_status(l->ri);
            return rc == LSM_OK ? 0 : -lsmfs_errno(rc, "list", l->dpath);
        }
        const char *s = ds;
        size_t sl = dsl;
        if (!ds || (rs && poscmp(rs, rsl, ds, dsl) < 0)) {
            s = rs;
            sl = rsl;
        }
        const char *slash = memchr(s, '/', sl);
        size_t nl = slash ? (size_t)(slash - s) : sl;
        int ok = nl > 0 && nl <= LSMFS_NAME_MAX && !memchr(s, '\0', nl) &&
                 !(s[0] == '.' && (nl == 1 || (nl == 2 && s[1] == '.')));
        if (ok) {
            memcpy(name, s, nl);
            name[nl] = '\0';
        }
        if (slash) {
            /* a directory: skip everything below it in both streams */
            memcpy(next, s, nl);
            next[nl] = '0';   /* '/' + 1 */
            *nextlen = nl + 1;
            lister_seek(l, next, *nextlen, (ds ? 1 : 0) | (rs ? 2 : 0));
            *isdir = 1;
        } else {
            memcpy(next, s, nl);
            next[nl] = '\0';   /* the key right after this one */
            *nextlen = nl + 1;
            if (s == ds)
                lsm_iter_next(l->di);
            else
                lsm_iter_next(l->ri);
            *isdir = 0;
            if (s == rs)
                ok = 0;   /* a directory record without '/': not ours */
        }
        if (!ok)
            continue;
        if (*isdir && l->dplen + 1 + nl <= LSMFS_PATH_MAX) {
            /* a file of the same name hides this directory (and was listed already) */
            uint64_t sz;
            size_t kl;
            char *k = kbuild(l, l->dpre, l->dprelen, name, nl, &kl);
            if (k && lsm_get_size(fs.db, k, kl, &sz) == LSM_OK)
                continue;
        }
        return 1;
    }
}

static int lister_open(struct lister *l, struct lsmfs_inode *dir)
{
    size_t kl;
    memset(l, 0, sizeof *l);
    l->dpath = dir->path;
    l->dplen = dir->plen;
    if (dir->plen) {
        l->dpre = lsmfs_key(0, dir->path, dir->plen, 1, &l->dprelen);
        l->rpre = lsmfs_key('d', dir->path, dir->plen, 1, &l->rprelen);
    } else {
        l->dpre = strdup("");
        l->rpre = lsmfs_key('d', "", 0, 0, &l->rprelen);
    }
    if (!l->dpre || !l->rpre)
        return -ENOMEM;
    int rc = lsm_iter_new(fs.db, &l->di);
    if (rc == LSM_OK)
        rc = lsm_iter_new(fs.db, &l->ri);
    (void)kl;
    return rc == LSM_OK ? 0 : -lsmfs_errno(rc, "list", dir->path);
}

static void lister_close(struct lister *l)
{
    lsm_iter_free(l->di);
    lsm_iter_free(l->ri);
    free(l->dpre);
    free(l->rpre);
    free(l->kbuf);
}

static void lsmfs_opendir(fuse_req_t req, fuse_ino_t n, struct fuse_file_info *fi)
{
    struct lsmfs_dirh *d = calloc(1, sizeof *d);
    if (!d) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    pthread_mutex_init(&d->mu, NULL);
    fi->fh = (uint64_t)(uintptr_t)d;
    /* Every change to a directory comes through this mount, and the kernel drops its cached
       listing of a directory whenever it creates, removes or renames an entry in it: so the kernel
       may keep listings and answer repeated readdirs without asking us. */
    fi->cache_readdir = 1;
    fi->keep_cache = 1;
    if (fuse_reply_open(req, fi) != 0) {
        pthread_mutex_destroy(&d->mu);
        free(d);
    }
}

static void lsmfs_releasedir(fuse_req_t req, fuse_ino_t n, struct fuse_file_info *fi)
{
    struct lsmfs_dirh *d = (struct lsmfs_dirh *)(uintptr_t)fi->fh;
    pthread_mutex_destroy(&d->mu);
    free(d->cursor);
    free(d);
    fuse_reply_err(req, 0);
}

/* Whether the file name in dir is a symlink (for d_type): reads its attribute record. */
static int is_symlink(struct lsmfs_inode *dir, const char *name)
{
    struct lsmfs_meta m;
    size_t plen, kl;
    void *v;
    size_t vl;
    int lnk = 0;
    char *path = lsmfs_child_path(dir, name, &plen);
    char *k = path ? lsmfs_key('a', path, plen, 0, &kl) : NULL;
    if (k && lsm_get(fs.db, k, kl, &v, &vl) == LSM_OK) {
        lnk = lsmfs_meta_decode(v, vl, &m) == 0 && m.type == LSMFS_LNK;
        free(v);
    }
    free(k);
    free(path);
    return lnk;
}

static void do_readdir(fuse_req_t req, fuse_ino_t n, size_t size, off_t off,
                       struct fuse_file_info *fi, int plus)
{
    struct lsmfs_inode *dir = lsmfs_ino(n);
    struct lsmfs_dirh *d = (struct lsmfs_dirh *)(uintptr_t)fi->fh;
    struct lister l;
    char name[LSMFS_NAME_MAX + 1], next[LSMFS_NAME_MAX + 2];
    size_t nextlen = 0, pos = 0;
    int rc = 0, isdir = 0;
    char *buf = malloc(size);
    if (!buf) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    pthread_rwlock_rdlock(&fs.ns);
    pthread_mutex_lock(&d->mu);
    if (off == 0 || off != d->next_off) {
        /* a fresh listing, or a seekdir elsewhere: start over (and skip to off) */
        free(d->cursor);
        d->cursor = NULL;
        d->clen = 0;
        d->next_off = 0;
        d->eof = 0;
    }
    off_t skip = off - d->next_off;
    if (d->eof)
        goto done;
    if ((rc = lister_open(&l, dir)) < 0) {
        lister_close(&l);
        goto done;
    }
    lister_seek(&l, d->cursor ? d->cursor : "", d->clen, 3);
    for (;;) {
        struct fuse_entry_param e;
        struct stat st;
        const char *nm;
        int is_dot = d->next_off < 2;
        if (is_dot) {
            nm = d->next_off == 0 ? "." : "..";
            isdir = 1;
        } else {
            rc = lister_next(&l, name, &isdir, next, &nextlen);
            if (rc <= 0) {
                if (rc == 0)
                    d->eof = 1;
                break;
            }
            nm = name;
        }
        if (skip > 0) {
            skip--;
        } else {
            size_t need = plus ? fuse_add_direntry_plus(req, NULL, 0, nm, NULL, 0)
                               : fuse_add_direntry(req, NULL, 0, nm, NULL, 0);
            if (pos + need > size) {
                rc = 1;   /* full: this entry comes first next time */
                break;
            }
            memset(&st, 0, sizeof st);
            if (plus && !is_dot) {
                struct lsmfs_inode *ino;
                int err = do_lookup(dir, nm, &ino);
                if (err == ENOENT)
                    goto advance;   /* hidden or gone: leave it out */
                if (err) {
                    rc = -err;
                    break;
                }
                fill_entry(ino, &e);
            } else {
                memset(&e, 0, sizeof e);
                st.st_mode = isdir ? S_IFDIR : S_IFREG;
                if (is_dot) {
                    pthread_mutex_lock(&dir->mu);
                    lsmfs_meta_to_stat(dir, &st);
                    pthread_mutex_unlock(&dir->mu);
                } else {
                    st.st_ino = (XXH3_64bits(name, strlen(name)) ^ dir->stino) | (1ull << 63);
                    if (!isdir && is_symlink(dir, name))
                        st.st_mode = S_IFLNK;
                }
                e.attr = st;
            }
            if (plus)
                pos += fuse_add_direntry_plus(req, buf + pos, size - pos, nm, &e, d->next_off + 1);
            else
                pos += fuse_add_direntry(req, buf + pos, size - pos, nm, &e.attr, d->next_off + 1);
        }
    advance:
        d->next_off++;
        if (!is_dot) {
            char *c = realloc(d->cursor, nextlen);
            if (!c) {
                rc = -ENOMEM;
                break;
            }
            memcpy(c, next, nextlen);
            d->cursor = c;
            d->clen = nextlen;
        }
    }
    lister_close(&l);
done:
    pthread_mutex_unlock(&d->mu);
    pthread_rwlock_unlock(&fs.ns);
    if (rc < 0 && pos == 0)
        fuse_reply_err(req, -rc);
    else
        fuse_reply_buf(req, buf, pos);
    free(buf);
}

static void lsmfs_readdir(fuse_req_t req, fuse_ino_t n, size_t size, off_t off,
                          struct fuse_file_info *fi)
{
    do_readdir(req, n, size, off, fi, 0);
}

static void lsmfs_readdirplus(fuse_req_t req, fuse_ino_t n, size_t size, off_t off,
                              struct fuse_file_info *fi)
{
    do_readdir(req, n, size, off, fi, 1);
}

static void lsmfs_fsyncdir(fuse_req_t req, fuse_ino_t n, int datasync, struct fuse_file_info *fi)
{
    int rc = lsm_sync(fs.db);
    fuse_reply_err(req, rc == LSM_OK ? 0 : lsmfs_errno(rc, "sync", "directory"));
}

static void lsmfs_statfs(fuse_req_t req, fuse_ino_t n)
{
    struct statvfs sv;
    if (statvfs(fs.datadir, &sv) != 0) {
        fuse_reply_err(req, errno);
        return;
    }
    sv.f_namemax = LSMFS_NAME_MAX;
    sv.f_flag = 0;
    sv.f_fsid = 0;
    fuse_reply_statfs(req, &sv);
}

const struct fuse_lowlevel_ops lsmfs_ops = {
    .init = lsmfs_init,
    .destroy = lsmfs_destroy,
    .lookup = lsmfs_lookup,
    .forget = lsmfs_forget,
    .forget_multi = lsmfs_forget_multi,
    .getattr = lsmfs_getattr,
    .setattr = lsmfs_setattr,
    .access = lsmfs_access,
    .readlink = lsmfs_readlink,
    .mknod = lsmfs_mknod,
    .mkdir = lsmfs_mkdir,
    .symlink = lsmfs_symlink,
    .link = lsmfs_link,
    .unlink = lsmfs_unlink,
    .rmdir = lsmfs_rmdir,
    .rename = lsmfs_rename,
    .open = lsmfs_open,
    .create = lsmfs_create,
    .read = lsmfs_read,
    .write = lsmfs_write,
    .flush = lsmfs_flush,
    .release = lsmfs_release,
    .fsync = lsmfs_fsync,
    .opendir = lsmfs_opendir,
    .readdir = lsmfs_readdir,
    .readdirplus = lsmfs_readdirplus,
    .releasedir = lsmfs_releasedir,
    .fsyncdir = lsmfs_fsyncdir,
    .statfs = lsmfs_statfs,
};
