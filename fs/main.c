/*
 * main.c — the lsmfs command: parse options, open the database, mount, detach, serve, close.
 *
 * What: `lsmfs [options] DATADIR MOUNTPOINT` (options may also follow the positionals, as
 * mount.fuse3 passes them). Our -o options are taken out; everything else goes to libfuse.
 *
 * Why so: a failure must reach stderr with a non-zero exit before the command returns, but the
 * engine's background threads do not survive fork(). So the command forks first: the child opens
 * the engine, creates the session and mounts, then tells the parent through a pipe that it is
 * ready (the parent exits 0) or dies after printing its error (the parent exits with the child's
 * status). The engine's lock on DATADIR/LOCK is taken and kept by the child alone.
 *
 * Never: detach before the mount is in place; leave the engine open after the session ends
 * (lsm_close runs on every unmount, so the last writes are synced and the lock released).
 */
#include "lsmfs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>

#define LSMFS_VERSION "0.1.0"

/* The command line as fuse_opt_parse leaves it; main's alone. */
struct cmdline {
    char *datadir, *mountpoint;  /* the positionals, as given; malloc'd */
    char *memtable_size, *cache_size, *compression, *sync, *max_file_size, *dirty_limit,
         *timeout, *dir_cookies, *reserve, *snapshot, *logfile, *loglevel; /* -o values not parsed yet; malloc'd, NULL when absent */
    int writeback, kernel_cache, close_to_open; /* -o flags; kernel_cache -1 when not given */
    int ro;                      /* -o ro (kept for libfuse too) */
    int init;                    /* -o init: a database may start in a non-empty DATADIR */
    int show_help, show_version, has_fsname; /* -h, -V, -o fsname= seen */
    int others, has_perms;       /* -o allow_other or allow_root, -o default_permissions seen */
    int mt;                      /* -o mt: libfuse's multi-threaded loop */
    int uring;                   /* -o uring: FUSE over io_uring (uring.c) */
    char *workers, *spin;        /* -o workers=N, -o spin=USEC; malloc'd, NULL when absent */
};

enum { KEY_HELP, KEY_VERSION, KEY_FSNAME, KEY_RO, KEY_RW };

#define OPT(t, f) { t, offsetof(struct cmdline, f), 1 }
static const struct fuse_opt spec[] = {
    OPT("memtable_size=%s", memtable_size),
    OPT("cache_size=%s", cache_size),
    OPT("compression=%s", compression),
    OPT("sync=%s", sync),
    OPT("max_file_size=%s", max_file_size),
    OPT("dirty_limit=%s", dirty_limit),
    OPT("timeout=%s", timeout),
    OPT("dir_cookies=%s", dir_cookies),
    OPT("reserve=%s", reserve),
    OPT("snapshot=%s", snapshot),
    OPT("logfile=%s", logfile),
    OPT("loglevel=%s", loglevel),
    OPT("workers=%s", workers),
    OPT("spin=%s", spin),
    { "mt", offsetof(struct cmdline, mt), 1 },
    { "uring", offsetof(struct cmdline, uring), 1 },
    { "init", offsetof(struct cmdline, init), 1 },
    FUSE_OPT_KEY("ro", KEY_RO),
    FUSE_OPT_KEY("rw", KEY_RW),
    { "writeback", offsetof(struct cmdline, writeback), 1 },
    { "nowriteback", offsetof(struct cmdline, writeback), 0 },
    { "kernel_cache", offsetof(struct cmdline, kernel_cache), 1 },
    { "nokernel_cache", offsetof(struct cmdline, kernel_cache), 0 },
    { "close_to_open", offsetof(struct cmdline, close_to_open), 1 },
    { "noclose_to_open", offsetof(struct cmdline, close_to_open), 0 },
    FUSE_OPT_KEY("-h", KEY_HELP),
    FUSE_OPT_KEY("--help", KEY_HELP),
    FUSE_OPT_KEY("-V", KEY_VERSION),
    FUSE_OPT_KEY("--version", KEY_VERSION),
    FUSE_OPT_KEY("fsname=", KEY_FSNAME),
    /* fstab and mount(8) words that mean nothing to a FUSE filesystem */
    FUSE_OPT_KEY("defaults", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("auto", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("noauto", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("nofail", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("_netdev", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("user", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("users", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("nouser", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("owner", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("group", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("comment=", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("lazytime", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("nolazytime", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_END
};

static int main_opt_proc(void *data, const char *arg, int key, struct fuse_args *out)
{
    struct cmdline *c = data;
    switch (key) {
    case FUSE_OPT_KEY_NONOPT:
        if (!c->datadir) {
            c->datadir = strdup(arg);
            return 0;
        }
        if (!c->mountpoint) {
            c->mountpoint = strdup(arg);
            return 0;
        }
        fprintf(stderr, "lsmfs: unexpected argument '%s' (usage: lsmfs [options] DATADIR "
                        "MOUNTPOINT)\n", arg);
        return -1;
    case FUSE_OPT_KEY_OPT:
        if (strncmp(arg, "x-", 2) == 0)
            return 0;   /* x-systemd.* and friends are for other programs */
        if (strcmp(arg, "allow_other") == 0 || strcmp(arg, "allow_root") == 0)
            c->others = 1;
        else if (strcmp(arg, "default_permissions") == 0)
            c->has_perms = 1;
        return 1;
    case KEY_HELP:
        c->show_help = 1;
        return 0;
    case KEY_VERSION:
        c->show_version = 1;
        return 0;
    case KEY_FSNAME:
        c->has_fsname = 1;
        return 1;
    case KEY_RO:
    case KEY_RW:
        c->ro = key == KEY_RO;
        return 1;   /* the kernel's read-only mount too */
    }
    return 1;
}

static void main_usage(FILE *f)
{
    fprintf(f,
"usage: lsmfs [options] DATADIR MOUNTPOINT\n"
"\n"
"Mounts the liblsm database in DATADIR (created if missing) at MOUNTPOINT: every key is a file.\n"
"\n"
"lsmfs options:\n"
"    -o memtable_size=SIZE  memtable flushed to a table at this size (default 4M)\n"
"    -o cache_size=SIZE     block cache (default 8M)\n"
"    -o compression=none|lz4|zstd   table block compression (default none)\n"
"    -o sync=fsync|close|always     when writes reach stable storage (default fsync)\n"
"    -o max_file_size=SIZE  quota per file: writes past it fail with EFBIG (default\n"
"                           none: files up to 16T)\n"
"    -o dirty_limit=SIZE    memory for files being written (default 256M)\n"
"    -o timeout=SECONDS     kernel cache time for names and attributes (default 3600)\n"
"    -o dir_cookies=SIZE    memory that maps listing offsets back to names (default 32M)\n"
"    -o reserve=SIZE        disk space held back so that files can be removed when the\n"
"                           disk is full (default 2 x memtable_size + 4M, at most a\n"
"                           tenth of the file system holding DATADIR; 0 = none)\n"
"    -o nokernel_cache      drop a file's cached pages at every open (default: keep\n"
"                           them while the file is unchanged)\n"
"    -o writeback           kernel_cache plus the kernel's writeback cache\n"
"    -o close_to_open       strict mode: a reader sees the last flushed version, not a\n"
"                           writer's unflushed bytes (no shared mmap)\n"
"    -o ro                  read-only: the database is opened read-only (shared lock)\n"
"    -o snapshot=NAME       mount the snapshot NAME of DATADIR read-only\n"
"    -o init                start a database in a DATADIR that holds other files\n"
"    -o logfile=PATH        append messages to PATH (default: stderr with -f, else syslog)\n"
"    -o loglevel=LEVEL      err, warning, notice, info (default) or debug\n"
"    -o workers=N           threads for requests that wait for the disk (default 4);\n"
"                           one thread serves all others\n"
"    -o spin=USEC           the serving thread polls this long for the next request\n"
"                           before it sleeps (default 50; 0 = sleep at once)\n"
"    -o mt                  libfuse's multi-threaded loop instead (clone_fd,\n"
"                           max_threads and max_idle_threads apply to it)\n"
"    -o uring               experimental: the kernel hands each request to a thread on\n"
"                           the requester's CPU, by io_uring (Linux 6.14+, needs the fuse\n"
"                           module's enable_uring=Y; else /dev/fuse, with a warning)\n"
"    SIZE takes a K, M, G or T suffix (powers of 1024).\n"
"\n");
}

/* SIZE with an optional K/M/G suffix (KiB-style suffixes accepted too). */
static int main_parse_size(const char *name, const char *s, size_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || errno || s[0] == '-')
        goto bad;
    unsigned long long mul = 1;
    switch (*end) {
    case 'k': case 'K': mul = 1ull << 10; end++; break;
    case 'm': case 'M': mul = 1ull << 20; end++; break;
    case 'g': case 'G': mul = 1ull << 30; end++; break;
    case 't': case 'T': mul = 1ull << 40; end++; break;
    }
    if (mul > 1 && (*end == 'i' || *end == 'I') && (end[1] == 'b' || end[1] == 'B'))
        end += 2;
    else if (mul > 1 && (*end == 'b' || *end == 'B'))
        end++;
    if (*end || (v && v > SIZE_MAX / mul))
        goto bad;
    *out = (size_t)(v * mul);
    return 0;
bad:
    fprintf(stderr, "lsmfs: invalid size for %s: '%s' (want a number with an optional K, M, G or T "
                    "suffix)\n", name, s);
    return -1;
}

/* The index in words (a NULL-terminated list) of the option value s, or -1 after saying what was
   wanted. */
/* A whole number from lo to hi, as -o NAME=S gives it; -1 after saying why. */
static int main_parse_range(const char *name, const char *s, long lo, long hi, const char *unit,
                            long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end || errno || v < lo || v > hi) {
        fprintf(stderr, "lsmfs: invalid %s '%s' (want %ld to %ld %s)\n", name, s, lo, hi, unit);
        return -1;
    }
    *out = v;
    return 0;
}

static int main_parse_word(const char *name, const char *s, const char *const *words)
{
    for (int i = 0; words[i]; i++)
        if (!strcmp(s, words[i]))
            return i;
    fprintf(stderr, "lsmfs: invalid %s '%s' (want ", name, s);
    for (int i = 0; words[i]; i++)
        fprintf(stderr, "%s%s", i == 0 ? "" : words[i + 1] ? ", " : " or ", words[i]);
    fprintf(stderr, ")\n");
    return -1;
}

static int main_apply_options(struct lsmfs *fs, const struct cmdline *c)
{
    fs->memtable_size = 4u << 20;
    fs->cache_size = 8u << 20;
    fs->max_file_size = 0;
    fs->dirty_limit = 256u << 20;
    fs->cookie_bytes = 32u << 20;
    fs->reserve = SIZE_MAX;
    fs->timeout = 3600.0;
    fs->compression = LSM_COMPRESSION_NONE;
    fs->sync_mode = LSMFS_SYNC_FSYNC;
    fs->writeback = c->writeback;
    fs->close_to_open = c->close_to_open;
    fs->read_only = c->ro || c->snapshot;
    /* Pages stay cached across opens unless asked otherwise, or unless the strict mode needs
       every read to come here. */
    fs->kernel_cache = c->kernel_cache == 1 || c->writeback ||
                       (c->kernel_cache == -1 && !c->close_to_open);
    if (fs->close_to_open && fs->kernel_cache) {
        fprintf(stderr, "lsmfs: close_to_open cannot be combined with %s: the kernel's page "
                        "cache shows every reader the newest bytes\n",
                c->writeback ? "writeback" : "kernel_cache");
        return -1;
    }
    size_t quota = 0;
    if ((c->memtable_size &&
         main_parse_size("memtable_size", c->memtable_size, &fs->memtable_size)) ||
        (c->cache_size && main_parse_size("cache_size", c->cache_size, &fs->cache_size)) ||
        (c->max_file_size &&
         main_parse_size("max_file_size", c->max_file_size, &quota)) ||
        (c->dirty_limit && main_parse_size("dirty_limit", c->dirty_limit, &fs->dirty_limit)) ||
        (c->dir_cookies && main_parse_size("dir_cookies", c->dir_cookies, &fs->cookie_bytes)) ||
        (c->reserve && main_parse_size("reserve", c->reserve, &fs->reserve)))
        return -1;
    if (fs->memtable_size < 4096) {
        fprintf(stderr, "lsmfs: memtable_size must be at least 4K\n");
        return -1;
    }
    fs->max_file_size = quota;
    if (fs->max_file_size > LSM_MAX_EXTENT_VALUE) {
        fprintf(stderr, "lsmfs: max_file_size can be at most 16T (the engine's largest value)\n");
        return -1;
    }
    /* in the order of LSM_COMPRESSION_* and LSMFS_SYNC_* */
    static const char *const compressions[] = { "none", "lz4", "zstd", NULL };
    static const char *const syncs[] = { "fsync", "close", "always", NULL };
    if (c->compression &&
        (fs->compression = main_parse_word("compression", c->compression, compressions)) < 0)
        return -1;
    if (c->sync && (fs->sync_mode = main_parse_word("sync", c->sync, syncs)) < 0)
        return -1;
    if (c->timeout) {
        char *end;
        fs->timeout = strtod(c->timeout, &end);
        if (end == c->timeout || *end || fs->timeout < 0) {
            fprintf(stderr, "lsmfs: invalid timeout '%s' (want seconds)\n", c->timeout);
            return -1;
        }
    }
    return 0;
}

/* Adds "-o<name>=<value>" with the commas and backslashes of value escaped for fuse_opt. */
static int main_add_opt(struct fuse_args *args, const char *name, const char *value)
{
    size_t n = strlen(name), vl = strlen(value);
    char *s = malloc(2 + n + 1 + 2 * vl + 1), *p = s;
    if (!s)
        return -1;
    p += sprintf(p, "-o%s=", name);
    for (const char *v = value; *v; v++) {
        if (*v == ',' || *v == '\\')
            *p++ = '\\';
        *p++ = *v;
    }
    *p = '\0';
    int rc = fuse_opt_add_arg(args, s);
    free(s);
    return rc;
}

/* The reserve when none was asked for: room for two memtable flushes and some, but never more
   than a tenth of the file system that holds the data directory (or, while that does not exist
   yet, its parent). */
static size_t main_default_reserve(const struct lsmfs *fs)
{
    size_t want = 2 * fs->memtable_size + (4u << 20);
    struct statvfs sv;
    char *parent = strdup(fs->datadir), *slash = parent ? strrchr(parent, '/') : NULL;
    if (slash)
        *(slash == parent ? slash + 1 : slash) = '\0';
    if (statvfs(fs->datadir, &sv) == 0 || (parent && statvfs(parent, &sv) == 0)) {
        uint64_t tenth = (uint64_t)sv.f_blocks * sv.f_frsize / 10;
        if (tenth < want)
            want = (size_t)tenth;
    }
    free(parent);
    return want;
}

/* The engine's messages (lsm_options_set_logger) go where the daemon's own go, at the matching
   priority, so -o loglevel=debug shows compactions and the log file the full-disk events. It
   calls nothing in the engine, as the engine requires, and takes no lock of ours. */
static void main_engine_log(void *arg, int level, const char *msg)
{
    static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
    (void)arg;
    lsmfs_log(level >= 0 && level <= LSM_LOG_DEBUG ? prio[level] : LOG_DEBUG, "liblsm: %s", msg);
}

/* Opens the engine, creates the session and mounts. Prints the reason on stderr on failure. */
static int main_setup(struct lsmfs *fs, struct fuse_args *args, const char *datadir_arg,
                 const char *mountpoint)
{
    lsm_options *lo = lsm_options_new();
    int rc;

    if (!lo) {
        fprintf(stderr, "lsmfs: out of memory\n");
        goto fail_0;
    }
    lsm_options_set_memtable_bytes(lo, fs->memtable_size);
    lsm_options_set_cache_bytes(lo, fs->cache_size);
    lsm_options_set_compression(lo, fs->compression, 1);
    lsm_options_set_sync_writes(lo, fs->sync_mode == LSMFS_SYNC_ALWAYS);
    /* Read-only: the engine writes nothing and shares the directory with other readers (a
       read-write daemon excludes them, and they it). */
    lsm_options_set_read_only(lo, fs->read_only);
    lsm_options_set_create_if_missing(lo, !fs->read_only);
    if (fs->reserve == SIZE_MAX)
        fs->reserve = fs->read_only ? 0 : main_default_reserve(fs);
    lsm_options_set_reserve_bytes(lo, fs->reserve);
    lsm_options_set_logger(lo, main_engine_log, NULL);
    /* A daemon that was just unmounted may still be closing the database: give it a moment. */
    for (int tries = 0; (rc = lsm_open(fs->datadir, lo, &fs->db)) == LSM_BUSY && tries < 40;
         tries++)
        usleep(50000);
    lsm_options_free(lo);
    if (rc != LSM_OK) {
        const char *msg = lsm_errmsg(NULL);
        fprintf(stderr, "lsmfs: %s: %s\n", datadir_arg, msg && *msg ? msg : lsm_strerror(rc));
        goto fail_0;
    }
    if ((rc = lsmfs_fs_open(fs))) {
        if (rc == ENOMEM)
            fprintf(stderr, "lsmfs: out of memory\n");
        else
            fprintf(stderr, "lsmfs: %s: cannot read the root directory or the inode number "
                    "counter: %s\n", datadir_arg, strerror(rc));
        goto fail_1;
    }
    struct fuse_lowlevel_ops ops;
    lsmfs_ops_table(&ops);
    lsmfs_pool_ops(&ops);
    if (lsmfs_views_init(fs)) {
        fprintf(stderr, "lsmfs: out of memory\n");
        goto fail_2;
    }
    fs->se = fuse_session_new(args, &ops, sizeof ops, fs);
    if (!fs->se)
        goto fail_2;   /* libfuse said why (e.g. an unknown option) */
    if (fuse_set_signal_handlers(fs->se) != 0) {
        fprintf(stderr, "lsmfs: cannot set signal handlers\n");
        goto fail_3;
    }
    if (fuse_session_mount(fs->se, mountpoint) != 0) {
        fprintf(stderr, "lsmfs: %s: mount failed\n", mountpoint);
        goto fail_4;
    }
    return 0;

fail_4:
    fuse_remove_signal_handlers(fs->se);
fail_3:
    fuse_session_destroy(fs->se);
    fs->se = NULL;
fail_2:
    lsmfs_views_close(fs);
    lsmfs_fs_close(fs);
    goto fail_0;
fail_1:
    lsm_close(fs->db);
    fs->db = NULL;
fail_0:
    return -1;
}

/* Forks; the parent waits for the child's word and exits with it. Returns the pipe's write end
   in the child. */
static int main_start_daemon(void)
{
    int pfd[2];
    if (pipe(pfd) != 0) {
        perror("lsmfs: pipe");
        exit(1);
    }
    pid_t pid = fork();
    if (pid < 0) {
        perror("lsmfs: fork");
        exit(1);
    }
    if (pid > 0) {
        char c;
        ssize_t n;
        close(pfd[1]);
        do
            n = read(pfd[0], &c, 1);
        while (n < 0 && errno == EINTR);
        if (n == 1 && c == 0)
            _exit(0);
        int st;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
            ;
        _exit(WIFEXITED(st) && WEXITSTATUS(st) ? WEXITSTATUS(st) : 1);
    }
    close(pfd[0]);
    return pfd[1];
}

static void main_detach(int fd)
{
    int nul = open("/dev/null", O_RDWR);
    setsid();
    if (chdir("/") != 0)
        perror("lsmfs: chdir /");
    if (nul >= 0) {
        dup2(nul, 0);
        dup2(nul, 1);
        dup2(nul, 2);
        if (nul > 2)
            close(nul);
    }
    char ok = 0;
    if (write(fd, &ok, 1) != 1)
        syslog(LOG_WARNING, "could not signal the parent");
    close(fd);
}

/* Whether name is one a database directory may hold: the engine's files (lsm-format(5)), what
   lsmfs and lsmctl keep beside them, and lost+found (DATADIR may be a file system's root). */
static int main_db_name(const char *name)
{
    static const char *const exact[] = { "CURRENT", "CURRENT.tmp", "LOCK", "RESERVE",
                                         "lsmfs.ctl", "snapshots", "lost+found", NULL };
    static const char *const suffix[] = { ".log", ".sst", ".blob", ".tmp", NULL };
    for (int i = 0; exact[i]; i++)
        if (strcmp(name, exact[i]) == 0)
            return 1;
    if (strncmp(name, "MANIFEST-", 9) == 0)
        return 1;
    size_t n = strlen(name);
    for (int i = 0; suffix[i]; i++) {
        size_t sl = strlen(suffix[i]);
        if (n > sl && strcmp(name + n - sl, suffix[i]) == 0 && name[0] >= '0' && name[0] <= '9')
            return 1;
    }
    return 0;
}

/* What dir holds: *db when it has a CURRENT file, *foreign names a file that no database
   directory holds (the first found; caller frees), or NULL. -1 if it cannot be read. */
static int main_scan_dir(const char *dir, int *db, char **foreign)
{
    DIR *d = opendir(dir);
    *db = 0;
    *foreign = NULL;
    if (!d)
        return -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (strcmp(e->d_name, "CURRENT") == 0)
            *db = 1;
        else if (!*foreign && !main_db_name(e->d_name))
            *foreign = strdup(e->d_name);
    }
    closedir(d);
    return 0;
}

/* Refuses the mistakes that hide or scatter data: a mount point that holds a database (DATADIR
   and MOUNTPOINT swapped: the new mount would hide it), a DATADIR that holds other files and no
   database (lsmfs would add its files among them), a DATADIR inside the mount point. */
static int main_check_places(const char *datadir, const char *mountpoint, const char *mp_arg,
                             const char *dd_arg, int init)
{
    int db;
    char *foreign;
    if (main_scan_dir(mountpoint, &db, &foreign) == 0) {
        free(foreign);
        if (db) {
            fprintf(stderr, "lsmfs: %s: the mount point holds an lsmfs database (a CURRENT file): "
                            "mounting over it would hide it. Did you swap DATADIR and "
                            "MOUNTPOINT? (usage: lsmfs DATADIR MOUNTPOINT)\n", mp_arg);
            return -1;
        }
    }
    if (!datadir)
        return 0;
    if (main_scan_dir(datadir, &db, &foreign) == 0 && !db && foreign && !init) {
        fprintf(stderr, "lsmfs: %s: not empty and holds no lsmfs database (it has '%s'): "
                        "refusing to put database files among other files; give an empty or "
                        "new directory as DATADIR (or -o init to start one there anyway)\n",
                dd_arg, foreign);
        free(foreign);
        return -1;
    }
    free(foreign);
    char *mp = realpath(mountpoint, NULL);
    size_t ml = mp ? strlen(mp) : 0;
    int inside = mp && strncmp(datadir, mp, ml) == 0 &&
                 (datadir[ml] == '\0' || datadir[ml] == '/' || ml == 1);
    free(mp);
    if (inside) {
        fprintf(stderr, "lsmfs: %s: DATADIR lies inside the mount point %s, which would hide it "
                        "from the daemon itself\n", dd_arg, mp_arg);
        return -1;
    }
    return 0;
}

/* -o snapshot=NAME: DATADIR becomes DATADIR/snapshots/NAME (lsmctl snapshot create), mounted
   read-only. */
static int main_snapshot_path(struct cmdline *c, struct fuse_args *args)
{
    char *path = NULL, cur[PATH_MAX];
    if (!*c->snapshot || strchr(c->snapshot, '/') || strcmp(c->snapshot, ".") == 0 ||
        strcmp(c->snapshot, "..") == 0) {
        fprintf(stderr, "lsmfs: snapshot=%s: not a snapshot name\n", c->snapshot);
        return -1;
    }
    if (asprintf(&path, "%s/snapshots/%s", c->datadir, c->snapshot) < 0)
        return -1;
    snprintf(cur, sizeof cur, "%s/CURRENT", path);
    if (access(cur, F_OK) != 0) {
        fprintf(stderr, "lsmfs: %s: no snapshot '%s' (lsmctl -d %s snapshot list shows them)\n",
                c->datadir, c->snapshot, c->datadir);
        free(path);
        return -1;
    }
    free(c->datadir);
    c->datadir = path;
    if (!c->ro && fuse_opt_add_arg(args, "-oro") != 0)
        return -1;
    c->ro = 1;
    return 0;
}

/* The mount point must be a directory; DATADIR is created if missing and must be one we may use.
   Sets fs->datadir to its absolute path. */
static int main_check_paths(struct lsmfs *fs, const struct cmdline *c)
{
    struct stat st;
    if (stat(c->mountpoint, &st) != 0) {
        fprintf(stderr, "lsmfs: %s: %s\n", c->mountpoint, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        fprintf(stderr, "lsmfs: %s: %s\n", c->mountpoint, strerror(ENOTDIR));
        return -1;
    }
    if (main_check_places(NULL, c->mountpoint, c->mountpoint, c->datadir, c->init) != 0)
        return -1;
    if (!c->ro && mkdir(c->datadir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "lsmfs: %s: cannot create: %s\n", c->datadir, strerror(errno));
        return -1;
    }
    if (!(fs->datadir = realpath(c->datadir, NULL))) {
        fprintf(stderr, "lsmfs: %s: %s\n", c->datadir, strerror(errno));
        return -1;
    }
    if (stat(fs->datadir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "lsmfs: %s: %s\n", c->datadir, strerror(ENOTDIR));
        return -1;
    }
    if (access(fs->datadir, R_OK | W_OK | X_OK) != 0) {
        fprintf(stderr, "lsmfs: %s: %s\n", c->datadir, strerror(errno));
        return -1;
    }
    return main_check_places(fs->datadir, c->mountpoint, c->mountpoint, c->datadir, c->init);
}

/* Runs the loop until unmount or a signal; the exit status to give. By default one thread
   serves the requests, polling spin_us for the next before it sleeps, and `workers` threads
   those that wait for the disk (pool.c says why); -s is that thread alone; -o mt, the options
   only libfuse's multi-threaded loop knows, and -o sync=always (where every change waits for
   the disk) run that loop. */
static int main_serve(struct lsmfs *fs, const struct fuse_cmdline_opts *copts, int mt,
                      long workers, long spin_us, int uring)
{
    int ret, rc;
    int multi = !copts->singlethread && (mt || copts->clone_fd || copts->max_threads != 10 ||
                                 copts->max_idle_threads != UINT_MAX ||
                                 fs->sync_mode == LSMFS_SYNC_ALWAYS);
    if ((rc = lsmfs_pool_io(fs, multi ? 0 : spin_us, uring)) != 0)
        lsmfs_log(LOG_WARNING, "cannot take over the reads of /dev/fuse (%s): the serving "
                  "thread sleeps between requests", strerror(rc));
    if (multi) {
        struct fuse_loop_config *cfg = fuse_loop_cfg_create();
        fuse_loop_cfg_set_clone_fd(cfg, copts->clone_fd);
        /* keep the workers alive between requests: spawning one per burst costs more than it */
        fuse_loop_cfg_set_idle_threads(cfg, copts->max_idle_threads != UINT_MAX
                                                ? copts->max_idle_threads : copts->max_threads);
        fuse_loop_cfg_set_max_threads(cfg, copts->max_threads);
        ret = fuse_session_loop_mt(fs->se, cfg);
        fuse_loop_cfg_destroy(cfg);
        lsmfs_uring_stop();
        return ret < 0 ? 1 : 0;
    }
    if (!copts->singlethread && workers > 0 && (rc = lsmfs_pool_start(fs, (int)workers)) != 0)
        lsmfs_log(LOG_WARNING, "cannot start the threads for requests that wait for the disk "
                  "(%s): one thread serves them all", strerror(rc));
    ret = fuse_session_loop(fs->se);
    lsmfs_pool_stop(fs);
    lsmfs_uring_stop();
    return ret < 0 ? 1 : 0;
}

/* Unmounts, writes back what is left, and closes the engine (syncing it, releasing its lock).
   Returns -1 when closing failed. */
static int main_teardown(struct lsmfs *fs, const char *datadir_arg)
{
    lsmfs_control_stop(fs);     /* waits for the commands running on fs->db */
    lsmfs_notify_stop(fs);
    fuse_session_unmount(fs->se);
    fuse_remove_signal_handlers(fs->se);
    fuse_session_destroy(fs->se);
    lsmfs_handles_free(fs);     /* writes back what they hold, before the rest */
    lsmfs_table_flush_all(fs);
    lsmfs_views_close(fs);
    lsmfs_reclaim_stop(fs);
    int rc = lsmfs_fs_close(fs);
    if (rc != LSM_OK) {
        lsmfs_log(LOG_ERR, "%s: closing the database: %s", datadir_arg, lsm_strerror(rc));
        return -1;
    }
    return 0;
}

static void main_cmdline_free(struct cmdline *c)
{
    free(c->datadir);
    free(c->mountpoint);
    free(c->memtable_size);
    free(c->cache_size);
    free(c->compression);
    free(c->sync);
    free(c->max_file_size);
    free(c->dirty_limit);
    free(c->timeout);
    free(c->reserve);
    free(c->snapshot);
    free(c->logfile);
    free(c->loglevel);
    free(c->workers);
    free(c->spin);
    free(c->dir_cookies);
}

int main(int argc, char *argv[])
{
    struct lsmfs state, *fs = &state;   /* lives as long as the process; every callback gets it
                                           through fuse_req_userdata */
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    struct fuse_cmdline_opts copts;
    struct cmdline c;
    int ret = 1, fd = -1, rc;

    memset(fs, 0, sizeof *fs);
    memset(&c, 0, sizeof c);
    c.kernel_cache = -1;
    memset(&copts, 0, sizeof copts);
    if (fuse_opt_parse(&args, &c, spec, main_opt_proc) != 0)
        goto out;
    if (c.show_help) {
        main_usage(stdout);
        printf("FUSE options:\n");
        fflush(stdout);
        fuse_cmdline_help();
        fuse_lowlevel_help();
        ret = 0;
        goto out;
    }
    if (c.show_version) {
        printf("lsmfs %s (liblsm %s, libfuse %s)\n", LSMFS_VERSION, LSM_VERSION_STRING,
               fuse_pkgversion());
        ret = 0;
        goto out;
    }
    if (fuse_parse_cmdline(&args, &copts) != 0)
        goto out;
    if (!c.datadir || !c.mountpoint) {
        fprintf(stderr, "lsmfs: missing %s\nusage: lsmfs [options] DATADIR MOUNTPOINT "
                        "(lsmfs --help for options)\n", c.datadir ? "MOUNTPOINT" : "DATADIR");
        goto out;
    }
    if (main_apply_options(fs, &c) != 0)
        goto out;
    fs->foreground = copts.foreground;
    long workers = 4, spin_us = 50;
    if ((c.workers && main_parse_range("workers", c.workers, 0, 16, "threads", &workers) != 0) ||
        (c.spin && main_parse_range("spin", c.spin, 0, 1000000, "microseconds", &spin_us) != 0))
        goto out;

    if (c.snapshot && main_snapshot_path(&c, &args) != 0)
        goto out;
    if (main_check_paths(fs, &c) != 0)
        goto out;
    /* The kernel checks permissions (default_permissions) unless only root can reach the mount:
       root's own mount without allow_other, which the kernel refuses to every other user. Root
       passes every check but a file's execute bits, which the kernel still checks, and
       access(2), which lsmfs_access answers. What that saves: with default_permissions the
       kernel asks for a directory's attributes (a GETATTR) before each create, unlink or
       rename in it, because the previous change made them stale (lsmfs(1), OPTIONS). */
    if (((c.others || geteuid() != 0 || getegid() != 0) && !c.has_perms &&
         fuse_opt_add_arg(&args, "-odefault_permissions") != 0) ||
        (!c.has_fsname && main_add_opt(&args, "fsname", fs->datadir) != 0)) {
        fprintf(stderr, "lsmfs: out of memory\n");
        goto out;
    }
    fs->uid = getuid();
    fs->gid = getgid();
    fs->mount_ns = lsmfs_now();

    int level = c.loglevel ? lsmfs_log_level(c.loglevel) : LOG_INFO;
    if (level < 0) {
        fprintf(stderr, "lsmfs: loglevel=%s: want err, warning, notice, info or debug\n",
                c.loglevel);
        goto out;
    }
    if ((rc = lsmfs_log_open(fs->foreground, c.logfile, level)) != 0) {
        fprintf(stderr, "lsmfs: logfile=%s: %s\n", c.logfile, strerror(rc));
        goto out;
    }
    if (!fs->foreground)
        fd = main_start_daemon();
    if (lsmfs_stats_start(fs) != 0)
        lsmfs_log(LOG_WARNING, "cannot start the thread that reports statistics on SIGUSR1");
    if (main_setup(fs, &args, c.datadir, c.mountpoint) != 0)
        goto out;
    /* Before the mount command returns, so a script can run lsmctl at once. A read-only mount
       has none: DATADIR/lsmfs.ctl belongs to the read-write daemon, and may be read-only. */
    if (!fs->read_only && (rc = lsmfs_control_start(fs)) != 0)
        lsmfs_log(LOG_WARNING, "%s: no control socket (%s): lsmctl cannot reach this mount",
                  fs->datadir, strerror(rc));
    if (fd >= 0) {
        main_detach(fd);
        fd = -1;
    }
    if (!fs->read_only && lsmfs_reclaim_start(fs) != 0)
        lsmfs_log(LOG_WARNING, "cannot start the thread that frees the space of removed files; "
                  "it will come back only as merges reach it");

    if (lsmfs_notify_start(fs) != 0)
        lsmfs_log(LOG_WARNING, "cannot start the thread that invalidates the kernel's caches; "
                  "files the kernel wrote back and lsmfs refused may read stale until reopened");
    ret = main_serve(fs, &copts, c.mt, workers, spin_us, c.uring);
    if (main_teardown(fs, c.datadir) != 0)
        ret = 1;
out:
    lsmfs_stats_stop(fs);
    fuse_opt_free_args(&args);
    free(copts.mountpoint);
    main_cmdline_free(&c);
    free(fs->datadir);
    return ret;
}
