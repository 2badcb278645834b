/*
 * compact.h — leveled compaction, split as Pebble splits it: the policy (compact_pick.c: how full
 * each level is, what to merge next, when writers must slow down, which tables reads waste time
 * on) apart from the work (compact.c: the merge, subcompactions, installing the result, the
 * threads). Both take db->mu as db_impl.h says; neither is seen outside the engine.
 */
#ifndef LSM_COMPACT_H
#define LSM_COMPACT_H

#include <stdint.h>
#include "lsm_int.h"
#include "version.h"

/* Level 0 may grow well past the compaction trigger before writes are held back: a merge out of
   L0 takes every L0 table at once, so the more it finds there, the fewer times it rewrites L1 for
   the same data, and the less writers stall (RocksDB's limits, not LevelDB's 8 and 12; figures:
   README.md, Performance). The price: while writes outrun merging, a lookup may test up to
   L0_STOP L0 filters, and one put may wait up to 0.1 s in a pacing pause. */
#define L0_COMPACT_TRIGGER 4      /* L0 tables that start a compaction */
#define L0_SLOWDOWN        20     /* ...that start pacing writes (compact_pace_micros) */
#define L0_STOP            36     /* ...that stop writes until compaction catches up */
#define WRITE_RATE_MAX     (64u << 20) /* bytes/s allowed at L0_SLOWDOWN, falling to 0 at L0_STOP */
#define COMPACT_THREADS    2      /* compactions that may run at once, on disjoint levels */
#define COMPACT_NICE       5      /* how much nicer than the process compaction threads run */
#define COMPACT_SPACE_WAIT 1000000 /* µs without compactions after one found the disk full */

/* One compaction: input tables of one or two levels, and where the output goes. */
typedef struct compaction {
    version *v;                 /* pinned input version */
    file_meta **in;             /* input tables */
    int *in_level;              /* the level of each input */
    int n;                      /* inputs */
    int out_level;
    int trivial_move;           /* one input, nothing overlapping: just relink it */
    int full;                   /* every table is an input: nothing below can hold a key */
    uint64_t smallest_snapshot; /* oldest sequence a live reader may use */
    uint64_t gc_cutoff;         /* blob files numbered below this get their live values moved */
    int may_split;              /* writes are arriving (or lsm_compact waits): two threads may merge */
    int grouped;                /* took several tables of a level past its target */
} compaction;

/* ---- compact_pick.c: the policy ---- */

/* Bytes level `level` (L1+) may hold before it needs a compaction. */
uint64_t compact_level_target(const lsm_db *db, int level);
/* The levels a compaction out of `level` reads and writes, as busy bits. */
unsigned compact_level_bits(int level);
/* Whether level holds a table overlapping the user-key range [lo, hi]. */
int  compact_level_overlaps(const version *v, int level, slice lo, slice hi);
/* Picks the level most in need of compaction among those whose compaction would touch no level of
   `busy` (a bit per level); score >= 1 means it needs one. Caller holds mu. */
double compact_score(const lsm_db *db, const version *v, unsigned busy, int *level);
/* Bytes compaction still has to write to bring every level under its target, estimated as RocksDB
   does: L0 at its trigger merges with all of L1, and each level past its target sends its excess
   (its own and what arrives from above) down, rewriting the next level in proportion. */
uint64_t compact_pending_bytes(const lsm_db *db, const version *v);
/* Whether a seek-triggered compaction can start now (caller holds mu); drops a stale request. */
int  compact_seek_due(lsm_db *db);
/* Picks inputs for a compaction of `level` into c, starting from table `seed` when given (caller
   holds mu). */
void compact_pick(lsm_db *db, int level, file_meta *seed, compaction *c);
/* Adds to c every L0 table of v overlapping [*lo, *hi], widening the range to each table taken
   until it stops growing; with lo->p NULL it starts from the oldest table. */
void compact_take_l0(version *v, compaction *c, slice *lo, slice *hi);
void compaction_add(compaction *c, file_meta *f, int level);
void compaction_free(compaction *c);   /* unpins the version and frees the input arrays */
/* How long a write must pause while level 0 holds l0 tables (L0_SLOWDOWN <= l0 < L0_STOP) and
   `bytes` were written since the last pause: 0 until the pause is worth a millisecond, at most
   0.1 s. */
uint64_t compact_pace_micros(int l0, uint64_t bytes);
/* Charges one wasted probe to table f of `level`; at the last one it allows, asks the compactor
   to compact it. */
void compact_charge_seek(lsm_db *db, file_meta *f, int level);

/* ---- compact.c: the work ---- */

/* A compaction thread (COMPACT_THREADS run); returns at shutdown. */
void *compact_thread_main(void *arg);

#endif /* LSM_COMPACT_H */
