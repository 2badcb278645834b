/*
 * ctl_cmd.c — the commands of lsmctl(1) (see ctl_cmd.h): get, put, del, scan, dump, load, backup,
 * check, stats, compact, flush and script, run on an open handle; and repair, on a directory.
 *
 * The same code serves lsmctl offline and, later, lsmfs for a command sent through its control
 * socket, so it holds no global state, never exits and talks only through the streams it is
 * given. Keys and values are arbitrary bytes: they are shown escaped (printable ASCII but the
 * backslash as is; "\\" and "\xHH" for the rest) or, with --hex, as hex, and every key argument is
 * read back the same way, so whatever scan prints can be given to get. The dump stream is the
 * portable form of a database: a versioned header, each entry with its own checksum, and an end
 * record with the count and a checksum of the whole stream (format in lsmctl(1), DUMP FORMAT). It
 * uses nothing but lsm.h and libc: a database is seen exactly as any embedder sees it.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ctl_cmd.h"

#define DUMP_MAGIC   "lsmdump\n"
#define DUMP_VERSION 1
#define DUMP_ENTRY   0x01
#define DUMP_END     0x02
#define LOAD_BATCH_BYTES (4u << 20)
#define LOAD_INLINE_MAX  (16u << 20)   /* longer values are loaded with a value writer */

/* ---- small helpers ---- */

typedef struct bytes {
    unsigned char *p;
    size_t len, cap;
} bytes;

static int bytes_reserve(bytes *b, size_t extra)
{
    if (b->len + extra <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + extra)
        cap *= 2;
    unsigned char *p = realloc(b->p, cap);
    if (!p)
        return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

/* Bytewise order, the shorter first on a tie: the engine's key order. */
static int bytes_cmp(const bytes *a, const bytes *b)
{
    size_t n = a->len < b->len ? a->len : b->len;
    int c = n ? memcmp(a->p, b->p, n) : 0;
    return c ? c : a->len < b->len ? -1 : a->len > b->len;
}

/* FNV-1a, 64 bits: the dump stream's checksum (no library beyond libc here). */
static uint64_t fnv64(uint64_t h, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 1099511628211ull;
    return h;
}
#define FNV64_INIT 14695981039346656037ull

static void le32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void le64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const unsigned char *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

/* The exit status for an engine failure. */
static int ctl_status(int rc)
{
    switch (rc) {
    case LSM_OK: return CTL_EXIT_OK;
    case LSM_NOTFOUND: return CTL_EXIT_NOTFOUND;
    case LSM_CORRUPT: return CTL_EXIT_DAMAGED;
    case LSM_BUSY: return CTL_EXIT_BUSY;
    default: return CTL_EXIT_ERROR;
    }
}

static int ctl_fail(lsm_db *db, FILE *err, const char *what, int rc)
{
    const char *msg = lsm_errmsg(db);
    fprintf(err, "lsmctl: %s: %s%s%s\n", what, lsm_strerror(rc), *msg ? ": " : "", msg);
    return ctl_status(rc);
}

/* Writes p as text: hex, or escaped (printable ASCII but '\' as is; "\\" and "\xHH" else). */
static void put_text(FILE *out, const void *p, size_t n, int hex)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) {
        if (hex)
            fprintf(out, "%02x", s[i]);
        else if (s[i] == '\\')
            fputs("\\\\", out);
        else if (s[i] >= 0x20 && s[i] < 0x7f)
            putc(s[i], out);
        else
            fprintf(out, "\\x%02x", s[i]);
    }
}

static int hexval(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Reads text back into bytes (replacing b's content): hex, or the escaping put_text writes. */
static int get_text(const char *s, int hex, bytes *b)
{
    b->len = 0;
    size_t n = strlen(s);
    if (bytes_reserve(b, n + 1))
        return -1;
    for (size_t i = 0; i < n;) {
        if (hex) {
            int a = hexval(s[i]), c = i + 1 < n ? hexval(s[i + 1]) : -1;
            if (a < 0 || c < 0)
                return -1;
            b->p[b->len++] = (unsigned char)(a << 4 | c);
            i += 2;
        } else if (s[i] != '\\') {
            b->p[b->len++] = (unsigned char)s[i++];
        } else if (s[i + 1] == '\\') {
            b->p[b->len++] = '\\';
            i += 2;
        } else if (s[i + 1] == 'x' && i + 3 < n + 1 && hexval(s[i + 2]) >= 0 &&
                   hexval(s[i + 3]) >= 0) {
            b->p[b->len++] = (unsigned char)(hexval(s[i + 2]) << 4 | hexval(s[i + 3]));
            i += 4;
        } else {
            return -1;
        }
    }
    return 0;
}

/* A key argument: hex or escaped, 1..LSM_MAX_KEY bytes. */
static int get_key(const char *s, int hex, bytes *b, FILE *err)
{
    if (get_text(s, hex, b) != 0) {
        fprintf(err, "lsmctl: %s: not a valid %s key\n", s, hex ? "hex" : "escaped");
        return -1;
    }
    if (b->len == 0 || b->len > LSM_MAX_KEY) {
        fprintf(err, "lsmctl: %s: a key is 1 to %u bytes\n", s, LSM_MAX_KEY);
        return -1;
    }
    return 0;
}

/* Reads all of f into b. */
static int read_all(FILE *f, bytes *b)
{
    for (;;) {
        if (bytes_reserve(b, 65536))
            return -1;
        size_t r = fread(b->p + b->len, 1, b->cap - b->len, f);
        b->len += r;
        if (r == 0)
            return ferror(f) ? -1 : 0;
    }
}

/* Progress on a terminal: at most a line every half second, erased at the end. */
typedef struct progress {
    FILE *err;
    int tty;
    struct timespec last;
    int shown;
} progress;

static void progress_init(progress *pg, FILE *err)
{
    pg->err = err;
    pg->tty = isatty(fileno(err));
    clock_gettime(CLOCK_MONOTONIC, &pg->last);
    pg->shown = 0;
}

static void progress_show(progress *pg, const char *what, uint64_t n, uint64_t bytes_done)
{
    if (!pg->tty)
        return;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if ((now.tv_sec - pg->last.tv_sec) * 1000 + (now.tv_nsec - pg->last.tv_nsec) / 1000000 < 500)
        return;
    pg->last = now;
    fprintf(pg->err, "\r%s: %" PRIu64 " keys, %" PRIu64 " MiB ", what, n, bytes_done >> 20);
    fflush(pg->err);
    pg->shown = 1;
}

static void progress_end(progress *pg)
{
    if (pg->shown)
        fputs("\r\033[K", pg->err);
}

/* For a call that reports nothing while it works (check, backup, compact, repair): the time spent
   so far, once a second, on a terminal. */
typedef struct ticker {
    FILE *err;
    const char *what;
    int on;                    /* a thread runs */
    int stop;                  /* guarded by mu */
    int shown;                 /* a line is on the terminal */
    pthread_t t;
    pthread_mutex_t mu;
    pthread_cond_t cv;
} ticker;

static void *ticker_main(void *arg)
{
    ticker *tk = arg;
    struct timespec t0, at;
    clock_gettime(CLOCK_REALTIME, &t0);
    at = t0;
    pthread_mutex_lock(&tk->mu);
    while (!tk->stop) {
        at.tv_sec++;
        if (pthread_cond_timedwait(&tk->cv, &tk->mu, &at) != 0 && !tk->stop) {
            fprintf(tk->err, "\r%s: %ld s ", tk->what, (long)(at.tv_sec - t0.tv_sec));
            fflush(tk->err);
            tk->shown = 1;
        }
    }
    pthread_mutex_unlock(&tk->mu);
    return NULL;
}

static void ticker_start(ticker *tk, FILE *err, const char *what)
{
    memset(tk, 0, sizeof *tk);
    tk->err = err;
    tk->what = what;
    if (!isatty(fileno(err)))
        return;
    pthread_mutex_init(&tk->mu, NULL);
    pthread_cond_init(&tk->cv, NULL);
    tk->on = pthread_create(&tk->t, NULL, ticker_main, tk) == 0;
    if (!tk->on) {
        pthread_mutex_destroy(&tk->mu);
        pthread_cond_destroy(&tk->cv);
    }
}

static void ticker_stop(ticker *tk)
{
    if (!tk->on)
        return;
    pthread_mutex_lock(&tk->mu);
    tk->stop = 1;
    pthread_cond_signal(&tk->cv);
    pthread_mutex_unlock(&tk->mu);
    pthread_join(tk->t, NULL);
    if (tk->shown)
        fputs("\r\033[K", tk->err);
    pthread_mutex_destroy(&tk->mu);
    pthread_cond_destroy(&tk->cv);
}

/* ---- the commands ---- */

typedef struct ctl {
    lsm_db *db;
    FILE *in, *out, *err;
    int hex;                   /* --hex given */
    bytes k, v;                /* scratch */
    lsm_value_writer *vw;      /* load: the long value being read, or NULL */
} ctl;

static int usage_of(ctl *c, const char *cmd, const char *args)
{
    fprintf(c->err, "usage: lsmctl [-d DATADIR] %s %s\n", cmd, args);
    return CTL_EXIT_USAGE;
}

static int cmd_get(ctl *c, int argc, char **argv)
{
    int escape = 0, i = 1;
    for (; i < argc && argv[i][0] == '-' && argv[i][1] == '-'; i++) {
        if (strcmp(argv[i], "--escape") == 0)
            escape = 1;
        else if (strcmp(argv[i], "--hex") == 0)
            c->hex = 1;
        else
            break;
    }
    if (argc - i != 1)
        return usage_of(c, "get", "[--escape | --hex] KEY");
    if (get_key(argv[i], c->hex, &c->k, c->err))
        return CTL_EXIT_USAGE;
    /* by range, a piece at a time: a value of any size (an extent map past 1 GiB too) */
    size_t cap = 1u << 20;
    unsigned char *piece = malloc(cap);
    if (!piece) {
        fprintf(c->err, "lsmctl: get: out of memory\n");
        return CTL_EXIT_ERROR;
    }
    uint64_t off = 0, vlen = 0;
    size_t got = 0;
    int rc;
    do {
        rc = lsm_get_range(c->db, c->k.p, c->k.len, off, piece, cap, &got, &vlen);
        if (rc != LSM_OK)
            break;
        if (c->hex || escape)
            put_text(c->out, piece, got, c->hex);
        else
            fwrite(piece, 1, got, c->out);
        off += got;
    } while (off < vlen && got > 0);
    free(piece);
    if (rc == LSM_NOTFOUND) {
        fprintf(c->err, "lsmctl: %s: not found\n", argv[i]);
        return CTL_EXIT_NOTFOUND;
    }
    if (rc != LSM_OK)
        return ctl_fail(c->db, c->err, "get", rc);
    if (c->hex || escape)
        putc('\n', c->out);
    return CTL_EXIT_OK;
}

static int cmd_put(ctl *c, int argc, char **argv)
{
    if (argc != 2 && argc != 3)
        return usage_of(c, "put", "KEY [VALUE]   (without VALUE: the value is stdin)");
    if (get_key(argv[1], c->hex, &c->k, c->err))
        return CTL_EXIT_USAGE;
    if (argc == 3) {
        if (get_text(argv[2], c->hex, &c->v) != 0) {
            fprintf(c->err, "lsmctl: %s: not a valid %s value\n", argv[2],
                    c->hex ? "hex" : "escaped");
            return CTL_EXIT_USAGE;
        }
    } else {
        if (!c->in) {
            fprintf(c->err, "lsmctl: put: no VALUE and no input to read it from\n");
            return CTL_EXIT_USAGE;
        }
        c->v.len = 0;
        if (read_all(c->in, &c->v) != 0) {
            fprintf(c->err, "lsmctl: put: reading the value: %s\n", strerror(errno));
            return CTL_EXIT_ERROR;
        }
    }
    int rc = lsm_put(c->db, c->k.p, c->k.len, c->v.p, c->v.len);
    if (rc == LSM_OK)
        rc = lsm_sync(c->db);
    return rc == LSM_OK ? CTL_EXIT_OK : ctl_fail(c->db, c->err, "put", rc);
}

static int cmd_del(ctl *c, int argc, char **argv)
{
    if (argc != 2)
        return usage_of(c, "del", "KEY");
    if (get_key(argv[1], c->hex, &c->k, c->err))
        return CTL_EXIT_USAGE;
    uint64_t vlen;
    int rc = lsm_get_size(c->db, c->k.p, c->k.len, &vlen);
    if (rc == LSM_NOTFOUND) {
        fprintf(c->err, "lsmctl: %s: not found\n", argv[1]);
        return CTL_EXIT_NOTFOUND;
    }
    if (rc == LSM_OK)
        rc = lsm_delete(c->db, c->k.p, c->k.len);
    if (rc == LSM_OK)
        rc = lsm_sync(c->db);
    return rc == LSM_OK ? CTL_EXIT_OK : ctl_fail(c->db, c->err, "del", rc);
}

static int cmd_scan(ctl *c, int argc, char **argv)
{
    bytes from = { 0 }, to = { 0 }, prefix = { 0 };
    const char *afrom = NULL, *ato = NULL, *aprefix = NULL;
    int values = 0, status = CTL_EXIT_OK;
    long long limit = -1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--values") == 0)
            values = 1;
        else if (strcmp(argv[i], "--hex") == 0)
            c->hex = 1;
        else if (strcmp(argv[i], "--from") == 0 && i + 1 < argc)
            afrom = argv[++i];
        else if (strcmp(argv[i], "--to") == 0 && i + 1 < argc)
            ato = argv[++i];
        else if (strcmp(argv[i], "--prefix") == 0 && i + 1 < argc)
            aprefix = argv[++i];
        else if (strcmp(argv[i], "--limit") == 0 && i + 1 < argc)
            limit = atoll(argv[++i]);
        else
            return usage_of(c, "scan", "[--from KEY] [--to KEY] [--prefix P] [--values] [--hex] "
                            "[--limit N]");
    }
    if ((afrom && get_key(afrom, c->hex, &from, c->err)) ||
        (ato && get_key(ato, c->hex, &to, c->err)) ||
        (aprefix && get_text(aprefix, c->hex, &prefix) != 0)) {
        if (aprefix && !prefix.p)
            fprintf(c->err, "lsmctl: %s: not a valid prefix\n", aprefix);
        status = CTL_EXIT_USAGE;
        goto out;
    }
    lsm_iter *it;
    int rc = lsm_iter_new(c->db, &it);
    if (rc != LSM_OK) {
        status = ctl_fail(c->db, c->err, "scan", rc);
        goto out;
    }
    /* start at the later of --from and --prefix; stop at --to */
    const bytes *start = bytes_cmp(&prefix, &from) > 0 ? &prefix : &from;
    if (to.len)
        lsm_iter_set_upper_bound(it, to.p, to.len);
    progress pg;
    progress_init(&pg, c->err);
    uint64_t n = 0, nbytes = 0;
    for (lsm_iter_seek(it, start->p, start->len); lsm_iter_valid(it) && limit != 0;
         lsm_iter_next(it)) {
        size_t kl, vl = 0;
        const void *k = lsm_iter_key(it, &kl);
        if (prefix.len && (kl < prefix.len || memcmp(k, prefix.p, prefix.len) != 0))
            break;
        put_text(c->out, k, kl, c->hex);
        if (values) {
            const void *v = lsm_iter_value(it, &vl);
            if (!v)
                break;
            putc('\t', c->out);
            put_text(c->out, v, vl, c->hex);
        }
        putc('\n', c->out);
        n++;
        nbytes += kl + vl;
        if (limit > 0)
            limit--;
        progress_show(&pg, "scan", n, nbytes);
    }
    progress_end(&pg);
    rc = lsm_iter_status(it);
    lsm_iter_free(it);
    if (rc != LSM_OK)
        status = ctl_fail(c->db, c->err, "scan", rc);
out:
    free(from.p);
    free(to.p);
    free(prefix.p);
    return status;
}

/* ---- dump and load ---- */

/* The dump stream being written: its running checksum and counts. */
typedef struct dumper {
    ctl *c;
    uint64_t all, n, bytes;
} dumper;

static void dump_put(dumper *d, const void *p, size_t n)
{
    fwrite(p, 1, n, d->c->out);
    d->all = fnv64(d->all, p, n);
}

/* Writes one entry whose value is in memory. */
static void dump_entry(dumper *d, const void *k, size_t kl, const void *v, uint64_t vl)
{
    unsigned char rh[13], sum[8];
    rh[0] = DUMP_ENTRY;
    le32(rh + 1, (uint32_t)kl);
    le64(rh + 5, vl);
    le64(sum, fnv64(fnv64(fnv64(FNV64_INIT, rh, sizeof rh), k, kl), v, (size_t)vl));
    dump_put(d, rh, sizeof rh);
    dump_put(d, k, kl);
    dump_put(d, v, (size_t)vl);
    dump_put(d, sum, 8);
    d->n++;
    d->bytes += kl + vl;
}

/* Writes one entry whose value is too long to hold (past LSM_MAX_VALUE): read by range through
   a value reader, at its current version. */
static int dump_entry_by_range(dumper *d, const void *k, size_t kl)
{
    lsm_value_reader *r;
    int rc = lsm_value_reader_open(d->c->db, k, kl, &r);
    if (rc != LSM_OK)
        return rc;
    uint64_t vl = lsm_value_reader_size(r);
    unsigned char rh[13], sum[8];
    rh[0] = DUMP_ENTRY;
    le32(rh + 1, (uint32_t)kl);
    le64(rh + 5, vl);
    uint64_t h = fnv64(fnv64(FNV64_INIT, rh, sizeof rh), k, kl);
    dump_put(d, rh, sizeof rh);
    dump_put(d, k, kl);
    size_t cap = 1u << 20;
    unsigned char *piece = malloc(cap);
    if (!piece)
        rc = LSM_NOMEM;
    for (uint64_t off = 0; rc == LSM_OK && off < vl;) {
        size_t got = 0;
        rc = lsm_value_reader_read(r, off, piece, cap, &got);
        if (rc == LSM_OK && got == 0)
            rc = LSM_CORRUPT;
        if (rc == LSM_OK) {
            h = fnv64(h, piece, got);
            dump_put(d, piece, got);
            off += got;
        }
    }
    free(piece);
    lsm_value_reader_close(r);
    if (rc == LSM_OK) {
        le64(sum, h);
        dump_put(d, sum, 8);
        d->n++;
        d->bytes += kl + vl;
    }
    return rc;
}

static int cmd_dump(ctl *c, int argc, char **argv)
{
    if (argc != 1)
        return usage_of(c, "dump", "> FILE");
    if (isatty(fileno(c->out))) {
        fprintf(c->err, "lsmctl: dump: the stream is binary: redirect it to a file or a pipe\n");
        return CTL_EXIT_USAGE;
    }
    dumper d = { .c = c, .all = FNV64_INIT };
    unsigned char h[16];
    memcpy(h, DUMP_MAGIC, 8);
    le32(h + 8, DUMP_VERSION);
    le32(h + 12, 0);
    dump_put(&d, h, sizeof h);
    lsm_iter *it;
    int rc = lsm_iter_new(c->db, &it);
    if (rc != LSM_OK)
        return ctl_fail(c->db, c->err, "dump", rc);
    progress pg;
    progress_init(&pg, c->err);
    bytes after = { 0 };        /* where to go on after a value read by range */
    lsm_iter_seek(it, NULL, 0);
    while (rc == LSM_OK && lsm_iter_valid(it)) {
        size_t kl, vl;
        const void *k = lsm_iter_key(it, &kl);
        const void *v = lsm_iter_value(it, &vl);
        if (v) {
            dump_entry(&d, k, kl, v, vl);
            lsm_iter_next(it);
        } else if (lsm_iter_status(it) == LSM_NOMEM) {
            /* a value past LSM_MAX_VALUE: the iterator cannot hand it over and is spent; read
               the value by range, then go on with a fresh iterator after its key */
            after.len = 0;
            if (bytes_reserve(&after, kl)) {
                rc = LSM_NOMEM;
                break;
            }
            memcpy(after.p, k, kl);
            after.len = kl;
            lsm_iter_free(it);
            it = NULL;
            rc = dump_entry_by_range(&d, after.p, after.len);
            if (rc == LSM_OK)
                rc = lsm_iter_new(c->db, &it);
            if (rc == LSM_OK) {
                lsm_iter_seek(it, after.p, after.len);
                if (lsm_iter_valid(it)) {
                    const void *k2 = lsm_iter_key(it, &kl);
                    if (kl == after.len && memcmp(k2, after.p, kl) == 0)
                        lsm_iter_next(it);
                }
            }
        } else {
            break;
        }
        progress_show(&pg, "dump", d.n, d.bytes);
    }
    progress_end(&pg);
    free(after.p);
    if (rc == LSM_OK && it)
        rc = lsm_iter_status(it);
    lsm_iter_free(it);
    if (rc != LSM_OK)
        return ctl_fail(c->db, c->err, "dump", rc);
    unsigned char end[17];
    end[0] = DUMP_END;
    le64(end + 1, d.n);
    d.all = fnv64(d.all, end, 9);
    le64(end + 9, d.all);
    fwrite(end, 1, sizeof end, c->out);
    if (fflush(c->out) != 0 || ferror(c->out)) {
        fprintf(c->err, "lsmctl: dump: writing the stream: %s\n", strerror(errno));
        return CTL_EXIT_ERROR;
    }
    return CTL_EXIT_OK;
}

/* Reads exactly n bytes; 0, or -1 at a short read. */
static int read_exact(FILE *f, void *p, size_t n)
{
    return n == 0 || fread(p, 1, n, f) == n ? 0 : -1;
}

static int load_damaged(ctl *c, uint64_t off, const char *why)
{
    fprintf(c->err, "lsmctl: load: offset %" PRIu64 ": %s\n", off, why);
    return CTL_EXIT_DAMAGED;
}

/* Reads the vl bytes of a long value into a new value writer (c->vw) for key c->k, a piece at a
   time, adding them to the checksums *h and *all. */
static int load_long_value(ctl *c, uint32_t kl, uint64_t vl, uint64_t *h, uint64_t *all,
                           uint64_t off, int *rc)
{
    *rc = lsm_value_writer_open(c->db, c->k.p, kl, 0, &c->vw);
    if (*rc != LSM_OK)
        return CTL_EXIT_OK;
    size_t cap = 1u << 20;
    if (bytes_reserve(&c->v, cap)) {
        fprintf(c->err, "lsmctl: load: out of memory\n");
        return CTL_EXIT_ERROR;
    }
    for (uint64_t pos = 0; pos < vl;) {
        size_t n = vl - pos < cap ? (size_t)(vl - pos) : cap;
        if (read_exact(c->in, c->v.p, n) != 0)
            return load_damaged(c, off, "truncated record");
        *h = fnv64(*h, c->v.p, n);
        *all = fnv64(*all, c->v.p, n);
        *rc = lsm_value_writer_write(c->vw, pos, c->v.p, n);
        if (*rc != LSM_OK)
            return CTL_EXIT_OK;
        pos += n;
    }
    return CTL_EXIT_OK;
}

static int cmd_load(ctl *c, int argc, char **argv)
{
    int merge = 0;
    if (argc == 2 && strcmp(argv[1], "--merge") == 0)
        merge = 1;
    else if (argc != 1)
        return usage_of(c, "load", "[--merge] < FILE");
    if (!c->in) {
        fprintf(c->err, "lsmctl: load: no input to read the stream from\n");
        return CTL_EXIT_USAGE;
    }
    if (!merge) {
        lsm_iter *it;
        int rc = lsm_iter_new(c->db, &it);
        if (rc != LSM_OK)
            return ctl_fail(c->db, c->err, "load", rc);
        lsm_iter_seek(it, NULL, 0);
        int any = lsm_iter_valid(it);
        lsm_iter_free(it);
        if (any) {
            fprintf(c->err, "lsmctl: load: the database is not empty (--merge loads over it)\n");
            return CTL_EXIT_USAGE;
        }
    }
    unsigned char h[16];
    if (read_exact(c->in, h, sizeof h) != 0 || memcmp(h, DUMP_MAGIC, 8) != 0)
        return load_damaged(c, 0, "not an lsmctl dump stream (bad magic)");
    if (get32(h + 8) != DUMP_VERSION)
        return load_damaged(c, 8, "a dump stream of an unknown version (newer lsmctl?)");
    uint64_t all = fnv64(FNV64_INIT, h, sizeof h), off = sizeof h, n = 0;
    lsm_batch *b = lsm_batch_new();
    size_t pending = 0;
    int status = CTL_EXIT_OK, rc = LSM_OK;
    progress pg;
    progress_init(&pg, c->err);
    for (;;) {
        unsigned char rh[13], sum[8];
        if (read_exact(c->in, rh, 1) != 0) {
            status = load_damaged(c, off, "the stream ends without its end record (truncated)");
            break;
        }
        if (rh[0] == DUMP_END) {
            unsigned char end[16];
            if (read_exact(c->in, end, 16) != 0) {
                status = load_damaged(c, off, "truncated end record");
                break;
            }
            all = fnv64(fnv64(all, rh, 1), end, 8);
            if (get64(end) != n)
                status = load_damaged(c, off, "the end record counts a different number of "
                                      "entries (records lost)");
            else if (get64(end + 8) != all)
                status = load_damaged(c, off, "stream checksum mismatch");
            break;
        }
        if (rh[0] != DUMP_ENTRY || read_exact(c->in, rh + 1, sizeof rh - 1) != 0) {
            status = load_damaged(c, off, rh[0] != DUMP_ENTRY ? "unknown record type"
                                                              : "truncated record header");
            break;
        }
        uint32_t kl = get32(rh + 1);
        uint64_t vl = get64(rh + 5);
        if (kl == 0 || kl > LSM_MAX_KEY || vl > LSM_MAX_EXTENT_VALUE) {
            status = load_damaged(c, off, "impossible key or value length");
            break;
        }
        if (bytes_reserve(&c->k, kl) || (vl <= LOAD_INLINE_MAX && bytes_reserve(&c->v, vl + 1))) {
            fprintf(c->err, "lsmctl: load: out of memory\n");
            status = CTL_EXIT_ERROR;
            break;
        }
        if (read_exact(c->in, c->k.p, kl) != 0) {
            status = load_damaged(c, off, "truncated record");
            break;
        }
        uint64_t h = fnv64(fnv64(FNV64_INIT, rh, sizeof rh), c->k.p, kl);
        all = fnv64(fnv64(all, rh, sizeof rh), c->k.p, kl);
        if (vl > LOAD_INLINE_MAX) {
            /* too long to hold: written a piece at a time with a value writer, committed only
               once its checksum is verified */
            rc = LSM_OK;
            status = load_long_value(c, kl, vl, &h, &all, off, &rc);
            if (status != CTL_EXIT_OK || rc != LSM_OK)
                break;
        } else {
            if (read_exact(c->in, c->v.p, (size_t)vl) != 0) {
                status = load_damaged(c, off, "truncated record");
                break;
            }
            h = fnv64(h, c->v.p, (size_t)vl);
            all = fnv64(all, c->v.p, (size_t)vl);
        }
        if (read_exact(c->in, sum, 8) != 0) {
            status = load_damaged(c, off, "truncated record");
            break;
        }
        if (get64(sum) != h) {
            status = load_damaged(c, off, "record checksum mismatch");
            break;
        }
        all = fnv64(all, sum, 8);
        if (vl > LOAD_INLINE_MAX) {
            rc = lsm_value_writer_commit(c->vw, 0);
            c->vw = NULL;
            if (rc != LSM_OK)
                break;
        } else {
            lsm_batch_put(b, c->k.p, kl, c->v.p, (size_t)vl);
            pending += kl + vl;
        }
        off += sizeof rh + kl + vl + 8;
        n++;
        if (pending >= LOAD_BATCH_BYTES) {
            rc = lsm_write(c->db, b, 0);
            lsm_batch_clear(b);
            pending = 0;
            if (rc != LSM_OK)
                break;
        }
        progress_show(&pg, "load", n, off);
    }
    progress_end(&pg);
    if (rc == LSM_OK && lsm_batch_count(b) > 0 && status == CTL_EXIT_OK)
        rc = lsm_write(c->db, b, 0);
    lsm_batch_free(b);
    if (rc == LSM_OK)
        rc = lsm_sync(c->db);
    if (rc != LSM_OK)
        return ctl_fail(c->db, c->err, "load", rc);
    if (status == CTL_EXIT_OK)
        fprintf(c->err, "lsmctl: load: %" PRIu64 " keys\n", n);
    return status;
}

/* ---- administration ---- */

static int cmd_backup(ctl *c, int argc, char **argv)
{
    if (argc != 2)
        return usage_of(c, "backup", "DEST   (DEST must not exist)");
    ticker tk;
    ticker_start(&tk, c->err, "backup");
    int rc = lsm_checkpoint(c->db, argv[1]);
    ticker_stop(&tk);
    return rc == LSM_OK ? CTL_EXIT_OK : ctl_fail(c->db, c->err, "backup", rc);
}

struct check_out {
    FILE *out;
    int hex;
    int n;
};

static void check_line(void *arg, const char *file, const char *what, const void *lo, size_t lon,
                       const void *hi, size_t hin)
{
    struct check_out *co = arg;
    co->n++;
    fprintf(co->out, "damaged %s: %s", file, what);
    if (lo || hi) {
        fputs(" (keys ", co->out);
        put_text(co->out, lo, lon, co->hex);
        fputs(" .. ", co->out);
        put_text(co->out, hi, hin, co->hex);
        putc(')', co->out);
    }
    putc('\n', co->out);
}

static int cmd_check(ctl *c, int argc, char **argv)
{
    if (argc != 1)
        return usage_of(c, "check", "");
    struct check_out co = { .out = c->out, .hex = c->hex };
    ticker tk;
    ticker_start(&tk, c->err, "check");
    int rc = lsm_check(c->db, check_line, &co);
    ticker_stop(&tk);
    if (rc == LSM_OK) {
        fprintf(c->out, "clean\n");
        return CTL_EXIT_OK;
    }
    if (rc == LSM_CORRUPT) {
        fprintf(c->out, "%d damaged file%s\n", co.n, co.n == 1 ? "" : "s");
        return CTL_EXIT_DAMAGED;
    }
    return ctl_fail(c->db, c->err, "check", rc);
}

static int cmd_stats(ctl *c, int argc, char **argv)
{
    if (argc != 1)
        return usage_of(c, "stats", "");
    lsm_stats st;
    int rc = lsm_stats_get(c->db, &st, sizeof st), tables = 0, deepest = -1;
    if (rc != LSM_OK)
        return ctl_fail(c->db, c->err, "stats", rc);
    FILE *o = c->out;
    for (int l = 0; l < LSM_MAX_LEVELS; l++) {
        fprintf(o, "level%d_tables %d\nlevel%d_bytes %" PRIu64 "\n", l, st.tables[l], l,
                st.level_bytes[l]);
        tables += st.tables[l];
        if (st.tables[l])
            deepest = l;
    }
    uint64_t written = st.wal_bytes_written + st.flush_bytes_written +
                       st.compaction_bytes_written + st.blob_bytes_written;
    uint64_t last = deepest >= 0 ? st.level_bytes[deepest] : 0;
    uint64_t lookups = st.cache_hits + st.cache_misses;
    fprintf(o, "tables %d\n", tables);
    fprintf(o, "last_sequence %" PRIu64 "\n", st.last_sequence);
    fprintf(o, "memtable_bytes %" PRIu64 "\n", st.memtable_bytes);
    fprintf(o, "disk_bytes %" PRIu64 "\n", st.disk_bytes);
    fprintf(o, "blob_bytes_live %" PRIu64 "\n", st.blob_bytes_live);
    fprintf(o, "user_bytes_written %" PRIu64 "\n", st.user_bytes_written);
    fprintf(o, "wal_bytes_written %" PRIu64 "\n", st.wal_bytes_written);
    fprintf(o, "flush_bytes_written %" PRIu64 "\n", st.flush_bytes_written);
    fprintf(o, "compaction_bytes_written %" PRIu64 "\n", st.compaction_bytes_written);
    fprintf(o, "compaction_bytes_read %" PRIu64 "\n", st.compaction_bytes_read);
    fprintf(o, "blob_bytes_written %" PRIu64 "\n", st.blob_bytes_written);
    if (st.user_bytes_written)
        fprintf(o, "write_amplification %.2f\n", (double)written / (double)st.user_bytes_written);
    else
        fprintf(o, "write_amplification -\n");
    if (last)
        fprintf(o, "space_amplification %.2f\n",
                (double)(st.disk_bytes - st.blob_bytes_live) / (double)last);
    else
        fprintf(o, "space_amplification -\n");
    fprintf(o, "cache_hits %" PRIu64 "\ncache_misses %" PRIu64 "\n", st.cache_hits,
            st.cache_misses);
    if (lookups)
        fprintf(o, "cache_hit_rate %.3f\n", (double)st.cache_hits / (double)lookups);
    else
        fprintf(o, "cache_hit_rate -\n");
    fprintf(o, "stall_micros %" PRIu64 "\n", st.stall_micros);
    fprintf(o, "pending_compaction_bytes %" PRIu64 "\n", st.pending_compaction_bytes);
    fprintf(o, "flushes %" PRIu64 "\ncompactions %" PRIu64 "\n", st.flushes, st.compactions);
    return CTL_EXIT_OK;
}

static int cmd_compact(ctl *c, int argc, char **argv)
{
    bytes from = { 0 }, to = { 0 };
    int status = CTL_EXIT_OK, ranged = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--from") == 0 && i + 1 < argc && !from.len) {
            if (get_key(argv[++i], c->hex, &from, c->err))
                status = CTL_EXIT_USAGE;
            ranged = 1;
        } else if (strcmp(argv[i], "--to") == 0 && i + 1 < argc && !to.len) {
            if (get_key(argv[++i], c->hex, &to, c->err))
                status = CTL_EXIT_USAGE;
            ranged = 1;
        } else {
            status = usage_of(c, "compact", "[--from KEY] [--to KEY]");
        }
    }
    if (status == CTL_EXIT_OK) {
        ticker tk;
        ticker_start(&tk, c->err, "compact");
        int rc = ranged ? lsm_compact_range(c->db, from.len ? from.p : NULL, from.len,
                                            to.len ? to.p : NULL, to.len)
                        : lsm_compact(c->db);
        ticker_stop(&tk);
        if (rc != LSM_OK)
            status = ctl_fail(c->db, c->err, "compact", rc);
    }
    free(from.p);
    free(to.p);
    return status;
}

static int cmd_flush(ctl *c, int argc, char **argv)
{
    if (argc != 1)
        return usage_of(c, "flush", "");
    int rc = lsm_flush(c->db);
    return rc == LSM_OK ? CTL_EXIT_OK : ctl_fail(c->db, c->err, "flush", rc);
}

/* One command a line: "put KEY VALUE" (VALUE: the rest of the line after one space), "del KEY",
   "flush", "compact"; keys and values escaped (or hex). Builds a database exactly as the lines
   say, table by table: the tests use it. */
static int cmd_script(ctl *c, int argc, char **argv)
{
    if (argc != 1)
        return usage_of(c, "script", "< COMMANDS");
    if (!c->in) {
        fprintf(c->err, "lsmctl: script: no input to read commands from\n");
        return CTL_EXIT_USAGE;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long lineno = 0;
    int rc = LSM_OK, status = CTL_EXIT_OK;
    while (rc == LSM_OK && status == CTL_EXIT_OK && (n = getline(&line, &cap, c->in)) >= 0) {
        lineno++;
        if (n > 0 && line[n - 1] == '\n')
            line[--n] = '\0';
        if (n == 0)
            continue;
        char *key = strchr(line, ' '), *val = NULL;
        if (key) {
            *key++ = '\0';
            val = strchr(key, ' ');
            if (val)
                *val++ = '\0';
        }
        int bad = 0;
        if (strcmp(line, "put") == 0 && key && val) {
            bad = get_text(key, c->hex, &c->k) || c->k.len == 0 || get_text(val, c->hex, &c->v);
            if (!bad)
                rc = lsm_put(c->db, c->k.p, c->k.len, c->v.p, c->v.len);
        } else if (strcmp(line, "del") == 0 && key && !val) {
            bad = get_text(key, c->hex, &c->k) || c->k.len == 0;
            if (!bad)
                rc = lsm_delete(c->db, c->k.p, c->k.len);
        } else if (strcmp(line, "flush") == 0 && !key) {
            rc = lsm_flush(c->db);
        } else if (strcmp(line, "compact") == 0 && !key) {
            rc = lsm_compact(c->db);
        } else {
            bad = 1;
        }
        if (bad) {
            fprintf(c->err, "lsmctl: script: line %ld: bad command\n", lineno);
            status = CTL_EXIT_USAGE;
        }
    }
    free(line);
    if (rc == LSM_OK)
        rc = lsm_sync(c->db);
    if (rc != LSM_OK)
        return ctl_fail(c->db, c->err, "script", rc);
    return status;
}

static const struct command {
    const char *name;
    int mode;
    int (*run)(ctl *c, int argc, char **argv);
    const char *args;
} commands[] = {
    { "get", CTL_MODE_READ, cmd_get, "[--escape | --hex] KEY" },
    { "put", CTL_MODE_WRITE, cmd_put, "KEY [VALUE]" },
    { "del", CTL_MODE_WRITE, cmd_del, "KEY" },
    { "scan", CTL_MODE_READ, cmd_scan, "[--from KEY] [--to KEY] [--prefix P] [--values] [--hex]"
                                       " [--limit N]" },
    { "dump", CTL_MODE_READ, cmd_dump, "> FILE" },
    { "load", CTL_MODE_WRITE, cmd_load, "[--merge] < FILE" },
    { "backup", CTL_MODE_READ, cmd_backup, "DEST" },
    { "check", CTL_MODE_READ, cmd_check, "" },
    { "repair", CTL_MODE_OFFLINE, NULL, "" },
    { "stats", CTL_MODE_READ, cmd_stats, "" },
    { "compact", CTL_MODE_MAINTAIN, cmd_compact, "[--from KEY] [--to KEY]" },
    { "flush", CTL_MODE_MAINTAIN, cmd_flush, "" },
    { "script", CTL_MODE_WRITE, cmd_script, "< COMMANDS" },
};

/* Skips leading global options (--hex); returns the index of the command name, or argc. */
static int skip_globals(int argc, char **argv, int *hex)
{
    int i = 0;
    for (; i < argc && strcmp(argv[i], "--hex") == 0; i++)
        if (hex)
            *hex = 1;
    return i;
}

static const struct command *find_command(const char *name)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

int ctl_command_mode(int argc, char **argv)
{
    int i = skip_globals(argc, argv, NULL);
    const struct command *cmd = i < argc ? find_command(argv[i]) : NULL;
    return cmd ? cmd->mode : CTL_MODE_UNKNOWN;
}

void ctl_usage(FILE *f)
{
    fprintf(f, "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %s %s\n", commands[i].name, commands[i].args);
}

int ctl_run_io(lsm_db *db, int argc, char **argv, FILE *in, FILE *out, FILE *err)
{
    ctl c = { .db = db, .in = in, .out = out, .err = err };
    int i = skip_globals(argc, argv, &c.hex);
    const struct command *cmd = i < argc ? find_command(argv[i]) : NULL;
    if (!cmd || !cmd->run || !db) {
        if (i < argc && cmd && !cmd->run)
            fprintf(err, "lsmctl: %s works on a DATADIR no process holds\n", argv[i]);
        else if (i < argc && !cmd)
            fprintf(err, "lsmctl: %s: unknown command\n", argv[i]);
        ctl_usage(err);
        return CTL_EXIT_USAGE;
    }
    int status = cmd->run(&c, argc - i, argv + i);
    lsm_value_writer_abort(c.vw);
    free(c.k.p);
    free(c.v.p);
    if (fflush(out) != 0 && status == CTL_EXIT_OK) {
        fprintf(err, "lsmctl: writing output: %s\n", strerror(errno));
        status = CTL_EXIT_ERROR;
    }
    return status;
}

int ctl_run(lsm_db *db, int argc, char **argv, FILE *out, FILE *err)
{
    return ctl_run_io(db, argc, argv, stdin, out, err);
}

struct repair_out {
    FILE *out;
    int n;
};

static void repair_line(void *arg, const char *file, const char *what, const void *lo,
                        size_t lon, const void *hi, size_t hin)
{
    struct repair_out *ro = arg;
    ro->n++;
    fprintf(ro->out, "lost %s: %s", file, what);
    if (lo || hi) {
        fputs(" (keys ", ro->out);
        put_text(ro->out, lo, lon, 0);
        fputs(" .. ", ro->out);
        put_text(ro->out, hi, hin, 0);
        putc(')', ro->out);
    }
    putc('\n', ro->out);
}

int ctl_repair(const char *dir, FILE *out, FILE *err)
{
    struct repair_out ro = { .out = out };
    ticker tk;
    ticker_start(&tk, err, "repair");
    int rc = lsm_repair(dir, NULL, repair_line, &ro);
    ticker_stop(&tk);
    if (rc != LSM_OK)
        return ctl_fail(NULL, err, "repair", rc);
    if (ro.n)
        fprintf(out, "repaired, with %d loss%s (the replaced files are in %s/lost)\n", ro.n,
                ro.n == 1 ? "" : "es", dir);
    else
        fprintf(out, "repaired, nothing lost (the replaced files are in %s/lost)\n", dir);
    fflush(out);
    return ro.n ? CTL_EXIT_DAMAGED : CTL_EXIT_OK;
}
