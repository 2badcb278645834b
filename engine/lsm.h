/*
 * lsm.h — the public interface of liblsm, an embeddable, crash-safe LSM-tree key-value engine.
 *
 * Conventions, stated once:
 *  - Handles (lsm_db, lsm_iter, lsm_batch, lsm_options, lsm_snapshot, lsm_value_writer,
 *    lsm_value_reader) are opaque; create them with the functions below. Nothing the ABI depends
 *    on is an open struct except lsm_stats, which callers pass with its size and which only ever
 *    grows at its end: adding an option or a counter never breaks a program built against an
 *    older lsm.h (soname liblsm.so.1).
 *  - Keys and values are (pointer, length) pairs of arbitrary bytes. Keys are 1..LSM_MAX_KEY bytes
 *    and compare bytewise (memcmp over the common prefix, then the shorter key first). Values are
 *    0..LSM_MAX_VALUE bytes, or up to LSM_MAX_EXTENT_VALUE written with a value writer.
 *  - Memory the library returns is either owned by the caller (said as "caller frees with free()")
 *    or borrowed (said with how long it stays valid). Every free/close function accepts NULL.
 *  - Every function that can fail returns int: LSM_OK (0) or a negative LSM_* code. lsm_strerror()
 *    names a code; lsm_errmsg() gives the detail of the last failure on a handle (file, offset, why).
 *    A call that fails because of misuse (LSM_INVALID) changes nothing.
 *  - Thread safety: any number of threads may share one lsm_db. An lsm_iter or lsm_batch belongs to
 *    one thread at a time; an lsm_snapshot may be read through by many threads at once. The
 *    engine's own background threads (flush, compaction) block every signal but faults, so a
 *    signal sent to the process is always handled by a caller's thread.
 *  - Out of memory inside the engine aborts the process (as LevelDB does), except where a call can
 *    say LSM_NOMEM (a value buffer too large to allocate).
 */
#ifndef LSM_H
#define LSM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Marks what liblsm exports. The library is built with -fvisibility=hidden, so every other symbol
   in it stays private and cannot clash with a program's own. */
#if defined(__GNUC__) && defined(LSM_BUILDING_LIBRARY)
#define LSM_API __attribute__((visibility("default")))
#else
#define LSM_API
#endif

#define LSM_VERSION_STRING "0.2.0"    /* ABI: liblsm.so.1 */

#define LSM_MAX_KEY   65535u          /* longest key, bytes */
#define LSM_MAX_VALUE (1u << 30)      /* longest value given to lsm_put or returned whole, bytes
                                         (1 GiB) */
#define LSM_MAX_EXTENT_VALUE (UINT64_C(1) << 44) /* longest value written with lsm_value_writer,
                                                    bytes (16 TiB) */

enum {
    LSM_OK       = 0,
    LSM_NOTFOUND = -1,  /* the key has no value (absent or deleted) */
    LSM_CORRUPT  = -2,  /* a checksum, magic number or structure on disk is wrong */
    LSM_IOERR    = -3,  /* the operating system reported an I/O failure (EIO, EROFS, ...) */
    LSM_BUSY     = -4,  /* the directory is locked by another handle or process */
    LSM_NOMEM    = -5,  /* an allocation failed */
    LSM_INVALID  = -6,  /* bad argument or misuse: nothing was changed */
    LSM_EXISTS   = -7,  /* the database exists and error_if_exists was set */
    LSM_CLOSED   = -8,  /* the handle failed hard earlier (I/O error); reopen to recover */
    LSM_NOSPACE  = -9   /* the device is full (ENOSPC, EDQUOT). The write that gets it changed
                           nothing and the handle stays usable: with a reserve
                           (lsm_options_set_reserve_bytes) deletes go on working, and writes that
                           add data work again once space is freed. Only when the disk filled in
                           the middle of a log or manifest record (a file system without
                           fallocate) does it stay, as LSM_IOERR does, until a reopen */
};

enum {
    LSM_COMPRESSION_NONE = 0,
    LSM_COMPRESSION_LZ4  = 1,
    LSM_COMPRESSION_ZSTD = 2
};

typedef struct lsm_db lsm_db;
typedef struct lsm_iter lsm_iter;
typedef struct lsm_batch lsm_batch;
typedef struct lsm_options lsm_options;
typedef struct lsm_snapshot lsm_snapshot;

/* The library's version, "MAJOR.MINOR.PATCH", as built (may differ from LSM_VERSION_STRING, the
   header's, when a program runs against a newer liblsm.so.1). */
LSM_API const char *lsm_version(void);

/* ---- options ----
   Options are opaque and set one by one, so that a new option never changes the ABI. An options
   object holds the defaults below until a setter changes them; lsm_open copies what it needs, so
   the object may be freed or reused right after. A setter given a value that can never be valid
   (a negative count, an unknown compression) returns LSM_INVALID and changes nothing; values that
   are valid but too small are raised to the engine's minimum at lsm_open (memtable 4 KiB, block
   256 B, table and level-1 size 4 KiB, 16 open tables). */

/* A new options object with every default; NULL only when out of memory. Free with
   lsm_options_free (accepts NULL). */
LSM_API lsm_options *lsm_options_new(void);
LSM_API void lsm_options_free(lsm_options *opt);
/* A memtable this large is flushed to a table; default 4 MiB. */
LSM_API int lsm_options_set_memtable_bytes(lsm_options *opt, size_t n);
/* Block cache capacity; default 8 MiB; 0 = no cache. */
LSM_API int lsm_options_set_cache_bytes(lsm_options *opt, size_t n);
/* Bloom filter bits per key; default 10; 0 = no filter. */
LSM_API int lsm_options_set_bloom_bits_per_key(lsm_options *opt, int bits);
/* LSM_COMPRESSION_*; default NONE. level is zstd's (default 1; ignored for LZ4 and NONE). */
LSM_API int lsm_options_set_compression(lsm_options *opt, int compression, int level);
/* 1: lsm_put/lsm_delete fsync the WAL before returning; default 0. */
LSM_API int lsm_options_set_sync_writes(lsm_options *opt, int on);
/* Unsynced writes gather in a user-space buffer of this size that reaches the OS when full, at
   every sync and, while no memtable is being flushed, within about 100 ms, so a process crash can
   lose up to that much of the newest unsynced writes (never a synced one); 0: every write reaches
   the OS before it returns. Default 64 KiB. */
LSM_API int lsm_options_set_wal_buffer_bytes(lsm_options *opt, size_t n);
/* Create the directory and database when absent; default 1. */
LSM_API int lsm_options_set_create_if_missing(lsm_options *opt, int on);
/* Fail with LSM_EXISTS when a database is already there; default 0. */
LSM_API int lsm_options_set_error_if_exists(lsm_options *opt, int on);
/* Tables kept open at once; default 1000. */
LSM_API int lsm_options_set_max_open_files(lsm_options *opt, int n);
/* Target data block size; default 4 KiB. */
LSM_API int lsm_options_set_block_bytes(lsm_options *opt, size_t n);
/* Target table size written by compaction; default 2 MiB. */
LSM_API int lsm_options_set_table_bytes(lsm_options *opt, size_t n);
/* Size that makes level 1 compact into level 2; each deeper level holds ten times its parent;
   default 10 MiB. */
LSM_API int lsm_options_set_level1_bytes(lsm_options *opt, size_t n);
/* Values at least this long go to blob files when flushed; 0 = never; default 64 KiB. */
LSM_API int lsm_options_set_blob_threshold(lsm_options *opt, size_t n);
/* 1: compact in background threads (default); 0: only lsm_compact. With it, writes that outrun
   compaction are paced once level 0 holds 20 tables (64 MiB/s there, falling to nothing at 36)
   and wait while it holds 36; level 0 never holds more than 36. */
LSM_API int lsm_options_set_background_compaction(lsm_options *opt, int on);
/* Bytes held back in a file named RESERVE in the database directory, for the day the disk is
   full; default 0 (none). When the disk first refuses a write, the reserve is given back and the
   refused work retried; from then on writes that only add data fail with LSM_NOSPACE at once,
   while deletes (and batches marked with lsm_batch_set_frees_space) go on, and their flushes and
   compactions use the reserve's room to free space. The reserve is taken back, and adding data
   allowed again, as soon as the file system has room for it. lsm_open gives it back before
   recovery, so a database on a full disk can still be opened. Size it to hold at least one
   memtable flush (twice the memtable size is a good start). */
LSM_API int lsm_options_set_reserve_bytes(lsm_options *opt, size_t n);
/* 1: open read-only; default 0. Such an open never writes to the directory: it creates no WAL or
   manifest, deletes, renames and flushes nothing and never compacts; the WALs are replayed into
   memory, so the handle sees every write that a read-write open would. lsm_put, lsm_delete,
   lsm_write, lsm_value_writer_open, lsm_flush and the compactions fail with LSM_INVALID (lsm_sync
   does nothing). It takes a shared lock on LOCK: any number of read-only handles (in any
   processes) coexist, while a read-write handle excludes them both ways, and the loser fails with
   LSM_BUSY naming the holder ("LOCK: held by a read-write handle or process (pid 123)", or "held
   by read-only handles"). A directory without LOCK (a copy, a database on a read-only medium) is
   opened without a lock: then nothing stops a later read-write open from changing it under the
   handle. The directory must hold a database (create_if_missing and error_if_exists are
   ignored). The writes the logs hold stay in memory for the handle's life. */
LSM_API int lsm_options_set_read_only(lsm_options *opt, int on);

/* Levels of the engine's messages (lsm_options_set_logger), most urgent first. */
enum {
    LSM_LOG_ERROR = 0,  /* a failure: a background error that stopped writes, a checksum failure a
                           read met, an open or a close that failed */
    LSM_LOG_WARN  = 1,  /* trouble survived: a torn log tail dropped, the disk full (reserve given
                           back, low-space mode entered, a flush or compaction postponed) */
    LSM_LOG_INFO  = 2,  /* what an operator wants in a log file: recovery, flushes, low-space mode
                           left, orphan files removed */
    LSM_LOG_DEBUG = 3   /* every compaction and table move, normal files removed at open */
};
/* What the engine calls with each message: level is an LSM_LOG_* value, msg one line without a
   newline (borrowed for the call only), arg the pointer given to the setter. */
typedef void (*lsm_log_fn)(void *arg, int level, const char *msg);
/* Sets the function the handle reports to (default NULL: the engine says nothing, as without
   this call). It receives every level; filter in it. It is called from the engine's background
   threads and from the caller's own threads, possibly from several at once, so it must be
   thread-safe. The engine calls it holding none of its locks (a message that arises under one
   is queued and delivered soon after, by a thread that holds none), yet it must not call lsm_*
   functions on the handle that reports (it may run inside lsm_open, lsm_close, or a flush that
   a write waits for), and it should return quickly: a slow callback slows flushes and
   compactions. fn NULL turns reporting off. */
LSM_API int lsm_options_set_logger(lsm_options *opt, lsm_log_fn fn, void *arg);

/* Opens (creating if allowed) the database in directory dir. opt NULL = defaults. On success *out is
   a handle to close with lsm_close(). On failure *out is NULL; the message is in lsm_errmsg(NULL)
   (kept per thread), e.g. "LOCK: held by another handle (pid 123)" for LSM_BUSY. */
LSM_API int  lsm_open(const char *dir, const lsm_options *opt, lsm_db **out);

/* Waits for background work, syncs the WAL, releases the lock and frees db. Accepts NULL. Returns the
   first error met while closing (the handle is freed regardless). */
LSM_API int  lsm_close(lsm_db *db);

LSM_API int  lsm_put(lsm_db *db, const void *key, size_t klen, const void *val, size_t vlen);
LSM_API int  lsm_delete(lsm_db *db, const void *key, size_t klen);

/* *val is from malloc() (caller frees; NULL when vlen is 0 is never returned: a 0-length value gives
   a valid 1-byte allocation); LSM_NOTFOUND if absent; LSM_NOMEM (with a message) for a value
   longer than LSM_MAX_VALUE, which only a value writer makes: read those with lsm_get_range. */
LSM_API int  lsm_get(lsm_db *db, const void *key, size_t klen, void **val, size_t *vlen);

/* Like lsm_get without copying the value: only its length (of an extent map: from the map alone,
   without reading data). */
LSM_API int  lsm_get_size(lsm_db *db, const void *key, size_t klen, uint64_t *vlen);

/* The value's length (*size) and the bytes it occupies (*allocated): for a value written with a
   value writer, the sum of its extents' lengths (holes take nothing; an extent shared with another
   value counts in each, as reflinked files do in du); for any other value its length. Reads no
   data. Either pointer may be NULL. */
LSM_API int  lsm_get_allocated(lsm_db *db, const void *key, size_t klen, uint64_t *size,
                               uint64_t *allocated);

/* For SEEK_DATA/SEEK_HOLE: the first range of data [*start, *end) of the key's value that ends
   after off (it may begin before off); *start == *end == the value's length when only holes (or
   nothing) follow off. A value not written with a value writer is one range of data. Reads no
   data. LSM_NOTFOUND only when the key is absent. */
LSM_API int  lsm_get_next_data(lsm_db *db, const void *key, size_t klen, uint64_t off,
                               uint64_t *start, uint64_t *end);

/* Copies at most n bytes of the key's value starting at byte off into buf; *nread is how many were
   copied (0 at or past the end) and *vlen (may be NULL) the value's full length. It copies no more
   than the range, wherever the value is: a value in a memtable is copied from in place, one in a
   blob file is read by range, and one in a table is read with its data block (values at least
   blob_threshold long never sit in a table block). A value written with lsm_value_writer is read
   from the extents the range meets; holes give zeros. */
LSM_API int  lsm_get_range(lsm_db *db, const void *key, size_t klen, uint64_t off, void *buf, size_t n,
                   size_t *nread, uint64_t *vlen);

/* ---- values written a piece at a time ----
   A value writer builds a new version of one key's value as an extent map (man/lsm-format.5,
   EXTENT MAPS): bytes written at any offset go to a blob file the writer owns, unwritten ranges
   are holes that read as zeros and take no space, and ranges the writer does not touch are shared
   with the version it started from (no copy). A write of n bytes costs O(n) I/O plus the map;
   sequential writes extend one record, holding at most 64 KiB of them in memory. Nothing is
   visible until commit, which writes the new map as one atomic write (through the WAL, like
   lsm_put): after a crash the key holds the old version or the new one, never a mixture, and the
   writer's bytes are durable before a durable map names them. A writer that is aborted, or never
   committed because the process died, leaves nothing: its blob file is removed (at the next open
   after a crash). Values written this way may be up to LSM_MAX_EXTENT_VALUE bytes; lsm_get returns
   one only up to LSM_MAX_VALUE (larger: LSM_NOMEM, read it with lsm_get_range), and lsm_iter_value
   fails the same way on one.
   A writer belongs to one thread at a time; any number may be open, on the same key too: the last
   commit wins, as with lsm_put. Close every writer (commit or abort) before lsm_close. */
typedef struct lsm_value_writer lsm_value_writer;

#define LSM_VW_KEEP 1   /* lsm_value_writer_open: start from the key's current value (else empty) */

/* Opens a writer for key. flags 0: the new value starts empty; LSM_VW_KEEP: it starts as the
   key's current value (empty when absent). On success *out is the writer, to finish with
   lsm_value_writer_commit or _abort; on failure *out is NULL. */
LSM_API int lsm_value_writer_open(lsm_db *db, const void *key, size_t klen, int flags,
                                  lsm_value_writer **out);
/* Writes n bytes at byte off (copied before the call returns). Writing past the end grows the
   value, leaving a hole between the old end and off. LSM_INVALID past LSM_MAX_EXTENT_VALUE. After
   an I/O failure the writer is spoiled: every later call fails and commit only releases it. */
LSM_API int lsm_value_writer_write(lsm_value_writer *w, uint64_t off, const void *buf, size_t n);
/* Sets the value's size: bytes past size go; growing adds a hole. */
LSM_API int lsm_value_writer_truncate(lsm_value_writer *w, uint64_t size);
/* The value's size as written so far. */
LSM_API uint64_t lsm_value_writer_size(const lsm_value_writer *w);
/* Reads at most n bytes at off of the value as written so far (uncommitted writes included) into
   buf; *nread (may be NULL) is how many (0 at or past the end). */
LSM_API int lsm_value_writer_read(lsm_value_writer *w, uint64_t off, void *buf, size_t n,
                                  size_t *nread);
/* Makes the range [off, off + n) a hole (as fallocate's PUNCH_HOLE|KEEP_SIZE): the size stays. */
LSM_API int lsm_value_writer_punch(lsm_value_writer *w, uint64_t off, uint64_t n);
/* Makes [off, off + k) of the new value the bytes [src_off, src_off + k) of key src's current
   value, k = min(n, what src holds past src_off), *copied = k (may be NULL). Nothing is copied
   when src is a value written with a value writer or a large value in a blob file: the range
   shares its extents (and holes) with src, so a reflink copy costs the map only; a small value is
   copied. src may be the writer's own key (its committed value). LSM_NOTFOUND if src is absent. */
LSM_API int lsm_value_writer_copy(lsm_value_writer *w, uint64_t off, const void *src,
                                  size_t srclen, uint64_t src_off, uint64_t n, uint64_t *copied);
/* Makes the new value the key's value in one atomic write, syncing the WAL when sync is set (as
   lsm_write's sync). Frees w, whatever the result. With sync set it costs three syncs: the
   writer's blob file, the directory (the file is new), the WAL. Without, none: the blob file and
   directory are synced later, before anything makes the map durable (the next synced write of
   any writer, lsm_sync, a memtable switch or flush, lsm_checkpoint, lsm_close), so that write
   pays for them; until then a power loss may lose the commit, as an unsynced lsm_write, but never
   leaves a torn value. */
LSM_API int lsm_value_writer_commit(lsm_value_writer *w, int sync);
/* As lsm_value_writer_commit, with the entries of batch b (may be NULL; not changed) in the same
   atomic write, after the value: a file's content and its attribute record, say. */
LSM_API int lsm_value_writer_commit_batch(lsm_value_writer *w, const lsm_batch *b, int sync);
/* Drops everything written and frees w. Accepts NULL. */
LSM_API void lsm_value_writer_abort(lsm_value_writer *w);

/* A value reader reads one version of a key's value by range for as long as it is open, whatever
   is written or compacted meanwhile (the blob files of that version stay on disk until it is
   closed), and finds each range from the map it decoded once: the way to read a large value
   many times (a file held open). A reader belongs to one thread at a time; close every reader
   before lsm_close. */
typedef struct lsm_value_reader lsm_value_reader;

/* Opens a reader on key's current value; LSM_NOTFOUND if absent. A plain value (not written with a
   value writer, nor large enough for a blob file) is copied into the reader. */
LSM_API int lsm_value_reader_open(lsm_db *db, const void *key, size_t klen, lsm_value_reader **out);
LSM_API uint64_t lsm_value_reader_size(const lsm_value_reader *r);
/* Copies at most n bytes at off into buf; *nread (may be NULL) is how many (0 at or past the end);
   holes read as zeros. */
LSM_API int lsm_value_reader_read(lsm_value_reader *r, uint64_t off, void *buf, size_t n,
                                  size_t *nread);
/* Accepts NULL. */
LSM_API void lsm_value_reader_close(lsm_value_reader *r);

/* Every write committed so far is on stable storage when this returns LSM_OK. */
LSM_API int  lsm_sync(lsm_db *db);

/* Batches: applied by lsm_write all or nothing, before and after a crash. lsm_batch_new aborts on
   out of memory; put/delete copy key and value. Invalid lengths are remembered and make lsm_write
   fail with LSM_INVALID. */
LSM_API lsm_batch *lsm_batch_new(void);
LSM_API void lsm_batch_put(lsm_batch *b, const void *key, size_t klen, const void *val, size_t vlen);
LSM_API void lsm_batch_delete(lsm_batch *b, const void *key, size_t klen);
LSM_API void lsm_batch_clear(lsm_batch *b);
LSM_API int  lsm_batch_count(const lsm_batch *b);
/* Marks b as a write that frees space (a removal that also rewrites a little metadata), so it is
   accepted on a full disk while the reserve is in use, as deletes are; on = 0 clears the mark.
   lsm_batch_clear clears it too. */
LSM_API void lsm_batch_set_frees_space(lsm_batch *b, int on);
LSM_API int  lsm_write(lsm_db *db, lsm_batch *b, int sync);
LSM_API void lsm_batch_free(lsm_batch *b);

/* Iterators see a snapshot taken at lsm_iter_new: later writes are invisible. Free every iterator
   before lsm_close. After a failure (corrupt table, I/O error) lsm_iter_valid() turns 0 and
   lsm_iter_status() says why. */
LSM_API int  lsm_iter_new(lsm_db *db, lsm_iter **out);
LSM_API void lsm_iter_seek(lsm_iter *it, const void *key, size_t klen);  /* first key >= key; klen 0 = first */
LSM_API int  lsm_iter_valid(const lsm_iter *it);
LSM_API void lsm_iter_next(lsm_iter *it);
LSM_API const void *lsm_iter_key(const lsm_iter *it, size_t *klen);    /* borrowed until the next call */
/* Borrowed until the next call. NULL when the value could not be read (a value kept in a blob file
   is read here, and that can fail; a value longer than LSM_MAX_VALUE gives LSM_NOMEM): the
   iterator is then invalid and lsm_iter_status says why. A scan that may meet such values reads
   keys only, and values by range. */
LSM_API const void *lsm_iter_value(const lsm_iter *it, size_t *vlen);
LSM_API int  lsm_iter_status(const lsm_iter *it);
/* Iteration stops (lsm_iter_valid turns 0) at the first key >= key; klen 0 removes the bound. A
   bound lets a prefix scan stop at the prefix's end instead of stepping over the deleted keys that
   follow it. Unpositioned afterwards: seek. */
LSM_API void lsm_iter_set_upper_bound(lsm_iter *it, const void *key, size_t klen);
/* Moves the iterator's snapshot to now, as if it were freed and made anew but cheaply: when no
   flush or compaction happened since, only the snapshot moves. Unpositioned afterwards: seek. */
LSM_API int  lsm_iter_refresh(lsm_iter *it);
LSM_API void lsm_iter_free(lsm_iter *it);

/* ---- snapshots ----
   A snapshot is a consistent point-in-time view of the database: reads through it see exactly
   the writes acknowledged before lsm_snapshot_new, never a later one, however many flushes and
   compactions run meanwhile (it pins a sequence number, as LevelDB's GetSnapshot does, so
   compaction keeps every version the snapshot can see, and the blob files those versions name).
   It copies nothing and holds no file open, but while it lives the versions it sees stay on
   disk, however often they are overwritten or deleted since: free snapshots promptly. Any number
   may exist; one may be read through by many threads at once. On a read-only handle a snapshot
   works too (nothing changes under it anyway). Free every snapshot, and every iterator made at
   one, before lsm_close: a snapshot is not freed by lsm_close and must not be used or freed
   after it. */

/* Takes a snapshot of db now. On success *out is the snapshot, to free with lsm_snapshot_free;
   LSM_INVALID for a NULL argument. Costs a lock and a small allocation. */
LSM_API int  lsm_snapshot_new(lsm_db *db, lsm_snapshot **out);
/* The sequence number the snapshot sees up to (lsm_stats.last_sequence at the time it was
   taken); 0 for NULL. */
LSM_API uint64_t lsm_snapshot_sequence(const lsm_snapshot *s);
/* Releases the snapshot: compaction may drop what only it kept. Accepts NULL. Iterators made at
   it must be freed first. */
LSM_API void lsm_snapshot_free(lsm_snapshot *s);
/* lsm_get as of snapshot s (NULL: now, as lsm_get). Same ownership and errors; LSM_INVALID when s
   belongs to another handle. */
LSM_API int  lsm_get_at(lsm_db *db, const lsm_snapshot *s, const void *key, size_t klen,
                        void **val, size_t *vlen);
/* lsm_get_range as of snapshot s (NULL: now); lsm_get_size as of s is this with n 0. */
LSM_API int  lsm_get_range_at(lsm_db *db, const lsm_snapshot *s, const void *key, size_t klen,
                              uint64_t off, void *buf, size_t n, size_t *nread, uint64_t *vlen);
/* An iterator that sees the database as of snapshot s (NULL: now, as lsm_iter_new); everything
   said of lsm_iter applies. lsm_iter_refresh on it rebuilds its sources but keeps s's view. Free
   it before s. */
LSM_API int  lsm_iter_new_at(lsm_db *db, const lsm_snapshot *s, lsm_iter **out);

/* Flushes the memtable to a table and waits for it. */
LSM_API int  lsm_flush(lsm_db *db);

/* Merges everything into the fewest tables of the last level, dropping overwritten versions and
   tombstones that no live iterator needs. Waits until done. */
LSM_API int  lsm_compact(lsm_db *db);

/* Flushes the memtable, then merges the tables holding keys in [lo, hi] (lo NULL: from the first
   key; hi NULL: to the last) level by level into the deepest level that holds any of them, as
   LevelDB's CompactRange does: versions overwritten or deleted in that range, and the blob files
   only they referred to, are freed. Background compactions may run between the steps. Waits until
   done. Cost grows with the tables the range touches: a single key touches about one table per
   level and what it overlaps below. */
LSM_API int  lsm_compact_range(lsm_db *db, const void *lo, size_t lon, const void *hi, size_t hin);

/* Makes in dest, a directory that must not exist (LSM_EXISTS), a database holding exactly the
   writes visible at the call: the tables and blob files of the moment are hard-linked (copied where
   linking fails, as across file systems), what the memtables hold is written as one new table, and
   a fresh manifest and CURRENT (written last) name them; every file and directory is synced before
   it returns. Writes, flushes and compactions on db go on meanwhile, and other threads may use db;
   the call writes nothing in db's own directory, so it works on a read-only handle too. The copy
   opens read-only or read-write like any database and shares no state with db (a hard link is a
   second name: deleting either never touches the other). On failure dest may remain, holding some
   files but no CURRENT, so that no open takes it for a database: remove it. */
LSM_API int lsm_checkpoint(lsm_db *db, const char *dest);

/* What lsm_check and lsm_repair say about each damaged file: file is its path; what is the first
   problem found in it ("path: offset N: why"); lo and hi (lon and hin bytes; NULL and 0 when
   unknown, as for a log or the manifest) are the smallest and largest user keys whose values the
   damage puts at stake. Every argument is borrowed for the call only. */
typedef void (*lsm_check_fn)(void *arg, const char *file, const char *what, const void *lo,
                             size_t lon, const void *hi, size_t hin);

/* Verifies the whole database: reads every block of every live table (bypassing the block cache),
   every chunk of every value kept in a blob file, the manifest and the logs a reopen would replay,
   checking every checksum, the order of keys and each table's recorded key range. Calls report
   (may be NULL) once per damaged file, in the calling thread, and goes on to the end. Returns
   LSM_OK when everything verified, LSM_CORRUPT when something did not (lsm_errmsg counts the
   damaged files), LSM_INVALID for a NULL db. Reads only: safe on a read-only handle and while other
   threads write; it costs a full read of the database. */
LSM_API int lsm_check(lsm_db *db, lsm_check_fn report, void *arg);

/* Rebuilds a usable database in dir from whatever of it is readable, as LevelDB's RepairDB does:
   the tables the manifest names (every table in dir when the manifest is unreadable) give every
   entry that verifies — a damaged table every block but the damaged ones — and the logs every
   intact record before their first damage. Everything is merged by sequence number into new tables, so
   the newest readable version of each key wins; a value whose blob file cannot be read becomes a
   deletion (the key is lost rather than an older value coming back). A new manifest and CURRENT
   name the result; the replaced tables, logs and manifests are moved into dir/lost/, never
   deleted. report (may be NULL) is called once for each loss, with what and which keys. opt NULL
   = defaults (table size and compression of the new tables come from it). Takes dir's lock for the
   call: fails with LSM_BUSY while any handle holds it. Returns LSM_OK when the database was
   rebuilt (whatever was lost), else an error with the detail in lsm_errmsg(NULL); until it
   replaces CURRENT, as its last step, the directory is as it was. */
LSM_API int lsm_repair(const char *dir, const lsm_options *opt, lsm_check_fn report, void *arg);

/* Deletes the database in dir: every file the engine names (man/lsm-format.5, FILES: CURRENT,
   CURRENT.tmp, MANIFEST-*, *.log, *.sst, *.blob, RESERVE and, last, LOCK), then dir itself if
   that leaves it empty. Any other name is left alone, and so is lost/ (what lsm_repair set aside;
   remove it by hand) and with them the directory. CURRENT goes first, so a destroy cut short
   leaves no database that opens, only files a second lsm_destroy removes. Takes dir's lock for
   the call: LSM_BUSY (naming the holder in lsm_errmsg(NULL)) while any handle, read-write or
   read-only, holds it, in this process or another; a read-only handle on a directory that had no
   LOCK holds nothing, and is not seen. An lsm_open racing with it fails with LSM_BUSY, or comes
   after it and finds no database. LSM_OK when dir does not exist; on failure the detail is in
   lsm_errmsg(NULL). */
LSM_API int lsm_destroy(const char *dir);

/* Estimates in *bytes the bytes on disk that the keys in [lo, hi) take (lo NULL: from the first
   key; hi NULL: to the last), as LevelDB's GetApproximateSizes: the tables of the current version
   wholly inside the range count whole, and a table the range cuts counts from the data block
   where the range starts in it to the block where it ends (found through the table's index,
   which is in memory once the table is open; opening a table may read its index and filter).
   Counted are table bytes only: writes still in the memtables (lsm_flush first), and values kept
   in blob files (at least blob_threshold long, or written with a value writer), count nothing
   but their references. Overwritten and deleted versions that compaction has not dropped yet
   count, as they take space. Granularity is a data block (block_bytes) per table the range cuts. An
   empty or inverted range gives 0; a bound of 0 or more than LSM_MAX_KEY bytes is LSM_INVALID.
   Reads no data blocks; safe on a read-only handle and while other threads write. */
LSM_API int lsm_approximate_size(lsm_db *db, const void *lo, size_t lon, const void *hi,
                                 size_t hin, uint64_t *bytes);

#define LSM_MAX_LEVELS 7

typedef struct lsm_stats {
    int      tables[LSM_MAX_LEVELS];      /* tables per level */
    uint64_t level_bytes[LSM_MAX_LEVELS]; /* bytes of tables per level */
    uint64_t user_bytes_written;          /* key+value bytes given to put/delete/write */
    uint64_t wal_bytes_written;           /* bytes appended to write-ahead logs */
    uint64_t flush_bytes_written;         /* table bytes written by memtable flushes */
    uint64_t compaction_bytes_written;    /* table bytes written by compactions */
    uint64_t compaction_bytes_read;       /* table bytes read by compactions */
    uint64_t blob_bytes_written;          /* bytes appended to blob files */
    uint64_t blob_bytes_live;             /* bytes of blob files still referenced (estimate) */
    uint64_t cache_hits, cache_misses;    /* block cache */
    uint64_t stall_micros;                /* time writers spent slowed or stopped */
    uint64_t pending_compaction_bytes;    /* estimate of bytes compaction still has to write to
                                             bring every level under its target (0: none due) */
    uint64_t flushes, compactions;        /* counts since open */
    uint64_t compactions_parallel;        /* compactions that started while another ran (on other
                                             levels) */
    uint64_t compactions_split;           /* compactions merged as two key ranges by two threads */
    uint64_t compactions_grouped;         /* compactions that took several adjacent tables of a level
                                             past its target (L1 and deeper) */
    uint64_t last_sequence;               /* sequence number of the newest write */
    uint64_t memtable_bytes;              /* bytes in the live memtable */
    uint64_t disk_bytes;                  /* bytes of every live file of the database */
} lsm_stats;

/* Fills the first size bytes of *st (pass sizeof *st) with a consistent view of the counters.
   Fields are only ever added at the end of lsm_stats, so a program built against an older lsm.h
   gets what it knows of and nothing is written past its struct. */
LSM_API int lsm_stats_get(lsm_db *db, lsm_stats *st, size_t size);

LSM_API const char *lsm_strerror(int rc);

/* Detail of the last failure on this handle (db NULL: of the last lsm_open in this thread). The text
   is copied per thread: valid until this thread's next call to lsm_errmsg. "" if none. */
LSM_API const char *lsm_errmsg(lsm_db *db);

#ifdef __cplusplus
}
#endif
#endif /* LSM_H */
