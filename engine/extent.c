/*
 * extent.c — values as extent maps (extent.h): the map encoding (man/lsm-format.5, EXTENT MAPS),
 * reading by range, the value writer (lsm_value_writer_*), the pins that keep the blob files of
 * maps in memtables and open writers alive, and the live-byte accounting and relocation that
 * compaction does for them.
 *
 * A writer appends what it is given to one blob file: a run of sequential writes becomes one blob
 * record, written a chunk at a time (so a sequential copy of any size gives a handful of extents
 * and holds one 64 KiB chunk in memory); any other write starts a new record. The file is a new
 * one, or, for an LSM_VW_KEEP writer, the one its key's last writer appended to (the key's
 * "tail", blob.h), so that a key's appends, commit after commit, make one file and not one each;
 * a record that starts where a small extent ends absorbs it, so they do not make an extent each
 * either. The map lives
 * in the writer's memory and is laid over the base version's map. Commit writes the map as one
 * entry through the WAL and group commit: after a crash the key holds the old or the new map, and
 * a durable map never names unsynced bytes. That ordering is ext4's data=ordered: a synced commit
 * syncs the blob file and its directory entry before the map goes to the WAL; an unsynced one
 * syncs nothing, but hands its file to the blob set's pending list (blob.h) first, and whatever
 * makes a WAL record durable — a synced write of any writer, the seal of a WAL at a memtable
 * switch, a flush, a checkpoint, close — syncs that list and the directory before it. An
 * unsynced WAL record that reached the disk anyway, ahead of the blob file it names (the OS
 * writes pages back in any order), is found at recovery and dropped as a torn tail
 * (recover.c); in a reused file that means the file is shorter than the lost commit's records.
 * A file a writer created and never committed is named by nothing and goes at the next open;
 * what a writer appended to its key's file and never committed is garbage there.
 *
 * It must never change blob bytes a committed map names (a reused file only grows), never let a
 * blob file go while a map that some memtable, open writer or table holds names it (pins and
 * table references do that: blob.c), and never hold a whole large value in memory on the
 * compaction path (relocation copies EXTENT_MOVE_PIECE at a time). It should not append to a file
 * it knows another key or a checkpoint shares (that only costs space: those bytes are garbage).
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include "db_impl.h"
#include "extent.h"

/* ---- the map ---- */

void extent_map_free(extent_map *m)
{
    free(m->v);
    memset(m, 0, sizeof *m);
}

static void extent_map_reserve(extent_map *m, size_t extra)
{
    if (m->n + extra <= m->cap)
        return;
    m->cap = m->n + extra > 2 * m->cap ? m->n + extra : 2 * m->cap;
    m->v = xrealloc(m->v, m->cap * sizeof *m->v);
}

void extent_map_encode(const extent_map *m, buf *out)
{
    buf_reserve(out, 1 + 20 + m->n * 24);
    buf_putc(out, EXTENT_MAP_FORMAT);
    buf_put_varint(out, m->size);
    buf_put_varint(out, m->n);
    uint64_t end = 0;
    for (size_t i = 0; i < m->n; i++) {
        const extent *e = &m->v[i];
        buf_put_varint(out, e->off - end);
        buf_put_varint(out, e->len);
        buf_put_varint(out, e->file);
        buf_put_varint(out, e->rec_off);
        buf_put_varint(out, e->rec_len);
        buf_put_varint(out, e->start);
        end = e->off + e->len;
    }
}

int extent_map_size(slice s, uint64_t *size)
{
    const uint8_t *p = s.p, *end = s.p + s.n;
    if (s.n < 1 || *p++ != EXTENT_MAP_FORMAT || !(p = dec_varint(p, end, size)) ||
        *size > LSM_MAX_EXTENT_VALUE)
        return -1;
    return 0;
}

int extent_map_decode(slice s, extent_map *m)
{
    const uint8_t *p = s.p, *end = s.p + s.n;
    uint64_t n, at = 0;
    m->n = 0;
    if (s.n < 1 || *p++ != EXTENT_MAP_FORMAT || !(p = dec_varint(p, end, &m->size)) ||
        !(p = dec_varint(p, end, &n)) || m->size > LSM_MAX_EXTENT_VALUE || n > s.n)
        return -1;
    extent_map_reserve(m, (size_t)n);
    for (uint64_t i = 0; i < n; i++) {
        extent *e = &m->v[i];
        uint64_t gap;
        if (!(p = dec_varint(p, end, &gap)) || !(p = dec_varint(p, end, &e->len)) ||
            !(p = dec_varint(p, end, &e->file)) || !(p = dec_varint(p, end, &e->rec_off)) ||
            !(p = dec_varint(p, end, &e->rec_len)) || !(p = dec_varint(p, end, &e->start)))
            return -1;
        e->off = at + gap;
        /* Bounds, so that no sum below can wrap: every field is far under 2^63. */
        if (gap > m->size || e->len == 0 || e->len > m->size || e->off + e->len > m->size ||
            e->rec_len > LSM_MAX_VALUE || e->start > e->rec_len || e->len > e->rec_len - e->start ||
            e->rec_off < BLOB_HEADER)
            return -1;
        at = e->off + e->len;
        m->n++;
    }
    return p == end ? 0 : -1;
}

/* Index of the first extent ending after off. */
static size_t extent_map_find(const extent_map *m, uint64_t off)
{
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (m->v[mid].off + m->v[mid].len <= off)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Replaces what m holds of [a, b) by e (NULL: by a hole). */
static void extent_map_splice(extent_map *m, uint64_t a, uint64_t b, const extent *e)
{
    size_t i = extent_map_find(m, a), j = i;
    while (j < m->n && m->v[j].off < b)
        j++;
    /* Extents i..j-1 meet [a, b): keep the part of the first before a and of the last after b. */
    extent repl[3];
    int k = 0;
    if (i < j && m->v[i].off < a) {
        repl[k] = m->v[i];
        repl[k].len = a - m->v[i].off;
        k++;
    }
    if (e)
        repl[k++] = *e;
    if (i < j && m->v[j - 1].off + m->v[j - 1].len > b) {
        extent t = m->v[j - 1];
        uint64_t cut = b - t.off;
        t.off = b;
        t.start += cut;
        t.len -= cut;
        repl[k++] = t;
    }
    extent_map_reserve(m, 3);
    memmove(m->v + i + k, m->v + j, (m->n - j) * sizeof *m->v);
    memcpy(m->v + i, repl, (size_t)k * sizeof *repl);
    m->n = m->n - (j - i) + (size_t)k;
    if (b > m->size)
        m->size = b;
}

void extent_map_put(extent_map *m, const extent *e)
{
    extent_map_splice(m, e->off, e->off + e->len, e);
}

void extent_map_truncate(extent_map *m, uint64_t size)
{
    size_t i = extent_map_find(m, size);
    if (i < m->n && m->v[i].off < size) {
        m->v[i].len = size - m->v[i].off;
        i++;
    }
    m->n = i;
    m->size = size;
}

int extent_map_files(const extent_map *m, uint64_t **nums)
{
    *nums = NULL;
    if (m->n == 0)
        return 0;
    uint64_t *v = xmalloc(m->n * sizeof *v);
    for (size_t i = 0; i < m->n; i++)
        v[i] = m->v[i].file;
    qsort(v, m->n, sizeof *v, u64_cmp);
    size_t k = 0;
    for (size_t i = 0; i < m->n; i++)
        if (k == 0 || v[k - 1] != v[i])
            v[k++] = v[i];
    *nums = v;
    return (int)k;
}

/* ---- reading ---- */

int extent_read(lsm_db *db, const extent_map *m, uint64_t off, void *dst, size_t n, char *err)
{
    uint8_t *d = dst;
    uint64_t end = off + n;
    if (end > m->size || end < off)
        return err_set(err, LSM_INVALID, "read past the end of a value");
    uint64_t at = off;          /* bytes before this are filled */
    for (size_t i = extent_map_find(m, off); i < m->n && m->v[i].off < end; i++) {
        const extent *e = &m->v[i];
        uint64_t a = e->off > off ? e->off : off;
        uint64_t b = e->off + e->len < end ? e->off + e->len : end;
        if (a > at)
            memset(d + (at - off), 0, (size_t)(a - at));    /* a hole */
        int rc = blob_set_read_record(&db->blobs, e->file, e->rec_off, e->rec_len,
                                      e->start + (a - e->off), d + (a - off), (size_t)(b - a), err);
        if (rc != LSM_OK)
            return rc;
        at = b;
    }
    if (end > at)
        memset(d + (at - off), 0, (size_t)(end - at));
    return LSM_OK;
}

int extent_resolve(lsm_db *db, void **val, size_t *vlen, char *err)
{
    extent_map m = { 0 };
    int rc = LSM_OK;
    if (extent_map_decode((slice){ *val, *vlen }, &m) != 0) {
        rc = err_set(err, LSM_CORRUPT, "malformed extent map in %s", db->dir);
    } else if (m.size > LSM_MAX_VALUE) {
        rc = err_set(err, LSM_NOMEM, "value of %" PRIu64 " bytes is longer than LSM_MAX_VALUE: "
                     "read it by range (lsm_get_range)", m.size);
    } else {
        void *v = malloc(m.size ? (size_t)m.size : 1);
        if (!v) {
            rc = err_set(err, LSM_NOMEM, "cannot allocate %" PRIu64 " bytes for a value", m.size);
        } else if ((rc = extent_read(db, &m, 0, v, (size_t)m.size, err)) != LSM_OK) {
            free(v);
        } else {
            free(*val);
            *val = v;
            *vlen = (size_t)m.size;
        }
    }
    extent_map_free(&m);
    return rc;
}

int extent_read_range(lsm_db *db, slice map, uint64_t off, void *dst, size_t n, uint64_t *nread,
                      uint64_t *size, char *err)
{
    *nread = 0;
    if (n == 0)         /* lsm_get_size: the header says it all */
        return extent_map_size(map, size) == 0
                   ? LSM_OK : err_set(err, LSM_CORRUPT, "malformed extent map in %s", db->dir);
    extent_map m = { 0 };
    int rc = LSM_OK;
    if (extent_map_decode(map, &m) != 0) {
        rc = err_set(err, LSM_CORRUPT, "malformed extent map in %s", db->dir);
    } else {
        *size = m.size;
        uint64_t k = off < m.size ? (m.size - off < n ? m.size - off : n) : 0;
        if (k)
            rc = extent_read(db, &m, off, dst, (size_t)k, err);
        if (rc == LSM_OK)
            *nread = k;
    }
    extent_map_free(&m);
    return rc;
}

/* The key's current value as a map: a value not written by a value writer becomes one extent
   (a plain value's is a placeholder, good for sizes only). */
static int extent_lookup_map(lsm_db *db, const void *key, size_t klen, extent_map *m, char *err)
{
    read_view rv;
    void *v = NULL;
    size_t vlen = 0;
    int type = LSM_TYPE_VALUE;
    int rc = db_lookup(db, &rv, key, klen, &v, &vlen, &type, err);
    if (rc == LSM_OK && type == LSM_TYPE_EXTENTS) {
        if (extent_map_decode((slice){ v, vlen }, m) != 0)
            rc = err_set(err, LSM_CORRUPT, "malformed extent map in %s", db->dir);
    } else if (rc == LSM_OK) {
        uint64_t len = vlen, number = 0, off = BLOB_HEADER;
        if (type == LSM_TYPE_BLOB)
            rc = blob_set_ref_decode(&db->blobs, (slice){ v, vlen }, &number, &off, &len, err);
        if (rc == LSM_OK && len) {
            extent e = { 0, len, number, off, len, 0 };
            extent_map_put(m, &e);
        }
        m->size = len;
    }
    read_view_put(&rv);
    free(v);
    return rc;
}

int lsm_get_allocated(lsm_db *db, const void *key, size_t klen, uint64_t *size,
                      uint64_t *allocated)
{
    if (size)
        *size = 0;
    if (allocated)
        *allocated = 0;
    if (!db)
        return LSM_INVALID;
    int rc = db_check_key(db, key, klen);
    if (rc != LSM_OK)
        return rc;
    char err[LSM_ERRLEN] = "";
    extent_map m = { 0 };
    rc = extent_lookup_map(db, key, klen, &m, err);
    if (rc == LSM_OK) {
        uint64_t a = 0;
        for (size_t i = 0; i < m.n; i++)
            a += m.v[i].len;
        if (size)
            *size = m.size;
        if (allocated)
            *allocated = a;
    }
    extent_map_free(&m);
    return db_fail(db, rc, err);
}

int lsm_get_next_data(lsm_db *db, const void *key, size_t klen, uint64_t off, uint64_t *start,
                      uint64_t *end)
{
    if (!db || !start || !end)
        return LSM_INVALID;
    *start = *end = 0;
    int rc = db_check_key(db, key, klen);
    if (rc != LSM_OK)
        return rc;
    char err[LSM_ERRLEN] = "";
    extent_map m = { 0 };
    rc = extent_lookup_map(db, key, klen, &m, err);
    if (rc == LSM_OK) {
        *start = *end = m.size;
        size_t i = extent_map_find(&m, off);
        if (i < m.n) {
            /* Extents that touch end to end are one range of data. */
            *start = m.v[i].off;
            *end = m.v[i].off + m.v[i].len;
            while (++i < m.n && m.v[i].off == *end)
                *end += m.v[i].len;
        }
    }
    extent_map_free(&m);
    return db_fail(db, rc, err);
}

/* ---- the value reader ---- */

struct lsm_value_reader {
    lsm_db *db;
    extent_map map;             /* the version it opened; a plain value is in `plain` */
    void *plain;                /* a plain value's bytes (malloc'd), or NULL */
    uint64_t *pins;             /* blob files pinned while it is open */
    int npins;
};

int lsm_value_reader_open(lsm_db *db, const void *key, size_t klen, lsm_value_reader **out)
{
    if (out)
        *out = NULL;
    if (!db || !out)
        return LSM_INVALID;
    int rc = db_check_key(db, key, klen);
    if (rc != LSM_OK)
        return rc;
    lsm_value_reader *r = xcalloc(1, sizeof *r);
    r->db = db;
    read_view rv;
    void *v = NULL;
    size_t vlen = 0;
    int type = LSM_TYPE_VALUE;
    char err[LSM_ERRLEN] = "";
    rc = db_lookup(db, &rv, key, klen, &v, &vlen, &type, err);
    if (rc == LSM_OK && type == LSM_TYPE_EXTENTS) {
        if (extent_map_decode((slice){ v, vlen }, &r->map) != 0)
            rc = err_set(err, LSM_CORRUPT, "malformed extent map in %s", db->dir);
    } else if (rc == LSM_OK && type == LSM_TYPE_BLOB) {
        uint64_t number, off, len;
        rc = blob_set_ref_decode(&db->blobs, (slice){ v, vlen }, &number, &off, &len, err);
        if (rc == LSM_OK && len) {
            extent e = { 0, len, number, off, len, 0 };
            extent_map_put(&r->map, &e);
        }
        r->map.size = len;
    } else if (rc == LSM_OK) {
        r->plain = v;           /* small, or in a memtable: the copy is the version */
        r->map.size = vlen;
        v = NULL;
    }
    if (rc == LSM_OK && !r->plain) {
        r->npins = extent_map_files(&r->map, &r->pins);
        blob_set_pin(&db->blobs, r->pins, r->npins);    /* while rv still keeps them */
    }
    read_view_put(&rv);
    free(v);
    if (rc != LSM_OK) {
        lsm_value_reader_close(r);
        return db_fail(db, rc, err);
    }
    *out = r;
    return LSM_OK;
}

uint64_t lsm_value_reader_size(const lsm_value_reader *r)
{
    return r ? r->map.size : 0;
}

int lsm_value_reader_read(lsm_value_reader *r, uint64_t off, void *buf, size_t n, size_t *nread)
{
    if (nread)
        *nread = 0;
    if (!r || (n && !buf))
        return LSM_INVALID;
    uint64_t k = off < r->map.size ? (r->map.size - off < n ? r->map.size - off : n) : 0;
    if (k == 0)
        return LSM_OK;
    if (r->plain) {
        memcpy(buf, (const uint8_t *)r->plain + off, (size_t)k);
    } else {
        char err[LSM_ERRLEN] = "";
        int rc = extent_read(r->db, &r->map, off, buf, (size_t)k, err);
        if (rc != LSM_OK)
            return db_fail(r->db, rc, err);
    }
    if (nread)
        *nread = (size_t)k;
    return LSM_OK;
}

void lsm_value_reader_close(lsm_value_reader *r)
{
    if (!r)
        return;
    blob_set_unpin(&r->db->blobs, r->pins, r->npins, 1);
    free(r->pins);
    free(r->plain);
    extent_map_free(&r->map);
    free(r);
}

/* ---- pins ---- */

static void extent_unpin(void *arg, const uint64_t *nums, int n)
{
    blob_set_unpin(arg, nums, n, 0);
}

int extent_pin_memtable(lsm_db *db, memtable *m, slice map)
{
    extent_map em = { 0 };
    if (extent_map_decode(map, &em) != 0) {
        extent_map_free(&em);
        return -1;
    }
    uint64_t *nums;
    int n = extent_map_files(&em, &nums);
    blob_set_pin(&db->blobs, nums, n);
    memtable_pin(m, nums, n, extent_unpin, &db->blobs);
    free(nums);
    extent_map_free(&em);
    return 0;
}

/* ---- live-byte accounting ---- */

typedef struct prange {
    uint64_t file, rec_off, a, b;   /* bytes [a, b) of the record at rec_off of file */
} prange;

static int prange_cmp(const void *x, const void *y)
{
    const prange *p = x, *q = y;
    if (p->file != q->file)
        return p->file < q->file ? -1 : 1;
    if (p->rec_off != q->rec_off)
        return p->rec_off < q->rec_off ? -1 : 1;
    return p->a < q->a ? -1 : p->a > q->a;
}

/* The physical byte ranges a stored value of type `type` uses, sorted; their count (0 for values
   that use no blob file, or that do not decode). */
static size_t pranges(lsm_db *db, int type, slice v, prange **out)
{
    *out = NULL;
    if (type == LSM_TYPE_BLOB) {
        uint64_t number, off, len;
        char err[LSM_ERRLEN];
        if (blob_set_ref_decode(&db->blobs, v, &number, &off, &len, err) != LSM_OK || len == 0)
            return 0;
        *out = xmalloc(sizeof **out);
        **out = (prange){ number, off, 0, len };
        return 1;
    }
    if (type != LSM_TYPE_EXTENTS)
        return 0;
    extent_map m = { 0 };
    size_t n = 0;
    if (extent_map_decode(v, &m) == 0 && m.n) {
        *out = xmalloc(m.n * sizeof **out);
        for (size_t i = 0; i < m.n; i++)
            (*out)[i] = (prange){ m.v[i].file, m.v[i].rec_off, m.v[i].start,
                                  m.v[i].start + m.v[i].len };
        n = m.n;
        qsort(*out, n, sizeof **out, prange_cmp);
    }
    extent_map_free(&m);
    return n;
}

void extent_note_dropped(lsm_db *db, int newer_type, slice newer, int old_type, slice old)
{
    prange *o, *nw;
    size_t no = pranges(db, old_type, old, &o);
    if (no == 0)
        return;
    size_t nn = pranges(db, newer_type, newer, &nw);
    /* Merge overlapping newer ranges of one record, so coverage is counted once. */
    size_t k = 0;
    for (size_t i = 0; i < nn; i++) {
        if (k && nw[k - 1].file == nw[i].file && nw[k - 1].rec_off == nw[i].rec_off &&
            nw[i].a <= nw[k - 1].b) {
            if (nw[i].b > nw[k - 1].b)
                nw[k - 1].b = nw[i].b;
        } else {
            nw[k++] = nw[i];
        }
    }
    nn = k;
    size_t j = 0;
    for (size_t i = 0; i < no; i++) {
        const prange *r = &o[i];
        /* Skip newer ranges wholly before r (both lists are sorted by record, then start). */
        while (j < nn && (prange_cmp(&nw[j], r) < 0) &&
               (nw[j].file != r->file || nw[j].rec_off != r->rec_off || nw[j].b <= r->a))
            j++;
        uint64_t covered = 0;
        for (size_t q = j; q < nn && nw[q].file == r->file && nw[q].rec_off == r->rec_off &&
                           nw[q].a < r->b; q++) {
            uint64_t a = nw[q].a > r->a ? nw[q].a : r->a, b = nw[q].b < r->b ? nw[q].b : r->b;
            if (b > a)
                covered += b - a;
        }
        blob_set_add_garbage(&db->blobs, r->file, (r->b - r->a) - covered);
    }
    free(o);
    free(nw);
}

void extent_edit_garbage(lsm_db *db, version_edit *e)
{
    uint64_t *pairs;
    int n = blob_set_take_garbage(&db->blobs, &pairs);
    for (int i = 0; i < n; i++)
        edit_garbage(e, pairs[2 * i], pairs[2 * i + 1]);
    free(pairs);
}

void extent_load_garbage(lsm_db *db)
{
    for (int i = 0; i < db->vs.ngarbage; i++)
        blob_set_load_garbage(&db->blobs, db->vs.garbage[2 * i], db->vs.garbage[2 * i + 1]);
}

/* ---- relocation, on the table writer's path ---- */

/* Copies extents v[0..n) (logically back to back) into one new record of the table writer's
   blob file, a piece at a time; *out is the one extent that replaces them. Relocation so also
   undoes fragmentation: the run's neighbours become one extent. */
static int extent_move(table_writer *tw, const extent *v, size_t n, extent *out, void *tmp,
                       char *err)
{
    lsm_db *db = tw->db;
    int rc = builder_blob_writer(tw, err);
    uint64_t rec_off, len;
    if (rc == LSM_OK)
        rc = blob_record_begin(tw->bw, &rec_off);
    for (size_t i = 0; i < n; i++) {
        const extent *e = &v[i];
        for (uint64_t done = 0; rc == LSM_OK && done < e->len;) {
            size_t k = e->len - done < EXTENT_MOVE_PIECE ? (size_t)(e->len - done)
                                                         : EXTENT_MOVE_PIECE;
            rc = blob_set_read_record(&db->blobs, e->file, e->rec_off, e->rec_len,
                                      e->start + done, tmp, k, err);
            if (rc == LSM_OK)
                rc = blob_record_append(tw->bw, tmp, k, err);
            done += k;
        }
    }
    if (rc == LSM_OK)
        rc = blob_record_end(tw->bw, &len, err);
    if (rc != LSM_OK)
        return rc;
    for (size_t i = 0; i < n; i++)
        blob_set_add_garbage(&db->blobs, v[i].file, v[i].len);
    atomic_fetch_add(&db->st_blob_bytes, len);
    *out = (extent){ v[0].off, len, tw->bw_number, rec_off, len, 0 };
    return LSM_OK;
}

/* Whether relocation moves extent e. */
static int extent_should_move(table_writer *tw, const extent *e)
{
    return e->file != tw->bw_number && blob_set_mostly_garbage(&tw->db->blobs, e->file);
}

int extent_builder_add(table_writer *tw, slice v, slice *nv, char *err)
{
    extent_map m = { 0 };
    *nv = v;
    if (extent_map_decode(v, &m) != 0) {
        extent_map_free(&m);
        return err_set(err, LSM_CORRUPT, "%s: malformed extent map in a table being written",
                       tw->path);
    }
    int rc = LSM_OK, moved = 0;
    void *tmp = NULL;
    size_t k = 0;               /* extents kept or made so far, compacted in place */
    for (size_t i = 0; tw->relocate && rc == LSM_OK && i < m.n;) {
        if (!extent_should_move(tw, &m.v[i])) {
            m.v[k++] = m.v[i++];
            continue;
        }
        /* A run of extents to move that lie back to back becomes one record. */
        size_t j = i + 1;
        uint64_t run = m.v[i].len;
        while (j < m.n && m.v[j].off == m.v[j - 1].off + m.v[j - 1].len &&
               run + m.v[j].len <= EXTENT_RECORD_MAX && extent_should_move(tw, &m.v[j]))
            run += m.v[j++].len;
        if (!tmp)
            tmp = xmalloc(EXTENT_MOVE_PIECE);
        extent e;
        rc = extent_move(tw, m.v + i, j - i, &e, tmp, err);
        m.v[k++] = e;
        i = j;
        moved = 1;
    }
    if (tw->relocate && rc == LSM_OK)
        m.n = k;
    free(tmp);
    if (rc == LSM_OK) {
        for (size_t i = 0; i < m.n; i++)
            builder_note_blob(tw, m.v[i].file);
        if (moved) {
            tw->val.len = 0;
            extent_map_encode(&m, &tw->val);
            *nv = (slice){ tw->val.p, tw->val.len };
        }
    }
    extent_map_free(&m);
    return rc;
}

/* ---- the value writer ---- */

struct lsm_value_writer {
    lsm_db *db;
    buf key;
    extent_map map;             /* the value as written so far, but the open record */
    uint64_t *pins;             /* blob files pinned while the writer is open */
    int npins;
    blob_writer *bw;            /* the writer's blob file, opened at the first write */
    uint64_t file;              /* its number */
    char path[4096];
    uint64_t written;           /* data bytes appended to it */
    int reuse;                  /* file is the key's tail (blob_set_tail_take): appended to */
    uint64_t base;              /* the file's length before this writer: its records start here */
    int created;                /* this writer created the file (not yet in a synced directory) */
    uint64_t gen;               /* blob_set_tail_gen() at open */
    /* The key's tail, left for a new file after EXTENT_REUSE_WRITE bytes (writer_leave_tail): */
    lsm_file *tail_f;           /* its handle, or NULL */
    uint64_t tail_num, tail_base, tail_size, tail_written;  /* as file, base, size, written */
    int open;                   /* a record is open: sequential writes extend it */
    uint64_t rec_off;           /* the open record's offset in the file */
    uint64_t rec_at;            /* logical offset of its first byte */
    int map_failed;             /* writing the map failed: it may still be in the WAL */
    int rc;                     /* a failed write spoils the writer: commit refuses */
    char err[LSM_ERRLEN];
};

static void writer_pin(lsm_value_writer *w, const uint64_t *nums, int n)
{
    if (n <= 0)
        return;
    blob_set_pin(&w->db->blobs, nums, n);
    w->pins = xrealloc(w->pins, (size_t)(w->npins + n) * sizeof *w->pins);
    memcpy(w->pins + w->npins, nums, (size_t)n * sizeof *nums);
    w->npins += n;
}

/* Ends the open record and lays it over the map. */
static int writer_close_record(lsm_value_writer *w)
{
    if (!w->open)
        return LSM_OK;
    uint64_t len;
    w->open = 0;
    int rc = blob_record_end(w->bw, &len, w->err);
    if (rc != LSM_OK)
        return rc;
    if (len) {
        extent e = { w->rec_at, len, w->file, w->rec_off, len, 0 };
        extent_map_put(&w->map, &e);
        w->written += len;
        atomic_fetch_add(&w->db->st_blob_bytes, len);
    }
    return LSM_OK;
}

/* Opens a record for logical offset off. A small extent that ends at off (an append after an
   append, commit after commit) is copied to the record's start, so that the record replaces it:
   the map does not grow by an extent per append. Its old bytes become garbage as any overwritten
   bytes do. Up to EXTENT_COALESCE bytes are copied; a longer extent is left as it is. */
static int writer_begin_record(lsm_value_writer *w, uint64_t off)
{
    uint8_t tmp[EXTENT_COALESCE];
    extent e = { 0 };
    size_t i = off ? extent_map_find(&w->map, off - 1) : w->map.n;
    if (i < w->map.n && w->map.v[i].off + w->map.v[i].len == off &&
        w->map.v[i].len <= EXTENT_COALESCE) {
        char err[LSM_ERRLEN];
        e = w->map.v[i];
        /* A read that fails only costs the coalescing: the write goes on without it. */
        if (blob_set_read_record(&w->db->blobs, e.file, e.rec_off, e.rec_len, e.start, tmp,
                                 (size_t)e.len, err) != LSM_OK)
            e.len = 0;
    }
    if (blob_record_begin(w->bw, &w->rec_off) != LSM_OK)
        return err_set(w->err, LSM_INVALID, "internal: record already open");
    w->open = 1;
    w->rec_at = off;
    if (e.len) {
        int rc = blob_record_append(w->bw, tmp, (size_t)e.len, w->err);
        if (rc != LSM_OK)
            return rc;
        w->rec_at = e.off;
    }
    return LSM_OK;
}

/* A writer that has appended EXTENT_REUSE_WRITE bytes to its key's tail goes on in a file of its
   own: a large rewrite then leaves the old bytes' file mostly garbage, for relocation to empty, as
   it would without reuse. What it wrote there stays (synced or made pending at commit). */
static int writer_leave_tail(lsm_value_writer *w)
{
    int rc = writer_close_record(w);
    if (rc != LSM_OK)
        return rc;
    w->tail_num = w->file;
    w->tail_base = w->base;
    w->tail_size = blob_writer_size(w->bw);
    w->tail_written = w->written;
    w->tail_f = blob_writer_detach(w->bw);
    w->bw = NULL;
    w->reuse = 0;
    w->written = 0;
    return LSM_OK;
}

/* Bytes of the records at or past base of file that the writer's map still uses. */
static uint64_t writer_live(const lsm_value_writer *w, uint64_t file, uint64_t base)
{
    uint64_t live = 0;
    for (size_t i = 0; i < w->map.n; i++)
        if (w->map.v[i].file == file && w->map.v[i].rec_off >= base)
            live += w->map.v[i].len;
    return live;
}

static int writer_append_data(lsm_value_writer *w, uint64_t off, const uint8_t *p, size_t n)
{
    lsm_db *db = w->db;
    int rc;
    if (w->bw && w->reuse && blob_writer_size(w->bw) - w->base >= EXTENT_REUSE_WRITE &&
        (rc = writer_leave_tail(w)) != LSM_OK)
        return rc;
    if (space_low(db)) {
        space_refill(db, 0);
        if (space_low(db))
            return err_set(w->err, LSM_NOSPACE, "%s: the disk is full: only writes that free "
                           "space are accepted until space is freed", db->dir);
    }
    if (!w->bw) {
        if (w->reuse) {
            /* The key's tail: pinned already (the loaded map names it). Should it have changed
               under us (size), a new file is made after all. */
            file_path(db->dir, w->file, ".blob", w->path, sizeof w->path);
            if (blob_writer_reopen(db->env, w->path, w->base, &w->bw, w->err) != LSM_OK)
                w->reuse = 0;
        }
        if (!w->bw) {
            w->reuse = 0;
            w->file = db_new_file_number(db);
            w->base = 0;
            file_path(db->dir, w->file, ".blob", w->path, sizeof w->path);
            if ((rc = blob_writer_open(db->env, w->path, &w->bw, w->err)) != LSM_OK)
                return rc;
            w->created = 1;
        }
        writer_pin(w, &w->file, 1);
    }
    while (n > 0) {
        if (w->open && (off != w->rec_at + blob_record_length(w->bw) ||
                        blob_record_length(w->bw) >= EXTENT_RECORD_MAX))
            if ((rc = writer_close_record(w)) != LSM_OK)
                return rc;
        if (!w->open && (rc = writer_begin_record(w, off)) != LSM_OK)
            return rc;
        uint64_t room = EXTENT_RECORD_MAX - blob_record_length(w->bw);
        size_t k = n < room ? n : (size_t)room;
        if ((rc = blob_record_append(w->bw, p, k, w->err)) != LSM_OK)
            return rc;
        off += k;
        p += k;
        n -= k;
    }
    return LSM_OK;
}

/* Appends n bytes for logical offset off. On a full disk it acts as lsm_write does (space.c): the
   first refusal gives the reserve back and enters low-space mode, where appending (adding data)
   is refused at once until space is freed. */
static int writer_append(lsm_value_writer *w, uint64_t off, const uint8_t *p, size_t n)
{
    int rc = writer_append_data(w, off, p, n);
    if (rc == LSM_NOSPACE)
        space_release(w->db);
    return rc;
}

/* The value's size, the open record included. */
static uint64_t writer_size(const lsm_value_writer *w)
{
    uint64_t end = w->open ? w->rec_at + blob_record_length(w->bw) : 0;
    return end > w->map.size ? end : w->map.size;
}

/* Starts the writer from the key's current value (caller holds nothing). */
static int writer_load(lsm_value_writer *w, const void *key, size_t klen)
{
    lsm_db *db = w->db;
    read_view rv;
    void *v = NULL;
    size_t vlen = 0;
    int type = LSM_TYPE_VALUE;
    int rc = db_lookup(db, &rv, key, klen, &v, &vlen, &type, w->err);
    if (rc == LSM_NOTFOUND) {
        rc = LSM_OK;
    } else if (rc == LSM_OK && type == LSM_TYPE_EXTENTS) {
        if (extent_map_decode((slice){ v, vlen }, &w->map) != 0) {
            rc = err_set(w->err, LSM_CORRUPT, "malformed extent map in %s", db->dir);
        } else {
            uint64_t *nums;
            int n = extent_map_files(&w->map, &nums);
            writer_pin(w, nums, n);     /* before rv goes: its version keeps them alive now */
            /* The file the key's last writer appended to, if this version still names it (so
               that our pin keeps it): appended to again at the first write. */
            uint64_t tail, size;
            if (blob_set_tail_take(&db->blobs, key, klen, &tail, &size))
                for (int i = 0; i < n && !w->reuse; i++)
                    if (nums[i] == tail) {
                        w->reuse = 1;
                        w->file = tail;
                        w->base = size;
                    }
            free(nums);
        }
    } else if (rc == LSM_OK && type == LSM_TYPE_BLOB) {
        /* A large plain value becomes the first extent, a window onto its blob record. */
        uint64_t number, off, len;
        rc = blob_set_ref_decode(&db->blobs, (slice){ v, vlen }, &number, &off, &len, w->err);
        if (rc == LSM_OK && len) {
            extent e = { 0, len, number, off, len, 0 };
            extent_map_put(&w->map, &e);
            writer_pin(w, &number, 1);
        }
        w->map.size = len;
    } else if (rc == LSM_OK) {
        /* A plain value: its bytes go to the writer's file once. */
        if (vlen)
            rc = writer_append(w, 0, v, vlen);
        if (rc == LSM_OK)
            rc = writer_close_record(w);
        w->map.size = vlen;
    }
    read_view_put(&rv);
    free(v);
    return rc;
}

int lsm_value_writer_open(lsm_db *db, const void *key, size_t klen, int flags,
                          lsm_value_writer **out)
{
    if (out)
        *out = NULL;
    if (!db || !out || (flags & ~LSM_VW_KEEP))
        return db ? db_fail(db, LSM_INVALID, "lsm_value_writer_open: bad arguments") : LSM_INVALID;
    if (db->opt.read_only)
        return db_fail(db, LSM_INVALID, "the database was opened read-only "
                       "(lsm_options_set_read_only): value writers are refused");
    int rc = db_check_key(db, key, klen);
    if (rc != LSM_OK)
        return rc;
    lsm_value_writer *w = xcalloc(1, sizeof *w);
    w->db = db;
    w->gen = blob_set_tail_gen(&db->blobs);
    buf_append(&w->key, key, klen);
    if (flags & LSM_VW_KEEP)
        rc = writer_load(w, key, klen);
    if (rc != LSM_OK) {
        char err[LSM_ERRLEN];
        memcpy(err, w->err, sizeof err);
        lsm_value_writer_abort(w);
        return db_fail(db, rc, err);
    }
    *out = w;
    return LSM_OK;
}

int lsm_value_writer_write(lsm_value_writer *w, uint64_t off, const void *buf, size_t n)
{
    if (!w || (n && !buf) || off > LSM_MAX_EXTENT_VALUE || n > LSM_MAX_EXTENT_VALUE - off)
        return w ? db_fail(w->db, LSM_INVALID, "lsm_value_writer_write: bad arguments or past "
                           "LSM_MAX_EXTENT_VALUE") : LSM_INVALID;
    if (w->rc != LSM_OK)
        return db_fail(w->db, w->rc, w->err);
    if (n == 0)
        return LSM_OK;
    int rc = writer_append(w, off, buf, n);
    if (rc != LSM_OK)
        w->rc = rc;
    return db_fail(w->db, rc, w->err);
}

int lsm_value_writer_truncate(lsm_value_writer *w, uint64_t size)
{
    if (!w || size > LSM_MAX_EXTENT_VALUE)
        return w ? db_fail(w->db, LSM_INVALID, "lsm_value_writer_truncate: past "
                           "LSM_MAX_EXTENT_VALUE") : LSM_INVALID;
    if (w->rc != LSM_OK)
        return db_fail(w->db, w->rc, w->err);
    int rc = writer_close_record(w);
    if (rc != LSM_OK) {
        w->rc = rc;
        return db_fail(w->db, rc, w->err);
    }
    extent_map_truncate(&w->map, size);
    return LSM_OK;
}

uint64_t lsm_value_writer_size(const lsm_value_writer *w)
{
    return w ? writer_size(w) : 0;
}

int lsm_value_writer_read(lsm_value_writer *w, uint64_t off, void *buf, size_t n, size_t *nread)
{
    if (nread)
        *nread = 0;
    if (!w || (n && !buf))
        return LSM_INVALID;
    if (w->rc != LSM_OK)
        return db_fail(w->db, w->rc, w->err);
    /* The open record's checksums are written when it ends: end it, so it can be read. */
    int rc = writer_close_record(w);
    if (rc != LSM_OK) {
        w->rc = rc;
        return db_fail(w->db, rc, w->err);
    }
    uint64_t k = off < w->map.size ? (w->map.size - off < n ? w->map.size - off : n) : 0;
    char err[LSM_ERRLEN] = "";
    if (k && (rc = extent_read(w->db, &w->map, off, buf, (size_t)k, err)) != LSM_OK)
        return db_fail(w->db, rc, err);
    if (nread)
        *nread = (size_t)k;
    return LSM_OK;
}

int lsm_value_writer_punch(lsm_value_writer *w, uint64_t off, uint64_t n)
{
    if (!w || off > LSM_MAX_EXTENT_VALUE || n > LSM_MAX_EXTENT_VALUE - off)
        return w ? db_fail(w->db, LSM_INVALID, "lsm_value_writer_punch: past "
                           "LSM_MAX_EXTENT_VALUE") : LSM_INVALID;
    if (w->rc != LSM_OK)
        return db_fail(w->db, w->rc, w->err);
    int rc = writer_close_record(w);
    if (rc != LSM_OK) {
        w->rc = rc;
        return db_fail(w->db, rc, w->err);
    }
    uint64_t size = w->map.size;
    uint64_t end = off + n < size ? off + n : size;
    if (off < end)
        extent_map_splice(&w->map, off, end, NULL);
    w->map.size = size;
    return LSM_OK;
}

int lsm_value_writer_copy(lsm_value_writer *w, uint64_t off, const void *src, size_t srclen,
                          uint64_t src_off, uint64_t n, uint64_t *copied)
{
    if (copied)
        *copied = 0;
    if (!w || off > LSM_MAX_EXTENT_VALUE || n > LSM_MAX_EXTENT_VALUE - off)
        return w ? db_fail(w->db, LSM_INVALID, "lsm_value_writer_copy: past "
                           "LSM_MAX_EXTENT_VALUE") : LSM_INVALID;
    lsm_db *db = w->db;
    if (w->rc != LSM_OK)
        return db_fail(db, w->rc, w->err);
    int rc = db_check_key(db, src, srclen);
    if (rc != LSM_OK)
        return rc;
    if ((rc = writer_close_record(w)) != LSM_OK) {
        w->rc = rc;
        return db_fail(db, rc, w->err);
    }
    read_view rv;
    void *v = NULL;
    size_t vlen = 0;
    int type = LSM_TYPE_VALUE;
    char err[LSM_ERRLEN] = "";
    extent_map sm = { 0 };
    rc = db_lookup(db, &rv, src, srclen, &v, &vlen, &type, err);
    if (rc == LSM_OK && type == LSM_TYPE_EXTENTS) {
        if (extent_map_decode((slice){ v, vlen }, &sm) != 0)
            rc = err_set(err, LSM_CORRUPT, "malformed extent map in %s", db->dir);
    } else if (rc == LSM_OK && type == LSM_TYPE_BLOB) {
        uint64_t number, boff, len;
        rc = blob_set_ref_decode(&db->blobs, (slice){ v, vlen }, &number, &boff, &len, err);
        if (rc == LSM_OK && len) {
            extent e = { 0, len, number, boff, len, 0 };
            extent_map_put(&sm, &e);
        }
        sm.size = len;
    } else if (rc == LSM_OK) {
        /* A plain value is small or in a memtable: its bytes are written, not shared. */
        uint64_t k = src_off < vlen ? (vlen - src_off < n ? vlen - src_off : n) : 0;
        if (k) {
            rc = writer_append(w, off, (const uint8_t *)v + src_off, (size_t)k);
            if (rc == LSM_OK)
                rc = writer_close_record(w);
            if (rc != LSM_OK) {
                w->rc = rc;
                memcpy(err, w->err, sizeof err);
            }
        }
        if (rc == LSM_OK && copied)
            *copied = k;
        goto out;
    }
    if (rc == LSM_OK) {
        /* Share the source's extents in the range; its holes become holes here. */
        uint64_t k = src_off < sm.size ? (sm.size - src_off < n ? sm.size - src_off : n) : 0;
        if (k) {
            extent_map_splice(&w->map, off, off + k, NULL);
            uint64_t *nums = xmalloc((sm.n ? sm.n : 1) * sizeof *nums);
            int nn = 0;
            for (size_t i = extent_map_find(&sm, src_off);
                 i < sm.n && sm.v[i].off < src_off + k; i++) {
                extent e = sm.v[i];
                uint64_t a = e.off > src_off ? e.off : src_off;
                uint64_t b = e.off + e.len < src_off + k ? e.off + e.len : src_off + k;
                e.start += a - e.off;
                e.len = b - a;
                e.off = off + (a - src_off);
                extent_map_put(&w->map, &e);
                nums[nn++] = e.file;
                if (e.file != w->file)
                    blob_set_tail_drop(&db->blobs, e.file);     /* shared: no key's tail */
            }
            writer_pin(w, nums, nn);    /* while rv still keeps them */
            free(nums);
        }
        if (copied)
            *copied = k;
    }
out:
    read_view_put(&rv);
    free(v);
    extent_map_free(&sm);
    return db_fail(db, rc, err);
}

/* Releases the pins and frees w; the blob file, if any, is closed (and removed when `remove`). */
static void writer_free(lsm_value_writer *w, int remove)
{
    if (w->map_failed)
        blob_set_keep_unpinned(&w->db->blobs);
    blob_set *bs = &w->db->blobs;
    if (w->tail_f) {            /* not committed: what was appended to the key's tail is garbage */
        w->db->env->close(w->db->env, w->tail_f);
        blob_set_note_size(bs, w->tail_num, w->tail_size);
        blob_set_add_garbage(bs, w->tail_num, w->tail_size - w->tail_base);
    }
    if (w->bw && remove && w->reuse) {
        /* The file is the key's, named by committed maps: what this writer appended is garbage,
           and the file stays the key's tail. */
        uint64_t fsize = blob_writer_size(w->bw);
        blob_writer_close(w->bw);
        blob_set_note_size(bs, w->file, fsize);
        blob_set_add_garbage(bs, w->file, fsize - w->base);
        blob_set_tail_put(bs, w->key.p, w->key.len, w->file, fsize, w->gen);
    } else if (w->bw) {
        if (remove) {
            blob_writer_abandon(w->bw);
            blob_set_forget(bs, w->file);   /* lsm_value_writer_read opened it */
        } else {
            blob_writer_finish(w->bw, NULL);
        }
    } else if (remove && w->reuse) {
        blob_set_tail_put(bs, w->key.p, w->key.len, w->file, w->base, w->gen);  /* unused */
    }
    blob_set_unpin(&w->db->blobs, w->pins, w->npins, 1);
    free(w->pins);
    extent_map_free(&w->map);
    buf_free(&w->key);
    free(w);
}

int lsm_value_writer_commit(lsm_value_writer *w, int sync)
{
    return lsm_value_writer_commit_batch(w, NULL, sync);
}

int lsm_value_writer_commit_batch(lsm_value_writer *w, const lsm_batch *b, int sync)
{
    if (!w)
        return LSM_INVALID;
    lsm_db *db = w->db;
    char err[LSM_ERRLEN] = "";
    int rc = w->rc;
    if (rc == LSM_OK)
        rc = writer_close_record(w);
    if (rc != LSM_OK) {
        memcpy(err, w->err, sizeof err);
        writer_free(w, 1);
        return db_fail(db, rc, err);
    }
    /* The data and the file's name are durable before any durable map names them: a synced
       commit syncs them now; an unsynced one leaves them pending, synced before anything makes
       its map durable (blob_set_sync_pending). */
    uint64_t fsize = w->base;   /* the tail it leaves: unchanged if it wrote nothing */
    int wrote = w->bw != NULL;
    if (w->tail_f) {            /* the key's tail, left for w->file: as the file below */
        lsm_file *f = w->tail_f;
        w->tail_f = NULL;
        if (sync) {
            char path[4096];
            file_path(db->dir, w->tail_num, ".blob", path, sizeof path);
            int e = db->env->sync(db->env, f);
            if (e < 0)
                rc = err_errno(err, e, "syncing", path);
            db->env->close(db->env, f);
        } else {
            blob_set_pending_add(&db->blobs, w->tail_num, f, 0);
        }
        if (rc != LSM_OK) {
            writer_free(w, 1);
            return db_fail(db, rc, err);
        }
        blob_set_note_size(&db->blobs, w->tail_num, w->tail_size);
        blob_set_add_garbage(&db->blobs, w->tail_num,
                             w->tail_written - writer_live(w, w->tail_num, w->tail_base));
    }
    if (w->bw) {
        fsize = blob_writer_size(w->bw);
        if (sync)
            rc = blob_writer_finish(w->bw, err);
        else
            blob_set_pending_add(&db->blobs, w->file, blob_writer_detach(w->bw), w->created);
        w->bw = NULL;
        if (rc == LSM_OK && sync)
            rc = blob_set_sync_pending(&db->blobs, err);     /* the others' */
        /* A reused file's name is durable already, or pending (created) and synced just now. */
        if (rc == LSM_OK && sync && w->created)
            rc = db_sync_dir(db, err);
        if (rc != LSM_OK) {
            if (!w->reuse)      /* a reused file holds the key's committed records */
                db->env->unlink(db->env, w->path);
            w->reuse = 0;
            writer_free(w, 0);
            return db_fail(db, rc, err);
        }
        /* Bytes written and then written over before the commit are garbage from the start.
           Only this writer's records count: those at or past base. */
        uint64_t live = writer_live(w, w->file, w->base);
        blob_set_note_size(&db->blobs, w->file, fsize);
        blob_set_add_garbage(&db->blobs, w->file, w->written - live);
    }
    buf enc = { 0 };
    extent_map_encode(&w->map, &enc);
    if (enc.len > LSM_MAX_VALUE) {
        err_set(err, LSM_INVALID, "extent map of %zu bytes is too long", enc.len);
        rc = db_fail(db, LSM_INVALID, err);
    } else {
        /* Records its own message on failure. */
        rc = db_write_entry(db, LSM_TYPE_EXTENTS, w->key.p, w->key.len, enc.p, enc.len, b, sync);
        w->map_failed = rc != LSM_OK;
    }
    /* The file this writer appended to (or the tail it took and left alone) becomes the key's
       tail: its next LSM_VW_KEEP writer appends there (blob.h). */
    if (rc == LSM_OK && (wrote || w->reuse))
        blob_set_tail_put(&db->blobs, w->key.p, w->key.len, w->file, fsize, w->gen);
    buf_free(&enc);
    /* After a failed write the map may still be in the WAL: the file stays, and the next open
       removes it if nothing names it. */
    writer_free(w, 0);
    return rc;
}

void lsm_value_writer_abort(lsm_value_writer *w)
{
    if (w)
        writer_free(w, 1);
}
