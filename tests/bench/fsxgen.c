/*
 * fsxgen.c — fsx-style random I/O on one file, checked against a model kept in memory: writes of
 * 1 B to 64 KiB at random offsets, reads that compare every byte with the model, appends through
 * a second O_APPEND descriptor, truncate(2) and ftruncate(2) that shrink and grow, fsync now and
 * then, close and reopen now and then, and (with -m) reads through mmap. realbench.sh times it on
 * ext4 and on lsmfs; tests/t45-bigfiles.bats runs it as a correctness check.
 *
 * usage: fsxgen [-n OPS] [-s SEED] [-l MAX_BYTES] [-c MODEL_OUT] [-m] [-v] FILE
 *   -n operations (default 10000)       -s seed (default 1): the same seed, the same operations
 *   -l largest file size (default 4 MiB) -c write the model's final content to MODEL_OUT
 *   -m also read through mmap            -v print every operation
 * FILE is created (or emptied) first. At the end the whole file is read back and compared with the
 * model. Prints "fsxgen: N ops in S s ..." on success; on the first difference it prints the
 * operation number, the offset, the expected and the actual byte and the last operations, and
 * exits 1. A failed system call also exits 1, with its errno text.
 *
 * Every check reads the file through the file system under test; the model only says what the file
 * must hold, and is never taken as a stand-in for reading it.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define KiB 1024L
#define MAX_IO (64 * KiB)
#define HISTORY 16

enum fsx_kind { OP_WRITE, OP_READ, OP_APPEND, OP_TRUNCATE, OP_FTRUNCATE, OP_FSYNC, OP_REOPEN,
                OP_MMAP_READ, OP_KINDS };

static const char *const fsx_names[OP_KINDS] = {
    "write", "read", "append", "truncate", "ftruncate", "fsync", "reopen", "mmap-read",
};

struct fsx_op {
    long no;                /* operation number, from 1 */
    enum fsx_kind kind;
    long off;               /* offset, or new size for truncates */
    long len;               /* bytes asked for */
};

struct fsx {
    const char *path;       /* the file under test */
    int fd;                 /* O_RDWR descriptor, reopened by OP_REOPEN */
    unsigned char *model;   /* max bytes; bytes at and past size are always 0 */
    unsigned char *buf;     /* MAX_IO bytes for reads and writes */
    long size;              /* the model's file size */
    long max;               /* largest size a write or truncate may make */
    uint64_t rng;           /* xorshift64* state */
    int verbose;
    struct fsx_op hist[HISTORY]; /* the last operations, a ring indexed by op number */
    long count[OP_KINDS];   /* operations done, by kind */
};

static double fsx_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t fsx_rand(struct fsx *x)
{
    x->rng ^= x->rng >> 12;
    x->rng ^= x->rng << 25;
    x->rng ^= x->rng >> 27;
    return x->rng * 2685821657736338717ull;
}

/* A number in [lo, hi]. */
static long fsx_range(struct fsx *x, long lo, long hi)
{
    return lo + (long)(fsx_rand(x) % (uint64_t)(hi - lo + 1));
}

static void fsx_history(const struct fsx *x, long upto)
{
    long first = upto - HISTORY + 1 > 1 ? upto - HISTORY + 1 : 1;
    fprintf(stderr, "fsxgen: the last operations:\n");
    for (long i = first; i <= upto; i++) {
        const struct fsx_op *o = &x->hist[i % HISTORY];
        fprintf(stderr, "  %6ld %-9s off %8ld len %6ld\n", o->no, fsx_names[o->kind], o->off, o->len);
    }
}

static void fsx_fail(const struct fsx *x, const struct fsx_op *o, const char *what)
{
    fprintf(stderr, "fsxgen: op %ld (%s off %ld len %ld) on %s: %s: %s\n", o->no,
            fsx_names[o->kind], o->off, o->len, x->path, what, strerror(errno));
    fsx_history(x, o->no);
    exit(1);
}

/* Compares got[0..n) with the model at off; the first difference ends the run. */
static void fsx_check(const struct fsx *x, const struct fsx_op *o, long off, const unsigned char *got,
                      long n)
{
    const unsigned char *want = x->model + off;
    if (memcmp(got, want, (size_t)n) == 0)
        return;
    long i = 0;
    while (got[i] == want[i])
        i++;
    fprintf(stderr, "fsxgen: op %ld (%s off %ld len %ld) on %s: MISMATCH at offset %ld: "
            "expected 0x%02x, got 0x%02x (file size %ld)\n", o->no, fsx_names[o->kind], o->off,
            o->len, x->path, off + i, want[i], got[i], x->size);
    fsx_history(x, o->no);
    exit(1);
}

static void fsx_open(struct fsx *x, int flags)
{
    x->fd = open(x->path, O_RDWR | flags, 0644);
    if (x->fd < 0) {
        fprintf(stderr, "fsxgen: open %s: %s\n", x->path, strerror(errno));
        exit(1);
    }
}

/* Reads up to len bytes at off until EOF; returns the count. */
static long fsx_pread_all(struct fsx *x, const struct fsx_op *o, unsigned char *p, long len,
                          long off)
{
    long done = 0;
    while (done < len) {
        ssize_t r = pread(x->fd, p + done, (size_t)(len - done), off + done);
        if (r < 0)
            fsx_fail(x, o, "pread");
        if (r == 0)
            break;
        done += r;
    }
    return done;
}

static void fsx_write_all(struct fsx *x, const struct fsx_op *o, int fd, const unsigned char *p,
                          long len, long off)
{
    long done = 0;
    while (done < len) {
        ssize_t r = off < 0 ? write(fd, p + done, (size_t)(len - done))
                            : pwrite(fd, p + done, (size_t)(len - done), off + done);
        if (r <= 0)
            fsx_fail(x, o, off < 0 ? "write" : "pwrite");
        done += r;
    }
}

static void fsx_fill(struct fsx *x, long len)
{
    for (long i = 0; i < len; i += 8) {
        uint64_t r = fsx_rand(x);
        memcpy(x->buf + i, &r, (size_t)(len - i < 8 ? len - i : 8));
    }
}

/* The model after a change of size: bytes past the end go back to 0. */
static void fsx_resize(struct fsx *x, long size)
{
    if (size < x->size)
        memset(x->model + size, 0, (size_t)(x->size - size));
    x->size = size;
}

static void fsx_do_write(struct fsx *x, struct fsx_op *o)
{
    /* half the writes land near the end, where a file grows and shrinks */
    long len = fsx_range(x, 1, MAX_IO < x->max ? MAX_IO : x->max);
    long off;
    if (fsx_rand(x) & 1)
        off = fsx_range(x, x->size > MAX_IO ? x->size - MAX_IO : 0, x->size);
    else
        off = fsx_range(x, 0, x->max - 1);
    if (off + len > x->max)
        off = x->max - len;
    o->off = off;
    o->len = len;
    fsx_fill(x, len);
    fsx_write_all(x, o, x->fd, x->buf, len, off);
    memcpy(x->model + off, x->buf, (size_t)len);
    if (off + len > x->size)
        x->size = off + len;
}

static void fsx_do_read(struct fsx *x, struct fsx_op *o)
{
    long off = fsx_range(x, 0, x->size + 100);
    long len = fsx_range(x, 1, MAX_IO);
    o->off = off;
    o->len = len;
    long want = off >= x->size ? 0 : (x->size - off < len ? x->size - off : len);
    long got = fsx_pread_all(x, o, x->buf, len, off);
    if (got != want) {
        fprintf(stderr, "fsxgen: op %ld (read off %ld len %ld) on %s: SHORT READ: expected %ld "
                "bytes, got %ld (file size %ld)\n", o->no, off, len, x->path, want, got, x->size);
        fsx_history(x, o->no);
        exit(1);
    }
    fsx_check(x, o, off, x->buf, got);
}

static void fsx_do_append(struct fsx *x, struct fsx_op *o)
{
    long room = x->max - x->size;
    if (room <= 0) {
        o->kind = OP_FTRUNCATE;     /* full: shrink instead, so the op is not wasted */
        o->off = fsx_range(x, 0, x->size);
        if (ftruncate(x->fd, o->off) != 0)
            fsx_fail(x, o, "ftruncate");
        fsx_resize(x, o->off);
        return;
    }
    long len = fsx_range(x, 1, room < 4 * KiB ? room : 4 * KiB);
    o->off = x->size;
    o->len = len;
    int fd = open(x->path, O_WRONLY | O_APPEND);
    if (fd < 0)
        fsx_fail(x, o, "open O_APPEND");
    fsx_fill(x, len);
    fsx_write_all(x, o, fd, x->buf, len, -1);
    if (close(fd) != 0)
        fsx_fail(x, o, "close");
    memcpy(x->model + x->size, x->buf, (size_t)len);
    x->size += len;
}

static void fsx_do_truncate(struct fsx *x, struct fsx_op *o)
{
    /* shrink or grow with equal odds, by up to a quarter of the limit */
    long delta = fsx_range(x, 0, x->max / 4);
    long size = (fsx_rand(x) & 1) ? x->size + delta : x->size - delta;
    if (size < 0)
        size = 0;
    if (size > x->max)
        size = x->max;
    o->off = size;
    if (o->kind == OP_TRUNCATE ? truncate(x->path, size) : ftruncate(x->fd, size))
        fsx_fail(x, o, o->kind == OP_TRUNCATE ? "truncate" : "ftruncate");
    fsx_resize(x, size);
}

static void fsx_do_mmap_read(struct fsx *x, struct fsx_op *o)
{
    if (x->size == 0)
        return;
    long off = fsx_range(x, 0, x->size - 1);
    long len = fsx_range(x, 1, x->size - off < MAX_IO ? x->size - off : MAX_IO);
    o->off = off;
    o->len = len;
    long page = sysconf(_SC_PAGESIZE);
    long start = off / page * page;
    unsigned char *p = mmap(NULL, (size_t)(off + len - start), PROT_READ, MAP_SHARED, x->fd, start);
    if (p == MAP_FAILED)
        fsx_fail(x, o, "mmap");
    fsx_check(x, o, off, p + (off - start), len);
    munmap(p, (size_t)(off + len - start));
}

/* Picks the next operation; the weights are out of 100. */
static enum fsx_kind fsx_pick(struct fsx *x, int use_mmap)
{
    static const struct { enum fsx_kind kind; int weight; } mix[] = {
        { OP_WRITE, 32 }, { OP_READ, 28 }, { OP_APPEND, 10 }, { OP_TRUNCATE, 6 },
        { OP_FTRUNCATE, 6 }, { OP_FSYNC, 4 }, { OP_REOPEN, 4 }, { OP_MMAP_READ, 10 },
    };
    for (;;) {
        long r = fsx_range(x, 0, 99);
        for (size_t i = 0; i < sizeof mix / sizeof mix[0]; i++) {
            if (r < mix[i].weight) {
                if (mix[i].kind == OP_MMAP_READ && !use_mmap)
                    break;
                return mix[i].kind;
            }
            r -= mix[i].weight;
        }
    }
}

/* The final check: size and every byte. */
static void fsx_verify_all(struct fsx *x, long no)
{
    struct fsx_op o = { .no = no, .kind = OP_READ, .off = 0, .len = x->size };
    x->hist[no % HISTORY] = o;
    struct stat st;
    if (fstat(x->fd, &st) != 0)
        fsx_fail(x, &o, "fstat");
    if (st.st_size != x->size) {
        fprintf(stderr, "fsxgen: final check of %s: SIZE: expected %ld, got %lld\n", x->path,
                x->size, (long long)st.st_size);
        fsx_history(x, no);
        exit(1);
    }
    for (long off = 0; off < x->size; off += MAX_IO) {
        long len = x->size - off < MAX_IO ? x->size - off : MAX_IO;
        if (fsx_pread_all(x, &o, x->buf, len, off) != len) {
            fprintf(stderr, "fsxgen: final check of %s: SHORT READ at offset %ld\n", x->path, off);
            exit(1);
        }
        fsx_check(x, &o, off, x->buf, len);
    }
}

static int fsx_save_model(const struct fsx *x, const char *out)
{
    FILE *f = fopen(out, "wb");
    if (!f || fwrite(x->model, 1, (size_t)x->size, f) != (size_t)x->size || fclose(f) != 0) {
        fprintf(stderr, "fsxgen: write %s: %s\n", out, strerror(errno));
        return -1;
    }
    return 0;
}

static void fsx_usage(void)
{
    fprintf(stderr, "usage: fsxgen [-n OPS] [-s SEED] [-l MAX_BYTES] [-c MODEL_OUT] [-m] [-v] FILE\n");
    exit(2);
}

int main(int argc, char **argv)
{
    struct fsx x = { .max = 4 * KiB * KiB };
    long nops = 10000;
    unsigned long long seed = 1;
    const char *model_out = NULL;
    int use_mmap = 0, c;
    while ((c = getopt(argc, argv, "n:s:l:c:mv")) != -1) {
        switch (c) {
        case 'n': nops = atol(optarg); break;
        case 's': seed = strtoull(optarg, NULL, 0); break;
        case 'l': x.max = atol(optarg); break;
        case 'c': model_out = optarg; break;
        case 'm': use_mmap = 1; break;
        case 'v': x.verbose = 1; break;
        default: fsx_usage();
        }
    }
    if (optind != argc - 1 || nops < 0 || x.max < 1)
        fsx_usage();
    x.path = argv[optind];
    /* xorshift must not start at 0; mix the seed so that nearby seeds differ at once */
    x.rng = (seed + 1) * 0x9e3779b97f4a7c15ull;
    x.model = calloc(1, (size_t)x.max);
    x.buf = malloc(MAX_IO);
    if (!x.model || !x.buf) {
        fprintf(stderr, "fsxgen: out of memory for a %ld-byte model\n", x.max);
        return 1;
    }
    fsx_open(&x, O_CREAT | O_TRUNC);

    double t0 = fsx_now();
    for (long no = 1; no <= nops; no++) {
        struct fsx_op *o = &x.hist[no % HISTORY];
        *o = (struct fsx_op){ .no = no, .kind = fsx_pick(&x, use_mmap) };
        switch (o->kind) {
        case OP_WRITE: fsx_do_write(&x, o); break;
        case OP_READ: fsx_do_read(&x, o); break;
        case OP_APPEND: fsx_do_append(&x, o); break;
        case OP_TRUNCATE:
        case OP_FTRUNCATE: fsx_do_truncate(&x, o); break;
        case OP_FSYNC:
            if (fsync(x.fd) != 0)
                fsx_fail(&x, o, "fsync");
            break;
        case OP_REOPEN:
            if (close(x.fd) != 0)
                fsx_fail(&x, o, "close");
            fsx_open(&x, 0);
            break;
        case OP_MMAP_READ: fsx_do_mmap_read(&x, o); break;
        case OP_KINDS: break;
        }
        x.count[o->kind]++;
        if (x.verbose)
            printf("%6ld %-9s off %8ld len %6ld size %8ld\n", no, fsx_names[o->kind], o->off,
                   o->len, x.size);
    }
    fsx_verify_all(&x, nops + 1);
    double secs = fsx_now() - t0;
    if (close(x.fd) != 0) {
        fprintf(stderr, "fsxgen: close %s: %s\n", x.path, strerror(errno));
        return 1;
    }
    if (model_out && fsx_save_model(&x, model_out) != 0)
        return 1;

    printf("fsxgen: %ld ops in %.3f s (%.0f ops/s), seed %llu, final size %ld;", nops, secs,
           secs > 0 ? nops / secs : 0, seed, x.size);
    for (int k = 0; k < OP_KINDS; k++)
        if (x.count[k])
            printf(" %s %ld", fsx_names[k], x.count[k]);
    printf("\n");
    free(x.model);
    free(x.buf);
    return 0;
}
