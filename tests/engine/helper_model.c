/*
 * helper_model.c — shared helpers of the engine integration suites: the reference model (a sorted
 * array of owned byte strings, binary-searched: the suites keep key spaces of a few thousand keys,
 * where a plain array beats anything clever and is obviously right), the seeded generator,
 * temp-dir and file helpers, and database-vs-model checks.
 *
 * The model must stay simpler than the engine it checks: no sharing, no laziness, every value
 * copied. It never calls into the engine except through lsm.h in the check_* functions.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "helper_model.h"

static void *hmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "helper: out of memory\n");
        abort();
    }
    return p;
}

static void *hrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fprintf(stderr, "helper: out of memory\n");
        abort();
    }
    return q;
}

static uint8_t *hdup(const void *p, size_t n)
{
    uint8_t *q = hmalloc(n);
    if (n)
        memcpy(q, p, n);
    return q;
}

/* ---- run configuration ---- */

uint64_t test_seed(const char *test, uint64_t deflt)
{
    const char *s = getenv("LSM_SEED");
    uint64_t seed = deflt;
    if (s && *s)
        seed = strtoull(s, NULL, 0);
    printf("# %s: seed %" PRIu64 " (set LSM_SEED=%" PRIu64 " to repeat)\n", test, seed, seed);
    fflush(stdout);
    return seed;
}

int test_sanitize(void)
{
    const char *s = getenv("LSM_SANITIZE");
    return s && *s && strcmp(s, "0") != 0;
}

long test_scale(long n)
{
    if (!test_sanitize())
        return n;
    return n / 4 > 0 ? n / 4 : 1;
}

/* ---- random numbers ---- */

void trng_seed(trng *r, uint64_t seed)
{
    r->s = seed ^ 0x5851f42d4c957f2dULL;
}

uint64_t trng_next(trng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t trng_below(trng *r, uint64_t n)
{
    return n ? trng_next(r) % n : 0;
}

int trng_chance(trng *r, unsigned percent)
{
    return trng_below(r, 100) < percent;
}

void trng_fill(trng *r, void *p, size_t n)
{
    uint8_t *q = p;
    while (n >= 8) {
        uint64_t x = trng_next(r);
        memcpy(q, &x, 8);
        q += 8;
        n -= 8;
    }
    if (n) {
        uint64_t x = trng_next(r);
        memcpy(q, &x, n);
    }
}

/* ---- byte strings ---- */

int bytes_cmp(const void *a, size_t an, const void *b, size_t bn)
{
    size_t n = an < bn ? an : bn;
    int c = n ? memcmp(a, b, n) : 0;
    if (c)
        return c;
    return an < bn ? -1 : an > bn ? 1 : 0;
}

const char *show(const void *p, size_t n)
{
    static _Thread_local char out[4][160];
    static _Thread_local int which;
    char *o = out[which++ & 3];
    const uint8_t *s = p;
    size_t j = 0;
    for (size_t i = 0; i < n && j < sizeof out[0] - 12; i++) {
        if (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '\\')
            o[j++] = (char)s[i];
        else
            j += (size_t)snprintf(o + j, 5, "\\x%02x", s[i]);
    }
    if (j >= sizeof out[0] - 12 && n)
        j += (size_t)snprintf(o + j, 12, "...(%zu)", n);
    o[j] = 0;
    return o;
}

/* ---- the model ---- */

typedef struct ment {
    uint8_t *k, *v;
    size_t kl, vl;
} ment;

struct model {
    ment *e;                /* sorted by key (bytes_cmp), no duplicates */
    size_t n, cap;
};

model *model_new(void)
{
    model *m = hmalloc(sizeof *m);
    m->e = NULL;
    m->n = m->cap = 0;
    return m;
}

void model_clear(model *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->e[i].k);
        free(m->e[i].v);
    }
    m->n = 0;
}

void model_free(model *m)
{
    if (!m)
        return;
    model_clear(m);
    free(m->e);
    free(m);
}

model *model_clone(const model *m)
{
    model *c = model_new();
    c->cap = m->n ? m->n : 1;
    c->e = hmalloc(c->cap * sizeof *c->e);
    for (size_t i = 0; i < m->n; i++) {
        c->e[i].k = hdup(m->e[i].k, m->e[i].kl);
        c->e[i].kl = m->e[i].kl;
        c->e[i].v = hdup(m->e[i].v, m->e[i].vl);
        c->e[i].vl = m->e[i].vl;
    }
    c->n = m->n;
    return c;
}

size_t model_lower_bound(const model *m, const void *k, size_t kl)
{
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (bytes_cmp(m->e[mid].k, m->e[mid].kl, k, kl) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int model_find(const model *m, const void *k, size_t kl, size_t *at)
{
    size_t i = model_lower_bound(m, k, kl);
    *at = i;
    return i < m->n && bytes_cmp(m->e[i].k, m->e[i].kl, k, kl) == 0;
}

void model_put(model *m, const void *k, size_t kl, const void *v, size_t vl)
{
    size_t i;
    if (model_find(m, k, kl, &i)) {
        free(m->e[i].v);
        m->e[i].v = hdup(v, vl);
        m->e[i].vl = vl;
        return;
    }
    if (m->n == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 64;
        m->e = hrealloc(m->e, m->cap * sizeof *m->e);
    }
    memmove(m->e + i + 1, m->e + i, (m->n - i) * sizeof *m->e);
    m->e[i].k = hdup(k, kl);
    m->e[i].kl = kl;
    m->e[i].v = hdup(v, vl);
    m->e[i].vl = vl;
    m->n++;
}

int model_del(model *m, const void *k, size_t kl)
{
    size_t i;
    if (!model_find(m, k, kl, &i))
        return 0;
    free(m->e[i].k);
    free(m->e[i].v);
    memmove(m->e + i, m->e + i + 1, (m->n - i - 1) * sizeof *m->e);
    m->n--;
    return 1;
}

const uint8_t *model_get(const model *m, const void *k, size_t kl, size_t *vl)
{
    size_t i;
    if (!model_find(m, k, kl, &i))
        return NULL;
    if (vl)
        *vl = m->e[i].vl;
    return m->e[i].v;
}

size_t model_count(const model *m)
{
    return m->n;
}

void model_at(const model *m, size_t i, const uint8_t **k, size_t *kl, const uint8_t **v,
              size_t *vl)
{
    if (k)
        *k = m->e[i].k;
    if (kl)
        *kl = m->e[i].kl;
    if (v)
        *v = m->e[i].v;
    if (vl)
        *vl = m->e[i].vl;
}

int model_diff(const model *a, const model *b, char *why, size_t whylen)
{
    size_t i = 0, j = 0;
    while (i < a->n || j < b->n) {
        const ment *x = i < a->n ? &a->e[i] : NULL;
        const ment *y = j < b->n ? &b->e[j] : NULL;
        int c = !x ? 1 : !y ? -1 : bytes_cmp(x->k, x->kl, y->k, y->kl);
        if (c < 0) {
            if (why)
                snprintf(why, whylen, "key '%s' only in the first (index %zu)", show(x->k, x->kl), i);
            return 1;
        }
        if (c > 0) {
            if (why)
                snprintf(why, whylen, "key '%s' only in the second (index %zu)", show(y->k, y->kl), j);
            return 1;
        }
        if (x->vl != y->vl || (x->vl && memcmp(x->v, y->v, x->vl) != 0)) {
            if (why)
                snprintf(why, whylen, "key '%s': values differ (%zu bytes '%s' vs %zu bytes '%s')",
                         show(x->k, x->kl), x->vl, show(x->v, x->vl < 24 ? x->vl : 24), y->vl,
                         show(y->v, y->vl < 24 ? y->vl : 24));
            return 1;
        }
        i++;
        j++;
    }
    return 0;
}

/* ---- history ---- */

void history_init(history *h)
{
    h->b = NULL;
    h->n = h->cap = 0;
}

void history_free(history *h)
{
    for (long i = 0; i < h->n; i++) {
        for (int j = 0; j < h->b[i].n; j++) {
            free(h->b[i].ops[j].k);
            free(h->b[i].ops[j].v);
        }
        free(h->b[i].ops);
    }
    free(h->b);
    history_init(h);
}

hbatch *history_add(history *h)
{
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 64;
        h->b = hrealloc(h->b, (size_t)h->cap * sizeof *h->b);
    }
    hbatch *b = &h->b[h->n++];
    memset(b, 0, sizeof *b);
    return b;
}

static hop *hbatch_op(hbatch *b)
{
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 4;
        b->ops = hrealloc(b->ops, (size_t)b->cap * sizeof *b->ops);
    }
    hop *o = &b->ops[b->n++];
    memset(o, 0, sizeof *o);
    return o;
}

void hbatch_put(hbatch *b, const void *k, size_t kl, const void *v, size_t vl)
{
    hop *o = hbatch_op(b);
    o->k = hdup(k, kl);
    o->kl = kl;
    o->v = hdup(v, vl);
    o->vl = vl;
}

void hbatch_del(hbatch *b, const void *k, size_t kl)
{
    hop *o = hbatch_op(b);
    o->k = hdup(k, kl);
    o->kl = kl;
    o->del = 1;
}

void hbatch_apply(const hbatch *b, model *m)
{
    for (int i = 0; i < b->n; i++) {
        const hop *o = &b->ops[i];
        if (o->del)
            model_del(m, o->k, o->kl);
        else
            model_put(m, o->k, o->kl, o->v, o->vl);
    }
}

void hbatch_to_lsm(const hbatch *b, lsm_batch *lb)
{
    lsm_batch_clear(lb);
    for (int i = 0; i < b->n; i++) {
        const hop *o = &b->ops[i];
        if (o->del)
            lsm_batch_delete(lb, o->k, o->kl);
        else
            lsm_batch_put(lb, o->k, o->kl, o->v, o->vl);
    }
}

/* ---- database vs model ---- */

int model_from_db(lsm_db *db, model **out)
{
    lsm_iter *it = NULL;
    *out = NULL;
    int rc = lsm_iter_new(db, &it);
    if (rc != LSM_OK)
        return rc;
    model *m = model_new();
    const uint8_t *pk = NULL;
    size_t pkl = 0;
    for (lsm_iter_seek(it, NULL, 0); lsm_iter_valid(it); lsm_iter_next(it)) {
        size_t kl, vl;
        const void *k = lsm_iter_key(it, &kl);
        const void *v = lsm_iter_value(it, &vl);
        if (!v)   /* reading the value failed (a blob, say): the status says why */
            break;
        /* Keys must come strictly increasing; appending keeps the model sorted. */
        if (m->n && bytes_cmp(pk, pkl, k, kl) >= 0) {
            lsm_iter_free(it);
            model_free(m);
            fail_msg("iterator out of order: '%s' after '%s'", show(k, kl), show(pk, pkl));
        }
        if (m->n == m->cap) {
            m->cap = m->cap ? m->cap * 2 : 64;
            m->e = hrealloc(m->e, m->cap * sizeof *m->e);
        }
        m->e[m->n].k = hdup(k, kl);
        m->e[m->n].kl = kl;
        m->e[m->n].v = hdup(v, vl);
        m->e[m->n].vl = vl;
        pk = m->e[m->n].k;
        pkl = kl;
        m->n++;
    }
    int stopped = lsm_iter_valid(it);   /* still valid: the loop broke on a NULL value */
    rc = lsm_iter_status(it);
    lsm_iter_free(it);
    if (stopped && rc == LSM_OK)
        fail_msg("lsm_iter_value returned NULL for a valid entry with status LSM_OK");
    if (rc != LSM_OK) {
        model_free(m);
        return rc;
    }
    *out = m;
    return LSM_OK;
}

void check_iter_equals_model(lsm_iter *it, const model *m, const char *ctx)
{
    size_t i = 0;
    for (lsm_iter_seek(it, NULL, 0); lsm_iter_valid(it); lsm_iter_next(it), i++) {
        size_t kl, vl;
        const void *k = lsm_iter_key(it, &kl);
        const void *v = lsm_iter_value(it, &vl);
        if (!v)
            fail_msg("%s: lsm_iter_value failed at key '%s' (index %zu): status %d (%s) %s", ctx,
                     show(k, kl), i, lsm_iter_status(it), lsm_strerror(lsm_iter_status(it)),
                     lsm_errmsg(NULL));
        if (i >= m->n)
            fail_msg("%s: iterator has extra key '%s' at index %zu (model has %zu keys)", ctx,
                     show(k, kl), i, m->n);
        const ment *e = &m->e[i];
        if (bytes_cmp(k, kl, e->k, e->kl) != 0)
            fail_msg("%s: index %zu: iterator key '%s', model key '%s'", ctx, i, show(k, kl),
                     show(e->k, e->kl));
        if (vl != e->vl || (vl && memcmp(v, e->v, vl) != 0))
            fail_msg("%s: key '%s': iterator value %zu bytes '%s', model %zu bytes '%s'", ctx,
                     show(k, kl), vl, show(v, vl < 24 ? vl : 24), e->vl,
                     show(e->v, e->vl < 24 ? e->vl : 24));
    }
    int rc = lsm_iter_status(it);
    if (rc != LSM_OK)
        fail_msg("%s: iterator status %d (%s) at index %zu", ctx, rc, lsm_strerror(rc), i);
    if (i != m->n)
        fail_msg("%s: iterator ended after %zu keys, model has %zu (next model key '%s')", ctx, i,
                 m->n, show(m->e[i].k, m->e[i].kl));
}

void check_db_equals_model(lsm_db *db, const model *m, const char *ctx)
{
    lsm_iter *it = NULL;
    int rc = lsm_iter_new(db, &it);
    if (rc != LSM_OK)
        fail_msg("%s: lsm_iter_new: %d (%s) %s", ctx, rc, lsm_strerror(rc), lsm_errmsg(db));
    check_iter_equals_model(it, m, ctx);
    lsm_iter_free(it);
    for (size_t i = 0; i < m->n; i++) {
        const ment *e = &m->e[i];
        void *v = NULL;
        size_t vl = 0;
        rc = lsm_get(db, e->k, e->kl, &v, &vl);
        if (rc != LSM_OK)
            fail_msg("%s: lsm_get('%s') = %d (%s) %s, model has %zu bytes", ctx, show(e->k, e->kl),
                     rc, lsm_strerror(rc), lsm_errmsg(db), e->vl);
        if (vl != e->vl || (vl && memcmp(v, e->v, vl) != 0)) {
            char got[64];
            snprintf(got, sizeof got, "%s", show(v, vl < 24 ? vl : 24));
            free(v);
            fail_msg("%s: lsm_get('%s'): %zu bytes '%s', model %zu bytes '%s'", ctx,
                     show(e->k, e->kl), vl, got, e->vl, show(e->v, e->vl < 24 ? e->vl : 24));
        }
        free(v);
    }
}

/* ---- temporary directories and files ---- */

char *tmpdir_new(const char *tag)
{
    char *p = hmalloc(strlen(tag) + 32);
    sprintf(p, "/tmp/lsmtest-%s-XXXXXX", tag);
    if (!mkdtemp(p)) {
        fprintf(stderr, "mkdtemp %s: %s\n", p, strerror(errno));
        abort();
    }
    return p;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (flag == FTW_DP || flag == FTW_D)
        rmdir(path);
    else
        unlink(path);
    return 0;
}

void tmpdir_remove(const char *path)
{
    if (!path)
        return;
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

char *path_join(const char *dir, const char *name)
{
    char *p = hmalloc(strlen(dir) + strlen(name) + 2);
    sprintf(p, "%s/%s", dir, name);
    return p;
}

int file_read(const char *path, uint8_t **p, size_t *n)
{
    *p = NULL;
    *n = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return -1;
    }
    uint8_t *b = hmalloc((size_t)st.st_size);
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, b + got, (size_t)st.st_size - got);
        if (r <= 0) {
            if (r < 0 && errno == EINTR)
                continue;
            break;
        }
        got += (size_t)r;
    }
    close(fd);
    *p = b;
    *n = got;
    return 0;
}

int file_write(const char *path, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return -1;
    const uint8_t *q = p;
    while (n) {
        ssize_t w = write(fd, q, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            close(fd);
            return -1;
        }
        q += w;
        n -= (size_t)w;
    }
    return close(fd);
}

long long file_size(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return -1;
    return (long long)st.st_size;
}

int file_flip(const char *path, uint64_t off)
{
    int fd = open(path, O_RDWR);
    if (fd < 0)
        return -1;
    uint8_t c;
    if (pread(fd, &c, 1, (off_t)off) != 1) {
        close(fd);
        return -1;
    }
    c ^= 0xff;
    if (pwrite(fd, &c, 1, (off_t)off) != 1) {
        close(fd);
        return -1;
    }
    return close(fd);
}

int file_truncate(const char *path, uint64_t len)
{
    return truncate(path, (off_t)len);
}

int dir_copy(const char *from, const char *to)
{
    if (mkdir(to, 0700) != 0)
        return -1;
    DIR *d = opendir(from);
    if (!d)
        return -1;
    struct dirent *de;
    int rc = 0;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        char *src = path_join(from, de->d_name);
        char *dst = path_join(to, de->d_name);
        struct stat st;
        if (lstat(src, &st) != 0) {
            rc = -1;
        } else if (S_ISDIR(st.st_mode)) {
            rc = dir_copy(src, dst);
        } else if (S_ISREG(st.st_mode)) {
            uint8_t *p;
            size_t n;
            rc = file_read(src, &p, &n);
            if (rc == 0)
                rc = file_write(dst, p, n);
            free(p);
        }
        free(src);
        free(dst);
    }
    closedir(d);
    return rc;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int dir_names(const char *dir, const char *prefix, const char *suffix, char ***names)
{
    *names = NULL;
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int n = 0, cap = 0;
    char **v = NULL;
    struct dirent *de;
    size_t pl = strlen(prefix), sl = strlen(suffix);
    while ((de = readdir(d)) != NULL) {
        const char *s = de->d_name;
        size_t l = strlen(s);
        if (!strcmp(s, ".") || !strcmp(s, ".."))
            continue;
        if (l < pl + sl || strncmp(s, prefix, pl) != 0 || strcmp(s + l - sl, suffix) != 0)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            v = hrealloc(v, (size_t)cap * sizeof *v);
        }
        v[n++] = (char *)hdup(s, l + 1);
    }
    closedir(d);
    if (n)
        qsort(v, (size_t)n, sizeof *v, name_cmp);
    *names = v;
    return n;
}

void names_free(char **names, int n)
{
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

int db_fixture_new(void **state, const char *tag)
{
    fixture *f = calloc(1, sizeof *f);
    f->tmp = tmpdir_new(tag);
    f->dir = path_join(f->tmp, "db");
    *state = f;
    return 0;
}

int db_fixture_free(void **state)
{
    fixture *f = *state;
    tmpdir_remove(f->tmp);
    free(f->tmp);
    free(f->dir);
    free(f);
    return 0;
}
