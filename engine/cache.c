/*
 * cache.c — a sharded LRU cache of reference-counted values, bounded by the sum of their charges.
 *
 * The key space is (id, off): a table's cache id and a block offset for the block cache, a file
 * number for the table cache. Keys are spread over 16 shards by a hash so that readers on different
 * blocks rarely meet on one mutex; each shard is an independent LRU with 1/16 of the capacity, a
 * chained hash table and two lists. Entries the cache holds alone sit on the `lru` list, oldest
 * first, and are the only eviction candidates; entries a handle pins sit on `in_use`, so eviction
 * never walks past pinned entries. An entry owns one reference for being in the cache and one per
 * handle; its deleter runs exactly once, outside any lock, when it is out of the cache and the last
 * handle is released. With capacity 0 nothing stays once released, which disables caching without
 * a second code path.
 *
 * This module must never call a deleter while holding a shard mutex (deleters may take other locks
 * or free large blocks), never evict a pinned entry, and never hand out a handle to an entry that
 * has left the cache.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include "cache.h"
#include "lsm_int.h"

#define CACHE_SHARD_BITS 4
#define CACHE_SHARDS     (1 << CACHE_SHARD_BITS)

struct cache_handle {
    uint64_t id, off;                  /* the key; immutable */
    uint64_t hash;                     /* cache_hash(id, off); immutable */
    void *value;                       /* immutable */
    size_t charge;                     /* immutable */
    cache_deleter deleter;             /* immutable; may be NULL */
    uint32_t refs;                     /* cache's own reference + one per handle; guarded by shard mu */
    int in_cache;                      /* linked in the shard's table; guarded by shard mu */
    struct cache_handle *next_hash;    /* bucket chain; guarded by shard mu */
    struct cache_handle *prev, *next;  /* lru or in_use list; guarded by shard mu */
};

typedef struct cache_shard {
    pthread_mutex_t mu;
    size_t capacity;                   /* immutable after cache_new */
    size_t usage;                      /* charges of entries in the cache; guarded by mu */
    cache_handle **table;              /* buckets; guarded by mu */
    size_t nbuckets;                   /* power of two; guarded by mu */
    size_t count;                      /* entries in the table; guarded by mu */
    cache_handle lru;                  /* sentinel: unpinned entries, lru.next is oldest; guarded by mu */
    cache_handle in_use;               /* sentinel: pinned entries in the cache; guarded by mu */
    uint64_t hits, misses;             /* lookup statistics; guarded by mu (counted under the lock
                                          already held, so a lookup costs no extra atomic) */
} cache_shard;

struct cache {
    cache_shard shards[CACHE_SHARDS];  /* each guarded by its own mu */
    _Atomic uint64_t next_id;          /* cache_new_id counter */
};

static uint64_t cache_hash(uint64_t id, uint64_t off)
{
    uint64_t h = id * UINT64_C(0x9E3779B97F4A7C15) ^ off;
    h ^= h >> 32;
    h *= UINT64_C(0xD6E8FEB86659FD93);
    h ^= h >> 29;
    h *= UINT64_C(0xBF58476D1CE4E5B9);
    h ^= h >> 32;
    return h;
}

static cache_shard *cache_shard_of(cache *c, uint64_t hash)
{
    return &c->shards[hash >> (64 - CACHE_SHARD_BITS)];
}

static void cache_list_remove(cache_handle *e)
{
    e->prev->next = e->next;
    e->next->prev = e->prev;
}

/* Appends at the newest end of list. */
static void cache_list_append(cache_handle *list, cache_handle *e)
{
    e->next = list;
    e->prev = list->prev;
    e->prev->next = e;
    list->prev = e;
}

static cache_handle **cache_find_slot(cache_shard *s, uint64_t id, uint64_t off, uint64_t hash)
{
    cache_handle **slot = &s->table[hash & (s->nbuckets - 1)];
    while (*slot && ((*slot)->hash != hash || (*slot)->id != id || (*slot)->off != off))
        slot = &(*slot)->next_hash;
    return slot;
}

static void cache_grow(cache_shard *s)
{
    size_t n = s->nbuckets * 2;
    cache_handle **t = xcalloc(n, sizeof(*t));
    for (size_t i = 0; i < s->nbuckets; i++) {
        cache_handle *e = s->table[i];
        while (e) {
            cache_handle *next = e->next_hash;
            cache_handle **b = &t[e->hash & (n - 1)];
            e->next_hash = *b;
            *b = e;
            e = next;
        }
    }
    free(s->table);
    s->table = t;
    s->nbuckets = n;
}

/* Takes e out of the table's accounting and lists; the caller has already unlinked it from its
   bucket. Returns e if that dropped the last reference (the caller must delete it), else NULL. */
static cache_handle *cache_detach(cache_shard *s, cache_handle *e)
{
    cache_list_remove(e);
    e->in_cache = 0;
    s->usage -= e->charge;
    s->count--;
    return --e->refs == 0 ? e : NULL;
}

/* Evicts unpinned entries, oldest first, until usage fits; returns them chained by next_hash.
   Capacity 0 evicts even zero-charge entries, so that it really retains nothing. */
static cache_handle *cache_evict(cache_shard *s, cache_handle *dead)
{
    while ((s->usage > s->capacity || s->capacity == 0) && s->lru.next != &s->lru) {
        cache_handle *e = s->lru.next;
        *cache_find_slot(s, e->id, e->off, e->hash) = e->next_hash;
        if (cache_detach(s, e)) {
            e->next_hash = dead;
            dead = e;
        }
    }
    return dead;
}

static void cache_delete_all(cache_handle *dead)
{
    while (dead) {
        cache_handle *next = dead->next_hash;
        if (dead->deleter)
            dead->deleter(dead->id, dead->off, dead->value);
        free(dead);
        dead = next;
    }
}

cache *cache_new(size_t capacity)
{
    cache *c = xcalloc(1, sizeof(*c));
    size_t per = capacity / CACHE_SHARDS + (capacity % CACHE_SHARDS != 0);
    for (int i = 0; i < CACHE_SHARDS; i++) {
        cache_shard *s = &c->shards[i];
        pthread_mutex_init(&s->mu, NULL);
        s->capacity = per;
        s->nbuckets = 16;
        s->table = xcalloc(s->nbuckets, sizeof(*s->table));
        s->lru.next = s->lru.prev = &s->lru;
        s->in_use.next = s->in_use.prev = &s->in_use;
    }
    atomic_init(&c->next_id, 1);
    return c;
}

void cache_free(cache *c)
{
    if (!c)
        return;
    for (int i = 0; i < CACHE_SHARDS; i++) {
        cache_shard *s = &c->shards[i];
        cache_handle *dead = NULL;
        for (size_t b = 0; b < s->nbuckets; b++) {
            cache_handle *e = s->table[b];
            while (e) {
                cache_handle *next = e->next_hash;
                e->next_hash = dead;
                dead = e;
                e = next;
            }
        }
        cache_delete_all(dead);
        free(s->table);
        pthread_mutex_destroy(&s->mu);
    }
    free(c);
}

cache_handle *cache_lookup(cache *c, uint64_t id, uint64_t off)
{
    uint64_t h = cache_hash(id, off);
    cache_shard *s = cache_shard_of(c, h);
    pthread_mutex_lock(&s->mu);
    cache_handle *e = *cache_find_slot(s, id, off, h);
    if (e) {
        if (e->refs == 1) {
            cache_list_remove(e);
            cache_list_append(&s->in_use, e);
        }
        e->refs++;
        s->hits++;
    } else {
        s->misses++;
    }
    pthread_mutex_unlock(&s->mu);
    return e;
}

cache_handle *cache_insert(cache *c, uint64_t id, uint64_t off, void *value, size_t charge,
                           cache_deleter deleter)
{
    cache_handle *e = xmalloc(sizeof(*e));
    e->id = id;
    e->off = off;
    e->hash = cache_hash(id, off);
    e->value = value;
    e->charge = charge;
    e->deleter = deleter;
    e->refs = 2;                        /* the cache's and the returned handle's */
    e->in_cache = 1;

    cache_shard *s = cache_shard_of(c, e->hash);
    cache_handle *dead = NULL;
    pthread_mutex_lock(&s->mu);
    cache_handle **slot = cache_find_slot(s, id, off, e->hash);
    cache_handle *old = *slot;
    if (old) {
        *slot = old->next_hash;
        dead = cache_detach(s, old);
        if (dead)
            dead->next_hash = NULL;
    }
    if (s->count >= s->nbuckets)
        cache_grow(s);
    cache_handle **b = &s->table[e->hash & (s->nbuckets - 1)];
    e->next_hash = *b;
    *b = e;
    cache_list_append(&s->in_use, e);
    s->usage += charge;
    s->count++;
    dead = cache_evict(s, dead);
    pthread_mutex_unlock(&s->mu);
    cache_delete_all(dead);
    return e;
}

void *cache_value(const cache_handle *h)
{
    return h->value;
}

void cache_release(cache *c, cache_handle *h)
{
    if (!h)
        return;
    cache_shard *s = cache_shard_of(c, h->hash);
    cache_handle *dead = NULL;
    pthread_mutex_lock(&s->mu);
    if (--h->refs == 0) {
        h->next_hash = NULL;
        dead = h;
    } else if (h->refs == 1 && h->in_cache) {
        cache_list_remove(h);
        cache_list_append(&s->lru, h);
        dead = cache_evict(s, NULL);
    }
    pthread_mutex_unlock(&s->mu);
    cache_delete_all(dead);
}

void cache_erase(cache *c, uint64_t id, uint64_t off)
{
    uint64_t h = cache_hash(id, off);
    cache_shard *s = cache_shard_of(c, h);
    cache_handle *dead = NULL;
    pthread_mutex_lock(&s->mu);
    cache_handle **slot = cache_find_slot(s, id, off, h);
    cache_handle *e = *slot;
    if (e) {
        *slot = e->next_hash;
        dead = cache_detach(s, e);
        if (dead)
            dead->next_hash = NULL;
    }
    pthread_mutex_unlock(&s->mu);
    cache_delete_all(dead);
}

uint64_t cache_new_id(cache *c)
{
    return atomic_fetch_add_explicit(&c->next_id, 1, memory_order_relaxed);
}

size_t cache_usage(cache *c)
{
    size_t total = 0;
    for (int i = 0; i < CACHE_SHARDS; i++) {
        cache_shard *s = &c->shards[i];
        pthread_mutex_lock(&s->mu);
        total += s->usage;
        pthread_mutex_unlock(&s->mu);
    }
    return total;
}

void cache_stats(cache *c, uint64_t *hits, uint64_t *misses)
{
    uint64_t h = 0, m = 0;
    for (int i = 0; i < CACHE_SHARDS; i++) {
        cache_shard *s = &c->shards[i];
        pthread_mutex_lock(&s->mu);
        h += s->hits;
        m += s->misses;
        pthread_mutex_unlock(&s->mu);
    }
    if (hits)
        *hits = h;
    if (misses)
        *misses = m;
}
