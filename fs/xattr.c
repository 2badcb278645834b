/*
 * xattr.c — extended attributes: the FUSE callbacks setxattr, getxattr, listxattr and
 * removexattr, and the helpers that make a file's attributes follow it when dir.c renames or
 * removes it.
 *
 * What: each extended attribute is one reserved key (lsmfs.h, lsmfs(1)):
 *   "\0x" PATH "\0" NAME       of the file or symlink at PATH
 *   "\0x" PATH "/\0" NAME      of the directory at PATH (the root's: "\0x/\0" NAME)
 * whose value is the attribute's value, byte for byte. The namespaces user., trusted. and
 * security. are kept (the kernel already refuses trusted. to the unprivileged and user. on
 * symlinks, as it does for every filesystem); system. (POSIX ACLs) and anything else give
 * EOPNOTSUPP, as ext4 mounted without acl does.
 *
 * Why so: a path never holds a NUL byte, so "\0x" PATH "\0" is a prefix of the attributes of
 * that one object and of no other key, and listing them is one bounded prefix scan. A directory's
 * prefix ends with '/' like its "\0d" record, so all attributes at and below a directory are the
 * one prefix "\0x" PATH "/", which dir.c moves with the directory's other keys in the rename
 * batch. A file's attributes are added here to the batch that renames or removes it, so they
 * never outlive it nor stay behind.
 *
 * Never: reply twice or not at all; change an attribute without fs->ns held for reading (a
 * rename, which holds it for writing, must not miss it) and the inode's mu (set with
 * XATTR_CREATE or XATTR_REPLACE tests then writes); store anything for an unlinked inode, whose
 * path may already name another file.
 */
#include "lsmfs.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>

#define XATTR_NAME_LEN_MAX 255u            /* longest name, as XATTR_NAME_MAX */
#define XATTR_VALUE_LEN_MAX 65536u         /* longest value, as XATTR_SIZE_MAX */
#define XATTR_LIST_LEN_MAX 65536u          /* longest list of names, as XATTR_LIST_MAX */

/* What fs->xattr_state says: whether a prefix scan can find anything. */
enum { XATTR_UNKNOWN = 0, XATTR_NONE, XATTR_SOME };

/* 0 if the namespace of name is kept, else EOPNOTSUPP; *user is set for user.* */
static int xattr_namespace(const char *name, int *user)
{
    *user = strncmp(name, "user.", 5) == 0;
    if ((*user && name[5]) || (strncmp(name, "trusted.", 8) == 0 && name[8]) ||
        (strncmp(name, "security.", 9) == 0 && name[9]))
        return 0;
    return EOPNOTSUPP;   /* system.posix_acl_*, system.*, no namespace */
}

/* The prefix of the attributes of the object of type at path: "\0x" path "\0" (a directory:
   "\0x" path "/\0"), followed by name when given. Caller frees. */
static char *xattr_key(const char *path, size_t plen, int type, const char *name, size_t *klen)
{
    size_t dl, nl = name ? strlen(name) : 0;
    char *d = lsmfs_key('x', path, plen, type == LSMFS_DIR, &dl);
    char *k = d ? realloc(d, dl + 1 + nl + 1) : NULL;
    if (!k) {
        free(d);
        return NULL;
    }
    k[dl] = '\0';
    memcpy(k + dl + 1, name ? name : "", nl + 1);
    *klen = dl + 1 + nl;
    return k;
}

/* Whether some attribute may be stored at all: lets unlink and rename of a file skip the
   prefix scan on a database where no attribute was ever set. fs->ns held. */
static int xattr_any(struct lsmfs *fs)
{
    int st = __atomic_load_n(&fs->xattr_state, __ATOMIC_ACQUIRE);
    if (st != XATTR_UNKNOWN)
        return st == XATTR_SOME;
    static const char pre[2] = { '\0', 'x' }, end[2] = { '\0', 'x' + 1 };
    lsm_iter *it;
    if (lsmfs_iter_get(fs, &it, "extended attributes") != 0)
        return 1;
    lsm_iter_set_upper_bound(it, end, sizeof end);
    lsm_iter_seek(it, pre, sizeof pre);
    int some = lsm_iter_valid(it) || lsm_iter_status(it) != LSM_OK;
    lsmfs_iter_put(fs, it);
    /* a setxattr that ran meanwhile said XATTR_SOME first: keep that */
    int unknown = XATTR_UNKNOWN;
    __atomic_compare_exchange_n(&fs->xattr_state, &unknown, some ? XATTR_SOME : XATTR_NONE, 0,
                                __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
    return some || unknown == XATTR_SOME;
}

/* Calls fn on every attribute of the object of type at path, in key order: its key, the
   offset of its name in the key, its value (NULL unless want_value). Stops at fn's nonzero
   return, which it returns; else 0 or the errno of the scan. */
typedef int (*xattr_fn)(void *arg, const char *k, size_t kl, size_t noff, const void *v,
                        size_t vl);
static int xattr_scan(struct lsmfs *fs, const char *path, size_t plen, int type, int want_value,
                      xattr_fn fn, void *arg)
{
    size_t pl;
    lsm_iter *it;
    char *p = xattr_key(path, plen, type, NULL, &pl);
    int err, rc;
    if (!p)
        return ENOMEM;
    if ((err = lsmfs_iter_get(fs, &it, path))) {
        free(p);
        return err;
    }
    p[pl - 1]++;   /* the prefix ends with NUL: bound at the next byte */
    lsm_iter_set_upper_bound(it, p, pl);
    p[pl - 1]--;
    for (lsm_iter_seek(it, p, pl); !err && lsm_iter_valid(it); lsm_iter_next(it)) {
        size_t kl, vl = 0;
        const char *k = lsm_iter_key(it, &kl);
        const void *v = NULL;
        if (kl <= pl || memcmp(k, p, pl) != 0)
            break;
        if (want_value && !(v = lsm_iter_value(it, &vl)))
            break;
        err = fn(arg, k, kl, pl, v, vl);
    }
    rc = lsm_iter_status(it);
    lsmfs_iter_put(fs, it);
    free(p);
    if (!err && rc != LSM_OK)
        err = lsmfs_errno(fs, rc, "read extended attributes of", path);
    return err;
}

static int xattr_drop_one(void *arg, const char *k, size_t kl, size_t noff, const void *v,
                          size_t vl)
{
    lsm_batch_delete(arg, k, kl);
    return 0;
}

int lsmfs_xattr_drop(struct lsmfs *fs, lsm_batch *b, const char *path, size_t plen, int type)
{
    if (!xattr_any(fs))
        return 0;
    return xattr_scan(fs, path, plen, type, 0, xattr_drop_one, b);
}

/* Where xattr_copy_one puts what it reads. */
struct xattr_copy {
    struct lsmfs *fs;
    lsm_batch *b;
    char   *to;                  /* the new prefix, then the name; kcap bytes allocated */
    size_t  tlen, kcap;          /* length of the prefix */
    size_t *bytes;               /* bytes copied so far */
};

static int xattr_copy_one(void *arg, const char *k, size_t kl, size_t noff, const void *v,
                          size_t vl)
{
    struct xattr_copy *c = arg;
    size_t nl = kl - noff, n = c->tlen + nl;
    if (n > c->kcap) {
        char *nk = realloc(c->to, n);
        if (!nk)
            return ENOMEM;
        c->to = nk;
        c->kcap = n;
    }
    memcpy(c->to + c->tlen, k + noff, nl);
    lsm_batch_put(c->b, c->to, n, v, vl);
    *c->bytes += n + vl;
    return 0;
}

int lsmfs_xattr_copy(struct lsmfs *fs, lsm_batch *b, const char *from, size_t flen, int type,
                     const char *to, size_t tlen, size_t *bytes)
{
    struct xattr_copy c = { .fs = fs, .b = b, .bytes = bytes };
    if (!xattr_any(fs))
        return 0;
    if (!(c.to = xattr_key(to, tlen, type, NULL, &c.tlen)))
        return ENOMEM;
    c.kcap = c.tlen + 1;
    int err = xattr_scan(fs, from, flen, type, 1, xattr_copy_one, &c);
    free(c.to);
    return err;
}

/* ---- the callbacks ---- */

/* Sums the list that listxattr would return, in *arg. */
static int xattr_count_one(void *arg, const char *k, size_t kl, size_t noff, const void *v,
                           size_t vl)
{
    *(size_t *)arg += kl - noff + 1;
    return 0;
}

/* Sets (value NULL: removes) the attribute name of ino, honouring XATTR_CREATE and
   XATTR_REPLACE, and its change time, as one batch. fs->ns held for reading, ino->mu held. */
static int xattr_change(struct lsmfs *fs, struct lsmfs_inode *ino, const char *name,
                        const char *value, size_t size, int flags)
{
    uint64_t old;
    size_t kl, list = 0;
    char *k = xattr_key(ino->path, ino->plen, ino->m.type, name, &kl);
    if (!k)
        return ENOMEM;
    int rc = lsm_get_size(fs->db, k, kl, &old), err = 0;
    if (rc != LSM_OK && rc != LSM_NOTFOUND)
        err = lsmfs_errno(fs, rc, "read extended attribute of", ino->path);
    else if (rc == LSM_OK && (flags & XATTR_CREATE))
        err = EEXIST;
    else if (rc == LSM_NOTFOUND && (!value || (flags & XATTR_REPLACE)))
        err = ENODATA;
    else if (rc == LSM_NOTFOUND &&
             !(err = xattr_scan(fs, ino->path, ino->plen, ino->m.type, 0, xattr_count_one,
                                &list)) &&
             list + strlen(name) + 1 > XATTR_LIST_LEN_MAX)
        err = ENOSPC;   /* listxattr could not return the names any more */
    if (err) {
        free(k);
        return err;
    }
    struct lsmfs_meta m = ino->m;
    int explicit_dir = ino->m.explicit_dir;
    lsm_batch *b = lsm_batch_new();
    if (value) {
        __atomic_store_n(&fs->xattr_state, XATTR_SOME, __ATOMIC_RELEASE);
        lsm_batch_put(b, k, kl, value, size);
    } else {
        lsm_batch_delete(b, k, kl);
    }
    ino->m.ctime_ns = lsmfs_now();
    lsmfs_add_record(b, ino);   /* an implicit directory becomes explicit: it keeps them */
    if ((err = lsmfs_write_batch(fs, b, 0))) {
        ino->m = m;
        ino->m.explicit_dir = explicit_dir;
    }
    lsm_batch_free(b);
    free(k);
    return err;
}

/* SETXATTR and REMOVEXATTR (value NULL). */
static void xattr_change_req(fuse_req_t req, fuse_ino_t n, const char *name, const char *value,
                             size_t size, int flags)
{
    struct lsmfs *fs = lsmfs_owner(req, n);
    struct lsmfs_inode *ino = lsmfs_ino(fs, n);
    int user, err = xattr_namespace(name, &user);
    if (!err && strlen(name) > XATTR_NAME_LEN_MAX)
        err = ERANGE;
    else if (!err && size > XATTR_VALUE_LEN_MAX)
        err = E2BIG;
    else if (!err && (flags & ~(XATTR_CREATE | XATTR_REPLACE)))
        err = EINVAL;
    if (err) {
        fuse_reply_err(req, err);
        return;
    }
    pthread_rwlock_rdlock(&fs->ns);
    pthread_mutex_lock(&ino->mu);
    if (ino->deleted)
        err = ENOENT;   /* its path may name another file now */
    else if (user && ino->m.type != LSMFS_REG && ino->m.type != LSMFS_DIR)
        err = EPERM;    /* as the kernel says for user.* on a symlink */
    else
        err = xattr_change(fs, ino, name, value, size, flags);
    pthread_mutex_unlock(&ino->mu);
    pthread_rwlock_unlock(&fs->ns);
    fuse_reply_err(req, err);
}

void lsmfs_setxattr(fuse_req_t req, fuse_ino_t n, const char *name, const char *value,
                    size_t size, int flags)
{
    xattr_change_req(req, n, name, value ? value : "", size, flags);
}

void lsmfs_removexattr(fuse_req_t req, fuse_ino_t n, const char *name)
{
    xattr_change_req(req, n, name, NULL, 0, 0);
}

void lsmfs_getxattr(fuse_req_t req, fuse_ino_t n, const char *name, size_t size)
{
    struct lsmfs *fs = lsmfs_owner(req, n);
    struct lsmfs_inode *ino = lsmfs_ino(fs, n);
    void *v = NULL;
    size_t vl = 0, kl;
    int user, err = xattr_namespace(name, &user);
    if (err) {
        fuse_reply_err(req, err);
        return;
    }
    pthread_rwlock_rdlock(&fs->ns);
    pthread_mutex_lock(&ino->mu);
    char *k = NULL;
    /* The kernel asks for security.capability before every write: answer at once when no
       attribute is stored anywhere. */
    if (ino->deleted || !xattr_any(fs) || strlen(name) > XATTR_NAME_LEN_MAX)
        err = ENODATA;
    else if (!(k = xattr_key(ino->path, ino->plen, ino->m.type, name, &kl)))
        err = ENOMEM;
    else {
        int rc = lsm_get(fs->db, k, kl, &v, &vl);
        if (rc == LSM_NOTFOUND)
            err = ENODATA;
        else if (rc != LSM_OK)
            err = lsmfs_errno(fs, rc, "read extended attribute of", ino->path);
    }
    pthread_mutex_unlock(&ino->mu);
    pthread_rwlock_unlock(&fs->ns);
    free(k);
    if (err)
        fuse_reply_err(req, err);
    else if (size == 0)
        fuse_reply_xattr(req, vl);
    else if (vl > size)
        fuse_reply_err(req, ERANGE);
    else
        fuse_reply_buf(req, v, vl);
    free(v);
}

/* The list listxattr returns: names, each followed by NUL. */
struct xattr_list {
    char   *buf;                 /* cap bytes allocated */
    size_t  len, cap;            /* bytes used */
    int     trusted;             /* the caller may see trusted.* */
};

static int xattr_list_one(void *arg, const char *k, size_t kl, size_t noff, const void *v,
                          size_t vl)
{
    struct xattr_list *l = arg;
    size_t nl = kl - noff;
    if (!l->trusted && nl >= 8 && memcmp(k + noff, "trusted.", 8) == 0)
        return 0;
    if (l->len + nl + 1 > l->cap) {
        size_t cap = (l->len + nl + 1) * 2;
        char *nb = realloc(l->buf, cap);
        if (!nb)
            return ENOMEM;
        l->buf = nb;
        l->cap = cap;
    }
    memcpy(l->buf + l->len, k + noff, nl);
    l->buf[l->len + nl] = '\0';
    l->len += nl + 1;
    return 0;
}

void lsmfs_listxattr(fuse_req_t req, fuse_ino_t n, size_t size)
{
    struct lsmfs *fs = lsmfs_owner(req, n);
    struct lsmfs_inode *ino = lsmfs_ino(fs, n);
    struct xattr_list l = { .trusted = fuse_req_ctx(req)->uid == 0 };
    int err = 0;
    pthread_rwlock_rdlock(&fs->ns);
    pthread_mutex_lock(&ino->mu);
    if (!ino->deleted && xattr_any(fs))
        err = xattr_scan(fs, ino->path, ino->plen, ino->m.type, 0, xattr_list_one, &l);
    pthread_mutex_unlock(&ino->mu);
    pthread_rwlock_unlock(&fs->ns);
    if (err)
        fuse_reply_err(req, err);
    else if (size == 0)
        fuse_reply_xattr(req, l.len);
    else if (l.len > size)
        fuse_reply_err(req, ERANGE);
    else
        fuse_reply_buf(req, l.buf, l.len);
    free(l.buf);
}
