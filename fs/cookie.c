/*
 * cookie.c — the offsets (cookies) of directory listings: what the d_off of an entry is, and
 * how the daemon maps one back to a place in the listing.
 *
 * What: a listing is in the key order of its children's positions (a file's name, a directory's
 * name and '/'; see dir.c), and the place right after a child is the cursor dir.c seeks to.
 * The d_off of a child is a cookie for that cursor: a 63-bit hash of it, kept with the cursor in
 * a daemon-wide table keyed by (directory path, cookie). Any READDIR at that offset, from any
 * open of the directory, with or without the kernel's cached listing, resumes at the cursor. The
 * path and not the inode names the directory because an offset may outlive the inode: a program
 * may keep a telldir(3) value, close the directory, and seek to it in a new open after the kernel
 * forgot the old inode.
 *
 * Why so: a listing returns each entry that exists for its whole duration exactly once only if
 * its offsets name places, not counts. A count (the n-th entry) moves whenever an entry before
 * it comes or goes: after 1000 names read and then removed, "skip 1000" skips 1000 that were
 * never seen. A place does not move: a child that exists throughout keeps its position, and each
 * request resumes strictly after the last position returned, so such a child is returned before
 * or after that point, once, whatever is created, removed or renamed meanwhile (changes may make
 * other names appear or not, as POSIX allows). A place is a name of up to 255 bytes and an offset
 * has 63 bits, so the name cannot be the offset. ext4 hands out a hash of the name because it
 * lists in hash order, where a hash is a place; a listing here streams in key order from the
 * engine, where a hash says nothing about order, so the daemon keeps the map back from cookie to
 * cursor. The cookie is a hash and not a counter so that a lost map entry can still be found:
 * when the cursor's entry still exists, a pass over the directory finds the child whose cookie it
 * is (dir.c). The table is bounded (-o dir_cookies, least recently used out first) and lives as
 * long as the mount.
 *
 * Limits: a cookie whose map entry was pushed out and whose entry was removed since can no longer
 * be placed; dir.c then lists from the first name again (names repeat, none is lost). The same
 * holds for the offsets of a directory renamed since they were given (the table knows them under
 * the old path). Two cursors of one directory with the same 63-bit hash get the next free cookie;
 * only the table knows that one.
 *
 * Never: call the engine or take another lock while holding the table's mutex (it is a leaf);
 * give out 0, 1 or 2 (the start, after "." and after "..").
 */
#include "lsmfs.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define COOKIE_FIRST 3                     /* 0 = start, 1 = after ".", 2 = after ".." */

struct cookie_ent {
    struct cookie_ent *hnext;        /* hash chain; guarded by the table's mu, like all below */
    struct cookie_ent *older, *newer; /* use order */
    uint64_t dir;                    /* hash of the path of the directory listed */
    off_t    cookie;                 /* the d_off given out */
    size_t   len;                    /* bytes at cur */
    char     cur[];                  /* the cursor: where the listing resumes */
};

struct lsmfs_cookies {
    pthread_mutex_t mu;              /* guards all below */
    struct cookie_ent **tab;         /* hash buckets, by (dir, cookie) */
    size_t   nbuckets;               /* a power of 2 */
    size_t   count, bytes;           /* entries, memory they use */
    size_t   limit;                  /* most bytes they may use; constant */
    struct cookie_ent *oldest, *newest; /* use order */
};

int lsmfs_cookies_init(struct lsmfs *fs)
{
    struct lsmfs_cookies *c = calloc(1, sizeof *c);
    if (!c || !(c->tab = calloc(1024, sizeof *c->tab))) {
        free(c);
        return ENOMEM;
    }
    c->nbuckets = 1024;
    c->limit = fs->cookie_bytes;
    pthread_mutex_init(&c->mu, NULL);
    fs->cookies = c;
    return 0;
}

void lsmfs_cookies_free(struct lsmfs *fs)
{
    struct lsmfs_cookies *c = fs->cookies;
    if (!c)
        return;
    for (struct cookie_ent *e = c->oldest, *n; e; e = n) {
        n = e->newer;
        free(e);
    }
    pthread_mutex_destroy(&c->mu);
    free(c->tab);
    free(c);
    fs->cookies = NULL;
}

/* The cookie a cursor gets unless another cursor of its directory holds that one already. */
off_t lsmfs_cookie_hash(const char *cur, size_t len)
{
    return (off_t)(XXH3_64bits(cur, len) % ((uint64_t)INT64_MAX - COOKIE_FIRST + 1)) +
           COOKIE_FIRST;
}

static size_t cookie_bucket(const struct lsmfs_cookies *c, uint64_t dir, off_t cookie)
{
    uint64_t h = ((uint64_t)cookie ^ (dir * 0x9e3779b97f4a7c15ull)) * 0xff51afd7ed558ccdull;
    return (size_t)(h >> 32) & (c->nbuckets - 1);
}

static struct cookie_ent *cookie_find(struct lsmfs_cookies *c, uint64_t dir, off_t cookie)
{
    struct cookie_ent *e = c->tab[cookie_bucket(c, dir, cookie)];
    while (e && (e->dir != dir || e->cookie != cookie))
        e = e->hnext;
    return e;
}

static void cookie_unlink_use(struct lsmfs_cookies *c, struct cookie_ent *e)
{
    *(e->older ? &e->older->newer : &c->oldest) = e->newer;
    *(e->newer ? &e->newer->older : &c->newest) = e->older;
}

/* Marks e the most recently used. */
static void cookie_touch(struct lsmfs_cookies *c, struct cookie_ent *e)
{
    if (c->newest == e)
        return;
    cookie_unlink_use(c, e);
    e->older = c->newest;
    e->newer = NULL;
    *(c->newest ? &c->newest->newer : &c->oldest) = e;
    c->newest = e;
}

/* Drops the least recently used entry. */
static void cookie_evict(struct lsmfs_cookies *c)
{
    struct cookie_ent *e = c->oldest, **pp = &c->tab[cookie_bucket(c, e->dir, e->cookie)];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    cookie_unlink_use(c, e);
    c->count--;
    c->bytes -= sizeof *e + e->len;
    free(e);
}

/* Doubles the buckets when the chains grow long; keeps the old ones when out of memory. */
static void cookie_grow(struct lsmfs_cookies *c)
{
    struct cookie_ent **nt = calloc(c->nbuckets * 2, sizeof *nt);
    if (!nt)
        return;
    struct cookie_ent **old = c->tab;
    size_t on = c->nbuckets;
    c->tab = nt;
    c->nbuckets = on * 2;
    for (size_t i = 0; i < on; i++)
        for (struct cookie_ent *e = old[i], *n; e; e = n) {
            n = e->hnext;
            size_t b = cookie_bucket(c, e->dir, e->cookie);
            e->hnext = nt[b];
            nt[b] = e;
        }
    free(old);
}

off_t lsmfs_cookie_make(struct lsmfs *fs, const char *path, size_t plen, const char *cur,
                        size_t len)
{
    struct lsmfs_cookies *c = fs->cookies;
    uint64_t dir = XXH3_64bits(path, plen);
    off_t cookie = lsmfs_cookie_hash(cur, len);
    pthread_mutex_lock(&c->mu);
    struct cookie_ent *e;
    while ((e = cookie_find(c, dir, cookie)) && (e->len != len || memcmp(e->cur, cur, len)))
        cookie = cookie == INT64_MAX ? COOKIE_FIRST : cookie + 1;   /* a collision */
    /* Left unrecorded (no room, no memory), the cookie still works: a pass finds it while its
       child lasts. */
    if (e) {
        cookie_touch(c, e);
    } else if (sizeof *e + len <= c->limit && (e = malloc(sizeof *e + len))) {
        while (c->count > 0 && c->bytes + sizeof *e + len > c->limit)
            cookie_evict(c);
        if (c->count >= c->nbuckets)
            cookie_grow(c);
        e->dir = dir;
        e->cookie = cookie;
        e->len = len;
        memcpy(e->cur, cur, len);
        size_t b = cookie_bucket(c, dir, cookie);
        e->hnext = c->tab[b];
        c->tab[b] = e;
        e->older = c->newest;
        e->newer = NULL;
        *(c->newest ? &c->newest->newer : &c->oldest) = e;
        c->newest = e;
        c->count++;
        c->bytes += sizeof *e + len;
    }
    pthread_mutex_unlock(&c->mu);
    return cookie;
}

int lsmfs_cookie_find(struct lsmfs *fs, const char *path, size_t plen, off_t cookie, char **cur,
                      size_t *len)
{
    struct lsmfs_cookies *c = fs->cookies;
    uint64_t dir = XXH3_64bits(path, plen);
    int err = ENOENT;
    pthread_mutex_lock(&c->mu);
    struct cookie_ent *e = cookie_find(c, dir, cookie);
    if (e) {
        cookie_touch(c, e);
        err = (*cur = malloc(e->len ? e->len : 1)) ? 0 : ENOMEM;
        if (!err) {
            memcpy(*cur, e->cur, e->len);
            *len = e->len;
        }
    }
    pthread_mutex_unlock(&c->mu);
    return err;
}
