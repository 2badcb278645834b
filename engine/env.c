/*
 * env.c — the two file-system environments behind env.h: the POSIX one every database uses, and an
 * in-memory "fault env" with which tests cut the power, kill the disk and shorten writes.
 *
 * Both sit behind the same small table of function pointers so that the engine has exactly one way
 * to touch files, and every crash-safety argument the engine makes can be checked against a model
 * of what a real disk keeps. The POSIX env is a thin layer: it retries EINTR, returns -errno, and
 * adds nothing the kernel does not do (no caching, no buffering). Appends go through an O_APPEND
 * descriptor, positioned writes (LSM_O_WRITE_AT) through a plain one; "sync" is fdatasync,
 * "writeback" is sync_file_range(SYNC_FILE_RANGE_WRITE), "preallocate" is fallocate(2) mode 0;
 * directory entries are made durable by fsync on the directory.
 * The lock is an open-file-description (F_OFD_SETLK) write lock, so a second lock of the same file
 * conflicts even inside the same process (a second lsm_open of one directory must fail), and the
 * holder writes its pid into the lock file so that a loser can say who holds it.
 *
 * The fault env models power loss precisely. Files are inodes (data plus the length made durable by
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
 * Neither env may ever print, or report success for an operation that did not happen.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "env.h"
#include "lsm_int.h"

/* One definition serves both envs; each uses only its own fields. */
struct lsm_file {
    int fd;                        /* posix: the descriptor; -1 in the fault env */
    struct fault_inode *ino;       /* fault: the inode, holding one reference */
    int writable;                  /* fault: opened with LSM_O_CREATE or LSM_O_APPEND */
};

/* ======================================================================================== */
/* POSIX                                                                                      */
/* ======================================================================================== */

static int env_posix_open(lsm_env *env, const char *path, int flags, lsm_file **out)
{
    int oflags;
    if (flags & LSM_O_CREATE)
        oflags = O_RDWR | O_CREAT | O_TRUNC | (flags & LSM_O_WRITE_AT ? 0 : O_APPEND);
    else if (flags & LSM_O_APPEND)
        oflags = O_RDWR | O_APPEND;
    else
        oflags = O_RDONLY;
    int fd;
    do
        fd = open(path, oflags | O_CLOEXEC, 0644);
    while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return -errno;
    lsm_file *f = xcalloc(1, sizeof *f);
    f->fd = fd;
    *out = f;
    return 0;
}

static ssize_t env_posix_pread(lsm_env *env, lsm_file *f, void *buf, size_t n, uint64_t off)
{
    size_t done = 0;
    /* Loop so that "fewer than n" means end of file, as env.h promises, not merely a short read. */
    while (done < n) {
        ssize_t r = pread(f->fd, (uint8_t *)buf + done, n - done, (off_t)(off + done));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            break;
        done += (size_t)r;
    }
    return (ssize_t)done;
}

static ssize_t env_posix_append(lsm_env *env, lsm_file *f, const void *buf, size_t n)
{
    ssize_t r;
    do
        r = write(f->fd, buf, n);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
}

static ssize_t env_posix_pwrite(lsm_env *env, lsm_file *f, const void *buf, size_t n, uint64_t off)
{
    ssize_t r;
    do
        r = pwrite(f->fd, buf, n, (off_t)off);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
}

static int env_posix_preallocate(lsm_env *env, lsm_file *f, uint64_t off, uint64_t n)
{
    int r;
    do
        r = fallocate(f->fd, 0, (off_t)off, (off_t)n);
    while (r < 0 && errno == EINTR);
    if (r < 0 && errno == ENOSYS)
        return -EOPNOTSUPP;
    return r < 0 ? -errno : 0;
}

static int env_posix_sync(lsm_env *env, lsm_file *f)
{
    int r;
    do
        r = fdatasync(f->fd);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : 0;
}

static int env_posix_writeback(lsm_env *env, lsm_file *f, uint64_t off, uint64_t n)
{
    int r;
    do
        r = sync_file_range(f->fd, (off_t)off, (off_t)n, SYNC_FILE_RANGE_WRITE);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : 0;
}

static int env_posix_size(lsm_env *env, lsm_file *f, uint64_t *size)
{
    struct stat st;
    if (fstat(f->fd, &st) < 0)
        return -errno;
    *size = (uint64_t)st.st_size;
    return 0;
}

static int env_posix_close(lsm_env *env, lsm_file *f)
{
    if (!f)
        return 0;
    /* Never retry close on EINTR: Linux has already released the descriptor. */
    int r = close(f->fd);
    int e = errno;
    free(f);
    return r < 0 && e != EINTR ? -e : 0;
}

static int env_posix_rename(lsm_env *env, const char *from, const char *to)
{
    return rename(from, to) < 0 ? -errno : 0;
}

static int env_posix_unlink(lsm_env *env, const char *path)
{
    return unlink(path) < 0 ? -errno : 0;
}

static int env_posix_mkdir(lsm_env *env, const char *path)
{
    return mkdir(path, 0700) < 0 ? -errno : 0;
}

static int env_posix_sync_dir(lsm_env *env, const char *dir)
{
    int fd;
    do
        fd = open(dir[0] ? dir : "/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return -errno;
    int r;
    do
        r = fsync(fd);
    while (r < 0 && errno == EINTR);
    int e = errno;
    close(fd);
    return r < 0 ? -e : 0;
}

static int env_posix_list(lsm_env *env, const char *dir, char ***names, int *n)
{
    DIR *d = opendir(dir);
    if (!d)
        return -errno;
    char **v = NULL;
    int cnt = 0, cap = 0;
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(d);
        if (!de) {
            if (errno) {
                int e = errno;
                closedir(d);
                env_free_list(v, cnt);
                return -e;
            }
            break;
        }
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (cnt == cap) {
            cap = cap ? cap * 2 : 16;
            v = xrealloc(v, (size_t)cap * sizeof *v);
        }
        v[cnt++] = xmemdup(de->d_name, strlen(de->d_name) + 1);
    }
    closedir(d);
    *names = v;
    *n = cnt;
    return 0;
}

static int env_posix_file_exists(lsm_env *env, const char *path)
{
    struct stat st;
    if (stat(path, &st) == 0)
        return 1;
    return errno == ENOENT ? 0 : -errno;
}

/* The holder's pid as written in the lock file, or 0 if it is unreadable (not yet written). */
static long env_posix_lock_holder(int fd)
{
    char text[32];
    ssize_t r;
    do
        r = pread(fd, text, sizeof text - 1, 0);
    while (r < 0 && errno == EINTR);
    if (r <= 0)
        return 0;
    text[r] = '\0';
    long pid = strtol(text, NULL, 10);
    return pid > 0 ? pid : 0;
}

static int env_posix_lock(lsm_env *env, const char *path, lsm_file **out, long *holder_pid)
{
    int fd;
    do
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return -errno;
    struct flock fl;
    memset(&fl, 0, sizeof fl);      /* l_pid must be 0 for OFD locks */
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    int r;
    do
        r = fcntl(fd, F_OFD_SETLK, &fl);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
        int e = errno;
        if (e == EAGAIN || e == EACCES) {
            /* F_OFD_GETLK reports pid -1 for OFD locks, so the file's text is the only witness. */
            if (holder_pid)
                *holder_pid = env_posix_lock_holder(fd);
            e = EWOULDBLOCK;
        }
        close(fd);
        return -e;
    }
    /* The pid is only information for the loser of a race: failing to write it is not fatal. */
    char text[32];
    int len = snprintf(text, sizeof text, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) == 0) {
        ssize_t w;
        do
            w = pwrite(fd, text, (size_t)len, 0);
        while (w < 0 && errno == EINTR);
    }
    lsm_file *f = xcalloc(1, sizeof *f);
    f->fd = fd;
    *out = f;
    return 0;
}

static int env_posix_unlock(lsm_env *env, lsm_file *f)
{
    return env_posix_close(env, f);     /* closing the description releases its OFD lock */
}

static int env_posix_mmap(lsm_env *env, lsm_file *f, uint64_t size, const void **addr)
{
    if (size == 0 || size > SIZE_MAX)
        return -EINVAL;
    void *p = mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, f->fd, 0);
    if (p == MAP_FAILED)
        return -errno;
    *addr = p;
    return 0;
}

static int env_posix_munmap(lsm_env *env, const void *addr, uint64_t size)
{
    return munmap((void *)addr, (size_t)size) < 0 ? -errno : 0;
}

static lsm_env env_posix_env = {
    .open = env_posix_open,
    .pread = env_posix_pread,
    .append = env_posix_append,
    .sync = env_posix_sync,
    .size = env_posix_size,
    .close = env_posix_close,
    .rename = env_posix_rename,
    .unlink = env_posix_unlink,
    .mkdir = env_posix_mkdir,
    .sync_dir = env_posix_sync_dir,
    .list = env_posix_list,
    .file_exists = env_posix_file_exists,
    .lock = env_posix_lock,
    .unlock = env_posix_unlock,
    .mmap = env_posix_mmap,
    .munmap = env_posix_munmap,
    .writeback = env_posix_writeback,
    .pwrite = env_posix_pwrite,
    .preallocate = env_posix_preallocate,
};

lsm_env *lsm_env_posix(void)
{
    return &env_posix_env;
}

/* ======================================================================================== */
/* Helpers over any env                                                                       */
/* ======================================================================================== */

/* Counts n more bytes written and starts writeback once a MiB or more has not been sent. */
static void env_wb_note(lsm_env *env, lsm_file *f, size_t n, env_wb *wb)
{
    wb->written += n;
    if (env->writeback && wb->written - wb->sent >= ENV_WRITEBACK_BYTES) {
        env->writeback(env, f, wb->sent, wb->written - wb->sent);
        wb->sent = wb->written;
    }
}

int env_append_wb(lsm_env *env, lsm_file *f, const void *p, size_t n, env_wb *wb)
{
    int r = env_append_all(env, f, p, n);
    if (r < 0)
        return r;
    env_wb_note(env, f, n, wb);
    return 0;
}

/* env_append_all's twin for positioned writes: retries short writes; 0 or -errno. */
static int env_pwrite_all(lsm_env *env, lsm_file *f, const void *p, size_t n, uint64_t off)
{
    const uint8_t *s = p;
    while (n > 0) {
        ssize_t r = env->pwrite(env, f, s, n, off);
        if (r < 0)
            return (int)r;
        if (r == 0)
            return -EIO;        /* no progress: retrying would spin forever */
        s += r;
        off += (uint64_t)r;
        n -= (size_t)r;
    }
    return 0;
}

int env_pwrite_wb(lsm_env *env, lsm_file *f, const void *p, size_t n, env_wb *wb)
{
    int r = env_pwrite_all(env, f, p, n, wb->written);
    if (r < 0)
        return r;
    env_wb_note(env, f, n, wb);
    return 0;
}

int env_append_all(lsm_env *env, lsm_file *f, const void *p, size_t n)
{
    const uint8_t *s = p;
    while (n > 0) {
        ssize_t r = env->append(env, f, s, n);
        if (r < 0)
            return (int)r;
        if (r == 0)
            return -EIO;        /* no progress: retrying would spin forever */
        s += r;
        n -= (size_t)r;
    }
    return 0;
}

int env_pread_all(lsm_env *env, lsm_file *f, void *p, size_t n, uint64_t off)
{
    uint8_t *d = p;
    while (n > 0) {
        ssize_t r = env->pread(env, f, d, n, off);
        if (r < 0)
            return (int)r;
        if (r == 0)
            return -ENODATA;
        d += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

int env_file_size(lsm_env *env, const char *path, uint64_t *size)
{
    lsm_file *f;
    *size = 0;
    int r = env->open(env, path, LSM_O_READ, &f);
    if (r < 0)
        return r;
    r = env->size(env, f, size);
    env->close(env, f);
    return r;
}

void env_free_list(char **names, int n)
{
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

int env_write_file_atomic(lsm_env *env, const char *dir, const char *name, const void *p, size_t n)
{
    size_t len = strlen(dir) + strlen(name) + 8;
    char *tmp = xmalloc(len), *dst = xmalloc(len);
    snprintf(tmp, len, "%s/%s.tmp", dir, name);
    snprintf(dst, len, "%s/%s", dir, name);
    lsm_file *f = NULL;
    int r = env->open(env, tmp, LSM_O_CREATE, &f);
    if (r < 0)
        goto out;
    r = env_append_all(env, f, p, n);
    if (r == 0)
        r = env->sync(env, f);
    int rc = env->close(env, f);
    if (r == 0)
        r = rc;
    if (r < 0) {
        env->unlink(env, tmp);  /* best effort: a stale .tmp is harmless, the target is untouched */
        goto out;
    }
    r = env->rename(env, tmp, dst);
    if (r == 0)
        r = env->sync_dir(env, dir);
out:
    free(tmp);
    free(dst);
    return r;
}

int env_read_file(lsm_env *env, const char *path, uint8_t **out, size_t *n)
{
    lsm_file *f;
    int r = env->open(env, path, LSM_O_READ, &f);
    if (r < 0)
        return r;
    uint64_t size;
    r = env->size(env, f, &size);
    if (r < 0) {
        env->close(env, f);
        return r;
    }
    if (size > SIZE_MAX - 1) {
        env->close(env, f);
        return -EFBIG;
    }
    /* malloc, not xmalloc: a huge file is an error to report, not a reason to abort. */
    uint8_t *p = malloc(size ? (size_t)size : 1);
    if (!p) {
        env->close(env, f);
        return -ENOMEM;
    }
    r = env_pread_all(env, f, p, (size_t)size, 0);
    env->close(env, f);
    if (r < 0) {
        free(p);
        return r;
    }
    *out = p;
    *n = (size_t)size;
    return 0;
}

/* ======================================================================================== */
/* Fault env                                                                                  */
/* ======================================================================================== */

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
    int short_writes;              /* appends write at most half */
    long mutations;                /* mutating calls attempted so far */
    uint64_t rng;                  /* xorshift64 state for power loss's coin tosses */
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
static int faultenv_mutate(faultenv *fe)
{
    fe->mutations++;
    if (!fe->fail_err)
        return 0;
    if (fe->fail_left > 0) {
        fe->fail_left--;
        return 0;
    }
    return -fe->fail_err;
}

static lsm_file *faultenv_handle(fault_inode *ino, int writable)
{
    lsm_file *f = xcalloc(1, sizeof *f);
    f->fd = -1;
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
        faultenv_grow(f->ino, (size_t)(off + n));
    pthread_mutex_unlock(&fe->mu);
    return r;
}

static int faultenv_sync(lsm_env *env, lsm_file *f)
{
    faultenv *fe = faultenv_of(env);
    pthread_mutex_lock(&fe->mu);
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
                if (memcmp(ino->data + p, ino->old + p, n) != 0 && (lsm_xorshift64(&fe->rng) & 1))
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
