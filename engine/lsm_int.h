/*
 * lsm_int.h — private types and helpers shared by every engine module: byte slices, growable
 * buffers, little-endian and varint coding, internal keys, checksums and error messages.
 *
 * Internal keys: every stored entry is keyed by the user key followed by an 8-byte little-endian
 * trailer (sequence << 8 | type). They sort by user key ascending (bytewise, then length), then by
 * trailer descending, so the newest version of a key comes first. Nothing here allocates except
 * buf_* (which aborts on out of memory, like every internal allocation: see xmalloc).
 */
#ifndef LSM_INT_H
#define LSM_INT_H

#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "lsm.h"

#define LSM_ERRLEN 512              /* size of every error-message buffer passed as `char *err` */

typedef struct slice {
    const uint8_t *p;
    size_t n;
} slice;

/* Internal entry types, stored in the low byte of the trailer. Numbers are on disk: never reuse. */
enum {
    LSM_TYPE_DELETE = 0,
    LSM_TYPE_VALUE  = 1,
    LSM_TYPE_BLOB   = 2,            /* value is a blob reference (file, offset, length) */
    LSM_TYPE_EXTENTS = 3            /* value is an extent map (extent.h; lsm-format.5, EXTENT MAPS) */
};

#define LSM_MAX_SEQ ((UINT64_C(1) << 56) - 1)
#define LSM_TRAILER 8

/* ---- allocation (aborts on failure) ---- */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t m);
void *xrealloc(void *p, size_t n);
void *xmemdup(const void *p, size_t n);
/* n bytes (rounded up to whole 64-byte lines) starting on a cache line; free() releases them. */
void *xaligned64(size_t n);

/* ---- growable buffer ---- */
typedef struct buf {
    uint8_t *p;
    size_t len, cap;
} buf;

void buf_reserve(buf *b, size_t extra);
void buf_append(buf *b, const void *p, size_t n);
void buf_putc(buf *b, uint8_t c);
void buf_put_fixed32(buf *b, uint32_t v);
void buf_put_fixed64(buf *b, uint64_t v);
void buf_put_varint(buf *b, uint64_t v);
void buf_put_lenslice(buf *b, const void *p, size_t n);    /* varint length, then bytes */
void buf_free(buf *b);                                     /* frees and zeroes; accepts empty */

/* xorshift64 (Marsaglia): advances *state (never 0) and returns it. Not for anything secret. */
static inline uint64_t xorshift64(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *state = x;
}

/* ---- fixed-width little-endian and varint coding ---- */
static inline void enc_fixed32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static inline uint32_t dec_fixed32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline void enc_fixed64(uint8_t *p, uint64_t v)
{
    enc_fixed32(p, (uint32_t)v);
    enc_fixed32(p + 4, (uint32_t)(v >> 32));
}
static inline uint64_t dec_fixed64(const uint8_t *p)
{
    return (uint64_t)dec_fixed32(p) | ((uint64_t)dec_fixed32(p + 4) << 32);
}
uint8_t *enc_varint(uint8_t *p, uint64_t v);                /* writes 1..10 bytes, returns end */
size_t varint_len(uint64_t v);
/* Decodes a varint from [p, limit); returns the byte after it, or NULL if malformed/truncated. */
const uint8_t *dec_varint(const uint8_t *p, const uint8_t *limit, uint64_t *v);
/* Decodes a varint length then that many bytes; NULL if it runs past limit. */
const uint8_t *dec_lenslice(const uint8_t *p, const uint8_t *limit, slice *out);

/* ---- checksums (xxHash XXH3, low 32 bits) ---- */
uint32_t checksum32(const void *p, size_t n);
uint32_t checksum32_pair(const void *a, size_t an, const void *b, size_t bn); /* over a then b */

/* ---- keys ---- */
int ukey_cmp(const void *a, size_t an, const void *b, size_t bn);     /* memcmp, then length */
/* Bytes at the start of a and b that are equal, eight per step: what a table writer leaves out of
   a key that repeats its predecessor's start, and, for the first and last of sorted keys, the
   prefix every key between them shares, after which their windows are taken. */
static inline size_t ukey_shared(const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
    size_t n = an < bn ? an : bn, i = 0;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    for (; i + 8 <= n; i += 8) {
        uint64_t x, y;
        memcpy(&x, a + i, 8);
        memcpy(&y, b + i, 8);
        if (x != y)
            return i + (size_t)(__builtin_ctzll(x ^ y) >> 3);
    }
#endif
    while (i < n && a[i] == b[i])
        i++;
    return i;
}
/* The 8 bytes of user key u from byte from on, as a big-endian integer, zero padded. Windows
   taken at the same offset of two keys with equal bytes before it order like the keys whenever
   they differ (a zero pad sorts like the shorter key), so only ties need the keys themselves. */
static inline uint64_t ukey_window(const uint8_t *u, size_t n, size_t from)
{
    uint64_t w = 0;
    if (from + 8 <= n) {
        for (size_t i = 0; i < 8; i++)     /* compilers turn this into one load and a bswap */
            w = w << 8 | u[from + i];
        return w;
    }
    for (size_t i = 0; i < 8; i++)
        w = w << 8 | (from + i < n ? u[from + i] : 0);
    return w;
}

static inline uint64_t ikey_pack(uint64_t seq, int type) { return (seq << 8) | (uint64_t)type; }
static inline uint64_t ikey_trailer(slice ik) { return dec_fixed64(ik.p + ik.n - LSM_TRAILER); }
static inline uint64_t ikey_seq(slice ik) { return ikey_trailer(ik) >> 8; }
static inline int ikey_type(slice ik) { return (int)(ikey_trailer(ik) & 0xff); }
static inline slice ikey_user(slice ik) { slice s = { ik.p, ik.n - LSM_TRAILER }; return s; }

/* Internal key order: user key ascending, then trailer descending (newest first). */
int ikey_cmp(slice a, slice b);
/* Appends ukey + trailer(seq, type) to b. */
void ikey_build(buf *b, const void *ukey, size_t n, uint64_t seq, int type);

/* ---- values found by a lookup ---- */
/* Where a lookup puts the value it finds. With no range (NULL) it takes a malloc'd copy of the
   whole stored value. With a range, a plain value gives only its bytes [off, off + n), copied into
   buf (r->copied says how many), so that a small read of a large value never copies the rest; a
   blob reference, being small, is still copied whole (the caller reads the range from the blob). */
typedef struct value_range {
    uint64_t off;               /* first byte wanted */
    void *buf;                  /* where they go: room for n bytes */
    size_t n;                   /* bytes wanted */
    size_t copied;              /* set by value_take: bytes copied (0 at or past the end) */
} value_range;

/* Takes stored value v of entry type `type` as r says: *val and *vlen get the malloc'd copy, or
   (range, plain value) *val NULL and *vlen the value's full length. -1 if a copy could not be
   allocated (nothing changed), else 0. */
int value_take(value_range *r, slice v, int type, void **val, size_t *vlen);

/* ---- errors ---- */
/* Formats a message into err (LSM_ERRLEN bytes; may be NULL) and returns code. */
int err_set(char *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Maps a negative errno from the env to LSM_IOERR (or LSM_BUSY for a held lock), with a message
   "what path: strerror". */
int err_errno(char *err, int neg_errno, const char *what, const char *path);

/* qsort comparator of uint64_t values, ascending. */
int  u64_cmp(const void *a, const void *b);

/* ---- file names ---- */
/* "dir/NNNNNN.ext" for file `number` of a database (ext: ".sst", ".log", ".blob"). */
void file_path(const char *dir, uint64_t number, const char *ext, char *path, size_t n);
/* Parses "NNNNNN.ext"; returns 1 and the number if name has that shape. */
int  file_parse_name(const char *name, const char *ext, uint64_t *num);

/* Monotonic microseconds. */
uint64_t now_micros(void);

/* ---- threads ---- */
/* pthread_create for the engine's background threads: the new thread starts with every signal
   blocked but those a fault raises in the thread itself (SIGSEGV, SIGBUS, ...), so a signal sent
   to the process is always handled by one of the application's threads. Without this, a signal
   the application blocks in order to sigwait for it, or waits for on one thread (libfuse's loop
   sleeps until SIGTERM's handler runs on its thread), could be taken by an engine thread started
   before the application set its mask. Returns pthread_create's result. */
int thread_start(pthread_t *t, void *(*fn)(void *), void *arg);

#endif /* LSM_INT_H */
