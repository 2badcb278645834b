/*
 * bigbench.c — the large-file workloads of issue 17 on one directory, whatever file system holds
 * it: sequential write and read of one big file (1 MiB requests), 4 KiB random writes and reads
 * into it, and appends of one line to a log (open, write, close each time, as a logger that
 * reopens does). bigbench.sh runs it on ext4 and on lsmfs in the same run and prints the ratios.
 *
 * usage: bigbench [-s SIZE_MIB] [-n RANDOM_OPS] [-a APPENDS] [-d] DIR
 *   -d drops the kernel's page cache (echo 3 > /proc/sys/vm/drop_caches, root) before each read
 *      phase, so reads come from the file system rather than the kernel's cache.
 * Prints one line per phase: "PHASE VALUE UNIT" (MB/s or ops/s), to be parsed by bigbench.sh.
 *
 * It measures only: every phase checks its system calls and exits non-zero on a failure, but the
 * bytes read are not compared (the bats suites do that).
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
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, const char *path)
{
    fprintf(stderr, "bigbench: %s %s: %s\n", what, path, strerror(errno));
    exit(1);
}

static void drop_caches(int on)
{
    if (!on)
        return;
    sync();
    FILE *f = fopen("/proc/sys/vm/drop_caches", "w");
    if (f) {
        fputs("3\n", f);
        fclose(f);
    }
}

/* xorshift64*: the same offsets on every file system */
static uint64_t rnd_state = 88172645463325252ull;
static uint64_t rnd(void)
{
    rnd_state ^= rnd_state >> 12;
    rnd_state ^= rnd_state << 25;
    rnd_state ^= rnd_state >> 27;
    return rnd_state * 2685821657736338717ull;
}

int main(int argc, char **argv)
{
    long size_mib = 1024, nrand = 20000, nappend = 2000;
    int drop = 0, c;
    while ((c = getopt(argc, argv, "s:n:a:d")) != -1) {
        switch (c) {
        case 's': size_mib = atol(optarg); break;
        case 'n': nrand = atol(optarg); break;
        case 'a': nappend = atol(optarg); break;
        case 'd': drop = 1; break;
        default:
            fprintf(stderr, "usage: bigbench [-s SIZE_MIB] [-n RANDOM_OPS] [-a APPENDS] [-d] DIR\n");
            return 2;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "usage: bigbench [-s SIZE_MIB] [-n RANDOM_OPS] [-a APPENDS] [-d] DIR\n");
        return 2;
    }
    char path[4096], log[4096];
    snprintf(path, sizeof path, "%s/big", argv[optind]);
    snprintf(log, sizeof log, "%s/log", argv[optind]);
    size_t piece = 1u << 20;
    char *buf = malloc(piece);
    if (!buf)
        return 1;
    for (size_t i = 0; i < piece; i++)
        buf[i] = (char)rnd();
    uint64_t size = (uint64_t)size_mib << 20;

    /* sequential write, fsync included (what cp + sync costs) */
    double t = now();
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    if (fd < 0)
        die("create", path);
    for (uint64_t off = 0; off < size; off += piece) {
        buf[0] = (char)off;
        if (write(fd, buf, piece) != (ssize_t)piece)
            die("write", path);
    }
    if (fsync(fd) != 0 || close(fd) != 0)
        die("fsync", path);
    printf("seq_write %.1f MB/s\n", (double)size / 1e6 / (now() - t));

    drop_caches(drop);
    t = now();
    if ((fd = open(path, O_RDONLY)) < 0)
        die("open", path);
    uint64_t got = 0;
    for (;;) {
        ssize_t n = read(fd, buf, piece);
        if (n < 0)
            die("read", path);
        if (n == 0)
            break;
        got += (uint64_t)n;
    }
    close(fd);
    if (got != size) {
        fprintf(stderr, "bigbench: read %llu bytes of %llu\n", (unsigned long long)got,
                (unsigned long long)size);
        return 1;
    }
    printf("seq_read %.1f MB/s\n", (double)size / 1e6 / (now() - t));

    /* random 4 KiB writes into the big file, one fsync at the end, then close */
    uint64_t blocks = size / 4096;
    t = now();
    if ((fd = open(path, O_WRONLY)) < 0)
        die("open", path);
    for (long i = 0; i < nrand; i++) {
        buf[0] = (char)i;
        if (pwrite(fd, buf, 4096, (off_t)(rnd() % blocks * 4096)) != 4096)
            die("pwrite", path);
    }
    if (fsync(fd) != 0 || close(fd) != 0)
        die("fsync", path);
    printf("rand_write %.0f ops/s\n", (double)nrand / (now() - t));

    drop_caches(drop);
    t = now();
    if ((fd = open(path, O_RDONLY)) < 0)
        die("open", path);
    for (long i = 0; i < nrand; i++)
        if (pread(fd, buf, 4096, (off_t)(rnd() % blocks * 4096)) != 4096)
            die("pread", path);
    close(fd);
    printf("rand_read %.0f ops/s\n", (double)nrand / (now() - t));

    /* appends: a log of 10 MB, then one line per open/write/close */
    if ((fd = open(log, O_CREAT | O_TRUNC | O_WRONLY, 0644)) < 0)
        die("create", log);
    for (int i = 0; i < 10; i++)
        if (write(fd, buf, piece) != (ssize_t)piece)
            die("write", log);
    if (close(fd) != 0)
        die("close", log);
    static const char line[] = "2026-01-01 00:00:00 something happened, as loggers say it did\n";
    t = now();
    for (long i = 0; i < nappend; i++) {
        if ((fd = open(log, O_WRONLY | O_APPEND)) < 0)
            die("open", log);
        if (write(fd, line, sizeof line - 1) != (ssize_t)(sizeof line - 1) || close(fd) != 0)
            die("append", log);
    }
    printf("append %.0f ops/s\n", (double)nappend / (now() - t));

    unlink(path);
    unlink(log);
    free(buf);
    return 0;
}
