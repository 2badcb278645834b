/*
 * sst.c — sorted string tables: writing them once, in order, and reading them many times.
 *
 * A table is an immutable file of internal keys in internal order, cut into data blocks that are
 * the unit of I/O, checksum, compression and caching. A point lookup consults the pinned bloom
 * filter, binary-searches the pinned index for the one data block that can hold the key, takes it
 * from the block cache (or reads, verifies and caches it), binary-searches its restart points and
 * scans at most one restart interval; it allocates nothing but the returned copy of the value. The
 * index and filter are read and verified once at open and kept for the table's lifetime. In a
 * large database none of that stays in the CPU cache, so each step asks for the lines the next
 * one will read before it waits (sst_prefetch_where and sst_prefetch_at let the caller start that
 * for several tables at once, even before it has the tables' handles). When the env can map
 * files, the table is mapped read-only and uncompressed data blocks are read in place (verified
 * on first use, like LevelDB's mmap'd tables but checked): the block cache then holds only
 * decompressed blocks, and the page cache holds the rest.
 *
 * Format: man/lsm-format.5, section TABLES. What the code here relies on: a block handle's size
 * excludes the 5-byte trailer, whose checksum covers the type byte too, so a damaged type is caught
 * before any decompression; every index entry is a restart point (its key stored whole), which lets
 * sst_open point the flat sst_index_entry array into the index block; lookups rely only on the
 * separator bounds, so sst_get reads on into the next block when a key falls between a block's
 * last key and its separator; and no block grows past SST_MAX_BLOCK (LZ4's input limit), because
 * sst_builder_add cuts a block early and refuses a value over half of it.
 *
 * This module never trusts the file: every handle, varint, length and restart offset is checked
 * against the block that contains it, so a damaged table yields LSM_CORRUPT ("path: offset N: why",
 * N the offset of the damaged block or footer field) and never a crash, an out-of-bounds read or
 * another key's bytes. It never holds a cache handle across calls except inside an iterator, and a
 * table must outlive its iterators.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <lz4.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <zstd.h>
#include "bloom.h"
#include "sst.h"

#define SST_FOOTER       56
#define SST_TRAILER      5
#define SST_VERSION      1
#define SST_MAGIC        UINT64_C(0x54535373666d736c)
#define SST_MAX_BLOCK    ((size_t)LZ4_MAX_INPUT_SIZE)
#define SST_KEY_INLINE   128
#define SST_TYPE_NONE    0
#define SST_TYPE_LZ4     1
#define SST_TYPE_ZSTD    2
#define SST_INLINE_RESTARTS 8     /* restart offsets an index entry keeps (sst_index_entry) */

/* ------------------------------------------------------------------------------------------------
 * Blocks in memory and cursors over them
 * --------------------------------------------------------------------------------------------- */

/* A block's uncompressed contents, wherever they live: in a heap copy (sst_heap_block) or, for an
   uncompressed block of a mapped table, in the mapping itself. */
typedef struct sst_block {
    uint64_t off;                 /* file offset of the stored block, for messages and cache key */
    const uint8_t *data;          /* uncompressed contents */
    size_t size;                  /* bytes at data */
    uint32_t limit;               /* end of the entries = start of the restart array */
    uint32_t nrestarts;           /* entries in the restart array */
    const uint32_t *restarts;     /* a decoded copy of the restart array, or NULL: read at limit */
} sst_block;

/* A block read into (or decompressed into) memory of its own; freed with free(). */
typedef struct sst_heap_block {
    sst_block b;                  /* b.data points at mem */
    uint8_t mem[];
} sst_heap_block;

/* A position in one block. The key is rebuilt here because of prefix compression; short keys live
   in the inline array so that a lookup allocates nothing. Never copied by value. */
typedef struct sst_cursor {
    const sst_block *b;           /* block being read; NULL before the first */
    uint32_t next;                /* offset of the entry after the current one */
    uint8_t *key;                 /* current key: inl or a heap buffer of kcap bytes */
    size_t klen, kcap;
    slice val;                    /* current value, inside the block */
    int valid;                    /* positioned on an entry */
    int corrupt;                  /* the block's entries turned out malformed */
    uint8_t inl[SST_KEY_INLINE];
} sst_cursor;

static void sst_cursor_init(sst_cursor *c)
{
    c->b = NULL;
    c->next = 0;
    c->key = c->inl;
    c->klen = 0;
    c->kcap = sizeof(c->inl);
    c->val.p = NULL;
    c->val.n = 0;
    c->valid = 0;
    c->corrupt = 0;
}

static void sst_cursor_done(sst_cursor *c)
{
    if (c->key != c->inl)
        free(c->key);
}

static void sst_cursor_set(sst_cursor *c, const sst_block *b)
{
    c->b = b;
    c->valid = 0;
    c->corrupt = 0;
    c->klen = 0;
}

static slice sst_cursor_key(const sst_cursor *c)
{
    slice s = { c->key, c->klen };
    return s;
}

/* Decodes the three varints of the entry at off; on success *p points at its key delta. The
   common case (three one-byte varints) is tested first. Inlined: it runs once per entry scanned. */
static inline __attribute__((always_inline)) int sst_entry_header(const sst_block *b, uint32_t off, uint64_t *shared, uint64_t *non,
                            uint64_t *vlen, const uint8_t **p)
{
    const uint8_t *q = b->data + off, *lim = b->data + b->limit;
    if (lim - q >= 3 && (q[0] | q[1] | q[2]) < 0x80) {
        *shared = q[0];
        *non = q[1];
        *vlen = q[2];
        q += 3;
    } else if (!(q = dec_varint(q, lim, shared)) || !(q = dec_varint(q, lim, non))
               || !(q = dec_varint(q, lim, vlen))) {
        return -1;
    }
    if (*non > (uint64_t)(lim - q) || *vlen > (uint64_t)(lim - q) - *non)
        return -1;
    *p = q;
    return 0;
}

static void sst_cursor_reserve(sst_cursor *c, size_t n)
{
    if (n <= c->kcap)
        return;
    size_t cap = c->kcap * 2 > n ? c->kcap * 2 : n;
    if (c->key == c->inl) {
        c->key = xmalloc(cap);
        memcpy(c->key, c->inl, c->klen);
    } else {
        c->key = xrealloc(c->key, cap);
    }
    c->kcap = cap;
}

/* memcpy for the few bytes a prefix-compressed key usually adds (a key tail and its trailer): two
   overlapping fixed-size moves instead of a library call, never touching a byte outside either
   range. */
static inline void sst_copy_delta(uint8_t *dst, const uint8_t *src, size_t n)
{
    if (n >= 8 && n <= 16) {
        uint64_t a, b;
        memcpy(&a, src, 8);
        memcpy(&b, src + n - 8, 8);
        memcpy(dst, &a, 8);
        memcpy(dst + n - 8, &b, 8);
    } else if (n >= 4 && n < 8) {
        uint32_t a, b;
        memcpy(&a, src, 4);
        memcpy(&b, src + n - 4, 4);
        memcpy(dst, &a, 4);
        memcpy(dst + n - 4, &b, 4);
    } else {
        memcpy(dst, src, n);
    }
}

/* Parses the entry at off, taking the shared prefix from the current key. */
static inline __attribute__((always_inline)) void sst_cursor_parse(sst_cursor *c, uint32_t off)
{
    uint64_t shared, non, vlen;
    const uint8_t *p;
    if (sst_entry_header(c->b, off, &shared, &non, &vlen, &p) < 0 || shared > c->klen
        || shared + non < LSM_TRAILER) {
        c->valid = 0;
        c->corrupt = 1;
        return;
    }
    size_t n = (size_t)(shared + non);
    sst_cursor_reserve(c, n);
    sst_copy_delta(c->key + shared, p, (size_t)non);
    c->klen = n;
    c->val.p = p + non;
    c->val.n = (size_t)vlen;
    c->next = (uint32_t)(c->val.p + vlen - c->b->data);
    c->valid = 1;
}

static inline uint32_t sst_restart(const sst_block *b, uint32_t i)
{
    return b->restarts ? b->restarts[i] : dec_fixed32(b->data + b->limit + 4 * (size_t)i);
}

static void sst_cursor_seek_first(sst_cursor *c)
{
    c->klen = 0;
    c->valid = 0;
    if (c->b->limit > 0)
        sst_cursor_parse(c, 0);
}

static void sst_cursor_next(sst_cursor *c)
{
    if (c->next >= c->b->limit) {
        c->valid = 0;
        return;
    }
    sst_cursor_parse(c, c->next);
}

/* Positions at the first entry >= target, or invalid (corrupt set if the block is malformed). */
static void sst_cursor_seek(sst_cursor *c, slice target)
{
    const sst_block *b = c->b;
    c->valid = 0;
    if (b->nrestarts == 0)
        return;
    /* A block read in place is usually not in the CPU cache: ask for every restart entry the
       binary search may probe at once, so that their misses overlap instead of queueing. */
    if (b->nrestarts <= 8)
        for (uint32_t i = 0; i < b->nrestarts; i++)
            __builtin_prefetch(b->data + sst_restart(b, i));
    /* The last restart point whose key is < target: scanning from there finds the answer. */
    uint32_t lo = 0, hi = b->nrestarts - 1;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo + 1) / 2;
        uint64_t shared, non, vlen;
        const uint8_t *p;
        if (sst_entry_header(b, sst_restart(b, mid), &shared, &non, &vlen, &p) < 0 || shared != 0
            || non < LSM_TRAILER) {
            c->corrupt = 1;
            return;
        }
        slice k = { p, (size_t)non };
        if (iiter_key_cmp(k, target) < 0)
            lo = mid;
        else
            hi = mid - 1;
    }
    /* Likewise for the interval the scan walks through. */
    uint32_t from = sst_restart(b, lo);
    uint32_t to = lo + 1 < b->nrestarts ? sst_restart(b, lo + 1) : b->limit;
    for (uint32_t o = from + 64; o < to && o < from + 4096; o += 64)
        __builtin_prefetch(b->data + o);
    c->klen = 0;
    sst_cursor_parse(c, from);
    while (c->valid && iiter_key_cmp(sst_cursor_key(c), target) < 0)
        sst_cursor_next(c);
}

/* Checks the restart array of a freshly read block and fills limit/nrestarts. Entries themselves
   are checked as cursors parse them. */
static int sst_block_layout(sst_block *b)
{
    if (b->size < 4 || b->size > UINT32_MAX)
        return -1;
    uint32_t nr = dec_fixed32(b->data + b->size - 4);
    if (nr > (b->size - 4) / 4)
        return -1;
    b->nrestarts = nr;
    b->limit = (uint32_t)(b->size - 4 - 4 * (size_t)nr);
    if (nr == 0)
        return b->limit == 0 ? 0 : -1;
    if (sst_restart(b, 0) != 0)
        return -1;
    for (uint32_t i = 1; i < nr; i++) {
        uint32_t r = sst_restart(b, i);
        if (r <= sst_restart(b, i - 1) || r >= b->limit)
            return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------------
 * Builder
 * --------------------------------------------------------------------------------------------- */

typedef struct sst_bb {
    buf data;                     /* entries, then (after sst_bb_finish) the restart array */
    uint32_t *restarts;           /* offsets of restart entries */
    size_t nrestarts, caprestarts;
    int since_restart;            /* entries added since the last restart point */
    int interval;                 /* restart after this many entries at most (>= 1) */
    int early;                    /* ... or after this many, once they span `span` bytes */
    size_t span;                  /* 0: restart only by count */
    uint64_t entries;             /* entries in this block */
} sst_bb;

struct sst_builder {
    lsm_env *env;
    lsm_file *f;                  /* borrowed: the caller creates, syncs and closes it */
    char *path;                   /* for messages */
    sst_options o;                /* normalised copy */
    uint64_t offset;              /* bytes appended to f so far */
    uint64_t entries;             /* entries added */
    sst_bb data;                  /* data block being filled */
    sst_bb index;                 /* index block, written at finish */
    buf last_key;                 /* last internal key added, for order and separators */
    int pending;                  /* the last flushed block still needs its index entry */
    uint64_t pending_off, pending_size; /* its handle */
    uint64_t *hashes;             /* bloom_hash of each distinct user key */
    size_t nhashes, caphashes;
    buf scratch;                  /* compression output and separators */
    buf out;                      /* blocks not yet handed to the OS (see sst_builder_append) */
    env_wb wb;                    /* bytes handed to the OS, and to env->writeback */
    ZSTD_CCtx *zc;                /* created on first Zstandard block */
    int status;                   /* sticky first error */
    char msg[LSM_ERRLEN];         /* its message */
    int finished;
};

static void sst_bb_init(sst_bb *bb, int interval)
{
    memset(bb, 0, sizeof(*bb));
    bb->interval = interval;
}

static void sst_bb_free(sst_bb *bb)
{
    buf_free(&bb->data);
    free(bb->restarts);
}

static void sst_bb_reset(sst_bb *bb, size_t keep_cap)
{
    if (bb->data.cap > keep_cap)
        buf_free(&bb->data);
    bb->data.len = 0;
    bb->nrestarts = 0;
    bb->since_restart = 0;
    bb->entries = 0;
}

static size_t sst_bb_estimate(const sst_bb *bb)
{
    return bb->data.len + 4 * bb->nrestarts + 4;
}

static inline uint8_t *sst_put_varint(uint8_t *p, uint64_t v)
{
    if (v < 0x80) {
        *p = (uint8_t)v;
        return p + 1;
    }
    return enc_varint(p, v);
}

/* Appends an entry; same is how many leading bytes key shares with the previous key added to this
   block (the builder knows it already, having just compared the two). */
static void sst_bb_add(sst_bb *bb, slice key, slice val, size_t same)
{
    size_t shared = 0;
    if (bb->nrestarts == 0 || bb->since_restart >= bb->interval
        || (bb->span && bb->since_restart >= bb->early
            && bb->data.len - bb->restarts[bb->nrestarts - 1] >= bb->span)) {
        if (bb->nrestarts == bb->caprestarts) {
            bb->caprestarts = bb->caprestarts ? bb->caprestarts * 2 : 64;
            bb->restarts = xrealloc(bb->restarts, bb->caprestarts * sizeof(*bb->restarts));
        }
        bb->restarts[bb->nrestarts++] = (uint32_t)bb->data.len;
        bb->since_restart = 0;
    } else {
        shared = same;
    }
    /* One reservation for the whole entry, then plain stores: this runs for every entry flushed
       or compacted. */
    buf_reserve(&bb->data, 30 + key.n - shared + val.n);
    uint8_t *p = bb->data.p + bb->data.len;
    p = sst_put_varint(p, shared);
    p = sst_put_varint(p, key.n - shared);
    p = sst_put_varint(p, val.n);
    memcpy(p, key.p + shared, key.n - shared);
    p += key.n - shared;
    if (val.n)
        memcpy(p, val.p, val.n);
    p += val.n;
    bb->data.len = (size_t)(p - bb->data.p);
    bb->since_restart++;
    bb->entries++;
}

static void sst_bb_finish(sst_bb *bb)
{
    buf_reserve(&bb->data, 4 * bb->nrestarts + 4);
    for (size_t i = 0; i < bb->nrestarts; i++)
        buf_put_fixed32(&bb->data, bb->restarts[i]);
    buf_put_fixed32(&bb->data, (uint32_t)bb->nrestarts);
}

static int sst_builder_fail(sst_builder *b, int code, char *err)
{
    b->status = code;
    if (err)
        memcpy(err, b->msg, LSM_ERRLEN);
    return code;
}

#define SST_OUT_BYTES (256u << 10)
/* Writes p to the file. Writeback starts every MiB (env_append_wb): the table's final sync then
   waits for the last stretch only, and the disk works while the builder goes on computing. */
static int sst_builder_write(sst_builder *b, const void *p, size_t n, char *err)
{
    int e = env_append_wb(b->env, b->f, p, n, &b->wb);
    if (e < 0)
        return sst_builder_fail(b, err_errno(b->msg, e, "write", b->path), err);
    return LSM_OK;
}

/* Hands the gathered blocks to the OS. */
static int sst_builder_drain(sst_builder *b, char *err)
{
    if (b->out.len == 0)
        return LSM_OK;
    int rc = sst_builder_write(b, b->out.p, b->out.len, err);
    b->out.len = 0;
    return rc;
}

/* Appends to the table. Blocks gather into 256 KiB writes: one system call per block would cost
   flushes and compactions more than the bytes themselves. A block that large is written from
   where it is, after what was gathered before it. */
static int sst_builder_append(sst_builder *b, const void *p, size_t n, char *err)
{
    int rc;
    if (n >= SST_OUT_BYTES) {
        if ((rc = sst_builder_drain(b, err)) != LSM_OK)
            return rc;
        if ((rc = sst_builder_write(b, p, n, err)) != LSM_OK)
            return rc;
    } else {
        buf_append(&b->out, p, n);
        if (b->out.len >= SST_OUT_BYTES && (rc = sst_builder_drain(b, err)) != LSM_OK)
            return rc;
    }
    b->offset += n;
    return LSM_OK;
}

/* Compresses (when asked and worth it) and appends one block with its trailer in one write. The
   trailer is appended to whichever buffer is written, so the checksum is one pass over contiguous
   bytes, exactly as the reader computes it; raw gets its length back afterwards. */
static int sst_write_block(sst_builder *b, buf *raw, int compression, uint64_t *off,
                           uint64_t *size, char *err)
{
    size_t n = raw->len;
    buf *out = raw;
    uint8_t type = SST_TYPE_NONE;
    size_t worth = n - n / 8;

    if (compression == LSM_COMPRESSION_LZ4 && n <= SST_MAX_BLOCK) {
        int bound = LZ4_compressBound((int)n);
        b->scratch.len = 0;
        buf_reserve(&b->scratch, 10 + (size_t)bound + SST_TRAILER);
        buf_put_varint(&b->scratch, n);
        int c = LZ4_compress_default((const char *)raw->p, (char *)b->scratch.p + b->scratch.len,
                                     (int)n, bound);
        if (c > 0 && b->scratch.len + (size_t)c <= worth) {
            b->scratch.len += (size_t)c;
            out = &b->scratch;
            type = SST_TYPE_LZ4;
        }
    } else if (compression == LSM_COMPRESSION_ZSTD) {
        size_t bound = ZSTD_compressBound(n);
        if (!b->zc)
            b->zc = ZSTD_createCCtx();
        b->scratch.len = 0;
        buf_reserve(&b->scratch, bound + SST_TRAILER);
        size_t c = b->zc ? ZSTD_compressCCtx(b->zc, b->scratch.p, bound, raw->p, n,
                                             b->o.compression_level) : 0;
        if (b->zc && !ZSTD_isError(c) && c <= worth) {
            b->scratch.len = c;
            out = &b->scratch;
            type = SST_TYPE_ZSTD;
        }
    }

    size_t stored = out->len;
    buf_putc(out, type);
    buf_put_fixed32(out, checksum32(out->p, stored + 1));
    *off = b->offset;
    *size = stored;
    int rc = sst_builder_append(b, out->p, out->len, err);
    raw->len = n;
    if (b->scratch.cap > ((size_t)4 << 20))
        buf_free(&b->scratch);
    return rc;
}

static int sst_flush_block(sst_builder *b, char *err)
{
    sst_bb_finish(&b->data);
    int rc = sst_write_block(b, &b->data.data, b->o.compression, &b->pending_off,
                             &b->pending_size, err);
    b->pending = rc == LSM_OK;
    size_t keep = b->o.block_bytes * 4 > ((size_t)1 << 20) ? b->o.block_bytes * 4 : (size_t)1 << 20;
    sst_bb_reset(&b->data, keep);
    return rc;
}

static void sst_put_max_trailer(buf *out)
{
    buf_put_fixed64(out, ikey_pack(LSM_MAX_SEQ, 0xff));
}

/* A short internal key S with a <= S < b (b is NULL for the table's last block: then a <= S). */
static slice sst_separator(buf *out, slice a, const slice *b)
{
    slice ua = ikey_user(a);
    size_t i = 0;
    out->len = 0;
    if (b) {
        slice ub = ikey_user(*b);
        size_t n = ua.n < ub.n ? ua.n : ub.n;
        while (i < n && ua.p[i] == ub.p[i])
            i++;
        if (i == n)
            return a;            /* one user key is a prefix of the other: nothing shorter fits */
        if (ua.p[i] < 0xff && ua.p[i] + 1 < ub.p[i]) {
            buf_append(out, ua.p, i);
            buf_putc(out, (uint8_t)(ua.p[i] + 1));
            sst_put_max_trailer(out);
            slice s = { out->p, out->len };
            return s;
        }
        i++;                     /* S keeps ua[i] (< ub[i]) and grows a later byte instead */
    }
    for (; i < ua.n; i++) {
        if (ua.p[i] != 0xff) {
            buf_append(out, ua.p, i);
            buf_putc(out, (uint8_t)(ua.p[i] + 1));
            sst_put_max_trailer(out);
            slice s = { out->p, out->len };
            return s;
        }
    }
    return a;
}

static void sst_add_index_entry(sst_builder *b, const slice *next_key)
{
    slice last = { b->last_key.p, b->last_key.len };
    slice sep = sst_separator(&b->scratch, last, next_key);
    uint8_t h[20], *e = enc_varint(h, b->pending_off);
    e = enc_varint(e, b->pending_size);
    slice v = { h, (size_t)(e - h) };
    sst_bb_add(&b->index, sep, v, 0);
    b->pending = 0;
}

sst_builder *sst_builder_new(lsm_env *env, lsm_file *f, const char *path, const sst_options *o)
{
    sst_builder *b = xcalloc(1, sizeof(*b));
    b->env = env;
    b->f = f;
    b->path = xmemdup(path, strlen(path) + 1);
    b->o = *o;
    if (b->o.block_bytes == 0)
        b->o.block_bytes = 4096;
    if (b->o.restart_interval < 1)
        b->o.restart_interval = 16;
    if (b->o.bloom_bits_per_key < 0)
        b->o.bloom_bits_per_key = 0;
    sst_bb_init(&b->data, b->o.restart_interval);
    /* Entries of 64 bytes or more restart every half interval, yet a block of entries of 32 or
       more still has at most 8 restart points, the number an index entry keeps inline: a lookup
       then scans half as far. That pays in a large database, where every line a lookup reads
       comes from memory, for a little more disk (figures: README.md, Performance). */
    b->data.early = (b->o.restart_interval + 1) / 2;
    b->data.span = b->o.block_bytes / SST_INLINE_RESTARTS;
    sst_bb_init(&b->index, 1);
    return b;
}

int sst_builder_add(sst_builder *b, slice ikey, slice val, char *err)
{
    if (b->status)
        return sst_builder_fail(b, b->status, err);
    if (b->finished)
        return err_set(err, LSM_INVALID, "%s: add after finish", b->path);
    if (ikey.n < LSM_TRAILER || ikey.n - LSM_TRAILER > LSM_MAX_KEY || val.n > SST_MAX_BLOCK / 2)
        return err_set(err, LSM_INVALID, "%s: bad entry size (key %zu, value %zu bytes)", b->path,
                       ikey.n, val.n);
    slice last = { b->last_key.p, b->last_key.len };
    if (b->entries > 0 && iiter_key_cmp(ikey, last) <= 0)
        return err_set(err, LSM_INVALID, "%s: keys added out of order", b->path);
    /* How many leading bytes ikey shares with the previous key: the data block stores only the
       rest, last_key copies only the rest, and the bloom filter skips a repeated user key. */
    size_t same = b->entries > 0 ? ukey_shared(last.p, last.n, ikey.p, ikey.n) : 0;

    if (b->data.entries > 0 && b->data.data.len + ikey.n + val.n + 64 > SST_MAX_BLOCK) {
        int rc = sst_flush_block(b, err);
        if (rc)
            return rc;
    }
    if (b->pending)
        sst_add_index_entry(b, &ikey);

    if (b->o.bloom_bits_per_key > 0
        && (b->entries == 0 || last.n != ikey.n || same < ikey.n - LSM_TRAILER)) {
        if (b->nhashes == b->caphashes) {
            b->caphashes = b->caphashes ? b->caphashes * 2 : 1024;
            b->hashes = xrealloc(b->hashes, b->caphashes * sizeof(*b->hashes));
        }
        b->hashes[b->nhashes++] = bloom_hash(ikey.p, ikey.n - LSM_TRAILER);
    }

    sst_bb_add(&b->data, ikey, val, same);
    b->last_key.len = same;
    buf_append(&b->last_key, ikey.p + same, ikey.n - same);
    b->entries++;
    if (sst_bb_estimate(&b->data) >= b->o.block_bytes)
        return sst_flush_block(b, err);
    return LSM_OK;
}

uint64_t sst_builder_file_size(const sst_builder *b)
{
    return b->offset + (b->data.entries ? sst_bb_estimate(&b->data) : 0);
}

uint64_t sst_builder_entries(const sst_builder *b)
{
    return b->entries;
}

int sst_builder_finish(sst_builder *b, uint64_t *file_size, char *err)
{
    if (b->status)
        return sst_builder_fail(b, b->status, err);
    if (b->finished)
        return err_set(err, LSM_INVALID, "%s: finished twice", b->path);
    int rc;
    if (b->data.entries > 0 && (rc = sst_flush_block(b, err)))
        return rc;
    if (b->pending)
        sst_add_index_entry(b, NULL);

    uint64_t filter_off = 0, filter_size = 0, index_off, index_size;
    if (b->o.bloom_bits_per_key > 0) {
        buf f = { 0 };
        bloom_build(b->hashes, b->nhashes, b->o.bloom_bits_per_key, &f);
        rc = sst_write_block(b, &f, LSM_COMPRESSION_NONE, &filter_off, &filter_size, err);
        buf_free(&f);
        if (rc)
            return rc;
    }
    sst_bb_finish(&b->index);
    rc = sst_write_block(b, &b->index.data, LSM_COMPRESSION_NONE, &index_off, &index_size, err);
    if (rc)
        return rc;

    uint8_t ft[SST_FOOTER];
    enc_fixed64(ft, filter_off);
    enc_fixed64(ft + 8, filter_size);
    enc_fixed64(ft + 16, index_off);
    enc_fixed64(ft + 24, index_size);
    enc_fixed64(ft + 32, b->entries);
    enc_fixed32(ft + 40, SST_VERSION);
    enc_fixed32(ft + 44, checksum32(ft, 44));
    enc_fixed64(ft + 48, SST_MAGIC);
    if ((rc = sst_builder_append(b, ft, sizeof(ft), err)) || (rc = sst_builder_drain(b, err)))
        return rc;
    b->finished = 1;
    if (file_size)
        *file_size = b->offset;
    return LSM_OK;
}

void sst_builder_free(sst_builder *b)
{
    if (!b)
        return;
    sst_bb_free(&b->data);
    sst_bb_free(&b->index);
    buf_free(&b->last_key);
    buf_free(&b->scratch);
    buf_free(&b->out);
    free(b->hashes);
    ZSTD_freeCCtx(b->zc);
    free(b->path);
    free(b);
}

/* ------------------------------------------------------------------------------------------------
 * Reader
 * --------------------------------------------------------------------------------------------- */

struct sst {
    lsm_env *env;
    lsm_file *f;                  /* open for pread; pread is safe from many threads */
    char *path;                   /* for messages */
    uint64_t file_size;
    uint64_t data_end;            /* file_size - footer: every block lies below it */
    uint64_t entries;             /* from the footer */
    cache *bc;                    /* block cache, or NULL */
    uint64_t cache_id;            /* this table's key namespace in bc */
    sst_block *index;             /* index block, pinned: idx[].key points into it */
    uint64_t index_off;           /* its file offset, for messages */
    struct sst_index_entry *idx;  /* the index decoded and checked at open, in file order */
    size_t nidx;
    uint64_t *iwin;               /* per idx entry but the last: user-key bytes [icp, icp+8)
                                     big-endian, zero padded; a probe compares these and reads the
                                     key only on a tie */
    size_t icp;                   /* length of the user-key prefix they all share */
    uint8_t *ipfx;                /* that prefix, after itop in the iwin allocation */
    const uint64_t *itop;         /* inside the iwin allocation: for each group of SST_GROUP iwin
                                     entries (one cache line), the window of its last entry */
    size_t ngroups;
    uint32_t *ioff;               /* per idx entry, its block's offset, when the table is mapped and
                                   under 4 GiB (else NULL): 16 to a line, so that a lookup can ask
                                   for its data block as soon as it knows which, without first
                                   waiting for that block's 64-byte idx entry */
    sst_block *filter;            /* pinned; NULL when the table has no filter */
    const uint8_t *map;           /* the whole file mapped read-only, or NULL: then blocks are read
                                     with pread into the block cache */
    _Atomic int iters;            /* live iterators, which sst_close must not outlive */
};

/* Values of sst_index_entry.checked (beyond these, 2 + the block's number of restarts). */
enum { SST_UNCHECKED = 0, SST_CHECKING = 1, SST_CHECKED = 2 };

/* One data block as the index names it, in one 64-byte line. A flat array makes each binary-search
   probe one compare, with no varint decoding and no restart-array indirection. For a mapped table
   the line also records that the block's bytes passed their checks (they never change after that)
   and, when short, a copy of its restart array: a seek then goes from this line straight to the
   restart entries, without first waiting for the block's tail. */
typedef struct sst_index_entry {
    const uint8_t *key;           /* separator internal key, inside sst.index */
    uint32_t klen;
    _Atomic uint32_t checked;     /* SST_UNCHECKED; SST_CHECKING while one thread fills restarts;
                                     SST_CHECKED + number of restarts once checked */
    uint64_t off, size;           /* the data block's handle */
    uint32_t restarts[SST_INLINE_RESTARTS]; /* written once, by the thread that moved checked from
                                     SST_UNCHECKED to SST_CHECKING; valid when checked says at
                                     most SST_INLINE_RESTARTS restarts */
} sst_index_entry;
_Static_assert(sizeof(sst_index_entry) == 64, "an index entry is one cache line");

/* A data block in use: pinned in the cache (h), owned because there is no cache, or described by
   mapped when its bytes are read in place from the table's mapping. */
typedef struct sst_blockref {
    const sst_block *b;           /* &mapped, the cached value, or owned; NULL when none */
    cache_handle *h;
    sst_block *owned;
    sst_block mapped;
} sst_blockref;

static int sst_corrupt(const sst *t, char *err, uint64_t off, const char *why)
{
    return err_set(err, LSM_CORRUPT, "%s: offset %" PRIu64 ": %s", t->path, off, why);
}

static int sst_read_error(const sst *t, char *err, int rc, uint64_t off)
{
    if (rc == -ENODATA)
        return sst_corrupt(t, err, off, "file truncated");
    return err_errno(err, rc, "read", t->path);
}

static int sst_handle_ok(const sst *t, uint64_t off, uint64_t size)
{
    return size <= t->data_end && off <= t->data_end - size && t->data_end - size - off >= SST_TRAILER;
}

static sst_heap_block *sst_block_alloc(uint64_t off, size_t n)
{
    sst_heap_block *hb = xmalloc(sizeof(*hb) + n);
    hb->b.off = off;
    hb->b.data = hb->mem;
    hb->b.size = n;
    hb->b.limit = 0;
    hb->b.nrestarts = 0;
    hb->b.restarts = NULL;
    return hb;
}

/* One decompression context per thread, made on first use and freed at thread exit: creating one
   per block costs more than decompressing a 4 KiB block. */
static pthread_key_t sst_dctx_key;
static pthread_once_t sst_dctx_once = PTHREAD_ONCE_INIT;

static void sst_dctx_free(void *p)
{
    ZSTD_freeDCtx(p);
}

static void sst_dctx_init(void)
{
    if (pthread_key_create(&sst_dctx_key, sst_dctx_free) != 0)
        abort();
}

static ZSTD_DCtx *sst_dctx(void)
{
    pthread_once(&sst_dctx_once, sst_dctx_init);
    ZSTD_DCtx *d = pthread_getspecific(sst_dctx_key);
    if (!d && (d = ZSTD_createDCtx()) && pthread_setspecific(sst_dctx_key, d) != 0) {
        ZSTD_freeDCtx(d);
        d = NULL;
    }
    return d;
}

/* Verifies the stored block src (n bytes + trailer) and returns its uncompressed contents in *out,
   copying or decompressing into fresh memory unless keep is given: then an uncompressed block is
   handed back as keep itself (src must be keep's memory). */
static int sst_decode_block(const sst *t, uint64_t off, uint64_t n, const uint8_t *src,
                            sst_heap_block *keep, sst_heap_block **out, char *err)
{
    *out = NULL;
    if (dec_fixed32(src + n + 1) != checksum32(src, (size_t)n + 1))
        return sst_corrupt(t, err, off, "block checksum mismatch");
    sst_heap_block *b;
    switch (src[n]) {
    case SST_TYPE_NONE:
        if (keep) {
            b = keep;
        } else {
            b = sst_block_alloc(off, (size_t)n);
            memcpy(b->mem, src, (size_t)n);
        }
        b->b.size = (size_t)n;
        break;
    case SST_TYPE_LZ4: {
        uint64_t ulen;
        const uint8_t *p = dec_varint(src, src + n, &ulen);
        if (!p || ulen > SST_MAX_BLOCK)
            return sst_corrupt(t, err, off, "bad LZ4 block length");
        b = sst_block_alloc(off, (size_t)ulen);
        int got = LZ4_decompress_safe((const char *)p, (char *)b->mem, (int)(src + n - p), (int)ulen);
        if (got < 0 || (uint64_t)got != ulen) {
            free(b);
            return sst_corrupt(t, err, off, "LZ4 block does not decompress");
        }
        break;
    }
    case SST_TYPE_ZSTD: {
        unsigned long long ulen = ZSTD_getFrameContentSize(src, (size_t)n);
        if (ulen == ZSTD_CONTENTSIZE_UNKNOWN || ulen == ZSTD_CONTENTSIZE_ERROR || ulen > SST_MAX_BLOCK)
            return sst_corrupt(t, err, off, "bad Zstandard block length");
        ZSTD_DCtx *d = sst_dctx();
        if (!d)
            return err_set(err, LSM_NOMEM, "%s: no memory for a Zstandard context", t->path);
        b = sst_block_alloc(off, (size_t)ulen);
        size_t got = ZSTD_decompressDCtx(d, b->mem, (size_t)ulen, src, (size_t)n);
        if (ZSTD_isError(got) || got != ulen) {
            free(b);
            return sst_corrupt(t, err, off, "Zstandard block does not decompress");
        }
        break;
    }
    default:
        return sst_corrupt(t, err, off, "unknown compression type");
    }
    *out = b;
    return LSM_OK;
}

/* Reads, verifies and uncompresses the block stored at off (n bytes + trailer) into memory of its
   own (freed with free()). With structured, also checks it as an entries-and-restarts block. */
static int sst_read_block(const sst *t, uint64_t off, uint64_t n, int structured, sst_block **out,
                          char *err)
{
    *out = NULL;
    if (!sst_handle_ok(t, off, n))
        return sst_corrupt(t, err, off, "block handle out of range");
    sst_heap_block *raw = NULL, *b;
    const uint8_t *src;
    int rc;
    if (t->map) {
        src = t->map + off;
    } else {
        raw = sst_block_alloc(off, (size_t)n + SST_TRAILER);
        if ((rc = env_pread_all(t->env, t->f, raw->mem, (size_t)n + SST_TRAILER, off)) < 0) {
            free(raw);
            return sst_read_error(t, err, rc, off);
        }
        src = raw->mem;
    }
    rc = sst_decode_block(t, off, n, src, raw, &b, err);
    if (b != raw)
        free(raw);
    if (rc)
        return rc;
    if (structured && sst_block_layout(&b->b) < 0) {
        free(b);
        return sst_corrupt(t, err, off, "malformed block");
    }
    *out = &b->b;
    return LSM_OK;
}

static void sst_block_deleter(uint64_t id, uint64_t off, void *value)
{
    (void)id;
    (void)off;
    free(value);
}

/* Serves data block bi of a mapped table in place when it is stored uncompressed: checked in full
   the first time, then trusted (a mapping of an immutable file does not change). Returns 1 when
   *ref is set up, 0 when the block must go through the cache (compressed), or an error. */
static int sst_map_block(const sst *t, size_t bi, sst_blockref *ref, char *err)
{
    sst_index_entry *ie = &t->idx[bi];
    sst_block *b = &ref->mapped;
    b->off = ie->off;
    b->data = t->map + ie->off;
    b->size = (size_t)ie->size;
    b->restarts = NULL;
    uint32_t c = atomic_load_explicit(&ie->checked, memory_order_acquire);
    if (c >= SST_CHECKED) {
        b->nrestarts = c - SST_CHECKED;
        b->limit = (uint32_t)(b->size - 4 - 4 * (size_t)b->nrestarts);
        if (b->nrestarts <= SST_INLINE_RESTARTS)
            b->restarts = ie->restarts;
    } else {
        /* Threads may check the same block at once; only the one that claims the entry writes. */
        if (b->data[b->size] != SST_TYPE_NONE)
            return 0;
        if (dec_fixed32(b->data + b->size + 1) != checksum32(b->data, b->size + 1))
            return sst_corrupt(t, err, ie->off, "block checksum mismatch");
        if (sst_block_layout(b) < 0)
            return sst_corrupt(t, err, ie->off, "malformed block");
        uint32_t expect = SST_UNCHECKED;
        if (atomic_compare_exchange_strong_explicit(&ie->checked, &expect, SST_CHECKING,
                                                    memory_order_relaxed, memory_order_relaxed)) {
            for (uint32_t i = 0; i < b->nrestarts && i < SST_INLINE_RESTARTS; i++)
                ie->restarts[i] = sst_restart(b, i);
            atomic_store_explicit(&ie->checked, SST_CHECKED + b->nrestarts, memory_order_release);
        }
    }
    ref->b = b;
    return 1;
}

/* Makes data block bi available in *ref: in place from the mapping, from the block cache, or read
   (and cached). Release with sst_put_block. */
static int sst_get_block(const sst *t, size_t bi, sst_blockref *ref, char *err)
{
    uint64_t off = t->idx[bi].off, n = t->idx[bi].size;
    ref->h = NULL;
    ref->owned = NULL;
    ref->b = NULL;
    if (t->map) {
        int rc = sst_map_block(t, bi, ref, err);
        if (rc)
            return rc < 0 ? rc : LSM_OK;
    }
    if (t->bc && (ref->h = cache_lookup(t->bc, t->cache_id, off))) {
        ref->b = cache_value(ref->h);
        return LSM_OK;
    }
    sst_block *b;
    int rc = sst_read_block(t, off, n, 1, &b, err);
    if (rc)
        return rc;
    if (t->bc)
        ref->h = cache_insert(t->bc, t->cache_id, off, b, b->size + sizeof(*b), sst_block_deleter);
    else
        ref->owned = b;
    ref->b = b;
    return LSM_OK;
}

static void sst_put_block(const sst *t, sst_blockref *ref)
{
    if (ref->h)
        cache_release(t->bc, ref->h);
    free(ref->owned);
    ref->h = NULL;
    ref->owned = NULL;
    ref->b = NULL;
}

/* Decodes the index block into t->idx, checking everything a lookup will rely on: keys stored
   whole (the index has restart interval 1) and strictly increasing, handles that decode and lie
   inside the file. After this, the index can be trusted without further checks. */
static void sst_index_windows(sst *t);

/* A cache-line-aligned array of cap index entries holding the n of old (freed). */
static sst_index_entry *sst_index_alloc(sst_index_entry *old, size_t n, size_t cap)
{
    sst_index_entry *a = xaligned64(cap * sizeof(*a));
    if (n)
        memcpy(a, old, n * sizeof(*a));
    free(old);
    return a;
}

static int sst_load_index(sst *t, char *err)
{
    const sst_block *b = t->index;
    size_t cap = b->nrestarts ? b->nrestarts : 1;
    t->idx = sst_index_alloc(NULL, 0, cap);
    uint32_t off = 0;
    while (off < b->limit) {
        uint64_t shared, non, vlen, boff, bsize;
        const uint8_t *p, *q;
        if (sst_entry_header(b, off, &shared, &non, &vlen, &p) < 0 || shared != 0
            || non < LSM_TRAILER)
            return sst_corrupt(t, err, t->index_off, "malformed index block");
        if (!(q = dec_varint(p + non, p + non + vlen, &boff))
            || !dec_varint(q, p + non + vlen, &bsize) || !sst_handle_ok(t, boff, bsize))
            return sst_corrupt(t, err, t->index_off, "bad block handle in index");
        slice k = { p, (size_t)non };
        if (t->nidx > 0) {
            slice prev = { t->idx[t->nidx - 1].key, t->idx[t->nidx - 1].klen };
            if (ikey_cmp(prev, k) >= 0)
                return sst_corrupt(t, err, t->index_off, "index keys out of order");
        }
        if (t->nidx == cap) {
            t->idx = sst_index_alloc(t->idx, t->nidx, cap * 2);
            cap *= 2;
        }
        sst_index_entry *ie = &t->idx[t->nidx++];
        ie->key = p;
        ie->klen = (uint32_t)non;
        atomic_init(&ie->checked, SST_UNCHECKED);
        ie->off = boff;
        ie->size = bsize;
        off = (uint32_t)(p + non + vlen - b->data);
    }
    sst_index_windows(t);
    return LSM_OK;
}

/* Windows per cache line: a lookup searches itop, then one line of iwin. */
#define SST_GROUP 8

/* Fills iwin, itop and icp. Index keys are sorted, so the prefix the first and last user keys
   share is shared by all between them: the windows start after it, where the keys differ. The
   last separator is left out because writers shorten it to a successor of the table's last key
   ("1" after "0999"), which would leave no shared prefix at all. */
static void sst_index_windows(sst *t)
{
    size_t m = t->nidx ? t->nidx - 1 : 0;
    size_t ng = (m + SST_GROUP - 1) / SST_GROUP, pad = ng * SST_GROUP;
    t->icp = 0;
    if (m > 0) {
        const sst_index_entry *a = &t->idx[0], *z = &t->idx[m - 1];
        t->icp = ukey_shared(a->key, a->klen - LSM_TRAILER, z->key, z->klen - LSM_TRAILER);
    }
    /* One allocation: the windows, then the group tops, then a copy of the shared prefix, so
       that the first two lookups touch arrive together in sst_prefetch_index's lines. */
    t->iwin = xaligned64((pad + ng) * sizeof(*t->iwin) + (t->icp > 8 ? t->icp : 8));
    uint64_t *top = t->iwin + pad;
    t->itop = top;
    t->ngroups = ng;
    t->ipfx = (uint8_t *)(top + ng);
    if (m == 0)
        return;
    memcpy(t->ipfx, t->idx[0].key, t->icp);
    for (size_t i = 0; i < m; i++)
        t->iwin[i] = ukey_window(t->idx[i].key, t->idx[i].klen - LSM_TRAILER, t->icp);
    for (size_t g = 0; g < ng; g++)
        top[g] = t->iwin[g * SST_GROUP + SST_GROUP - 1 < m ? g * SST_GROUP + SST_GROUP - 1 : m - 1];
    if (t->map && t->file_size <= UINT32_MAX) {
        t->ioff = xaligned64(t->nidx * sizeof(*t->ioff));
        for (size_t i = 0; i < t->nidx; i++)
            t->ioff[i] = (uint32_t)t->idx[i].off;
    }
}

/* The lines an index search reads first: the group tops and the shared prefix after them. */
static const uint8_t *sst_index_lines(const sst *t, size_t *n)
{
    const uint8_t *p = (const uint8_t *)((uintptr_t)t->itop & ~(uintptr_t)63);
    *n = (size_t)(t->ipfx + t->icp - p);
    return p;
}

static void sst_prefetch_lines(const uint8_t *p, size_t n)
{
    for (size_t o = 0; o < n; o += 64)
        __builtin_prefetch(p + o);
}

static void sst_prefetch_index(const sst *t)
{
    size_t n;
    const uint8_t *p = sst_index_lines(t, &n);
    sst_prefetch_lines(p, n);
}

void sst_prefetch_where(const sst *t, const uint8_t **filter, size_t *flen, const uint8_t **itop,
                        size_t *ilen)
{
    *filter = t->filter ? t->filter->data : NULL;
    *flen = t->filter ? t->filter->size : 0;
    *itop = sst_index_lines(t, ilen);
}

void sst_prefetch_at(const uint8_t *filter, size_t flen, uint64_t hash, const uint8_t *itop,
                     size_t ilen)
{
    if (filter)
        bloom_prefetch(filter, flen, hash);
    sst_prefetch_lines(itop, ilen);
}

/* Whether index entry i (< nidx - 1) sorts before target, whose window is tw. */
static inline int sst_index_less(const sst *t, size_t i, uint64_t w, uint64_t tw, slice target)
{
    if (w != tw)
        return w < tw;
    slice k = { t->idx[i].key, t->idx[i].klen };
    return iiter_key_cmp(k, target) < 0;
}

/* The first data block whose separator is >= target: no earlier block holds an entry >= target,
   and this one holds the first unless target falls between its last key and its separator (then
   the next block's first entry is it; sst_get reads on). t->nidx if target is past the table. */
static size_t sst_index_find(const sst *t, slice target)
{
    if (t->nidx == 0)
        return 0;
    size_t m = t->nidx - 1, lo = 0, hi = m;
    size_t un = target.n - LSM_TRAILER, cp = t->icp;
    sst_prefetch_index(t);
    /* A target outside the shared prefix sorts before or after all of idx[0..m). */
    if (m > 0 && cp > 0) {
        int c = memcmp(target.p, t->ipfx, un < cp ? un : cp);
        if (c < 0 || (c == 0 && un < cp))
            hi = 0;
        else if (c > 0)
            lo = m;
    }
    uint64_t tw = ukey_window(target.p, un, cp);
    if (lo < hi) {
        /* Two levels, so that a probe waits for two cache lines where a plain binary search over
           a table's few hundred windows waits for six or seven: the group tops (asked for all at
           once), then the one line of the group that holds the answer. */
        const uint64_t *top = t->itop;
        size_t a = 0, b = t->ngroups;
        while (a < b) {
            size_t mid = a + (b - a) / 2;
            size_t last = mid * SST_GROUP + SST_GROUP - 1 < m ? mid * SST_GROUP + SST_GROUP - 1 : m - 1;
            if (sst_index_less(t, last, top[mid], tw, target))
                a = mid + 1;
            else
                b = mid;
        }
        lo = a * SST_GROUP < m ? a * SST_GROUP : m;
        hi = lo + SST_GROUP < m ? lo + SST_GROUP : m;
        /* The answer is one of the group's blocks (or the one after it): ask for their offsets
           (or, unmapped, their 64-byte entries) while the group's windows are searched. */
        if (t->ioff) {
            __builtin_prefetch(&t->ioff[lo]);
            __builtin_prefetch(&t->ioff[hi]);
        } else {
            for (size_t i = lo; i <= hi; i++)
                __builtin_prefetch(&t->idx[i]);
        }
    }
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (sst_index_less(t, mid, t->iwin[mid], tw, target))
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == m) {
        slice k = { t->idx[m].key, t->idx[m].klen };
        if (ikey_cmp(k, target) < 0)
            lo = t->nidx;
    }
    /* The block's entry and its first line (with the page walk to reach it) now travel together. */
    if (t->ioff && lo < t->nidx) {
        __builtin_prefetch(&t->idx[lo]);
        __builtin_prefetch(t->map + t->ioff[lo]);
    }
    return lo;
}

int sst_open(lsm_env *env, const char *path, uint64_t file_size, cache *block_cache, sst **out,
             char *err)
{
    *out = NULL;
    if (file_size < SST_FOOTER)
        return err_set(err, LSM_CORRUPT, "%s: offset 0: file too short for a table (%" PRIu64
                       " bytes)", path, file_size);
    lsm_file *f;
    int rc = env->open(env, path, LSM_O_READ, &f);
    if (rc < 0)
        return err_errno(err, rc, "open", path);

    sst *t = xcalloc(1, sizeof(*t));
    t->env = env;
    t->f = f;
    t->path = xmemdup(path, strlen(path) + 1);
    t->file_size = file_size;
    t->data_end = file_size - SST_FOOTER;
    t->bc = block_cache;
    atomic_init(&t->iters, 0);

    /* Map the file when the env can, so that blocks are read in place instead of copied by pread
       into the cache. Only a file at least as long as promised is mapped: touching a page past
       the end of a mapped file would raise SIGBUS, where pread reports a clean truncation. */
    uint64_t actual;
    if (env->mmap && env->size(env, f, &actual) == 0 && actual >= file_size
        && env->mmap(env, f, file_size, (const void **)&t->map) != 0)
        t->map = NULL;

    uint8_t ft[SST_FOOTER];
    uint64_t foff = t->data_end;
    if ((rc = env_pread_all(env, f, ft, sizeof(ft), foff)) < 0) {
        rc = sst_read_error(t, err, rc, foff);
        goto fail;
    }
    if (dec_fixed64(ft + 48) != SST_MAGIC) {
        rc = sst_corrupt(t, err, foff + 48, "bad magic number (not a table)");
        goto fail;
    }
    if (dec_fixed32(ft + 44) != checksum32(ft, 44)) {
        rc = sst_corrupt(t, err, foff, "footer checksum mismatch");
        goto fail;
    }
    if (dec_fixed32(ft + 40) != SST_VERSION) {
        rc = sst_corrupt(t, err, foff + 40, "unsupported table format version");
        goto fail;
    }
    uint64_t filter_off = dec_fixed64(ft), filter_size = dec_fixed64(ft + 8);
    uint64_t index_off = dec_fixed64(ft + 16), index_size = dec_fixed64(ft + 24);
    t->entries = dec_fixed64(ft + 32);

    t->index_off = index_off;
    if ((rc = sst_read_block(t, index_off, index_size, 1, &t->index, err))
        || (rc = sst_load_index(t, err)))
        goto fail;
    if ((filter_off || filter_size)
        && (rc = sst_read_block(t, filter_off, filter_size, 0, &t->filter, err)))
        goto fail;
    if (block_cache)
        t->cache_id = cache_new_id(block_cache);
    *out = t;
    return LSM_OK;

fail:
    free(t->idx);
    free(t->iwin);
    free(t->ioff);
    free(t->index);
    if (t->map)
        env->munmap(env, t->map, file_size);
    env->close(env, f);
    free(t->path);
    free(t);
    return rc;
}

void sst_close(sst *t)
{
    if (!t)
        return;
    assert(atomic_load(&t->iters) == 0);
    /* The cache id dies with this handle, so its blocks can never be hit again: free them now. */
    if (t->bc)
        for (size_t i = 0; i < t->nidx; i++)
            cache_erase(t->bc, t->cache_id, t->idx[i].off);
    if (t->map)
        t->env->munmap(t->env, t->map, t->file_size);
    t->env->close(t->env, t->f);
    free(t->idx);
    free(t->iwin);
    free(t->ioff);
    free(t->index);
    free(t->filter);
    free(t->path);
    free(t);
}

int sst_may_contain(sst *t, const void *ukey, size_t uklen)
{
    return !t->filter || sst_may_contain_hash(t, sst_key_hash(ukey, uklen));
}

uint64_t sst_key_hash(const void *ukey, size_t uklen)
{
    return bloom_hash(ukey, uklen);
}

int sst_may_contain_hash(sst *t, uint64_t hash)
{
    return !t->filter || bloom_may_contain(t->filter->data, t->filter->size, hash);
}

int sst_get(sst *t, const void *ukey, size_t uklen, uint64_t snap, int *found, int *type,
            value_range *r, void **val, size_t *vlen, char *err)
{
    *found = 0;
    uint8_t stack[256];
    uint8_t *tk = uklen + LSM_TRAILER <= sizeof(stack) ? stack : xmalloc(uklen + LSM_TRAILER);
    memcpy(tk, ukey, uklen);
    enc_fixed64(tk + uklen, ikey_pack(snap < LSM_MAX_SEQ ? snap : LSM_MAX_SEQ, 0xff));
    slice target = { tk, uklen + LSM_TRAILER };

    sst_cursor dc;
    sst_cursor_init(&dc);
    int rc = LSM_OK;
    /* Normally the first block tried holds the answer or proves there is none; the loop only
       continues when target falls after a block's last entry but not after its separator. */
    for (size_t i = sst_index_find(t, target); i < t->nidx; i++) {
        const sst_index_entry *ie = &t->idx[i];
        sst_blockref ref;
        if ((rc = sst_get_block(t, i, &ref, err)))
            break;
        sst_cursor_set(&dc, ref.b);
        sst_cursor_seek(&dc, target);
        if (dc.corrupt) {
            rc = sst_corrupt(t, err, ie->off, "malformed block");
        } else if (dc.valid) {
            slice k = sst_cursor_key(&dc);
            if (ukey_cmp(k.p, k.n - LSM_TRAILER, ukey, uklen) == 0) {
                int ty = ikey_type(k);
                if (ty != LSM_TYPE_VALUE && ty != LSM_TYPE_DELETE && ty != LSM_TYPE_BLOB &&
                    ty != LSM_TYPE_EXTENTS) {
                    rc = sst_corrupt(t, err, ie->off, "unknown entry type");
                } else if (ty != LSM_TYPE_DELETE) {
                    if (value_take(r, dc.val, ty, val, vlen) != 0)
                        rc = err_set(err, LSM_NOMEM, "%s: no memory for a %zu-byte value",
                                     t->path, dc.val.n);
                }
                if (rc == LSM_OK) {
                    *found = 1;
                    *type = ty;
                }
            }
        }
        sst_put_block(t, &ref);
        if (rc || dc.valid)
            break;
    }
    sst_cursor_done(&dc);
    if (tk != stack)
        free(tk);
    return rc;
}

uint64_t sst_approximate_offset(const sst *t, slice ikey)
{
    size_t i = sst_index_find(t, ikey);
    return i < t->nidx ? t->idx[i].off : t->file_size;
}

uint64_t sst_entries(const sst *t)
{
    return t->entries;
}

uint64_t sst_file_size(const sst *t)
{
    return t->file_size;
}

/* ------------------------------------------------------------------------------------------------
 * Two-level iterator: position in the index -> cursor in that data block
 * --------------------------------------------------------------------------------------------- */

typedef struct sst_iter {
    iiter base;
    sst *t;
    size_t bi;                    /* index of the current data block in t->idx */
    sst_cursor data;              /* over ref.b when ref.b is set */
    sst_blockref ref;             /* the current data block, pinned */
    int code;                     /* sticky first error */
    char msg[LSM_ERRLEN];         /* its message */
} sst_iter;

static void sst_iter_fail(sst_iter *it, int code)
{
    it->code = code;
    it->data.valid = 0;
}

/* Makes block bi the current data block (cursor unpositioned), or ends the iteration if bi is
   past the last block. */
static int sst_iter_load(sst_iter *it, size_t bi)
{
    it->bi = bi;
    it->data.valid = 0;
    if (bi >= it->t->nidx) {
        sst_put_block(it->t, &it->ref);
        return -1;
    }
    const sst_index_entry *ie = &it->t->idx[bi];
    if (!it->ref.b || it->ref.b->off != ie->off) {
        sst_put_block(it->t, &it->ref);
        int rc = sst_get_block(it->t, bi, &it->ref, it->msg);
        if (rc) {
            sst_iter_fail(it, rc);
            return -1;
        }
    }
    sst_cursor_set(&it->data, it->ref.b);
    return 0;
}

/* After the data cursor ran off its block, moves to the first entry of the next non-empty one. */
static void sst_iter_skip_forward(sst_iter *it)
{
    while (!it->data.valid && !it->code) {
        if (it->data.corrupt) {
            sst_iter_fail(it, sst_corrupt(it->t, it->msg, it->ref.b->off, "malformed block"));
            return;
        }
        if (sst_iter_load(it, it->bi + 1) < 0)
            return;
        sst_cursor_seek_first(&it->data);
    }
}

static void sst_iter_seek(iiter *base, slice ikey)
{
    sst_iter *it = (sst_iter *)base;
    if (it->code || sst_iter_load(it, sst_index_find(it->t, ikey)) < 0)
        return;
    sst_cursor_seek(&it->data, ikey);
    sst_iter_skip_forward(it);
}

static void sst_iter_seek_first(iiter *base)
{
    sst_iter *it = (sst_iter *)base;
    if (it->code || sst_iter_load(it, 0) < 0)
        return;
    sst_cursor_seek_first(&it->data);
    sst_iter_skip_forward(it);
}

static int sst_iter_valid(const iiter *base)
{
    const sst_iter *it = (const sst_iter *)base;
    return it->data.valid && !it->code;
}

static void sst_iter_next(iiter *base)
{
    sst_iter *it = (sst_iter *)base;
    assert(sst_iter_valid(base));
    sst_cursor_next(&it->data);
    sst_iter_skip_forward(it);
}

static slice sst_iter_key(const iiter *base)
{
    return sst_cursor_key(&((const sst_iter *)base)->data);
}

static slice sst_iter_value(const iiter *base)
{
    return ((const sst_iter *)base)->data.val;
}

static int sst_iter_status(const iiter *base, char *err)
{
    const sst_iter *it = (const sst_iter *)base;
    if (it->code && err)
        memcpy(err, it->msg, LSM_ERRLEN);
    return it->code;
}

static void sst_iter_free(iiter *base)
{
    sst_iter *it = (sst_iter *)base;
    sst_put_block(it->t, &it->ref);
    sst_cursor_done(&it->data);
    atomic_fetch_sub(&it->t->iters, 1);
    free(it);
}

static const iiter_ops sst_iter_ops = {
    .seek = sst_iter_seek,
    .seek_first = sst_iter_seek_first,
    .valid = sst_iter_valid,
    .next = sst_iter_next,
    .key = sst_iter_key,
    .value = sst_iter_value,
    .status = sst_iter_status,
    .free = sst_iter_free,
};

iiter *sst_iter_new(sst *t)
{
    /* Not calloc: level iterators make one per table they enter, often once per seek, and
       zeroing the message buffer would cost more than the rest; msg is written before it is read. */
    sst_iter *it = xmalloc(sizeof(*it));
    it->base.ops = &sst_iter_ops;
    it->t = t;
    it->bi = 0;
    it->ref.b = NULL;
    it->ref.h = NULL;
    it->ref.owned = NULL;
    it->code = LSM_OK;
    it->msg[0] = '\0';
    sst_cursor_init(&it->data);
    atomic_fetch_add(&t->iters, 1);
    return &it->base;
}

int sst_salvage(sst *t, void (*entry)(void *arg, slice ikey, slice val),
                void (*bad)(void *arg, const char *why), void *arg)
{
    sst_iter *it = (sst_iter *)sst_iter_new(t);
    int nbad = 0;
    for (size_t bi = 0; bi < t->nidx; bi++) {
        it->code = LSM_OK;
        if (sst_iter_load(it, bi) < 0) {
            bad(arg, it->msg);
            nbad++;
            continue;
        }
        for (sst_cursor_seek_first(&it->data); it->data.valid; sst_cursor_next(&it->data))
            entry(arg, sst_cursor_key(&it->data), it->data.val);
        if (it->data.corrupt) {
            sst_corrupt(t, it->msg, it->ref.b->off, "malformed block");
            bad(arg, it->msg);
            nbad++;
        }
    }
    sst_iter_free(&it->base);
    return nbad;
}
