/*
 * fsbench — a small-file benchmark for any directory: the metadata-heavy workload lsmfs is built
 * for (many files of a few KiB: configs, caches, mail, package trees), timed phase by phase so the
 * same run on ext4, tmpfs, a pass-through FUSE filesystem and lsmfs can be compared line by line.
 *
 * In a fresh subdirectory of DIR it spreads N files (default 20000) of SIZE bytes (default 4 KiB)
 * over D subdirectories (default 20) and runs, in order:
 *   create     open(O_CREAT|O_TRUNC) + write + close, file by file
 *   stat       stat() of every file, in a shuffled order
 *   readdir    opendir/readdir/closedir of every subdirectory, repeated R times (default: as
 *              many full passes as fit in half a second, at least one); counted per name returned
 *   read       open + read + close of every file, shuffled, checking each file's own header
 *   warm-stat  stat() of every file again, in another shuffled order: nothing changed since they
 *              were written, so a filesystem whose kernel caches stay valid answers alone
 *   warm-read  open + read + close of every file again, likewise
 *   overwrite  open(O_TRUNC) + write + close of every file, shuffled
 *   rename     rename() of every file to a new name in its directory
 *   unlink     unlink() of every file, then rmdir of the tree
 * and prints one line per phase: "phase ops seconds ops_per_second".  It uses only POSIX calls and
 * the page cache as the system gives it (no drop_caches, no fsync unless -S): it measures what a
 * program sees.  It must never touch anything outside the subdirectory it created, and it exits
 * non-zero, naming the file, when any call fails or any file reads back wrong.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static long nfiles = 20000;    /* -n */
static long fsize = 4096;      /* -s */
static long ndirs = 20;        /* -d */
static int readdir_rounds;     /* -r; 0 = repeat for at least 0.5 s */
static int sync_writes;        /* -S: fsync every created and overwritten file */
static char root[4096];        /* the run's own subdirectory */
static char *buf;              /* one file's content */

static void die(const char *what, const char *path)
{
    fprintf(stderr, "fsbench: %s %s: %s\n", what, path ? path : "", strerror(errno));
    exit(1);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void file_path(char *out, size_t n, long i, const char *suffix)
{
    snprintf(out, n, "%s/d%03ld/file-%07ld%s", root, i % ndirs, i, suffix);
}

/* Content of file i at generation g: a header naming both, then filler. */
static size_t fill(long i, int g)
{
    int h = snprintf(buf, (size_t)fsize + 1, "fsbench %ld %d\n", i, g);
    for (long j = h; j < fsize; j++)
        buf[j] = (char)('a' + (i + j) % 26);
    return (size_t)fsize;
}

static void write_file(const char *path, long i, int g)
{
    size_t n = fill(i, g);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        die("open", path);
    if (write(fd, buf, n) != (ssize_t)n)
        die("write", path);
    if (sync_writes && fsync(fd) != 0)
        die("fsync", path);
    if (close(fd) != 0)
        die("close", path);
}

static void report(const char *phase, long ops, double secs)
{
    printf("%-10s %8ld %9.3f %12.0f\n", phase, ops, secs, secs > 0 ? ops / secs : 0.0);
    fflush(stdout);
}

/* Fisher-Yates with a fixed xorshift seed: every run and filesystem gets the same order. */
static void shuffle(long *order)
{
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (long i = 0; i < nfiles; i++)
        order[i] = i;
    for (long i = nfiles - 1; i > 0; i--) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        long j = (long)(x % (uint64_t)(i + 1)), t = order[i];
        order[i] = order[j], order[j] = t;
    }
}

static void stat_all(const long *order)
{
    char path[4200];
    for (long k = 0; k < nfiles; k++) {
        struct stat st;
        file_path(path, sizeof path, order[k], "");
        if (stat(path, &st) != 0)
            die("stat", path);
        if (st.st_size != fsize) {
            errno = EINVAL;
            die("stat: wrong size of", path);
        }
    }
}

static void read_all(const long *order, char *rbuf)
{
    char path[4200];
    for (long k = 0; k < nfiles; k++) {
        long i = order[k];
        char head[64];
        file_path(path, sizeof path, i, "");
        int fd = open(path, O_RDONLY);
        if (fd < 0)
            die("open", path);
        ssize_t n = read(fd, rbuf, (size_t)fsize + 1);
        if (n < 0)
            die("read", path);
        close(fd);
        int h = snprintf(head, sizeof head, "fsbench %ld 0\n", i);
        if (n != fsize || memcmp(rbuf, head, (size_t)h) != 0) {
            fprintf(stderr, "fsbench: %s: wrong content (%zd bytes)\n", path, n);
            exit(1);
        }
    }
}

/* The same order reversed: another order over the same files, so that the warm passes do not
   just replay the cold ones. */
static void reverse(long *order)
{
    for (long i = 0, j = nfiles - 1; i < j; i++, j--) {
        long t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
}

static int usage(void)
{
    fprintf(stderr, "usage: fsbench [-n FILES] [-s BYTES] [-d DIRS] [-r READDIR_ROUNDS] [-S] DIR\n");
    return 2;
}

int main(int argc, char **argv)
{
    char path[4200], path2[4300];
    long *order;
    double t;
    int c;

    while ((c = getopt(argc, argv, "n:s:d:r:S")) != -1) {
        switch (c) {
        case 'n': nfiles = atol(optarg); break;
        case 's': fsize = atol(optarg); break;
        case 'd': ndirs = atol(optarg); break;
        case 'r': readdir_rounds = atoi(optarg); break;
        case 'S': sync_writes = 1; break;
        default: return usage();
        }
    }
    if (optind != argc - 1 || nfiles < 1 || fsize < 32 || ndirs < 1 || readdir_rounds < 0)
        return usage();
    snprintf(root, sizeof root, "%s/fsbench.%ld", argv[optind], (long)getpid());
    buf = malloc((size_t)fsize + 1);
    char *rbuf = malloc((size_t)fsize + 1);
    order = malloc(sizeof *order * (size_t)nfiles);
    if (!buf || !rbuf || !order)
        die("malloc", NULL);
    shuffle(order);

    if (mkdir(root, 0755) != 0)
        die("mkdir", root);
    for (long d = 0; d < ndirs; d++) {
        snprintf(path, sizeof path, "%s/d%03ld", root, d);
        if (mkdir(path, 0755) != 0)
            die("mkdir", path);
    }

    t = now();
    for (long i = 0; i < nfiles; i++) {
        file_path(path, sizeof path, i, "");
        write_file(path, i, 0);
    }
    report("create", nfiles, now() - t);

    t = now();
    stat_all(order);
    report("stat", nfiles, now() - t);

    t = now();
    long names = 0;
    for (int r = 0; readdir_rounds ? r < readdir_rounds : (r == 0 || now() - t < 0.5); r++) {
        long seen = 0;
        for (long d = 0; d < ndirs; d++) {
            snprintf(path, sizeof path, "%s/d%03ld", root, d);
            DIR *dir = opendir(path);
            struct dirent *e;
            if (!dir)
                die("opendir", path);
            errno = 0;
            while ((e = readdir(dir)) != NULL)
                if (e->d_name[0] != '.')
                    seen++;
            if (errno != 0)
                die("readdir", path);
            closedir(dir);
        }
        if (seen != nfiles) {
            fprintf(stderr, "fsbench: readdir saw %ld files, expected %ld\n", seen, nfiles);
            return 1;
        }
        names += seen;
    }
    report("readdir", names, now() - t);

    t = now();
    read_all(order, rbuf);
    report("read", nfiles, now() - t);

    reverse(order);
    t = now();
    stat_all(order);
    report("warm-stat", nfiles, now() - t);

    t = now();
    read_all(order, rbuf);
    report("warm-read", nfiles, now() - t);
    reverse(order);

    t = now();
    for (long k = 0; k < nfiles; k++) {
        file_path(path, sizeof path, order[k], "");
        write_file(path, order[k], 1);
    }
    report("overwrite", nfiles, now() - t);

    t = now();
    for (long i = 0; i < nfiles; i++) {
        file_path(path, sizeof path, i, "");
        file_path(path2, sizeof path2, i, ".renamed");
        if (rename(path, path2) != 0)
            die("rename", path);
    }
    report("rename", nfiles, now() - t);

    t = now();
    for (long i = 0; i < nfiles; i++) {
        file_path(path2, sizeof path2, i, ".renamed");
        if (unlink(path2) != 0)
            die("unlink", path2);
    }
    report("unlink", nfiles, now() - t);

    for (long d = 0; d < ndirs; d++) {
        snprintf(path, sizeof path, "%s/d%03ld", root, d);
        if (rmdir(path) != 0)
            die("rmdir", path);
    }
    if (rmdir(root) != 0)
        die("rmdir", root);
    free(order);
    free(rbuf);
    free(buf);
    return 0;
}
