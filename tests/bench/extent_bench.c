/*
 * extent_bench.c — values written a piece at a time (lsm_value_writer) against a plain file on the
 * same file system, in one run: a sequential write of SIZE (1 MiB writes, one synced commit) beside
 * write(2) + fsync of a file; a sequential read by lsm_get_range beside read(2); N random 4 KiB
 * rewrites each committed (sync) beside pwrite + fdatasync; and the bytes one 4 KiB rewrite adds.
 *
 * Usage: extent_bench DIR [SIZE_MiB [N]]   (default 1024 MiB, 200 rewrites). Prints a table.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lsm.h"

#define MiB (UINT64_C(1) << 20)

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, int rc, lsm_db *db)
{
    fprintf(stderr, "extent_bench: %s: %s: %s\n", what, lsm_strerror(rc), lsm_errmsg(db));
    exit(1);
}

static void row(const char *what, double lsm, double base, const char *unit)
{
    printf("%-34s %12.1f %12.1f %8.2f  %s\n", what, lsm, base, base > 0 ? lsm / base : 0, unit);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: extent_bench DIR [SIZE_MiB [N]]\n");
        return 2;
    }
    uint64_t size = (argc > 2 ? strtoull(argv[2], NULL, 10) : 1024) * MiB;
    int n = argc > 3 ? atoi(argv[3]) : 200;
    char dbdir[4096], plain[4096];
    snprintf(dbdir, sizeof dbdir, "%s/db", argv[1]);
    snprintf(plain, sizeof plain, "%s/plain", argv[1]);
    uint8_t *b = malloc(MiB);
    for (size_t i = 0; i < MiB; i++)
        b[i] = (uint8_t)(i * 2654435761u >> 13);

    lsm_db *db;
    int rc = lsm_open(dbdir, NULL, &db);
    if (rc != LSM_OK)
        die("open", rc, NULL);

    /* Sequential write. */
    double t0 = now();
    lsm_value_writer *w;
    if ((rc = lsm_value_writer_open(db, "big", 3, 0, &w)) != LSM_OK)
        die("writer_open", rc, db);
    for (uint64_t off = 0; off < size; off += MiB)
        if ((rc = lsm_value_writer_write(w, off, b, MiB)) != LSM_OK)
            die("write", rc, db);
    if ((rc = lsm_value_writer_commit(w, 1)) != LSM_OK)
        die("commit", rc, db);
    double tl = now() - t0;
    t0 = now();
    int fd = open(plain, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    for (uint64_t off = 0; off < size; off += MiB)
        if (write(fd, b, MiB) != (ssize_t)MiB)
            return 1;
    fsync(fd);
    close(fd);
    double tp = now() - t0;
    printf("%-34s %12s %12s %8s\n", "", "lsm", "plain file", "ratio");
    row("sequential write (MB/s)", size / 1e6 / tl, size / 1e6 / tp, "");

    /* Sequential read (warm: both were just written). */
    t0 = now();
    for (uint64_t off = 0; off < size; off += MiB) {
        size_t got;
        if ((rc = lsm_get_range(db, "big", 3, off, b, MiB, &got, NULL)) != LSM_OK || got != MiB)
            die("get_range", rc, db);
    }
    tl = now() - t0;
    t0 = now();
    fd = open(plain, O_RDONLY);
    for (uint64_t off = 0; off < size; off += MiB)
        if (read(fd, b, MiB) != (ssize_t)MiB)
            return 1;
    close(fd);
    tp = now() - t0;
    row("sequential read, warm (MB/s)", size / 1e6 / tl, size / 1e6 / tp, "");

    /* Random 4 KiB rewrites, each a synced commit, vs pwrite + fdatasync. */
    lsm_stats s0, s1;
    lsm_stats_get(db, &s0, sizeof s0);
    uint64_t seed = 88172645463325252ull;
    t0 = now();
    lsm_stats f1;
    for (int i = 0; i < n; i++) {
        seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
        uint64_t off = (seed % (size / 4096)) * 4096;
        if ((rc = lsm_value_writer_open(db, "big", 3, LSM_VW_KEEP, &w)) != LSM_OK ||
            (rc = lsm_value_writer_write(w, off, b, 4096)) != LSM_OK ||
            (rc = lsm_value_writer_commit(w, 1)) != LSM_OK)
            die("rewrite", rc, db);
        if (i == 0)
            lsm_stats_get(db, &f1, sizeof f1);
    }
    tl = now() - t0;
    lsm_stats_get(db, &s1, sizeof s1);
    fd = open(plain, O_WRONLY);
    seed = 88172645463325252ull;
    t0 = now();
    for (int i = 0; i < n; i++) {
        seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
        uint64_t off = (seed % (size / 4096)) * 4096;
        if (pwrite(fd, b, 4096, (off_t)off) != 4096)
            return 1;
        fdatasync(fd);
    }
    close(fd);
    tp = now() - t0;
    row("4 KiB rewrite + sync (ops/s)", n / tl, n / tp, "");
    printf("first 4 KiB rewrite of the %" PRIu64 " MiB value: %" PRIu64 " blob bytes + %" PRIu64
           " WAL bytes\n", size / MiB, f1.blob_bytes_written - s0.blob_bytes_written,
           f1.wal_bytes_written - s0.wal_bytes_written);
    printf("bytes per 4 KiB rewrite: %.0f blob + %.0f WAL (map of %d+ extents)\n",
           (double)(s1.blob_bytes_written - s0.blob_bytes_written) / n,
           (double)(s1.wal_bytes_written - s0.wal_bytes_written) / n, n);

    /* The same random writes in one writer and one synced commit (a file written, then fsynced). */
    seed = 12345;
    t0 = now();
    if ((rc = lsm_value_writer_open(db, "big", 3, LSM_VW_KEEP, &w)) != LSM_OK)
        die("writer_open", rc, db);
    for (int i = 0; i < 10 * n; i++) {
        seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
        uint64_t off = (seed % (size / 4096)) * 4096;
        if ((rc = lsm_value_writer_write(w, off, b, 4096)) != LSM_OK)
            die("write", rc, db);
    }
    if ((rc = lsm_value_writer_commit(w, 1)) != LSM_OK)
        die("commit", rc, db);
    tl = now() - t0;
    fd = open(plain, O_WRONLY);
    seed = 12345;
    t0 = now();
    for (int i = 0; i < 10 * n; i++) {
        seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
        uint64_t off = (seed % (size / 4096)) * 4096;
        if (pwrite(fd, b, 4096, (off_t)off) != 4096)
            return 1;
    }
    fsync(fd);
    close(fd);
    tp = now() - t0;
    row("4 KiB random writes, 1 sync (ops/s)", 10 * n / tl, 10 * n / tp, "");

    unlink(plain);
    lsm_close(db);
    free(b);
    return 0;
}
