/*
 * compact.c — the compaction work: merging the inputs compact_pick.c chose, writing the outputs,
 * and installing the result; the compaction threads; lsm_compact and lsm_compact_range.
 *
 * A compaction writes new tables in the output level, cut at table_bytes but never inside one user
 * key's versions, so the tables of a level stay disjoint by user key. A table that overlaps nothing
 * below is moved down by a manifest edit instead of being rewritten. Blob garbage collection rides
 * on compaction, by age: a compaction that meets a reference into the oldest quarter of the live
 * blob files copies the value into a new blob file, so old files lose their references and are
 * deleted once no table (of any pinned version) names them.
 *
 * What a merge drops: a version shadowed by a newer version that every live snapshot can see, and a
 * tombstone every snapshot can see when no deeper level may hold the key. It must never drop the
 * newest version visible to some live iterator, and never install outputs before they are durable.
 * Two background threads compact at once when their levels are disjoint and writes are arriving
 * (L0->L1 beside L2->L3, say: L0 keeps draining while a long deep compaction runs); with only reads
 * arriving one compacts at a time, leaving the CPU to them. A level's busy bit keeps every other
 * compaction off the levels one reads and writes. Tables reach a level deeper than a compaction's
 * output only from compactions deeper still, so its check that no deeper level holds a key stays
 * true while it runs. lsm_compact waits for the background ones and holds every level.
 *
 * While writes arrive, a compaction that reads SPLIT_MIN_TABLES tables' worth or more and has two
 * or more tables in its output level is merged as two key ranges, split at the smallest user key of
 * the middle output-level table, by its own thread and a helper thread (a subcompaction, as RocksDB
 * calls it). Each half writes tables only inside its range, so the level stays disjoint, and one
 * manifest edit installs both halves. L0->L1 and L1->L2 both hold L1 and cannot run side by side;
 * splitting them shortens the time L1 is held, which is what the second compaction thread otherwise
 * waits for.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <stdlib.h>
#include "builder.h"
#include "db_impl.h"
#include "extent.h"

/* Whether no level deeper than out_level may hold ukey (so a tombstone for it can go). */
static int compact_is_base(const compaction *c, slice ukey)
{
    if (c->full)
        return 1;
    for (int l = c->out_level + 1; l < LSM_MAX_LEVELS; l++)
        if (version_find_key(c->v, l, ukey.p, ukey.n) >= 0)
            return 0;
    return 1;
}

/* Outputs of one compaction that are finished but not yet synced. Syncing them together at the end
   costs one journal commit instead of one per table, and their bytes were already on their way to
   the device (the builder asks for writeback as it writes), so the wait is short. */
#define UNSYNCED_MAX 32
typedef struct {
    lsm_file *f[UNSYNCED_MAX];
    uint64_t number[UNSYNCED_MAX];
    int n;
} unsynced;

/* Syncs and closes every file of u; returns the first failure, having closed them all. */
static int unsynced_sync_close(lsm_db *db, unsynced *u, char *err)
{
    int rc = LSM_OK;
    for (int i = 0; i < u->n; i++) {
        int e = rc == LSM_OK ? db->env->sync(db->env, u->f[i]) : 0;
        if (e < 0) {
            char path[4096];
            file_path(db->dir, u->number[i], ".sst", path, sizeof path);
            rc = err_errno(err, e, "syncing", path);
        }
        db->env->close(db->env, u->f[i]);
    }
    u->n = 0;
    return rc;
}

/* Finishes the output tw, names it in e and keeps it for the sync at the end (earlier when u is
   full, so a huge compaction holds a bounded number of descriptors). */
static int compact_output_done(lsm_db *db, table_writer *tw, version_edit *e, int level,
                               unsynced *u, uint64_t *bytes, char *err)
{
    if (u->n == UNSYNCED_MAX) {
        int rc = unsynced_sync_close(db, u, err);
        if (rc != LSM_OK) {
            builder_abandon(tw);
            return rc;
        }
    }
    file_meta *f = NULL;
    uint64_t number = tw->number;
    int rc = builder_finish(tw, &f, bytes, &u->f[u->n], err);
    if (rc != LSM_OK)
        return rc;
    u->number[u->n++] = number;
    edit_add(e, level, f);
    file_meta_unref(f);
    return LSM_OK;
}

/* One key range of a compaction's merge: the user keys in [lo, hi), a bound with p NULL meaning
   unbounded. A large compaction is split in two ranges merged by two threads at once. */
typedef struct subcompaction {
    lsm_db *db;
    const compaction *c;
    slice lo, hi;
    version_edit e;             /* its outputs */
    unsynced u;                 /* its outputs not yet synced */
    uint64_t bytes;
    int rc;
    char err[LSM_ERRLEN];
} subcompaction;

/* A compaction is split when it reads at least this many tables' worth of bytes and has at least
   two tables in its output level to split between. */
#define SPLIT_MIN_TABLES 4

/* The merge of c's inputs, positioned at the first entry of user key lo (lo.p NULL: the first).
   One iterator per L0 table; the tables of a deeper level are disjoint, so one for all of them. */
static iiter *compact_inputs(lsm_db *db, const compaction *c, slice lo)
{
    iiter **kids = xmalloc((size_t)(c->n + 1) * sizeof *kids);
    int k = 0;
    for (int i = 0; i < c->n;) {
        int j = i;
        if (c->in_level[i] == 0) {
            kids[k++] = table_cache_iter(&db->tables, c->in[i]);
            i++;
            continue;
        }
        while (j < c->n && c->in_level[j] == c->in_level[i])
            j++;
        kids[k++] = table_cache_run_iter(&db->tables, c->in + i, j - i);
        i = j;
    }
    iiter *m = merge_iter_new(kids, k);
    free(kids);
    if (lo.p) {
        /* The first entry of user key lo: the largest trailer sorts first. */
        buf first = { 0 };
        ikey_build(&first, lo.p, lo.n, LSM_MAX_SEQ, 0xff);
        iiter_seek(m, (slice){ first.p, first.len });
        buf_free(&first);
    } else {
        iiter_seek_first(m);
    }
    return m;
}

/* Merges the inputs of s->c in s's key range into new tables of out_level (named in s->e, left in
   s->u unsynced). */
static int compact_merge(subcompaction *s)
{
    lsm_db *db = s->db;
    const compaction *c = s->c;
    char *err = s->err;
    int rc = LSM_OK;
    iiter *m = compact_inputs(db, c, s->lo);
    buf cur = { 0 };
    table_writer tw;
    int open = 0, have_cur = 0;
    uint64_t last_seq_for_key = 0;
    buf newer = { 0 };          /* the version of cur seen last (only blob and map values) */
    int newer_type = -1;
    for (; rc == LSM_OK && iiter_valid(m); iiter_next(m)) {
        slice key = iiter_key(m);
        slice uk = ikey_user(key);
        if (!have_cur || ukey_cmp(uk.p, uk.n, cur.p, cur.len) != 0) {
            if (s->hi.p && ukey_cmp(uk.p, uk.n, s->hi.p, s->hi.n) >= 0)
                break;
            cur.len = 0;
            buf_append(&cur, uk.p, uk.n);
            have_cur = 1;
            last_seq_for_key = LSM_MAX_SEQ + 1;
            newer_type = -1;
            /* Cut tables only between user keys, so a level stays disjoint by user key. */
            if (open && sst_builder_file_size(tw.b) >= db->opt.table_bytes) {
                open = 0;
                rc = compact_output_done(db, &tw, &s->e, c->out_level, &s->u, &s->bytes, err);
                if (rc != LSM_OK)
                    break;
            }
        }
        uint64_t seq = ikey_seq(key);
        int drop = 0;
        if (last_seq_for_key <= c->smallest_snapshot)
            drop = 1;       /* a newer version of this key is visible to every reader */
        else if (ikey_type(key) == LSM_TYPE_DELETE && seq <= c->smallest_snapshot &&
                 compact_is_base(c, uk))
            drop = 1;       /* nothing older below to hide, and every reader sees the delete */
        last_seq_for_key = seq;
        /* Live-byte accounting: what a dropped version used and the next newer one does not is
           garbage of its blob files (extent.c). */
        int type = ikey_type(key);
        if (drop)
            extent_note_dropped(db, newer_type, (slice){ newer.p, newer.len }, type, iiter_value(m));
        newer_type = type;
        newer.len = 0;
        if (type == LSM_TYPE_BLOB || type == LSM_TYPE_EXTENTS)
            buf_append(&newer, iiter_value(m).p, iiter_value(m).n);
        if (drop)
            continue;
        if (!open) {
            rc = builder_open(db, &tw, err);
            if (rc != LSM_OK)
                break;
            tw.gc_cutoff = c->gc_cutoff;
            tw.relocate = 1;
            open = 1;
        }
        rc = builder_add(&tw, key, iiter_value(m), err);
    }
    if (rc == LSM_OK)
        rc = iiter_status(m, err);
    iiter_free(m);
    buf_free(&cur);
    buf_free(&newer);
    if (open) {
        if (rc == LSM_OK)
            rc = compact_output_done(db, &tw, &s->e, c->out_level, &s->u, &s->bytes, err);
        else
            builder_abandon(&tw);
    }
    return rc;
}

static void *compact_merge_thread(void *arg)
{
    subcompaction *s = arg;     /* runs at its creator's nice value, which Linux passes on */
    s->rc = compact_merge(s);
    return NULL;
}

/* Where to split c, or a slice with p NULL: the user key of the smallest entry of the middle input
   table of the output level, so that each half rewrites about half of that level's tables. The
   slice points into that table's file_meta, which c's pinned version keeps. Only while writes
   arrive: with only reads arriving, one thread merges and the other core is left to them. */
static slice compact_split_key(const lsm_db *db, const compaction *c)
{
    uint64_t in = 0;
    int first = -1, nout = 0;
    for (int i = 0; i < c->n; i++) {
        in += c->in[i]->size;
        if (c->in_level[i] == c->out_level) {
            if (first < 0)
                first = i;
            nout++;
        }
    }
    if (!c->may_split || nout < 2 || in < SPLIT_MIN_TABLES * db->opt.table_bytes)
        return (slice){ NULL, 0 };
    const buf *k = &c->in[first + nout / 2]->smallest;
    return (slice){ k->p, k->len - LSM_TRAILER };
}

/* Merges c's inputs, in two key ranges on two threads when compact_split_key says so, and names
   every output in e; the outputs are synced (or, after a failure, closed) on return. */
static int compact_merge_all(lsm_db *db, const compaction *c, version_edit *e, char *err)
{
    /* The split key starts the upper half. Both halves' outputs stay within their range, so the
       level stays disjoint. */
    slice split = compact_split_key(db, c);
    subcompaction sub[2];
    int nsub = 1, rc = LSM_OK;
    memset(sub, 0, sizeof sub);
    for (int i = 0; i < 2; i++) {
        sub[i].db = db;
        sub[i].c = c;
        edit_init(&sub[i].e);
    }
    pthread_t helper;
    if (split.p) {
        sub[0].hi = split;
        sub[1].lo = split;
        if (thread_start(&helper, compact_merge_thread, &sub[1]) == 0) {
            nsub = 2;
            atomic_fetch_add(&db->st_compactions_split, 1);
        } else {
            sub[0].hi.p = NULL; /* no thread to be had: merge it all here */
        }
    }
    sub[0].rc = compact_merge(&sub[0]);
    if (nsub == 2)
        pthread_join(helper, NULL);

    /* Gather both halves: the first failure wins, every output is synced or closed. */
    uint64_t bytes = 0;
    for (int i = 0; i < nsub; i++) {
        if (rc == LSM_OK && sub[i].rc != LSM_OK) {
            rc = sub[i].rc;
            memcpy(err, sub[i].err, LSM_ERRLEN);
        }
        bytes += sub[i].bytes;
        for (int j = 0; j < sub[i].e.nadded; j++)
            edit_add(e, sub[i].e.added[j].level, sub[i].e.added[j].f);
        edit_free(&sub[i].e);
    }
    atomic_fetch_add(&db->st_compact_bytes, bytes);
    for (int i = 0; i < nsub; i++) {
        char serr[LSM_ERRLEN];
        int src = unsynced_sync_close(db, &sub[i].u, rc == LSM_OK ? err : serr);
        if (rc == LSM_OK)
            rc = src;           /* keeps the first message */
    }
    return rc;
}

/* Tells the logger what compaction c did, which e installed (no lock held). */
static void compact_log(lsm_db *db, const compaction *c, const version_edit *e, uint64_t t0)
{
    if (c->trivial_move) {
        db_log(db, LSM_LOG_DEBUG, "compaction: moved %06" PRIu64 ".sst from level %d to %d",
               c->in[0]->number, c->in_level[0], c->out_level);
        return;
    }
    uint64_t in = 0, out = 0;
    for (int i = 0; i < c->n; i++)
        in += c->in[i]->size;
    for (int i = 0; i < e->nadded; i++)
        out += e->added[i].f->size;
    db_log(db, LSM_LOG_DEBUG, "compaction: level %d to %d: %d tables, %" PRIu64 " bytes, into "
           "%d tables, %" PRIu64 " bytes, in %" PRIu64 " ms", c->in_level[0], c->out_level, c->n,
           in, e->nadded, out, (now_micros() - t0) / 1000);
}

/* Merges c's inputs into new tables of c->out_level and installs the result. */
static int compact_run(lsm_db *db, compaction *c, char *err)
{
    version_edit e;
    edit_init(&e);
    int rc = LSM_OK;
    uint64_t t0 = now_micros();
    if (c->trivial_move) {
        edit_delete(&e, c->in_level[0], c->in[0]->number);
        edit_add(&e, c->out_level, c->in[0]);
        goto apply;
    }
    for (int i = 0; i < c->n; i++)
        atomic_fetch_add(&db->st_compact_read, c->in[i]->size);
    if (c->grouped)
        atomic_fetch_add(&db->st_compactions_grouped, 1);
    rc = compact_merge_all(db, c, &e, err);
    if (rc == LSM_OK)
        rc = db_sync_dir(db, err);
    if (rc != LSM_OK)
        goto fail;
    for (int i = 0; i < c->n; i++)
        edit_delete(&e, c->in_level[i], c->in[i]->number);

apply:
    pthread_mutex_lock(&db->manifest_mu);
    extent_edit_garbage(db, &e);    /* taken under manifest_mu: totals reach it in order */
    rc = vset_apply(&db->vs, &e, err);
    pthread_mutex_unlock(&db->manifest_mu);
    if (rc == LSM_OK) {
        atomic_fetch_add(&db->st_compactions, 1);
        compact_log(db, c, &e, t0);
        edit_free(&e);
        return LSM_OK;
    }
fail:
    /* Outputs no version names: remove them. A trivial move added no new file. */
    if (!c->trivial_move)
        for (int i = 0; i < e.nadded; i++) {
            char path[4096];
            file_path(db->dir, e.added[i].f->number, ".sst", path, sizeof path);
            db->env->unlink(db->env, path);
        }
    edit_free(&e);
    return rc;
}

/* Ends a compaction that held the levels `busy` (caller holds mu): a failure for want of space
   holds compactions back for a second (deletes may free space meanwhile); any other failure stops
   all background writes; everyone waiting on compaction progress looks again. */
static void compact_done(lsm_db *db, unsigned busy, int rc, const char *err)
{
    db->compacting--;
    db->level_busy &= ~busy;
    if (db->flush_nospace)
        pthread_cond_broadcast(&db->work_cv);   /* the flush may fit now */
    if (space_retryable(db, rc)) {
        space_release(db);
        db->compact_wait_until = now_micros() + COMPACT_SPACE_WAIT;
        db_fail(db, rc, err);
        db_log_later(db, LSM_LOG_WARN, "compaction postponed: %s", err);
    } else if (rc != LSM_OK) {
        db_set_bg_error(db, rc, err);
    }
    pthread_cond_broadcast(&db->bg_cv);
    pthread_cond_broadcast(&db->compact_cv);
}

/* Whether writers are waiting on level 0 or switched memtables in the last second (caller holds
   mu). A second compaction starts only then: it is there to keep level 0 from stalling writers,
   and when only reads arrive it would take their CPU for work that can wait. */
static int compact_writes_recent(const lsm_db *db)
{
    return db->l0_stopped || now_micros() - db->last_switch_micros < 1000000;
}

/* Which blob files c moves values out of. Moving writes up to their size again, so only with
   room to spare: the copies, c's own output (need) and a reserve's worth left free for flushes;
   never in low-space mode. */
static uint64_t compact_gc_cutoff(lsm_db *db, const compaction *c, uint64_t need)
{
    if (c->trivial_move || c->n == 0 || space_low(db))
        return 0;
    uint64_t cutoff = blob_set_gc_cutoff(&db->blobs);
    if (cutoff && !space_fits(db, need + blob_set_bytes_below(&db->blobs, cutoff) +
                                  db->opt.reserve_bytes))
        return 0;
    return cutoff;
}

/* compact_run, if the file system has room for everything c could write (its inputs' size, an
   upper bound) — giving back the reserve if that makes the room — so that a compaction never
   starts that a full disk would stop half way; else LSM_NOSPACE, having written nothing. */
static int compact_run_if_room(lsm_db *db, compaction *c, char *err)
{
    uint64_t need = 0;
    for (int i = 0; i < c->n && !c->trivial_move; i++)
        need += c->in[i]->size;
    if (!space_fits(db, need) && !(space_release(db) && space_fits(db, need)))
        return err_set(err, LSM_NOSPACE, "%s: the disk is full: no room for a compaction of "
                       "%" PRIu64 " bytes", db->dir, need);
    c->gc_cutoff = compact_gc_cutoff(db, c, need);
    return compact_run(db, c, err);
}

void *compact_thread_main(void *arg)
{
    lsm_db *db = arg;
    char err[LSM_ERRLEN];
    /* Below the caller's threads in the scheduler (Linux applies nice per thread): on a small
       machine compaction takes the CPU that reads and writes leave, and the write stalls are what
       stops writers from outrunning it. Best effort; a failure leaves the priority as it was. */
    errno = 0;
    int nice_now = getpriority(PRIO_PROCESS, 0);
    if (errno == 0) {
        int nice_to = nice_now + COMPACT_NICE > 19 ? 19 : nice_now + COMPACT_NICE;
        setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), nice_to);
    }
    pthread_mutex_lock(&db->mu);
    for (;;) {
        int level = 0;
        while (!db->shutting_down &&
               (db->bg_error || !db->opt.background_compaction || db->manual_waiting ||
                (db->compacting > 0 && !compact_writes_recent(db)) ||
                (compact_score(db, db->vs.current, db->level_busy, &level) < 1 &&
                 !compact_seek_due(db))))
            pthread_cond_wait(&db->compact_cv, &db->mu);
        if (db->shutting_down)
            break;
        uint64_t now = now_micros();
        if (db->compact_wait_until > now) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            uint64_t ns = (uint64_t)ts.tv_nsec + (db->compact_wait_until - now) * 1000;
            ts.tv_sec += (time_t)(ns / 1000000000u);
            ts.tv_nsec = (long)(ns % 1000000000u);
            pthread_cond_timedwait(&db->compact_cv, &db->mu, &ts);
            continue;
        }
        compaction c;
        file_meta *seek = NULL;
        if (compact_score(db, db->vs.current, db->level_busy, &level) < 1) {
            /* Size is fine, but reads keep probing a table in vain: compact it down. */
            seek = db->seek_file;
            level = db->seek_level;
            db->seek_file = NULL;
        }
        compact_pick(db, level, seek, &c);
        c.may_split = compact_writes_recent(db);
        file_meta_unref(seek);
        if (db->compacting++ > 0)
            atomic_fetch_add(&db->st_compactions_parallel, 1);
        db->level_busy |= compact_level_bits(level);
        pthread_mutex_unlock(&db->mu);
        int rc = compact_run_if_room(db, &c, err);
        compaction_free(&c);
        if (rc == LSM_OK && space_low(db))
            space_refill(db, 0);
        db_log_drain(db);
        pthread_mutex_lock(&db->mu);
        compact_done(db, compact_level_bits(level), rc, err);
        if (atomic_load(&db->logq_n)) {
            pthread_mutex_unlock(&db->mu);
            db_log_drain(db);
            pthread_mutex_lock(&db->mu);
        }
    }
    pthread_mutex_unlock(&db->mu);
    return NULL;
}

/* Waits until no compaction runs and takes every level (caller holds mu). */
static int compact_take_all(lsm_db *db, char *err)
{
    db->manual_waiting++;
    while (db->compacting && !db->bg_error)
        pthread_cond_wait(&db->bg_cv, &db->mu);
    db->manual_waiting--;
    if (db->bg_error)
        return err_set(err, db->bg_error, "%s", db->bg_errmsg);
    db->compacting++;
    db->level_busy = ~0u;
    return LSM_OK;
}

/* Starts a compaction the caller asked for: takes every level, then pins the current version in
   an empty c, which may split. */
static int compact_manual_begin(lsm_db *db, compaction *c, char *err)
{
    pthread_mutex_lock(&db->mu);
    int rc = compact_take_all(db, err);
    if (rc == LSM_OK) {
        memset(c, 0, sizeof *c);
        c->v = db->vs.current;
        version_ref(c->v);
        c->smallest_snapshot = db_oldest_snapshot(db);
        c->may_split = 1;
    }
    pthread_mutex_unlock(&db->mu);
    return rc;
}

/* Runs c when it has inputs, frees it and gives the levels back. */
static int compact_manual_end(lsm_db *db, compaction *c, char *err)
{
    int rc = c->n ? compact_run_if_room(db, c, err) : LSM_OK;
    compaction_free(c);
    if (rc == LSM_OK && space_low(db))
        space_refill(db, 1);
    pthread_mutex_lock(&db->mu);
    compact_done(db, ~0u, rc, err);
    pthread_mutex_unlock(&db->mu);
    db_log_drain(db);
    return rc;
}

static int compact_all(lsm_db *db, char *err)
{
    compaction c;
    int rc = compact_manual_begin(db, &c, err);
    if (rc != LSM_OK)
        return rc;
    uint64_t total = 0;
    int deepest = 1;
    for (int l = 0; l < LSM_MAX_LEVELS; l++)
        for (int i = 0; i < c.v->nfiles[l]; i++) {
            compaction_add(&c, c.v->files[l][i], l);
            total += c.v->files[l][i]->size;
        }
    /* The shallowest level that holds everything without asking for another compaction. */
    while (deepest < LSM_MAX_LEVELS - 1 && compact_level_target(db, deepest) < total)
        deepest++;
    c.out_level = deepest;
    c.full = 1;
    return compact_manual_end(db, &c, err);
}

/* One step of compact_range: the tables of `level` overlapping [lo, hi] and what they overlap in
   out_level, merged into it; out_level is level + 1, or level itself for the deepest level, whose
   tables are then rewritten in place. Always rewritten, never moved: a moved table would keep the
   versions the caller wants gone. */
static int compact_range_step(lsm_db *db, int level, int out_level, slice lo, slice hi, char *err)
{
    compaction c;
    int rc = compact_manual_begin(db, &c, err);
    if (rc != LSM_OK)
        return rc;
    c.out_level = out_level;
    slice a = lo, b = hi;
    if (level == 0) {
        compact_take_l0(c.v, &c, &a, &b);
    } else {
        file_meta **over = NULL;
        int n = version_overlaps(c.v, level, &lo, &hi, &over);
        for (int i = 0; i < n; i++)
            compaction_add(&c, over[i], level);
        if (n > 0) {
            slice s = file_meta_lo(over[0]), l = file_meta_hi(over[n - 1]);
            if (ukey_cmp(s.p, s.n, a.p, a.n) < 0)
                a = s;
            if (ukey_cmp(l.p, l.n, b.p, b.n) > 0)
                b = l;
        }
        free(over);
    }
    if (c.n > 0 && out_level != level) {
        file_meta **over = NULL;
        int n = version_overlaps(c.v, out_level, &a, &b, &over);
        for (int i = 0; i < n; i++)
            compaction_add(&c, over[i], out_level);
        free(over);
    }
    return compact_manual_end(db, &c, err);
}

/* LevelDB's CompactRange, in outline: level by level from L0 down to the deepest level holding
   any key of the range, the range's tables are merged into the next level, and then (as RocksDB
   does when asked) the deepest level's tables of the range are rewritten in place; between steps
   the background compactions may run. Open ends take the smallest and largest keys of the tree. */
static int compact_range(lsm_db *db, slice lo, slice hi, char *err)
{
    pthread_mutex_lock(&db->mu);
    version *v = db->vs.current;
    version_ref(v);
    pthread_mutex_unlock(&db->mu);
    int open_lo = !lo.p, open_hi = !hi.p;
    for (int l = 0; l < LSM_MAX_LEVELS; l++)
        for (int i = 0; i < v->nfiles[l]; i++) {
            slice s = file_meta_lo(v->files[l][i]), g = file_meta_hi(v->files[l][i]);
            if (open_lo && (!lo.p || ukey_cmp(s.p, s.n, lo.p, lo.n) < 0))
                lo = s;
            if (open_hi && (!hi.p || ukey_cmp(g.p, g.n, hi.p, hi.n) > 0))
                hi = g;
        }
    int any = lo.p && hi.p;     /* else an empty tree: nothing to do */
    int deepest = 1;
    for (int l = 1; any && l < LSM_MAX_LEVELS; l++)
        if (compact_level_overlaps(v, l, lo, hi))
            deepest = l;
    /* lo and hi may point into v's tables: keep them while v is pinned. */
    int rc = LSM_OK;
    buf bl = { 0 }, bh = { 0 };
    if (any) {
        buf_append(&bl, lo.p, lo.n);
        buf_append(&bh, hi.p, hi.n);
    }
    version_unref(v);
    slice L = { bl.p, bl.len }, H = { bh.p, bh.len };
    for (int l = 0; any && rc == LSM_OK && l < deepest; l++)
        rc = compact_range_step(db, l, l + 1, L, H, err);
    /* Versions a snapshot kept alive when they reached the deepest level sit there side by side:
       one more pass drops those no snapshot needs now. */
    if (any && rc == LSM_OK)
        rc = compact_range_step(db, deepest, deepest, L, H, err);
    buf_free(&bl);
    buf_free(&bh);
    return rc;
}

int lsm_compact_range(lsm_db *db, const void *lo, size_t lon, const void *hi, size_t hin)
{
    if (!db || (lo && lon > LSM_MAX_KEY) || (hi && hin > LSM_MAX_KEY))
        return LSM_INVALID;
    int rc = lsm_flush(db);
    if (rc != LSM_OK)
        return rc;
    char err[LSM_ERRLEN] = "";
    slice a = { lo, lo ? lon : 0 }, b = { hi, hi ? hin : 0 };
    return db_fail(db, compact_range(db, a, b, err), err);
}

int lsm_compact(lsm_db *db)
{
    if (!db)
        return LSM_INVALID;
    int rc = lsm_flush(db);
    if (rc != LSM_OK)
        return rc;
    char err[LSM_ERRLEN] = "";
    return db_fail(db, compact_all(db, err), err);
}
