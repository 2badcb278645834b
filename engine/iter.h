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
