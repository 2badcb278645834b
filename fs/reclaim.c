/*
 * reclaim.c — giving back the space of large files that were removed or replaced.
 *
 * What: a value of LSMFS_RECLAIM_MIN bytes or more lives in an engine blob file, and a blob file is
 * deleted only when no table refers to it any more. After rm (or a rename over, or a write-back
 * replacing) such a file, its old reference still sits in some table until a merge meets it, and
 * with no other writes arriving that may never happen: the disk space would not come back. So
 * every such change notes the file's key here, and one second after the last note a thread asks
 * the engine to merge the keys noted (lsm_compact_range), which drops the references and deletes
 * the blob files they held.
 *
 * Small files removed leave dead versions in the tables themselves, which the ordinary merging
 * clears as long as writes go on. When a directory is removed after 1 MiB or more of small files
 * were (rm -r of a tree of small files, say), the key range below it is noted too, so that their
 * space also comes back without further writes.
 *
 * A directory renamed is copied key by key to its new name, so the range below its old name is
 * noted as well.
 *
 * How the keys are grouped: they are sorted, and keys with the same parent directory form one
 * range from the first to the last (rm -r of a directory is one merge of its key range); keys in
 * different directories get ranges of their own, so that two removals far apart in the namespace
 * do not make one merge of everything between them. At most RECLAIM_KEYS keys wait; past that the
 * range of all of them is taken instead.
 *
 * The same thread lets idle pooled iterators go (lsmfs_iter_pool_trim): each holds a snapshot and
 * the version of its last use, so without this the tables and blob files merges replaced since
 * would stay on disk until the next directory listing.
 *
 * Never: call the engine from a request thread (the merge waits for disk work); hold the lock
 * while merging; outlive the engine (lsmfs_reclaim_stop merges what is still noted and joins the
 * thread, before lsm_close).
 */
#include "lsmfs.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

#define RECLAIM_KEYS     64
#define RECLAIM_QUIET_NS 1000000000LL   /* wait this long after the last note */
#define RECLAIM_TRIM_NS  2000000000LL   /* idle pooled iterators go after this long */
#define RECLAIM_DIR_MIN  ((uint64_t)1 << 20)  /* small files removed before an rmdir counts */

struct lsmfs_reclaim {
    pthread_mutex_t mu;         /* guards all below but thread */
    pthread_cond_t cv;          /* a note, or stop */
    pthread_t thread;           /* constant while it runs */
    int stop;                   /* lsmfs_reclaim_stop was called */
    char *keys[RECLAIM_KEYS];   /* the keys noted, each malloc'd */
    size_t lens[RECLAIM_KEYS];  /* their lengths */
    int n;                      /* keys noted */
    char *lo, *hi;              /* when more than RECLAIM_KEYS were noted: their range */
    size_t lon, hin;            /* their lengths */
    int64_t last;               /* CLOCK_MONOTONIC ns of the last note */
    uint64_t small_removed;     /* bytes of small files removed since the last rmdir note */
};

/* Waits on rec->cv (rec->mu held) for at most ns nanoseconds; 1 when the time ran out. */
static int reclaim_wait(struct lsmfs_reclaim *rec, int64_t ns)
{
    int64_t t = lsmfs_now() + ns;       /* the condition variable keeps CLOCK_REALTIME */
    struct timespec ts = { .tv_sec = (time_t)(t / 1000000000LL),
                           .tv_nsec = (long)(t % 1000000000LL) };
    return pthread_cond_timedwait(&rec->cv, &rec->mu, &ts) == ETIMEDOUT;
}

/* Replaces *dst (of *dn bytes) by a copy of k. Returns ENOMEM without memory, leaving *dst. */
static int reclaim_set_copy(char **dst, size_t *dn, const char *k, size_t n)
{
    char *c = malloc(n ? n : 1);
    if (!c)
        return ENOMEM;
    memcpy(c, k, n);
    free(*dst);
    *dst = c;
    *dn = n;
    return 0;
}

/* Widens [rec->lo, rec->hi] to take k (rec->mu held). Returns ENOMEM without memory. */
static int reclaim_widen(struct lsmfs_reclaim *rec, const char *k, size_t n)
{
    if ((!rec->lo || lsmfs_key_cmp(k, n, rec->lo, rec->lon) < 0) &&
        reclaim_set_copy(&rec->lo, &rec->lon, k, n))
        return ENOMEM;
    if ((!rec->hi || lsmfs_key_cmp(k, n, rec->hi, rec->hin) > 0) &&
        reclaim_set_copy(&rec->hi, &rec->hin, k, n))
        return ENOMEM;
    return 0;
}

void lsmfs_reclaim_note(struct lsmfs *fs, const char *key, size_t klen)
{
    struct lsmfs_reclaim *rec = fs->reclaim;
    if (!rec)
        return;
    pthread_mutex_lock(&rec->mu);
    if (!rec->stop) {
        rec->last = lsmfs_mono_ns();
        char *c = NULL;
        if (rec->n < RECLAIM_KEYS && !rec->lo && (c = malloc(klen ? klen : 1))) {
            memcpy(c, key, klen);
            rec->keys[rec->n] = c;
            rec->lens[rec->n++] = klen;
        } else {
            /* Too many: fold everything noted into one range. Out of memory, the note is lost,
               which costs space until merges get there by themselves, never data. */
            for (int i = 0; i < rec->n; i++) {
                reclaim_widen(rec, rec->keys[i], rec->lens[i]);
                free(rec->keys[i]);
            }
            rec->n = 0;
            reclaim_widen(rec, key, klen);
        }
        pthread_cond_signal(&rec->cv);
    }
    pthread_mutex_unlock(&rec->mu);
}

void lsmfs_reclaim_removed(struct lsmfs *fs, uint64_t bytes)
{
    struct lsmfs_reclaim *rec = fs->reclaim;
    if (!rec)
        return;
    pthread_mutex_lock(&rec->mu);
    rec->small_removed += bytes;
    pthread_mutex_unlock(&rec->mu);
}

void lsmfs_reclaim_note_dir(struct lsmfs *fs, const char *path, size_t plen)
{
    struct lsmfs_reclaim *rec = fs->reclaim;
    if (!rec)
        return;
    pthread_mutex_lock(&rec->mu);
    int due = rec->small_removed >= RECLAIM_DIR_MIN;
    if (due)
        rec->small_removed = 0;
    pthread_mutex_unlock(&rec->mu);
    if (due)
        lsmfs_reclaim_note_tree(fs, path, plen);
}

void lsmfs_reclaim_note_tree(struct lsmfs *fs, const char *path, size_t plen)
{
    /* From "path/" to "path/" and the greatest name: every key below the directory. Both bounds
       have the parent "path/", so they make one range. */
    char *k = malloc(plen + 1 + LSMFS_NAME_MAX);
    if (!k)
        return;
    memcpy(k, path, plen);
    k[plen] = '/';
    lsmfs_reclaim_note(fs, k, plen + 1);
    memset(k + plen + 1, 0xff, LSMFS_NAME_MAX);
    lsmfs_reclaim_note(fs, k, plen + 1 + LSMFS_NAME_MAX);
    free(k);
}

/* The directory part of a path key: up to its last '/'. */
static size_t reclaim_parent_len(const char *k, size_t n)
{
    while (n > 0 && k[n - 1] != '/')
        n--;
    return n;
}

/* A key taken from the notes by the thread: its own. */
struct keyref {
    char *k;                    /* malloc'd */
    size_t n;                   /* its length */
};

static int reclaim_keyref_cmp(const void *a, const void *b)
{
    const struct keyref *x = a, *y = b;
    return lsmfs_key_cmp(x->k, x->n, y->k, y->n);
}

static void reclaim_merge(struct lsmfs *fs, const char *lo, size_t lon, const char *hi, size_t hin)
{
    int rc = lsm_compact_range(fs->db, lo, lon, hi, hin);
    if (rc != LSM_OK)
        lsmfs_log(LOG_WARNING, "reclaiming the space of removed files (%.*s .. %.*s): %s",
                  (int)(lon < 200 ? lon : 200), lo, (int)(hin < 200 ? hin : 200), hi,
                  lsm_errmsg(fs->db));
}

static void *reclaim_main(void *arg)
{
    struct lsmfs *fs = arg;
    struct lsmfs_reclaim *rec = fs->reclaim;
    pthread_mutex_lock(&rec->mu);
    for (;;) {
        while (!rec->stop && rec->n == 0 && !rec->lo) {
            /* Meanwhile, every RECLAIM_TRIM_NS, pooled iterators nobody used for as long give
               back the versions they pin (keys.c). */
            if (reclaim_wait(rec, RECLAIM_TRIM_NS)) {
                pthread_mutex_unlock(&rec->mu);
                lsmfs_iter_pool_trim(fs, RECLAIM_TRIM_NS);
                pthread_mutex_lock(&rec->mu);
            }
        }
        if (rec->n == 0 && !rec->lo)
            break;              /* stopping, nothing left */
        /* Quiet for a second: rm -r and rename storms end before any merge starts. At unmount
           what is noted is merged at once, so that rm then umount gives the space back. */
        int64_t wait = rec->last + RECLAIM_QUIET_NS - lsmfs_mono_ns();
        if (wait > 0 && !rec->stop) {
            reclaim_wait(rec, wait);
            continue;
        }
        struct keyref keys[RECLAIM_KEYS];
        int n = rec->n;
        for (int i = 0; i < n; i++) {
            keys[i].k = rec->keys[i];
            keys[i].n = rec->lens[i];
        }
        rec->n = 0;
        char *lo = rec->lo, *hi = rec->hi;
        size_t lon = rec->lon, hin = rec->hin;
        rec->lo = rec->hi = NULL;
        pthread_mutex_unlock(&rec->mu);

        /* An idle pooled iterator holds a snapshot, and a merge keeps every version a snapshot
           can see: let the pool go first, or the old values would survive the merge. */
        lsmfs_iter_pool_free(fs);
        if (lo)
            reclaim_merge(fs, lo, lon, hi, hin);
        qsort(keys, (size_t)n, sizeof keys[0], reclaim_keyref_cmp);
        for (int i = 0; i < n;) {
            int j = i + 1;
            size_t p = reclaim_parent_len(keys[i].k, keys[i].n);
            while (j < n && reclaim_parent_len(keys[j].k, keys[j].n) == p &&
                   memcmp(keys[j].k, keys[i].k, p) == 0)
                j++;
            reclaim_merge(fs, keys[i].k, keys[i].n, keys[j - 1].k, keys[j - 1].n);
            i = j;
        }
        for (int i = 0; i < n; i++)
            free(keys[i].k);
        free(lo);
        free(hi);
        /* Likewise an iterator pooled during the merges pins the tables (and blob files) they
           replaced: let them go now, not at its next use. */
        lsmfs_iter_pool_free(fs);
        pthread_mutex_lock(&rec->mu);
    }
    pthread_mutex_unlock(&rec->mu);
    return NULL;
}

int lsmfs_reclaim_start(struct lsmfs *fs)
{
    struct lsmfs_reclaim *rec = calloc(1, sizeof *rec);
    if (!rec)
        return ENOMEM;
    pthread_mutex_init(&rec->mu, NULL);
    pthread_cond_init(&rec->cv, NULL);
    fs->reclaim = rec;
    int rc = lsmfs_thread_start(&rec->thread, reclaim_main, fs);
    if (rc != 0) {
        fs->reclaim = NULL;   /* notes are dropped: merges reach those keys by themselves */
        pthread_cond_destroy(&rec->cv);
        pthread_mutex_destroy(&rec->mu);
        free(rec);
    }
    return rc;
}

void lsmfs_reclaim_stop(struct lsmfs *fs)
{
    struct lsmfs_reclaim *rec = fs->reclaim;
    if (!rec)
        return;
    pthread_mutex_lock(&rec->mu);
    rec->stop = 1;
    pthread_cond_signal(&rec->cv);
    pthread_mutex_unlock(&rec->mu);
    pthread_join(rec->thread, NULL);
    fs->reclaim = NULL;
    for (int i = 0; i < rec->n; i++)
        free(rec->keys[i]);
    free(rec->lo);
    free(rec->hi);
    pthread_cond_destroy(&rec->cv);
    pthread_mutex_destroy(&rec->mu);
    free(rec);
}
