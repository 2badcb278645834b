/*
 * util.c — the small helpers every module shares: aborting allocators, growable buffers, varint
 * coding, checksums, key comparison, error formatting and starting background threads. Kept free
 * of any engine state so that every module (and every unit test) can link it alone.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>
#include "lsm_int.h"

static void oom(size_t n)
{
    fprintf(stderr, "liblsm: out of memory allocating %zu bytes\n", n);
    abort();
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

void *xcalloc(size_t n, size_t m)
{
    void *p = calloc(n ? n : 1, m ? m : 1);
    if (!p)
        oom(n * m);
    return p;
}

void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom(n);
    return q;
}

void *xmemdup(const void *p, size_t n)
{
    void *q = xmalloc(n);
    if (n)
        memcpy(q, p, n);
    return q;
}

void *xaligned64(size_t n)
{
    size_t bytes = (n ? n + 63 : 64) / 64 * 64;
    void *p = aligned_alloc(64, bytes);
    if (!p)
        oom(bytes);
    return p;
}

void buf_reserve(buf *b, size_t extra)
{
    if (b->len + extra <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + extra)
        cap *= 2;
    b->p = xrealloc(b->p, cap);
    b->cap = cap;
}

void buf_append(buf *b, const void *p, size_t n)
{
    buf_reserve(b, n);
    if (n)
        memcpy(b->p + b->len, p, n);
    b->len += n;
}

void buf_putc(buf *b, uint8_t c)
{
    buf_reserve(b, 1);
    b->p[b->len++] = c;
}

void buf_put_fixed32(buf *b, uint32_t v)
{
    buf_reserve(b, 4);
    enc_fixed32(b->p + b->len, v);
    b->len += 4;
}

void buf_put_fixed64(buf *b, uint64_t v)
{
    buf_reserve(b, 8);
    enc_fixed64(b->p + b->len, v);
    b->len += 8;
}

void buf_put_varint(buf *b, uint64_t v)
{
    buf_reserve(b, 10);
    b->len = (size_t)(enc_varint(b->p + b->len, v) - b->p);
}

void buf_put_lenslice(buf *b, const void *p, size_t n)
{
    buf_put_varint(b, n);
    buf_append(b, p, n);
}

void buf_free(buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

uint8_t *enc_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

size_t varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

const uint8_t *dec_varint(const uint8_t *p, const uint8_t *limit, uint64_t *v)
{
    uint64_t r = 0;
    for (int shift = 0; shift <= 63 && p < limit; shift += 7) {
        uint64_t byte = *p++;
        r |= (byte & 0x7f) << shift;
        if (!(byte & 0x80)) {
            *v = r;
            return p;
        }
    }
    return NULL;
}

const uint8_t *dec_lenslice(const uint8_t *p, const uint8_t *limit, slice *out)
{
    uint64_t n;
    p = dec_varint(p, limit, &n);
    if (!p || n > (uint64_t)(limit - p))
        return NULL;
    out->p = p;
    out->n = (size_t)n;
    return p + n;
}

uint32_t checksum32(const void *p, size_t n)
{
    return (uint32_t)XXH3_64bits(p, n);
}

uint32_t checksum32_pair(const void *a, size_t an, const void *b, size_t bn)
{
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    XXH3_64bits_update(&st, a, an);
    XXH3_64bits_update(&st, b, bn);
    return (uint32_t)XXH3_64bits_digest(&st);
}

int ukey_cmp(const void *a, size_t an, const void *b, size_t bn)
{
    size_t n = an < bn ? an : bn;
    int c = n ? memcmp(a, b, n) : 0;
    if (c)
        return c;
    return an < bn ? -1 : an > bn ? 1 : 0;
}

int ikey_cmp(slice a, slice b)
{
    int c = ukey_cmp(a.p, a.n - LSM_TRAILER, b.p, b.n - LSM_TRAILER);
    if (c)
        return c;
    uint64_t ta = ikey_trailer(a), tb = ikey_trailer(b);
    return ta > tb ? -1 : ta < tb ? 1 : 0;
}

void ikey_build(buf *b, const void *ukey, size_t n, uint64_t seq, int type)
{
    buf_reserve(b, n + LSM_TRAILER);
    buf_append(b, ukey, n);
    buf_put_fixed64(b, ikey_pack(seq, type));
}

int err_set(char *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, LSM_ERRLEN, fmt, ap);
        va_end(ap);
    }
    return code;
}

int err_errno(char *err, int neg_errno, const char *what, const char *path)
{
    int e = -neg_errno;
    int code = (e == EWOULDBLOCK || e == EAGAIN) ? LSM_BUSY
             : e == ENOMEM                  ? LSM_NOMEM
             : (e == ENOSPC || e == EDQUOT) ? LSM_NOSPACE
             : LSM_IOERR;
    return err_set(err, code, "%s %s: %s", what, path, strerror(e));
}

int value_take(value_range *r, slice v, int type, void **val, size_t *vlen)
{
    if (r && type == LSM_TYPE_VALUE) {
        size_t m = 0;
        if (r->off < v.n)
            m = v.n - r->off < r->n ? (size_t)(v.n - r->off) : r->n;
        if (m)
            memcpy(r->buf, v.p + r->off, m);
        r->copied = m;
        *val = NULL;
        *vlen = v.n;
        return 0;
    }
    void *p = malloc(v.n ? v.n : 1);
    if (!p)
        return -1;
    if (v.n)
        memcpy(p, v.p, v.n);
    *val = p;
    *vlen = v.n;
    return 0;
}

int u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

void file_path(const char *dir, uint64_t number, const char *ext, char *path, size_t n)
{
    snprintf(path, n, "%s/%06" PRIu64 "%s", dir, number, ext);
}

int file_parse_name(const char *name, const char *ext, uint64_t *num)
{
    size_t n = strlen(name), e = strlen(ext);
    if (n <= e || strcmp(name + n - e, ext) != 0)
        return 0;
    uint64_t v = 0;
    for (size_t i = 0; i < n - e; i++) {
        if (name[i] < '0' || name[i] > '9')
            return 0;
        v = v * 10 + (uint64_t)(name[i] - '0');
    }
    *num = v;
    return 1;
}

uint64_t now_micros(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

int thread_start(pthread_t *t, void *(*fn)(void *), void *arg)
{
    sigset_t all, old;
    sigfillset(&all);
    /* Faults stay deliverable, so that a handler (a sanitizer's, say) still reports them. */
    static const int faults[] = { SIGBUS, SIGFPE, SIGILL, SIGSEGV, SIGSYS, SIGTRAP };
    for (size_t i = 0; i < sizeof faults / sizeof *faults; i++)
        sigdelset(&all, faults[i]);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(t, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}
