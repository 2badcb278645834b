/*
 * extent.h — values stored as extent maps: a logical size and an ordered list of extents, each a
 * window into a record of a blob file; what lies between extents is a hole and reads as zeros.
 *
 * An entry of type LSM_TYPE_EXTENTS holds the encoded map (man/lsm-format.5, EXTENT MAPS). Maps
 * are written by lsm_value_writer (extent.c), a piece at a time, into the writer's own blob file;
 * a new version shares the extents it did not rewrite with the old one. Space comes back by
 * live-byte accounting: a compaction that drops an old version counts the extents the next newer
 * version lacks as garbage of their blob files, and a later compaction moves the live extents out
 * of a file that is half garbage, so the file loses its last reference and is deleted.
 */
#ifndef LSM_EXTENT_H
#define LSM_EXTENT_H

#include "builder.h"
#include "lsm_int.h"
#include "memtable.h"

#define EXTENT_MAP_FORMAT 1                     /* first byte of an encoded map */
#define EXTENT_RECORD_MAX (UINT64_C(1) << 30)   /* a writer's record never grows past this */
#define EXTENT_MOVE_PIECE (1u << 20)            /* bytes copied at a time by relocation */
#define EXTENT_COALESCE   16384u                /* a writer's record absorbs a shorter extent
                                                   that ends where it starts (extent.c) */
#define EXTENT_REUSE_WRITE (1u << 20)           /* a writer appends at most about this much to
                                                   its key's file before taking its own */

typedef struct extent {
    uint64_t off, len;          /* logical bytes [off, off + len) of the value; len > 0 */
    uint64_t file;              /* blob file number */
    uint64_t rec_off, rec_len;  /* the blob record they lie in: its offset in the file, length */
    uint64_t start;             /* where in that record byte off is; start + len <= rec_len */
} extent;

typedef struct extent_map {
    uint64_t size;              /* logical size; every extent ends at or before it */
    extent *v;                  /* ascending, disjoint */
    size_t n, cap;
} extent_map;

void extent_map_free(extent_map *m);                /* frees and empties; accepts an empty map */
void extent_map_encode(const extent_map *m, buf *out);
/* Decodes s into m (emptied first); -1 if s is not a well-formed map. */
int  extent_map_decode(slice s, extent_map *m);
/* The logical size alone, from the map's first bytes; -1 if malformed. */
int  extent_map_size(slice s, uint64_t *size);
/* Lays e over m: what e covers of older extents is cut away. Grows m->size to e's end. */
void extent_map_put(extent_map *m, const extent *e);
/* Sets m->size, dropping or cutting the extents past it. */
void extent_map_truncate(extent_map *m, uint64_t size);
/* The distinct blob file numbers m names, ascending, in *nums (malloc'd, NULL when 0); returns
   their count. */
int  extent_map_files(const extent_map *m, uint64_t **nums);

/* Copies logical bytes [off, off + n) of m into dst (off + n <= m->size), zeros in the holes,
   reading only the chunks of blob records the range touches. */
int  extent_read(lsm_db *db, const extent_map *m, uint64_t off, void *dst, size_t n, char *err);
/* Replaces *val (an encoded map, malloc'd) by the value's bytes (malloc'd); LSM_NOMEM with a
   message when the value is longer than LSM_MAX_VALUE or cannot be allocated. */
int  extent_resolve(lsm_db *db, void **val, size_t *vlen, char *err);
/* lsm_get_range over an encoded map: *nread bytes copied, *size the logical size. */
int  extent_read_range(lsm_db *db, slice map, uint64_t off, void *dst, size_t n, uint64_t *nread,
                       uint64_t *size, char *err);

/* Called by the write path as an entry of type LSM_TYPE_EXTENTS enters memtable m: pins the blob
   files the map names until m is freed. -1 if map is malformed (nothing pinned). */
int  extent_pin_memtable(lsm_db *db, memtable *m, slice map);

/* Compaction dropped the older version (old_type, old) of a key whose next newer version is
   (newer_type, newer; newer_type -1 if none was seen): the bytes of blob records old used that
   newer does not use become garbage of their files. */
void extent_note_dropped(lsm_db *db, int newer_type, slice newer, int old_type, slice old);

/* Adds to e the garbage totals of the blob files whose count changed since the last edit that
   carried them (caller holds manifest_mu). */
void extent_edit_garbage(lsm_db *db, version_edit *e);
/* At open: the garbage the manifest recorded for each blob file still named. */
void extent_load_garbage(lsm_db *db);

/* The table writer meets map v: it names the map's blob files in the table and, when tw->relocate
   is set, copies the extents lying in files that are half garbage into its own blob file; *nv is
   v or the rewritten map (in tw->val). */
int  extent_builder_add(table_writer *tw, slice v, slice *nv, char *err);

#endif /* LSM_EXTENT_H */
