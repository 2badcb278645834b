/*
 * db_bench.c — the engine benchmark: LevelDB's db_bench workloads run on liblsm and, in the same
 * run with the same settings, on LevelDB and RocksDB through their C APIs when they are compiled in
 * (-DHAVE_LEVELDB, -DHAVE_ROCKSDB; -DNO_LSM leaves liblsm out, for testing the harness alone).
 *
 * Why it is shaped so: numbers for liblsm alone say little, so every engine gets the identical
 * workload — the same keys in the same order from one fixed seed, the same values, the same knobs
 * (4 MiB write buffer, 10 bloom bits per key, 8 MiB block cache, 4 KiB blocks, max_open_files 1000,
 * no compression unless --compression says otherwise, sync off except fillsync), each in its own
 * fresh directory under one temporary directory. Knobs not named here keep each engine's default.
 * Each engine runs in a forked child so that a crash or hang of the engine under construction still
 * leaves the other engines' numbers and a precise report of where it died. The harness also tracks
 * which pass last wrote every key, so each read checks presence and the exact value: a benchmark
 * that returns wrong data is reported as such, not as fast.
 *
 * What it must never do: write outside its own temporary directory, time anything but the
 * operations themselves (opening, closing and checking sit outside the clocks), or let one engine's
 * state leak into another's run.
 *
 * Workloads, in the default order (--benchmarks picks and orders them):
 *   fillseq       num puts, keys 0..num-1 ascending, fresh db
 *   fillrandom    num puts, keys uniform in [0,num), fresh db (so ~63% of the key space is present)
 *   overwrite     num puts, keys uniform in [0,num), on the fillrandom db (~86% present after it)
 *   readrandom    num gets, keys uniform in [0,num); before the first read after writes the db is
 *                 closed and reopened, so reads come from tables and cache, not only the memtable
 *   readmissing   num gets of keys that sort among the real ones but never exist ("%016d.")
 *   readseq       one iterator from the first key to the end, reading every key and value
 *   seekrandom    num seeks to a uniform key on one iterator (RocksDB's db_bench style; LevelDB's
 *                 makes an iterator per seek), reading the entry landed on plus --seek_nexts more
 *                 (default 0, as db_bench)
 *   deleterandom  num deletes, keys uniform in [0,num)
 *   fillsync      num/1000 puts (as LevelDB's db_bench), each synced, keys uniform, fresh db
 * Keys are 16 bytes, "%016d" of the key number. Values are --value_size (100) bytes cut from a
 * 1 MiB buffer built as db_bench builds its own: each 100-byte stretch is --compression_ratio (0.5)
 * random bytes repeated to fill it, so a compressor halves it; the cut depends on the key and the
 * pass that wrote it, which is what lets reads verify values.
 *
 * Output: one line per workload and engine as it finishes, then a markdown table of ops/s with
 * liblsm's ratio to each other engine, a table per open..close session (user bytes, bytes the
 * process wrote per /proc/self/io wchar, their ratio, close time, du of the db after the close —
 * the fillrandom,overwrite row is the disk footprint), liblsm's lsm_stats before each close, and
 * the list of failed checks. Exit status: 0 all ran, all checks held; 1 a check failed, an engine
 * reported an error, crashed or hung; 2 bad usage; 3 the --scale check failed for liblsm.
 *
 * Usage (make bench runs it with the defaults through tests/bench/run.sh):
 *   tests/bench/db_bench [--num=1000000] [--value_size=100] [--benchmarks=fillseq,...]
 *       [--engines=lsm,leveldb,rocksdb] [--dir=/tmp] [--compression=none|lz4|zstd]
 *       [--compression_ratio=0.5] [--seek_nexts=0] [--seed=N] [--timeout=SECONDS] [--keep]
 *       [--fork=0] [--scale]
 * LevelDB has only snappy, so it gets snappy when lz4 or zstd is asked for (the output says so).
 * --fork=0 runs engines in-process (for gdb); --keep leaves the databases behind.
 *
 * The 10M-key scale check (fillrandom then readrandom at 10x the keys keep >= 70% of the rates):
 *   tests/bench/db_bench --scale                 # fillrandom,readrandom at --num, then 10x --num
 *   tests/bench/db_bench --scale --engines=lsm   # liblsm only (about 1.3 GB of disk at 10M)
 * or by hand: compare `--num=10000000 --benchmarks=fillrandom,readrandom` with a --num=1000000 run.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef NO_LSM
#include "lsm.h"
#endif
#ifdef HAVE_LEVELDB
#include <leveldb/c.h>
#endif
#ifdef HAVE_ROCKSDB
#include <rocksdb/c.h>
#endif
#if defined(NO_LSM) && !defined(HAVE_LEVELDB) && !defined(HAVE_ROCKSDB)
#error "db_bench: no engine to benchmark (NO_LSM without HAVE_LEVELDB or HAVE_ROCKSDB)"
#endif

#define KEY_LEN        16
#define WRITE_BUFFER   ((size_t)4 << 20)
#define CACHE_BYTES    ((size_t)8 << 20)
#define BLOOM_BITS     10
#define BLOCK_BYTES    ((size_t)4 << 10)
#define MAX_OPEN_FILES 1000
#define VBUF_BASE      ((size_t)1 << 20)
#define VCHUNK         100
#define MAX_ENGINES    3
#define MAX_BENCHES    64
#define MAX_SESSIONS   (MAX_BENCHES + 1)
#define MAX_REPORTS    5   /* anomalies printed per workload; the rest are only counted */

enum { B_FILLSEQ, B_FILLRANDOM, B_OVERWRITE, B_READRANDOM, B_READMISSING, B_READSEQ,
       B_SEEKRANDOM, B_DELETERANDOM, B_FILLSYNC, NBENCH };
static const char *const bench_name[NBENCH] = {
    "fillseq", "fillrandom", "overwrite", "readrandom", "readmissing", "readseq",
    "seekrandom", "deleterandom", "fillsync"
};
static const char default_benchmarks[] =
    "fillseq,fillrandom,overwrite,readrandom,readmissing,readseq,seekrandom,deleterandom,fillsync";

enum { COMP_NONE, COMP_LZ4, COMP_ZSTD };
static const char *const comp_name[] = { "none", "lz4", "zstd" };

static struct {
    uint64_t num;              /* key space and operation count */
    size_t value_size;
    double compression_ratio;  /* fraction of each value that is random */
    int compression;           /* COMP_* */
    int seek_nexts;
    uint64_t seed;
    int fork;                  /* 1: each engine in a child process */
    int keep;                  /* 1: leave the databases behind */
    double timeout;            /* seconds a workload may run before its child is killed; 0 = none */
    int scale;
    const char *dir;           /* parent of our temporary directory */
    int benches[MAX_BENCHES];
    int nbenches;
    int engines[MAX_ENGINES];  /* indices into engine_tab */
    int nengines;
} cfg;

/* ---- records: how a run (possibly in a child) reports to the summary ---- */

enum { REC_BEGIN, REC_RESULT, REC_SESSION };

struct rec {
    int kind;                  /* REC_* */
    int slot;                  /* position in cfg.benches (BEGIN, RESULT) */
    int bench;                 /* B_* */
    int failed;                /* RESULT: the engine returned an error */
    int check_failed;          /* RESULT: found/value/order checks did not hold */
    double secs;               /* RESULT: time of the operations; SESSION: time of the close */
    uint64_t ops, bytes;       /* RESULT */
    uint64_t found, expected;  /* RESULT: reads that found a key / keys the harness wrote */
    uint64_t wrong, ghost, errors; /* RESULT: bad value or order / found but not written / errors */
    uint64_t user_bytes, io_bytes, du_bytes; /* SESSION */
    int has_lsm_stats;         /* SESSION */
#ifndef NO_LSM
    lsm_stats st;              /* SESSION: taken just before the close */
#endif
    char label[128];           /* SESSION: workloads run between open and close */
    char msg[256];             /* RESULT: first error or anomaly */
};

/* ---- engines: one small table of operations per engine ---- */

enum { GET_MISSING = 0, GET_FOUND = 1, GET_WRONG = 2, GET_ERROR = -1 };

struct engine {
    const char *name;
    void *(*open)(const char *dir, int sync);            /* NULL on failure, g_err says why */
    int (*close)(void *h);                                /* 0 or -1 */
    int (*put)(void *h, const char *k, size_t kl, const char *v, size_t vl);
    int (*del)(void *h, const char *k, size_t kl);
    /* GET_*: want NULL accepts any value; otherwise the value must equal want[0..wl). */
    int (*get)(void *h, const char *k, size_t kl, const char *want, size_t wl, size_t *got);
    void *(*iter_new)(void *h);
    void (*iter_seek)(void *it, const char *k, size_t kl); /* kl 0: the first key */
    int (*iter_valid)(void *it);
    void (*iter_next)(void *it);
    const char *(*iter_key)(void *it, size_t *kl);
    const char *(*iter_value)(void *it, size_t *vl);
    int (*iter_status)(void *it);                        /* 0 or -1 */
    void (*iter_free)(void *it);
    int (*stats)(void *h, struct rec *r);                /* may be NULL */
};

static char g_err[512];  /* the last engine error; each engine runs in one thread */

static void seterr(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_err, sizeof g_err, fmt, ap);
    va_end(ap);
}

static int value_matches(const char *v, size_t vl, const char *want, size_t wl)
{
    return want == NULL || (vl == wl && memcmp(v, want, wl) == 0);
}

#ifndef NO_LSM
static void *lsm_e_open(const char *dir, int sync)
{
    lsm_options *o = lsm_options_new();
    lsm_db *db = NULL;
    if (!o) {
        seterr("lsm_options_new: out of memory");
        return NULL;
    }
    lsm_options_set_memtable_bytes(o, WRITE_BUFFER);
    lsm_options_set_cache_bytes(o, CACHE_BYTES);
    lsm_options_set_bloom_bits_per_key(o, BLOOM_BITS);
    lsm_options_set_compression(o, cfg.compression == COMP_LZ4 ? LSM_COMPRESSION_LZ4 :
                                   cfg.compression == COMP_ZSTD ? LSM_COMPRESSION_ZSTD :
                                   LSM_COMPRESSION_NONE, 1);
    lsm_options_set_sync_writes(o, sync);
    lsm_options_set_create_if_missing(o, 1);
    lsm_options_set_max_open_files(o, MAX_OPEN_FILES);
    lsm_options_set_block_bytes(o, BLOCK_BYTES);
    int rc = lsm_open(dir, o, &db);
    lsm_options_free(o);
    if (rc != LSM_OK || db == NULL) {
        seterr("lsm_open(%s): %s: %s", dir, lsm_strerror(rc), lsm_errmsg(NULL));
        return NULL;
    }
    return db;
}

static int lsm_e_close(void *h)
{
    int rc = lsm_close(h);
    if (rc != LSM_OK) {
        seterr("lsm_close: %s", lsm_strerror(rc));
        return -1;
    }
    return 0;
}

static int lsm_e_put(void *h, const char *k, size_t kl, const char *v, size_t vl)
{
    int rc = lsm_put(h, k, kl, v, vl);
    if (rc != LSM_OK) {
        seterr("lsm_put: %s: %s", lsm_strerror(rc), lsm_errmsg(h));
        return -1;
    }
    return 0;
}

static int lsm_e_del(void *h, const char *k, size_t kl)
{
    int rc = lsm_delete(h, k, kl);
    if (rc != LSM_OK) {
        seterr("lsm_delete: %s: %s", lsm_strerror(rc), lsm_errmsg(h));
        return -1;
    }
    return 0;
}

static int lsm_e_get(void *h, const char *k, size_t kl, const char *want, size_t wl, size_t *got)
{
    void *v = NULL;
    size_t vl = 0;
    int rc = lsm_get(h, k, kl, &v, &vl);
    if (rc == LSM_NOTFOUND)
        return GET_MISSING;
    if (rc != LSM_OK) {
        seterr("lsm_get: %s: %s", lsm_strerror(rc), lsm_errmsg(h));
        return GET_ERROR;
    }
    *got = vl;
    int ok = value_matches(v, vl, want, wl);
    free(v);
    return ok ? GET_FOUND : GET_WRONG;
}

static void *lsm_e_iter_new(void *h)
{
    lsm_iter *it = NULL;
    int rc = lsm_iter_new(h, &it);
    if (rc != LSM_OK) {
        seterr("lsm_iter_new: %s: %s", lsm_strerror(rc), lsm_errmsg(h));
        return NULL;
    }
    return it;
}

static void lsm_e_iter_seek(void *it, const char *k, size_t kl) { lsm_iter_seek(it, k, kl); }
static int lsm_e_iter_valid(void *it) { return lsm_iter_valid(it); }
static void lsm_e_iter_next(void *it) { lsm_iter_next(it); }
static const char *lsm_e_iter_key(void *it, size_t *kl) { return lsm_iter_key(it, kl); }
static const char *lsm_e_iter_value(void *it, size_t *vl) { return lsm_iter_value(it, vl); }
static void lsm_e_iter_free(void *it) { lsm_iter_free(it); }

static int lsm_e_iter_status(void *it)
{
    int rc = lsm_iter_status(it);
    if (rc != LSM_OK) {
        seterr("lsm_iter_status: %s", lsm_strerror(rc));
        return -1;
    }
    return 0;
}

static int lsm_e_stats(void *h, struct rec *r)
{
    if (lsm_stats_get(h, &r->st, sizeof r->st) != LSM_OK)
        return -1;
    r->has_lsm_stats = 1;
    return 0;
}
#endif /* NO_LSM */

#ifdef HAVE_LEVELDB
struct ldb {
    leveldb_t *db;
    leveldb_options_t *opt;
    leveldb_cache_t *cache;
    leveldb_filterpolicy_t *bloom;
    leveldb_readoptions_t *ro;
    leveldb_writeoptions_t *wo;
};

static void ldb_free(struct ldb *l)
{
    if (l->db)
        leveldb_close(l->db);
    if (l->ro)
        leveldb_readoptions_destroy(l->ro);
    if (l->wo)
        leveldb_writeoptions_destroy(l->wo);
    if (l->opt)
        leveldb_options_destroy(l->opt);
    if (l->bloom)
        leveldb_filterpolicy_destroy(l->bloom);
    if (l->cache)
        leveldb_cache_destroy(l->cache);
    free(l);
}

static void *ldb_open(const char *dir, int sync)
{
    struct ldb *l = calloc(1, sizeof *l);
    char *err = NULL;
    if (l == NULL) {
        seterr("out of memory");
        return NULL;
    }
    l->opt = leveldb_options_create();
    l->cache = leveldb_cache_create_lru(CACHE_BYTES);
    l->bloom = leveldb_filterpolicy_create_bloom(BLOOM_BITS);
    l->ro = leveldb_readoptions_create();
    l->wo = leveldb_writeoptions_create();
    leveldb_options_set_create_if_missing(l->opt, 1);
    leveldb_options_set_write_buffer_size(l->opt, WRITE_BUFFER);
    leveldb_options_set_cache(l->opt, l->cache);
    leveldb_options_set_filter_policy(l->opt, l->bloom);
    leveldb_options_set_block_size(l->opt, BLOCK_BYTES);
    leveldb_options_set_max_open_files(l->opt, MAX_OPEN_FILES);
    leveldb_options_set_compression(l->opt, cfg.compression == COMP_NONE
                                                ? leveldb_no_compression
                                                : leveldb_snappy_compression);
    leveldb_writeoptions_set_sync(l->wo, (uint8_t)sync);
    l->db = leveldb_open(l->opt, dir, &err);
    if (err != NULL) {
        seterr("leveldb_open(%s): %s", dir, err);
        leveldb_free(err);
        ldb_free(l);
        return NULL;
    }
    return l;
}

static int ldb_close(void *h)
{
    ldb_free(h);
    return 0;
}

static int ldb_fail(const char *what, char *err)
{
    seterr("%s: %s", what, err);
    leveldb_free(err);
    return -1;
}

static int ldb_put(void *h, const char *k, size_t kl, const char *v, size_t vl)
{
    struct ldb *l = h;
    char *err = NULL;
    leveldb_put(l->db, l->wo, k, kl, v, vl, &err);
    return err ? ldb_fail("leveldb_put", err) : 0;
}

static int ldb_del(void *h, const char *k, size_t kl)
{
    struct ldb *l = h;
    char *err = NULL;
    leveldb_delete(l->db, l->wo, k, kl, &err);
    return err ? ldb_fail("leveldb_delete", err) : 0;
}

static int ldb_get(void *h, const char *k, size_t kl, const char *want, size_t wl, size_t *got)
{
    struct ldb *l = h;
    char *err = NULL;
    size_t vl = 0;
    char *v = leveldb_get(l->db, l->ro, k, kl, &vl, &err);
    if (err != NULL)
        return ldb_fail("leveldb_get", err);
    if (v == NULL)
        return GET_MISSING;
    *got = vl;
    int ok = value_matches(v, vl, want, wl);
    leveldb_free(v);
    return ok ? GET_FOUND : GET_WRONG;
}

static void *ldb_iter_new(void *h)
{
    struct ldb *l = h;
    return leveldb_create_iterator(l->db, l->ro);
}

static void ldb_iter_seek(void *it, const char *k, size_t kl)
{
    if (kl == 0)
        leveldb_iter_seek_to_first(it);
    else
        leveldb_iter_seek(it, k, kl);
}

static int ldb_iter_valid(void *it) { return leveldb_iter_valid(it); }
static void ldb_iter_next(void *it) { leveldb_iter_next(it); }
static const char *ldb_iter_key(void *it, size_t *kl) { return leveldb_iter_key(it, kl); }
static const char *ldb_iter_value(void *it, size_t *vl) { return leveldb_iter_value(it, vl); }
static void ldb_iter_free(void *it) { leveldb_iter_destroy(it); }

static int ldb_iter_status(void *it)
{
    char *err = NULL;
    leveldb_iter_get_error(it, &err);
    return err ? ldb_fail("leveldb iterator", err) : 0;
}
#endif /* HAVE_LEVELDB */

#ifdef HAVE_ROCKSDB
struct rdb {
    rocksdb_t *db;
    rocksdb_options_t *opt;
    rocksdb_block_based_table_options_t *table;
    rocksdb_cache_t *cache;
    rocksdb_readoptions_t *ro;
    rocksdb_writeoptions_t *wo;
};

static void rdb_free(struct rdb *r)
{
    if (r->db)
        rocksdb_close(r->db);
    if (r->ro)
        rocksdb_readoptions_destroy(r->ro);
    if (r->wo)
        rocksdb_writeoptions_destroy(r->wo);
    if (r->opt)
        rocksdb_options_destroy(r->opt);
    if (r->table)
        rocksdb_block_based_options_destroy(r->table); /* owns the filter policy */
    if (r->cache)
        rocksdb_cache_destroy(r->cache);
    free(r);
}

static void *rdb_open(const char *dir, int sync)
{
    struct rdb *r = calloc(1, sizeof *r);
    char *err = NULL;
    if (r == NULL) {
        seterr("out of memory");
        return NULL;
    }
    r->opt = rocksdb_options_create();
    r->table = rocksdb_block_based_options_create();
    r->cache = rocksdb_cache_create_lru(CACHE_BYTES);
    r->ro = rocksdb_readoptions_create();
    r->wo = rocksdb_writeoptions_create();
    rocksdb_block_based_options_set_block_size(r->table, BLOCK_BYTES);
    rocksdb_block_based_options_set_block_cache(r->table, r->cache);
    rocksdb_block_based_options_set_filter_policy(
        r->table, rocksdb_filterpolicy_create_bloom_full(BLOOM_BITS));
    rocksdb_options_set_block_based_table_factory(r->opt, r->table);
    rocksdb_options_set_create_if_missing(r->opt, 1);
    rocksdb_options_set_write_buffer_size(r->opt, WRITE_BUFFER);
    rocksdb_options_set_max_open_files(r->opt, MAX_OPEN_FILES);
    rocksdb_options_set_compression(r->opt,
                                    cfg.compression == COMP_LZ4  ? rocksdb_lz4_compression :
                                    cfg.compression == COMP_ZSTD ? rocksdb_zstd_compression :
                                                                   rocksdb_no_compression);
    rocksdb_writeoptions_set_sync(r->wo, (unsigned char)sync);
    r->db = rocksdb_open(r->opt, dir, &err);
    if (err != NULL) {
        seterr("rocksdb_open(%s): %s", dir, err);
        rocksdb_free(err);
        rdb_free(r);
        return NULL;
    }
    return r;
}

static int rdb_close(void *h)
{
    rdb_free(h);
    return 0;
}

static int rdb_fail(const char *what, char *err)
{
    seterr("%s: %s", what, err);
    rocksdb_free(err);
    return -1;
}

static int rdb_put(void *h, const char *k, size_t kl, const char *v, size_t vl)
{
    struct rdb *r = h;
    char *err = NULL;
    rocksdb_put(r->db, r->wo, k, kl, v, vl, &err);
    return err ? rdb_fail("rocksdb_put", err) : 0;
}

static int rdb_del(void *h, const char *k, size_t kl)
{
    struct rdb *r = h;
    char *err = NULL;
    rocksdb_delete(r->db, r->wo, k, kl, &err);
    return err ? rdb_fail("rocksdb_delete", err) : 0;
}

static int rdb_get(void *h, const char *k, size_t kl, const char *want, size_t wl, size_t *got)
{
    struct rdb *r = h;
    char *err = NULL;
    size_t vl = 0;
    char *v = rocksdb_get(r->db, r->ro, k, kl, &vl, &err);
    if (err != NULL)
        return rdb_fail("rocksdb_get", err);
    if (v == NULL)
        return GET_MISSING;
    *got = vl;
    int ok = value_matches(v, vl, want, wl);
    rocksdb_free(v);
    return ok ? GET_FOUND : GET_WRONG;
}

static void *rdb_iter_new(void *h)
{
    struct rdb *r = h;
    return rocksdb_create_iterator(r->db, r->ro);
}

static void rdb_iter_seek(void *it, const char *k, size_t kl)
{
    if (kl == 0)
        rocksdb_iter_seek_to_first(it);
    else
        rocksdb_iter_seek(it, k, kl);
}

static int rdb_iter_valid(void *it) { return rocksdb_iter_valid(it); }
static void rdb_iter_next(void *it) { rocksdb_iter_next(it); }
static const char *rdb_iter_key(void *it, size_t *kl) { return rocksdb_iter_key(it, kl); }
static const char *rdb_iter_value(void *it, size_t *vl) { return rocksdb_iter_value(it, vl); }
static void rdb_iter_free(void *it) { rocksdb_iter_destroy(it); }

static int rdb_iter_status(void *it)
{
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    return err ? rdb_fail("rocksdb iterator", err) : 0;
}
#endif /* HAVE_ROCKSDB */

static const struct engine engine_tab[] = {
#ifndef NO_LSM
    { "liblsm", lsm_e_open, lsm_e_close, lsm_e_put, lsm_e_del, lsm_e_get, lsm_e_iter_new,
      lsm_e_iter_seek, lsm_e_iter_valid, lsm_e_iter_next, lsm_e_iter_key, lsm_e_iter_value,
      lsm_e_iter_status, lsm_e_iter_free, lsm_e_stats },
#endif
#ifdef HAVE_LEVELDB
    { "leveldb", ldb_open, ldb_close, ldb_put, ldb_del, ldb_get, ldb_iter_new, ldb_iter_seek,
      ldb_iter_valid, ldb_iter_next, ldb_iter_key, ldb_iter_value, ldb_iter_status, ldb_iter_free,
      NULL },
#endif
#ifdef HAVE_ROCKSDB
    { "rocksdb", rdb_open, rdb_close, rdb_put, rdb_del, rdb_get, rdb_iter_new, rdb_iter_seek,
      rdb_iter_valid, rdb_iter_next, rdb_iter_key, rdb_iter_value, rdb_iter_status, rdb_iter_free,
      NULL },
#endif
};
#define NENGINE_TAB ((int)(sizeof engine_tab / sizeof engine_tab[0]))

/* ---- keys, values, randomness ---- */

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Each workload draws its keys from its own stream, so an engine's sequence does not depend on
   which workloads ran before. */
static uint64_t rng_state;
static void rng_seed(int bench) { rng_state = mix64(cfg.seed * 31 + (uint64_t)bench); }
static uint64_t rng_key(void)
{
    rng_state += 0x9e3779b97f4a7c15ull;
    return mix64(rng_state) % cfg.num;
}

static void fmt_key(char *buf, uint64_t k)
{
    for (int i = KEY_LEN - 1; i >= 0; i--) {
        buf[i] = (char)('0' + k % 10);
        k /= 10;
    }
}

static int parse_key(const char *k, size_t kl, uint64_t *out)
{
    uint64_t v = 0;
    if (kl != KEY_LEN)
        return -1;
    for (size_t i = 0; i < kl; i++) {
        if (k[i] < '0' || k[i] > '9')
            return -1;
        v = v * 10 + (uint64_t)(k[i] - '0');
    }
    *out = v;
    return 0;
}

static char *vbuf;
static size_t vbuf_len;

static void make_values(void)
{
    uint64_t s = cfg.seed ^ 0x5eedull;
    size_t raw = (size_t)(VCHUNK * cfg.compression_ratio + 0.5);
    if (raw < 1)
        raw = 1;
    if (raw > VCHUNK)
        raw = VCHUNK;
    vbuf_len = VBUF_BASE + cfg.value_size;
    vbuf = malloc(vbuf_len);
    if (vbuf == NULL) {
        perror("malloc");
        exit(1);
    }
    for (size_t off = 0; off < vbuf_len; off += VCHUNK) {
        size_t n = vbuf_len - off < VCHUNK ? vbuf_len - off : VCHUNK;
        for (size_t i = 0; i < n; i++)
            vbuf[off + i] = i < raw ? (char)(mix64(s++) & 0xff) : vbuf[off + i % raw];
    }
}

/* The value written for key k by workload pass; distinct passes give distinct values. */
static const char *value_for(uint64_t k, int pass)
{
    return vbuf + mix64(k * NBENCH + (uint64_t)pass) % (vbuf_len - cfg.value_size + 1);
}

/* state[k]: 0 if key k is absent, else 1 + the workload that last wrote it. */
static unsigned char *state;

/* ---- small utilities ---- */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    if (remove(path) != 0 && errno != ENOENT)
        fprintf(stderr, "db_bench: remove %s: %s\n", path, strerror(errno));
    return 0;
}

static void rm_tree(const char *dir)
{
    nftw(dir, rm_one, 32, FTW_DEPTH | FTW_PHYS);
}

static uint64_t du_total;
static int du_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)path;
    (void)ftw;
    if (flag == FTW_F)
        du_total += (uint64_t)sb->st_blocks * 512;
    return 0;
}

/* Bytes allocated to the files under dir, as du counts them. */
static uint64_t du(const char *dir)
{
    du_total = 0;
    nftw(dir, du_one, 32, FTW_PHYS);
    return du_total;
}

/* Bytes this process (all its threads) passed to write(2) and friends so far; 0 if unknown. */
static uint64_t io_written(void)
{
    char line[128];
    uint64_t v = 0;
    FILE *f = fopen("/proc/self/io", "r");
    if (f == NULL)
        return 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "wchar: %" SCNu64, &v) == 1)
            break;
    fclose(f);
    return v;
}

static double mb(uint64_t b) { return (double)b / 1048576.0; }

/* ---- running one engine ---- */

struct run {                   /* one engine's pass over the workload list */
    const struct engine *e;
    int ei;                    /* index into cfg.engines */
    const char *dir;
    void *h;                   /* open handle or NULL */
    int sync;                  /* the handle syncs every write */
    int dirty;                 /* written since it was opened */
    int wfd;                   /* pipe to the parent, or -1 when running in-process */
    uint64_t user_bytes;       /* key+value bytes given to the engine since the open */
    uint64_t io0;              /* io_written() at the open */
    char label[128];           /* workloads since the open */
    int reports;               /* anomalies printed in the current workload */
};

static void collect(int ei, const struct rec *r);

static void emit(struct run *R, const struct rec *r)
{
    if (R->wfd < 0) {
        collect(R->ei, r);
        return;
    }
    const char *p = (const char *)r;
    size_t left = sizeof *r;
    while (left > 0) {
        ssize_t n = write(R->wfd, p, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            _exit(1);
        p += n;
        left -= (size_t)n;
    }
}

static void note(struct run *R, struct rec *r, const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (r->msg[0] == '\0')
        snprintf(r->msg, sizeof r->msg, "%s", buf);
    if (R->reports++ < MAX_REPORTS)
        printf("%-8s %-12s : %s\n", R->e->name, bench_name[r->bench], buf);
}

static void close_db(struct run *R)
{
    struct rec r;
    memset(&r, 0, sizeof r);
    r.kind = REC_SESSION;
    if (R->e->stats)
        R->e->stats(R->h, &r);
    double t0 = now();
    if (R->e->close(R->h) != 0)
        printf("%-8s close        : %s\n", R->e->name, g_err);
    r.secs = now() - t0;
    R->h = NULL;
    uint64_t io1 = io_written();
    r.io_bytes = io1 >= R->io0 ? io1 - R->io0 : 0;
    r.user_bytes = R->user_bytes;
    r.du_bytes = du(R->dir);
    snprintf(r.label, sizeof r.label, "%s", R->label);
    emit(R, &r);
}

static int open_db(struct run *R, int fresh, int sync)
{
    if (fresh) {
        rm_tree(R->dir);
        memset(state, 0, cfg.num);
    }
    if (mkdir(R->dir, 0755) != 0 && errno != EEXIST) {
        seterr("mkdir %s: %s", R->dir, strerror(errno));
        return -1;
    }
    R->io0 = io_written();
    R->h = R->e->open(R->dir, sync);
    if (R->h == NULL)
        return -1;
    R->sync = sync;
    R->dirty = 0;
    R->user_bytes = 0;
    R->label[0] = '\0';
    return 0;
}

/* Keys are drawn, and the harness's own bookkeeping done, a chunk at a time outside the clock:
   state[] holds a byte per key, so at 10M keys reading or writing it in the timed loop would add
   a cache miss per operation that the engine did not cause. */
#define OP_CHUNK 4096

/* Draws the keys of the next chunk of operations i.. (of n): i itself onward when seq is set, else
   from the workload's random stream. Returns how many. */
static size_t draw_chunk(uint64_t *keys, uint64_t i, uint64_t n, int seq)
{
    size_t m = n - i < OP_CHUNK ? (size_t)(n - i) : OP_CHUNK;
    for (size_t j = 0; j < m; j++)
        keys[j] = seq ? i + j : rng_key();
    return m;
}

static void do_write(struct run *R, struct rec *r)
{
    int b = r->bench;
    uint64_t n = b == B_FILLSYNC ? (cfg.num / 1000 ? cfg.num / 1000 : 1) : cfg.num;
    unsigned char pass = (unsigned char)(1 + b);
    char key[KEY_LEN];
    static uint64_t keys[OP_CHUNK];
    uint64_t i = 0;
    int stop = 0;
    double secs = 0;
    while (i < n && !stop) {
        size_t m = draw_chunk(keys, i, n, b == B_FILLSEQ), j;
        double t0 = now();
        for (j = 0; j < m; j++) {
            uint64_t k = keys[j];
            fmt_key(key, k);
            int rc;
            if (b == B_DELETERANDOM) {
                rc = R->e->del(R->h, key, KEY_LEN);
                R->user_bytes += KEY_LEN;
            } else {
                rc = R->e->put(R->h, key, KEY_LEN, value_for(k, pass), cfg.value_size);
                R->user_bytes += KEY_LEN + cfg.value_size;
            }
            if (rc != 0) {
                r->failed = 1;
                note(R, r, "op %" PRIu64 " key %.16s: %s (workload stopped)", i + j, key, g_err);
                r->errors++;
                stop = 1;
                break;
            }
        }
        secs += now() - t0;
        for (size_t q = 0; q < j; q++)
            state[keys[q]] = b == B_DELETERANDOM ? 0 : pass;
        i += j;
    }
    r->secs = secs;
    r->ops = i;
    if (b != B_DELETERANDOM)
        r->bytes = i * (KEY_LEN + cfg.value_size);
    R->dirty = 1;
}

static void do_get(struct run *R, struct rec *r)
{
    int missing = r->bench == B_READMISSING;
    char key[KEY_LEN + 1];
    key[KEY_LEN] = '.';
    static uint64_t keys[OP_CHUNK];
    static unsigned char was[OP_CHUNK];   /* state[] of each key, copied outside the clock */
    uint64_t i = 0;
    int stop = 0;
    double secs = 0;
    while (i < cfg.num && !stop) {
        size_t m = draw_chunk(keys, i, cfg.num, 0), j;
        for (j = 0; j < m; j++)
            was[j] = missing ? 0 : state[keys[j]];
        double t0 = now();
        for (j = 0; j < m; j++) {
            uint64_t k = keys[j];
            fmt_key(key, k);
            int want = was[j] != 0;
            size_t got = 0;
            int rc = R->e->get(R->h, key, KEY_LEN + missing,
                               want ? value_for(k, was[j]) : NULL, cfg.value_size, &got);
            r->expected += want;
            if (rc == GET_ERROR) {
                r->failed = 1;
                r->errors++;
                note(R, r, "get key %.*s: %s", KEY_LEN + missing, key, g_err);
                if (r->errors >= 1000) {
                    note(R, r, "1000 errors, workload stopped");
                    j++;
                    stop = 1;
                    break;
                }
                continue;
            }
            if (rc == GET_MISSING)
                continue;
            r->found++;
            if (!want) {
                r->ghost++;
                note(R, r, "get key %.*s: found a value (%zu bytes) for a key %s", KEY_LEN + missing,
                     key, got, missing ? "never written" : "absent or deleted");
            } else if (rc == GET_WRONG) {
                r->wrong++;
                note(R, r, "get key %.16s: wrong value (%zu bytes; expected the %s one, %zu bytes)",
                     key, got, bench_name[was[j] - 1], cfg.value_size);
            }
        }
        secs += now() - t0;
        i += j;
    }
    r->secs = secs;
    r->ops = i;
}

/* Checks the entry an iterator stands on; returns its key number or UINT64_MAX if it is bad. */
static uint64_t check_entry(struct run *R, struct rec *r, void *it, size_t *bytes)
{
    size_t kl = 0, vl = 0;
    const char *k = R->e->iter_key(it, &kl);
    const char *v = R->e->iter_value(it, &vl);
    uint64_t kn;
    *bytes += kl + vl;
    if (parse_key(k, kl, &kn) != 0 || kn >= cfg.num) {
        r->ghost++;
        note(R, r, "iterator returned a key never written: '%.*s'", (int)(kl > 40 ? 40 : kl), k);
        return UINT64_MAX;
    }
    if (!state[kn]) {
        r->ghost++;
        note(R, r, "iterator returned key %.16s, absent or deleted", k);
        return kn;
    }
    if (!value_matches(v, vl, value_for(kn, state[kn]), cfg.value_size)) {
        r->wrong++;
        note(R, r, "iterator: key %.16s has a wrong value (%zu bytes; expected the %s one)", k, vl,
             bench_name[state[kn] - 1]);
    }
    return kn;
}

static void do_readseq(struct run *R, struct rec *r)
{
    size_t bytes = 0;
    uint64_t prev = 0, n = 0;
    for (uint64_t k = 0; k < cfg.num; k++)
        r->expected += state[k] != 0;
    void *it = R->e->iter_new(R->h);
    if (it == NULL) {
        r->failed = 1;
        r->errors++;
        note(R, r, "%s", g_err);
        return;
    }
    double t0 = now();
    for (R->e->iter_seek(it, "", 0); R->e->iter_valid(it); R->e->iter_next(it)) {
        uint64_t kn = check_entry(R, r, it, &bytes);
        if (kn != UINT64_MAX) {
            if (n > 0 && kn <= prev) {
                r->wrong++;
                note(R, r, "iterator out of order: key %016" PRIu64 " after %016" PRIu64, kn, prev);
            }
            prev = kn;
        }
        n++;
        if (n > cfg.num + 1000) {
            note(R, r, "iterator returned more entries than keys exist; stopped");
            break;
        }
    }
    r->secs = now() - t0;
    if (R->e->iter_status(it) != 0) {
        r->failed = 1;
        r->errors++;
        note(R, r, "%s", g_err);
    }
    R->e->iter_free(it);
    r->ops = n;
    r->found = n - r->ghost;
    r->bytes = bytes;
}

static void do_seek(struct run *R, struct rec *r)
{
    size_t bytes = 0;
    char key[KEY_LEN];
    void *it = R->e->iter_new(R->h);
    if (it == NULL) {
        r->failed = 1;
        r->errors++;
        note(R, r, "%s", g_err);
        return;
    }
    double t0 = now();
    for (uint64_t i = 0; i < cfg.num; i++) {
        uint64_t k = rng_key();
        fmt_key(key, k);
        r->expected += state[k] != 0;
        R->e->iter_seek(it, key, KEY_LEN);
        if (!R->e->iter_valid(it)) {
            /* Past the end is right only if no key >= k exists. */
            for (uint64_t j = k; j < cfg.num; j++)
                if (state[j]) {
                    r->wrong++;
                    note(R, r, "seek %.16s: iterator invalid, but key %016" PRIu64 " exists",
                         key, j);
                    break;
                }
            continue;
        }
        uint64_t kn = check_entry(R, r, it, &bytes);
        if (kn == k) {
            r->found++;
        } else if (kn != UINT64_MAX) {
            /* It must land on the first present key after k. */
            uint64_t j = k;
            while (j < kn && !state[j])
                j++;
            if (j != kn || kn < k) {
                r->wrong++;
                note(R, r, "seek %.16s landed on %016" PRIu64 ", expected %016" PRIu64, key, kn, j);
            }
        }
        for (int s = 0; s < cfg.seek_nexts; s++) {
            R->e->iter_next(it);
            if (!R->e->iter_valid(it))
                break;
            check_entry(R, r, it, &bytes);
        }
    }
    r->secs = now() - t0;
    if (R->e->iter_status(it) != 0) {
        r->failed = 1;
        r->errors++;
        note(R, r, "%s", g_err);
    }
    R->e->iter_free(it);
    r->ops = cfg.num;
}

static void print_result(const struct run *R, const struct rec *r)
{
    char extra[160] = "";
    double ops_s = r->secs > 0 ? (double)r->ops / r->secs : 0;
    int n = 0;
    if (r->bytes && r->bench != B_SEEKRANDOM)
        n = snprintf(extra, sizeof extra, " %7.1f MB/s;", r->secs > 0 ? mb(r->bytes) / r->secs : 0);
    switch (r->bench) {
    case B_READRANDOM: case B_READMISSING: case B_SEEKRANDOM: case B_READSEQ:
        snprintf(extra + n, sizeof extra - (size_t)n, " found %" PRIu64 " of %" PRIu64
                 " (expected %" PRIu64 ")%s", r->found, r->ops, r->expected,
                 r->check_failed ? " CHECK FAILED" : "");
        break;
    default:
        snprintf(extra + n, sizeof extra - (size_t)n, " %" PRIu64 " ops%s", r->ops,
                 r->failed ? " FAILED" : "");
    }
    printf("%-8s %-12s : %10.3f micros/op; %10.0f ops/s;%s\n", R->e->name, bench_name[r->bench],
           r->ops ? r->secs * 1e6 / (double)r->ops : 0.0, ops_s, extra);
}

static void sync_all(void)
{
    sync();
    struct timespec ts = { 0, 200 * 1000000L };
    nanosleep(&ts, NULL);
}

static void run_engine(const struct engine *e, int ei, const char *dir, int wfd)
{
    struct run R;
    memset(&R, 0, sizeof R);
    R.e = e;
    R.ei = ei;
    R.dir = dir;
    R.wfd = wfd;
    /* Engines run one after another, so a busy machine skews the comparison: say how busy. */
    double load[1] = { -1 };
    getloadavg(load, 1);
    printf("%-8s start        : load average %.2f on %ld CPUs\n", e->name, load[0],
           sysconf(_SC_NPROCESSORS_ONLN));
    rm_tree(dir);
    memset(state, 0, cfg.num);
    for (int slot = 0; slot < cfg.nbenches; slot++) {
        int b = cfg.benches[slot];
        int fresh = b == B_FILLSEQ || b == B_FILLRANDOM || b == B_FILLSYNC;
        int sync = b == B_FILLSYNC;
        int reads = b == B_READRANDOM || b == B_READMISSING || b == B_READSEQ || b == B_SEEKRANDOM;
        struct rec r;
        memset(&r, 0, sizeof r);
        r.slot = slot;
        r.bench = b;
        r.kind = REC_BEGIN;
        emit(&R, &r);
        r.kind = REC_RESULT;
        R.reports = 0;

        if (R.h && (fresh || sync != R.sync || (reads && R.dirty)))
            close_db(&R);
        /* Every fsync waits for the journal, which waits for whatever the page cache still holds
           of earlier sessions: write that back first (untimed), so a synced workload measures the
           engine, not whoever happened to write before it. */
        if (sync)
            sync_all();
        if (R.h == NULL && open_db(&R, fresh, sync) != 0) {
            r.failed = 1;
            r.errors = 1;
            note(&R, &r, "%s", g_err);
            emit(&R, &r);
            continue;
        }
        size_t len = strlen(R.label);
        snprintf(R.label + len, sizeof R.label - len, "%s%s", len ? "," : "", bench_name[b]);

        rng_seed(b);
        switch (b) {
        case B_READRANDOM: case B_READMISSING: do_get(&R, &r); break;
        case B_READSEQ: do_readseq(&R, &r); break;
        case B_SEEKRANDOM: do_seek(&R, &r); break;
        default: do_write(&R, &r); break;
        }
        r.check_failed = r.wrong || r.ghost || (reads && r.found != r.expected);
        print_result(&R, &r);
        emit(&R, &r);
    }
    if (R.h)
        close_db(&R);
    if (!cfg.keep)
        rm_tree(dir);
}

/* ---- the parent: runs engines, collects records, prints the summary ---- */

enum { CELL_NONE, CELL_BEGUN, CELL_DONE, CELL_CRASHED, CELL_HUNG };

static struct {
    int cell[MAX_ENGINES][MAX_BENCHES];        /* CELL_* */
    struct rec res[MAX_ENGINES][MAX_BENCHES];
    struct rec sess[MAX_ENGINES][MAX_SESSIONS];
    int nsess[MAX_ENGINES];
    char death[MAX_ENGINES][128];              /* how a child died, if it did */
} out;

static void collect(int ei, const struct rec *r)
{
    switch (r->kind) {
    case REC_BEGIN:
        out.cell[ei][r->slot] = CELL_BEGUN;
        break;
    case REC_RESULT:
        out.cell[ei][r->slot] = CELL_DONE;
        out.res[ei][r->slot] = *r;
        break;
    case REC_SESSION:
        if (out.nsess[ei] < MAX_SESSIONS)
            out.sess[ei][out.nsess[ei]++] = *r;
        break;
    }
}

static void mark_death(int ei, int how, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out.death[ei], sizeof out.death[ei], fmt, ap);
    va_end(ap);
    for (int s = 0; s < cfg.nbenches; s++)
        if (out.cell[ei][s] == CELL_BEGUN) {
            out.cell[ei][s] = how;
            printf("%-8s %-12s : %s\n", engine_tab[cfg.engines[ei]].name,
                   bench_name[cfg.benches[s]], out.death[ei]);
        }
}

static void run_child(int ei, const char *dir)
{
    int fd[2];
    if (pipe(fd) != 0) {
        perror("pipe");
        exit(1);
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(1);
    }
    if (pid == 0) {
        close(fd[0]);
        run_engine(&engine_tab[cfg.engines[ei]], ei, dir, fd[1]);
        fflush(stdout);
        _exit(0);
    }
    close(fd[1]);

    struct rec r;
    size_t have = 0;
    double last = now();
    int killed = 0;
    for (;;) {
        struct pollfd p = { .fd = fd[0], .events = POLLIN };
        int rc = poll(&p, 1, 1000);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc == 0) {
            if (cfg.timeout > 0 && now() - last > cfg.timeout) {
                kill(pid, SIGKILL);
                killed = 1;
                break;
            }
            continue;
        }
        ssize_t n = read(fd[0], (char *)&r + have, sizeof r - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        have += (size_t)n;
        if (have == sizeof r) {
            collect(ei, &r);
            have = 0;
            last = now();
        }
    }
    close(fd[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (killed)
        mark_death(ei, CELL_HUNG, "HUNG: no progress for %.0f s, killed (--timeout)", cfg.timeout);
    else if (WIFSIGNALED(status))
        mark_death(ei, CELL_CRASHED, "CRASHED: killed by signal %d (%s)", WTERMSIG(status),
                   strsignal(WTERMSIG(status)));
    else if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
        mark_death(ei, CELL_CRASHED, "CRASHED: exited with status %d", WEXITSTATUS(status));
}

static double cell_rate(int ei, int s)
{
    const struct rec *r = &out.res[ei][s];
    if (out.cell[ei][s] != CELL_DONE || r->failed || r->secs <= 0)
        return -1;
    return (double)r->ops / r->secs;
}

static void fmt_cell(char *buf, size_t n, int ei, int s)
{
    static const char *const word[] = { "-", "-", "", "CRASH", "HUNG" };
    double v = cell_rate(ei, s);
    if (out.cell[ei][s] == CELL_DONE && v < 0)
        snprintf(buf, n, "FAIL");
    else if (out.cell[ei][s] != CELL_DONE)
        snprintf(buf, n, "%s", word[out.cell[ei][s]]);
    else
        snprintf(buf, n, "%.0f%s", v, out.res[ei][s].check_failed ? " (BAD)" : "");
}

static int lsm_index(void)
{
    for (int ei = 0; ei < cfg.nengines; ei++)
        if (strcmp(engine_tab[cfg.engines[ei]].name, "liblsm") == 0)
            return ei;
    return -1;
}

/* Prints the summary; returns 1 if anything failed or a check did not hold. */
static int summarize(void)
{
    int li = lsm_index(), bad = 0;
    char cell[64];

    printf("\n## ops/s (num=%" PRIu64 ", value_size=%zu, compression=%s)\n\n| %-12s |", cfg.num,
           cfg.value_size, comp_name[cfg.compression], "workload");
    for (int ei = 0; ei < cfg.nengines; ei++)
        printf(" %14s |", engine_tab[cfg.engines[ei]].name);
    for (int ei = 0; ei < cfg.nengines; ei++)
        if (li >= 0 && ei != li)
            printf(" lsm/%-7s |", engine_tab[cfg.engines[ei]].name);
    printf("\n|--------------|");
    for (int ei = 0; ei < cfg.nengines; ei++)
        printf("----------------|");
    for (int ei = 0; ei < cfg.nengines; ei++)
        if (li >= 0 && ei != li)
            printf("-------------|");
    printf("\n");
    for (int s = 0; s < cfg.nbenches; s++) {
        printf("| %-12s |", bench_name[cfg.benches[s]]);
        for (int ei = 0; ei < cfg.nengines; ei++) {
            fmt_cell(cell, sizeof cell, ei, s);
            printf(" %14s |", cell);
        }
        for (int ei = 0; ei < cfg.nengines; ei++) {
            if (li < 0 || ei == li)
                continue;
            double a = cell_rate(li, s), b = cell_rate(ei, s);
            if (a >= 0 && b > 0)
                printf(" %11.2f |", a / b);
            else
                printf(" %11s |", "-");
        }
        printf("\n");
    }

    printf("\n## sessions, open..close (written = bytes passed to write(2) by the process: WAL, "
           "tables, metadata; disk = du after the close)\n\n");
    printf("| %-8s | %-56s | %9s | %10s | %6s | %8s | %9s |\n", "engine", "session", "user MB",
           "written MB", "io-amp", "close s", "disk MB");
    printf("|----------|----------------------------------------------------------|-----------|"
           "------------|--------|----------|-----------|\n");
    for (int ei = 0; ei < cfg.nengines; ei++)
        for (int i = 0; i < out.nsess[ei]; i++) {
            const struct rec *r = &out.sess[ei][i];
            char amp[16] = "-";
            if (r->user_bytes > 0 && r->io_bytes > 0)
                snprintf(amp, sizeof amp, "%.2f", (double)r->io_bytes / (double)r->user_bytes);
            printf("| %-8s | %-56.56s | %9.1f | %10.1f | %6s | %8.3f | %9.1f |\n",
                   engine_tab[cfg.engines[ei]].name, r->label, mb(r->user_bytes), mb(r->io_bytes),
                   amp, r->secs, mb(r->du_bytes));
        }

#ifndef NO_LSM
    if (li >= 0) {
        int any = 0;
        for (int i = 0; i < out.nsess[li]; i++) {
            const struct rec *r = &out.sess[li][i];
            const lsm_stats *st = &r->st;
            if (!r->has_lsm_stats)
                continue;
            if (!any++)
                printf("\n## liblsm lsm_stats, taken before each close "
                       "(counters since the open)\n");
            uint64_t lookups = st->cache_hits + st->cache_misses;
            printf("\n%s:\n  write-amp (flush+compaction)/user = ", r->label);
            if (st->user_bytes_written)
                printf("%.2f", (double)(st->flush_bytes_written + st->compaction_bytes_written) /
                                   (double)st->user_bytes_written);
            else
                printf("-");
            printf("  (user %.1f MB, wal %.1f MB, flush %.1f MB, compaction %.1f MB written / "
                   "%.1f MB read, pending %.1f MB)\n", mb(st->user_bytes_written),
                   mb(st->wal_bytes_written), mb(st->flush_bytes_written),
                   mb(st->compaction_bytes_written), mb(st->compaction_bytes_read),
                   mb(st->pending_compaction_bytes));
            printf("  cache hit rate ");
            if (lookups)
                printf("%.1f%% (%" PRIu64 " of %" PRIu64 ")", 100.0 * (double)st->cache_hits /
                       (double)lookups, st->cache_hits, lookups);
            else
                printf("-");
            printf("; stall %.3f s; flushes %" PRIu64 "; compactions %" PRIu64 " (%" PRIu64
                   " beside another, %" PRIu64 " split in two, %" PRIu64 " of several tables);"
                   " disk %.1f MB\n  tables/level:",
                   (double)st->stall_micros / 1e6, st->flushes, st->compactions,
                   st->compactions_parallel, st->compactions_split, st->compactions_grouped,
                   mb(st->disk_bytes));
            for (int l = 0; l < LSM_MAX_LEVELS; l++)
                printf(" L%d %d (%.1f MB)", l, st->tables[l], mb(st->level_bytes[l]));
            printf("\n");
        }
        if (!any)
            printf("\n(liblsm: lsm_stats_get did not return LSM_OK; no stats)\n");
    }
#endif

    printf("\n## checks\n\n");
    for (int ei = 0; ei < cfg.nengines; ei++) {
        const char *name = engine_tab[cfg.engines[ei]].name;
        if (out.death[ei][0]) {
            printf("%s: %s\n", name, out.death[ei]);
            bad = 1;
        }
        for (int s = 0; s < cfg.nbenches; s++) {
            const struct rec *r = &out.res[ei][s];
            if (out.cell[ei][s] != CELL_DONE || !(r->failed || r->check_failed))
                continue;
            bad = 1;
            printf("%s %s: %s%sfound %" PRIu64 " expected %" PRIu64 ", wrong %" PRIu64
                   ", ghost %" PRIu64 ", errors %" PRIu64 "; first: %s\n", name,
                   bench_name[r->bench], r->failed ? "ERROR; " : "",
                   r->check_failed ? "CHECK FAILED; " : "", r->found, r->expected, r->wrong,
                   r->ghost, r->errors, r->msg);
        }
    }
    if (!bad)
        printf("all workloads ran and every check held\n");
    return bad;
}

static int run_all(const char *base)
{
    char dir[4096];
    memset(&out, 0, sizeof out);
    state = calloc(cfg.num, 1);
    if (state == NULL) {
        perror("calloc");
        exit(1);
    }
    printf("db_bench: num=%" PRIu64 " value_size=%zu key_size=%d compression=%s%s benchmarks=",
           cfg.num, cfg.value_size, KEY_LEN, comp_name[cfg.compression],
           cfg.compression != COMP_NONE ? " (leveldb: snappy)" : "");
    for (int s = 0; s < cfg.nbenches; s++)
        printf("%s%s", s ? "," : "", bench_name[cfg.benches[s]]);
    printf("\n          write_buffer=4MiB bloom=10 bits/key cache=8MiB block=4KiB max_open_files=%d"
           " dir=%s\n\n", MAX_OPEN_FILES, base);
    for (int ei = 0; ei < cfg.nengines; ei++) {
        snprintf(dir, sizeof dir, "%s/%s", base, engine_tab[cfg.engines[ei]].name);
        if (cfg.fork)
            run_child(ei, dir);
        else
            run_engine(&engine_tab[cfg.engines[ei]], ei, dir, -1);
    }
    free(state);
    state = NULL;
    return summarize();
}

/* ---- options ---- */

static void usage(void)
{
    fprintf(stderr,
        "usage: db_bench [--num=N] [--value_size=N] [--benchmarks=LIST] [--engines=LIST]\n"
        "                [--dir=DIR] [--compression=none|lz4|zstd] [--compression_ratio=F]\n"
        "                [--seek_nexts=N] [--seed=N] [--timeout=SECONDS] [--keep] [--fork=0|1]\n"
        "                [--scale]\n"
        "benchmarks: %s\nengines compiled in:", default_benchmarks);
    for (int i = 0; i < NENGINE_TAB; i++)
        fprintf(stderr, " %s", engine_tab[i].name);
    fprintf(stderr, "\n");
    exit(2);
}

static void parse_list(const char *list, int (*lookup)(const char *), int *arr, int *n, int max)
{
    char *copy = strdup(list), *save = NULL;
    *n = 0;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        int v = lookup(t);
        if (v < 0) {
            fprintf(stderr, "db_bench: unknown or not compiled in: %s\n", t);
            usage();
        }
        if (*n < max)
            arr[(*n)++] = v;
    }
    free(copy);
}

static int bench_lookup(const char *s)
{
    for (int b = 0; b < NBENCH; b++)
        if (strcmp(s, bench_name[b]) == 0)
            return b;
    return -1;
}

static int engine_lookup(const char *s)
{
    if (strcmp(s, "lsm") == 0)
        s = "liblsm";
    for (int i = 0; i < NENGINE_TAB; i++)
        if (strcmp(s, engine_tab[i].name) == 0)
            return i;
    return -1;
}

static const char *opt_val(const char *arg, const char *name)
{
    size_t n = strlen(name);
    if (strncmp(arg, name, n) == 0 && arg[n] == '=')
        return arg + n + 1;
    return NULL;
}

static uint64_t to_u64(const char *s)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || end == s)
        usage();
    return v;
}

int main(int argc, char **argv)
{
    const char *v, *benchmarks = default_benchmarks, *engines = NULL;
    cfg.num = 1000000;
    cfg.value_size = 100;
    cfg.compression_ratio = 0.5;
    cfg.seed = 301;
    cfg.fork = 1;
    cfg.timeout = 1800;
    cfg.dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if ((v = opt_val(a, "--num")))
            cfg.num = to_u64(v);
        else if ((v = opt_val(a, "--value_size")))
            cfg.value_size = to_u64(v);
        else if ((v = opt_val(a, "--benchmarks")))
            benchmarks = v;
        else if ((v = opt_val(a, "--engines")))
            engines = v;
        else if ((v = opt_val(a, "--dir")))
            cfg.dir = v;
        else if ((v = opt_val(a, "--compression"))) {
            if (strcmp(v, "none") == 0)
                cfg.compression = COMP_NONE;
            else if (strcmp(v, "lz4") == 0)
                cfg.compression = COMP_LZ4;
            else if (strcmp(v, "zstd") == 0)
                cfg.compression = COMP_ZSTD;
            else
                usage();
        } else if ((v = opt_val(a, "--compression_ratio")))
            cfg.compression_ratio = atof(v);
        else if ((v = opt_val(a, "--seek_nexts")))
            cfg.seek_nexts = (int)to_u64(v);
        else if ((v = opt_val(a, "--seed")))
            cfg.seed = to_u64(v);
        else if ((v = opt_val(a, "--timeout")))
            cfg.timeout = atof(v);
        else if ((v = opt_val(a, "--fork")))
            cfg.fork = (int)to_u64(v);
        else if (strcmp(a, "--keep") == 0)
            cfg.keep = 1;
        else if (strcmp(a, "--scale") == 0)
            cfg.scale = 1;
        else
            usage();
    }
    if (cfg.num == 0 || cfg.num >= 10000000000000000ull || cfg.value_size > (64u << 20))
        usage();
    if (cfg.scale)
        benchmarks = "fillrandom,readrandom";
    parse_list(benchmarks, bench_lookup, cfg.benches, &cfg.nbenches, MAX_BENCHES);
    if (engines)
        parse_list(engines, engine_lookup, cfg.engines, &cfg.nengines, MAX_ENGINES);
    else
        for (int i = 0; i < NENGINE_TAB; i++)
            cfg.engines[cfg.nengines++] = i;
    if (cfg.nengines == 0 || cfg.nbenches == 0)
        usage();

    /* Line buffering keeps a child's output in order with the parent's, and not lost in a crash. */
    setvbuf(stdout, NULL, _IOLBF, 0);
    char base[4096];
    snprintf(base, sizeof base, "%s/db_bench.XXXXXX", cfg.dir);
    if (mkdtemp(base) == NULL) {
        fprintf(stderr, "db_bench: mkdtemp %s: %s\n", base, strerror(errno));
        return 1;
    }
    make_values();

    int bad = run_all(base);
    if (cfg.scale) {
        /* Keep the small run's rates, then repeat at ten times the keys. */
        static double small[MAX_ENGINES][MAX_BENCHES];
        uint64_t small_num = cfg.num;
        for (int ei = 0; ei < cfg.nengines; ei++)
            for (int s = 0; s < cfg.nbenches; s++)
                small[ei][s] = cell_rate(ei, s);
        cfg.num *= 10;
        printf("\n");
        bad |= run_all(base);
        printf("\n## scale: ops/s at %" PRIu64 " keys vs %" PRIu64 " keys (must keep >= 70%%)\n\n"
               "| %-8s | %-12s | %12s | %12s | %6s | %-4s |\n|----------|--------------|"
               "--------------|--------------|--------|------|\n", cfg.num, small_num, "engine",
               "workload", "small", "large", "ratio", "");
        int li = lsm_index();
        for (int ei = 0; ei < cfg.nengines; ei++)
            for (int s = 0; s < cfg.nbenches; s++) {
                double a = small[ei][s], b = cell_rate(ei, s);
                int pass = a > 0 && b >= 0 && b / a >= 0.70;
                printf("| %-8s | %-12s | %12.0f | %12.0f | %6.2f | %-4s |\n",
                       engine_tab[cfg.engines[ei]].name, bench_name[cfg.benches[s]], a, b,
                       a > 0 && b >= 0 ? b / a : 0.0, pass ? "ok" : "FAIL");
                if (ei == li && !pass && !bad)
                    bad = 3;
            }
    }
    if (!cfg.keep)
        rm_tree(base);
    else
        printf("\ndatabases kept under %s\n", base);
    return bad;
}
