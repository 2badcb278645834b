/*
 * cache.h — a sharded LRU cache of reference-counted values, bounded by a byte budget ("charge").
 *
 * Used for data blocks (keyed by table cache id and block offset) and for open tables (keyed by file
 * number). An entry stays alive while a handle to it is held, even after eviction or erase; the
 * deleter runs when the entry is both out of the cache and unreferenced. Thread-safe.
 */
#ifndef LSM_CACHE_H
#define LSM_CACHE_H

#include <stddef.h>
#include <stdint.h>

typedef struct cache cache;
typedef struct cache_handle cache_handle;
typedef void (*cache_deleter)(uint64_t id, uint64_t off, void *value);

cache *cache_new(size_t capacity);                 /* capacity 0: nothing is retained */
void   cache_free(cache *c);                       /* every handle must be released; accepts NULL */

/* Pinned handle or NULL. */
cache_handle *cache_lookup(cache *c, uint64_t id, uint64_t off);
/* Inserts (replacing any entry with the same key) and returns a pinned handle to the new entry. */
cache_handle *cache_insert(cache *c, uint64_t id, uint64_t off, void *value, size_t charge,
                           cache_deleter deleter);
void  *cache_value(const cache_handle *h);
void   cache_release(cache *c, cache_handle *h);   /* accepts NULL */
void   cache_erase(cache *c, uint64_t id, uint64_t off);
uint64_t cache_new_id(cache *c);                   /* a fresh id namespace, never 0 */
size_t cache_usage(cache *c);
void   cache_stats(cache *c, uint64_t *hits, uint64_t *misses);

#endif /* LSM_CACHE_H */
