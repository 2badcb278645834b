/*
 * ctl_snapshot.c — lsmctl snapshot create|list|delete: named, read-only, point-in-time copies of
 * a database kept in DATADIR/snapshots/NAME, run by lsmctl offline and by lsmfs for a command
 * that reached it through its control socket.
 *
 * A snapshot is a checkpoint (lsm_checkpoint): the tables and blob files of the moment are hard
 * links, so making one copies no data, and it is a database directory of its own, which a
 * read-only mount (lsmfs -o ro,snapshot=NAME) or lsmctl -d opens beside the live database. The
 * space of its files comes back when it is deleted and the live database no longer names them.
 * It never deletes anything outside DATADIR/snapshots/NAME.
 */
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ctl_cmd.h"
#include "ctl_snapshot.h"

int ctl_snapshot_name_ok(const char *name)
{
    size_t n = strlen(name);
    return n > 0 && n <= 255 && strcmp(name, ".") != 0 && strcmp(name, "..") != 0 &&
           !strchr(name, '/');
}

static int ctl_snapshot_create(lsm_db *db, const char *datadir, const char *name, FILE *out,
                               FILE *err)
{
    char dir[PATH_MAX], path[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/" CTL_SNAPSHOT_DIR, datadir);
    if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path) {
        fprintf(err, "lsmctl: snapshot %s: path too long\n", name);
        return CTL_EXIT_USAGE;
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        fprintf(err, "lsmctl: %s: %s\n", dir, strerror(errno));
        return CTL_EXIT_ERROR;
    }
    if (access(path, F_OK) == 0) {
        fprintf(err, "lsmctl: snapshot %s exists already (%s)\n", name, path);
        return CTL_EXIT_USAGE;
    }
    int rc = lsm_checkpoint(db, path);
    if (rc != LSM_OK) {
        fprintf(err, "lsmctl: snapshot %s: %s\n", name, lsm_errmsg(db));
        return CTL_EXIT_ERROR;
    }
    fprintf(out, "%s\n", path);
    return CTL_EXIT_OK;
}

static int ctl_snapshot_list(const char *datadir, FILE *out, FILE *err)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/" CTL_SNAPSHOT_DIR, datadir);
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? CTL_EXIT_OK : (fprintf(err, "lsmctl: %s: %s\n", dir,
                                                        strerror(errno)), CTL_EXIT_ERROR);
    struct dirent **names = NULL;
    int n = scandir(dir, &names, NULL, alphasort);
    closedir(d);
    for (int i = 0; i < n; i++) {
        struct stat st;
        char path[PATH_MAX], when[64] = "?";
        if (names[i]->d_name[0] != '.' &&
            snprintf(path, sizeof path, "%s/%s/CURRENT", dir, names[i]->d_name) <
                (int)sizeof path &&
            stat(path, &st) == 0) {
            struct tm tm;
            strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", localtime_r(&st.st_mtime, &tm));
            fprintf(out, "%s\t%s\n", names[i]->d_name, when);
        }
        free(names[i]);
    }
    free(names);
    return CTL_EXIT_OK;
}

static int ctl_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    return flag == FTW_DP ? rmdir(path) : unlink(path);
}

static int ctl_snapshot_delete(const char *datadir, const char *name, FILE *out, FILE *err)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/" CTL_SNAPSHOT_DIR "/%s", datadir, name) >=
        (int)sizeof path) {
        fprintf(err, "lsmctl: snapshot %s: path too long\n", name);
        return CTL_EXIT_USAGE;
    }
    if (access(path, F_OK) != 0) {
        fprintf(err, "lsmctl: no snapshot %s\n", name);
        return CTL_EXIT_NOTFOUND;
    }
    if (nftw(path, ctl_rm_one, 16, FTW_DEPTH | FTW_PHYS) != 0) {
        fprintf(err, "lsmctl: deleting snapshot %s (%s): %s\n", name, path, strerror(errno));
        return CTL_EXIT_ERROR;
    }
    fprintf(out, "deleted %s\n", name);
    return CTL_EXIT_OK;
}

int ctl_snapshot(lsm_db *db, const char *datadir, int argc, char **argv, FILE *out, FILE *err)
{
    const char *sub = argc > 1 ? argv[1] : "";
    if (strcmp(sub, "list") == 0 && argc == 2)
        return ctl_snapshot_list(datadir, out, err);
    if ((strcmp(sub, "create") == 0 || strcmp(sub, "delete") == 0) && argc == 3) {
        if (!ctl_snapshot_name_ok(argv[2])) {
            fprintf(err, "lsmctl: '%s' cannot name a snapshot (1 to 255 bytes, no '/', not . "
                         "or ..)\n", argv[2]);
            return CTL_EXIT_USAGE;
        }
        if (sub[0] == 'd')
            return ctl_snapshot_delete(datadir, argv[2], out, err);
        if (!db) {
            fprintf(err, "lsmctl: snapshot create needs the database open\n");
            return CTL_EXIT_ERROR;
        }
        return ctl_snapshot_create(db, datadir, argv[2], out, err);
    }
    fprintf(err, "usage: lsmctl snapshot create NAME | list | delete NAME\n");
    return CTL_EXIT_USAGE;
}
