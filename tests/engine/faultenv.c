/*
 * faultenv.c — an in-memory file system behind env.h's table, with which the engine's tests cut the
 * power, kill the disk and shorten writes. Linked into the test programs only, never into liblsm.
 *
 * It models power loss precisely. Files are inodes (data plus the length made durable by
 * the last sync, reference-counted by directory entries and open handles). Each directory has two
 * name->inode maps: `live`, which create/rename/unlink change, and `durable`, which sync_dir sets
 * to a copy of live. Power loss truncates every inode to its synced length and sets every live map
 * back to its durable map. Writing over synced bytes (pwrite) keeps a copy of the synced content
 * until the next sync; at power loss each 4 KiB page that differs from it takes the old or the new
 * content by a coin toss, as pages written back out of order would on a real disk. Truncating an
 * existing file with LSM_O_CREATE is durable at once (the old bytes are gone even if nothing is
 * synced): the pessimistic choice, since a real disk may keep either. Directories themselves are
 * durable as soon as mkdir returns (they are not modelled as entries of their parent); the engine
 * makes its directory once, so the simplification hides no engine bug that matters. A path's
 * directory is everything before its last '/'; "" is the root, which always exists. The mutating
 * calls are open with LSM_O_CREATE, append, pwrite, preallocate, sync, rename, unlink, mkdir,
 * sync_dir and lock; close, unlock and every read keep working on a "dead" machine.
 *
 * A full disk is modelled by a capacity (faultenv_set_capacity): the bytes of the files that live
 * directory entries name may not exceed it, so a write or preallocation that would grow past it
 * fails with ENOSPC and changes nothing, and unlinking a file gives its bytes back at once (an
 * unlinked file still open is not counted: the simplification is on the generous side).
 *
 * It must never report success for an operation that did not happen.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "faultenv.h"
#include "lsm_int.h"

/* The fault env's own file handle. The POSIX env in engine/env.c defines the same tag for its
   descriptors; the two never meet, since each env only ever sees the handles it made. */
struct lsm_file {
    struct fault_inode *ino;       /* the inode, holding one reference */
    int writable;                  /* opened with LSM_O_CREATE or LSM_O_APPEND */
};

typedef struct fault_inode {
    uint8_t *data;                 /* live content */
    size_t len, cap;               /* live length and allocation */
    size_t synced;                 /* bytes that survive power loss; <= len */
    uint8_t *old;                  /* content of [0, synced) as of the last sync, kept once a
                                      pwrite lands below synced; NULL when nothing was */
    int refs;                      /* map entries (live and durable) + open handles */
    struct fault_inode *prev, *next; /* every inode, for power loss */
} fault_inode;

typedef struct fault_entry {
    char *name;                    /* name within the directory */
    fault_inode *ino;              /* holds one reference */
} fault_entry;

typedef struct fault_map {
    fault_entry *v;                /* unsorted; directories are small */
    int n, cap;                    /* used and allocated entries */
} fault_map;

typedef struct fault_dir {
    char *path;                    /* full path; "" is the root */
    fault_map live;                /* what list/open see now */
    fault_map durable;             /* what survives power loss: live as of the last sync_dir */
    struct fault_dir *next;        /* every directory */
} fault_dir;

typedef struct fault_lock {
    char *path;                    /* locked path */
    lsm_file *owner;               /* handle that holds it; only it may release it */
    struct fault_lock *next;       /* every held lock */
} fault_lock;

typedef struct faultenv {
    lsm_env base;                  /* first, so an lsm_env * is a faultenv * */
    pthread_mutex_t mu;            /* guards every field below and all inodes, maps and locks */
    fault_dir *dirs;               /* every directory, the root included */
    fault_inode *inodes;           /* every live inode */
    fault_lock *locks;             /* locks held */
    long fail_left;                /* mutating calls still allowed while fail_err is armed */
    int fail_err;                  /* positive errno to fail with, or 0 when disarmed */
    int fail_once;                 /* only the one call fails, then the fault disarms */
    int short_writes;              /* appends write at most half */
    long mutations;                /* mutating calls attempted so far */
    long syncs;                    /* sync and sync_dir calls attempted so far */
    uint64_t rng;                  /* xorshift64 state for power loss's coin tosses */
    uint64_t capacity;             /* bytes the live files may hold; 0 = no limit */
} faultenv;

#define FAULT_PAGE 4096           /* the unit in which written-over bytes survive power loss */
#define FAULT_SEED 0x9e3779b97f4a7c15ull /* the generator's state until faultenv_seed */

static faultenv *faultenv_of(lsm_env *env)
{
    return (faultenv *)env;
}


static fault_inode *faultenv_inode_new(faultenv *fe)
{
    fault_inode *ino = xcalloc(1, sizeof *ino);
    ino->next = fe->inodes;
    if (fe->inodes)
        fe->inodes->prev = ino;
    fe->inodes = ino;
    return ino;
}

static void faultenv_inode_unref(faultenv *fe, fault_inode *ino)
{
    if (--ino->refs > 0)
        return;
    if (ino->prev)
        ino->prev->next = ino->next;
    else
        fe->inodes = ino->next;
    if (ino->next)
        ino->next->prev = ino->prev;
    free(ino->data);
    free(ino->old);
    free(ino);
}

static fault_entry *faultenv_map_find(fault_map *m, const char *name)
{
    for (int i = 0; i < m->n; i++)
        if (!strcmp(m->v[i].name, name))
            return &m->v[i];
    return NULL;
}

/* Points name at ino (taking a reference), dropping whatever it named before. */
static void faultenv_map_put(faultenv *fe, fault_map *m, const char *name, fault_inode *ino)
{
    ino->refs++;
    fault_entry *e = faultenv_map_find(m, name);
    if (e) {
        faultenv_inode_unref(fe, e->ino);
        e->ino = ino;
        return;
    }
    if (m->n == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 8;
        m->v = xrealloc(m->v, (size_t)m->cap * sizeof *m->v);
    }
    m->v[m->n].name = xmemdup(name, strlen(name) + 1);
    m->v[m->n].ino = ino;
    m->n++;
}

static void faultenv_map_del(faultenv *fe, fault_map *m, fault_entry *e)
{
    free(e->name);
    faultenv_inode_unref(fe, e->ino);
    *e = m->v[--m->n];
}

static void faultenv_map_clear(faultenv *fe, fault_map *m)
{
    while (m->n > 0)
        faultenv_map_del(fe, m, &m->v[m->n - 1]);
}

/* dst := src. References are taken before any are dropped so no shared inode dies in between. */
static void faultenv_map_copy(faultenv *fe, fault_map *dst, const fault_map *src)
{
    fault_map old = *dst;
    dst->n = dst->cap = src->n;
    dst->v = xmalloc((size_t)(src->n ? src->n : 1) * sizeof *dst->v);
    for (int i = 0; i < src->n; i++) {   /* names in src are unique: no lookup needed */
        dst->v[i].name = xmemdup(src->v[i].name, strlen(src->v[i].name) + 1);
        dst->v[i].ino = src->v[i].ino;
        dst->v[i].ino->refs++;
    }
    faultenv_map_clear(fe, &old);
    free(old.v);
}

static fault_dir *faultenv_dir_find(faultenv *fe, const char *path, size_t len)
{
    for (fault_dir *d = fe->dirs; d; d = d->next)
        if (strlen(d->path) == len && !memcmp(d->path, path, len))
            return d;
    return NULL;
}

static fault_dir *faultenv_dir_add(faultenv *fe, const char *path)
{
    fault_dir *d = xcalloc(1, sizeof *d);
    d->path = xmemdup(path, strlen(path) + 1);
    d->next = fe->dirs;
    fe->dirs = d;
    return d;
}

/* Splits path into its directory (which must exist) and its last component. */
static int faultenv_lookup_dir(faultenv *fe, const char *path, fault_dir **dir, const char **name)
{
    const char *slash = strrchr(path, '/');
    size_t dlen = slash ? (size_t)(slash - path) : 0;
    *name = slash ? slash + 1 : path;
    if (!**name)
        return -EINVAL;
    *dir = faultenv_dir_find(fe, path, dlen);
    return *dir ? 0 : -ENOENT;
}

/* Counts a mutating call and says whether the "dead machine" refuses it. Called under mu. */
/* Bytes of the files that live directory entries name. Caller holds mu. */
static uint64_t faultenv_used(faultenv *fe)
{
    uint64_t used = 0;
    for (fault_dir *d = fe->dirs; d; d = d->next)
        for (int i = 0; i < d->live.n; i++)
            used += d->live.v[i].ino->len;
    return used;
}

/* -ENOSPC if growing ino to end bytes would pass the capacity, else 0. Caller holds mu. */
static int faultenv_room(faultenv *fe, const fault_inode *ino, uint64_t end)
{
    if (!fe->capacity || end <= ino->len)
        return 0;
    return faultenv_used(fe) + (end - ino->len) > fe->capacity ? -ENOSPC : 0;
}

static int faultenv_mutate(faultenv *fe)
{
    fe->mutations++;
    if (!fe->fail_err)
        return 0;
    if (fe->fail_left > 0) {
        fe->fail_left--;
        return 0;
    }
    int e = fe->fail_err;
    if (fe->fail_once)
        fe->fail_err = fe->fail_once = 0;
    return -e;
}

static lsm_file *faultenv_handle(fault_inode *ino, int writable)
{
    lsm_file *f = xcalloc(1, sizeof *f);
    f->ino = ino;
    f->writable = writable;
    ino->refs++;
    return f;
}

static int faultenv_open(lsm_env *env, const char *path, int flags, lsm_file **out)
{
    faultenv *fe = faultenv_of(env);
    pthread_mutex_lock(&fe->mu);
    int r = 0;
    if ((flags & LSM_O_CREATE) && (r = faultenv_mutate(fe)) < 0)
        goto out;
    fault_dir *d;
    const char *name;
    if ((r = faultenv_lookup_dir(fe, path, &d, &name)) < 0)
        goto out;
    if (faultenv_dir_find(fe, path, strlen(path))) {
        r = -EISDIR;
        goto out;
    }
    fault_entry *e = faultenv_map_find(&d->live, name);
    fault_inode *ino;
    if (e) {
        ino = e->ino;
        if (flags & LSM_O_CREATE) {
            ino->len = ino->synced = 0;
            free(ino->old);
            ino->old = NULL;
        }
    } else if (flags & LSM_O_CREATE) {
        ino = faultenv_inode_new(fe);
        faultenv_map_put(fe, &d->live, name, ino);
    } else {
        r = -ENOENT;
        goto out;
    }
    *out = faultenv_handle(ino, (flags & (LSM_O_CREATE | LSM_O_APPEND)) != 0);
out:
    pthread_mutex_unlock(&fe->mu);
    return r;
}

static ssize_t faultenv_pread(lsm_env *env, lsm_file *f, void *buf, size_t n, uint64_t off)
{
    faultenv *fe = faultenv_of(env);
    pthread_mutex_lock(&fe->mu);
    fault_inode *ino = f->ino;
    size_t got = 0;
    if (off < ino->len) {
        got = ino->len - (size_t)off;
        if (got > n)
            got = n;
        memcpy(buf, ino->data + off, got);
    }
    pthread_mutex_unlock(&fe->mu);
    return (ssize_t)got;
}

/* Makes the live content at least `end` bytes long, new bytes zero (caller holds mu). */
static void faultenv_grow(fault_inode *ino, size_t end)
{
    if (end <= ino->len)
        return;
    if (end > ino->cap) {
        size_t cap = ino->cap ? ino->cap : 256;
        while (cap < end)
            cap *= 2;
        ino->data = xrealloc(ino->data, cap);
        ino->cap = cap;
    }
    memset(ino->data + ino->len, 0, end - ino->len);
    ino->len = end;
}

/* Writes n bytes at off, keeping the synced content of any synced bytes written over. Returns
   the bytes written (fewer under short_writes) or -errno. Caller holds mu. */
static ssize_t faultenv_write_at(faultenv *fe, lsm_file *f, const void *buf, size_t n, uint64_t off)
{
    ssize_t r = faultenv_mutate(fe);
    if (r < 0)
        return r;
    if (!f->writable)
        return -EBADF;
    if (fe->short_writes && n > 1)
        n /= 2;
    fault_inode *ino = f->ino;
    if (off > SIZE_MAX / 2 || n > SIZE_MAX / 2)
        return -EFBIG;
    if ((r = faultenv_room(fe, ino, off + n)) < 0)
        return r;
    if (off < ino->synced && n > 0 && !ino->old)
        ino->old = xmemdup(ino->data, ino->synced);
    faultenv_grow(ino, (size_t)off + n);
    if (n)
        memcpy(ino->data + off, buf, n);
    return (ssize_t)n;
}

static ssize_t faultenv_append(lsm_env *env, lsm_file *f, const void *buf, size_t n)
{
    faultenv *fe = faultenv_of(env);
    pthread_mutex_lock(&fe->mu);
    ssize_t r = faultenv_write_at(fe, f, buf, n, f->ino->len);
    pthread_mutex_unlock(&fe->mu);
    return r;
}

static ssize_t faultenv_pwrite(lsm_env *env, lsm_file *f, const void *buf, size_t n, uint64_t off)
{
    faultenv *fe = faultenv_of(env);
    pthread_mutex_lock(&fe->mu);
    ssize_t r = faultenv_write_at(fe, f, buf, n, off);
    pthread_mutex_unlock(&fe->mu);
    return r;
}

static int faultenv_preallocate(lsm_env *env, lsm_file *f, uint64_t off, uint64_t n)
{
    faultenv *fe = faultenv_of(env);
    pthread_mutex_lock(&fe->mu);
    int r = faultenv_mutate(fe);
    if (r == 0 && !f->writable)
        r = -EBADF;
    else if (r == 0 && (off > SIZE_MAX / 2 || n > SIZE_MAX / 2))
        r = -EFBIG;
    if (r == 0)
        r = faultenv_room(fe, f->ino, off + n);
    if (r == 0)
        faultenv_grow(f->ino, (size_t)(off + n));
    pthread_mutex_unlock(&fe->mu);
    return r;
}

static int faultenv_sync(lsm_env *env, lsm_file *f)
{
    faultenv *fe = faultenv_of(env);
    pthread_mutex_lock(&fe->mu);
    fe->syncs++;
    int r = faultenv_mutate(fe);
    if (r == 0) {
        f->ino->synced = f->ino->len;
        free(f->ino->old);
        f->ino->old = NULL;
    }
    pthread_mutex_unlock(&fe->mu);
    return r;
}

static int faultenv_size(lsm_env *env, lsm_file *f, uint64_t *size)
{
    faultenv *fe = faultenv_of(env);
    pthread_mutex_lock(&fe->mu);
    *size = f->ino->len;
    pthread_mutex_unlock(&fe->mu);
    return 0;
}

static int faultenv_close(lsm_env *env, lsm_file *f)
{
    if (!f)
        return 0;
    faultenv *fe = faultenv_of(env);
    pthread_mutex_lock(&fe->mu);
    faultenv_inode_unref(fe, f->ino);
    pthread_mutex_unlock(&fe->mu);
    free(f);
    return 0;
}

static int faultenv_rename(lsm_env *env, const char *from, const char *to)
{
    faultenv *fe = faultenv_of(env);
    pthread_mutex_lock(&fe->mu);
    int r = faultenv_mutate(fe);
    if (r < 0)
        goto out;
    fault_dir *fd, *td;
    const char *fname, *tname;
    if ((r = faultenv_lookup_dir(fe, from, &fd, &fname)) < 0 ||
        (r = faultenv_lookup_dir(fe, to, &td, &tname)) < 0)
        goto out;
    fault_entry *e = faultenv_map_find(&fd->live, fname);
    if (!e) {
        r = -ENOENT;
        goto out;
    }
    if (faultenv_dir_find(fe, to, strlen(to))) {
        r = -EISDIR;
        goto out;
    }
    if (fd == td && !strcmp(fname, tname))
        goto out;
    fault_inode *ino = e->ino;
    ino->refs++;                    /* keep it alive between the delete and the put */
    faultenv_map_del(fe, &fd->live, e);
    faultenv_map_put(fe, &td->live, tname, ino);
    faultenv_inode_unref(fe, ino);
out:
    pthread_mutex_unlock(&fe->mu);
    return r;
}

static int faultenv_unlink(lsm_env *env, const char *path)
{
    faultenv *fe = faultenv_of(env);
    pthread_mutex_lock(&fe->mu);
    int r = faultenv_mutate(fe);
    if (r < 0)
        goto out;
    fault_dir *d;
    const char *name;
    if ((r = faultenv_lookup_dir(fe, path, &d, &name)) < 0)
        goto out;
    fault_entry *e = faultenv_map_find(&d->live, name);
    if (!e) {
        r = faultenv_dir_find(fe, path, strlen(path)) ? -EISDIR : -ENOENT;
        goto out;
    }
    faultenv_map_del(fe, &d->live, e);
out:
    pthread_mutex_unlock(&fe->mu);
    return r;
}

static int faultenv_mkdir(lsm_env *env, const char *path)
{
    faultenv *fe = faultenv_of(env);
    pthread_mutex_lock(&fe->mu);
    int r = faultenv_mutate(fe);
    if (r < 0)
        goto out;
    fault_dir *parent;
    const char *name;
    if ((r = faultenv_lookup_dir(fe, path, &parent, &name)) < 0)
        goto out;
    if (faultenv_dir_find(fe, path, strlen(path)) || faultenv_map_find(&parent->live, name)) {
        r = -EEXIST;
        goto out;
    }
    faultenv_dir_add(fe, path);
out:
    pthread_mutex_unlock(&fe->mu);
    return r;
}

static int faultenv_sync_dir(lsm_env *env, const char *dir)
{
    faultenv *fe = faultenv_of(env);
    pthread_mutex_lock(&fe->mu);
    fe->syncs++;
    int r = faultenv_mutate(fe);
    if (r < 0)
        goto out;
    fault_dir *d = faultenv_dir_find(fe, dir, strlen(dir));
    if (!d) {
        r = -ENOENT;
        goto out;
    }
    faultenv_map_copy(fe, &d->durable, &d->live);
out:
    pthread_mutex_unlock(&fe->mu);
    return r;
}

static int faultenv_list(lsm_env *env, const char *dir, char ***names, int *n)
{
    faultenv *fe = faultenv_of(env);
    pthread_mutex_lock(&fe->mu);
    size_t dlen = strlen(dir);
    fault_dir *d = faultenv_dir_find(fe, dir, dlen);
    if (!d) {
        pthread_mutex_unlock(&fe->mu);
        return -ENOENT;
    }
    int cnt = 0, cap = d->live.n + 8;
    char **v = xmalloc((size_t)cap * sizeof *v);
    for (int i = 0; i < d->live.n; i++)
        v[cnt++] = xmemdup(d->live.v[i].name, strlen(d->live.v[i].name) + 1);
    /* Subdirectories are entries too, as readdir would show them. */
    for (fault_dir *s = fe->dirs; s; s = s->next) {
        const char *slash = strrchr(s->path, '/');
        if (!slash || (size_t)(slash - s->path) != dlen || memcmp(s->path, dir, dlen))
            continue;
        if (cnt == cap) {
            cap *= 2;
            v = xrealloc(v, (size_t)cap * sizeof *v);
        }
        v[cnt++] = xmemdup(slash + 1, strlen(slash + 1) + 1);
    }
    pthread_mutex_unlock(&fe->mu);
    *names = v;
    *n = cnt;
    return 0;
}

static int faultenv_file_exists(lsm_env *env, const char *path)
{
    faultenv *fe = faultenv_of(env);
    pthread_mutex_lock(&fe->mu);
    int r = 0;
    fault_dir *d;
    const char *name;
    if (faultenv_dir_find(fe, path, strlen(path)))
        r = 1;
    else if (faultenv_lookup_dir(fe, path, &d, &name) == 0)
        r = faultenv_map_find(&d->live, name) != NULL;
    pthread_mutex_unlock(&fe->mu);
    return r;
}

static int faultenv_lock(lsm_env *env, const char *path, lsm_file **out, long *holder_pid)
{
    faultenv *fe = faultenv_of(env);
    pthread_mutex_lock(&fe->mu);
    int r = faultenv_mutate(fe);
    if (r < 0)
        goto out;
    for (fault_lock *l = fe->locks; l; l = l->next)
        if (!strcmp(l->path, path)) {
            if (holder_pid)
                *holder_pid = (long)getpid();
            r = -EWOULDBLOCK;
            goto out;
        }
    fault_dir *d;
    const char *name;
    if ((r = faultenv_lookup_dir(fe, path, &d, &name)) < 0)
        goto out;
    fault_entry *e = faultenv_map_find(&d->live, name);
    fault_inode *ino = e ? e->ino : NULL;
    if (!ino) {                     /* created if missing, like open(O_CREAT) */
        ino = faultenv_inode_new(fe);
        faultenv_map_put(fe, &d->live, name, ino);
    }
    lsm_file *f = faultenv_handle(ino, 0);
    fault_lock *l = xcalloc(1, sizeof *l);
    l->path = xmemdup(path, strlen(path) + 1);
    l->owner = f;
    l->next = fe->locks;
    fe->locks = l;
    *out = f;
out:
    pthread_mutex_unlock(&fe->mu);
    return r;
}

static int faultenv_unlock(lsm_env *env, lsm_file *f)
{
    if (!f)
        return 0;
    faultenv *fe = faultenv_of(env);
    pthread_mutex_lock(&fe->mu);
    /* After a power loss the lock is gone and may be someone else's now: release only our own. */
    for (fault_lock **lp = &fe->locks; *lp; lp = &(*lp)->next)
        if ((*lp)->owner == f) {
            fault_lock *l = *lp;
            *lp = l->next;
            free(l->path);
            free(l);
            break;
        }
    pthread_mutex_unlock(&fe->mu);
    return faultenv_close(env, f);
}

static int faultenv_space(lsm_env *env, const char *dir, uint64_t *avail)
{
    faultenv *fe = faultenv_of(env);
    pthread_mutex_lock(&fe->mu);
    uint64_t used = faultenv_used(fe);
    int r = fe->capacity ? 0 : -ENOSYS;
    *avail = used < fe->capacity ? fe->capacity - used : 0;
    pthread_mutex_unlock(&fe->mu);
    return r;
}

void faultenv_set_capacity(lsm_env *env, uint64_t bytes)
{
    faultenv *fe = faultenv_of(env);
    pthread_mutex_lock(&fe->mu);
    fe->capacity = bytes;
    pthread_mutex_unlock(&fe->mu);
}

uint64_t faultenv_space_used(lsm_env *env)
{
    faultenv *fe = faultenv_of(env);
    pthread_mutex_lock(&fe->mu);
    uint64_t used = faultenv_used(fe);
    pthread_mutex_unlock(&fe->mu);
    return used;
}

lsm_env *faultenv_new(void)
{
    faultenv *fe = xcalloc(1, sizeof *fe);
    fe->base = (lsm_env){
        .open = faultenv_open,
        .pread = faultenv_pread,
        .append = faultenv_append,
        .sync = faultenv_sync,
        .size = faultenv_size,
        .close = faultenv_close,
        .rename = faultenv_rename,
        .unlink = faultenv_unlink,
        .mkdir = faultenv_mkdir,
        .sync_dir = faultenv_sync_dir,
        .list = faultenv_list,
        .file_exists = faultenv_file_exists,
        .lock = faultenv_lock,
        .unlock = faultenv_unlock,
        .pwrite = faultenv_pwrite,
        .preallocate = faultenv_preallocate,
        .space = faultenv_space,
    };
    fe->rng = FAULT_SEED;
    pthread_mutex_init(&fe->mu, NULL);
    faultenv_dir_add(fe, "");
    return &fe->base;
}

static void faultenv_drop_locks(faultenv *fe)
{
    while (fe->locks) {
        fault_lock *l = fe->locks;
        fe->locks = l->next;
        free(l->path);
        free(l);
    }
}

void faultenv_free(lsm_env *env)
{
    if (!env)
        return;
    faultenv *fe = faultenv_of(env);
    while (fe->dirs) {
        fault_dir *d = fe->dirs;
        fe->dirs = d->next;
        faultenv_map_clear(fe, &d->live);
        faultenv_map_clear(fe, &d->durable);
        free(d->live.v);
        free(d->durable.v);
        free(d->path);
        free(d);
    }
    faultenv_drop_locks(fe);
    /* Inodes still alive belong to handles the caller never closed; those handles die with us. */
    while (fe->inodes) {
        fault_inode *ino = fe->inodes;
        fe->inodes = ino->next;
        free(ino->data);
        free(ino->old);
        free(ino);
    }
    pthread_mutex_destroy(&fe->mu);
    free(fe);
}

void faultenv_seed(lsm_env *env, uint64_t seed)
{
    faultenv *fe = faultenv_of(env);
    pthread_mutex_lock(&fe->mu);
    fe->rng = seed ? seed : FAULT_SEED;   /* xorshift stays at 0 forever */
    pthread_mutex_unlock(&fe->mu);
}

void faultenv_power_loss(lsm_env *env)
{
    faultenv *fe = faultenv_of(env);
    pthread_mutex_lock(&fe->mu);
    /* Truncate first: restoring the maps below may free inodes, which would upset this walk. */
    for (fault_inode *ino = fe->inodes; ino; ino = ino->next) {
        if (ino->old) {
            for (size_t p = 0; p < ino->synced; p += FAULT_PAGE) {
                size_t n = ino->synced - p < FAULT_PAGE ? ino->synced - p : FAULT_PAGE;
                if (memcmp(ino->data + p, ino->old + p, n) != 0 && (xorshift64(&fe->rng) & 1))
                    memcpy(ino->data + p, ino->old + p, n);
            }
            free(ino->old);
            ino->old = NULL;
        }
        ino->len = ino->synced;
    }
    for (fault_dir *d = fe->dirs; d; d = d->next)
        faultenv_map_copy(fe, &d->live, &d->durable);
    faultenv_drop_locks(fe);
    fe->fail_err = 0;
    fe->fail_left = 0;
    pthread_mutex_unlock(&fe->mu);
}

void faultenv_fail_after(lsm_env *env, long after, int err)
{
    faultenv *fe = faultenv_of(env);
    pthread_mutex_lock(&fe->mu);
    fe->fail_left = after < 0 ? 0 : after;
    fe->fail_err = err < 0 ? -err : err;
    pthread_mutex_unlock(&fe->mu);
}

void faultenv_fail_once(lsm_env *env, long after, int err)
{
    faultenv *fe = faultenv_of(env);
    pthread_mutex_lock(&fe->mu);
    fe->fail_left = after < 0 ? 0 : after;
    fe->fail_err = err < 0 ? -err : err;
    fe->fail_once = 1;
    pthread_mutex_unlock(&fe->mu);
}

void faultenv_short_writes(lsm_env *env, int on)
{
    faultenv *fe = faultenv_of(env);
    pthread_mutex_lock(&fe->mu);
    fe->short_writes = on != 0;
    pthread_mutex_unlock(&fe->mu);
}

void faultenv_clear(lsm_env *env)
{
    faultenv *fe = faultenv_of(env);
    pthread_mutex_lock(&fe->mu);
    fe->fail_err = 0;
    fe->fail_left = 0;
    fe->fail_once = 0;
    fe->short_writes = 0;
    pthread_mutex_unlock(&fe->mu);
}

long faultenv_mutations(lsm_env *env)
{
    faultenv *fe = faultenv_of(env);
    pthread_mutex_lock(&fe->mu);
    long n = fe->mutations;
    pthread_mutex_unlock(&fe->mu);
    return n;
}

long faultenv_syncs(lsm_env *env)
{
    faultenv *fe = faultenv_of(env);
    pthread_mutex_lock(&fe->mu);
    long n = fe->syncs;
    pthread_mutex_unlock(&fe->mu);
    return n;
}

int faultenv_corrupt(lsm_env *env, const char *path, uint64_t off)
{
    faultenv *fe = faultenv_of(env);
    pthread_mutex_lock(&fe->mu);
    int r = -ENOENT;
    fault_dir *d;
    const char *name;
    if (faultenv_lookup_dir(fe, path, &d, &name) == 0) {
        fault_entry *e = faultenv_map_find(&d->live, name);
        if (!e)
            e = faultenv_map_find(&d->durable, name);
        if (e && off < e->ino->len) {
            /* One buffer holds both the live bytes and the synced prefix, so both see the flip;
               a kept copy of written-over synced bytes gets it too. */
            e->ino->data[off] ^= 0xff;
            if (e->ino->old && off < e->ino->synced)
                e->ino->old[off] ^= 0xff;
            r = 0;
        } else if (e) {
            r = -EINVAL;
        }
    }
    pthread_mutex_unlock(&fe->mu);
    return r;
}
