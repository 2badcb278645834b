/*
 * lsmctl — operate a liblsm database directory (DATADIR): read and write keys, scan, dump and
 * load, back up, check, repair, show statistics and compact (lsmctl(1)).
 *
 * This file is only the front door: global options, opening DATADIR read-only for commands that
 * only read (so that they never change a byte of it and run beside other readers) and read-write
 * for the rest, then ctl_run (ctl_cmd.c), which holds every command so that lsmfs can run the very
 * same ones on the handle it has open. When the open fails because another process holds the
 * directory — a mounted lsmfs — the command goes to that daemon through its control socket,
 * DATADIR/lsmfs.ctl (ctl_client.c), which runs it with the same code on the handle it has open;
 * -d also takes the mount point of an lsmfs, whose DATADIR is the mount's source. Snapshots
 * (ctl_snapshot.c) are handled here, since they need DATADIR's path, not only a handle.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctl_client.h"
#include "ctl_cmd.h"
#include "ctl_snapshot.h"
#include "lsm.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: lsmctl -d DATADIR [-w SECONDS] [--hex] COMMAND [ARGS...]\n"
               "       lsmctl --version | --help\n");
    ctl_usage(f);
    fprintf(f, "exit status: 0 ok, 1 not found, 2 usage, 3 damaged, 4 busy, 5 other error\n");
}

/* The pid in a lock refusal ("... (pid 123)"), or 0. */
static long holder_pid(const char *msg)
{
    const char *p = strstr(msg, "(pid ");
    return p ? strtol(p + 5, NULL, 10) : 0;
}

/* The command name of process pid (from /proc), or "" if unknown. */
static void proc_name(long pid, char *name, size_t n)
{
    char path[64];
    name[0] = 0;
    snprintf(path, sizeof path, "/proc/%ld/comm", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    if (fgets(name, (int)n, f))
        name[strcspn(name, "\n")] = 0;
    fclose(f);
}

/* The online path: hands argv to the lsmfs that holds datadir, through DATADIR/lsmfs.ctl, and
   relays its output and status. Returns -1 when no daemon serves the socket. */
static int lsmctl_forward(const char *datadir, int argc, char **argv)
{
    return ctl_forward(datadir, argc, argv, stdout, stderr);
}

static int open_db(const char *datadir, int mode, int background, double wait_s, lsm_db **db);

/* lsmctl snapshot create NAME | list | delete NAME [DATADIR|MOUNTPOINT]: through the daemon when
   one holds DATADIR, else on DATADIR itself (read-only for create: a checkpoint writes only the
   new directory). */
static int lsmctl_snapshot(const char *datadir, double wait_s, int argc, char **argv)
{
    int fwd = lsmctl_forward(datadir, argc, argv);
    if (fwd >= 0)
        return fwd;
    lsm_db *db = NULL;
    if (argc > 1 && strcmp(argv[1], "create") == 0) {
        int rc = open_db(datadir, CTL_MODE_READ, 0, wait_s, &db);
        if (rc != LSM_OK) {
            fprintf(stderr, "lsmctl: %s: %s: %s\n", datadir, lsm_strerror(rc), lsm_errmsg(NULL));
            return rc == LSM_BUSY ? CTL_EXIT_BUSY : CTL_EXIT_ERROR;
        }
    }
    int status = ctl_snapshot(db, datadir, argc, argv, stdout, stderr);
    if (db && lsm_close(db) != LSM_OK && status == CTL_EXIT_OK)
        status = CTL_EXIT_ERROR;
    return status;
}

/* Opens datadir as mode asks, retrying a busy directory for up to wait_s seconds. */
static int open_db(const char *datadir, int mode, int background, double wait_s, lsm_db **db)
{
    lsm_options *opt = lsm_options_new();
    if (!opt)
        return LSM_NOMEM;
    lsm_options_set_read_only(opt, mode == CTL_MODE_READ);
    lsm_options_set_create_if_missing(opt, mode == CTL_MODE_WRITE);
    lsm_options_set_background_compaction(opt, background);
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc;
    for (;;) {
        rc = lsm_open(datadir, opt, db);
        if (rc != LSM_BUSY)
            break;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((double)(now.tv_sec - t0.tv_sec) + (now.tv_nsec - t0.tv_nsec) / 1e9 >= wait_s)
            break;
        nanosleep(&(struct timespec){ 0, 100 * 1000 * 1000 }, NULL);
    }
    lsm_options_free(opt);
    return rc;
}

/* main, but for *mounted: the DATADIR of a mount point given with -d (malloc'd; main frees it). */
static int lsmctl_main(int argc, char **argv, char **mounted_out)
{
    const char *datadir = NULL;
    double wait_s = 0;
    int i = 1;
    for (; i < argc; i++) {
        if (strcmp(argv[i], "-d") == 0 && i + 1 < argc) {
            datadir = argv[++i];
        } else if (strcmp(argv[i], "-w") == 0 && i + 1 < argc) {
            char *end;
            wait_s = strtod(argv[++i], &end);
            if (*end || wait_s < 0) {
                fprintf(stderr, "lsmctl: -w %s: not a number of seconds\n", argv[i]);
                return CTL_EXIT_USAGE;
            }
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return CTL_EXIT_OK;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("lsmctl (liblsm %s)\n", lsm_version());
            return CTL_EXIT_OK;
        } else {
            break;
        }
    }
    /* the rest, global options such as --hex included, is the command's */
    int cargc = argc - i;
    char **cargv = argv + i;
    int c = 0;
    while (c < cargc && strcmp(cargv[c], "--hex") == 0)
        c++;
    /* snapshot create|delete NAME [PLACE], snapshot list [PLACE]: PLACE stands for -d */
    int snap = c < cargc && strcmp(cargv[c], "snapshot") == 0;
    if (snap && !datadir && cargc - c >= 3 &&
        cargc - c == (c + 1 < cargc && strcmp(cargv[c + 1], "list") == 0 ? 3 : 4))
        datadir = cargv[--cargc];
    /* a mount point of lsmfs stands for its DATADIR, the mount's source */
    char *mounted = *mounted_out = datadir ? ctl_mount_datadir(datadir) : NULL;
    if (mounted)
        datadir = mounted;
    if (snap) {
        if (!datadir) {
            fprintf(stderr, "lsmctl: snapshot: give -d DATADIR or a mount point\n");
            return CTL_EXIT_USAGE;
        }
        return lsmctl_snapshot(datadir, wait_s, cargc - c, cargv + c);
    }
    /* a mounted file system: its daemon runs the command (a read-only mount has no control
       socket; then the command opens DATADIR read-only beside it, below) */
    if (mounted) {
        int fwd = lsmctl_forward(datadir, cargc, cargv);
        if (fwd >= 0)
            return fwd;
    }
    int mode = ctl_command_mode(cargc, cargv);
    if (mode == CTL_MODE_UNKNOWN || !datadir) {
        if (!datadir && mode != CTL_MODE_UNKNOWN)
            fprintf(stderr, "lsmctl: no DATADIR: give -d DATADIR\n");
        else if (cargc > 0)
            fprintf(stderr, "lsmctl: %s: unknown command\n", cargv[0]);
        usage(stderr);
        return CTL_EXIT_USAGE;
    }
    if (mode == CTL_MODE_OFFLINE)
        return ctl_repair(datadir, stdout, stderr);

    /* script builds databases table by table, as its lines say: no background compaction */
    int background = strcmp(cargv[c], "script") != 0;
    lsm_db *db = NULL;
    int rc = open_db(datadir, mode, background, wait_s, &db);
    if (rc == LSM_BUSY) {
        int fwd = lsmctl_forward(datadir, cargc, cargv);
        if (fwd >= 0)
            return fwd;
        const char *msg = lsm_errmsg(NULL);
        long pid = holder_pid(msg);
        char name[64] = "";
        if (pid > 0)
            proc_name(pid, name, sizeof name);
        if (pid > 0 && strcmp(name, "lsmfs") == 0)
            fprintf(stderr, "lsmctl: %s is mounted by lsmfs (pid %ld), which did not answer on "
                    "%s/lsmfs.ctl; unmount it first\n", datadir, pid, datadir);
        else
            fprintf(stderr, "lsmctl: %s is in use: %s\n", datadir, msg);
        return CTL_EXIT_BUSY;
    }
    if (rc != LSM_OK) {
        const char *msg = lsm_errmsg(NULL);
        fprintf(stderr, "lsmctl: %s: %s%s%s\n", datadir, lsm_strerror(rc), *msg ? ": " : "", msg);
        return rc == LSM_CORRUPT ? CTL_EXIT_DAMAGED : CTL_EXIT_ERROR;
    }
    int status = ctl_run(db, cargc, cargv, stdout, stderr);
    rc = lsm_close(db);
    if (rc != LSM_OK && status == CTL_EXIT_OK) {
        fprintf(stderr, "lsmctl: closing %s: %s\n", datadir, lsm_strerror(rc));
        status = CTL_EXIT_ERROR;
    }
    return status;
}

int main(int argc, char **argv)
{
    char *mounted = NULL;
    int status = lsmctl_main(argc, argv, &mounted);
    free(mounted);
    return status;
}
