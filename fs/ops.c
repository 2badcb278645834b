/*
 * ops.c — the FUSE callbacks of lsmfs that act on files: attributes, open, read, write, flush,
 * release, fsync, readlink, statfs, and the table that hands every callback to libfuse.
 *
 * What: reads go to the engine (lsm_get_range: a read never copies the whole value) unless the file
 * is being written, in which case its whole content sits in the inode's buffer (inode.c) and is
 * written back as one batch on flush, fsync, last close, or when the buffer budget is exceeded.
 * Visibility is POSIX: every descriptor reads the buffer while it exists, and the kernel's page
 * cache is one view of the file for all of them, so shared mappings work. The close_to_open mode
 * instead gives read-only descriptors the last flushed version (direct I/O, and a copy kept for
 * open readers when a write-back replaces it).
 *
 * Why so: the kernel caches entries and attributes for fs->timeout seconds, and pages across opens
 * (keep_cache, unless -o nokernel_cache); that is safe because this daemon is the only writer of
 * the database while mounted and every change goes through the kernel, which updates its own
 * caches with each request it makes. The one change the kernel cannot know is a write from its
 * page cache that the daemon refuses: that inode's pages are invalidated (notify.c) and dropped
 * at its next open.
 *
 * Never: reply twice or not at all to a request (each callback ends in exactly one fuse_reply_*);
 * hold an inode mutex while taking fs->ns; let a request on an unlinked file write its old key.
 */
#include "lsmfs.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

/* ---- session ---- */

static void lsmfs_init(void *userdata, struct fuse_conn_info *conn)
{
    struct lsmfs *fs = userdata;
    if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
        conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
    if (fs->writeback && (conn->capable & FUSE_CAP_WRITEBACK_CACHE))
        conn->want |= FUSE_CAP_WRITEBACK_CACHE;
    if (conn->capable & FUSE_CAP_READDIRPLUS)
        conn->want |= FUSE_CAP_READDIRPLUS;
    if (conn->capable & FUSE_CAP_READDIRPLUS_AUTO)
        conn->want |= FUSE_CAP_READDIRPLUS_AUTO;   /* plain READDIR when attributes are cached */
    if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
        conn->want |= FUSE_CAP_PARALLEL_DIROPS;
    if (conn->capable & FUSE_CAP_CACHE_SYMLINKS)
        conn->want |= FUSE_CAP_CACHE_SYMLINKS;
    /* The kernel may open directories without asking (it then caches their listings as
       lsmfs_opendir would ask it to): a listing resumes from its offsets alone, through
       cookie.c's table, so that table must exist. */
    if ((conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT) && fs->cookie_bytes > 0) {
        conn->want |= FUSE_CAP_NO_OPENDIR_SUPPORT;
        fs->no_opendir = 1;
    }
    /* libfuse asks by default that the kernel drop a file's pages whenever a GETATTR shows a
       new mtime, and ask for attributes before every read to find out: right for a filesystem
       that others change, wasted here, where every change comes through the kernel (a write's
       own new mtime would throw away the pages it just wrote). */
    conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
    conn->max_write = 1u << 20;
    conn->time_gran = 1;
}

static void lsmfs_destroy(void *userdata)
{
    struct lsmfs *fs = userdata;
    pthread_rwlock_wrlock(&fs->ns);
    lsmfs_table_flush_all(fs);
    pthread_rwlock_unlock(&fs->ns);
}

static void lsmfs_getattr(fuse_req_t req, fuse_ino_t n, struct fuse_file_info *fi)
{
    struct lsmfs *fs = lsmfs_owner(req, n);
    struct lsmfs_inode *ino = lsmfs_ino(fs, n);
    struct stat st;
    pthread_rwlock_rdlock(&fs->ns);
    lsmfs_dir_count(fs, ino);   /* once per directory inode; a failure leaves st_nlink 1 */
    pthread_mutex_lock(&ino->mu);
    lsmfs_alloc_update(fs, ino);
    lsmfs_meta_to_stat(ino, &st);
    pthread_mutex_unlock(&ino->mu);
    pthread_rwlock_unlock(&fs->ns);
    fuse_reply_attr(req, &st, fs->timeout);
}

static int64_t ops_ts_ns(const struct timespec *ts)
{
    return (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
}

/* The largest size a file may reach: the quota max_file_size if set, else the engine's. */
static uint64_t ops_size_limit(const struct lsmfs *fs)
{
    return fs->max_file_size && fs->max_file_size < LSM_MAX_EXTENT_VALUE ? fs->max_file_size
                                                                         : LSM_MAX_EXTENT_VALUE;
}

/* Whether content of size bytes stays in a buffer: the file has no writer, and both what it holds
   and what it will hold are small. */
static int ops_small(const struct lsmfs_inode *ino, uint64_t size)
{
    return !ino->w && size <= LSMFS_SMALL_MAX &&
           (ino->data || ino->m.size <= LSMFS_SMALL_MAX);
}

/* Sets the size of a file's content: in the buffer of a small file, else through the writer (a
   hole when it grows). ino->mu held. */
static int ops_resize_locked(struct lsmfs *fs, struct lsmfs_inode *ino, uint64_t size)
{
    int rc;
    if (size > ops_size_limit(fs))
        return EFBIG;
    if (size == 0) {
        /* Empty: whatever was written or stored is superseded without being read (csize stays
           the stored size the writer started from). */
        uint64_t csize = ino->csize;
        int had = ino->w != NULL;
        if (had)
            lsmfs_buf_drop(fs, ino);
        if ((rc = lsmfs_buf_reserve(fs, ino, 1)))
            return rc;
        if (had)
            ino->csize = csize;
    } else if (ops_small(ino, size)) {
        if ((rc = lsmfs_buf_load(fs, ino)) || (rc = lsmfs_buf_reserve(fs, ino, size)))
            return rc;
        if (size > ino->m.size)
            memset(ino->data + ino->m.size, 0, size - ino->m.size);
    } else {
        if ((rc = lsmfs_writer_get(fs, ino)))
            return rc;
        if ((rc = lsm_value_writer_truncate(ino->w, size)) != LSM_OK)
            return lsmfs_writer_fail(fs, ino, rc, "truncate");
    }
    ino->m.size = size;
    return 0;
}

/* Whether the process of req is in group gid (its primary or a supplementary group). */
static int ops_in_group(fuse_req_t req, gid_t gid)
{
    const struct fuse_ctx *ctx = fuse_req_ctx(req);
    gid_t groups[64];
    if (ctx->gid == gid)
        return 1;
    int ng = fuse_req_getgroups(req, 64, groups);
    for (int i = 0; i < ng && i < 64; i++)
        if (groups[i] == gid)
            return 1;
    return 0;
}

/* What a write or truncate by a process without CAP_FSETID (root stands for it) does to a regular
   file (inode(7), "The file mode"): it clears set-user-ID, and set-group-ID when group-execute is
   set or the writer is not in the file's group. The kernel asks for this through SETATTR only when
   group-execute is set (fuse_setattr works it out from the mode alone), so the daemon does it.
   ino->mu held; returns whether the mode changed. */
static int ops_kill_priv_locked(fuse_req_t req, struct lsmfs_inode *ino)
{
    uint32_t mode = ino->m.mode, kill = mode & S_ISUID;
    if (fuse_req_ctx(req)->uid == 0 || ino->m.type != LSMFS_REG || !(mode & (S_ISUID | S_ISGID)))
        return 0;
    if ((mode & S_ISGID) && ((mode & S_IXGRP) || !ops_in_group(req, ino->m.gid)))
        kill |= S_ISGID;
    ino->m.mode &= ~kill;
    return kill != 0;
}

static void lsmfs_setattr(fuse_req_t req, fuse_ino_t n, struct stat *attr, int to_set,
                          struct fuse_file_info *fi)
{
    struct lsmfs *fs = lsmfs_owner(req, n);
    struct lsmfs_inode *ino = lsmfs_ino(fs, n);
    struct stat st;
    int rc = 0;
    int64_t now = lsmfs_now();

    pthread_rwlock_rdlock(&fs->ns);
    lsmfs_dir_count(fs, ino);
    pthread_mutex_lock(&ino->mu);
    if (to_set & FUSE_SET_ATTR_SIZE) {
        if (ino->m.type == LSMFS_DIR)
            rc = EISDIR;
        else if (ino->m.type != LSMFS_REG)
            rc = EINVAL;
        else if ((rc = ops_resize_locked(fs, ino, (uint64_t)attr->st_size)) == 0) {
            ino->m.mtime_ns = now;
            if (!(to_set & FUSE_SET_ATTR_MODE))
                ops_kill_priv_locked(req, ino);
        }
    }
    if (rc == 0) {
        /* chown(2) of a regular file clears set-user-ID, and set-group-ID when group-execute is
           set, whoever calls it (Linux since 2.2.13). With FUSE_HANDLE_KILLPRIV_V2 (pool.c) the
           kernel leaves that to the daemon instead of sending the cleared mode. */
        if ((to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) && !(to_set & FUSE_SET_ATTR_MODE) &&
            ino->m.type == LSMFS_REG) {
            ino->m.mode &= ~(uint32_t)S_ISUID;
            if (ino->m.mode & S_IXGRP)
                ino->m.mode &= ~(uint32_t)S_ISGID;
        }
        if (to_set & FUSE_SET_ATTR_MODE)
            ino->m.mode = (ino->m.mode & S_IFMT) | (attr->st_mode & 07777);
        if (to_set & FUSE_SET_ATTR_UID)
            ino->m.uid = attr->st_uid;
        if (to_set & FUSE_SET_ATTR_GID)
            ino->m.gid = attr->st_gid;
        if (to_set & FUSE_SET_ATTR_MTIME_NOW)
            ino->m.mtime_ns = now;
        else if (to_set & FUSE_SET_ATTR_MTIME)
            ino->m.mtime_ns = ops_ts_ns(&attr->st_mtim);
        ino->m.ctime_ns = (to_set & FUSE_SET_ATTR_CTIME) ? ops_ts_ns(&attr->st_ctim) : now;
        ino->dirty = 1;
        rc = lsmfs_flush_locked(fs, ino, 0);
        pthread_mutex_lock(&fs->tmu);
        int unopened = ino->nopen == 0;
        pthread_mutex_unlock(&fs->tmu);
        if (rc == 0 && unopened)
            lsmfs_buf_drop(fs, ino);
    }
    lsmfs_alloc_update(fs, ino);
    lsmfs_meta_to_stat(ino, &st);
    pthread_mutex_unlock(&ino->mu);
    pthread_rwlock_unlock(&fs->ns);
    if (rc)
        fuse_reply_err(req, rc);
    else
        fuse_reply_attr(req, &st, fs->timeout);
}

static void lsmfs_access(fuse_req_t req, fuse_ino_t n, int mask)
{
    struct lsmfs *fs = lsmfs_owner(req, n);
    struct lsmfs_inode *ino = lsmfs_ino(fs, n);
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
        if (ctx->uid == uid)
            bits = (mode >> 6) & 07;
        else if (ops_in_group(req, gid))
            bits = (mode >> 3) & 07;
        if ((mask & R_OK && !(bits & 4)) || (mask & W_OK && !(bits & 2)) ||
            (mask & X_OK && !(bits & 1)))
            err = EACCES;
    }
    fuse_reply_err(req, err);
}

static void lsmfs_readlink(fuse_req_t req, fuse_ino_t n)
{
    struct lsmfs *fs = lsmfs_owner(req, n);
    struct lsmfs_inode *ino = lsmfs_ino(fs, n);
    void *v = NULL;
    size_t vl = 0;
    int err = 0;
    pthread_rwlock_rdlock(&fs->ns);
    if (ino->m.type != LSMFS_LNK) {
        err = EINVAL;
    } else {
        int rc = lsm_get(fs->db, ino->path, ino->plen, &v, &vl);
        if (rc != LSM_OK)
            err = lsmfs_errno(fs, rc, "readlink", ino->path);
    }
    pthread_rwlock_unlock(&fs->ns);
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

/* ---- files ---- */

static int ops_writable(int flags)
{
    return (flags & O_ACCMODE) != O_RDONLY;
}

static void ops_handle_link(struct lsmfs *fs, struct lsmfs_handle *h)
{
    pthread_mutex_lock(&fs->handles_mu);
    h->aprev = NULL;
    h->anext = fs->handles;
    if (fs->handles)
        fs->handles->aprev = h;
    fs->handles = h;
    pthread_mutex_unlock(&fs->handles_mu);
}

static void ops_handle_unlink(struct lsmfs *fs, struct lsmfs_handle *h)
{
    pthread_mutex_lock(&fs->handles_mu);
    if (h->aprev)
        h->aprev->anext = h->anext;
    else
        fs->handles = h->anext;
    if (h->anext)
        h->anext->aprev = h->aprev;
    pthread_mutex_unlock(&fs->handles_mu);
}

/* Makes a handle for ino (which holds an open reference) and applies O_TRUNC. */
static int ops_open_handle(struct lsmfs *fs, struct lsmfs_inode *ino, struct fuse_file_info *fi)
{
    struct lsmfs_handle *h = calloc(1, sizeof *h);
    if (!h)
        return ENOMEM;
    h->ino = ino;
    h->flags = fi->flags;
    if ((fi->flags & O_TRUNC) && ops_writable(fi->flags)) {
        pthread_mutex_lock(&ino->mu);
        int rc = 0;
        if (ino->m.size != 0 || (!ino->data && !ino->w)) {
            rc = ops_resize_locked(fs, ino, 0);
            if (rc == 0) {
                lsmfs_meta_touch(&ino->m);
                ino->dirty = 1;
            }
        }
        pthread_mutex_unlock(&ino->mu);
        if (rc) {
            free(h);
            return rc;
        }
        h->wrote = 1;
    }
    if (!ops_writable(fi->flags) && fs->close_to_open) {
        pthread_mutex_lock(&ino->mu);
        h->rnext = ino->readers;
        if (ino->readers)
            ino->readers->rprev = h;
        ino->readers = h;
        pthread_mutex_unlock(&ino->mu);
    }
    fi->fh = (uint64_t)(uintptr_t)h;
    ops_handle_link(fs, h);
    if (fs->close_to_open) {
        /* The kernel keeps one size and one page cache per inode, so it cannot show a writer its
           pending bytes and a reader the last flushed value: every read comes here instead. */
        fi->direct_io = 1;
    } else {
        /* The page cache is one view of the file for every descriptor, as on a local file
           system: a reader sees a writer's bytes at once, and shared mappings work. With
           kernel_cache (the default) the pages stay across opens: this daemon is the only
           writer, every change comes through the kernel, and the kernel updates its pages with
           each write it makes. The exception is a write from the page cache that was refused
           (lsmfs_write): then the pages hold bytes the file does not, and go. So do they when
           this open raced with the rename or unlink that replaced the file: its OPEN arrived
           after the daemon buried the inode with nothing kept (no handle was open then), so
           reads go by path to what is there now, and pages of the old bytes (a writer's, say)
           would mix with them. */
        pthread_mutex_lock(&ino->mu);
        int raced = ino->deleted && !ino->data && !ino->w && !ino->r;
        fi->keep_cache = fs->kernel_cache && !ino->kstale && !raced;
        ino->kstale = 0;
        pthread_mutex_unlock(&ino->mu);
    }
    if (!ops_writable(fi->flags))
        fi->noflush = 1;   /* nothing to write back: spare the FLUSH request */
    return 0;
}

static void ops_close_handle(struct lsmfs *fs, struct lsmfs_handle *h)
{
    struct lsmfs_inode *ino = h->ino;
    pthread_mutex_lock(&ino->mu);
    if (h->rprev)
        h->rprev->rnext = h->rnext;
    else if (ino->readers == h)
        ino->readers = h->rnext;
    if (h->rnext)
        h->rnext->rprev = h->rprev;
    if (h->snap && --h->snap->refs == 0) {
        lsm_value_reader_close(h->snap->r);
        free(h->snap);
    }
    pthread_mutex_unlock(&ino->mu);
    lsmfs_table_close(fs, ino);
    ops_handle_unlink(fs, h);
    free(h);
}

void lsmfs_handles_free(struct lsmfs *fs)
{
    while (fs->handles)
        ops_close_handle(fs, fs->handles);
}

static void lsmfs_open(fuse_req_t req, fuse_ino_t n, struct fuse_file_info *fi)
{
    struct lsmfs *fs = lsmfs_owner(req, n);
    struct lsmfs_inode *ino = lsmfs_ino(fs, n);
    int err = 0;
    pthread_rwlock_rdlock(&fs->ns);
    if (ino->m.type == LSMFS_DIR) {
        err = EISDIR;
    } else if (ino->m.type == LSMFS_LNK) {
        err = ELOOP;
    } else {
        lsmfs_table_open(fs, ino);
        if ((err = ops_open_handle(fs, ino, fi)) != 0)
            lsmfs_table_close(fs, ino);
    }
    pthread_rwlock_unlock(&fs->ns);
    if (err) {
        fuse_reply_err(req, err);
    } else if (fuse_reply_open(req, fi) != 0) {
        pthread_rwlock_rdlock(&fs->ns);
        ops_close_handle(fs, (struct lsmfs_handle *)(uintptr_t)fi->fh);
        pthread_rwlock_unlock(&fs->ns);
    }
}

static void lsmfs_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                         struct fuse_file_info *fi)
{
    struct lsmfs *fs = lsmfs_owner(req, parent);
    struct lsmfs_inode *ino = NULL, *p = lsmfs_ino(fs, parent);
    struct fuse_entry_param e;
    int err;
    pthread_rwlock_wrlock(&fs->ns);
    err = lsmfs_dir_make(req, p, name, LSMFS_REG, mode & ~S_IFMT, 0, NULL, 1, &ino);
    if (err == EEXIST && !(fi->flags & O_EXCL) && lsmfs_name_check(name, strlen(name)) == 0) {
        /* lost a race with another creator: open what is there */
        if ((err = lsmfs_dir_lookup(fs, p, name, &ino)) == 0) {
            if (ino->m.type == LSMFS_DIR)
                err = EISDIR;
            else
                lsmfs_table_open(fs, ino);
            if (err) {
                pthread_rwlock_unlock(&fs->ns);
                lsmfs_table_forget(fs, ino, 1);
                fuse_reply_err(req, err);
                return;
            }
        }
    }
    if (!err && (err = ops_open_handle(fs, ino, fi)) != 0) {
        lsmfs_table_close(fs, ino);
        pthread_rwlock_unlock(&fs->ns);
        lsmfs_table_forget(fs, ino, 1);
        fuse_reply_err(req, err);
        return;
    }
    pthread_rwlock_unlock(&fs->ns);
    if (err) {
        fuse_reply_err(req, err);
        return;
    }
    lsmfs_fill_entry(fs, ino, &e);
    if (fuse_reply_create(req, &e, fi) != 0) {
        pthread_rwlock_rdlock(&fs->ns);
        ops_close_handle(fs, (struct lsmfs_handle *)(uintptr_t)fi->fh);
        pthread_rwlock_unlock(&fs->ns);
        lsmfs_table_forget(fs, ino, 1);
    }
}

static void lsmfs_read(fuse_req_t req, fuse_ino_t n, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    struct lsmfs *fs = lsmfs_owner(req, n);
    struct lsmfs_inode *ino = lsmfs_ino(fs, n);
    struct lsmfs_handle *h = (struct lsmfs_handle *)(uintptr_t)fi->fh;
    char *buf = malloc(size ? size : 1);
    size_t got = 0;
    int err = buf ? 0 : ENOMEM;
    pthread_rwlock_rdlock(&fs->ns);
    pthread_mutex_lock(&ino->mu);
    /* The pending bytes (buffer or writer), when the file is being written, are its content. Only
       in close_to_open mode does a read-only descriptor see the last flushed value instead (or,
       once the file is unlinked, what it held then). Everything is read by range: only the
       pieces the request touches, whatever the file's size. With ino->mu held, no write-back
       lands in the middle of a read. */
    if (err) {
    } else if (h->snap) {
        int rc = h->snap->r ? lsm_value_reader_read(h->snap->r, (uint64_t)off, buf, size, &got)
                            : LSM_OK;
        if (rc != LSM_OK)
            err = lsmfs_errno(fs, rc, "read", ino->path);
    } else if ((ino->data || ino->w) && !ops_writable(h->flags) && !ino->deleted &&
               fs->close_to_open) {
        int rc = ino->deleted ? LSM_NOTFOUND
                              : lsm_get_range(fs->db, ino->path, ino->plen, (uint64_t)off, buf,
                                              size, &got, NULL);
        if (rc != LSM_OK && rc != LSM_NOTFOUND)
            err = lsmfs_errno(fs, rc, "read", ino->path);
    } else {
        err = lsmfs_content_read(fs, ino, (uint64_t)off, buf, size, &got);
    }
    pthread_mutex_unlock(&ino->mu);
    pthread_rwlock_unlock(&fs->ns);
    if (err)
        fuse_reply_err(req, err);
    else
        fuse_reply_buf(req, buf, got);
    free(buf);
}

static void lsmfs_write(fuse_req_t req, fuse_ino_t n, const char *buf, size_t size, off_t off,
                        struct fuse_file_info *fi)
{
    struct lsmfs *fs = lsmfs_owner(req, n);
    struct lsmfs_handle *h = (struct lsmfs_handle *)(uintptr_t)fi->fh;
    struct lsmfs_inode *ino = lsmfs_ino(fs, n);
    uint64_t limit = ops_size_limit(fs);
    int rc = 0;
    size_t wanted = size;
    pthread_rwlock_rdlock(&fs->ns);
    pthread_mutex_lock(&ino->mu);
    if ((h->flags & O_APPEND) && !fs->writeback)
        off = (off_t)ino->m.size;   /* our size is the truth, not the kernel's cached one */
    if (fi->writepage && off >= 0 && (uint64_t)off + size > limit) {
        /* from the kernel's write-back: no process waits for a short count, so a partial write
           would only store part of what the kernel holds; refuse it whole, and close(2) or
           fsync(2) report it */
        rc = EFBIG;
        size = 0;
    } else if (off < 0 || (uint64_t)off >= limit) {
        rc = size ? EFBIG : 0;
        size = 0;
    } else if ((uint64_t)off + size > limit) {
        size = limit - (uint64_t)off;   /* a short write, then EFBIG */
    }
    if (size > 0) {
        uint64_t end = (uint64_t)off + size;
        if (ops_small(ino, end > ino->m.size ? end : ino->m.size)) {
            if ((rc = lsmfs_buf_load(fs, ino)) == 0 &&
                (rc = lsmfs_buf_reserve(fs, ino, end)) == 0) {
                if ((uint64_t)off > ino->m.size)
                    memset(ino->data + ino->m.size, 0, (uint64_t)off - ino->m.size);
                memcpy(ino->data + off, buf, size);
                if (end > ino->m.size)
                    ino->m.size = end;
            }
        } else if ((rc = lsmfs_writer_get(fs, ino)) == 0) {
            int e = lsm_value_writer_write(ino->w, (uint64_t)off, buf, size);
            if (e == LSM_OK) {
                ino->wbytes += size;
                ino->m.size = lsm_value_writer_size(ino->w);
            } else {
                rc = lsmfs_writer_fail(fs, ino, e, "write");
            }
        }
        if (rc == 0) {
            lsmfs_meta_touch(&ino->m);
            ops_kill_priv_locked(req, ino);
            ino->dirty = 1;
            h->wrote = 1;
        }
    }
    /* A write from the page cache (write-back, or a shared mapping) that is refused leaves the
       kernel's pages holding bytes the file does not: they must go, now (lsmfs_notify_inode; the
       notify thread's invalidation waits in the kernel for this reply) and at the next open. */
    int refused = fi->writepage && (rc || size < wanted);
    if (refused)
        ino->kstale = 1;
    pthread_mutex_unlock(&ino->mu);
    if (refused)
        lsmfs_notify_inode(fs, n);
    if (rc)
        fuse_reply_err(req, rc);
    else
        fuse_reply_write(req, size);
    lsmfs_budget_enforce(fs);
    pthread_rwlock_unlock(&fs->ns);
}

static void lsmfs_flush(fuse_req_t req, fuse_ino_t n, struct fuse_file_info *fi)
{
    struct lsmfs *fs = lsmfs_owner(req, n);
    struct lsmfs_handle *h = (struct lsmfs_handle *)(uintptr_t)fi->fh;
    struct lsmfs_inode *ino = lsmfs_ino(fs, n);
    pthread_rwlock_rdlock(&fs->ns);
    pthread_mutex_lock(&ino->mu);
    int rc = lsmfs_flush_locked(fs, ino, fs->sync_mode != LSMFS_SYNC_FSYNC && h->wrote);
    if (rc == 0)
        h->wrote = 0;
    pthread_mutex_unlock(&ino->mu);
    pthread_rwlock_unlock(&fs->ns);
    fuse_reply_err(req, rc);
}

static void lsmfs_release(fuse_req_t req, fuse_ino_t n, struct fuse_file_info *fi)
{
    struct lsmfs *fs = lsmfs_owner(req, n);
    pthread_rwlock_rdlock(&fs->ns);
    ops_close_handle(fs, (struct lsmfs_handle *)(uintptr_t)fi->fh);
    pthread_rwlock_unlock(&fs->ns);
    fuse_reply_err(req, 0);
}

static void lsmfs_fsync(fuse_req_t req, fuse_ino_t n, int datasync, struct fuse_file_info *fi)
{
    struct lsmfs *fs = lsmfs_owner(req, n);
    struct lsmfs_inode *ino = lsmfs_ino(fs, n);
    pthread_rwlock_rdlock(&fs->ns);
    pthread_mutex_lock(&ino->mu);
    int rc = lsmfs_flush_locked(fs, ino, 1);
    pthread_mutex_unlock(&ino->mu);
    pthread_rwlock_unlock(&fs->ns);
    fuse_reply_err(req, rc);
}

/* SEEK_DATA and SEEK_HOLE (the kernel answers the other whences alone). A file being written
   answers as one range of data up to its size, which lseek(2) allows; a stored one from its
   extent map (lsm_get_next_data: reads no data). */
static void lsmfs_lseek(fuse_req_t req, fuse_ino_t n, off_t off, int whence,
                        struct fuse_file_info *fi)
{
    struct lsmfs *fs = lsmfs_owner(req, n);
    struct lsmfs_inode *ino = lsmfs_ino(fs, n);
    int err = 0;
    off_t res = off;
    if (whence != SEEK_DATA && whence != SEEK_HOLE) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    pthread_rwlock_rdlock(&fs->ns);
    pthread_mutex_lock(&ino->mu);
    uint64_t size = ino->m.size, u = (uint64_t)off;
    if (off < 0 || u >= size) {
        err = ENXIO;
    } else if (ino->data || ino->w || ino->deleted || size <= LSMFS_SMALL_MAX) {
        res = whence == SEEK_DATA ? off : (off_t)size;
    } else {
        uint64_t start, end;
        int rc = lsm_get_next_data(fs->db, ino->path, ino->plen, u, &start, &end);
        /* Data ranges that touch are one: a hole starts where no next range follows at once. */
        while (rc == LSM_OK && whence == SEEK_HOLE && start <= u && end < size) {
            uint64_t s2, e2;
            if ((rc = lsm_get_next_data(fs->db, ino->path, ino->plen, end, &s2, &e2)) != LSM_OK ||
                s2 != end || e2 <= end)
                break;
            end = e2;
        }
        if (rc == LSM_NOTFOUND)
            start = end = size = 0;
        else if (rc != LSM_OK)
            err = lsmfs_errno(fs, rc, "seek in", ino->path);
        if (err) {
        } else if (whence == SEEK_DATA) {
            if (start >= size || start == end)
                err = ENXIO;
            else
                res = (off_t)(start > u ? start : u);
        } else {
            res = (off_t)(start > u || start == end ? u : end < size ? end : size);
        }
    }
    pthread_mutex_unlock(&ino->mu);
    pthread_rwlock_unlock(&fs->ns);
    if (err)
        fuse_reply_err(req, err);
    else
        fuse_reply_lseek(req, res);
}

/* fallocate(2): mode 0 grows the size with a hole (nothing is reserved on disk: a later write can
   still fail with ENOSPC, as on tmpfs); KEEP_SIZE alone has nothing to do; PUNCH_HOLE|KEEP_SIZE
   makes the range a hole; ZERO_RANGE makes it a hole and grows the size unless KEEP_SIZE. Other
   modes: EOPNOTSUPP. The change is written back with the file (flush, fsync, last close). */
static void lsmfs_fallocate(fuse_req_t req, fuse_ino_t n, int mode, off_t off, off_t len,
                            struct fuse_file_info *fi)
{
    struct lsmfs *fs = lsmfs_owner(req, n);
    struct lsmfs_inode *ino = lsmfs_ino(fs, n);
    struct lsmfs_handle *h = (struct lsmfs_handle *)(uintptr_t)fi->fh;
    int punch = mode == (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE) ||
                (mode & ~FALLOC_FL_KEEP_SIZE) == FALLOC_FL_ZERO_RANGE;
    int err = 0;
    if (mode != 0 && mode != FALLOC_FL_KEEP_SIZE && !punch) {
        fuse_reply_err(req, EOPNOTSUPP);
        return;
    }
    if (off < 0 || len <= 0) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    uint64_t end = (uint64_t)off + (uint64_t)len;
    pthread_rwlock_rdlock(&fs->ns);
    pthread_mutex_lock(&ino->mu);
    uint64_t size = ino->m.size;
    if (ino->m.type != LSMFS_REG) {
        err = ENODEV;
    } else if (!(mode & FALLOC_FL_KEEP_SIZE) && end > ops_size_limit(fs)) {
        err = EFBIG;
    } else if (punch && (uint64_t)off < size) {
        uint64_t pend = end < size ? end : size;
        if (ops_small(ino, size)) {
            if ((err = lsmfs_buf_load(fs, ino)) == 0)
                memset(ino->data + off, 0, pend - (uint64_t)off);
        } else if ((err = lsmfs_writer_get(fs, ino)) == 0) {
            int rc = lsm_value_writer_punch(ino->w, (uint64_t)off, pend - (uint64_t)off);
            if (rc != LSM_OK)
                err = lsmfs_writer_fail(fs, ino, rc, "punch a hole in");
        }
    }
    if (!err && !(mode & FALLOC_FL_KEEP_SIZE) && end > ino->m.size)
        err = ops_resize_locked(fs, ino, end);
    if (!err && (punch || ino->m.size != size)) {
        lsmfs_meta_touch(&ino->m);
        ino->dirty = 1;
        h->wrote = 1;
    }
    pthread_mutex_unlock(&ino->mu);
    pthread_rwlock_unlock(&fs->ns);
    fuse_reply_err(req, err);
}

/* copy_file_range(2) inside the mount: the source's committed version is shared, not copied
   (lsm_value_writer_copy: the destination's map names the source's extents), so a reflink-style
   copy of a large file writes no data. The source is written back first when it has pending
   bytes. The kernel drops the destination's cached pages in the range itself. */
static void lsmfs_copy_file_range(fuse_req_t req, fuse_ino_t nin, off_t off_in,
                                  struct fuse_file_info *fi_in, fuse_ino_t nout, off_t off_out,
                                  struct fuse_file_info *fi_out, size_t len, int flags)
{
    struct lsmfs *fs = lsmfs_owner(req, nout);
    struct lsmfs_inode *src = lsmfs_ino(fs, nin), *dst = lsmfs_ino(fs, nout);
    struct lsmfs_handle *h = (struct lsmfs_handle *)(uintptr_t)fi_out->fh;
    uint64_t copied = 0, limit = ops_size_limit(fs);
    int err = 0;
    if (flags != 0 || off_in < 0 || off_out < 0) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    if (lsmfs_owner(req, nin) != fs) {
        fuse_reply_err(req, EXDEV);     /* from a snapshot: another database; copied by hand */
        return;
    }
    pthread_rwlock_rdlock(&fs->ns);
    pthread_mutex_lock(&src->mu);
    uint64_t ssize = src->m.size;
    if (src->m.type != LSMFS_REG || src->deleted)
        err = src->deleted ? EXDEV : EINVAL;   /* EXDEV: the caller copies by read and write */
    else if (src->dirty)
        err = lsmfs_flush_locked(fs, src, 0);
    pthread_mutex_unlock(&src->mu);
    if ((uint64_t)off_in >= ssize)
        len = 0;
    else if (len > ssize - (uint64_t)off_in)
        len = (size_t)(ssize - (uint64_t)off_in);
    if (!err && len && (uint64_t)off_out >= limit)
        err = EFBIG;
    else if (!err && (uint64_t)off_out + len > limit)
        len = (size_t)(limit - (uint64_t)off_out);
    if (!err && len) {
        pthread_mutex_lock(&dst->mu);
        if (dst->m.type != LSMFS_REG) {
            err = EINVAL;
        } else if ((err = lsmfs_writer_get(fs, dst)) == 0) {
            int rc = lsm_value_writer_copy(dst->w, (uint64_t)off_out, src->path, src->plen,
                                           (uint64_t)off_in, len, &copied);
            if (rc == LSM_NOTFOUND) {
                copied = 0;
            } else if (rc != LSM_OK) {
                err = lsmfs_writer_fail(fs, dst, rc, "copy into");
            } else {
                dst->wbytes += copied;
                dst->m.size = lsm_value_writer_size(dst->w);
                lsmfs_meta_touch(&dst->m);
                ops_kill_priv_locked(req, dst);
                dst->dirty = 1;
                h->wrote = 1;
            }
        }
        pthread_mutex_unlock(&dst->mu);
    }
    pthread_rwlock_unlock(&fs->ns);
    if (err)
        fuse_reply_err(req, err);
    else
        fuse_reply_write(req, (size_t)copied);
}

static void lsmfs_statfs(fuse_req_t req, fuse_ino_t n)
{
    struct lsmfs *fs = fuse_req_userdata(req);
    struct statvfs sv;
    if (statvfs(fs->datadir, &sv) != 0) {
        fuse_reply_err(req, errno);
        return;
    }
    sv.f_namemax = LSMFS_NAME_MAX;
    sv.f_flag = 0;
    sv.f_fsid = 0;
    fuse_reply_statfs(req, &sv);
}

const struct fuse_lowlevel_ops lsmfs_base_ops = {
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
    .lseek = lsmfs_lseek,
    .fallocate = lsmfs_fallocate,
    .copy_file_range = lsmfs_copy_file_range,
    .setxattr = lsmfs_setxattr,
    .getxattr = lsmfs_getxattr,
    .listxattr = lsmfs_listxattr,
    .removexattr = lsmfs_removexattr,
};

