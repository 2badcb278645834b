/*
 * compact_pick.c — the compaction policy: how far each level is past its target, what to merge
 * next, how hard to pace writers while level 0 is crowded, and which tables reads probe in vain.
 *
 * Levels: L0 holds flushed memtables (tables may overlap, newest first); L1..L6 each hold disjoint
 * tables sorted by key, L1 targeting level1_bytes (default 10 MiB) and each deeper level ten times
 * more. A level's score is its size over its target (L0: its table count over
 * L0_COMPACT_TRIGGER); the compactor takes the highest score of the levels no running compaction
 * holds. It merges all of L0 that overlaps (or a run of adjacent tables of Ln, starting
 * round-robin) with the overlapping tables of the next level. The run is one table, or as many as
 * cover the level's excess over its target, up to GROUP_MAX_TABLES tables' worth: fewer, larger
 * merges, each with one set of syncs and one manifest edit, and each large enough to split
 * between two threads. A table that reads keep probing in vain (LevelDB's allowed_seeks) is
 * compacted down even when sizes are fine. Everything here decides; nothing here writes a file.
 */
#include <stdlib.h>
#include <string.h>
#include "db_impl.h"

int compact_level_overlaps(const version *v, int level, slice lo, slice hi)
{
    file_meta **over = NULL;
    int n = version_overlaps(v, level, &lo, &hi, &over);
    free(over);
    return n > 0;
}

/* A compaction out of a level past its target takes up to this many tables' worth of it at once:
   fewer, larger merges (split between two threads) with fewer syncs and manifest edits, so less
   stall time and write amplification (figures: README.md, Performance). */
#define GROUP_MAX_TABLES 4

uint64_t compact_level_target(const lsm_db *db, int level)
{
    uint64_t t = db->opt.level1_bytes;
    for (int l = 1; l < level; l++)
        t *= 10;
    return t;
}

unsigned compact_level_bits(int level)
{
    return 3u << level;
}

double compact_score(const lsm_db *db, const version *v, unsigned busy, int *level)
{
    double best = 0;
    *level = 0;
    if (!(busy & compact_level_bits(0)))
        best = (double)v->nfiles[0] / L0_COMPACT_TRIGGER;
    for (int l = 1; l < LSM_MAX_LEVELS - 1; l++) {
        if (busy & compact_level_bits(l))
            continue;
        double s = (double)version_level_bytes(v, l) / (double)compact_level_target(db, l);
        if (s > best) {
            best = s;
            *level = l;
        }
    }
    return best;
}

uint64_t compact_pending_bytes(const lsm_db *db, const version *v)
{
    uint64_t bytes[LSM_MAX_LEVELS], pending = 0, carry = 0;
    for (int l = 0; l < LSM_MAX_LEVELS; l++)
        bytes[l] = version_level_bytes(v, l);
    if (v->nfiles[0] >= L0_COMPACT_TRIGGER) {
        pending += bytes[0] + bytes[1];
        carry = bytes[0];
    }
    for (int l = 1; l < LSM_MAX_LEVELS - 1; l++) {
        uint64_t size = bytes[l] + carry, target = compact_level_target(db, l);
        carry = 0;
        if (size <= target)
            continue;
        carry = size - target;
        /* The excess goes down and rewrites the next level in proportion to it. */
        pending += carry + (uint64_t)((double)carry * (double)bytes[l + 1] / (double)size);
    }
    return pending;
}

void compaction_add(compaction *c, file_meta *f, int level)
{
    c->in = xrealloc(c->in, (size_t)(c->n + 1) * sizeof *c->in);
    c->in_level = xrealloc(c->in_level, (size_t)(c->n + 1) * sizeof *c->in_level);
    c->in[c->n] = f;
    c->in_level[c->n] = level;
    c->n++;
}

void compaction_free(compaction *c)
{
    version_unref(c->v);
    free(c->in);
    free(c->in_level);
}

int compact_seek_due(lsm_db *db)
{
    file_meta *f = db->seek_file;
    if (!f)
        return 0;
    const version *v = db->vs.current;
    int l = db->seek_level;
    for (int i = 0; i < v->nfiles[l]; i++)
        if (v->files[l][i] == f)
            return l < LSM_MAX_LEVELS - 1 && !(db->level_busy & compact_level_bits(l));
    db->seek_file = NULL;
    file_meta_unref(f);
    return 0;
}

/* Adds to c, which holds table `pick` of `level`, the tables after it in key order while the
   level's bytes above its target are not yet covered, up to GROUP_MAX_TABLES tables' worth; *hi
   follows the last one. A table that overlaps nothing below is left to move down alone. Returns
   the last table taken. */
static file_meta *compact_group(lsm_db *db, compaction *c, int level, int pick, slice *hi)
{
    version *v = c->v;
    file_meta *f = v->files[level][pick];
    uint64_t have = version_level_bytes(v, level), target = compact_level_target(db, level);
    uint64_t want = have > target ? have - target : 0;
    if (want > GROUP_MAX_TABLES * (uint64_t)db->opt.table_bytes)
        want = GROUP_MAX_TABLES * (uint64_t)db->opt.table_bytes;
    uint64_t got = f->size;
    if (got >= want || !compact_level_overlaps(v, c->out_level, file_meta_lo(f), *hi))
        return f;
    for (int i = pick + 1; i < v->nfiles[level] && got < want; i++) {
        f = v->files[level][i];
        compaction_add(c, f, level);
        got += f->size;
        *hi = file_meta_hi(f);
        c->grouped = 1;
    }
    return f;
}

/* The tables left behind overlap none of the range taken, so L0 stays newest-first for every key.
   Tables from a sequential load overlap nothing and move down without being rewritten. */
void compact_take_l0(version *v, compaction *c, slice *lo, slice *hi)
{
    int n0 = v->nfiles[0];
    char *taken = xcalloc((size_t)n0 + 1, 1);
    int grew = 1;
    while (grew) {
        grew = 0;
        for (int i = n0 - 1; i >= 0; i--) {
            file_meta *f = v->files[0][i];
            slice s = file_meta_lo(f), l = file_meta_hi(f);
            if (taken[i])
                continue;
            if (lo->p && (ukey_cmp(l.p, l.n, lo->p, lo->n) < 0 || ukey_cmp(s.p, s.n, hi->p, hi->n) > 0))
                continue;
            if (!lo->p || ukey_cmp(s.p, s.n, lo->p, lo->n) < 0)
                *lo = s;
            if (!hi->p || ukey_cmp(l.p, l.n, hi->p, hi->n) > 0)
                *hi = l;
            taken[i] = 1;
            grew = 1;
        }
    }
    for (int i = n0 - 1; i >= 0; i--)
        if (taken[i])
            compaction_add(c, v->files[0][i], 0);
    free(taken);
}

void compact_pick(lsm_db *db, int level, file_meta *seed, compaction *c)
{
    memset(c, 0, sizeof *c);
    version *v = db->vs.current;
    version_ref(v);
    c->v = v;
    c->out_level = level + 1;
    c->smallest_snapshot = db_oldest_snapshot(db);
    slice lo = { NULL, 0 }, hi = { NULL, 0 };
    if (level == 0) {
        compact_take_l0(v, c, &lo, &hi);
    } else {
        /* Round-robin through the level so every key range gets its turn. */
        buf *ptr = &db->compact_pointer[level];
        int pick = 0;
        if (ptr->len) {
            slice p = { ptr->p, ptr->len };
            pick = files_find(v->files[level], v->nfiles[level], p);
            while (pick < v->nfiles[level] &&
                   ikey_cmp((slice){ v->files[level][pick]->largest.p, v->files[level][pick]->largest.len }, p) <= 0)
                pick++;
            if (pick >= v->nfiles[level])
                pick = 0;
        }
        file_meta *f = v->files[level][pick];
        for (int i = 0; seed && i < v->nfiles[level]; i++)
            if (v->files[level][i] == seed)
                f = seed;
        lo = file_meta_lo(f);
        hi = file_meta_hi(f);
        compaction_add(c, f, level);
        if (f != seed)
            f = compact_group(db, c, level, pick, &hi);
        ptr->len = 0;
        buf_append(ptr, f->largest.p, f->largest.len);
    }
    file_meta **over = NULL;
    int n = version_overlaps(v, c->out_level, &lo, &hi, &over);
    for (int i = 0; i < n; i++)
        compaction_add(c, over[i], c->out_level);
    free(over);
    c->trivial_move = c->n == 1;
}

uint64_t compact_pace_micros(int l0, uint64_t bytes)
{
    /* The rate allowed falls linearly from WRITE_RATE_MAX at L0_SLOWDOWN tables to nothing at
       L0_STOP; the bytes written since the last pause are paid for in one sleep once they are
       worth a millisecond. */
    if (l0 < L0_SLOWDOWN || l0 >= L0_STOP)
        return 0;
    double rate = (double)WRITE_RATE_MAX * (L0_STOP - l0) / (L0_STOP - L0_SLOWDOWN);
    uint64_t us = (uint64_t)((double)bytes * 1e6 / rate);
    if (us < 1000)
        return 0;
    return us > 100000 ? 100000 : us;
}

void compact_charge_seek(lsm_db *db, file_meta *f, int level)
{
    if (atomic_fetch_sub(&f->allowed_seeks, 1) != 1)
        return;
    pthread_mutex_lock(&db->mu);
    if (!db->seek_file) {
        atomic_fetch_add(&f->refs, 1);
        db->seek_file = f;
        db->seek_level = level;
        pthread_cond_broadcast(&db->compact_cv);
    }
    pthread_mutex_unlock(&db->mu);
}

