/*
 * wal.h — append-only record logs, used for the write-ahead log and for the manifest (format and
 * replay rules: man/lsm-format.5, RECORD LOGS).
 *
 * A log is a 16-byte header naming its kind and version, then checksummed records. Replay drops the
 * torn tail a crash can leave and reports damage to data once complete as corruption, with file and
 * offset, never skipping it. What counts as torn depends on the version: in a version-1 log only
 * the last record and any zeros after it (in a manifest, whose every record is synced before
 * anything depends on it, only a truncated last record); in a version-2 log everything from the
 * first record that is not intact, unless a sync mark after it shows that it had been synced.
 */
#ifndef LSM_WAL_H
#define LSM_WAL_H

#include "env.h"
#include "lsm_int.h"

#define WAL_MAGIC      "lsmWAL\0\1"
#define MANIFEST_MAGIC "lsmMAN\0\1"
#define LOG_VERSION    1               /* append-only (the manifest) */
#define LOG_VERSION_MARKED 2           /* preallocated, with sync marks (the write-ahead log) */
#define LOG_HEADER     16

typedef struct logw logw;

/* Creates path (truncating), writes the header of a version-1 log. Not synced. */
int  logw_create(lsm_env *env, const char *path, const char *magic, logw **out, char *err);
/* The same for a version-2 log: preallocated and written over where the env can, so that a synced
   write changes no file metadata, with sync marks that let replay tell the holes a crash may leave
   from damage (wal.c). */
int  logw_create_marked(lsm_env *env, const char *path, const char *magic, logw **out, char *err);
/* Appends one record (no sync). On failure the log is unusable (later appends fail). */
int  logw_append(logw *w, const void *payload, size_t n, char *err);
/* Appends one record gathered from two pieces (header + body), without copying them together. */
int  logw_append2(logw *w, const void *a, size_t an, const void *b, size_t bn, char *err);
/* With bytes > 0, records of up to bytes/2 collect in a user-space buffer that is handed to the OS
   when it reaches bytes, at logw_flush, logw_sync and logw_close: one write(2) for many small
   records. A process crash loses what is still buffered (never a synced record). */
void logw_set_buffer(logw *w, size_t bytes);
int  logw_flush(logw *w, char *err);
/* Hands buffered records to the OS and makes everything appended durable. Thread-safe against
   logw_flush; appends come from one thread at a time. */
int  logw_sync(logw *w, char *err);
/* logw_sync, then (version 2) a sync mark for it and another sync, so that every record of the
   log is vouched for by a mark: for a log about to be closed for good. */
int  logw_seal(logw *w, char *err);
/* Makes sure that a record of n bytes, after whatever is buffered, lands in preallocated space,
   preallocating more if needed: a version-2 log then never meets a full disk in the middle of a
   record. On failure (LSM_NOSPACE on a full disk) nothing was written and the log stays usable.
   A no-op where the log is not preallocated. */
int  logw_reserve(logw *w, size_t n, char *err);
/* Whether a write or sync of the log failed (it is unusable then). */
int  logw_failed(logw *w);
uint64_t logw_size(const logw *w);                  /* bytes of records so far, header included */
int  logw_close(logw *w, char *err);                /* closes without sync; accepts NULL */

/* Replays path: calls fn for every intact record in order (payload borrowed for the call); fn
   returning non-zero stops replay with that code. A torn tail ends replay with LSM_OK and sets
   *tail_dropped (may be NULL) to the bytes dropped; a file shorter than its header, or all zeros,
   is an empty log. Other damage → LSM_CORRUPT "path: offset N: why". */
int  log_replay(lsm_env *env, const char *path, const char *magic,
                int (*fn)(void *arg, const uint8_t *p, size_t n, uint64_t off), void *arg,
                uint64_t *tail_dropped, char *err);

#endif /* LSM_WAL_H */
