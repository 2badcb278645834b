/*
 * view.c — snapshots you can cd into: MOUNTPOINT/.snapshots/NAME is the snapshot NAME (made by
 * lsmctl snapshot create, kept in DATADIR/snapshots/NAME), read-only, as ZFS shows .zfs/snapshot.
 *
 * What: the table of callbacks libfuse calls (lsmfs_ops) sits in front of the callbacks proper
 * (lsmfs_base_ops). It serves the virtual directory .snapshots of the root (reachable by name,
 * not listed, as .zfs is), opens a snapshot the first time a name below it is looked up — a
 * second struct lsmfs, a "view", with its own read-only database handle and inode table — and
 * refuses every change inside a view (EROFS). Everything else goes to the callbacks proper,
 * which find the file system a request works on from its inode (lsmfs_owner): each inode knows
 * the one it belongs to.
 *
 * Why so: a snapshot is a database of its own (hard links to the tables of its moment), so the
 * same code that serves the live tree serves it unchanged, and a view costs nothing until used.
 * Its files show st_ino xored with a number of the snapshot's name, so that a file and its
 * snapshot copy never look like one file (one st_dev serves the whole mount).
 *
 * Never: let a request on a view change its database (it is opened read-only anyway); free a
 * view before the session has ended (the kernel may hold its inodes until then).
 */
#include "lsmfs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#define VIEW_DIR_NAME ".snapshots"

struct lsmfs_view {
    char *name;                  /* the snapshot's name; constant */
    struct lsmfs *fs;            /* its file system; constant */
    struct lsmfs_view *next;
};

struct lsmfs_views {
    pthread_mutex_t mu;          /* guards list and dir->nlookup */
    struct lsmfs_inode *dir;     /* .snapshots: a node of the live file system, in no table */
    struct lsmfs_view *list;     /* views opened so far; guarded by mu */
};

struct lsmfs *lsmfs_owner(fuse_req_t req, fuse_ino_t n)
{
    struct lsmfs *fs = fuse_req_userdata(req);
    return n == FUSE_ROOT_ID ? fs : ((struct lsmfs_inode *)(uintptr_t)n)->fs;
}

static struct lsmfs_inode *view_node(fuse_ino_t n)
{
    return n == FUSE_ROOT_ID ? NULL : (struct lsmfs_inode *)(uintptr_t)n;
}

/* Whether n is the .snapshots directory. */
static int view_is_dir(fuse_ino_t n)
{
    struct lsmfs_inode *ino = view_node(n);
    return ino && ino->snapdir;
}

/* Whether a request on n may not change anything: .snapshots or anything in a snapshot. */
static int view_read_only(fuse_req_t req, fuse_ino_t n)
{
    return view_is_dir(n) || lsmfs_owner(req, n)->live != NULL;
}

static int view_is_root_name(fuse_ino_t parent, const char *name)
{
    return parent == FUSE_ROOT_ID && strcmp(name, VIEW_DIR_NAME) == 0;
}

static uint64_t view_salt(const char *name)
{
    uint64_t h = 1469598103934665603ull;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    return (h & 0x3fffff0000000000ull) | (1ull << 62);
}

static struct lsmfs_views *view_state(struct lsmfs *fs)
{
    return fs->views;
}

int lsmfs_views_init(struct lsmfs *fs)
{
    struct lsmfs_views *vs = calloc(1, sizeof *vs);
    struct lsmfs_inode *d = calloc(1, sizeof *d);
    char *p = strdup("\x01" "snapshots");
    if (!vs || !d || !p) {
        free(vs);
        free(d);
        free(p);
        return ENOMEM;
    }
    pthread_mutex_init(&vs->mu, NULL);
    pthread_mutex_init(&d->mu, NULL);
    d->fs = fs;
    d->snapdir = 1;
    d->path = p;
    d->plen = strlen(p);
    lsmfs_meta_default(fs, &d->m, LSMFS_DIR);
    d->m.mode = S_IFDIR | 0555;
    d->m.ino = lsmfs_ino_derived(p, d->plen);
    d->nsub = 0;
    vs->dir = d;
    fs->views = vs;
    return 0;
}

/* The attributes of .snapshots: its times are those of DATADIR/snapshots, which change as
   snapshots come and go, so that the kernel drops a listing it cached. */
static void view_dir_stat(struct lsmfs *fs, struct stat *st)
{
    struct lsmfs_inode *d = view_state(fs)->dir;
    char path[PATH_MAX];
    struct stat ds;
    snprintf(path, sizeof path, "%s/snapshots", fs->datadir);
    pthread_mutex_lock(&d->mu);
    if (stat(path, &ds) == 0) {
        d->m.mtime_ns = (int64_t)ds.st_mtim.tv_sec * 1000000000 + ds.st_mtim.tv_nsec;
        d->m.ctime_ns = (int64_t)ds.st_ctim.tv_sec * 1000000000 + ds.st_ctim.tv_nsec;
    }
    lsmfs_meta_to_stat(d, st);
    pthread_mutex_unlock(&d->mu);
}

int lsmfs_fs_open(struct lsmfs *fs)
{
    pthread_rwlock_init(&fs->ns, NULL);
    pthread_mutex_init(&fs->tmu, NULL);
    pthread_mutex_init(&fs->bmu, NULL);
    pthread_mutex_init(&fs->pool_mu, NULL);
    pthread_mutex_init(&fs->handles_mu, NULL);
    int rc = lsmfs_table_init(fs);
    if (rc == 0 && lsmfs_cookies_init(fs) != 0)
        rc = ENOMEM;
    if (rc) {
        lsmfs_table_free(fs);
        lsmfs_iter_pool_free(fs);
    }
    return rc;
}

int lsmfs_fs_close(struct lsmfs *fs)
{
    lsmfs_handles_free(fs);
    lsmfs_table_free(fs);
    lsmfs_cookies_free(fs);
    lsmfs_iter_pool_free(fs);
    int rc = lsm_close(fs->db);
    fs->db = NULL;
    return rc;
}

/* Opens the snapshot name as a view: its database read-only, its inode table. */
static int view_load(struct lsmfs *live, const char *name, struct lsmfs **out)
{
    struct lsmfs *v = calloc(1, sizeof *v);
    if (!v)
        return ENOMEM;
    if (asprintf(&v->datadir, "%s/snapshots/%s", live->datadir, name) < 0) {
        free(v);
        return ENOMEM;
    }
    v->live = live;
    v->se = live->se;
    v->ino_salt = view_salt(name);
    v->read_only = 1;
    v->timeout = live->timeout;
    v->uid = live->uid;
    v->gid = live->gid;
    v->mount_ns = live->mount_ns;
    v->max_file_size = live->max_file_size;
    v->dirty_limit = live->dirty_limit;
    v->kernel_cache = live->kernel_cache;
    v->close_to_open = live->close_to_open;
    v->cookie_bytes = live->cookie_bytes / 16;
    lsm_options *lo = lsm_options_new();
    int rc = lo ? LSM_OK : LSM_NOMEM;
    if (lo) {
        lsm_options_set_read_only(lo, 1);
        lsm_options_set_create_if_missing(lo, 0);
        lsm_options_set_cache_bytes(lo, 1u << 20);
        rc = lsm_open(v->datadir, lo, &v->db);
        lsm_options_free(lo);
    }
    if (rc != LSM_OK) {
        lsmfs_log(LOG_WARNING, "snapshot %s: %s", name, lsm_errmsg(NULL));
        free(v->datadir);
        free(v);
        return rc == LSM_NOMEM ? ENOMEM : ENOENT;
    }
    if ((rc = lsmfs_fs_open(v))) {
        lsm_close(v->db);
        free(v->datadir);
        free(v);
        return rc;
    }
    *out = v;
    return 0;
}

static void view_close(struct lsmfs *v)
{
    lsmfs_fs_close(v);
    free(v->datadir);
    free(v);
}

void lsmfs_views_close(struct lsmfs *fs)
{
    struct lsmfs_views *vs = view_state(fs);
    if (!vs)
        return;
    for (struct lsmfs_view *w = vs->list, *next; w; w = next) {
        next = w->next;
        view_close(w->fs);
        free(w->name);
        free(w);
    }
    pthread_mutex_destroy(&vs->dir->mu);
    free(vs->dir->path);
    free(vs->dir);
    pthread_mutex_destroy(&vs->mu);
    free(vs);
    fs->views = NULL;
}

/* Whether name is a snapshot now (DATADIR/snapshots/name holds a database). */
static int view_exists(struct lsmfs *fs, const char *name)
{
    char path[PATH_MAX];
    if (!*name || strchr(name, '/') || strcmp(name, ".") == 0 || strcmp(name, "..") == 0 ||
        snprintf(path, sizeof path, "%s/snapshots/%s/CURRENT", fs->datadir, name) >=
            (int)sizeof path)
        return 0;
    return access(path, F_OK) == 0;
}

/* The view of snapshot name, opened if needed; 0 or an errno. */
static int view_get(struct lsmfs *fs, const char *name, struct lsmfs **out)
{
    struct lsmfs_views *vs = view_state(fs);
    if (!view_exists(fs, name))
        return ENOENT;
    pthread_mutex_lock(&vs->mu);
    struct lsmfs_view *w = vs->list;
    while (w && strcmp(w->name, name) != 0)
        w = w->next;
    int rc = 0;
    if (!w) {
        struct lsmfs *v = NULL;
        if ((rc = view_load(fs, name, &v)) == 0) {
            if (!(w = calloc(1, sizeof *w)) || !(w->name = strdup(name))) {
                free(w);
                view_close(v);
                rc = ENOMEM;
            } else {
                w->fs = v;
                w->next = vs->list;
                vs->list = w;
            }
        }
    }
    pthread_mutex_unlock(&vs->mu);
    if (rc == 0)
        *out = w->fs;
    return rc;
}

/* Replies to a lookup with .snapshots (one more lookup reference). */
static void view_reply_dir(fuse_req_t req, struct lsmfs *fs)
{
    struct lsmfs_views *vs = view_state(fs);
    struct fuse_entry_param e;
    memset(&e, 0, sizeof e);
    e.ino = (fuse_ino_t)(uintptr_t)vs->dir;
    e.generation = 1;
    view_dir_stat(fs, &e.attr);     /* no caching: snapshots come and go behind the kernel */
    pthread_mutex_lock(&vs->mu);
    vs->dir->nlookup++;
    pthread_mutex_unlock(&vs->mu);
    fuse_reply_entry(req, &e);
}

/* Replies to a lookup of a snapshot's root (one more lookup reference on it). */
static void view_reply_root(fuse_req_t req, struct lsmfs *v)
{
    struct fuse_entry_param e;
    pthread_mutex_lock(&v->tmu);
    v->root->nlookup++;
    pthread_mutex_unlock(&v->tmu);
    lsmfs_fill_entry(v, v->root, &e);
    e.entry_timeout = 0;
    fuse_reply_entry(req, &e);
}

static void view_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct lsmfs *fs = fuse_req_userdata(req);
    if (view_is_root_name(parent, name)) {
        view_reply_dir(req, fs);
    } else if (view_is_dir(parent)) {
        struct lsmfs *v;
        int rc = view_get(fs, name, &v);
        if (rc)
            fuse_reply_err(req, rc);
        else
            view_reply_root(req, v);
    } else {
        lsmfs_base_ops.lookup(req, parent, name);
    }
}

static void view_forget_one(fuse_req_t req, fuse_ino_t n, uint64_t nlookup)
{
    if (view_is_dir(n)) {
        struct lsmfs_views *vs = view_state(fuse_req_userdata(req));
        pthread_mutex_lock(&vs->mu);
        vs->dir->nlookup = vs->dir->nlookup > nlookup ? vs->dir->nlookup - nlookup : 0;
        pthread_mutex_unlock(&vs->mu);
    } else {
        struct lsmfs *fs = lsmfs_owner(req, n);
        lsmfs_table_forget(fs, lsmfs_ino(fs, n), nlookup);
    }
}

static void view_forget(fuse_req_t req, fuse_ino_t n, uint64_t nlookup)
{
    view_forget_one(req, n, nlookup);
    fuse_reply_none(req);
}

static void view_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
    for (size_t i = 0; i < count; i++)
        view_forget_one(req, forgets[i].ino, forgets[i].nlookup);
    fuse_reply_none(req);
}

static void view_getattr(fuse_req_t req, fuse_ino_t n, struct fuse_file_info *fi)
{
    if (!view_is_dir(n)) {
        lsmfs_base_ops.getattr(req, n, fi);
        return;
    }
    struct stat st;
    view_dir_stat(fuse_req_userdata(req), &st);
    fuse_reply_attr(req, &st, 0);
}

static void view_access(fuse_req_t req, fuse_ino_t n, int mask)
{
    if (view_read_only(req, n) && (mask & W_OK))
        fuse_reply_err(req, EROFS);
    else if (view_is_dir(n))
        fuse_reply_err(req, 0);
    else
        lsmfs_base_ops.access(req, n, mask);
}

/* ---- listing .snapshots ---- */

/* The snapshot names, sorted (*names: n malloc'd strings; caller frees both). */
static int view_names(struct lsmfs *fs, char ***names, int *n)
{
    char path[PATH_MAX];
    struct dirent **ents = NULL;
    snprintf(path, sizeof path, "%s/snapshots", fs->datadir);
    int m = scandir(path, &ents, NULL, alphasort);
    *names = NULL;
    *n = 0;
    if (m < 0)
        return errno == ENOENT ? 0 : errno;
    char **v = calloc((size_t)m + 1, sizeof *v);
    for (int i = 0; i < m; i++) {
        if (v && view_exists(fs, ents[i]->d_name))
            v[(*n)++] = strdup(ents[i]->d_name);
        free(ents[i]);
    }
    free(ents);
    *names = v;
    return v ? 0 : ENOMEM;
}

/* READDIR and READDIRPLUS of .snapshots: ".", "..", then the names; offsets are positions. */
static void view_readdir_dir(fuse_req_t req, size_t size, off_t off, int plus)
{
    struct lsmfs *fs = fuse_req_userdata(req);
    char **names;
    int n, err = view_names(fs, &names, &n);
    char *buf = err ? NULL : malloc(size);
    size_t pos = 0;
    if (!err && !buf)
        err = ENOMEM;
    for (off_t i = off; !err && i < n + 2; i++) {
        const char *nm = i == 0 ? "." : i == 1 ? ".." : names[i - 2];
        struct fuse_entry_param e;
        struct lsmfs *v = NULL;
        memset(&e, 0, sizeof e);
        if (i == 0)
            view_dir_stat(fs, &e.attr);
        else if (i == 1)
            lsmfs_meta_to_stat(fs->root, &e.attr);
        else if (plus && view_get(fs, nm, &v) == 0)
            lsmfs_fill_entry(v, v->root, &e);
        else
            e.attr.st_mode = S_IFDIR;
        size_t need = plus ? fuse_add_direntry_plus(req, buf + pos, size - pos, nm, &e, i + 1)
                           : fuse_add_direntry(req, buf + pos, size - pos, nm, &e.attr, i + 1);
        if (need > size - pos)
            break;
        if (plus && v) {                /* the entry holds a lookup reference now */
            pthread_mutex_lock(&v->tmu);
            v->root->nlookup++;
            pthread_mutex_unlock(&v->tmu);
        }
        pos += need;
    }
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
    if (err)
        fuse_reply_err(req, err);
    else
        fuse_reply_buf(req, buf, pos);
    free(buf);
}

static void view_opendir(fuse_req_t req, fuse_ino_t n, struct fuse_file_info *fi)
{
    if (view_is_dir(n)) {
        fi->fh = 0;
        fuse_reply_open(req, fi);
    } else {
        lsmfs_base_ops.opendir(req, n, fi);
    }
}

static void view_readdir(fuse_req_t req, fuse_ino_t n, size_t size, off_t off,
                         struct fuse_file_info *fi)
{
    if (view_is_dir(n))
        view_readdir_dir(req, size, off, 0);
    else
        lsmfs_base_ops.readdir(req, n, size, off, fi);
}

static void view_readdirplus(fuse_req_t req, fuse_ino_t n, size_t size, off_t off,
                             struct fuse_file_info *fi)
{
    if (view_is_dir(n))
        view_readdir_dir(req, size, off, 1);
    else
        lsmfs_base_ops.readdirplus(req, n, size, off, fi);
}

static void view_releasedir(fuse_req_t req, fuse_ino_t n, struct fuse_file_info *fi)
{
    if (view_is_dir(n))
        fuse_reply_err(req, 0);
    else
        lsmfs_base_ops.releasedir(req, n, fi);
}

/* ---- what a view refuses ---- */

/* The errno for a change at name in parent that touches .snapshots or a view, else 0. */
static int view_refuse_at(fuse_req_t req, fuse_ino_t parent, const char *name, int creating)
{
    if (view_is_root_name(parent, name))
        return creating ? EEXIST : EBUSY;   /* the name is taken, and cannot go */
    return view_read_only(req, parent) ? EROFS : 0;
}

static void view_setattr(fuse_req_t req, fuse_ino_t n, struct stat *attr, int to_set,
                         struct fuse_file_info *fi)
{
    if (view_read_only(req, n))
        fuse_reply_err(req, EROFS);
    else
        lsmfs_base_ops.setattr(req, n, attr, to_set, fi);
}

static void view_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                       dev_t rdev)
{
    int err = view_refuse_at(req, parent, name, 1);
    if (err)
        fuse_reply_err(req, err);
    else
        lsmfs_base_ops.mknod(req, parent, name, mode, rdev);
}

static void view_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
    int err = view_refuse_at(req, parent, name, 1);
    if (err)
        fuse_reply_err(req, err);
    else
        lsmfs_base_ops.mkdir(req, parent, name, mode);
}

static void view_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
    int err = view_refuse_at(req, parent, name, 1);
    if (err)
        fuse_reply_err(req, err);
    else
        lsmfs_base_ops.symlink(req, link, parent, name);
}

static void view_link(fuse_req_t req, fuse_ino_t n, fuse_ino_t newparent, const char *newname)
{
    int err = view_refuse_at(req, newparent, newname, 1);
    if (!err && view_read_only(req, n))
        err = EROFS;
    if (err)
        fuse_reply_err(req, err);
    else
        lsmfs_base_ops.link(req, n, newparent, newname);
}

static void view_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    int err = view_refuse_at(req, parent, name, 0);
    if (err)
        fuse_reply_err(req, err);
    else
        lsmfs_base_ops.unlink(req, parent, name);
}

static void view_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    int err = view_refuse_at(req, parent, name, 0);
    if (err)
        fuse_reply_err(req, err);
    else
        lsmfs_base_ops.rmdir(req, parent, name);
}

static void view_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                        const char *newname, unsigned int flags)
{
    int err = view_refuse_at(req, parent, name, 0);
    if (!err)
        err = view_refuse_at(req, newparent, newname, 0);
    if (err)
        fuse_reply_err(req, err);
    else
        lsmfs_base_ops.rename(req, parent, name, newparent, newname, flags);
}

static void view_open(fuse_req_t req, fuse_ino_t n, struct fuse_file_info *fi)
{
    if (view_read_only(req, n) && ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)))
        fuse_reply_err(req, EROFS);
    else
        lsmfs_base_ops.open(req, n, fi);
}

static void view_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                        struct fuse_file_info *fi)
{
    int err = view_refuse_at(req, parent, name, 1);
    if (err)
        fuse_reply_err(req, err);
    else
        lsmfs_base_ops.create(req, parent, name, mode, fi);
}

static void view_write(fuse_req_t req, fuse_ino_t n, const char *buf, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    if (view_read_only(req, n))
        fuse_reply_err(req, EROFS);
    else
        lsmfs_base_ops.write(req, n, buf, size, off, fi);
}

static void view_setxattr(fuse_req_t req, fuse_ino_t n, const char *name, const char *value,
                          size_t size, int flags)
{
    if (view_read_only(req, n))
        fuse_reply_err(req, EROFS);
    else
        lsmfs_base_ops.setxattr(req, n, name, value, size, flags);
}

static void view_removexattr(fuse_req_t req, fuse_ino_t n, const char *name)
{
    if (view_read_only(req, n))
        fuse_reply_err(req, EROFS);
    else
        lsmfs_base_ops.removexattr(req, n, name);
}

static void view_getxattr(fuse_req_t req, fuse_ino_t n, const char *name, size_t size)
{
    if (view_is_dir(n))
        fuse_reply_err(req, ENODATA);
    else
        lsmfs_base_ops.getxattr(req, n, name, size);
}

static void view_listxattr(fuse_req_t req, fuse_ino_t n, size_t size)
{
    if (view_is_dir(n))
        size ? fuse_reply_buf(req, NULL, 0) : fuse_reply_xattr(req, 0);
    else
        lsmfs_base_ops.listxattr(req, n, size);
}

static void view_fallocate(fuse_req_t req, fuse_ino_t n, int mode, off_t off, off_t len,
                           struct fuse_file_info *fi)
{
    if (view_read_only(req, n))
        fuse_reply_err(req, EROFS);
    else
        lsmfs_base_ops.fallocate(req, n, mode, off, len, fi);
}

static void view_copy_file_range(fuse_req_t req, fuse_ino_t in, off_t off_in,
                                 struct fuse_file_info *fi_in, fuse_ino_t out, off_t off_out,
                                 struct fuse_file_info *fi_out, size_t len, int flags)
{
    if (view_read_only(req, out))
        fuse_reply_err(req, EROFS);
    else
        lsmfs_base_ops.copy_file_range(req, in, off_in, fi_in, out, off_out, fi_out, len, flags);
}

/* A snapshot has nothing to make durable (and its database, opened read-only, refuses a sync). */
static void view_fsync(fuse_req_t req, fuse_ino_t n, int datasync, struct fuse_file_info *fi)
{
    if (view_read_only(req, n))
        fuse_reply_err(req, 0);
    else
        lsmfs_base_ops.fsync(req, n, datasync, fi);
}

static void view_fsyncdir(fuse_req_t req, fuse_ino_t n, int datasync, struct fuse_file_info *fi)
{
    if (view_read_only(req, n))
        fuse_reply_err(req, 0);
    else
        lsmfs_base_ops.fsyncdir(req, n, datasync, fi);
}

void lsmfs_ops_table(struct fuse_lowlevel_ops *ops)
{
    *ops = lsmfs_base_ops;
    ops->lookup = view_lookup;
    ops->forget = view_forget;
    ops->forget_multi = view_forget_multi;
    ops->getattr = view_getattr;
    ops->access = view_access;
    ops->opendir = view_opendir;
    ops->readdir = view_readdir;
    ops->readdirplus = view_readdirplus;
    ops->releasedir = view_releasedir;
    ops->setattr = view_setattr;
    ops->mknod = view_mknod;
    ops->mkdir = view_mkdir;
    ops->symlink = view_symlink;
    ops->link = view_link;
    ops->unlink = view_unlink;
    ops->rmdir = view_rmdir;
    ops->rename = view_rename;
    ops->open = view_open;
    ops->create = view_create;
    ops->write = view_write;
    ops->setxattr = view_setxattr;
    ops->removexattr = view_removexattr;
    ops->getxattr = view_getxattr;
    ops->listxattr = view_listxattr;
    ops->fallocate = view_fallocate;
    ops->copy_file_range = view_copy_file_range;
    ops->fsync = view_fsync;
    ops->fsyncdir = view_fsyncdir;
}
