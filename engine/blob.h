/*
 * blob.h — blob files: large values kept out of the tables, so compaction moves a small reference
 * instead of rewriting the value (the WiscKey / BlobDB idea).
 *
 * A blob file is written once, by one flush or compaction, then only read. A value at offset off of
 * length len is stored as its bytes followed by one fixed32 checksum per 64 KiB chunk, so reading a
 * byte range verifies only the chunks it touches. A table entry of type LSM_TYPE_BLOB holds a
 * reference: varint file number, varint offset, varint length.
 */
#ifndef LSM_BLOB_H
#define LSM_BLOB_H

#include "env.h"
#include "lsm_int.h"

#define BLOB_MAGIC   "lsmBLOB\1"
#define BLOB_VERSION 1
#define BLOB_HEADER  16
#define BLOB_CHUNK   65536u

typedef struct blob_writer blob_writer;

/* Creates path (truncating) and writes the header. */
int  blob_writer_open(lsm_env *env, const char *path, blob_writer **out, char *err);
/* Appends a value; *off is where its bytes start. */
int  blob_writer_add(blob_writer *w, slice val, uint64_t *off, char *err);
uint64_t blob_writer_size(const blob_writer *w);
/* Syncs, closes and frees. */
int  blob_writer_finish(blob_writer *w, char *err);
/* Closes, removes the file and frees; accepts NULL. */
void blob_writer_abandon(blob_writer *w);

void blob_ref_encode(buf *out, uint64_t file, uint64_t off, uint64_t len);
/* 0 on success, -1 if s is not a well-formed reference. */
int  blob_ref_decode(slice s, uint64_t *file, uint64_t *off, uint64_t *len);

/* Copies bytes [pos, pos + n) of the value at (off, len) in f into dst, verifying the checksum of
   every chunk it touches. pos + n must be <= len. LSM_CORRUPT "path: offset N: why" on damage. */
int  blob_read(lsm_env *env, lsm_file *f, const char *path, uint64_t off, uint64_t len,
               uint64_t pos, void *dst, size_t n, char *err);
/* Checks the header of an opened blob file. */
int  blob_check_header(lsm_env *env, lsm_file *f, const char *path, char *err);

#endif /* LSM_BLOB_H */
