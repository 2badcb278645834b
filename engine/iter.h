/*
 * iter.h — the internal iterator interface every entry source implements (memtable, table, level,
 * merge), and the k-way merging iterator over many of them.
 *
 * An internal iterator walks internal keys (user key + trailer, see lsm_int.h) in internal order.
 * Keys and values it returns are borrowed until it moves or is freed. A failed source turns
 * invalid and reports the failure through status().
 */
#ifndef LSM_ITER_H
#define LSM_ITER_H

#include "lsm_int.h"

typedef struct iiter iiter;

typedef struct iiter_ops {
    void  (*seek)(iiter *it, slice ikey);      /* first entry >= ikey in internal order */
    void  (*seek_first)(iiter *it);
    int   (*valid)(const iiter *it);
    void  (*next)(iiter *it);                  /* requires valid */
    slice (*key)(const iiter *it);             /* internal key; requires valid */
    slice (*value)(const iiter *it);           /* requires valid */
    int   (*status)(const iiter *it, char *err); /* LSM_OK, or a code with its message in err */
    void  (*free)(iiter *it);
} iiter_ops;

struct iiter {
    const iiter_ops *ops;                      /* first member of every implementation */
};

/* ikey_cmp, inlined and comparing 8 bytes at a time: merges and block seeks compare on every step,
   with keys short enough that a call to memcmp costs more than the comparison itself. */
static inline int iiter_key_cmp(slice a, slice b)
{
    size_t an = a.n - LSM_TRAILER, bn = b.n - LSM_TRAILER, n = an < bn ? an : bn, i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t x, y;
        memcpy(&x, a.p + i, 8);
        memcpy(&y, b.p + i, 8);
        if (x != y) {
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            x = __builtin_bswap64(x);
            y = __builtin_bswap64(y);
#endif
            return x < y ? -1 : 1;
        }
    }
    for (; i < n; i++)
        if (a.p[i] != b.p[i])
            return a.p[i] < b.p[i] ? -1 : 1;
    if (an != bn)
        return an < bn ? -1 : 1;
    uint64_t ta = dec_fixed64(a.p + an), tb = dec_fixed64(b.p + bn);
    return ta > tb ? -1 : ta < tb ? 1 : 0;
}

static inline void  iiter_seek(iiter *it, slice k) { it->ops->seek(it, k); }
static inline void  iiter_seek_first(iiter *it) { it->ops->seek_first(it); }
static inline int   iiter_valid(const iiter *it) { return it->ops->valid(it); }
static inline void  iiter_next(iiter *it) { it->ops->next(it); }
static inline slice iiter_key(const iiter *it) { return it->ops->key(it); }
static inline slice iiter_value(const iiter *it) { return it->ops->value(it); }
static inline int   iiter_status(const iiter *it, char *err) { return it->ops->status(it, err); }
static inline void  iiter_free(iiter *it) { if (it) it->ops->free(it); }

/* Merges n children (taking ownership of them and of the array's contents, not the array) into one
   iterator in internal order. Equal internal keys do not occur across children. */
iiter *merge_iter_new(iiter **children, int n);

/* An iterator with no entries that reports code/msg from status() (code LSM_OK: just empty). */
iiter *error_iter_new(int code, const char *msg);

#endif /* LSM_ITER_H */
