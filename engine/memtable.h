/*
 * memtable.h — the in-memory write buffer: a skiplist of internal keys in an arena.
 *
 * One writer at a time (the engine's write leader) adds entries; any number of readers search or
 * iterate concurrently without locks. Entries are never removed; the whole memtable is freed when its
 * last reference goes.
 */
#ifndef LSM_MEMTABLE_H
#define LSM_MEMTABLE_H

#include "iter.h"

typedef struct memtable memtable;

memtable *memtable_new(void);                 /* refcount 1 */
void      memtable_ref(memtable *m);
void      memtable_unref(memtable *m);        /* frees at 0; accepts NULL */

/* Adds one entry; the caller serialises calls. type is LSM_TYPE_*; val ignored for deletes. */
void   memtable_add(memtable *m, uint64_t seq, int type, const void *key, size_t klen,
                    const void *val, size_t vlen);

/* Finds the newest entry for key with sequence <= snap. Returns 1 and sets *type and *val (borrowed
   from the memtable: valid while the caller holds a reference) if there is one, else 0. */
int    memtable_get(memtable *m, const void *key, size_t klen, uint64_t snap, int *type, slice *val);

/* Blob files named by extent maps in m stay pinned while m lives: the writer records them here
   (the caller serialises calls, as for memtable_add) and the last unref calls fn(arg, nums, n)
   with every number recorded (fn and arg of the first call). */
typedef void (*memtable_unpin_fn)(void *arg, const uint64_t *nums, int n);
void   memtable_pin(memtable *m, const uint64_t *nums, int n, memtable_unpin_fn fn, void *arg);

size_t memtable_usage(const memtable *m);     /* bytes of arena in use (approximate, thread-safe) */
uint64_t memtable_entries(const memtable *m);

/* Iterator over every entry; holds a reference on m until freed. */
iiter *memtable_iter_new(memtable *m);

#endif /* LSM_MEMTABLE_H */
