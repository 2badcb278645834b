/*
 * options.h — what an lsm_options object holds. lsm.h keeps the type opaque so that adding an option
 * never changes the ABI; inside the engine, and in the engine's own tests, it is this plain struct,
 * copied into the handle at lsm_open.
 */
#ifndef LSM_OPTIONS_H
#define LSM_OPTIONS_H

#include <stddef.h>
#include "lsm.h"

struct lsm_env;

struct lsm_options {
    size_t memtable_bytes;      /* each field as its setter in lsm.h describes it */
    size_t cache_bytes;
    int    bloom_bits_per_key;
    int    compression;
    int    compression_level;
    int    sync_writes;
    size_t wal_buffer_bytes;
    int    create_if_missing;
    int    error_if_exists;
    int    max_open_files;
    size_t block_bytes;
    size_t table_bytes;
    size_t level1_bytes;
    size_t blob_threshold;
    int    background_compaction;
    size_t reserve_bytes;
    int    read_only;
    lsm_log_fn logger;          /* NULL: no messages */
    void  *logger_arg;
    struct lsm_env *env;        /* NULL = POSIX; only the engine's tests substitute one (env.h) */
};

/* Fills *opt with the defaults lsm.h states. */
void options_defaults(lsm_options *opt);
/* Raises values below the engine's minimums to them (lsm.h lists them); fails with LSM_INVALID
   and a message in err for what cannot be valid. */
int  options_sanitize(lsm_options *opt, char *err);

#endif /* LSM_OPTIONS_H */
