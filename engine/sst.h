/*
 * sst.h — sorted string tables: immutable files of internal keys in order (format: man/lsm-format.5,
 * section TABLES).
 *
 * A point lookup reads one data block (two when the key falls between a block's last key and its
 * index separator); reads of data blocks go through the block cache.
 */
#ifndef LSM_SST_H
#define LSM_SST_H

#include "cache.h"
#include "env.h"
#include "iter.h"

typedef struct sst_options {
    size_t block_bytes;        /* target uncompressed data block size */
    int    restart_interval;   /* most keys between restart points (16); data blocks restart
                                  after half as many once they span block_bytes/8 bytes */
    int    bloom_bits_per_key; /* 0 = no filter */
    int    compression;        /* LSM_COMPRESSION_* */
    int    compression_level;  /* zstd level */
} sst_options;

typedef struct sst_builder sst_builder;

/* Builds a table by appending to f (already created and empty; the builder neither syncs nor closes
   it). path is only for messages. */
sst_builder *sst_builder_new(lsm_env *env, lsm_file *f, const char *path, const sst_options *o);
/* Adds an entry; internal keys must be strictly increasing. */
int      sst_builder_add(sst_builder *b, slice ikey, slice val, char *err);
uint64_t sst_builder_file_size(const sst_builder *b);   /* bytes written so far + pending block */
uint64_t sst_builder_entries(const sst_builder *b);
/* Writes the last data block, filter, index and footer. */
int      sst_builder_finish(sst_builder *b, uint64_t *file_size, char *err);
void     sst_builder_free(sst_builder *b);              /* accepts NULL; abandons if unfinished */

typedef struct sst sst;

/* Opens a table of file_size bytes: reads and checks the footer, index and filter. Data blocks are
   cached in block_cache (may be NULL) under a fresh id. On failure returns LSM_CORRUPT / LSM_IOERR with
   "path: offset N: why" in err. */
int  sst_open(lsm_env *env, const char *path, uint64_t file_size, cache *block_cache, sst **out,
              char *err);
void sst_close(sst *t);                                 /* accepts NULL; no iterator may remain */

/* Finds the newest entry for ukey with sequence <= snap. *found = 1 with *type set and, unless
   the entry is a delete, the value taken as value_take says (r NULL: *val a malloc'd copy, caller
   frees); *found = 0 if none. It does not consult the bloom filter: callers ask
   sst_may_contain(_hash) first, once. */
int  sst_get(sst *t, const void *ukey, size_t uklen, uint64_t snap, int *found, int *type,
             value_range *r, void **val, size_t *vlen, char *err);
/* Whether the bloom filter admits ukey (1 when there is no filter). */
int  sst_may_contain(sst *t, const void *ukey, size_t uklen);
/* The same with hash = sst_key_hash(ukey): a lookup through several tables hashes once. */
uint64_t sst_key_hash(const void *ukey, size_t uklen);
int  sst_may_contain_hash(sst *t, uint64_t hash);
/* Where t's filter is (*flen bytes, NULL if none) and the first lines an index search reads
   (*ilen bytes from *itop, the group tops), for a caller that keeps them as prefetch hints. */
void sst_prefetch_where(const sst *t, const uint8_t **filter, size_t *flen, const uint8_t **itop,
                        size_t *ilen);
/* Starts fetching the filter line sst_may_contain_hash will read for hash and ilen bytes of index
   lines from itop (0 for none), at addresses sst_prefetch_where gave, so that a lookup through
   several tables waits for their misses together instead of one after another. The addresses may
   be stale, as the table may have been closed since: they are only prefetched, never read. */
void sst_prefetch_at(const uint8_t *filter, size_t flen, uint64_t hash, const uint8_t *itop,
                     size_t ilen);

/* Iterator over all entries, in internal order. Must be freed before sst_close. */
iiter *sst_iter_new(sst *t);

/* For repair: calls entry for every entry of every data block that verifies, in order, and bad
   (with "path: offset N: why") for each block that does not, going on past it. Returns the number
   of bad blocks. */
int  sst_salvage(sst *t, void (*entry)(void *arg, slice ikey, slice val),
                 void (*bad)(void *arg, const char *why), void *arg);

/* Where in the file the entries at or after internal key ikey begin: the offset of the data block
   that holds the first of them (found through the index in memory, reading nothing), or the file
   size when ikey is past every entry. For approximate sizes. */
uint64_t sst_approximate_offset(const sst *t, slice ikey);

uint64_t sst_entries(const sst *t);
uint64_t sst_file_size(const sst *t);

#endif /* LSM_SST_H */
