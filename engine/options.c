/*
 * options.c — lsm_options: the defaults, one setter per option, and the sanitizing lsm_open applies.
 *
 * Options are an opaque object with setters (as LevelDB's c.h and LMDB's mdb_env_set_* do) rather
 * than an open struct, so that a new option is a new function and never a change of layout that
 * programs built against an older lsm.h would misread. A setter refuses only what can never be
 * valid, and then changes nothing; the engine's minimums are applied at lsm_open, in one place.
 */
#include <stdlib.h>
#include <string.h>
#include "lsm_int.h"
#include "options.h"

void options_defaults(lsm_options *opt)
{
    memset(opt, 0, sizeof *opt);
    opt->memtable_bytes = 4u << 20;
    opt->cache_bytes = 8u << 20;
    opt->bloom_bits_per_key = 10;
    opt->compression = LSM_COMPRESSION_NONE;
    opt->compression_level = 1;
    opt->wal_buffer_bytes = 64u << 10;
    opt->create_if_missing = 1;
    opt->max_open_files = 1000;
    opt->block_bytes = 4096;
    opt->table_bytes = 2u << 20;
    opt->level1_bytes = 10u << 20;
    opt->blob_threshold = 64u << 10;
    opt->background_compaction = 1;
}

int options_sanitize(lsm_options *opt, char *err)
{
    if (opt->compression < LSM_COMPRESSION_NONE || opt->compression > LSM_COMPRESSION_ZSTD)
        return err_set(err, LSM_INVALID, "lsm_open: unknown compression %d", opt->compression);
    if (opt->memtable_bytes < 4096)
        opt->memtable_bytes = 4096;
    if (opt->block_bytes < 256)
        opt->block_bytes = 256;
    if (opt->table_bytes < 4096)
        opt->table_bytes = 4096;
    if (opt->level1_bytes < 4096)
        opt->level1_bytes = 4096;
    if (opt->max_open_files < 16)
        opt->max_open_files = 16;
    if (opt->bloom_bits_per_key < 0)
        opt->bloom_bits_per_key = 0;
    return LSM_OK;
}

lsm_options *lsm_options_new(void)
{
    lsm_options *opt = malloc(sizeof *opt);
    if (opt)
        options_defaults(opt);
    return opt;
}

void lsm_options_free(lsm_options *opt)
{
    free(opt);
}

/* Setters of a size (any value is valid) and of a flag (any non-zero value means on). */
#define SET_SIZE(name)                                          \
    int lsm_options_set_##name(lsm_options *opt, size_t n)      \
    {                                                           \
        if (!opt)                                               \
            return LSM_INVALID;                                 \
        opt->name = n;                                          \
        return LSM_OK;                                          \
    }
#define SET_FLAG(name)                                          \
    int lsm_options_set_##name(lsm_options *opt, int on)        \
    {                                                           \
        if (!opt)                                               \
            return LSM_INVALID;                                 \
        opt->name = on != 0;                                    \
        return LSM_OK;                                          \
    }

SET_SIZE(memtable_bytes)
SET_SIZE(cache_bytes)
SET_SIZE(wal_buffer_bytes)
SET_SIZE(block_bytes)
SET_SIZE(table_bytes)
SET_SIZE(level1_bytes)
SET_SIZE(blob_threshold)
SET_SIZE(reserve_bytes)
SET_FLAG(sync_writes)
SET_FLAG(create_if_missing)
SET_FLAG(error_if_exists)
SET_FLAG(background_compaction)
SET_FLAG(read_only)

int lsm_options_set_bloom_bits_per_key(lsm_options *opt, int bits)
{
    if (!opt || bits < 0)
        return LSM_INVALID;
    opt->bloom_bits_per_key = bits;
    return LSM_OK;
}

int lsm_options_set_compression(lsm_options *opt, int compression, int level)
{
    if (!opt || compression < LSM_COMPRESSION_NONE || compression > LSM_COMPRESSION_ZSTD)
        return LSM_INVALID;
    opt->compression = compression;
    opt->compression_level = level;
    return LSM_OK;
}

int lsm_options_set_max_open_files(lsm_options *opt, int n)
{
    if (!opt || n < 0)
        return LSM_INVALID;
    opt->max_open_files = n;
    return LSM_OK;
}

int lsm_options_set_logger(lsm_options *opt, lsm_log_fn fn, void *arg)
{
    if (!opt)
        return LSM_INVALID;
    opt->logger = fn;
    opt->logger_arg = fn ? arg : NULL;
    return LSM_OK;
}
