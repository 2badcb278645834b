/*
 * blob.h — blob files: large values kept out of the tables, so compaction moves a small reference
 * instead of rewriting the value (the WiscKey / BlobDB idea); and the blob set, which counts the
 * tables that refer to each live blob file, deletes a file when the count falls to zero, and reads
 * values through a cache of open blob files.
 *
 * A blob file is written once, by one flush or compaction, or by the value writers of one key
 * (appending, commit after commit: extent.c), then only read (format, and the
 * reference a table entry of type LSM_TYPE_BLOB holds: man/lsm-format.5, section BLOB FILES). Each
 * value carries a checksum per BLOB_CHUNK bytes, so reading a byte range verifies only the chunks
 * it touches.
 */
#ifndef LSM_BLOB_H
#define LSM_BLOB_H

#include <pthread.h>
#include "cache.h"
#include "env.h"
#include "lsm_int.h"

#define BLOB_MAGIC   "lsmBLOB\1"
#define BLOB_VERSION 1
#define BLOB_HEADER  16
#define BLOB_CHUNK   65536u

typedef struct blob_writer blob_writer;

/* Creates path (truncating) and writes the header. */
int  blob_writer_open(lsm_env *env, const char *path, blob_writer **out, char *err);
/* Opens the existing blob file path, whose length must be size (else an error, and nothing
   changes), to append more records after those it holds: a value writer reusing the file its
   key's previous writer left (extent.c). */
int  blob_writer_reopen(lsm_env *env, const char *path, uint64_t size, blob_writer **out,
                        char *err);
/* Appends a value; *off is where its bytes start. */
int  blob_writer_add(blob_writer *w, slice val, uint64_t *off, char *err);
uint64_t blob_writer_size(const blob_writer *w);
/* A record written a piece at a time (the same format as blob_writer_add's): begin, any number of
   appends, end. Whole chunks go to the file as they fill; at most one partial chunk is held in
   memory, plus 4 bytes of checksum per chunk until the end. *off is where the record's bytes
   start, *len their count. Used by value writers and by compaction's extent relocation (extent.c). */
int  blob_record_begin(blob_writer *w, uint64_t *off);
int  blob_record_append(blob_writer *w, const void *p, size_t n, char *err);
uint64_t blob_record_length(const blob_writer *w);      /* of the open record; 0 if none */
int  blob_record_end(blob_writer *w, uint64_t *len, char *err);
/* Syncs what was written so far (the file stays open). */
int  blob_writer_sync(blob_writer *w, char *err);
/* Syncs, closes and frees. */
int  blob_writer_finish(blob_writer *w, char *err);
/* Closes (no sync) and frees, leaving the file; accepts NULL. */
void blob_writer_close(blob_writer *w);
/* Closes, removes the file and frees; accepts NULL. */
void blob_writer_abandon(blob_writer *w);
/* Frees w without syncing or closing its file, which it returns (the caller owns it): for a
   value writer's unsynced commit, whose file the blob set then keeps pending. */
lsm_file *blob_writer_detach(blob_writer *w);

/* Appends a reference to the value at (off, len) of blob file `file`; blob_set_ref_decode reads
   it back. */
void blob_ref_encode(buf *out, uint64_t file, uint64_t off, uint64_t len);

/* ---- the blob set of a database ---- */

typedef struct blob_set {
    lsm_env *env;               /* constant after blob_set_init */
    const char *dir;            /* the database directory (borrowed); constant */
    cache *files;               /* open blob files by number; thread-safe itself */
    pthread_mutex_t mu;
    struct blob_count *v;       /* live blob files, unsorted; guarded by mu */
    int n, cap;                 /* guarded by mu */
    int keep_unpinned;          /* unpins never delete any more (blob_set_keep_unpinned); mu */
    /* Pending syncs (blob_set_pending_add): blob files, and the directory entries naming them,
       that maps already written through the WAL (not synced) name. */
    pthread_mutex_t pending_mu; /* a leaf lock, taken after mu when both are held */
    struct blob_pending *pending; /* guarded by pending_mu */
    int npending, pending_cap;  /* guarded by pending_mu */
    int pending_open;           /* entries holding their file open; guarded by pending_mu */
    struct blob_tail *tails;    /* files keys' next writers may append to, oldest first; mu */
    int ntails, tails_cap;      /* guarded by mu */
    uint64_t tail_gen;          /* bumped by blob_set_tail_clear; guarded by mu */
    pthread_mutex_t sync_mu;    /* serialises blob_set_sync_pending; taken before pending_mu */
    int sync_rc;                /* a pending sync failed: every later one fails; sync_mu */
    char sync_err[LSM_ERRLEN];  /* its message; guarded by sync_mu */
} blob_set;

void blob_set_init(blob_set *bs, lsm_env *env, const char *dir, size_t max_open);
void blob_set_destroy(blob_set *bs);
/* A table naming the n blob files of nums entered the current version: one more reference each. */
void blob_set_ref(blob_set *bs, const uint64_t *nums, int n);
/* No version names such a table any more: one reference less each; a file that no table names is
   closed and deleted. */
void blob_set_unref(blob_set *bs, const uint64_t *nums, int n);
/* Records the size of blob file number (for statistics), counting it live if it was not. */
void blob_set_note_size(blob_set *bs, uint64_t number, uint64_t size);
/* Whether some table, memtable or open value writer names blob file number. */
int  blob_set_live(blob_set *bs, uint64_t number);
/* Pins: a memtable holding extent maps, or an open value writer or reader, that names blob files
   keeps them alive as a table does (blob_set_unref never deletes a pinned file). With drop, the
   last unpin of a file no table names deletes it: what writers and readers do, which are all
   closed before the database is. A memtable's unpin never deletes (drop 0): at close, and during
   recovery before the tables that replace them are installed, a memtable's maps may be the only
   ones naming a file, in a WAL; such a file, if nothing names it by then, goes at the next open. */
void blob_set_pin(blob_set *bs, const uint64_t *nums, int n);
void blob_set_unpin(blob_set *bs, const uint64_t *nums, int n, int drop);
/* From now until the database is closed, unpins delete nothing: a value writer's commit failed
   after its map went to the WAL, where it may be replayed from at the next open, and the files
   it names (or shares with others) must still be there then. */
void blob_set_keep_unpinned(blob_set *bs);
/* Live-byte accounting (extent.c): bytes of blob file number that no version needs any more. An
   estimate that may only err high (shared extents), recorded in the manifest by compactions:
   see lsm-format.5, EXTENT MAPS. A file half or more garbage has its live extents moved by compaction. */
void blob_set_add_garbage(blob_set *bs, uint64_t number, uint64_t bytes);
/* Closes blob file number if the set holds it open (its writer removed it). */
void blob_set_forget(blob_set *bs, uint64_t number);
/* Pending syncs, the ext4 data=ordered idea (extent.c): an unsynced value writer commit does not
   sync its blob file nor the directory; it hands the file here (f: its open handle, now owned by
   the set) before its map goes to the WAL. Whatever makes a WAL record durable (a synced write,
   the seal of a WAL, a memtable flush, a checkpoint, close) first calls blob_set_sync_pending,
   which syncs every file handed over before the call (all sent to the device first, then each
   synced) and then the directory, if one of them was created (created: the writer made the file
   and nothing has synced the directory since). A file handed over twice (reused) is one entry. A file the set
   deletes before that is dropped from the list. After a failed pending sync every later call
   fails (LSM_IOERR): a map whose bytes may be lost must never become durable. */
void blob_set_pending_add(blob_set *bs, uint64_t number, lsm_file *f, int created);
int  blob_set_sync_pending(blob_set *bs, char *err);
int  blob_set_pending_count(blob_set *bs);
/* Per-key reuse (extent.c, doc/large-files.md): after a value writer of key commits, the file it
   appended to is that key's "tail", size bytes long; the key's next LSM_VW_KEEP writer takes it
   (blob_set_tail_take: removed from the set, so one writer appends at a time) and appends to it
   instead of creating a file, then puts it back. Kept in memory only (at most BLOB_TAILS, the
   oldest dropped; none after a reopen). tail_put keeps nothing for a file no table, memtable or
   writer names, nor one past BLOB_REUSE_MAX; tail_take returns 0 for a file that went. A file deleted, shared with another key (lsm_value_writer_copy:
   blob_set_tail_drop) or hard-linked into a checkpoint (blob_set_tail_clear, at the end of
   lsm_checkpoint) is nobody's tail any more. (A writer that took a file before a checkpoint
   linked it may still append to it, past every byte the checkpoint's maps name: garbage there.) */
#define BLOB_TAILS      256
#define BLOB_REUSE_MAX  (UINT64_C(64) << 20)
void blob_set_tail_put(blob_set *bs, const void *key, size_t klen, uint64_t number, uint64_t size,
                       uint64_t gen);
int  blob_set_tail_take(blob_set *bs, const void *key, size_t klen, uint64_t *number,
                        uint64_t *size);
void blob_set_tail_drop(blob_set *bs, uint64_t number);
/* gen: blob_set_tail_gen() read when the writer opened; a put with an older one is ignored, so
   that a file a checkpoint linked meanwhile is never appended to after the checkpoint. */
uint64_t blob_set_tail_gen(blob_set *bs);
void blob_set_tail_clear(blob_set *bs);
/* Sets the garbage of a live file from the manifest, at open. */
void blob_set_load_garbage(blob_set *bs, uint64_t number, uint64_t bytes);
/* The files whose garbage changed since the last call: *pairs (malloc'd) holds (number, total)
   pairs for the next manifest edit; returns how many. */
int  blob_set_take_garbage(blob_set *bs, uint64_t **pairs);
int  blob_set_mostly_garbage(blob_set *bs, uint64_t number);
uint64_t blob_set_garbage(blob_set *bs, uint64_t number);
/* Bytes of the blob files some table names. */
uint64_t blob_set_live_bytes(blob_set *bs);
/* Oldest-quarter blob file number for age-based garbage collection: a compaction moves the live
   values of files numbered below it (0: none, while fewer than four files live). */
uint64_t blob_set_gc_cutoff(blob_set *bs);
/* Bytes of the live blob files numbered below cutoff: what moving their values may write. */
uint64_t blob_set_bytes_below(blob_set *bs, uint64_t cutoff);
/* Decodes a blob reference found in a table; LSM_CORRUPT with a message if it is malformed. */
int  blob_set_ref_decode(const blob_set *bs, slice ref, uint64_t *number, uint64_t *off,
                         uint64_t *len, char *err);
/* Reads [pos, pos + n) of the value that ref points to into dst; *len is its full length. */
int  blob_set_read(blob_set *bs, slice ref, uint64_t pos, void *dst, size_t n, uint64_t *len,
                   char *err);
/* Reads [pos, pos + n) of the record at (off, len) of blob file number into dst, verifying every
   chunk it touches. */
int  blob_set_read_record(blob_set *bs, uint64_t number, uint64_t off, uint64_t len, uint64_t pos,
                          void *dst, size_t n, char *err);
/* Replaces *val (a blob reference, malloc'd) by the value it points to (malloc'd). */
int  blob_set_resolve(blob_set *bs, void **val, size_t *vlen, char *err);

#endif /* LSM_BLOB_H */
