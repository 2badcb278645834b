/*
 * table_cache.h — open tables by file number, the iterators over one table or a sorted run of
 * tables, and the point lookup through a version's tables (LevelDB's Version::Get →
 * TableCache::Get → Table::InternalGet, in one room).
 */
#ifndef LSM_TABLE_CACHE_H
#define LSM_TABLE_CACHE_H

#include "cache.h"
#include "env.h"
#include "iter.h"
#include "sst.h"
#include "version.h"

typedef struct table_cache {
    lsm_env *env;               /* constant after table_cache_init */
    const char *dir;            /* the database directory (borrowed); constant */
    cache *blocks;              /* the block cache every table reads through (borrowed) */
    cache *tables;              /* open sst by file number; thread-safe itself */
} table_cache;

void table_cache_init(table_cache *tc, lsm_env *env, const char *dir, cache *blocks,
                      size_t max_open);
void table_cache_destroy(table_cache *tc);
/* Table `number` (size bytes), opened on a miss: *t is valid until table_cache_release(*h). */
int  table_cache_open(table_cache *tc, uint64_t number, uint64_t size, sst **t, cache_handle **h,
                      char *err);
void table_cache_release(table_cache *tc, cache_handle *h);   /* accepts NULL */
/* Closes table `number` if it is open: its file is about to be deleted. */
void table_cache_evict(table_cache *tc, uint64_t number);

/* Iterator over table f (an error iterator if it cannot be opened). */
iiter *table_cache_iter(table_cache *tc, const file_meta *f);
/* Iterator over a sorted, disjoint run of tables (part of a level), opening one table at a time;
   the caller keeps the metas pinned (through a version). */
iiter *table_cache_run_iter(table_cache *tc, file_meta *const *files, int n);

/* What a lookup through the tables found out besides the value. */
typedef struct table_probe_stats {
    file_meta *first;           /* the first table probed past its filter (NULL: none) */
    int first_level;            /* its level */
    int probes;                 /* tables probed past their filters */
} table_probe_stats;

/* Looks user key `key` up at sequence snap in v's tables, newest first: *found is set when a
   version of it was found (*type LSM_TYPE_VALUE, _BLOB or _DELETE; unless a delete, the stored
   value taken as value_take says with r). *ps says which tables were probed in vain, for seek
   charging. */
int  table_cache_get(table_cache *tc, const version *v, const void *key, size_t klen, uint64_t snap,
                     int *found, int *type, value_range *r, void **val, size_t *vlen,
                     table_probe_stats *ps, char *err);

/* Bytes of v's tables holding user keys in [lo, hi) (a slice with p NULL: unbounded), as LevelDB's
   GetApproximateSizes: a table inside counts whole, one the range cuts from the block where the
   range starts in it to the block where it ends (its index, opened through the cache). */
int  table_cache_approximate_size(table_cache *tc, const version *v, slice lo, slice hi,
                                  uint64_t *bytes, char *err);

#endif /* LSM_TABLE_CACHE_H */
