/*
 * env.h — the engine's only door to the file system: a small table of function pointers.
 *
 * Every file operation of the engine goes through an lsm_env so that tests can substitute one that
 * injects faults. env_posix() is the default. The tests' fault env (tests/engine/faultenv.h) is
 * an in-memory file system that models what survives a power loss: file bytes survive only up to
 * the last sync of that file, and a directory entry (creation, rename, unlink) survives only once
 * its directory was synced.
 *
 * Conventions: functions return 0 (or a byte count) on success and a negative errno on failure;
 * they never print. Paths are full paths (the engine joins dir + "/" + name).
 */
#ifndef LSM_ENV_H
#define LSM_ENV_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct lsm_file lsm_file;   /* defined by each env */
typedef struct lsm_env lsm_env;

enum {
    LSM_O_READ   = 1,   /* open an existing file for pread */
    LSM_O_CREATE = 2,   /* create or truncate a file for append (and pread) */
    LSM_O_APPEND = 4,   /* open an existing file for append (and pread) */
    LSM_O_WRITE_AT = 8  /* with LSM_O_CREATE: the file is written with pwrite at chosen offsets
                           (never with append), so it can be preallocated and written over */
};

struct lsm_env {
    int     (*open)(lsm_env *env, const char *path, int flags, lsm_file **out);
    /* Reads up to n bytes at off; returns bytes read (fewer only at end of file) or -errno. */
    ssize_t (*pread)(lsm_env *env, lsm_file *f, void *buf, size_t n, uint64_t off);
    /* Appends at the end; returns bytes written (may be fewer than n: a short write) or -errno. */
    ssize_t (*append)(lsm_env *env, lsm_file *f, const void *buf, size_t n);
    int     (*sync)(lsm_env *env, lsm_file *f);                 /* file data durable */
    int     (*size)(lsm_env *env, lsm_file *f, uint64_t *size);
    int     (*close)(lsm_env *env, lsm_file *f);                /* accepts NULL */
    int     (*rename)(lsm_env *env, const char *from, const char *to);
    int     (*unlink)(lsm_env *env, const char *path);
    int     (*mkdir)(lsm_env *env, const char *path);           /* mode 0700; -EEXIST if present */
    int     (*sync_dir)(lsm_env *env, const char *dir);         /* entries of dir durable */
    /* Names (not paths) in dir, without "." and "..": *names is an array of *n malloc'd strings,
       freed by env_free_list(). */
    int     (*list)(lsm_env *env, const char *dir, char ***names, int *n);
    int     (*file_exists)(lsm_env *env, const char *path);     /* 1, 0, or -errno */
    /* Takes an exclusive lock on path (created if missing). -EWOULDBLOCK when another handle or
       process holds it; then, if holder_pid is non-NULL, *holder_pid is the holder's pid or 0. */
    int     (*lock)(lsm_env *env, const char *path, lsm_file **out, long *holder_pid);
    int     (*unlock)(lsm_env *env, lsm_file *f);               /* releases and closes */
    /* Optional (NULL where unsupported, as in the fault env): maps the first size bytes of an
       immutable file read-only; *addr stays valid until munmap, even after close. */
    int     (*mmap)(lsm_env *env, lsm_file *f, uint64_t size, const void **addr);
    int     (*munmap)(lsm_env *env, const void *addr, uint64_t size);
    /* Optional (NULL = nothing to do): starts writing bytes [off, off+n) of f to the device and
       returns without waiting. Durability is not implied; only sync gives it. Writers call it as
       they go so that the sync at the end finds little left to write. */
    int     (*writeback)(lsm_env *env, lsm_file *f, uint64_t off, uint64_t n);
    /* Optional (NULL where unsupported): writes n bytes at off of a file opened with
       LSM_O_CREATE | LSM_O_WRITE_AT, growing it if they end past its size; returns bytes written
       (may be fewer than n) or -errno. */
    ssize_t (*pwrite)(lsm_env *env, lsm_file *f, const void *buf, size_t n, uint64_t off);
    /* Optional (NULL where unsupported): makes the file at least off + n bytes long, with blocks
       allocated for [off, off + n) and any new bytes reading as zero, so that writing over them
       later changes no file metadata and their fdatasync writes data only (fallocate(2) mode 0).
       -EOPNOTSUPP where the file system cannot. Like a write, the new size is durable after sync.
       Bytes written over a preallocated range reach the disk page by page, in no particular
       order, until the next sync: after a power loss some may read as zero while later ones
       survive. */
    int     (*preallocate)(lsm_env *env, lsm_file *f, uint64_t off, uint64_t n);
    /* Optional (NULL where unknown): bytes an unprivileged writer can still allocate on the file
       system holding dir (statvfs(3) f_bavail * f_frsize). */
    int     (*space)(lsm_env *env, const char *dir, uint64_t *avail);
    /* Optional (NULL: read-only handles take no lock): takes a shared lock on path, which must
       exist (-ENOENT otherwise; it is never created), opened for reading only, so that it works on
       a read-only file system. Shared locks coexist; -EWOULDBLOCK while an exclusive lock (lock
       above) is held, with *holder_pid as there. An exclusive lock refused because of shared
       holders sets *holder_pid to -1. */
    int     (*lock_shared)(lsm_env *env, const char *path, lsm_file **out, long *holder_pid);
    /* Optional (NULL: callers copy instead): makes to a second name of the file from (link(2));
       -EXDEV across file systems, -EEXIST if to exists. */
    int     (*link)(lsm_env *env, const char *from, const char *to);
    /* Optional (NULL: directories are never removed): removes the empty directory path;
       -ENOTEMPTY (or -EEXIST) when it is not empty. */
    int     (*rmdir)(lsm_env *env, const char *path);
};

lsm_env *env_posix(void);                 /* static; never freed */

/* Helpers over any env. */
int  env_append_all(lsm_env *env, lsm_file *f, const void *p, size_t n); /* retries short writes; 0 or -errno */
/* Bytes a writer has appended to one file, and how many of them it has sent to env->writeback. */
typedef struct env_wb {
    uint64_t written, sent;
} env_wb;
/* env_append_all, then, once ENV_WRITEBACK_BYTES are appended and not yet sent, env->writeback on
   them (a hint: its failure is ignored; the final sync reports real trouble). Writers of large
   files call it so that their final sync waits for a short tail only. */
#define ENV_WRITEBACK_BYTES (1u << 20)
int  env_append_wb(lsm_env *env, lsm_file *f, const void *p, size_t n, env_wb *wb);
/* The same for a file opened with LSM_O_WRITE_AT: env->pwrite of all n bytes at offset wb->written
   (retrying short writes), then the same writeback hint. */
int  env_pwrite_wb(lsm_env *env, lsm_file *f, const void *p, size_t n, env_wb *wb);
int  env_pread_all(lsm_env *env, lsm_file *f, void *p, size_t n, uint64_t off); /* -EIO-free: returns -ENODATA if short */
void env_free_list(char **names, int n);
/* Size of the file at path (open, size, close); -errno if it cannot be opened. */
int  env_file_size(lsm_env *env, const char *path, uint64_t *size);
/* Writes data to path atomically and durably: path.tmp, sync, rename, sync_dir(dir). */
int  env_write_file_atomic(lsm_env *env, const char *dir, const char *name, const void *p, size_t n);
/* Copies the file from to a new file to (created, synced, closed); 0 or -errno. */
int  env_copy_file(lsm_env *env, const char *from, const char *to);
/* Reads the whole file into *out (malloc'd, caller frees) */
int  env_read_file(lsm_env *env, const char *path, uint8_t **out, size_t *n);


#endif /* LSM_ENV_H */
