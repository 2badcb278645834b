/*
 * bloom.h — bloom filters over user keys, one per table.
 *
 * The filter is cache-blocked: each key's probes all fall in one 64-byte line, so a query touches
 * one cache line (layout: man/lsm-format.5, section TABLES, "Filter block").
 */
#ifndef LSM_BLOOM_H
#define LSM_BLOOM_H

#include "lsm_int.h"

uint64_t bloom_hash(const void *key, size_t n);      /* the hash both sides use */

/* Appends to out a filter for the n key hashes at bits_per_key (>= 1). */
void bloom_build(const uint64_t *hashes, size_t n, int bits_per_key, buf *out);

/* 0 if the key is certainly absent, 1 if it may be present. A malformed filter answers 1. */
int  bloom_may_contain(const uint8_t *filter, size_t len, uint64_t hash);
/* Asks the CPU for the one line bloom_may_contain will read, without waiting for it. */
void bloom_prefetch(const uint8_t *filter, size_t len, uint64_t hash);

#endif /* LSM_BLOOM_H */
