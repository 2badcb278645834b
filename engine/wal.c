/*
 * wal.c — append-only record logs: the write-ahead log and the manifest are both such a log, told
 * apart by their magic number (format: man/lsm-format.5, sections RECORD LOGS and CHECKSUMS).
 *
 * A version-1 log only ever grows at its end, so a crash can damage only its last record, and
 * replay can tell a torn tail (normal after a crash: dropped quietly) from damage to data that was
 * once complete (corruption: reported with file and offset, never skipped, since skipping would
 * silently lose or reorder committed writes). A version-2 log (the write-ahead log) is preallocated
 * and written over, which makes each synced write cheaper, at the price that a crash can leave
 * holes before later records; sync marks in the log tell those holes from damage.
 *
 * With logw_set_buffer (the write-ahead log, wal_buffer_bytes), small records gather whole in a
 * user-space buffer, `pending`, which reaches the OS in one write when it fills, at logw_sync
 * (before the sync, so a synced write never stays there), at logw_close, and by logw_flush, which
 * the flush thread calls whenever it has waited 100 ms with no memtable to flush; a record over
 * half the buffer goes out at once, after what the buffer held. Otherwise each record is handed to
 * the env as soon as it is appended (header and small payloads gathered into one write, large
 * payloads written in place). After any failed write or sync the writer refuses further appends, so
 * a half-written record is never followed by a good one that replay would then have to treat as
 * corruption.
 *
 * Replay follows the rules of the man page to the letter; two of them cost a scan of the tail.
 * Before a record whose length runs past the end is called torn, log_find_survivor looks for a
 * later intact record that chains to the end (a damaged length field would otherwise pass for a
 * torn tail and drop every later record); it is one backward pass, so replay stays linear. In
 * version 2, log_marked_failure looks for a sync mark vouching for the offset replay stopped at.
 *
 * This module must never return a record whose checksum failed, nor skip a damaged record and go on.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#ifndef XXH_STATIC_LINKING_ONLY
#define XXH_STATIC_LINKING_ONLY     /* XXH3_state_t on the stack: no allocation per record */
#endif
#include <xxhash.h>
#include "wal.h"

#define LOG_REC_HEADER 8               /* checksum + length */
#define LOGW_COPY_MAX  (32u << 10)     /* payloads up to this are copied to coalesce writes */
#define LOG_CHUNK      (1u << 20)      /* replay reads the file in pieces this large */
#define LOG_MARK_BIT   0x80000000u     /* version 2: a length field with this bit is a sync mark */
#define LOG_MARK_FIELD (LOG_MARK_BIT | 8u)
#define LOG_MARK_BYTES (LOG_REC_HEADER + 8)
#define LOG_PREALLOC_MIN (64u << 10)   /* first preallocation step; each step doubles ... */
#define LOG_PREALLOC_MAX (256u << 10)  /* ... up to this, so a log overshoots by at most 256 KiB */

struct logw {
    lsm_env *env;                      /* where the file lives */
    lsm_file *f;                       /* open for append, or for pwrite when write_at */
    char *path;                        /* for messages */
    uint64_t size;                     /* bytes written so far, header included */
    int ioerr;                         /* first failure (-errno); once set, the log is dead */
    buf scratch;                       /* record header + small pieces gathered into one write */
    pthread_mutex_t mu;                /* guards pending, ioerr and size for a background flusher */
    buf pending;                       /* whole records not yet handed to the OS; guarded by mu */
    size_t buffer_cap;                 /* hand pending over once it reaches this; 0: never buffer */
    env_wb wb;                         /* bytes handed to the OS (header included) and to
                                          env->writeback, so that the sync that ends a log, or a
                                          synced write after many unsynced ones, waits for a short
                                          tail */
    uint32_t version;                  /* LOG_VERSION or LOG_VERSION_MARKED */
    int write_at;                      /* opened with LSM_O_WRITE_AT: bytes go at wb.written */
    int prealloc;                      /* version 2 and the env preallocates (until it refuses) */
    uint64_t alloc;                    /* file bytes preallocated so far */
    uint64_t synced_to;                /* version 2: bytes durable since the last good sync */
    uint64_t marked_to;                /* version 2: M, the durable prefix, of the last mark */
};

/* Checksum of one record: the stored length field followed by the payload pieces. */
static uint32_t logw_checksum(const uint8_t len_field[4], const void *a, size_t an,
                              const void *b, size_t bn)
{
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    XXH3_64bits_update(&st, len_field, 4);
    XXH3_64bits_update(&st, a, an);
    XXH3_64bits_update(&st, b, bn);
    return (uint32_t)XXH3_64bits_digest(&st);
}

/* Preallocates the next step so that n more bytes fit. A file system that cannot preallocate
   just gets plain writes past the end from now on. */
static int logw_preallocate(logw *w, size_t n)
{
    uint64_t step = w->alloc < LOG_PREALLOC_MIN ? LOG_PREALLOC_MIN
                  : w->alloc < LOG_PREALLOC_MAX ? w->alloc : LOG_PREALLOC_MAX;
    uint64_t want = w->wb.written + n + step;
    int r = w->env->preallocate(w->env, w->f, w->alloc, want - w->alloc);
    if (r == -EOPNOTSUPP) {
        w->prealloc = 0;
        return 0;
    }
    if (r == 0)
        w->alloc = want;
    return r;
}

static int logw_write(logw *w, const void *p, size_t n)
{
    int r = 0;
    if (w->prealloc && w->wb.written + n > w->alloc)
        r = logw_preallocate(w, n);
    if (r == 0)
        r = w->write_at ? env_pwrite_wb(w->env, w->f, p, n, &w->wb)
                        : env_append_wb(w->env, w->f, p, n, &w->wb);
    if (r < 0)
        w->ioerr = r;
    return r;
}

static int logw_create_v(lsm_env *env, const char *path, const char *magic, uint32_t version,
                         logw **out, char *err)
{
    int write_at = version == LOG_VERSION_MARKED && env->pwrite;
    lsm_file *f;
    int r = env->open(env, path, LSM_O_CREATE | (write_at ? LSM_O_WRITE_AT : 0), &f);
    if (r < 0)
        return err_errno(err, r, "create", path);
    logw *w = xcalloc(1, sizeof *w);
    pthread_mutex_init(&w->mu, NULL);
    w->env = env;
    w->f = f;
    w->path = xmemdup(path, strlen(path) + 1);
    w->version = version;
    w->write_at = write_at;
    w->prealloc = write_at && env->preallocate;
    uint8_t hdr[LOG_HEADER];
    memcpy(hdr, magic, 8);
    enc_fixed32(hdr + 8, version);
    enc_fixed32(hdr + 12, 0);
    r = logw_write(w, hdr, sizeof hdr);
    if (r < 0) {
        logw_close(w, NULL);
        return err_errno(err, r, "write header of", path);
    }
    w->size = LOG_HEADER;
    w->wb.sent = LOG_HEADER;
    *out = w;
    return LSM_OK;
}

int logw_create(lsm_env *env, const char *path, const char *magic, logw **out, char *err)
{
    return logw_create_v(env, path, magic, LOG_VERSION, out, err);
}

int logw_create_marked(lsm_env *env, const char *path, const char *magic, logw **out, char *err)
{
    return logw_create_v(env, path, magic, LOG_VERSION_MARKED, out, err);
}

/* Fills mark with a sync mark when a sync succeeded since the last one; returns its size or 0.
   Caller holds mu. */
static size_t logw_mark(logw *w, uint8_t mark[LOG_MARK_BYTES])
{
    if (w->version != LOG_VERSION_MARKED || w->synced_to <= w->marked_to)
        return 0;
    enc_fixed32(mark + 4, LOG_MARK_FIELD);
    enc_fixed64(mark + 8, w->synced_to);
    enc_fixed32(mark, logw_checksum(mark + 4, mark + 8, 8, NULL, 0));
    w->marked_to = w->synced_to;
    return LOG_MARK_BYTES;
}

void logw_set_buffer(logw *w, size_t bytes)
{
    w->buffer_cap = bytes;
}

/* Hands the buffered records to the OS (caller holds mu). */
static int logw_flush_locked(logw *w)
{
    if (w->pending.len == 0)
        return 0;
    if (w->ioerr)
        return w->ioerr;
    int r = logw_write(w, w->pending.p, w->pending.len);
    w->pending.len = 0;
    return r;
}

int logw_flush(logw *w, char *err)
{
    pthread_mutex_lock(&w->mu);
    int r = logw_flush_locked(w);
    pthread_mutex_unlock(&w->mu);
    return r < 0 ? err_errno(err, r, "append to", w->path) : LSM_OK;
}

/* Writes one record whose payload is a then b (caller holds mu). A small record joins the buffer
   when buffering is on. Otherwise pieces small enough ride along with the header in one write,
   and a large piece is written from the caller's memory, never copied. */
static int logw_put_locked(logw *w, const void *a, size_t an, const void *b, size_t bn, char *err)
{
    if (w->ioerr)
        return err_errno(err, w->ioerr, "append to failed log", w->path);
    uint64_t total = (uint64_t)an + bn;
    if (total > (w->version == LOG_VERSION_MARKED ? LOG_MARK_BIT - 1 : UINT32_MAX))
        return err_set(err, LSM_INVALID, "%s: record of %llu bytes is too large for a log",
                       w->path, (unsigned long long)total);
    uint8_t hdr[LOG_REC_HEADER];
    enc_fixed32(hdr + 4, (uint32_t)total);
    enc_fixed32(hdr, logw_checksum(hdr + 4, a, an, b, bn));
    uint8_t mark[LOG_MARK_BYTES];
    size_t mlen = logw_mark(w, mark);
    if (w->buffer_cap && LOG_REC_HEADER + total <= w->buffer_cap / 2) {
        buf_append(&w->pending, mark, mlen);
        buf_append(&w->pending, hdr, sizeof hdr);
        buf_append(&w->pending, a, an);
        buf_append(&w->pending, b, bn);
        w->size += mlen + LOG_REC_HEADER + total;
        int r = w->pending.len >= w->buffer_cap ? logw_flush_locked(w) : 0;
        return r < 0 ? err_errno(err, r, "append to", w->path) : LSM_OK;
    }
    int fr = logw_flush_locked(w);
    if (fr < 0)
        return err_errno(err, fr, "append to", w->path);
    w->scratch.len = 0;
    buf_append(&w->scratch, mark, mlen);
    buf_append(&w->scratch, hdr, sizeof hdr);
    const void *piece[2] = { a, b };
    size_t plen[2] = { an, bn };
    int r = 0;
    for (int i = 0; i < 2 && r == 0; i++) {
        if (plen[i] == 0)
            continue;
        if (w->scratch.len + plen[i] <= LOGW_COPY_MAX) {
            buf_append(&w->scratch, piece[i], plen[i]);
            continue;
        }
        if (w->scratch.len > 0)
            r = logw_write(w, w->scratch.p, w->scratch.len);
        w->scratch.len = 0;
        if (r == 0)
            r = logw_write(w, piece[i], plen[i]);
    }
    if (r == 0 && w->scratch.len > 0)
        r = logw_write(w, w->scratch.p, w->scratch.len);
    if (r < 0)
        return err_errno(err, r, "append to", w->path);
    w->size += mlen + LOG_REC_HEADER + total;
    return LSM_OK;
}

int logw_append(logw *w, const void *payload, size_t n, char *err)
{
    pthread_mutex_lock(&w->mu);
    int rc = logw_put_locked(w, payload, n, NULL, 0, err);
    pthread_mutex_unlock(&w->mu);
    return rc;
}

int logw_append2(logw *w, const void *a, size_t an, const void *b, size_t bn, char *err)
{
    pthread_mutex_lock(&w->mu);
    int rc = logw_put_locked(w, a, an, b, bn, err);
    pthread_mutex_unlock(&w->mu);
    return rc;
}

int logw_sync(logw *w, char *err)
{
    pthread_mutex_lock(&w->mu);
    int r = w->ioerr ? w->ioerr : logw_flush_locked(w);
    if (r == 0) {
        uint64_t upto = w->wb.written;
        r = w->env->sync(w->env, w->f);
        /* After a failed fsync the kernel may have dropped the dirty pages: trust nothing more. */
        if (r < 0)
            w->ioerr = r;
        else if (upto > w->synced_to)
            w->synced_to = upto;
    }
    pthread_mutex_unlock(&w->mu);
    return r < 0 ? err_errno(err, r, "sync", w->path) : LSM_OK;
}

int logw_seal(logw *w, char *err)
{
    int rc = logw_sync(w, err);
    if (rc != LSM_OK)
        return rc;
    pthread_mutex_lock(&w->mu);
    uint8_t mark[LOG_MARK_BYTES];
    size_t mlen = logw_mark(w, mark);
    int r = mlen ? logw_write(w, mark, mlen) : 0;
    if (r == 0)
        w->size += mlen;
    pthread_mutex_unlock(&w->mu);
    if (r < 0)
        return err_errno(err, r, "append to", w->path);
    return mlen ? logw_sync(w, err) : LSM_OK;
}

int logw_reserve(logw *w, size_t n, char *err)
{
    pthread_mutex_lock(&w->mu);
    int r = w->ioerr;
    uint64_t need = w->wb.written + w->pending.len + n + LOG_REC_HEADER + 2 * LOG_MARK_BYTES;
    if (r == 0 && w->prealloc && need > w->alloc)
        r = logw_preallocate(w, (size_t)(need - w->wb.written));
    pthread_mutex_unlock(&w->mu);
    return r < 0 ? err_errno(err, r, "preallocating", w->path) : LSM_OK;
}

int logw_failed(logw *w)
{
    pthread_mutex_lock(&w->mu);
    int r = w->ioerr != 0;
    pthread_mutex_unlock(&w->mu);
    return r;
}

uint64_t logw_size(const logw *w)
{
    return w->size;
}

int logw_close(logw *w, char *err)
{
    if (!w)
        return LSM_OK;
    pthread_mutex_lock(&w->mu);
    int fr = logw_flush_locked(w);
    pthread_mutex_unlock(&w->mu);
    int r = w->env->close(w->env, w->f);
    int rc = fr < 0 ? err_errno(err, fr, "append to", w->path)
           : r < 0 ? err_errno(err, r, "close", w->path) : LSM_OK;
    pthread_mutex_destroy(&w->mu);
    buf_free(&w->pending);
    buf_free(&w->scratch);
    free(w->path);
    free(w);
    return rc;
}

/* ---- replay ---- */

/* A window onto the file, so that replay needs memory for one chunk or one record, not the file. */
typedef struct log_reader {
    lsm_env *env;                      /* where the file lives */
    lsm_file *f;                       /* open for reading */
    const char *path;                  /* for messages */
    uint64_t size;                     /* file size when replay began */
    uint8_t *p;                        /* window bytes */
    size_t cap;                        /* allocation of p */
    uint64_t base;                     /* file offset of p[0] */
    size_t len;                        /* valid bytes in p */
    int strict;                        /* manifest: a complete record never counts as torn */
    int marked;                        /* version 2: sync marks decide what a failure means */
} log_reader;

/* Points *out at file bytes [off, off + n); n must not run past r->size. */
static int log_reader_get(log_reader *r, uint64_t off, size_t n, const uint8_t **out, char *err)
{
    if (off >= r->base && off + n <= r->base + r->len) {
        *out = r->p + (off - r->base);
        return LSM_OK;
    }
    size_t want = n > LOG_CHUNK ? n : LOG_CHUNK;
    if (want > r->size - off)
        want = (size_t)(r->size - off);
    if (want > r->cap) {
        uint8_t *p = realloc(r->p, want);
        if (!p)
            return err_set(err, LSM_NOMEM, "%s: offset %llu: no memory for %zu bytes", r->path,
                           (unsigned long long)off, want);
        r->p = p;
        r->cap = want;
    }
    /* Keep what the window already holds of the new range (a record split across chunks). */
    size_t keep = 0;
    if (off >= r->base && off < r->base + r->len) {
        keep = (size_t)(r->base + r->len - off);
        memmove(r->p, r->p + (off - r->base), keep);
    }
    r->base = off;
    r->len = 0;
    int rc = env_pread_all(r->env, r->f, r->p + keep, want - keep, off + keep);
    if (rc < 0)
        return err_errno(err, rc, "read", r->path);
    r->len = want;
    *out = r->p;
    return LSM_OK;
}

/* 1 if every byte of [from, size) is zero, 0 if not, or a negative LSM code. */
static int log_zero_to_end(log_reader *r, uint64_t from, char *err)
{
    while (from < r->size) {
        uint64_t left = r->size - from;
        size_t n = left > LOG_CHUNK ? LOG_CHUNK : (size_t)left;
        const uint8_t *p;
        int rc = log_reader_get(r, from, n, &p, err);
        if (rc < 0)
            return rc;
        for (size_t i = 0; i < n; i++)
            if (p[i])
                return 0;
        from += n;
    }
    return 1;
}

/* The record at off claims more bytes than the file has. Returns LSM_OK with *found set to the
   offset of a later intact record that chains to the end of the file (man/lsm-format.5, Replay),
   or to 0 if there is none and the record is a torn tail. */
static int log_find_survivor(log_reader *r, uint64_t off, uint64_t *found, char *err)
{
    *found = 0;
    uint64_t start = off + LOG_REC_HEADER;
    if (r->size - start < LOG_REC_HEADER)
        return LSM_OK;
    size_t n = (size_t)(r->size - start);
    const uint8_t *q;
    int rc = log_reader_get(r, start, n, &q, err);
    if (rc < 0)
        return rc;
    size_t zero_from = n;
    while (zero_from > 0 && q[zero_from - 1] == 0)
        zero_from--;
    /* reach[i]: a chain of record lengths from q + i ends at the end of the file, in a zero tail,
       or in a fragment too short to be a header. Computed from the back, so each i is O(1). */
    uint8_t *reach = calloc(n / 8 + 1, 1);
    if (!reach)
        return err_set(err, LSM_NOMEM, "%s: no memory to check the tail at offset %llu", r->path,
                       (unsigned long long)off);
#define REACH_SET(i) (reach[(i) >> 3] |= (uint8_t)(1u << ((i) & 7)))
#define REACH_GET(i) ((reach[(i) >> 3] >> ((i) & 7)) & 1u)
    for (size_t i = n + 1; i-- > 0;) {
        size_t left = n - i;
        if (left < LOG_REC_HEADER || i >= zero_from) {
            REACH_SET(i);
            continue;
        }
        uint32_t len = dec_fixed32(q + i + 4);
        if (len <= left - LOG_REC_HEADER && REACH_GET(i + LOG_REC_HEADER + len))
            REACH_SET(i);
    }
    for (size_t i = 0; i + LOG_REC_HEADER <= n && i < zero_from; i++) {
        if (!REACH_GET(i))
            continue;
        uint32_t len = dec_fixed32(q + i + 4);
        if (len > n - i - LOG_REC_HEADER)
            continue;
        if (checksum32(q + i + 4, 4 + (size_t)len) == dec_fixed32(q + i)) {
            *found = start + i;
            break;
        }
    }
#undef REACH_SET
#undef REACH_GET
    free(reach);
    return LSM_OK;
}

/* Checks the 16-byte header. Returns LSM_OK and sets *empty when the file is an empty log. */
static int log_check_header(log_reader *r, const char *magic, int *empty, char *err)
{
    *empty = 0;
    if (r->size < LOG_HEADER) {
        *empty = 1;
        return LSM_OK;
    }
    const uint8_t *h;
    int rc = log_reader_get(r, 0, LOG_HEADER, &h, err);
    if (rc < 0)
        return rc;
    if (memcmp(h, magic, 8) != 0) {
        /* A file of zeros was never written (preallocated, or its data never reached the disk);
           a zero header with data behind it is damage, not emptiness. */
        rc = log_zero_to_end(r, 0, err);
        if (rc < 0)
            return rc;
        if (rc == 1) {
            *empty = 1;
            return LSM_OK;
        }
        return err_set(err, LSM_CORRUPT, "%s: offset 0: bad magic", r->path);
    }
    uint32_t version = dec_fixed32(h + 8);
    r->marked = version == LOG_VERSION_MARKED;
    if (version != LOG_VERSION && version != LOG_VERSION_MARKED)
        return err_set(err, LSM_CORRUPT, "%s: offset 8: unsupported log format version %u",
                       r->path, (unsigned)version);
    if (dec_fixed32(h + 12) != 0)
        return err_set(err, LSM_CORRUPT, "%s: offset 12: reserved header field is not zero",
                       r->path);
    return LSM_OK;
}

/* Version 2: the record at off is not intact (why says how). Returns LSM_CORRUPT if an intact sync
   mark after it shows that off had been synced; otherwise LSM_OK with *dropped set to the bytes
   from off to the last non-zero byte of the file. */
static int log_marked_failure(log_reader *r, uint64_t off, const char *why, uint64_t *dropped,
                              char *err)
{
    size_t n = (size_t)(r->size - off);
    const uint8_t *q;
    int rc = log_reader_get(r, off, n, &q, err);
    if (rc < 0)
        return rc;
    uint8_t field[4];
    enc_fixed32(field, LOG_MARK_FIELD);
    for (size_t i = 0; i + LOG_MARK_BYTES <= n; i++) {
        if (memcmp(q + i + 4, field, 4) != 0 || checksum32(q + i + 4, 12) != dec_fixed32(q + i))
            continue;
        uint64_t s = dec_fixed64(q + i + 8);
        if (s > off)
            return err_set(err, LSM_CORRUPT,
                           "%s: offset %llu: %s, but the sync mark at offset %llu shows it was "
                           "synced", r->path, (unsigned long long)off, why,
                           (unsigned long long)(off + i));
    }
    while (n > 0 && q[n - 1] == 0)
        n--;
    *dropped = n;
    return LSM_OK;
}

/* Version 2 replay (rules: man/lsm-format.5, RECORD LOGS, Version 2). */
static int log_replay_marked(log_reader *r, int (*fn)(void *, const uint8_t *, size_t, uint64_t),
                             void *arg, uint64_t *dropped, char *err)
{
    uint64_t off = LOG_HEADER;
    for (;;) {
        *dropped = 0;
        if (off == r->size)
            return LSM_OK;
        uint64_t left = r->size - off;
        const char *why;
        const uint8_t *rec;
        if (left < LOG_REC_HEADER) {
            why = "record header cut short";
        } else {
            int rc = log_reader_get(r, off, LOG_REC_HEADER, &rec, err);
            if (rc < 0)
                return rc;
            uint32_t field = dec_fixed32(rec + 4);
            uint32_t len = field & ~LOG_MARK_BIT;
            if (len > left - LOG_REC_HEADER) {
                why = "record runs past the end of the file";
            } else if ((rc = log_reader_get(r, off, LOG_REC_HEADER + (size_t)len, &rec, err)) < 0) {
                return rc;
            } else if (checksum32(rec + 4, 4 + (size_t)len) != dec_fixed32(rec)) {
                why = "record checksum mismatch";
            } else if (field & LOG_MARK_BIT) {
                if (field != LOG_MARK_FIELD)
                    why = "malformed sync mark";
                else if (dec_fixed64(rec + LOG_REC_HEADER) > off)
                    why = "sync mark past its own offset";
                else {
                    off += LOG_MARK_BYTES;
                    continue;
                }
            } else {
                rc = fn(arg, rec + LOG_REC_HEADER, len, off);
                if (rc != 0)
                    return rc;
                off += LOG_REC_HEADER + len;
                continue;
            }
        }
        return log_marked_failure(r, off, why, dropped, err);
    }
}

static int log_replay_records(log_reader *r, int (*fn)(void *, const uint8_t *, size_t, uint64_t),
                              void *arg, uint64_t *torn_at, char *err)
{
    uint64_t off = LOG_HEADER;
    for (;;) {
        *torn_at = off;
        if (off == r->size)
            return LSM_OK;
        uint64_t left = r->size - off;
        if (left < LOG_REC_HEADER)
            return LSM_OK;
        const uint8_t *h;
        int rc = log_reader_get(r, off, LOG_REC_HEADER, &h, err);
        if (rc < 0)
            return rc;
        uint32_t len = dec_fixed32(h + 4);
        if (len > left - LOG_REC_HEADER) {
            if (r->strict) {
                /* A torn manifest record is short of its stated length; a complete record whose
                   length field was damaged still checksums with the length it really has. */
                uint32_t crc = dec_fixed32(h);
                uint8_t real[4];
                const uint8_t *body;
                enc_fixed32(real, (uint32_t)(left - LOG_REC_HEADER));
                rc = log_reader_get(r, off + LOG_REC_HEADER, (size_t)(left - LOG_REC_HEADER), &body, err);
                if (rc < 0)
                    return rc;
                if (checksum32_pair(real, 4, body, (size_t)(left - LOG_REC_HEADER)) == crc)
                    return err_set(err, LSM_CORRUPT, "%s: offset %llu: record length field damaged",
                                   r->path, (unsigned long long)off);
            }
            uint64_t survivor;
            rc = log_find_survivor(r, off, &survivor, err);
            if (rc < 0)
                return rc;
            if (survivor)
                return err_set(err, LSM_CORRUPT, "%s: offset %llu: record length %u runs past "
                               "the end of the file, but an intact record follows at offset %llu",
                               r->path, (unsigned long long)off, (unsigned)len,
                               (unsigned long long)survivor);
            return LSM_OK;
        }
        const uint8_t *rec;
        rc = log_reader_get(r, off, LOG_REC_HEADER + (size_t)len, &rec, err);
        if (rc < 0)
            return rc;
        uint64_t end = off + LOG_REC_HEADER + len;
        if (checksum32(rec + 4, 4 + (size_t)len) != dec_fixed32(rec)) {
            /* Every manifest record is synced before anything depends on it, so a crash can
               truncate it but not leave it complete and wrong: that is damage, not a torn tail. */
            if (r->strict && (len != 0 || dec_fixed32(rec) != 0))
                return err_set(err, LSM_CORRUPT, "%s: offset %llu: record checksum mismatch",
                               r->path, (unsigned long long)off);
            rc = log_zero_to_end(r, end, err);
            if (rc < 0)
                return rc;
            if (rc == 1)
                return LSM_OK;
            return err_set(err, LSM_CORRUPT, "%s: offset %llu: record checksum mismatch", r->path,
                           (unsigned long long)off);
        }
        rc = fn(arg, rec + LOG_REC_HEADER, len, off);
        if (rc != 0) {
            *torn_at = r->size;
            return rc;
        }
        off = end;
    }
}

int log_replay(lsm_env *env, const char *path, const char *magic,
               int (*fn)(void *arg, const uint8_t *p, size_t n, uint64_t off), void *arg,
               uint64_t *tail_dropped, char *err)
{
    if (tail_dropped)
        *tail_dropped = 0;
    log_reader r;
    memset(&r, 0, sizeof r);
    r.env = env;
    r.path = path;
    r.strict = memcmp(magic, MANIFEST_MAGIC, 8) == 0;
    int rc = env->open(env, path, LSM_O_READ, &r.f);
    if (rc < 0)
        return err_errno(err, rc, "open", path);
    rc = env->size(env, r.f, &r.size);
    if (rc < 0) {
        rc = err_errno(err, rc, "size of", path);
        goto out;
    }
    int empty;
    rc = log_check_header(&r, magic, &empty, err);
    if (rc < 0)
        goto out;
    if (empty) {
        if (tail_dropped)
            *tail_dropped = r.size;
        goto out;
    }
    if (r.marked) {
        uint64_t dropped;
        rc = log_replay_marked(&r, fn, arg, &dropped, err);
        if (rc == LSM_OK && tail_dropped)
            *tail_dropped = dropped;
        goto out;
    }
    uint64_t torn_at;
    rc = log_replay_records(&r, fn, arg, &torn_at, err);
    if (rc == LSM_OK && tail_dropped)
        *tail_dropped = r.size - torn_at;
out:
    env->close(env, r.f);
    free(r.p);
    return rc;
}
