/*
 * lsmtool — offline access to a liblsm database directory, used by the test suites (the admin tool
 * issue makes it a product; until then it is built by `make` but not installed).
 *
 * The lsmfs suites use it to check that a file's bytes are exactly its key's value, and to build
 * databases the daemon has never seen: keys put through the API, several tables forced to disk with
 * lsm_flush beside a log that will replay into a live memtable, some keys overwritten or deleted.
 * It only uses the public API (lsm.h), so it sees the database as any embedder would. It opens the
 * database with background compaction off, so the tables a script asks for stay as it made them.
 * It must never run while a daemon holds the directory: lsm_open's lock refuses that, and the tool
 * reports the message.
 *
 * usage: lsmtool DIR put KEY        value read from stdin
 *        lsmtool DIR get KEY        value written to stdout; exit 1 if absent
 *        lsmtool DIR del KEY
 *        lsmtool DIR list [PREFIX]  keys (one a line) in order
 *        lsmtool DIR load           commands from stdin, one a line:
 *                                   "put KEY VALUE", "del KEY", "flush", "compact"
 *        lsmtool DIR flush | compact | stats
 * Exit status: 0 done, 1 key not found, 2 error (message on stderr).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lsm.h"

static const char *prog = "lsmtool";

static int fail(lsm_db *db, const char *what, int rc)
{
    const char *msg = lsm_errmsg(db);
    fprintf(stderr, "%s: %s: %s%s%s\n", prog, what, lsm_strerror(rc), *msg ? ": " : "", msg);
    return 2;
}

/* Reads all of f; caller frees *out with free(). */
static int read_all(FILE *f, char **out, size_t *len)
{
    size_t cap = 65536, n = 0, r;
    char *buf = malloc(cap);

    if (!buf)
        return -1;
    while ((r = fread(buf + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) {
                free(buf);
                return -1;
            }
            buf = nb;
        }
    }
    if (ferror(f)) {
        free(buf);
        return -1;
    }
    *out = buf;
    *len = n;
    return 0;
}

static int cmd_list(lsm_db *db, const char *prefix)
{
    size_t plen = prefix ? strlen(prefix) : 0, klen;
    lsm_iter *it;
    int rc = lsm_iter_new(db, &it);

    if (rc != LSM_OK)
        return fail(db, "iterator", rc);
    for (lsm_iter_seek(it, prefix, plen); lsm_iter_valid(it); lsm_iter_next(it)) {
        const char *k = lsm_iter_key(it, &klen);
        if (klen < plen || memcmp(k, prefix, plen) != 0)
            break;
        fwrite(k, 1, klen, stdout);
        putchar('\n');
    }
    rc = lsm_iter_status(it);
    lsm_iter_free(it);
    return rc == LSM_OK ? 0 : fail(db, "list", rc);
}

static int cmd_stats(lsm_db *db)
{
    lsm_stats st;
    int rc = lsm_stats_get(db, &st, sizeof st), total = 0;

    if (rc != LSM_OK)
        return fail(db, "stats", rc);
    for (int i = 0; i < LSM_MAX_LEVELS; i++) {
        printf("level%d_tables %d\nlevel%d_bytes %llu\n", i, st.tables[i], i,
               (unsigned long long)st.level_bytes[i]);
        total += st.tables[i];
    }
    printf("tables %d\nlast_sequence %llu\nmemtable_bytes %llu\ndisk_bytes %llu\n", total,
           (unsigned long long)st.last_sequence, (unsigned long long)st.memtable_bytes,
           (unsigned long long)st.disk_bytes);
    return 0;
}

/* One command per line; the value of "put KEY VALUE" is the rest of the line after one space. */
static int cmd_load(lsm_db *db)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long lineno = 0;
    int rc = LSM_OK;

    while (rc == LSM_OK && (n = getline(&line, &cap, stdin)) >= 0) {
        lineno++;
        if (n > 0 && line[n - 1] == '\n')
            line[--n] = '\0';
        if (n == 0)
            continue;
        char *key = strchr(line, ' '), *val = NULL;
        if (key) {
            *key++ = '\0';
            val = strchr(key, ' ');
            if (val)
                *val++ = '\0';
        }
        if (strcmp(line, "put") == 0 && key && val) {
            rc = lsm_put(db, key, strlen(key), val, strlen(val));
        } else if (strcmp(line, "del") == 0 && key && !val) {
            rc = lsm_delete(db, key, strlen(key));
        } else if (strcmp(line, "flush") == 0 && !key) {
            rc = lsm_flush(db);
        } else if (strcmp(line, "compact") == 0 && !key) {
            rc = lsm_compact(db);
        } else {
            fprintf(stderr, "%s: load: line %ld: bad command\n", prog, lineno);
            free(line);
            return 2;
        }
    }
    free(line);
    return rc == LSM_OK ? 0 : fail(db, "load", rc);
}

static int usage(void)
{
    fprintf(stderr, "usage: %s DIR put KEY <VALUE | get KEY | del KEY | list [PREFIX] |"
                    " load <COMMANDS | flush | compact | stats\n", prog);
    return 2;
}

int main(int argc, char **argv)
{
    lsm_options *opt;
    lsm_db *db;
    const char *cmd;
    int rc, ret = 0;

    if (argc < 3)
        return usage();
    cmd = argv[2];
    if (!(opt = lsm_options_new())) {
        fprintf(stderr, "%s: out of memory\n", prog);
        return 2;
    }
    lsm_options_set_background_compaction(opt, 0);
    lsm_options_set_create_if_missing(opt, strcmp(cmd, "put") == 0 || strcmp(cmd, "load") == 0);
    rc = lsm_open(argv[1], opt, &db);
    lsm_options_free(opt);
    if (rc != LSM_OK)
        return fail(NULL, argv[1], rc);

    if (strcmp(cmd, "put") == 0 && argc == 4) {
        char *val;
        size_t vlen;
        if (read_all(stdin, &val, &vlen) != 0) {
            perror("lsmtool: stdin");
            ret = 2;
        } else {
            rc = lsm_put(db, argv[3], strlen(argv[3]), val, vlen);
            ret = rc == LSM_OK ? 0 : fail(db, "put", rc);
            free(val);
        }
    } else if (strcmp(cmd, "get") == 0 && argc == 4) {
        /* By range, a megabyte at a time: a value of any size, holes printed as zeros. */
        static char piece[1 << 20];
        uint64_t off = 0, vlen = 0;
        size_t got = 0;
        do {
            rc = lsm_get_range(db, argv[3], strlen(argv[3]), off, piece, sizeof piece, &got, &vlen);
            if (rc == LSM_OK && got && fwrite(piece, 1, got, stdout) != got) {
                perror("lsmtool: stdout");
                ret = 2;
                break;
            }
            off += got;
        } while (rc == LSM_OK && off < vlen);
        if (rc == LSM_OK || ret) {
        } else if (rc == LSM_NOTFOUND) {
            fprintf(stderr, "%s: %s: not found\n", prog, argv[3]);
            ret = 1;
        } else {
            ret = fail(db, "get", rc);
        }
    } else if (strcmp(cmd, "del") == 0 && argc == 4) {
        rc = lsm_delete(db, argv[3], strlen(argv[3]));
        ret = rc == LSM_OK ? 0 : fail(db, "del", rc);
    } else if (strcmp(cmd, "list") == 0 && argc <= 4) {
        ret = cmd_list(db, argc == 4 ? argv[3] : NULL);
    } else if (strcmp(cmd, "load") == 0 && argc == 3) {
        ret = cmd_load(db);
    } else if (strcmp(cmd, "flush") == 0 && argc == 3) {
        rc = lsm_flush(db);
        ret = rc == LSM_OK ? 0 : fail(db, "flush", rc);
    } else if (strcmp(cmd, "compact") == 0 && argc == 3) {
        rc = lsm_compact(db);
        ret = rc == LSM_OK ? 0 : fail(db, "compact", rc);
    } else if (strcmp(cmd, "stats") == 0 && argc == 3) {
        ret = cmd_stats(db);
    } else {
        ret = usage();
    }
    if (fflush(stdout) != 0 && ret == 0) {
        perror("lsmtool: stdout");
        ret = 2;
    }
    rc = lsm_close(db);
    if (rc != LSM_OK && ret == 0)
        ret = fail(NULL, "close", rc);
    return ret;
}
