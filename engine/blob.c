/*
 * blob.c — writing and reading blob files (format in blob.h and man/lsm-format.5).
 *
 *   file    := header value*
 *   header  := magic "lsmBLOB\1" (8 bytes) | fixed32 version (1) | fixed32 reserved (0)
 *   value   := bytes[len] | fixed32 checksum × ceil(len / 65536)
 *
 * Checksum i is the low 32 bits of XXH3_64bits over bytes [i·65536, min((i+1)·65536, len)) of the
 * value. Values are found only through references in tables, so the file needs no index. This
 * module never returns bytes whose chunk checksum it has not verified.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include "blob.h"

struct blob_writer {
    lsm_env *env;
    lsm_file *f;
    char *path;
    uint64_t size;              /* bytes written so far */
    buf sums;                   /* checksums of the value being added */
};

int blob_writer_open(lsm_env *env, const char *path, blob_writer **out, char *err)
{
    blob_writer *w = xcalloc(1, sizeof *w);
    w->env = env;
    w->path = xmemdup(path, strlen(path) + 1);
    int e = env->open(env, path, LSM_O_CREATE, &w->f);
    if (e < 0) {
        free(w->path);
        free(w);
        return err_errno(err, e, "creating", path);
    }
    uint8_t h[BLOB_HEADER] = { 0 };
    memcpy(h, BLOB_MAGIC, 8);
    enc_fixed32(h + 8, BLOB_VERSION);
    e = env_append_all(env, w->f, h, sizeof h);
    if (e < 0) {
        blob_writer_abandon(w);
        return err_errno(err, e, "writing", path);
    }
    w->size = BLOB_HEADER;
    *out = w;
    return LSM_OK;
}

int blob_writer_add(blob_writer *w, slice val, uint64_t *off, char *err)
{
    w->sums.len = 0;
    for (size_t i = 0; i < val.n; i += BLOB_CHUNK) {
        size_t n = val.n - i < BLOB_CHUNK ? val.n - i : BLOB_CHUNK;
        buf_put_fixed32(&w->sums, checksum32(val.p + i, n));
    }
    int e = env_append_all(w->env, w->f, val.p, val.n);
    if (e == 0)
        e = env_append_all(w->env, w->f, w->sums.p, w->sums.len);
    if (e < 0)
        return err_errno(err, e, "writing", w->path);
    *off = w->size;
    w->size += val.n + w->sums.len;
    return LSM_OK;
}

uint64_t blob_writer_size(const blob_writer *w)
{
    return w->size;
}

static void blob_writer_free(blob_writer *w)
{
    buf_free(&w->sums);
    free(w->path);
    free(w);
}

int blob_writer_finish(blob_writer *w, char *err)
{
    int e = w->env->sync(w->env, w->f);
    int rc = e < 0 ? err_errno(err, e, "syncing", w->path) : LSM_OK;
    w->env->close(w->env, w->f);
    blob_writer_free(w);
    return rc;
}

void blob_writer_abandon(blob_writer *w)
{
    if (!w)
        return;
    w->env->close(w->env, w->f);
    w->env->unlink(w->env, w->path);
    blob_writer_free(w);
}

void blob_ref_encode(buf *out, uint64_t file, uint64_t off, uint64_t len)
{
    buf_put_varint(out, file);
    buf_put_varint(out, off);
    buf_put_varint(out, len);
}

int blob_ref_decode(slice s, uint64_t *file, uint64_t *off, uint64_t *len)
{
    const uint8_t *p = s.p, *end = s.p + s.n;
    if (!(p = dec_varint(p, end, file)) || !(p = dec_varint(p, end, off)) ||
        !(p = dec_varint(p, end, len)) || p != end || *len > LSM_MAX_VALUE || *off < BLOB_HEADER)
        return -1;
    return 0;
}

int blob_check_header(lsm_env *env, lsm_file *f, const char *path, char *err)
{
    uint8_t h[BLOB_HEADER];
    int e = env_pread_all(env, f, h, sizeof h, 0);
    if (e == -ENODATA)
        return err_set(err, LSM_CORRUPT, "%s: offset 0: file shorter than its header", path);
    if (e < 0)
        return err_errno(err, e, "reading", path);
    if (memcmp(h, BLOB_MAGIC, 8) != 0)
        return err_set(err, LSM_CORRUPT, "%s: offset 0: bad magic (not a blob file)", path);
    if (dec_fixed32(h + 8) != BLOB_VERSION)
        return err_set(err, LSM_CORRUPT, "%s: offset 8: unsupported blob format version %u", path,
                       dec_fixed32(h + 8));
    return LSM_OK;
}

int blob_read(lsm_env *env, lsm_file *f, const char *path, uint64_t off, uint64_t len,
              uint64_t pos, void *dst, size_t n, char *err)
{
    if (n == 0)
        return LSM_OK;
    if (pos + n > len)
        return err_set(err, LSM_INVALID, "%s: read past the end of a blob value", path);
    uint64_t first = pos / BLOB_CHUNK, last = (pos + n - 1) / BLOB_CHUNK;
    uint64_t nchunks = (len + BLOB_CHUNK - 1) / BLOB_CHUNK;
    uint64_t lo = first * BLOB_CHUNK;
    uint64_t hi = (last + 1) * BLOB_CHUNK < len ? (last + 1) * BLOB_CHUNK : len;
    size_t nsums = (size_t)(last - first + 1);
    uint8_t *sums = xmalloc(nsums * 4);
    /* Read straight into dst when the range is whole chunks; otherwise through a bounce buffer. */
    int direct = lo == pos && hi == pos + n;
    uint8_t *data = direct ? dst : xmalloc((size_t)(hi - lo));
    int rc = LSM_OK;
    int e = env_pread_all(env, f, data, (size_t)(hi - lo), off + lo);
    if (e == 0)
        e = env_pread_all(env, f, sums, nsums * 4, off + len + first * 4);
    if (e == -ENODATA)
        rc = err_set(err, LSM_CORRUPT, "%s: offset %" PRIu64 ": blob value runs past the end of the file",
                     path, off);
    else if (e < 0)
        rc = err_errno(err, e, "reading", path);
    for (uint64_t c = first; rc == LSM_OK && c <= last; c++) {
        uint64_t cs = c * BLOB_CHUNK - lo;
        size_t cn = (size_t)((c + 1 == nchunks ? len : (c + 1) * BLOB_CHUNK) - c * BLOB_CHUNK);
        if (checksum32(data + cs, cn) != dec_fixed32(sums + 4 * (c - first)))
            rc = err_set(err, LSM_CORRUPT, "%s: offset %" PRIu64 ": blob chunk checksum mismatch",
                         path, off + c * BLOB_CHUNK);
    }
    if (rc == LSM_OK && !direct)
        memcpy(dst, data + (pos - lo), n);
    if (!direct)
        free(data);
    free(sums);
    return rc;
}
