/*
 * iter.c — the k-way merging iterator over internal iterators, and the empty/error iterator.
 *
 * The merge keeps its valid children in a binary min-heap ordered by internal key; each heap slot
 * caches its child's current key so that ordering the heap never goes through the children's
 * function pointers, and moving forward re-seats only the child that moved (one sift-down). A heap
 * rather than a loser tree because reads merge anything from one to hundreds of sources and the heap
 * also shrinks cheaply as sources run dry.
 *
 * Errors: once any child has turned invalid with a failure status, the merge is invalid and status()
 * reports the first failing child (in the order given) with its message. Stopping is deliberate: a
 * merge that carried on past a failed source would silently skip its entries, and a caller walking a
 * directory or compacting tables must never mistake a partial view for the whole one.
 *
 * This module must never return entries out of internal order, never hide a child's error, and never
 * touch a child after freeing it.
 */
#include <stdio.h>
#include <stdlib.h>
#include "iter.h"

typedef struct merge_slot {
    iiter *it;                              /* a child that is valid */
    slice key;                              /* its current key, borrowed until it moves */
} merge_slot;

typedef struct merge_iter {
    iiter base;                             /* ops; first member */
    iiter **kids;                           /* every child, owned, in the caller's order */
    merge_slot *heap;                       /* valid children as a min-heap on key */
    int n;                                  /* number of children */
    int live;                               /* slots in use in heap */
    int failed;                             /* a child reported an error: stay invalid */
    int second;                             /* 1 or 2: the root's smaller child, while slots 1 and
                                               2 stay put; 0 when unknown */
} merge_iter;

static void merge_sift_down(merge_iter *mi, int i)
{
    merge_slot *h = mi->heap;
    merge_slot s = h[i];
    int live = mi->live;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= live)
            break;
        if (c + 1 < live && iiter_key_cmp(h[c + 1].key, h[c].key) < 0)
            c++;
        if (iiter_key_cmp(h[c].key, s.key) >= 0)
            break;
        h[i] = h[c];
        i = c;
    }
    h[i] = s;
}

/* Notes a child that has turned invalid: an error stops the merge, exhaustion just drops it. */
static void merge_check_dead(merge_iter *mi, iiter *it)
{
    if (iiter_status(it, NULL) != LSM_OK)
        mi->failed = 1;
}

/* Rebuilds the heap after every child was repositioned. */
static void merge_rebuild(merge_iter *mi)
{
    mi->live = 0;
    mi->failed = 0;
    for (int i = 0; i < mi->n; i++) {
        iiter *it = mi->kids[i];
        if (iiter_valid(it)) {
            mi->heap[mi->live].it = it;
            mi->heap[mi->live].key = iiter_key(it);
            mi->live++;
        } else {
            merge_check_dead(mi, it);
        }
    }
    for (int i = mi->live / 2 - 1; i >= 0; i--)
        merge_sift_down(mi, i);
    mi->second = 0;
}

static void merge_seek(iiter *it, slice ikey)
{
    merge_iter *mi = (merge_iter *)it;
    for (int i = 0; i < mi->n; i++)
        iiter_seek(mi->kids[i], ikey);
    merge_rebuild(mi);
}

static void merge_seek_first(iiter *it)
{
    merge_iter *mi = (merge_iter *)it;
    for (int i = 0; i < mi->n; i++)
        iiter_seek_first(mi->kids[i]);
    merge_rebuild(mi);
}

static int merge_valid(const iiter *it)
{
    const merge_iter *mi = (const merge_iter *)it;
    return mi->live > 0 && !mi->failed;
}

static void merge_next(iiter *it)
{
    merge_iter *mi = (merge_iter *)it;
    merge_slot *h = mi->heap;
    iiter *top = h[0].it;
    iiter_next(top);
    if (iiter_valid(top)) {
        h[0].key = iiter_key(top);
        /* In long runs from one child (a scan over a big level) the top stays on top: one compare
           against the remembered smaller child of the root settles it, where sifting takes two. */
        if (mi->live > 1) {
            int c = mi->second;
            if (!c)
                c = mi->live > 2 && iiter_key_cmp(h[2].key, h[1].key) < 0 ? 2 : 1;
            if (iiter_key_cmp(h[c].key, h[0].key) > 0) {
                mi->second = c;
                return;
            }
        }
    } else {
        merge_check_dead(mi, top);
        h[0] = h[--mi->live];
    }
    mi->second = 0;
    if (mi->live > 1)
        merge_sift_down(mi, 0);
}

static slice merge_key(const iiter *it)
{
    return ((const merge_iter *)it)->heap[0].key;
}

static slice merge_value(const iiter *it)
{
    return iiter_value(((const merge_iter *)it)->heap[0].it);
}

static int merge_status(const iiter *it, char *err)
{
    const merge_iter *mi = (const merge_iter *)it;
    for (int i = 0; i < mi->n; i++) {
        int rc = iiter_status(mi->kids[i], err);
        if (rc != LSM_OK)
            return rc;
    }
    return LSM_OK;
}

static void merge_free(iiter *it)
{
    merge_iter *mi = (merge_iter *)it;
    for (int i = 0; i < mi->n; i++)
        iiter_free(mi->kids[i]);
    free(mi->kids);
    free(mi->heap);
    free(mi);
}

static const iiter_ops merge_ops = {
    .seek = merge_seek,
    .seek_first = merge_seek_first,
    .valid = merge_valid,
    .next = merge_next,
    .key = merge_key,
    .value = merge_value,
    .status = merge_status,
    .free = merge_free,
};

iiter *merge_iter_new(iiter **children, int n)
{
    if (n <= 0)
        return error_iter_new(LSM_OK, NULL);
    if (n == 1)
        return children[0];
    merge_iter *mi = xmalloc(sizeof(*mi));
    mi->base.ops = &merge_ops;
    mi->kids = xmemdup(children, sizeof(iiter *) * (size_t)n);
    mi->heap = xmalloc(sizeof(merge_slot) * (size_t)n);
    mi->n = n;
    mi->live = 0;
    mi->failed = 0;
    mi->second = 0;
    return &mi->base;
}

typedef struct error_iter {
    iiter base;                             /* ops; first member */
    int code;                               /* what status() returns */
    char msg[LSM_ERRLEN];                   /* its message */
} error_iter;

static void error_iter_seek(iiter *it, slice ikey)
{
    (void)it;
    (void)ikey;
}

static void error_iter_seek_first(iiter *it)
{
    (void)it;
}

static int error_iter_valid(const iiter *it)
{
    (void)it;
    return 0;
}

/* next/key/value require a valid iterator, which this never is; reaching them is a caller bug. */
static void error_iter_next(iiter *it)
{
    (void)it;
    abort();
}

static slice error_iter_slice(const iiter *it)
{
    (void)it;
    abort();
}

static int error_iter_status(const iiter *it, char *err)
{
    const error_iter *ei = (const error_iter *)it;
    if (ei->code != LSM_OK && err)
        memcpy(err, ei->msg, LSM_ERRLEN);
    return ei->code;
}

static void error_iter_free(iiter *it)
{
    free(it);
}

static const iiter_ops error_iter_ops = {
    .seek = error_iter_seek,
    .seek_first = error_iter_seek_first,
    .valid = error_iter_valid,
    .next = error_iter_next,
    .key = error_iter_slice,
    .value = error_iter_slice,
    .status = error_iter_status,
    .free = error_iter_free,
};

iiter *error_iter_new(int code, const char *msg)
{
    error_iter *ei = xcalloc(1, sizeof(*ei));
    ei->base.ops = &error_iter_ops;
    ei->code = code;
    if (msg)
        snprintf(ei->msg, sizeof(ei->msg), "%s", msg);
    return &ei->base;
}
