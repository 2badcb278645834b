/*
 * dir.c — the namespace of lsmfs: lookup, making and removing names, rename, and listing.
 *
 * What: the FUSE callbacks that find, create, remove and move names (lookup, forget, mknod, mkdir,
 * symlink, link, unlink, rmdir, rename) and those that list a directory (opendir, readdir,
 * readdirplus, releasedir, fsyncdir). Each change of the namespace is one batch, made with fs->ns
 * held for writing, so no request sees half of it.
 *
 * Why so: a directory is a key prefix, so a rename of a directory is a copy of every key below it
 * and a listing is a merge of two streams (data keys and directory records) in key order,
 * restarted per request by a seek to a cursor: the place right after the last child returned.
 * A listing never holds a directory in memory and never rescans it. The offset of each child is
 * a cookie for its cursor (cookie.c says why a place and not a count, and what that promises);
 * the handle keeps the cursor of the last entry it returned, cookie.c every other.
 *
 * Never: reply twice or not at all to a request; hold an inode mutex while taking fs->ns; leave an
 * inode findable by a path whose keys are gone.
 */
#include "lsmfs.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

/* What is at path right now: the live inode's attributes when there is one, else the engine's.
   *inop is the live inode (NULL if none). fs->ns held for writing. */
static int dir_resolve(struct lsmfs *fs, const char *path, size_t plen, struct lsmfs_meta *m,
                   struct lsmfs_inode **inop)
{
    struct lsmfs_inode *ino = lsmfs_table_find(fs, path, plen);
    if (inop)
        *inop = ino;
    if (ino) {
        pthread_mutex_lock(&ino->mu);
        *m = ino->m;
        pthread_mutex_unlock(&ino->mu);
        return 0;
    }
    return lsmfs_stat_path(fs, path, plen, m);
}

/* The path of name in directory parent (caller frees *path). A name no file can have through the
   mount (empty, "." or "..") gives invalid: which errno that is depends on the operation. */
static int dir_child(const struct lsmfs_inode *parent, const char *name, int invalid, char **path,
                     size_t *plen)
{
    int err = lsmfs_name_check(name, strlen(name));
    if (err)
        return err == EINVAL ? invalid : err;
    if (parent->m.type != LSMFS_DIR)
        return ENOTDIR;
    return lsmfs_child_path(parent, name, path, plen);
}

/* Looks up name in parent; on success *out holds one more lookup reference. fs->ns held. */
int lsmfs_dir_lookup(struct lsmfs *fs, struct lsmfs_inode *parent, const char *name,
                     struct lsmfs_inode **out)
{
    struct lsmfs_meta m;
    struct lsmfs_inode *ino;
    size_t plen;
    char *path;
    int err = dir_child(parent, name, ENOENT, &path, &plen);
    if (err)
        return err;
    if ((ino = lsmfs_table_ref(fs, path, plen))) {
        free(path);
        *out = ino;
        lsmfs_dir_count(fs, ino);
        return 0;
    }
    if ((err = lsmfs_stat_path(fs, path, plen, &m)) || m.type == LSMFS_NONE) {
        free(path);
        return err ? err : ENOENT;
    }
    if (!(*out = lsmfs_table_get(fs, path, plen, &m)))
        return ENOMEM;
    lsmfs_dir_count(fs, *out);   /* st_nlink; without it, 1 ("not counted") is still right */
    return 0;
}

/* Directory p gains or loses an entry in batch b: its mtime and ctime become now (POSIX), and its
   record goes in b with them. That makes an implicit directory explicit, so it also stays when its
   last child goes away, as an emptied directory does on a local filesystem. fs->ns held for
   writing. */
static void dir_touch_parent(lsm_batch *b, struct lsmfs_inode *p, int64_t now)
{
    pthread_mutex_lock(&p->mu);
    if (p->m.type == LSMFS_DIR) {
        p->m.mtime_ns = p->m.ctime_ns = now;
        lsmfs_add_record(b, p);
    }
    pthread_mutex_unlock(&p->mu);
}

/* Directory p gained (d > 0) or lost subdirectories, once the batch that did it was written. */
static void dir_nsub_add(struct lsmfs_inode *p, int64_t d)
{
    if (!d)
        return;
    pthread_mutex_lock(&p->mu);
    if (p->nsub >= 0)
        p->nsub += d;
    pthread_mutex_unlock(&p->mu);
}

/* ---- lookup and attributes ---- */

void lsmfs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct lsmfs *fs = lsmfs_owner(req, parent);
    struct fuse_entry_param e;
    struct lsmfs_inode *ino;
    pthread_rwlock_rdlock(&fs->ns);
    int err = lsmfs_dir_lookup(fs, lsmfs_ino(fs, parent), name, &ino);
    if (!err)
        lsmfs_fill_entry(fs, ino, &e);
    pthread_rwlock_unlock(&fs->ns);
    if (err == ENOENT) {
        memset(&e, 0, sizeof e);   /* a negative entry, cached like a positive one */
        e.entry_timeout = fs->timeout;
        fuse_reply_entry(req, &e);
    } else if (err) {
        fuse_reply_err(req, err);
    } else {
        fuse_reply_entry(req, &e);
    }
}

void lsmfs_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
    struct lsmfs *fs = lsmfs_owner(req, ino);
    lsmfs_table_forget(fs, lsmfs_ino(fs, ino), nlookup);
    fuse_reply_none(req);
}

void lsmfs_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
    for (size_t i = 0; i < count; i++) {
        struct lsmfs *fs = lsmfs_owner(req, forgets[i].ino);
        lsmfs_table_forget(fs, lsmfs_ino(fs, forgets[i].ino), forgets[i].nlookup);
    }
    fuse_reply_none(req);
}

/* ---- making and removing names ---- */

/* Creates a regular file, directory or symlink at parent/name as one batch. On success *out holds
   one lookup reference (and one open reference if opening). fs->ns held for writing. */
int lsmfs_dir_make(fuse_req_t req, struct lsmfs_inode *parent, const char *name, int type,
                     mode_t mode, dev_t rdev, const char *target, int opening,
                     struct lsmfs_inode **out)
{
    struct lsmfs *fs = parent->fs;
    struct lsmfs_meta m;
    size_t plen;
    char *path;
    int rc = dir_child(parent, name, EEXIST, &path, &plen);
    if (rc)
        return rc;
    if ((rc = dir_resolve(fs, path, plen, &m, NULL)) || m.type != LSMFS_NONE) {
        free(path);
        return rc ? rc : EEXIST;
    }
    const struct fuse_ctx *ctx = fuse_req_ctx(req);
    pthread_mutex_lock(&parent->mu);
    uint32_t pmode = parent->m.mode, pgid = parent->m.gid;
    pthread_mutex_unlock(&parent->mu);
    lsmfs_meta_default(fs, &m, type);
    m.mode = (m.mode & S_IFMT) | (type == LSMFS_LNK ? 0777 : (mode & 07777));
    if (type == LSMFS_REG && (mode & S_IFMT) && !S_ISREG(mode)) {
        m.mode = (mode & S_IFMT) | (mode & 07777);      /* a FIFO, socket or device node */
        m.rdev = S_ISCHR(mode) || S_ISBLK(mode) ? (uint64_t)rdev : 0;
    }
    m.uid = ctx->uid;
    m.gid = ctx->gid;
    if (pmode & S_ISGID) {
        /* a set-group-ID directory gives its group to what is made in it, and its bit to
           subdirectories (mkdir(2), inode(7)) */
        m.gid = pgid;
        if (type == LSMFS_DIR)
            m.mode |= S_ISGID;
    }
    lsmfs_meta_touch(&m);
    if ((rc = lsmfs_ino_alloc(fs, &m.ino))) {
        free(path);
        return rc;
    }

    lsm_batch *b = lsm_batch_new();
    if (type == LSMFS_DIR) {
        m.explicit_dir = 1;
    } else {
        m.size = target ? strlen(target) : 0;
        lsm_batch_put(b, path, plen, target ? target : "", m.size);
    }
    if ((rc = lsmfs_put_record(b, path, plen, &m)) == 0) {
        dir_touch_parent(b, parent, m.mtime_ns);
        rc = lsmfs_write_batch(fs, b, 0);
    }
    lsm_batch_free(b);
    if (rc) {
        free(path);
        return rc;
    }
    dir_nsub_add(parent, type == LSMFS_DIR);
    struct lsmfs_inode *ino = lsmfs_table_get(fs, path, plen, &m);
    if (!ino)
        return ENOMEM;
    if (type == LSMFS_DIR) {
        pthread_mutex_lock(&ino->mu);
        ino->nsub = 0;
        pthread_mutex_unlock(&ino->mu);
    }
    if (opening)
        lsmfs_table_open(fs, ino);
    *out = ino;
    return 0;
}

static void dir_reply_made(fuse_req_t req, int err, struct lsmfs_inode *ino)
{
    struct lsmfs *fs = fuse_req_userdata(req);
    struct fuse_entry_param e;
    if (err) {
        fuse_reply_err(req, err);
        return;
    }
    lsmfs_fill_entry(fs, ino, &e);
    if (fuse_reply_entry(req, &e) != 0)
        lsmfs_table_forget(fs, ino, 1);
}

void lsmfs_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                        dev_t rdev)
{
    struct lsmfs *fs = lsmfs_owner(req, parent);
    struct lsmfs_inode *ino = NULL;
    int err = EINVAL;
    /* FIFOs, sockets and device nodes are records only: the kernel carries their I/O. */
    if (S_ISREG(mode) || S_ISFIFO(mode) || S_ISSOCK(mode) || S_ISCHR(mode) || S_ISBLK(mode) ||
        !(mode & S_IFMT)) {
        pthread_rwlock_wrlock(&fs->ns);
        err = lsmfs_dir_make(req, lsmfs_ino(fs, parent), name, LSMFS_REG, mode, rdev, NULL, 0,
                             &ino);
        pthread_rwlock_unlock(&fs->ns);
    }
    dir_reply_made(req, err, ino);
}

void lsmfs_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
    struct lsmfs *fs = lsmfs_owner(req, parent);
    struct lsmfs_inode *ino = NULL;
    pthread_rwlock_wrlock(&fs->ns);
    int err = lsmfs_dir_make(req, lsmfs_ino(fs, parent), name, LSMFS_DIR, mode, 0, NULL, 0,
                             &ino);
    pthread_rwlock_unlock(&fs->ns);
    dir_reply_made(req, err, ino);
}

void lsmfs_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
    struct lsmfs *fs = lsmfs_owner(req, parent);
    struct lsmfs_inode *ino = NULL;
    int err = strlen(link) > PATH_MAX ? ENAMETOOLONG : 0;
    pthread_rwlock_wrlock(&fs->ns);
    if (!err)
        err = lsmfs_dir_make(req, lsmfs_ino(fs, parent), name, LSMFS_LNK, 0777, 0, link, 0,
                             &ino);
    pthread_rwlock_unlock(&fs->ns);
    dir_reply_made(req, err, ino);
}

void lsmfs_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
    fuse_reply_err(req, EPERM);   /* hard links are not supported */
}

/* Before a live inode's key goes away: if it is open, load its content so that its handles keep
   reading it, as on a local filesystem. fs->ns held for writing. */
static void dir_preserve(struct lsmfs *fs, struct lsmfs_inode *ino)
{
    if (!ino)
        return;
    pthread_mutex_lock(&fs->tmu);
    int open = ino->nopen > 0;
    pthread_mutex_unlock(&fs->tmu);
    pthread_mutex_lock(&ino->mu);
    if (ino->m.type != LSMFS_DIR)
        lsmfs_snap_readers(fs, ino);
    if (open)
        lsmfs_content_keep(fs, ino);    /* a small file's bytes, a large one's reader */
    pthread_mutex_unlock(&ino->mu);
}

/* After its key went away: the inode serves its open handles from its buffer, is never written
   back, and is no longer found by path; losing its link is a change of its own (ctime). fs->ns
   held for writing. */
static void dir_bury(struct lsmfs *fs, struct lsmfs_inode *ino)
{
    if (!ino)
        return;
    pthread_mutex_lock(&ino->mu);
    ino->deleted = 1;
    ino->m.ctime_ns = lsmfs_now();
    ino->dirty = 0;
    pthread_mutex_unlock(&ino->mu);
    lsmfs_table_unhash(fs, ino);
}

/* The batch that deletes what is at path (file, symlink or explicit directory record). */
static void dir_add_delete(lsm_batch *b, const char *path, size_t plen, int type)
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

static int dir_remove(struct lsmfs *fs, struct lsmfs_inode *parent, const char *name, int dir)
{
    struct lsmfs_meta m;
    struct lsmfs_inode *ino;
    size_t plen;
    char *path;
    int rc, err = dir_child(parent, name, dir ? EINVAL : EISDIR, &path, &plen);
    if (err)
        return err;
    if ((rc = dir_resolve(fs, path, plen, &m, &ino)) || m.type == LSMFS_NONE) {
        free(path);
        return rc ? rc : ENOENT;
    }
    if (dir && m.type != LSMFS_DIR)
        err = ENOTDIR;
    else if (!dir && m.type == LSMFS_DIR)
        err = EISDIR;
    if (!err && dir) {
        int has;
        if ((rc = lsmfs_dir_has_children(fs, path, plen, &has)))
            err = rc;
        else if (has)
            err = ENOTEMPTY;
    }
    if (err) {
        free(path);
        return err;
    }
    dir_preserve(fs, ino);
    lsm_batch *b = lsm_batch_new();
    dir_add_delete(b, path, plen, m.type);
    lsm_batch_set_frees_space(b, 1);    /* works on a full disk (the engine's reserve) */
    if ((rc = lsmfs_xattr_drop(fs, b, path, plen, m.type)) == 0) {
        dir_touch_parent(b, parent, lsmfs_now());
        rc = lsmfs_write_batch(fs, b, 0);
    }
    lsm_batch_free(b);
    if (rc == 0 && m.type == LSMFS_DIR)
        dir_nsub_add(parent, -1);
    if (rc == 0 && m.type == LSMFS_DIR)
        lsmfs_reclaim_note_dir(fs, path, plen);
    else if (rc == 0 && m.size >= LSMFS_RECLAIM_MIN)
        lsmfs_reclaim_note(fs, path, plen);
    else if (rc == 0)
        lsmfs_reclaim_removed(fs, m.size + plen);
    free(path);
    if (rc)
        return rc;
    dir_bury(fs, ino);
    return 0;
}

/* UNLINK (dir 0) and RMDIR (dir 1). */
static void dir_remove_req(fuse_req_t req, fuse_ino_t parent, const char *name, int dir)
{
    struct lsmfs *fs = lsmfs_owner(req, parent);
    pthread_rwlock_wrlock(&fs->ns);
    int err = dir_remove(fs, lsmfs_ino(fs, parent), name, dir);
    pthread_rwlock_unlock(&fs->ns);
    fuse_reply_err(req, err);
}

void lsmfs_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    dir_remove_req(req, parent, name, 0);
}

void lsmfs_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    dir_remove_req(req, parent, name, 1);
}

/* ---- rename ---- */

/* One side of a rename: a name in a directory and what is there. Belongs to the one request
   renaming, which holds fs->ns for writing throughout. */
struct rename_side {
    struct lsmfs_inode *parent;  /* the directory holding the name */
    char   *path;                /* parent's path + "/" + name; owned, NULL until resolved */
    size_t  len;                 /* strlen(path) */
    struct lsmfs_meta m;         /* what is at path (type LSMFS_NONE: nothing) */
    struct lsmfs_inode *ino;     /* its live inode, or NULL */
    lsm_value_writer *w;         /* a large file's value moved by sharing its extents: a writer
                                    on the new key, committed with the batch (dir_move_large) */
};

/* Puts the value of the file at from under the key to: the buffer of its live inode when loaded,
   else the engine's value (a writer is committed first: its key is the old path). *vl is its
   length. ino->mu held when ino is set. */
static int dir_move_value(struct lsmfs *fs, lsm_batch *b, const char *from, size_t flen,
                          const char *to, size_t tlen, struct lsmfs_inode *ino, size_t *vl)
{
    void *v;
    if (ino && ino->w) {
        int err = lsmfs_flush_locked(fs, ino, 0);
        if (err)
            return err;
    }
    if (ino && ino->data) {
        lsm_batch_put(b, to, tlen, ino->data, ino->m.size);
        *vl = ino->m.size;
        return 0;
    }
    int rc = lsm_get(fs->db, from, flen, &v, vl);
    if (rc != LSM_OK)
        return lsmfs_errno(fs, rc, "rename", from);
    lsm_batch_put(b, to, tlen, v, *vl);
    free(v);
    return 0;
}

/* dir_move for a file or symlink: its value, attribute record and extended attributes. */
static int dir_move_file(struct lsmfs *fs, lsm_batch *b, int phase, struct rename_side *from,
                         const struct rename_side *to, size_t *bytes)
{
    size_t vl = 0;
    int err = 0;
    if (phase == 0) {
        dir_add_delete(b, from->path, from->len, from->m.type);
        return lsmfs_xattr_drop(fs, b, from->path, from->len, from->m.type);
    }
    if (from->ino)
        pthread_mutex_lock(&from->ino->mu);
    if (!from->w)   /* else the writer on the new key holds the value */
        err = dir_move_value(fs, b, from->path, from->len, to->path, to->len, from->ino, &vl);
    if (from->ino)
        pthread_mutex_unlock(&from->ino->mu);
    if (!err)
        err = lsmfs_xattr_copy(fs, b, from->path, from->len, from->m.type, to->path, to->len,
                               bytes);
    if (err)
        return err;
    *bytes += vl;
    from->m.ctime_ns = lsmfs_now();
    return lsmfs_put_record(b, to->path, to->len, &from->m);
}

/* Whether the object of type at the n bytes at path has a record of its own. */
static int dir_has_record(struct lsmfs *fs, const char *path, size_t n, int type, int *has)
{
    uint64_t sz;
    size_t kl;
    char *k = lsmfs_key(type == LSMFS_DIR ? 'd' : 'a', path, n, type == LSMFS_DIR, &kl);
    if (!k)
        return ENOMEM;
    int rc = lsm_get_size(fs->db, k, kl, &sz);
    free(k);
    *has = rc == LSM_OK;
    return rc == LSM_OK || rc == LSM_NOTFOUND ? 0 : lsmfs_errno(fs, rc, "rename", path);
}

/* The data key k (n bytes) moves from below directory from to the same place below to. What
   has no record on the way, the file k and each directory between from and k not met with the
   previous data key prev (its keys are contiguous), gets one at its new place holding the inode
   number its old path gave it, which it keeps (man lsmfs: Inode numbers). A key that cannot be
   a path is hidden and left alone. */
static int dir_move_numbers(struct lsmfs *fs, lsm_batch *b, const char *k, size_t n,
                            const char *prev, size_t prevn, size_t flen, const char *to,
                            size_t tlen, size_t *bytes)
{
    struct lsmfs_meta m;
    char *np = NULL;
    int err = 0;
    for (size_t i = flen + 1, c = i; i <= n && !err; i++) {
        if (i < n && k[i] != '/')
            continue;
        if (lsmfs_name_check(k + c, i - c) != 0)
            break;
        int type = i < n ? LSMFS_DIR : LSMFS_REG, has;
        c = i + 1;
        if (type == LSMFS_DIR && prevn > i && memcmp(prev, k, i + 1) == 0)
            continue;
        if ((err = dir_has_record(fs, k, i, type, &has)) || has)
            continue;
        size_t npl = tlen + i - flen;
        char *nnp = realloc(np, npl + 1);
        if (!nnp) {
            err = ENOMEM;
            break;
        }
        np = nnp;
        memcpy(np, to, tlen);
        memcpy(np + tlen, k + flen, i - flen);
        lsmfs_meta_default(fs, &m, type);
        m.ino = lsmfs_ino_derived(k, i);
        err = lsmfs_put_record(b, np, npl, &m);
        *bytes += npl + 64;
    }
    free(np);
    return err;
}

/* Moves (phase 1) or deletes (phase 0) every key that starts with tag, from "/": the data keys
   (tag 0), attribute records ('a'), directory records ('d') or extended attributes ('x') at and
   below directory from. Moved
   files and directories keep their inode numbers: a record without one gets the number its old
   path gave (lsmfs_put_moved_record), and so does a file or directory without a record
   (dir_move_numbers). */
static int dir_move_keys(struct lsmfs *fs, lsm_batch *b, lsm_iter *it, int phase, char tag,
                         const char *from, size_t flen, const char *to, size_t tlen,
                         size_t *bytes)
{
    size_t pl, pre = tag ? 2 : 0, prevn = 0;
    int err = 0;
    char *prev = NULL;
    char *p = lsmfs_key(tag, from, flen, 1, &pl);
    if (!p)
        return ENOMEM;
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
            err = lsmfs_errno(fs, lsm_iter_status(it), "rename", from);
            break;
        }
        *bytes += n + vl;
        if (*bytes > fs->dirty_limit) {
            err = EXDEV;   /* too big for one batch: mv(1) falls back to copy and remove */
            break;
        }
        char *nk = malloc(n - flen + tlen);
        if (!nk) {
            err = ENOMEM;
            break;
        }
        memcpy(nk, k, pre);
        memcpy(nk + pre, to, tlen);
        memcpy(nk + pre + tlen, k + pre + flen, n - pre - flen);
        if (tag == 'x') {
            lsm_batch_put(b, nk, n - flen + tlen, v, vl);
        } else if (tag) {
            /* the old path: the key without the tag (and a directory record's final '/') */
            lsmfs_put_moved_record(b, nk, n - flen + tlen, v, vl, k + pre,
                                   n - pre - (tag == 'd'));
        } else {
            lsm_batch_put(b, nk, n - flen + tlen, v, vl);
            err = dir_move_numbers(fs, b, k, n, prev, prevn, flen, to, tlen, bytes);
            char *np = err ? NULL : realloc(prev, n);
            if (np) {
                memcpy(np, k, n);
                prev = np;
                prevn = n;
            } else if (!err) {
                err = ENOMEM;
            }
        }
        free(nk);
        if (err)
            break;
    }
    free(prev);
    free(p);
    int rc = lsm_iter_status(it);
    if (!err && rc != LSM_OK)
        err = lsmfs_errno(fs, rc, "rename", from);
    return err;
}

/* dir_move for a directory: every data key, attribute record, directory record and extended
   attribute at or below it (its own included); an implicit directory gets a record at its new
   place, so it stays a directory there. */
static int dir_move_tree(struct lsmfs *fs, lsm_batch *b, int phase, struct rename_side *from,
                         const struct rename_side *to, size_t *bytes)
{
    static const char tags[4] = { 0, 'a', 'd', 'x' };
    lsm_iter *it;
    int err = 0, rc = lsm_iter_new(fs->db, &it);
    if (rc != LSM_OK)
        return lsmfs_errno(fs, rc, "rename", from->path);
    for (int t = 0; t < 4 && !err; t++)
        err = dir_move_keys(fs, b, it, phase, tags[t], from->path, from->len, to->path, to->len,
                            bytes);
    lsm_iter_free(it);
    if (!err && phase == 1) {
        /* after the moved records, so that it wins: the new ctime (and, for an implicit
           directory, a record that keeps it a directory at its new place) */
        from->m.ctime_ns = lsmfs_now();
        err = lsmfs_put_record(b, to->path, to->len, &from->m);
    }
    return err;
}

/* Adds to b what moves the object of side from to the path of side to: in phase 0 the deletes of
   its old keys, in phase 1 the puts of its new ones. A batch is applied in order, so all deletes
   go first and an exchange's puts win. *bytes counts what phase 1 copies. */
static int dir_move(struct lsmfs *fs, lsm_batch *b, int phase, struct rename_side *from,
                    const struct rename_side *to, size_t *bytes)
{
    if (from->m.type == LSMFS_DIR)
        return dir_move_tree(fs, b, phase, from, to, bytes);
    return dir_move_file(fs, b, phase, from, to, bytes);
}

/* Moves the live inode of a file (or every live inode at or below a directory) to its new path. */
static void dir_move_inodes(struct lsmfs *fs, const char *from, size_t flen, const char *to,
                        size_t tlen, int type, struct lsmfs_inode *ino)
{
    if (type == LSMFS_DIR) {
        lsmfs_table_move_prefix(fs, from, flen, to, tlen);
    } else if (ino) {
        char *p = malloc(tlen + 1);
        if (p) {
            memcpy(p, to, tlen);
            p[tlen] = '\0';
            lsmfs_table_rename(fs, ino, p, tlen);
        } else {
            lsmfs_table_unhash(fs, ino);
        }
    }
}

/* A moved file's buffer is now in the engine at its new key; a moved object has a new ctime. */
static void dir_moved_clean(struct lsmfs_inode *ino, const struct lsmfs_meta *m)
{
    if (!ino)
        return;
    pthread_mutex_lock(&ino->mu);
    if (m->type != LSMFS_DIR)
        ino->dirty = 0;
    ino->m.ctime_ns = m->ctime_ns;
    pthread_mutex_unlock(&ino->mu);
}

/* Whether the path of a lies strictly below the path of b. */
static int dir_below(const struct rename_side *a, const struct rename_side *b)
{
    return a->len > b->len && a->path[b->len] == '/' && !memcmp(a->path, b->path, b->len);
}

/* What rename(2) refuses once both sides are known to differ: a directory into itself, a
   directory over a file or the reverse, a directory over a non-empty one. */
static int dir_rename_check(struct lsmfs *fs, const struct rename_side *s,
                            const struct rename_side *t, int exchange)
{
    int has;
    if ((s->m.type == LSMFS_DIR && dir_below(t, s)) ||
        (exchange && t->m.type == LSMFS_DIR && dir_below(s, t)))
        return EINVAL;
    if (exchange || t->m.type == LSMFS_NONE)
        return 0;
    if (s->m.type == LSMFS_DIR && t->m.type != LSMFS_DIR)
        return ENOTDIR;
    if (s->m.type != LSMFS_DIR && t->m.type == LSMFS_DIR)
        return EISDIR;
    if (t->m.type != LSMFS_DIR)
        return 0;
    int err = lsmfs_dir_has_children(fs, t->path, t->len, &has);
    return err ? err : has ? ENOTEMPTY : 0;
}

/* A file larger than LSMFS_SMALL_MAX moves without copying its bytes: a writer on the new key
   takes the old value's extents (lsm_value_writer_copy: the map only) and commits with the rename
   batch, so memory and disk writes do not grow with the file (a value copied through the batch
   would be read whole into memory). Its live inode's pending writes are committed first (the
   writer's key is the old path). Not for an exchange: one commit carries one writer. */
static int dir_move_large(struct lsmfs *fs, struct rename_side *s, const struct rename_side *t)
{
    uint64_t size = s->m.size, copied;
    int err = 0;
    if (s->m.type != LSMFS_REG)
        return 0;
    if (s->ino) {
        pthread_mutex_lock(&s->ino->mu);
        if (s->ino->w)
            err = lsmfs_flush_locked(fs, s->ino, 0);
        size = s->ino->data ? 0 : s->ino->m.size;   /* a buffer is small: it moves in the batch */
        pthread_mutex_unlock(&s->ino->mu);
    }
    if (err || size <= LSMFS_SMALL_MAX)
        return err;
    int rc = lsm_value_writer_open(fs->db, t->path, t->len, 0, &s->w);
    if (rc == LSM_OK &&
        (rc = lsm_value_writer_copy(s->w, 0, s->path, s->len, 0, size, &copied)) == LSM_OK)
        rc = lsm_value_writer_truncate(s->w, size);
    if (rc != LSM_OK) {
        lsm_value_writer_abort(s->w);
        s->w = NULL;
        return lsmfs_errno(fs, rc, "rename", s->path);
    }
    return 0;
}

/* Writes the rename as one batch: the moves (both ways for an exchange), the delete of a target
   replaced, and the record of a source directory that would be left empty and implicit. */
static int dir_rename_write(struct lsmfs *fs, struct rename_side *s, struct rename_side *t,
                            int exchange)
{
    size_t bytes = 0, kl;
    int err = exchange ? 0 : dir_move_large(fs, s, t);
    lsm_batch *b = lsm_batch_new();
    for (int phase = 0; phase < 2 && !err; phase++) {
        err = dir_move(fs, b, phase, s, t, &bytes);
        if (!err && exchange) {
            err = dir_move(fs, b, phase, t, s, &bytes);
        } else if (!err && t->m.type != LSMFS_NONE && phase == 0 && s->w) {
            /* the writer's value lands on t's key before the batch: delete only the record */
            char *k = lsmfs_key('a', t->path, t->len, 0, &kl);
            if (k)
                lsm_batch_delete(b, k, kl);
            free(k);
            err = k ? lsmfs_xattr_drop(fs, b, t->path, t->len, t->m.type) : ENOMEM;
        } else if (!err && t->m.type != LSMFS_NONE && phase == 0) {
            dir_add_delete(b, t->path, t->len, t->m.type);
            err = lsmfs_xattr_drop(fs, b, t->path, t->len, t->m.type);
        }
    }
    if (!err) {
        int64_t now = lsmfs_now();
        dir_touch_parent(b, s->parent, now);
        if (t->parent != s->parent)
            dir_touch_parent(b, t->parent, now);
        /* A rename that copies little (a file's value moves with it) may use the reserve on a
           full disk, as a removal does: `mv f .trash/` and replacing a file must still work. */
        if (bytes <= LSMFS_FREES_MAX)
            lsm_batch_set_frees_space(b, 1);
        if (s->w) {
            int rc = lsm_value_writer_commit_batch(s->w, b,
                                                   fs->sync_mode == LSMFS_SYNC_ALWAYS);
            s->w = NULL;
            err = rc == LSM_OK ? 0 : lsmfs_errno(fs, rc, "rename", s->path);
        } else {
            err = lsmfs_write_batch(fs, b, 0);
        }
    }
    lsm_value_writer_abort(s->w);
    s->w = NULL;
    lsm_batch_free(b);
    if (!err) {
        /* subdirectories that changed parent, or that a directory replaced */
        int sd = s->m.type == LSMFS_DIR, td = t->m.type == LSMFS_DIR;
        dir_nsub_add(s->parent, -sd + (exchange ? td : 0));
        dir_nsub_add(t->parent, sd - td);
    }
    return err;
}

/* The values moved were copied to their new keys: the old copies, and a file replaced, are
   garbage for reclaim.c. */
static void dir_rename_reclaim(struct lsmfs *fs, const struct rename_side *s,
                               const struct rename_side *t, int exchange)
{
    if (s->m.type == LSMFS_DIR)
        lsmfs_reclaim_note_tree(fs, s->path, s->len);
    else if (s->m.size >= LSMFS_RECLAIM_MIN)
        lsmfs_reclaim_note(fs, s->path, s->len);
    if (t->m.type == LSMFS_DIR && exchange)
        lsmfs_reclaim_note_tree(fs, t->path, t->len);
    else if (t->m.type != LSMFS_NONE && t->m.type != LSMFS_DIR && t->m.size >= LSMFS_RECLAIM_MIN)
        lsmfs_reclaim_note(fs, t->path, t->len);
}

/* After the batch: the live inodes take their new paths, and a target replaced is buried. */
static void dir_rename_inodes(struct lsmfs *fs, struct rename_side *s, struct rename_side *t,
                              int exchange)
{
    if (exchange) {
        static const char tmp[2] = { '\0', 'x' };   /* can never be a path */
        dir_move_inodes(fs, s->path, s->len, tmp, 2, s->m.type, s->ino);
        dir_move_inodes(fs, t->path, t->len, s->path, s->len, t->m.type, t->ino);
        dir_move_inodes(fs, tmp, 2, t->path, t->len, s->m.type, s->ino);
        dir_moved_clean(t->ino, &t->m);
    } else {
        if (t->m.type != LSMFS_NONE)
            dir_bury(fs, t->ino);
        dir_move_inodes(fs, s->path, s->len, t->path, t->len, s->m.type, s->ino);
    }
    dir_moved_clean(s->ino, &s->m);
}

/* rename(2) of sp/sname to tp/tname, honouring RENAME_NOREPLACE and RENAME_EXCHANGE. fs->ns held
   for writing. */
static int dir_rename(struct lsmfs *fs, struct lsmfs_inode *sp, const char *sname,
                     struct lsmfs_inode *tp, const char *tname, unsigned flags)
{
    struct rename_side s = { .parent = sp }, t = { .parent = tp };
    int exchange = (flags & RENAME_EXCHANGE) != 0;
    int err = dir_child(sp, sname, EINVAL, &s.path, &s.len);
    if (!err)
        err = dir_child(tp, tname, EINVAL, &t.path, &t.len);
    if (!err)
        err = dir_resolve(fs, s.path, s.len, &s.m, &s.ino);
    if (!err && s.m.type == LSMFS_NONE)
        err = ENOENT;
    if (!err)
        err = dir_resolve(fs, t.path, t.len, &t.m, &t.ino);
    if (!err && (flags & RENAME_NOREPLACE) && t.m.type != LSMFS_NONE)
        err = EEXIST;
    if (!err && exchange && t.m.type == LSMFS_NONE)
        err = ENOENT;
    if (err || (s.len == t.len && memcmp(s.path, t.path, s.len) == 0))
        goto out;   /* a rename onto itself does nothing */
    if ((err = dir_rename_check(fs, &s, &t, exchange)))
        goto out;
    if (s.m.type == LSMFS_DIR)
        lsmfs_table_flush_prefix(fs, s.path, s.len);
    if (exchange && t.m.type == LSMFS_DIR)
        lsmfs_table_flush_prefix(fs, t.path, t.len);
    if (t.m.type != LSMFS_NONE && !exchange)
        dir_preserve(fs, t.ino);
    if ((err = dir_rename_write(fs, &s, &t, exchange)))
        goto out;
    dir_rename_reclaim(fs, &s, &t, exchange);
    dir_rename_inodes(fs, &s, &t, exchange);
out:
    free(s.path);
    free(t.path);
    return err;
}

void lsmfs_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                  const char *newname, unsigned int flags)
{
    struct lsmfs *fs = lsmfs_owner(req, parent);
    int err;
    if (flags & ~(unsigned)(RENAME_NOREPLACE | RENAME_EXCHANGE) ||
        ((flags & RENAME_NOREPLACE) && (flags & RENAME_EXCHANGE))) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    pthread_rwlock_wrlock(&fs->ns);
    err = dir_rename(fs, lsmfs_ino(fs, parent), name, lsmfs_ino(fs, newparent), newname, flags);
    pthread_rwlock_unlock(&fs->ns);
    fuse_reply_err(req, err);
}

/* ---- directories ---- */

/* One listing pass over directory dir: two iterators, data keys below dir and directory records
   below dir, merged in key order. A child's position is its name for a file and its name plus '/'
   for a directory, so the order is the key order of both streams. */
struct dir_lister {
    lsm_iter *di, *ri;           /* data keys, directory records; one request's, like all below */
    const char *dpath;           /* the directory's path (borrowed; fs->ns pins it) */
    size_t dplen;                /* strlen(dpath) */
    char *dpre, *rpre;           /* dpath "/" (or "" for the root), "\0d" dpath "/" (or "\0d") */
    size_t dprelen, rprelen;     /* their lengths */
    char *kbuf;                  /* scratch for building keys */
    size_t kcap;                 /* bytes allocated at kbuf */
};

/* pre followed by s, in the lister's scratch buffer (valid until its next use). */
static char *dir_lister_key(struct dir_lister *l, const char *pre, size_t prelen, const char *s,
                            size_t sl, size_t *kl)
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
static void dir_lister_seek(struct dir_lister *l, const char *s, size_t sl, int which)
{
    size_t kl;
    char *k;
    if (which & 1) {
        if (l->dplen == 0 && sl == 0)
            lsm_iter_seek(l->di, "\x01", 1);   /* keys starting with NUL are reserved */
        else if ((k = dir_lister_key(l, l->dpre, l->dprelen, s, sl, &kl)))
            lsm_iter_seek(l->di, k, kl);
    }
    if ((which & 2) && (k = dir_lister_key(l, l->rpre, l->rprelen, s, sl, &kl)))
        lsm_iter_seek(l->ri, k, kl);
}

static const char *dir_lister_suffix(lsm_iter *it, const char *pre, size_t prelen, size_t *sl)
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

/* Next child: its name (copied to name, NUL-terminated) and whether it is a directory. Fills
   next/nextlen with the position after it (the cursor). Returns 0 with *end set at the end, or an
   errno. */
static int dir_lister_next(struct lsmfs *fs, struct dir_lister *l, char *name, int *isdir,
                           char *next,
                       size_t *nextlen, int *end)
{
    *end = 0;
    for (;;) {
        size_t dsl = 0, rsl = 0;
        const char *ds = dir_lister_suffix(l->di, l->dpre, l->dprelen, &dsl);
        const char *rs = dir_lister_suffix(l->ri, l->rpre, l->rprelen, &rsl);
        if (l->dplen == 0 && ds && dsl > 0 && ds[0] == '\0')
            ds = NULL;   /* root listing reached the reserved namespace (cannot happen) */
        if (!ds && !rs) {
            int rc = lsm_iter_status(l->di);
            if (rc == LSM_OK)
                rc = lsm_iter_status(l->ri);
            *end = 1;
            return rc == LSM_OK ? 0 : lsmfs_errno(fs, rc, "list", l->dpath);
        }
        const char *s = ds;
        size_t sl = dsl;
        if (!ds || (rs && lsmfs_key_cmp(rs, rsl, ds, dsl) < 0)) {
            s = rs;
            sl = rsl;
        }
        const char *slash = memchr(s, '/', sl);
        size_t nl = slash ? (size_t)(slash - s) : sl;
        int ok = lsmfs_name_check(s, nl) == 0;
        if (ok) {
            memcpy(name, s, nl);
            name[nl] = '\0';
        }
        if (slash) {
            /* a directory: skip everything below it in both streams */
            memcpy(next, s, nl);
            next[nl] = '0';   /* '/' + 1 */
            *nextlen = nl + 1;
            dir_lister_seek(l, next, *nextlen, (ds ? 1 : 0) | (rs ? 2 : 0));
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
            char *k = dir_lister_key(l, l->dpre, l->dprelen, name, nl, &kl);
            if (k && lsm_get_size(fs->db, k, kl, &sz) == LSM_OK)
                continue;
        }
        return 0;
    }
}

static int dir_lister_open(struct lsmfs *fs, struct dir_lister *l, struct lsmfs_inode *dir)
{
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
        return ENOMEM;
    int rc = lsm_iter_new(fs->db, &l->di);
    if (rc == LSM_OK)
        rc = lsm_iter_new(fs->db, &l->ri);
    return rc == LSM_OK ? 0 : lsmfs_errno(fs, rc, "list", dir->path);
}

static void dir_lister_close(struct dir_lister *l)
{
    lsm_iter_free(l->di);
    lsm_iter_free(l->ri);
    free(l->dpre);
    free(l->rpre);
    free(l->kbuf);
}

/* Counts the subdirectories of dir once, for its st_nlink, unless it holds more than
   DIR_COUNT_MAX children: that many stay uncounted (st_nlink 1, as find(1) and fts(3) know it:
   "the count is not kept"), so that a stat never costs a long listing pass. fs->ns held (for
   reading at least), no inode mutex. */
#define DIR_COUNT_MAX 4096
int lsmfs_dir_count(struct lsmfs *fs, struct lsmfs_inode *dir)
{
    struct dir_lister l;
    char name[LSMFS_NAME_MAX + 1], next[LSMFS_NAME_MAX + 2];
    size_t nextlen = 0, seen = 0;
    int isdir = 0, end = 0;
    int64_t n = 0;
    pthread_mutex_lock(&dir->mu);
    int need = dir->m.type == LSMFS_DIR && dir->nsub == -1 && !dir->deleted;
    pthread_mutex_unlock(&dir->mu);
    if (!need)
        return 0;
    int err = dir_lister_open(fs, &l, dir);
    if (!err)
        dir_lister_seek(&l, "", 0, 3);
    while (!err && !(err = dir_lister_next(fs, &l, name, &isdir, next, &nextlen, &end)) && !end) {
        n += isdir;
        if (++seen > DIR_COUNT_MAX) {
            n = -2;
            break;
        }
    }
    dir_lister_close(&l);
    if (err)
        return err;
    pthread_mutex_lock(&dir->mu);
    if (dir->nsub == -1)
        dir->nsub = n;
    pthread_mutex_unlock(&dir->mu);
    return 0;
}

void lsmfs_opendir(fuse_req_t req, fuse_ino_t n, struct fuse_file_info *fi)
{
    struct lsmfs *fs = lsmfs_owner(req, n);
    if (fs->no_opendir) {
        /* "success, and do not ask again": the kernel opens directories itself from now on,
           keeping and caching listings as below, and sends no RELEASEDIR */
        fuse_reply_err(req, ENOSYS);
        return;
    }
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

void lsmfs_releasedir(fuse_req_t req, fuse_ino_t n, struct fuse_file_info *fi)
{
    struct lsmfs_dirh *d = (struct lsmfs_dirh *)(uintptr_t)fi->fh;
    pthread_mutex_destroy(&d->mu);
    free(d->cursor);
    free(d);
    fuse_reply_err(req, 0);
}

/* The record of name in dir (a directory's when isdir), for its inode number and whether it is a
   symlink (d_type); name ".." gives dir's parent. Only the record is read. */
static int dir_entry_record(struct lsmfs *fs, struct lsmfs_inode *dir, const char *name,
                            int isdir, struct lsmfs_meta *m)
{
    size_t plen;
    int found, err;
    char *path = NULL;
    if (strcmp(name, "..") == 0) {
        const char *slash = memrchr(dir->path, '/', dir->plen);
        return lsmfs_read_record(fs, dir->path, slash ? (size_t)(slash - dir->path) : 0,
                                 LSMFS_DIR, m, &found);
    }
    if ((err = lsmfs_child_path(dir, name, &path, &plen)))
        return err;
    err = lsmfs_read_record(fs, path, plen, isdir ? LSMFS_DIR : LSMFS_REG, m, &found);
    free(path);
    return err;
}

/* One READDIR or READDIRPLUS request: the reply being filled. Belongs to that request. */
struct dir_fill {
    fuse_req_t req;
    struct lsmfs *fs;
    struct lsmfs_inode *dir;     /* the directory listed */
    int     plus;                /* READDIRPLUS: entries carry attributes and a lookup reference */
    char   *buf;                 /* the reply, size bytes */
    size_t  size, pos;           /* capacity of buf, bytes used */
};

/* What a plain READDIR says of an entry: its type, and its st_ino (d_ino), which is the one
   LOOKUP gives. "." and ".." show the directory itself, with the parent's number for "..". */
static void dir_plain_stat(struct dir_fill *f, const char *nm, int isdir, int is_dot,
                           struct stat *st)
{
    struct lsmfs_meta m;
    memset(st, 0, sizeof *st);
    st->st_mode = isdir ? S_IFDIR : S_IFREG;
    if (is_dot) {
        pthread_mutex_lock(&f->dir->mu);
        lsmfs_meta_to_stat(f->dir, st);
        pthread_mutex_unlock(&f->dir->mu);
    }
    if ((!is_dot || nm[1] == '.') && dir_entry_record(f->fs, f->dir, nm, isdir, &m) == 0) {
        st->st_ino = m.ino ^ f->fs->ino_salt;
        if (!isdir && m.type != LSMFS_DIR)
            st->st_mode = m.mode & S_IFMT;  /* a symlink, FIFO, socket or device node */
    }
}

/* Adds the entry nm, at offset off, to the reply; sets *full instead when it does not fit. An
   entry READDIRPLUS cannot look up any more (hidden or gone) is left out. */
static int dir_fill_entry(struct dir_fill *f, const char *nm, int isdir, int is_dot, off_t off,
                          int *full)
{
    struct fuse_entry_param e;
    size_t need = f->plus ? fuse_add_direntry_plus(f->req, NULL, 0, nm, NULL, 0)
                          : fuse_add_direntry(f->req, NULL, 0, nm, NULL, 0);
    if (f->pos + need > f->size) {
        *full = 1;
        return 0;
    }
    if (f->plus && !is_dot) {
        struct lsmfs_inode *ino;
        int err = lsmfs_dir_lookup(f->fs, f->dir, nm, &ino);
        if (err)
            return err == ENOENT ? 0 : err;
        lsmfs_fill_entry(f->fs, ino, &e);
    } else {
        memset(&e, 0, sizeof e);
        dir_plain_stat(f, nm, isdir, is_dot, &e.attr);
    }
    if (f->plus)
        f->pos += fuse_add_direntry_plus(f->req, f->buf + f->pos, f->size - f->pos, nm, &e, off);
    else
        f->pos += fuse_add_direntry(f->req, f->buf + f->pos, f->size - f->pos, nm, &e.attr, off);
    return 0;
}

/* The handle stands at the start of the listing, before ".". d->mu held. */
static void dir_handle_reset(struct lsmfs_dirh *d)
{
    free(d->cursor);
    d->cursor = NULL;
    d->clen = 0;
    d->dots = 0;
    d->last = 0;
    d->eof = 0;
}

/* The listing resumes after the entry whose cursor is next. d->mu held. */
static int dir_handle_advance(struct lsmfs_dirh *d, const char *next, size_t nextlen)
{
    char *c = realloc(d->cursor, nextlen ? nextlen : 1);
    if (!c)
        return ENOMEM;
    memcpy(c, next, nextlen);
    d->cursor = c;
    d->clen = nextlen;
    return 0;
}

/* The cursor after the child whose d_off is cookie, found by a pass over dir: what cookie.c no
   longer has, when that child is still there. Sets *found; fs->ns held. */
static int dir_find_cookie(struct lsmfs *fs, struct lsmfs_inode *dir, off_t cookie,
                           struct lsmfs_dirh *d, int *found)
{
    struct dir_lister l;
    char name[LSMFS_NAME_MAX + 1], next[LSMFS_NAME_MAX + 2];
    size_t nextlen = 0;
    int isdir, end = 0;
    int err = dir_lister_open(fs, &l, dir);
    *found = 0;
    if (!err)
        dir_lister_seek(&l, "", 0, 3);
    while (!err && !*found &&
           !(err = dir_lister_next(fs, &l, name, &isdir, next, &nextlen, &end)) && !end)
        if (lsmfs_cookie_hash(next, nextlen) == cookie) {
            *found = 1;
            err = dir_handle_advance(d, next, nextlen);
        }
    dir_lister_close(&l);
    return err;
}

/* Places handle d for a request at offset off: after the entry whose d_off is off (0 is the
   start, 1 after ".", 2 after ".."; see cookie.c). The handle knows where it stopped; any other
   offset (the kernel consumed part of a reply, its cached listing was dropped midway, a seekdir,
   a listing that another open began) is mapped back by cookie.c, or found by a pass. A cookie
   neither knows (its child is gone, and the table let it go) restarts the names: they repeat
   rather than being skipped. d->mu and fs->ns held. */
static int dir_handle_seek(struct lsmfs *fs, struct lsmfs_inode *dir, struct lsmfs_dirh *d,
                           off_t off)
{
    char *cur;
    size_t clen;
    int err, found;
    if (off < 0)
        return EINVAL;
    if (off != 0 && off == d->last)
        return 0;
    dir_handle_reset(d);
    d->dots = off < 2 ? (int)off : 2;
    if (off < 3)
        return 0;
    d->last = off;
    if ((err = lsmfs_cookie_find(fs, dir->path, dir->plen, off, &cur, &clen)) == 0) {
        d->cursor = cur;
        d->clen = clen;
        return 0;
    }
    if (err != ENOENT || (err = dir_find_cookie(fs, dir, off, d, &found)))
        return err;
    if (!found)
        lsmfs_log(LOG_NOTICE, "listing %s/ again from its first name: offset %lld is unknown",
                  dir->path, (long long)off);
    return 0;
}

/* Fills f from where handle d stands ("." and ".." first, then the lister's children), until
   the reply is full or the directory ends. Each child's d_off is the cookie of the cursor after
   it. d->mu and fs->ns held. */
static int dir_fill(struct dir_fill *f, struct lsmfs_dirh *d)
{
    struct dir_lister l;
    char name[LSMFS_NAME_MAX + 1], next[LSMFS_NAME_MAX + 2];
    size_t nextlen = 0;
    int isdir = 0, end = 0, full = 0;
    int err = dir_lister_open(f->fs, &l, f->dir);
    if (!err)
        dir_lister_seek(&l, d->cursor ? d->cursor : "", d->clen, 3);
    while (!err) {
        int is_dot = d->dots < 2;
        const char *nm = d->dots == 0 ? "." : "..";
        off_t off = d->dots + 1;
        if (is_dot)
            isdir = 1;
        else if ((err = dir_lister_next(f->fs, &l, name, &isdir, next, &nextlen, &end)) || end)
            break;
        else {
            nm = name;
            off = lsmfs_cookie_make(f->fs, f->dir->path, f->dir->plen, next, nextlen);
        }
        size_t pos = f->pos;
        if ((err = dir_fill_entry(f, nm, isdir, is_dot, off, &full)) || full)
            break;   /* full: this entry comes first next time */
        if (f->pos > pos)
            d->last = off;
        if (is_dot)
            d->dots++;
        else
            err = dir_handle_advance(d, next, nextlen);
    }
    if (!err && end)
        d->eof = 1;
    dir_lister_close(&l);
    return err;
}

/* READDIR and READDIRPLUS: off is the d_off of the entry after which the kernel wants more. */
static void dir_readdir(fuse_req_t req, fuse_ino_t n, size_t size, off_t off,
                       struct fuse_file_info *fi, int plus)
{
    struct lsmfs *fs = lsmfs_owner(req, n);
    struct lsmfs_dirh *d = (struct lsmfs_dirh *)(uintptr_t)fi->fh, own;
    if (!d) {
        /* opened by the kernel alone (fs->no_opendir): a handle for this request, placed by the
           offset through cookie.c */
        memset(&own, 0, sizeof own);
        pthread_mutex_init(&own.mu, NULL);
        d = &own;
    }
    struct dir_fill f = { .req = req, .fs = fs, .dir = lsmfs_ino(fs, n), .plus = plus,
                          .buf = malloc(size), .size = size };
    int err = 0;
    if (!f.buf) {
        if (d == &own)
            pthread_mutex_destroy(&own.mu);
        fuse_reply_err(req, ENOMEM);
        return;
    }
    pthread_rwlock_rdlock(&fs->ns);
    pthread_mutex_lock(&d->mu);
    err = dir_handle_seek(fs, f.dir, d, off);
    if (!err && !d->eof)
        err = dir_fill(&f, d);
    pthread_mutex_unlock(&d->mu);
    pthread_rwlock_unlock(&fs->ns);
    if (err && f.pos == 0)
        fuse_reply_err(req, err);
    else
        fuse_reply_buf(req, f.buf, f.pos);
    free(f.buf);
    if (d == &own) {
        pthread_mutex_destroy(&own.mu);
        free(own.cursor);
    }
}

void lsmfs_readdir(fuse_req_t req, fuse_ino_t n, size_t size, off_t off,
                          struct fuse_file_info *fi)
{
    dir_readdir(req, n, size, off, fi, 0);
}

void lsmfs_readdirplus(fuse_req_t req, fuse_ino_t n, size_t size, off_t off,
                              struct fuse_file_info *fi)
{
    dir_readdir(req, n, size, off, fi, 1);
}

void lsmfs_fsyncdir(fuse_req_t req, fuse_ino_t n, int datasync, struct fuse_file_info *fi)
{
    struct lsmfs *fs = lsmfs_owner(req, n);
    int rc = lsm_sync(fs->db);
    fuse_reply_err(req, rc == LSM_OK ? 0 : lsmfs_errno(fs, rc, "sync", "directory"));
}
