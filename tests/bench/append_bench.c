/*
 * append_bench.c — the logger's append at the engine (bigbench's "append" phase without FUSE): a
 * value of SIZE MiB, then N times open a writer keeping it, write one 100-byte line at its end
 * and commit unsynced, beside open(O_APPEND) + write + close of a plain file on the same file
 * system. Prints ops/s for both and the ratio.
 *
 * Usage: append_bench DIR [SIZE_MiB [N]]   (default 10 MiB, 3000 appends).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <fcntl.h>
#include <stdint.h>
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
    fprintf(stderr, "append_bench: %s: %s: %s\n", what, lsm_strerror(rc), lsm_errmsg(db));
    exit(1);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: append_bench DIR [SIZE_MiB [N]]\n");
        return 2;
    }
    const char *dir = argv[1];
    uint64_t size = (argc > 2 ? strtoull(argv[2], NULL, 10) : 10) * MiB;
    long n = argc > 3 ? atol(argv[3]) : 3000;
    char dbdir[4096], plain[4096];
    snprintf(dbdir, sizeof dbdir, "%s/db", dir);
    snprintf(plain, sizeof plain, "%s/plain.log", dir);
    char *block = malloc(MiB), line[100];
    memset(block, 'x', MiB);
    memset(line, 'y', sizeof line);
    line[sizeof line - 1] = '\n';

    lsm_options *o = lsm_options_new();
    lsm_options_set_create_if_missing(o, 1);
    lsm_db *db = NULL;
    int rc = lsm_open(dbdir, o, &db);
    if (rc != LSM_OK)
        die("open", rc, NULL);
    lsm_value_writer *w;
    if ((rc = lsm_value_writer_open(db, "log", 3, 0, &w)) != LSM_OK)
        die("writer", rc, db);
    for (uint64_t off = 0; off < size; off += MiB)
        if ((rc = lsm_value_writer_write(w, off, block, MiB)) != LSM_OK)
            die("write", rc, db);
    if ((rc = lsm_value_writer_commit(w, 1)) != LSM_OK)
        die("commit", rc, db);
    uint64_t end = size;
    double t = now();
    for (long i = 0; i < n; i++) {
        if ((rc = lsm_value_writer_open(db, "log", 3, LSM_VW_KEEP, &w)) != LSM_OK ||
            (rc = lsm_value_writer_write(w, end, line, sizeof line)) != LSM_OK ||
            (rc = lsm_value_writer_commit(w, 0)) != LSM_OK)
            die("append", rc, db);
        end += sizeof line;
    }
    double engine = (double)n / (now() - t);
    if ((rc = lsm_close(db)) != LSM_OK)
        die("close", rc, NULL);
    lsm_options_free(o);

    int fd = open(plain, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    for (uint64_t off = 0; fd >= 0 && off < size; off += MiB)
        if (write(fd, block, MiB) != (ssize_t)MiB)
            return perror("write"), 1;
    if (fd < 0 || fsync(fd) != 0 || close(fd) != 0)
        return perror(plain), 1;
    t = now();
    for (long i = 0; i < n; i++) {
        fd = open(plain, O_WRONLY | O_APPEND);
        if (fd < 0 || write(fd, line, sizeof line) != (ssize_t)sizeof line || close(fd) != 0)
            return perror(plain), 1;
    }
    double posix = (double)n / (now() - t);
    printf("append of a 100-byte line to a %llu MiB value, %ld times:\n",
           (unsigned long long)(size / MiB), n);
    printf("  lsm_value_writer open/write/commit(0)  %12.0f ops/s\n", engine);
    printf("  open(O_APPEND)/write/close             %12.0f ops/s\n", posix);
    printf("  ratio                                  %12.4fx\n", engine / posix);
    free(block);
    return 0;
}
