/*
 * builder.h — the table writer: turns a sorted stream of internal entries (a memtable, or a
 * compaction's merge) into one table file, moving large values out to a blob file on the way.
 * LevelDB keeps the same job in db/builder.cc.
 */
#ifndef LSM_BUILDER_H
#define LSM_BUILDER_H

#include "blob.h"
#include "env.h"
#include "lsm_int.h"
#include "memtable.h"
#include "sst.h"
#include "version.h"

typedef struct table_writer {
    lsm_db *db;                 /* the database the table is for (borrowed) */
    lsm_file *f;                /* the table file being written */
    sst_builder *b;
    uint64_t number;            /* its file number */
    buf smallest, largest;      /* internal keys of the first and last entry */
    char path[4096];
    blob_writer *bw;            /* blob file for this table's large values, created on demand */
    uint64_t bw_number;
    uint64_t *blobs;            /* blob files referenced, kept sorted */
    int nblobs;
    uint64_t gc_cutoff;         /* values in blob files numbered below this are rewritten */
    int relocate;               /* move extents out of blob files half garbage (compaction) */
    buf key, val;               /* scratch for rewritten entries */
} table_writer;

/* Starts a new table with a fresh file number. */
int  builder_open(lsm_db *db, table_writer *tw, char *err);
/* Adds an entry; entries come in internal-key order. A value at least blob_threshold long goes to
   the writer's blob file, and a reference into a blob file numbered below gc_cutoff has its value
   copied there too (blob garbage collection rides on compaction). */
int  builder_add(table_writer *tw, slice k, slice v, char *err);
/* Finishes the table; *bytes += its size. With keep NULL it is synced and closed (its directory
   entry is not synced). Otherwise the open file goes to *keep unsynced, and the caller must sync
   and close it before any version names the table: a compaction syncs its outputs together at its
   end, so one journal commit serves them all. On failure the table is abandoned. */
int  builder_finish(table_writer *tw, file_meta **out, uint64_t *bytes, lsm_file **keep, char *err);
/* Opens the writer's blob file if it has none yet (tw->bw, tw->bw_number). */
int  builder_blob_writer(table_writer *tw, char *err);
/* Records that the table names blob file number. */
void builder_note_blob(table_writer *tw, uint64_t number);
/* Closes and deletes the unfinished table (and its blob file). */
void builder_abandon(table_writer *tw);

/* Writes every entry of memtable m into one new synced table; *out is NULL when m was empty. */
int  builder_write_memtable(lsm_db *db, memtable *m, file_meta **out, uint64_t *bytes, char *err);

#endif /* LSM_BUILDER_H */
