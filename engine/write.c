/*
 * write.c — the write path: batches, group commit, write pacing and memtable switches.
 *
 * Writes queue up under db->mu; the writer at the head becomes the leader, merges the batches
 * queued behind it into one WAL record (one append, at most one fsync for them all), applies them
 * to the memtable without holding the mutex, then publishes the new last sequence number. Before
 * writing, the leader makes room: it is paced or held while level 0 is crowded, and it switches to
 * a fresh memtable and WAL when the live one is full. The old WAL is sealed and synced before the
 * new one receives writes, so a log is always complete before a newer one starts (recovery then
 * yields a prefix of history). This module must never acknowledge a synced write before its WAL
 * record is on stable storage, nor publish a sequence number whose entries are not all in the
 * memtable.
 *
 * A batch is kept in its WAL record form (man/lsm-format.5, WRITE-AHEAD LOG): the header's sequence
 * number and count are filled in by the leader.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "db_impl.h"
#include "extent.h"

#define GROUP_MAX_BYTES (1u << 20)  /* a write group's batches never exceed this, unless one does */

struct lsm_batch {
    buf rep;                    /* header + entries */
    int count;
    int invalid;                /* a key or value had a bad length: lsm_write refuses */
    int puts;                   /* entries that add a value */
    int frees_space;            /* lsm_batch_set_frees_space: accepted in low-space mode */
    uint64_t user_bytes;        /* key + value bytes, for statistics */
};

struct writer {
    lsm_batch *b;
    int sync;
    int force_flush;            /* lsm_flush: switch the memtable even if not full */
    int done;
    int rc;
    pthread_cond_t cv;
    writer *next;
};

lsm_batch *lsm_batch_new(void)
{
    lsm_batch *b = xcalloc(1, sizeof *b);
    lsm_batch_clear(b);
    return b;
}

void lsm_batch_clear(lsm_batch *b)
{
    if (!b)
        return;
    b->rep.len = 0;
    buf_reserve(&b->rep, BATCH_HEADER);
    memset(b->rep.p, 0, BATCH_HEADER);
    b->rep.len = BATCH_HEADER;
    b->count = 0;
    b->invalid = 0;
    b->puts = 0;
    b->frees_space = 0;
    b->user_bytes = 0;
}

static void batch_add(lsm_batch *b, int type, const void *key, size_t klen, const void *val, size_t vlen)
{
    if (!key || klen == 0 || klen > LSM_MAX_KEY || vlen > LSM_MAX_VALUE || (vlen && !val)) {
        b->invalid = 1;
        return;
    }
    buf_reserve(&b->rep, 1 + 10 + klen + 10 + vlen);
    buf_putc(&b->rep, (uint8_t)type);
    buf_put_lenslice(&b->rep, key, klen);
    if (type != LSM_TYPE_DELETE) {
        buf_put_lenslice(&b->rep, val, vlen);
        b->puts++;
    }
    b->count++;
    b->user_bytes += klen + vlen;
}

void lsm_batch_put(lsm_batch *b, const void *key, size_t klen, const void *val, size_t vlen)
{
    if (b)
        batch_add(b, LSM_TYPE_VALUE, key, klen, val, vlen);
}

void lsm_batch_delete(lsm_batch *b, const void *key, size_t klen)
{
    if (b)
        batch_add(b, LSM_TYPE_DELETE, key, klen, NULL, 0);
}

void lsm_batch_set_frees_space(lsm_batch *b, int on)
{
    if (b)
        b->frees_space = on != 0;
}

int lsm_batch_count(const lsm_batch *b)
{
    return b ? b->count : 0;
}

void lsm_batch_free(lsm_batch *b)
{
    if (!b)
        return;
    buf_free(&b->rep);
    free(b);
}

int db_batch_apply(lsm_db *db, memtable *m, const uint8_t *p, size_t n, uint64_t *last)
{
    if (n < BATCH_HEADER)
        return LSM_CORRUPT;
    uint64_t seq = dec_fixed64(p);
    uint32_t count = dec_fixed32(p + 8);
    const uint8_t *q = p + BATCH_HEADER, *end = p + n;
    for (uint32_t i = 0; i < count; i++) {
        slice k, v = { NULL, 0 };
        if (q >= end)
            return LSM_CORRUPT;
        int type = *q++;
        if (!(q = dec_lenslice(q, end, &k)) || k.n == 0)
            return LSM_CORRUPT;
        if (type == LSM_TYPE_VALUE || type == LSM_TYPE_EXTENTS) {
            if (!(q = dec_lenslice(q, end, &v)))
                return LSM_CORRUPT;
            /* A map's blob files stay pinned while this memtable lives (extent.c); without a
               handle (repair.c) nothing deletes them meanwhile, so there is nothing to pin. */
            if (type == LSM_TYPE_EXTENTS && db && extent_pin_memtable(db, m, v) != 0)
                return LSM_CORRUPT;
        } else if (type != LSM_TYPE_DELETE) {
            return LSM_CORRUPT;
        }
        memtable_add(m, seq + i, type, k.p, k.n, v.p, v.n);
    }
    if (q != end)
        return LSM_CORRUPT;
    *last = seq + count - 1;
    return LSM_OK;
}

int db_new_wal(lsm_db *db, uint64_t number, logw **out, char *err)
{
    char path[4096];
    file_path(db->dir, number, ".log", path, sizeof path);
    int rc = logw_create_marked(db->env, path, WAL_MAGIC, out, err);
    if (rc == LSM_OK) {
        logw_set_buffer(*out, db->opt.wal_buffer_bytes);
        rc = logw_sync(*out, err);
    }
    if (rc == LSM_OK)
        rc = db_sync_dir(db, err);
    if (rc != LSM_OK) {
        logw_close(*out, NULL);
        *out = NULL;
        db->env->unlink(db->env, path);
    }
    return rc;
}

/* Switches memtables (caller holds mu, is the leader): seals the old WAL durably, starts a new
   one, and hands the full memtable to the flush thread. mu is released while the files are
   written. */
static int db_switch_memtable(lsm_db *db, char *err)
{
    uint64_t num = db->vs.next_file++;
    logw *old = db->wal, *nw = NULL;
    pthread_mutex_unlock(&db->mu);
    int rc = blob_set_sync_pending(&db->blobs, err);   /* before the seal makes old durable */
    if (rc == LSM_OK)
        rc = logw_seal(old, err);
    if (rc == LSM_OK) {
        rc = db_new_wal(db, num, &nw, err);
        /* A full disk: the old log stays live (a seal mark does not end it), so this is worth
           another try with the reserve's room, and otherwise costs the writer, not the handle. */
        if (rc == LSM_NOSPACE && space_release(db))
            rc = db_new_wal(db, num, &nw, err);
        if (rc == LSM_NOSPACE && !logw_failed(old)) {
            pthread_mutex_lock(&db->mu);
            return rc;
        }
    }
    pthread_mutex_lock(&db->mu);
    if (rc != LSM_OK) {
        db_set_bg_error(db, rc, err);
        return rc;
    }
    logw_close(old, NULL);
    db->wal = nw;
    db->imm = db->mem;
    db->imm_log = db->wal_number;
    db->wal_number = num;
    db->mem = memtable_new();
    db->last_switch_micros = now_micros();
    pthread_cond_broadcast(&db->work_cv);
    return LSM_OK;
}

/* Waits for the flush thread, or for level 0 to shrink (caller holds mu); counts the stall. */
static void db_wait_for_room(lsm_db *db)
{
    uint64_t t0 = now_micros();
    int stopped = !db->imm;
    pthread_cond_broadcast(&db->work_cv);
    if (stopped) {
        db->l0_stopped = 1;     /* lets a second compaction start beside a long one */
        pthread_cond_broadcast(&db->compact_cv);
    }
    pthread_cond_wait(&db->bg_cv, &db->mu);
    if (stopped)
        db->l0_stopped = 0;
    atomic_fetch_add(&db->st_stall_micros, now_micros() - t0);
}

/* Makes room in the memtable for the leader's write (caller holds mu, is the leader): paces or
   stops it while level 0 is crowded (the limits are compaction policy: compact.h), and switches
   memtables when the live one is full or a flush is forced. */
static int db_make_room(lsm_db *db, int force, char *err)
{
    int allow_delay = !force && db->opt.background_compaction;
    int retried = 0;            /* waited for one more flush attempt after one found no space */
    for (;;) {
        if (db->bg_error)
            return err_set(err, db->bg_error, "%s", db->bg_errmsg);
        int l0 = db->vs.current->nfiles[0];
        if (l0 < L0_SLOWDOWN) {
            db->paced_bytes = 0;
        } else if (allow_delay && l0 < L0_STOP) {
            /* One pause at most per write: the bytes written since the last one are paid for. */
            uint64_t us = compact_pace_micros(l0, db->paced_bytes);
            allow_delay = 0;
            if (us) {
                db->paced_bytes = 0;
                pthread_mutex_unlock(&db->mu);
                usleep((useconds_t)us);
                atomic_fetch_add(&db->st_stall_micros, us);
                pthread_mutex_lock(&db->mu);
                continue;
            }
        }
        if (!force && memtable_usage(db->mem) < db->opt.memtable_bytes)
            return LSM_OK;
        if (force && memtable_entries(db->mem) == 0)
            return LSM_OK;
        if (db->imm || (db->opt.background_compaction && l0 >= L0_STOP)) {
            /* The flush found no space: wait for one more try (a compaction may have ended,
               a delete freed space), then give up rather than wait for space to be freed. */
            if (db->imm && db->flush_nospace && !retried) {
                uint64_t tries = db->flush_attempts;
                retried = 1;
                pthread_cond_broadcast(&db->work_cv);
                while (db->flush_attempts == tries && db->imm && !db->bg_error &&
                       !db->shutting_down)
                    pthread_cond_wait(&db->bg_cv, &db->mu);
                continue;
            }
            if ((db->imm && db->flush_nospace) || (!db->imm && db->compact_wait_until > now_micros()))
                return err_set(err, LSM_NOSPACE, "%s: the disk is full: the memtable cannot be "
                               "flushed until space is freed", db->dir);
            db_wait_for_room(db);
            continue;
        }
        int rc = db_switch_memtable(db, err);
        if (rc != LSM_OK)
            return rc;
        force = 0;
    }
}

/* What a leader writes for its group: its own batch and those queued behind it, as one record. */
typedef struct write_group {
    writer *last;               /* the last writer of the group */
    const uint8_t *rep;         /* the record: the leader's batch, or db->group */
    size_t len;
    uint32_t count;             /* entries */
    uint64_t seq;               /* sequence number of the first entry */
    uint64_t user_bytes;        /* key + value bytes, for statistics */
    int sync;                   /* some writer of the group asked for a sync */
} write_group;

/* Gathers the group of leader w (caller holds mu): batches queued behind it, up to a size bound
   that keeps a small write's latency small, merged into db->group unless w writes alone. */
static void db_write_gather(lsm_db *db, writer *w, write_group *g)
{
    lsm_batch *b = w->b;
    size_t total = b ? b->rep.len : BATCH_HEADER;
    size_t limit = total <= (128u << 10) ? total + (128u << 10) : GROUP_MAX_BYTES;
    *g = (write_group){ .last = w, .seq = db->last_seq + 1, .sync = w->sync };
    int low = space_low(db);
    for (writer *x = w->next; x && !x->force_flush; x = x->next) {
        if (low && x->b && x->b->puts && !x->b->frees_space)
            break;              /* it leads its own group, to be refused alone */
        size_t n = x->b ? x->b->rep.len - BATCH_HEADER : 0;
        if (total + n > limit)
            break;
        total += n;
        g->sync |= x->sync;
        g->last = x;
    }
    db->paced_bytes += total;
    buf *out = &db->group;
    if (g->last == w && b) {
        out = &b->rep;
        g->count = (uint32_t)b->count;
        g->user_bytes = b->user_bytes;
    } else {
        out->len = 0;
        buf_reserve(out, total);
        out->len = BATCH_HEADER;
        for (writer *x = w;; x = x->next) {
            if (x->b) {
                buf_append(out, x->b->rep.p + BATCH_HEADER, x->b->rep.len - BATCH_HEADER);
                g->count += (uint32_t)x->b->count;
                g->user_bytes += x->b->user_bytes;
            }
            if (x == g->last)
                break;
        }
    }
    enc_fixed64(out->p, g->seq);
    enc_fixed32(out->p + 8, g->count);
    g->rep = out->p;
    g->len = out->len;
}

/* Appends the group's record to the WAL, syncs it if asked, and applies it to mem (mu not held);
   *last_seq is the sequence number of its last entry. */
static int db_write_group(lsm_db *db, memtable *mem, logw *wal, const write_group *g,
                          uint64_t *last_seq, char *err)
{
    /* Blob files of unsynced value writer commits are durable before any WAL record is: the
       group's own writers handed theirs over before they queued, so before this point. Nothing
       is appended if this fails (and it fails for good: blob.h). */
    int rc = g->sync ? blob_set_sync_pending(&db->blobs, err) : LSM_OK;
    if (rc != LSM_OK)
        return rc;
    rc = logw_reserve(wal, g->count > 0 ? g->len : 0, err);
    if (rc == LSM_OK && g->count > 0) {
        rc = logw_append(wal, g->rep, g->len, err);
        atomic_fetch_add(&db->st_wal_bytes, g->len + 8);
        atomic_fetch_add(&db->st_user_bytes, g->user_bytes);
    }
    if (rc == LSM_OK && g->sync)
        rc = logw_sync(wal, err);
    *last_seq = g->seq - 1;
    if (rc == LSM_OK && g->count > 0 && db_batch_apply(db, mem, g->rep, g->len, last_seq) != LSM_OK)
        rc = err_set(err, LSM_CORRUPT, "internal: malformed batch");
    return rc;
}

/* Takes the writers from w to last off the queue with result rc, wakes them, and wakes the next
   leader (caller holds mu). */
static void db_write_done(lsm_db *db, writer *w, writer *last, int rc)
{
    for (;;) {
        writer *x = db->wq_head;
        db->wq_head = x->next;
        if (!db->wq_head)
            db->wq_tail = NULL;
        x->rc = rc;
        x->done = 1;
        if (x != w)
            pthread_cond_signal(&x->cv);
        if (x == last)
            break;
    }
    if (db->wq_head)
        pthread_cond_signal(&db->wq_head->cv);
}

/* In low-space mode, refuses a batch that adds data unless its writer marked it as freeing space
   (caller holds mu, is the leader); first tries, at most once a second, to end the mode. */
static int db_write_admit(lsm_db *db, const lsm_batch *b, char *err)
{
    if (!b || !b->puts || b->frees_space || !space_low(db))
        return LSM_OK;
    pthread_mutex_unlock(&db->mu);
    space_refill(db, 0);
    pthread_mutex_lock(&db->mu);
    if (!space_low(db))
        return LSM_OK;
    return err_set(err, LSM_NOSPACE, "%s: the disk is full: only writes that free space are "
                   "accepted until space is freed", db->dir);
}

/* Every write goes through here: it queues, and the writer at the head leads a group. */
static int db_write(lsm_db *db, lsm_batch *b, int sync, int force_flush)
{
    /* A read-only handle has no log and writes no file: a sync has nothing to do, anything else
       is misuse. */
    if (db->opt.read_only)
        return !b && !force_flush ? LSM_OK
                                  : db_fail(db, LSM_INVALID, "the database was opened read-only "
                                            "(lsm_options_set_read_only): writes, flushes and "
                                            "compactions are refused");
    writer w = { .b = b, .sync = sync, .force_flush = force_flush };
    char err[LSM_ERRLEN] = "";
    pthread_cond_init(&w.cv, NULL);
    pthread_mutex_lock(&db->mu);
    if (db->wq_tail)
        db->wq_tail->next = &w;
    else
        db->wq_head = &w;
    db->wq_tail = &w;
    while (!w.done && db->wq_head != &w)
        pthread_cond_wait(&w.cv, &db->mu);
    if (w.done) {               /* a leader wrote our batch with its group */
        pthread_mutex_unlock(&db->mu);
        pthread_cond_destroy(&w.cv);
        return w.rc;
    }
    writer *last = &w;
    int rc = db_write_admit(db, b, err);
    if (rc == LSM_OK)
        rc = db_make_room(db, force_flush, err);
    if (rc == LSM_OK) {
        write_group g;
        db_write_gather(db, &w, &g);
        last = g.last;
        memtable *mem = db->mem;
        logw *wal = db->wal;
        uint64_t last_seq;
        pthread_mutex_unlock(&db->mu);
        rc = db_write_group(db, mem, wal, &g, &last_seq, err);
        /* A full disk refused the log's preallocation before anything was written: once more
           with the reserve's room; failing that, only this group fails. */
        int intact = rc == LSM_NOSPACE && !logw_failed(wal);
        if (intact && space_release(db)) {
            rc = db_write_group(db, mem, wal, &g, &last_seq, err);
            intact = rc == LSM_NOSPACE && !logw_failed(wal);
        }
        pthread_mutex_lock(&db->mu);
        if (rc != LSM_OK && !intact)
            db_set_bg_error(db, rc == LSM_CORRUPT || rc == LSM_NOSPACE ? rc : LSM_IOERR, err);
        else if (rc == LSM_OK)
            db->last_seq = last_seq;
    }
    db_write_done(db, &w, last, rc);
    pthread_mutex_unlock(&db->mu);
    pthread_cond_destroy(&w.cv);
    db_log_drain(db);
    return db_fail(db, rc, err);
}

int lsm_write(lsm_db *db, lsm_batch *b, int sync)
{
    if (!db || !b)
        return LSM_INVALID;
    if (b->invalid)
        return db_fail(db, LSM_INVALID, "batch holds an empty or too long key or a too long value");
    return db_write(db, b, sync, 0);
}

int db_check_key(lsm_db *db, const void *key, size_t klen)
{
    if (!key || klen == 0 || klen > LSM_MAX_KEY)
        return db_fail(db, LSM_INVALID, "key length must be 1..65535 bytes");
    return LSM_OK;
}

/* lsm_put and lsm_delete: a batch of one entry, built on the stack when small, so the hot path
   allocates nothing. */
static int db_write_one(lsm_db *db, int type, const void *key, size_t klen, const void *val,
                        size_t vlen)
{
    lsm_batch b = { 0 };
    uint8_t stackbuf[512];
    if (BATCH_HEADER + 1 + 20 + klen + vlen <= sizeof stackbuf) {
        b.rep.p = stackbuf;
        b.rep.cap = sizeof stackbuf;
        b.rep.len = BATCH_HEADER;
    } else {
        lsm_batch_clear(&b);
    }
    batch_add(&b, type, key, klen, val, vlen);
    int rc = db_write(db, &b, db->opt.sync_writes, 0);
    if (b.rep.p != stackbuf)
        buf_free(&b.rep);
    return rc;
}

int lsm_put(lsm_db *db, const void *key, size_t klen, const void *val, size_t vlen)
{
    if (!db)
        return LSM_INVALID;
    int rc = db_check_key(db, key, klen);
    if (rc != LSM_OK)
        return rc;
    if (vlen > LSM_MAX_VALUE || (vlen && !val))
        return db_fail(db, LSM_INVALID, "value longer than LSM_MAX_VALUE (1 GiB)");
    return db_write_one(db, LSM_TYPE_VALUE, key, klen, val, vlen);
}

int db_write_entry(lsm_db *db, int type, const void *key, size_t klen, const void *val,
                   size_t vlen, const lsm_batch *with, int sync)
{
    lsm_batch b = { 0 };
    lsm_batch_clear(&b);
    batch_add(&b, type, key, klen, val, vlen);
    if (with) {
        buf_append(&b.rep, with->rep.p + BATCH_HEADER, with->rep.len - BATCH_HEADER);
        b.count += with->count;
        b.invalid |= with->invalid;
        b.user_bytes += with->user_bytes;
        b.puts += with->puts;
        b.frees_space = with->frees_space;    /* a shrinking commit marked so by its writer */
    }
    int rc = b.invalid ? db_fail(db, LSM_INVALID, "entry or batch with a bad key or value length")
                       : db_write(db, &b, sync, 0);
    buf_free(&b.rep);
    return rc;
}

int lsm_delete(lsm_db *db, const void *key, size_t klen)
{
    if (!db)
        return LSM_INVALID;
    int rc = db_check_key(db, key, klen);
    return rc != LSM_OK ? rc : db_write_one(db, LSM_TYPE_DELETE, key, klen, NULL, 0);
}

int lsm_sync(lsm_db *db)
{
    if (!db)
        return LSM_INVALID;
    return db_write(db, NULL, 1, 0);
}

int lsm_flush(lsm_db *db)
{
    if (!db)
        return LSM_INVALID;
    int rc = db_write(db, NULL, 0, 1);
    if (rc != LSM_OK)
        return rc;
    pthread_mutex_lock(&db->mu);
    while (db->imm && !db->bg_error)
        pthread_cond_wait(&db->bg_cv, &db->mu);
    rc = db->bg_error;
    char msg[LSM_ERRLEN];
    memcpy(msg, db->bg_errmsg, sizeof msg);
    pthread_mutex_unlock(&db->mu);
    return db_fail(db, rc, msg);
}
