/*
 * helper_model.h — shared helpers for the engine's integration suites (linked into every
 * tests/engine/test_* binary): a reference in-memory sorted map (the "model" a database is compared
 * with), a small seeded random generator, temporary directories and file surgery, and checks that
 * compare a database or an iterator with a model.
 *
 * Everything here aborts on out of memory; nothing here depends on engine internals, only on lsm.h.
 * The check_* functions fail the running cmocka test with a message naming the first difference.
 */
#ifndef HELPER_MODEL_H
#define HELPER_MODEL_H

#include <stddef.h>
#include <stdint.h>
#include "lsm.h"

/* ---- run configuration ---- */

/* The seed for a randomized test: LSM_SEED from the environment if set, else deflt. Prints it as a
   TAP comment so that a failing run can be repeated. */
uint64_t test_seed(const char *test, uint64_t deflt);
/* 1 when LSM_SANITIZE is set (ASan/UBSan build: run fewer iterations). */
int test_sanitize(void);
/* n, or n / 4 (at least 1) under sanitizers. */
long test_scale(long n);

/* ---- random numbers (splitmix64) ---- */
typedef struct trng {
    uint64_t s;
} trng;

void     trng_seed(trng *r, uint64_t seed);
uint64_t trng_next(trng *r);
uint64_t trng_below(trng *r, uint64_t n);          /* uniform in [0, n); 0 when n is 0 */
int      trng_chance(trng *r, unsigned percent);    /* 1 with probability percent/100 */
void     trng_fill(trng *r, void *p, size_t n);

/* ---- byte strings ---- */
int bytes_cmp(const void *a, size_t an, const void *b, size_t bn);  /* memcmp, then shorter first */
/* Printable rendering of a key for messages (static per-thread buffer, truncated). */
const char *show(const void *p, size_t n);

/* ---- the model: a sorted map of byte strings ---- */
typedef struct model model;

model *model_new(void);
void   model_free(model *m);                         /* accepts NULL */
model *model_clone(const model *m);
void   model_clear(model *m);
void   model_put(model *m, const void *k, size_t kl, const void *v, size_t vl);
int    model_del(model *m, const void *k, size_t kl); /* 1 if it was present */
/* The value of k (borrowed until the next change of m), or NULL if absent. */
const uint8_t *model_get(const model *m, const void *k, size_t kl, size_t *vl);
size_t model_count(const model *m);
size_t model_lower_bound(const model *m, const void *k, size_t kl); /* first index with key >= k */
void   model_at(const model *m, size_t i, const uint8_t **k, size_t *kl, const uint8_t **v,
                size_t *vl);
/* 0 if equal; else 1 and a description of the first difference in why (may be NULL). */
int    model_diff(const model *a, const model *b, char *why, size_t whylen);

/* ---- operations history: what a workload wrote, batch by batch ---- */
typedef struct hop {
    uint8_t *k, *v;
    size_t kl, vl;
    int del;
} hop;

typedef struct hbatch {
    hop *ops;
    int n, cap;
    int sync;                      /* written with sync = 1 */
    int acked;                     /* the engine returned LSM_OK */
} hbatch;

typedef struct history {
    hbatch *b;
    long n, cap;
} history;

void    history_init(history *h);
void    history_free(history *h);
hbatch *history_add(history *h);                     /* a fresh empty batch at the end */
void    hbatch_put(hbatch *b, const void *k, size_t kl, const void *v, size_t vl);
void    hbatch_del(hbatch *b, const void *k, size_t kl);
void    hbatch_apply(const hbatch *b, model *m);
/* Turns the batch into an lsm_batch (cleared first). */
void    hbatch_to_lsm(const hbatch *b, lsm_batch *lb);

/* ---- database vs model ---- */

/* Reads the whole database with a fresh iterator into a new model. Returns LSM_OK or the iterator's
   failure (then *out is NULL). */
int  model_from_db(lsm_db *db, model **out);
/* Full scan of it from the first key compared with m, in order. Fails the test on a difference.
   ctx is printed in the message. */
void check_iter_equals_model(lsm_iter *it, const model *m, const char *ctx);
/* A fresh iterator's full scan and lsm_get of every key of m compared with m. */
void check_db_equals_model(lsm_db *db, const model *m, const char *ctx);

/* ---- temporary directories and files ---- */

char *tmpdir_new(const char *tag);                  /* /tmp/lsmtest-tag-XXXXXX; caller frees */

/* A test's database place: a fresh temp directory and tmp/db in it (not created). For cmocka
   group setups: db_fixture_new(state, tag) and db_fixture_free(state). */
typedef struct fixture {
    char *tmp;                /* the temp directory */
    char *dir;                /* tmp/db, the database directory */
} fixture;
int  db_fixture_new(void **state, const char *tag);
int  db_fixture_free(void **state);
/* Fails the running test when expr is not LSM_OK, with db's message. */
#define CHECK_OK(db, expr) do { \
        int rc_ = (expr); \
        if (rc_ != LSM_OK) \
            fail_msg("%s = %d (%s): %s", #expr, rc_, lsm_strerror(rc_), lsm_errmsg(db)); \
    } while (0)
void  tmpdir_remove(const char *path);              /* rm -rf; accepts NULL */
char *path_join(const char *dir, const char *name); /* caller frees */
int   dir_copy(const char *from, const char *to);   /* to must not exist; 0 or -1 */
/* Sorted names in dir (without . and ..) that start with prefix and end with suffix (either may be
   ""). Returns the count; *names is malloc'd, freed with names_free. */
int   dir_names(const char *dir, const char *prefix, const char *suffix, char ***names);
void  names_free(char **names, int n);
int   file_read(const char *path, uint8_t **p, size_t *n);   /* 0 or -1; caller frees *p */
int   file_write(const char *path, const void *p, size_t n); /* 0 or -1; replaces */
long long file_size(const char *path);                       /* -1 if missing */
int   file_flip(const char *path, uint64_t off);             /* xor 0xff at off; 0 or -1 */
int   file_truncate(const char *path, uint64_t len);         /* 0 or -1 */

#endif /* HELPER_MODEL_H */
