/*
 * blob.c — writing and reading blob files (format: man/lsm-format.5, BLOB FILES), and the blob
 * set: which blob files the tables of live versions still name.
 *
 * A value is its bytes followed by one checksum per 64 KiB chunk, so that a range read verifies
 * only the chunks it touches. Values are found only through references in tables, so the file
 * needs no index. A blob file lives exactly as long as some table of some pinned version names it:
 * the version set tells the blob set when a table enters the current version and when the last
 * version naming it goes, and the set deletes a file when no table names it any more. This module
 * never returns bytes whose chunk checksum it has not verified, and never deletes a file that a
 * table still names.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "blob.h"

struct blob_writer {
    lsm_env *env;
    lsm_file *f;
    char *path;
    uint64_t size;              /* bytes written so far */
    buf sums;                   /* checksums of the value being added */
    /* A record written a piece at a time (blob_record_*): */
    int in_record;              /* a record is open */
    uint64_t rec_off, rec_len;  /* where it starts, bytes so far */
    uint8_t *part;              /* its last chunk, while shorter than BLOB_CHUNK */
    size_t part_len;
};

int blob_writer_open(lsm_env *env, const char *path, blob_writer **out, char *err)
{
    blob_writer *w = xcalloc(1, sizeof *w);
    w->env = env;
    w->path = xmemdup(path, strlen(path) + 1);
    int e = env->open(env, path, LSM_O_CREATE, &w->f);
    if (e < 0) {
        free(w->path);
        free(w);
        return err_errno(err, e, "creating", path);
    }
    uint8_t h[BLOB_HEADER] = { 0 };
    memcpy(h, BLOB_MAGIC, 8);
    enc_fixed32(h + 8, BLOB_VERSION);
    e = env_append_all(env, w->f, h, sizeof h);
    if (e < 0) {
        blob_writer_abandon(w);
        return err_errno(err, e, "writing", path);
    }
    w->size = BLOB_HEADER;
    *out = w;
    return LSM_OK;
}

int blob_writer_reopen(lsm_env *env, const char *path, uint64_t size, blob_writer **out,
                       char *err)
{
    blob_writer *w = xcalloc(1, sizeof *w);
    w->env = env;
    w->path = xmemdup(path, strlen(path) + 1);
    int e = env->open(env, path, LSM_O_APPEND, &w->f);
    uint64_t have = 0;
    if (e == 0)
        e = env->size(env, w->f, &have);
    if (e == 0 && have != size)
        e = -ESTALE;    /* someone else wrote to it: its records would not be where we think */
    if (e < 0) {
        env->close(env, w->f);
        free(w->path);
        free(w);
        return err_errno(err, e, "reopening", path);
    }
    w->size = size;
    *out = w;
    return LSM_OK;
}

int blob_writer_add(blob_writer *w, slice val, uint64_t *off, char *err)
{
    w->sums.len = 0;
    for (size_t i = 0; i < val.n; i += BLOB_CHUNK) {
        size_t n = val.n - i < BLOB_CHUNK ? val.n - i : BLOB_CHUNK;
        buf_put_fixed32(&w->sums, checksum32(val.p + i, n));
    }
    int e = env_append_all(w->env, w->f, val.p, val.n);
    if (e == 0)
        e = env_append_all(w->env, w->f, w->sums.p, w->sums.len);
    if (e < 0)
        return err_errno(err, e, "writing", w->path);
    *off = w->size;
    w->size += val.n + w->sums.len;
    return LSM_OK;
}

uint64_t blob_writer_size(const blob_writer *w)
{
    return w->size;
}

int blob_record_begin(blob_writer *w, uint64_t *off)
{
    if (w->in_record)
        return LSM_INVALID;
    w->in_record = 1;
    w->rec_off = w->size;
    w->rec_len = 0;
    w->part_len = 0;
    w->sums.len = 0;
    *off = w->size;
    return LSM_OK;
}

int blob_record_append(blob_writer *w, const void *p, size_t n, char *err)
{
    const uint8_t *s = p;
    if (!w->part)
        w->part = xmalloc(BLOB_CHUNK);
    while (n > 0) {
        if (w->part_len == 0 && n >= BLOB_CHUNK) {
            /* Whole chunks go straight from the caller's buffer. */
            size_t m = n - n % BLOB_CHUNK;
            for (size_t i = 0; i < m; i += BLOB_CHUNK)
                buf_put_fixed32(&w->sums, checksum32(s + i, BLOB_CHUNK));
            int e = env_append_all(w->env, w->f, s, m);
            if (e < 0)
                return err_errno(err, e, "writing", w->path);
            w->size += m;
            w->rec_len += m;
            s += m;
            n -= m;
            continue;
        }
        size_t m = BLOB_CHUNK - w->part_len < n ? BLOB_CHUNK - w->part_len : n;
        memcpy(w->part + w->part_len, s, m);
        w->part_len += m;
        s += m;
        n -= m;
        if (w->part_len == BLOB_CHUNK) {
            buf_put_fixed32(&w->sums, checksum32(w->part, BLOB_CHUNK));
            int e = env_append_all(w->env, w->f, w->part, BLOB_CHUNK);
            if (e < 0)
                return err_errno(err, e, "writing", w->path);
            w->size += BLOB_CHUNK;
            w->rec_len += BLOB_CHUNK;
            w->part_len = 0;
        }
    }
    return LSM_OK;
}

uint64_t blob_record_length(const blob_writer *w)
{
    return w->in_record ? w->rec_len + w->part_len : 0;
}

int blob_record_end(blob_writer *w, uint64_t *len, char *err)
{
    if (!w->in_record)
        return LSM_INVALID;
    w->in_record = 0;
    int e = 0;
    if (w->part_len) {
        buf_put_fixed32(&w->sums, checksum32(w->part, w->part_len));
        e = env_append_all(w->env, w->f, w->part, w->part_len);
        if (e == 0) {
            w->size += w->part_len;
            w->rec_len += w->part_len;
        }
        w->part_len = 0;
    }
    if (e == 0)
        e = env_append_all(w->env, w->f, w->sums.p, w->sums.len);
    if (e < 0)
        return err_errno(err, e, "writing", w->path);
    w->size += w->sums.len;
    *len = w->rec_len;
    return LSM_OK;
}

int blob_writer_sync(blob_writer *w, char *err)
{
    int e = w->env->sync(w->env, w->f);
    return e < 0 ? err_errno(err, e, "syncing", w->path) : LSM_OK;
}

static void blob_writer_free(blob_writer *w)
{
    free(w->part);
    buf_free(&w->sums);
    free(w->path);
    free(w);
}

int blob_writer_finish(blob_writer *w, char *err)
{
    int e = w->env->sync(w->env, w->f);
    int rc = e < 0 ? err_errno(err, e, "syncing", w->path) : LSM_OK;
    w->env->close(w->env, w->f);
    blob_writer_free(w);
    return rc;
}

lsm_file *blob_writer_detach(blob_writer *w)
{
    lsm_file *f = w->f;
    blob_writer_free(w);
    return f;
}

void blob_writer_close(blob_writer *w)
{
    if (!w)
        return;
    w->env->close(w->env, w->f);
    blob_writer_free(w);
}

void blob_writer_abandon(blob_writer *w)
{
    if (!w)
        return;
    w->env->close(w->env, w->f);
    w->env->unlink(w->env, w->path);
    blob_writer_free(w);
}

void blob_ref_encode(buf *out, uint64_t file, uint64_t off, uint64_t len)
{
    buf_put_varint(out, file);
    buf_put_varint(out, off);
    buf_put_varint(out, len);
}

/* 0 on success, -1 if s is not a well-formed reference. */
static int blob_ref_decode(slice s, uint64_t *file, uint64_t *off, uint64_t *len)
{
    const uint8_t *p = s.p, *end = s.p + s.n;
    if (!(p = dec_varint(p, end, file)) || !(p = dec_varint(p, end, off)) ||
        !(p = dec_varint(p, end, len)) || p != end || *len > LSM_MAX_VALUE || *off < BLOB_HEADER)
        return -1;
    return 0;
}

/* Checks the header of an opened blob file. */
static int blob_check_header(lsm_env *env, lsm_file *f, const char *path, char *err)
{
    uint8_t h[BLOB_HEADER];
    int e = env_pread_all(env, f, h, sizeof h, 0);
    if (e == -ENODATA)
        return err_set(err, LSM_CORRUPT, "%s: offset 0: file shorter than its header", path);
    if (e < 0)
        return err_errno(err, e, "reading", path);
    if (memcmp(h, BLOB_MAGIC, 8) != 0)
        return err_set(err, LSM_CORRUPT, "%s: offset 0: bad magic (not a blob file)", path);
    if (dec_fixed32(h + 8) != BLOB_VERSION)
        return err_set(err, LSM_CORRUPT, "%s: offset 8: unsupported blob format version %u", path,
                       dec_fixed32(h + 8));
    return LSM_OK;
}

/* Copies bytes [pos, pos + n) of the value at (off, len) in f into dst, verifying the checksum of
   every chunk it touches. pos + n must be <= len. LSM_CORRUPT "path: offset N: why" on damage. */
static int blob_read(lsm_env *env, lsm_file *f, const char *path, uint64_t off, uint64_t len,
                     uint64_t pos, void *dst, size_t n, char *err)
{
    if (n == 0)
        return LSM_OK;
    if (pos + n > len)
        return err_set(err, LSM_INVALID, "%s: read past the end of a blob value", path);
    uint64_t first = pos / BLOB_CHUNK, last = (pos + n - 1) / BLOB_CHUNK;
    uint64_t nchunks = (len + BLOB_CHUNK - 1) / BLOB_CHUNK;
    uint64_t lo = first * BLOB_CHUNK;
    uint64_t hi = (last + 1) * BLOB_CHUNK < len ? (last + 1) * BLOB_CHUNK : len;
    size_t nsums = (size_t)(last - first + 1);
    uint8_t *sums = xmalloc(nsums * 4);
    /* Read straight into dst when the range is whole chunks; otherwise through a bounce buffer. */
    int direct = lo == pos && hi == pos + n;
    uint8_t *data = direct ? dst : xmalloc((size_t)(hi - lo));
    int rc = LSM_OK;
    int e = env_pread_all(env, f, data, (size_t)(hi - lo), off + lo);
    if (e == 0)
        e = env_pread_all(env, f, sums, nsums * 4, off + len + first * 4);
    if (e == -ENODATA)
        rc = err_set(err, LSM_CORRUPT, "%s: offset %" PRIu64 ": blob value runs past the end of the file",
                     path, off);
    else if (e < 0)
        rc = err_errno(err, e, "reading", path);
    for (uint64_t c = first; rc == LSM_OK && c <= last; c++) {
        uint64_t cs = c * BLOB_CHUNK - lo;
        size_t cn = (size_t)((c + 1 == nchunks ? len : (c + 1) * BLOB_CHUNK) - c * BLOB_CHUNK);
        if (checksum32(data + cs, cn) != dec_fixed32(sums + 4 * (c - first)))
            rc = err_set(err, LSM_CORRUPT, "%s: offset %" PRIu64 ": blob chunk checksum mismatch",
                         path, off + c * BLOB_CHUNK);
    }
    if (rc == LSM_OK && !direct)
        memcpy(dst, data + (pos - lo), n);
    if (!direct)
        free(data);
    free(sums);
    return rc;
}

/* ---- the blob set ---- */

struct blob_count {
    uint64_t number;
    int refs;                   /* tables in the current version (or pinned old ones) naming it */
    int pins;                   /* memtables and open value writers whose maps name it */
    uint64_t size;              /* bytes, for statistics */
    uint64_t garbage;           /* bytes no version needs any more (an estimate: extent.c) */
    int garbage_dirty;          /* garbage changed since the manifest last recorded it */
};

typedef struct blob_file {
    lsm_env *env;
    lsm_file *f;
} blob_file;

static void blob_file_close(uint64_t id, uint64_t off, void *value)
{
    blob_file *bf = value;
    bf->env->close(bf->env, bf->f);
    free(bf);
}

void blob_set_init(blob_set *bs, lsm_env *env, const char *dir, size_t max_open)
{
    memset(bs, 0, sizeof *bs);
    bs->env = env;
    bs->dir = dir;
    bs->files = cache_new(max_open);
    pthread_mutex_init(&bs->mu, NULL);
    pthread_mutex_init(&bs->pending_mu, NULL);
    pthread_mutex_init(&bs->sync_mu, NULL);
}

/* A blob file whose sync is pending: held open while few are, else named by number. */
struct blob_pending {
    uint64_t number;
    lsm_file *f;                /* or NULL: reopened by path to be synced */
    int created;                /* its directory entry is new: the directory needs a sync too */
};

/* A blob file a value writer of one key left behind, which the next LSM_VW_KEEP writer of the
   same key may append to (blob_set_tail_take). */
struct blob_tail {
    uint64_t number;
    uint64_t size;              /* the file's length when its last writer finished */
    void *key;                  /* malloc'd */
    size_t klen;
};

#define BLOB_PENDING_OPEN 64    /* pending files held open at most */

void blob_set_destroy(blob_set *bs)
{
    for (int i = 0; i < bs->npending; i++)
        bs->env->close(bs->env, bs->pending[i].f);
    free(bs->pending);
    for (int i = 0; i < bs->ntails; i++)
        free(bs->tails[i].key);
    free(bs->tails);
    cache_free(bs->files);
    free(bs->v);
    pthread_mutex_destroy(&bs->sync_mu);
    pthread_mutex_destroy(&bs->pending_mu);
    pthread_mutex_destroy(&bs->mu);
}

void blob_set_pending_add(blob_set *bs, uint64_t number, lsm_file *f, int created)
{
    pthread_mutex_lock(&bs->pending_mu);
    /* A reused file may be pending already: one entry, one sync (any handle of the inode will
       do). A file just created cannot be. */
    for (int i = 0; !created && i < bs->npending; i++)
        if (bs->pending[i].number == number) {
            struct blob_pending *p = &bs->pending[i];
            p->created |= created;
            if (!p->f && bs->pending_open < BLOB_PENDING_OPEN) {
                p->f = f;
                bs->pending_open++;
            } else {
                bs->env->close(bs->env, f);
            }
            pthread_mutex_unlock(&bs->pending_mu);
            return;
        }
    if (bs->npending == bs->pending_cap) {
        bs->pending_cap = bs->pending_cap ? 2 * bs->pending_cap : 16;
        bs->pending = xrealloc(bs->pending, (size_t)bs->pending_cap * sizeof *bs->pending);
    }
    /* Past the bound the handle is closed: the data stays in the page cache, and a later open
       and fsync of the same inode makes it durable. File numbers are never reused, so the path
       names this file or nothing. */
    if (bs->pending_open >= BLOB_PENDING_OPEN) {
        bs->env->close(bs->env, f);
        f = NULL;
    } else {
        bs->pending_open++;
    }
    bs->pending[bs->npending++] = (struct blob_pending){ number, f, created };
    pthread_mutex_unlock(&bs->pending_mu);
}

int blob_set_pending_count(blob_set *bs)
{
    pthread_mutex_lock(&bs->pending_mu);
    int n = bs->npending;
    pthread_mutex_unlock(&bs->pending_mu);
    return n;
}

/* The set is deleting file number: it needs no sync any more. */
static void blob_set_pending_drop(blob_set *bs, uint64_t number)
{
    pthread_mutex_lock(&bs->pending_mu);
    for (int i = 0; i < bs->npending; i++)
        if (bs->pending[i].number == number) {
            if (bs->pending[i].f) {
                bs->env->close(bs->env, bs->pending[i].f);
                bs->pending_open--;
            }
            bs->pending[i] = bs->pending[--bs->npending];
            break;
        }
    pthread_mutex_unlock(&bs->pending_mu);
}

int blob_set_sync_pending(blob_set *bs, char *err)
{
    pthread_mutex_lock(&bs->sync_mu);
    int rc = bs->sync_rc;
    if (rc != LSM_OK) {
        err_set(err, rc, "%s", bs->sync_err);
        pthread_mutex_unlock(&bs->sync_mu);
        return rc;
    }
    /* The list is taken whole, and synced without pending_mu, so that adds and deletes go on
       meanwhile; a file deleted while it is synced here is harmless (it is open or gone). A
       caller that arrives meanwhile waits on sync_mu: what it needs synced is then either done
       or still in the list. */
    pthread_mutex_lock(&bs->pending_mu);
    struct blob_pending *v = bs->pending;
    int n = bs->npending;
    bs->pending = NULL;
    bs->npending = bs->pending_cap = bs->pending_open = 0;
    pthread_mutex_unlock(&bs->pending_mu);
    /* One pass: the files are opened and sent to the device first (sync_file_range, where the
       env can), so that the syncs that follow find their writes under way together instead of
       one file at a time; then each is synced; then the directory, only if some file in the list
       was created since the directory was last synced. Files closed while pending are reopened
       BLOB_PENDING_OPEN at a time, so that this holds no more descriptors than the list did. */
    char path[4096];
    int created = 0;
    for (int lo = 0; lo < n; lo += BLOB_PENDING_OPEN) {
        int hi = n - lo < BLOB_PENDING_OPEN ? n : lo + BLOB_PENDING_OPEN;
        for (int i = lo; i < hi && rc == LSM_OK; i++) {
            if (!v[i].f) {
                file_path(bs->dir, v[i].number, ".blob", path, sizeof path);
                int e = bs->env->open(bs->env, path, LSM_O_READ, &v[i].f);
                if (e < 0)
                    v[i].f = NULL;
                if (e == -ENOENT)
                    continue;   /* deleted: nothing names it */
                if (e < 0) {
                    rc = err_errno(err, e, "opening to sync", path);
                    break;
                }
            }
            created |= v[i].created;
            if (bs->env->writeback)
                bs->env->writeback(bs->env, v[i].f, 0, 0);     /* a hint: sync reports trouble */
        }
        for (int i = lo; i < hi; i++) {
            if (v[i].f && rc == LSM_OK) {
                int e = bs->env->sync(bs->env, v[i].f);
                if (e < 0) {
                    file_path(bs->dir, v[i].number, ".blob", path, sizeof path);
                    rc = err_errno(err, e, "syncing", path);
                }
            }
            bs->env->close(bs->env, v[i].f);
            v[i].f = NULL;
        }
    }
    free(v);
    if (rc == LSM_OK && created) {
        int e = bs->env->sync_dir(bs->env, bs->dir);
        if (e < 0)
            rc = err_errno(err, e, "syncing directory", bs->dir);
    }
    if (rc != LSM_OK) {
        rc = bs->sync_rc = LSM_IOERR;
        snprintf(bs->sync_err, sizeof bs->sync_err, "%s (a pending blob file sync failed: no "
                 "write is made durable after it)", err);
        memcpy(err, bs->sync_err, LSM_ERRLEN);
    }
    pthread_mutex_unlock(&bs->sync_mu);
    return rc;
}

/* Finds number's slot (caller holds mu); creates it when create is set. Slots are kept sorted
   by number, so a lookup is a binary search however many blob files live (value writers make one
   per commit that wrote data). */
static struct blob_count *blob_set_slot(blob_set *bs, uint64_t number, int create)
{
    int lo = 0, hi = bs->n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (bs->v[mid].number < number)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < bs->n && bs->v[lo].number == number)
        return &bs->v[lo];
    if (!create)
        return NULL;
    if (bs->n == bs->cap) {
        bs->cap = bs->cap ? 2 * bs->cap : 16;
        bs->v = xrealloc(bs->v, (size_t)bs->cap * sizeof *bs->v);
    }
    memmove(bs->v + lo + 1, bs->v + lo, (size_t)(bs->n - lo) * sizeof *bs->v);
    bs->n++;
    struct blob_count *b = &bs->v[lo];
    memset(b, 0, sizeof *b);
    b->number = number;
    return b;
}

/* Removes slot b (caller holds mu), keeping the order. */
static void blob_set_tail_drop_locked(blob_set *bs, uint64_t number);

static void blob_set_remove_slot(blob_set *bs, struct blob_count *b)
{
    blob_set_tail_drop_locked(bs, b->number);
    size_t i = (size_t)(b - bs->v);
    memmove(b, b + 1, (bs->n - 1 - i) * sizeof *b);
    bs->n--;
}

void blob_set_ref(blob_set *bs, const uint64_t *nums, int n)
{
    pthread_mutex_lock(&bs->mu);
    for (int i = 0; i < n; i++)
        blob_set_slot(bs, nums[i], 1)->refs++;
    pthread_mutex_unlock(&bs->mu);
}

void blob_set_unref(blob_set *bs, const uint64_t *nums, int n)
{
    char path[4096];
    pthread_mutex_lock(&bs->mu);
    for (int i = 0; i < n; i++) {
        struct blob_count *b = blob_set_slot(bs, nums[i], 0);
        if (!b || --b->refs > 0 || b->pins > 0)
            continue;
        uint64_t number = b->number;
        blob_set_remove_slot(bs, b);
        cache_erase(bs->files, 0, number);
        blob_set_pending_drop(bs, number);
        file_path(bs->dir, number, ".blob", path, sizeof path);
        bs->env->unlink(bs->env, path);
    }
    pthread_mutex_unlock(&bs->mu);
}

void blob_set_note_size(blob_set *bs, uint64_t number, uint64_t size)
{
    pthread_mutex_lock(&bs->mu);
    blob_set_slot(bs, number, 1)->size = size;
    pthread_mutex_unlock(&bs->mu);
}

int blob_set_live(blob_set *bs, uint64_t number)
{
    pthread_mutex_lock(&bs->mu);
    struct blob_count *b = blob_set_slot(bs, number, 0);
    int live = b && (b->refs > 0 || b->pins > 0);
    pthread_mutex_unlock(&bs->mu);
    return live;
}

void blob_set_keep_unpinned(blob_set *bs)
{
    pthread_mutex_lock(&bs->mu);
    bs->keep_unpinned = 1;
    pthread_mutex_unlock(&bs->mu);
}

void blob_set_pin(blob_set *bs, const uint64_t *nums, int n)
{
    pthread_mutex_lock(&bs->mu);
    for (int i = 0; i < n; i++)
        blob_set_slot(bs, nums[i], 1)->pins++;
    pthread_mutex_unlock(&bs->mu);
}

void blob_set_unpin(blob_set *bs, const uint64_t *nums, int n, int drop)
{
    char path[4096];
    pthread_mutex_lock(&bs->mu);
    for (int i = 0; i < n; i++) {
        struct blob_count *b = blob_set_slot(bs, nums[i], 0);
        if (!b || b->pins == 0 || --b->pins > 0 || b->refs > 0 || !drop || bs->keep_unpinned)
            continue;
        uint64_t number = b->number;
        blob_set_remove_slot(bs, b);
        cache_erase(bs->files, 0, number);
        blob_set_pending_drop(bs, number);
        file_path(bs->dir, number, ".blob", path, sizeof path);
        bs->env->unlink(bs->env, path);
    }
    pthread_mutex_unlock(&bs->mu);
}

/* ---- files a key's next writer may append to ---- */

static void blob_set_tail_remove(blob_set *bs, int i)
{
    free(bs->tails[i].key);
    memmove(bs->tails + i, bs->tails + i + 1, (size_t)(bs->ntails - 1 - i) * sizeof *bs->tails);
    bs->ntails--;
}

static int blob_set_tail_find(blob_set *bs, const void *key, size_t klen)
{
    for (int i = 0; i < bs->ntails; i++)
        if (bs->tails[i].klen == klen && memcmp(bs->tails[i].key, key, klen) == 0)
            return i;
    return -1;
}

static void blob_set_tail_drop_locked(blob_set *bs, uint64_t number)
{
    for (int i = 0; i < bs->ntails; i++)
        if (bs->tails[i].number == number) {
            blob_set_tail_remove(bs, i);
            return;             /* a file is some one key's tail at most */
        }
}

void blob_set_tail_put(blob_set *bs, const void *key, size_t klen, uint64_t number, uint64_t size,
                       uint64_t gen)
{
    pthread_mutex_lock(&bs->mu);
    if (gen != bs->tail_gen) {      /* a checkpoint may have linked the file since */
        pthread_mutex_unlock(&bs->mu);
        return;
    }
    int i = blob_set_tail_find(bs, key, klen);
    if (i >= 0)
        blob_set_tail_remove(bs, i);
    blob_set_tail_drop_locked(bs, number);
    struct blob_count *b = blob_set_slot(bs, number, 0);
    if (b && (b->refs > 0 || b->pins > 0) && size < BLOB_REUSE_MAX) {
        if (bs->ntails == BLOB_TAILS)
            blob_set_tail_remove(bs, 0);    /* the least recently written */
        if (bs->ntails == bs->tails_cap) {
            bs->tails_cap = bs->tails_cap ? 2 * bs->tails_cap : 16;
            bs->tails = xrealloc(bs->tails, (size_t)bs->tails_cap * sizeof *bs->tails);
        }
        bs->tails[bs->ntails++] = (struct blob_tail){ number, size, xmemdup(key, klen ? klen : 1),
                                                      klen };
    }
    pthread_mutex_unlock(&bs->mu);
}

int blob_set_tail_take(blob_set *bs, const void *key, size_t klen, uint64_t *number,
                       uint64_t *size)
{
    int found = 0;
    pthread_mutex_lock(&bs->mu);
    int i = blob_set_tail_find(bs, key, klen);
    if (i >= 0) {
        /* A file half garbage is still appended to: relocation moves what is live out of it
           all the same (the bytes a map names never change), and BLOB_REUSE_MAX ends it. */
        struct blob_count *b = blob_set_slot(bs, bs->tails[i].number, 0);
        found = b && (b->refs > 0 || b->pins > 0);
        *number = bs->tails[i].number;
        *size = bs->tails[i].size;
        blob_set_tail_remove(bs, i);
    }
    pthread_mutex_unlock(&bs->mu);
    return found;
}

void blob_set_tail_drop(blob_set *bs, uint64_t number)
{
    pthread_mutex_lock(&bs->mu);
    blob_set_tail_drop_locked(bs, number);
    pthread_mutex_unlock(&bs->mu);
}

uint64_t blob_set_tail_gen(blob_set *bs)
{
    pthread_mutex_lock(&bs->mu);
    uint64_t gen = bs->tail_gen;
    pthread_mutex_unlock(&bs->mu);
    return gen;
}

void blob_set_tail_clear(blob_set *bs)
{
    pthread_mutex_lock(&bs->mu);
    bs->tail_gen++;
    while (bs->ntails > 0)
        blob_set_tail_remove(bs, bs->ntails - 1);
    pthread_mutex_unlock(&bs->mu);
}

void blob_set_add_garbage(blob_set *bs, uint64_t number, uint64_t bytes)
{
    pthread_mutex_lock(&bs->mu);
    struct blob_count *b = blob_set_slot(bs, number, 0);
    if (b && bytes) {
        b->garbage += bytes;
        b->garbage_dirty = 1;
    }
    pthread_mutex_unlock(&bs->mu);
}

void blob_set_forget(blob_set *bs, uint64_t number)
{
    cache_erase(bs->files, 0, number);
}

void blob_set_load_garbage(blob_set *bs, uint64_t number, uint64_t bytes)
{
    pthread_mutex_lock(&bs->mu);
    struct blob_count *b = blob_set_slot(bs, number, 0);
    if (b)
        b->garbage = bytes;
    pthread_mutex_unlock(&bs->mu);
}

int blob_set_take_garbage(blob_set *bs, uint64_t **pairs)
{
    pthread_mutex_lock(&bs->mu);
    int n = 0;
    *pairs = NULL;
    for (int i = 0; i < bs->n; i++)
        if (bs->v[i].garbage_dirty) {
            *pairs = xrealloc(*pairs, (size_t)(n + 1) * 2 * sizeof **pairs);
            (*pairs)[2 * n] = bs->v[i].number;
            (*pairs)[2 * n + 1] = bs->v[i].garbage;
            bs->v[i].garbage_dirty = 0;
            n++;
        }
    pthread_mutex_unlock(&bs->mu);
    return n;
}

int blob_set_mostly_garbage(blob_set *bs, uint64_t number)
{
    pthread_mutex_lock(&bs->mu);
    struct blob_count *b = blob_set_slot(bs, number, 0);
    int yes = b && b->size > 0 && 2 * b->garbage >= b->size;
    pthread_mutex_unlock(&bs->mu);
    return yes;
}

uint64_t blob_set_garbage(blob_set *bs, uint64_t number)
{
    pthread_mutex_lock(&bs->mu);
    struct blob_count *b = blob_set_slot(bs, number, 0);
    uint64_t g = b ? b->garbage : 0;
    pthread_mutex_unlock(&bs->mu);
    return g;
}

uint64_t blob_set_live_bytes(blob_set *bs)
{
    uint64_t bytes = 0;
    pthread_mutex_lock(&bs->mu);
    for (int i = 0; i < bs->n; i++)
        if (bs->v[i].refs > 0)
            bytes += bs->v[i].size;
    pthread_mutex_unlock(&bs->mu);
    return bytes;
}

uint64_t blob_set_gc_cutoff(blob_set *bs)
{
    uint64_t cutoff = 0;
    pthread_mutex_lock(&bs->mu);
    if (bs->n >= 4)
        cutoff = bs->v[bs->n / 4].number;   /* slots are sorted by number */
    pthread_mutex_unlock(&bs->mu);
    return cutoff;
}

uint64_t blob_set_bytes_below(blob_set *bs, uint64_t cutoff)
{
    uint64_t bytes = 0;
    pthread_mutex_lock(&bs->mu);
    for (int i = 0; i < bs->n; i++)
        if (bs->v[i].number < cutoff)
            bytes += bs->v[i].size;
    pthread_mutex_unlock(&bs->mu);
    return bytes;
}

int blob_set_ref_decode(const blob_set *bs, slice ref, uint64_t *number, uint64_t *off,
                        uint64_t *len, char *err)
{
    if (blob_ref_decode(ref, number, off, len) != 0)
        return err_set(err, LSM_CORRUPT, "malformed blob reference in a table of %s", bs->dir);
    return LSM_OK;
}

/* The open blob file `number` from the cache, opening and checking it on a miss. */
static int blob_set_open(blob_set *bs, uint64_t number, const char *path, cache_handle **out,
                         char *err)
{
    cache_handle *h = cache_lookup(bs->files, 0, number);
    if (!h) {
        blob_file *bf = xcalloc(1, sizeof *bf);
        bf->env = bs->env;
        int e = bs->env->open(bs->env, path, LSM_O_READ, &bf->f);
        if (e < 0) {
            free(bf);
            return e == -ENOENT ? err_set(err, LSM_CORRUPT, "%s: missing blob file", path)
                                : err_errno(err, e, "opening", path);
        }
        int rc = blob_check_header(bs->env, bf->f, path, err);
        if (rc != LSM_OK) {
            blob_file_close(0, 0, bf);
            return rc;
        }
        h = cache_insert(bs->files, 0, number, bf, 1, blob_file_close);
    }
    *out = h;
    return LSM_OK;
}

int blob_set_read(blob_set *bs, slice ref, uint64_t pos, void *dst, size_t n, uint64_t *len,
                  char *err)
{
    uint64_t number, off;
    char path[4096];
    int rc = blob_set_ref_decode(bs, ref, &number, &off, len, err);
    if (rc != LSM_OK)
        return rc;
    file_path(bs->dir, number, ".blob", path, sizeof path);
    if (pos + n > *len)
        return err_set(err, LSM_INVALID, "%s: range past the end of a value", path);
    cache_handle *h = NULL;
    if ((rc = blob_set_open(bs, number, path, &h, err)) != LSM_OK)
        return rc;
    blob_file *bf = cache_value(h);
    rc = blob_read(bs->env, bf->f, path, off, *len, pos, dst, n, err);
    cache_release(bs->files, h);
    return rc;
}

int blob_set_read_record(blob_set *bs, uint64_t number, uint64_t off, uint64_t len, uint64_t pos,
                         void *dst, size_t n, char *err)
{
    char path[4096];
    file_path(bs->dir, number, ".blob", path, sizeof path);
    if (off < BLOB_HEADER)
        return err_set(err, LSM_CORRUPT, "%s: record offset %" PRIu64 " inside the header", path, off);
    cache_handle *h = NULL;
    int rc = blob_set_open(bs, number, path, &h, err);
    if (rc != LSM_OK)
        return rc;
    blob_file *bf = cache_value(h);
    rc = blob_read(bs->env, bf->f, path, off, len, pos, dst, n, err);
    cache_release(bs->files, h);
    return rc;
}

int blob_set_resolve(blob_set *bs, void **val, size_t *vlen, char *err)
{
    slice ref = { *val, *vlen };
    uint64_t number, off, len;
    int rc = blob_set_ref_decode(bs, ref, &number, &off, &len, err);
    if (rc != LSM_OK)
        return rc;
    void *v = malloc(len ? len : 1);
    if (!v)
        return err_set(err, LSM_NOMEM, "cannot allocate %" PRIu64 " bytes for a value", len);
    rc = blob_set_read(bs, ref, 0, v, (size_t)len, &len, err);
    if (rc != LSM_OK) {
        free(v);
        return rc;
    }
    free(*val);
    *val = v;
    *vlen = (size_t)len;
    return LSM_OK;
}
