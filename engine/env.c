/*
 * env.c — the POSIX file-system environment behind env.h, which every database uses, and the
 * helpers that work over any env (whole appends and reads, atomic file replacement).
 *
 * Every file access of the engine goes through env.h's small table of function pointers, so that
 * tests can put an in-memory "fault env" (tests/engine/faultenv.c) in its place and check every
 * crash-safety argument against a model of what a real disk keeps. The POSIX env is a thin layer: it
 * retries EINTR, returns -errno, and adds nothing the kernel does not do (no caching, no
 * buffering). Appends go through an O_APPEND descriptor, positioned writes (LSM_O_WRITE_AT) through
 * a plain one; "sync" is fdatasync, "writeback" is sync_file_range(SYNC_FILE_RANGE_WRITE),
 * "preallocate" is fallocate(2) mode 0; directory entries are made durable by fsync on the
 * directory. The lock is an open-file-description (F_OFD_SETLK) write lock, so a second lock of
 * the same file conflicts even inside the same process (a second lsm_open of one directory must
 * fail), and the holder writes its pid into the lock file so that a loser can say who holds it.
 * Read-only handles take a shared (read) lock of the same file, opened for reading only.
 *
 * It must never print, or report success for an operation that did not happen.
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
#include <sys/statvfs.h>
#include <unistd.h>
#include "env.h"
#include "lsm_int.h"

struct lsm_file {
    int fd;                        /* the descriptor */
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

static int env_posix_space(lsm_env *env, const char *dir, uint64_t *avail)
{
    struct statvfs sv;
    if (statvfs(dir, &sv) < 0)
        return -errno;
    *avail = (uint64_t)sv.f_bavail * sv.f_frsize;
    return 0;
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

/* Takes an open-file-description lock of type (F_WRLCK, F_RDLCK) on all of fd without waiting:
   0, or -1 with errno (EAGAIN or EACCES: someone holds a conflicting one). */
static int env_posix_ofd_lock(int fd, short type)
{
    struct flock fl;
    memset(&fl, 0, sizeof fl);      /* l_pid must be 0 for OFD locks */
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    int r;
    do
        r = fcntl(fd, F_OFD_SETLK, &fl);
    while (r < 0 && errno == EINTR);
    return r;
}

static int env_posix_lock(lsm_env *env, const char *path, lsm_file **out, long *holder_pid)
{
    int fd;
    do
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return -errno;
    if (env_posix_ofd_lock(fd, F_WRLCK) < 0) {
        int e = errno;
        if (e == EAGAIN || e == EACCES) {
            /* F_OFD_GETLK reports pid -1 for OFD locks, so the file's text is the only witness,
               and only of an exclusive holder: shared (read-only) holders never write it. */
            struct flock q;
            memset(&q, 0, sizeof q);
            q.l_type = F_WRLCK;
            q.l_whence = SEEK_SET;
            int shared = fcntl(fd, F_OFD_GETLK, &q) == 0 && q.l_type == F_RDLCK;
            if (holder_pid)
                *holder_pid = shared ? -1 : env_posix_lock_holder(fd);
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

static int env_posix_lock_shared(lsm_env *env, const char *path, lsm_file **out, long *holder_pid)
{
    int fd;
    do
        fd = open(path, O_RDONLY | O_CLOEXEC);
    while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return -errno;
    if (env_posix_ofd_lock(fd, F_RDLCK) < 0) {
        int e = errno;
        if (e == EAGAIN || e == EACCES) {
            if (holder_pid)
                *holder_pid = env_posix_lock_holder(fd);
            e = EWOULDBLOCK;
        }
        close(fd);
        return -e;
    }
    lsm_file *f = xcalloc(1, sizeof *f);
    f->fd = fd;
    *out = f;
    return 0;
}

static int env_posix_link(lsm_env *env, const char *from, const char *to)
{
    return link(from, to) < 0 ? -errno : 0;
}

static int env_posix_rmdir(lsm_env *env, const char *path)
{
    return rmdir(path) < 0 ? -errno : 0;
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
    .space = env_posix_space,
    .lock_shared = env_posix_lock_shared,
    .link = env_posix_link,
    .rmdir = env_posix_rmdir,
};

lsm_env *env_posix(void)
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

int env_copy_file(lsm_env *env, const char *from, const char *to)
{
    lsm_file *in = NULL, *out = NULL;
    int r = env->open(env, from, LSM_O_READ, &in);
    if (r < 0)
        return r;
    r = env->open(env, to, LSM_O_CREATE, &out);
    if (r < 0) {
        env->close(env, in);
        return r;
    }
    size_t cap = 1u << 20;
    uint8_t *p = xmalloc(cap);
    uint64_t off = 0;
    for (;;) {
        ssize_t n = env->pread(env, in, p, cap, off);
        if (n < 0) {
            r = (int)n;
            break;
        }
        if (n == 0)
            break;
        r = env_append_all(env, out, p, (size_t)n);
        if (r < 0)
            break;
        off += (uint64_t)n;
    }
    free(p);
    if (r == 0)
        r = env->sync(env, out);
    env->close(env, in);
    int c = env->close(env, out);
    if (r == 0 && c < 0)
        r = c;
    if (r < 0)
        env->unlink(env, to);
    return r;
}
