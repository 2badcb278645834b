/*
 * keys.c — how lsmfs keeps files in the engine: the key layout, names, the attribute record
 * codec, and what a path is when only the engine is asked.
 *
 * What: building keys (data key = the path, "\0a" PATH = attribute record, "\0d" PATH "/" =
 * explicit directory; see lsmfs.h), checking names made through the mount, encoding and decoding
 * the 32-byte attribute record, and resolving a path from the engine alone: a file, an explicit or
 * implicit directory, or nothing. A small pool of iterators serves the prefix probes that
 * resolution needs.
 *
 * Why so: a file's bytes must be exactly the value, so attributes cannot share the key; a key
 * starting with NUL can never be a name, so the reserved namespace is free. Everything that knows
 * those two facts is in this file, so the record length and the tags are private to it.
 *
 * Never: copy a file's content to answer a stat (lsm_get_size only); look at the inode table (that
 * is inode.c, which asks here when a path has no live inode).
 */
#include "lsmfs.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>

/* Builds a key for path: tag 0 = the data key, 'a' = attribute record, 'd' = directory record
   (with the trailing '/' when slash is set). Caller frees with free(). */
char *lsmfs_key(char tag, const char *path, size_t plen, int slash, size_t *klen)
{
    size_t pre = tag ? 2 : 0, n = pre + plen + (slash ? 1 : 0);
    char *k = malloc(n + 1);
    if (!k)
        return NULL;
    if (tag) {
        k[0] = '\0';
        k[1] = tag;
    }
    memcpy(k + pre, path, plen);
    if (slash)
        k[pre + plen] = '/';
    k[n] = '\0';
    *klen = n;
    return k;
}

/* 0 if the n bytes at name can be a path component, else EINVAL (empty, ".", "..", a NUL byte)
   or ENAMETOOLONG. */
int lsmfs_name_check(const char *name, size_t n)
{
    if (n == 0 || (name[0] == '.' && (n == 1 || (n == 2 && name[1] == '.'))) ||
        memchr(name, '\0', n))
        return EINVAL;
    if (n > LSMFS_NAME_MAX)
        return ENAMETOOLONG;
    return 0;
}

/* *path = parent's path + "/" + name (caller frees), *plen its length. Returns 0, ENAMETOOLONG or
   ENOMEM. */
int lsmfs_child_path(const struct lsmfs_inode *parent, const char *name, char **path, size_t *plen)
{
    size_t nl = strlen(name), n = parent->plen ? parent->plen + 1 + nl : nl;
    if (n > LSMFS_PATH_MAX)
        return ENAMETOOLONG;
    char *p = malloc(n + 1);
    if (!p)
        return ENOMEM;
    if (parent->plen) {
        memcpy(p, parent->path, parent->plen);
        p[parent->plen] = '/';
        memcpy(p + parent->plen + 1, name, nl + 1);
    } else {
        memcpy(p, name, nl + 1);
    }
    *path = p;
    *plen = n;
    return 0;
}

void lsmfs_meta_default(struct lsmfs *fs, struct lsmfs_meta *m, int type)
{
    memset(m, 0, sizeof *m);
    m->type = type;
    m->mode = type == LSMFS_DIR ? (S_IFDIR | 0755) : type == LSMFS_LNK ? (S_IFLNK | 0777)
                                                                       : (S_IFREG | 0644);
    m->uid = fs->uid;
    m->gid = fs->gid;
    m->mtime_ns = m->ctime_ns = fs->mount_ns;
}

/*
 * Attribute record, version 1, 32 bytes, little-endian (documented in lsmfs(1), FILES):
 *   off 0  u8   version (1)         off 8  u32 uid
 *   off 1  u8   type 1=reg 2=dir 3=symlink
 *   off 2  u16  zero                off 12 u32 gid
 *   off 4  u32  permission bits     off 16 i64 mtime, ns since the epoch
 *                                   off 24 i64 ctime, ns since the epoch
 * A longer record is accepted (bytes past 32 are ignored) so later versions can add fields.
 */
#define LSMFS_REC_LEN 32

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}
static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}
static uint64_t get64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

size_t lsmfs_meta_encode(const struct lsmfs_meta *m, unsigned char *buf)
{
    memset(buf, 0, LSMFS_REC_LEN);
    buf[0] = 1;
    buf[1] = (unsigned char)m->type;
    put32(buf + 4, m->mode & 07777);
    put32(buf + 8, m->uid);
    put32(buf + 12, m->gid);
    put64(buf + 16, (uint64_t)m->mtime_ns);
    put64(buf + 24, (uint64_t)m->ctime_ns);
    return LSMFS_REC_LEN;
}

/* Key order, as the engine's: bytewise over the common prefix, then the shorter first. */
int lsmfs_key_cmp(const char *a, size_t an, const char *b, size_t bn)
{
    int c = memcmp(a, b, an < bn ? an : bn);
    return c ? c : (an > bn) - (an < bn);
}

/* Adds to b the record of what m describes at path: a directory record for a directory, else an
   attribute record. Returns 0, or ENOMEM (b unchanged). */
int lsmfs_put_record(lsm_batch *b, const char *path, size_t plen, const struct lsmfs_meta *m)
{
    unsigned char rec[LSMFS_REC_LEN];
    size_t kl, rl = lsmfs_meta_encode(m, rec);
    int dir = m->type == LSMFS_DIR;
    char *k = lsmfs_key(dir ? 'd' : 'a', path, plen, dir, &kl);
    if (!k)
        return ENOMEM;
    lsm_batch_put(b, k, kl, rec, rl);
    free(k);
    return 0;
}

/* Fills the attribute fields of m from a record; EINVAL (m untouched) if it is not one we read. */
int lsmfs_meta_decode(const void *buf, size_t len, struct lsmfs_meta *m)
{
    const unsigned char *p = buf;
    if (len < LSMFS_REC_LEN || p[0] != 1 || p[1] < LSMFS_REG || p[1] > LSMFS_LNK)
        return EINVAL;
    uint32_t fmt = p[1] == LSMFS_DIR ? S_IFDIR : p[1] == LSMFS_LNK ? S_IFLNK : S_IFREG;
    m->type = p[1];
    m->mode = fmt | (get32(p + 4) & 07777);
    m->uid = get32(p + 8);
    m->gid = get32(p + 12);
    m->mtime_ns = (int64_t)get64(p + 16);
    m->ctime_ns = (int64_t)get64(p + 24);
    return 0;
}

/* Reads the record at key into m (keeping m's defaults when absent or unreadable). */
static int read_record(struct lsmfs *fs, const char *key, size_t klen, struct lsmfs_meta *m,
                       int *found)
{
    void *v = NULL;
    size_t vl = 0;
    int rc = lsm_get(fs->db, key, klen, &v, &vl);
    *found = 0;
    if (rc == LSM_NOTFOUND)
        return 0;
    if (rc != LSM_OK)
        return lsmfs_errno(fs, rc, "read attributes of", key + 2);
    *found = 1;
    int type = m->type;
    if (lsmfs_meta_decode(v, vl, m) != 0)
        lsmfs_log(LOG_WARNING, "unreadable attribute record for %s: using defaults", key + 2);
    else if (type == LSMFS_DIR && m->type != LSMFS_DIR)
        lsmfs_meta_default(fs, m, LSMFS_DIR);
    free(v);
    return 0;
}

/* Idle iterators kept for prefix probes: refreshing one costs a mutex and a pointer check when no
   flush or compaction happened since, where a new one allocates and opens an iterator per table.
   An idle iterator pins one past view of the database (memtables, tables, snapshot) until it is
   reused or the pool is freed at unmount; the pool is small so that view is bounded. */

int lsmfs_iter_get(struct lsmfs *fs, lsm_iter **out)
{
    lsm_iter *it = NULL;
    pthread_mutex_lock(&fs->pool_mu);
    if (fs->pool_n > 0)
        it = fs->pool[--fs->pool_n];
    pthread_mutex_unlock(&fs->pool_mu);
    if (it) {
        *out = it;
        lsm_iter_set_upper_bound(it, NULL, 0);
        return lsm_iter_refresh(it);
    }
    return lsm_iter_new(fs->db, out);
}

void lsmfs_iter_put(struct lsmfs *fs, lsm_iter *it)
{
    if (!it)
        return;
    pthread_mutex_lock(&fs->pool_mu);
    if (fs->pool_n < LSMFS_ITER_POOL && lsm_iter_status(it) == LSM_OK) {
        fs->pool[fs->pool_n++] = it;
        fs->pool_last = lsmfs_mono_ns();
        it = NULL;
    }
    pthread_mutex_unlock(&fs->pool_mu);
    lsm_iter_free(it);
}

/* A pooled iterator holds the snapshot and version of its last use, and with them tables (and
   blob files) that merges have since replaced: when none was put back for idle_ns, let them go. */
void lsmfs_iter_pool_trim(struct lsmfs *fs, int64_t idle_ns)
{
    pthread_mutex_lock(&fs->pool_mu);
    if (fs->pool_n > 0 && lsmfs_mono_ns() - fs->pool_last >= idle_ns)
        while (fs->pool_n > 0)
            lsm_iter_free(fs->pool[--fs->pool_n]);
    pthread_mutex_unlock(&fs->pool_mu);
}

void lsmfs_iter_pool_free(struct lsmfs *fs)
{
    pthread_mutex_lock(&fs->pool_mu);
    while (fs->pool_n > 0)
        lsm_iter_free(fs->pool[--fs->pool_n]);
    pthread_mutex_unlock(&fs->pool_mu);
}

/* Is there any key below directory path (data keys or directory records)? */
int lsmfs_dir_has_children(struct lsmfs *fs, const char *path, size_t plen, int *has)
{
    lsm_iter *it;
    size_t kl;
    int rc;
    *has = 0;
    if (plen == 0) {
        *has = 1;
        return 0;
    }
    char *pre = lsmfs_key(0, path, plen, 1, &kl);
    if (!pre)
        return ENOMEM;
    rc = lsmfs_iter_get(fs, &it);
    if (rc != LSM_OK) {
        lsm_iter_free(it);
        free(pre);
        return lsmfs_errno(fs, rc, "iterate", path);
    }
    /* Bounded to the prefix: keys deleted just after it (a renamed sibling) are not walked. */
    pre[kl - 1]++;
    lsm_iter_set_upper_bound(it, pre, kl);
    pre[kl - 1]--;
    lsm_iter_seek(it, pre, kl);
    if (lsm_iter_valid(it)) {
        size_t n;
        const char *k = lsm_iter_key(it, &n);
        if (n >= kl && memcmp(k, pre, kl) == 0)
            *has = 1;
    }
    free(pre);
    if (!*has) {
        char *dk = lsmfs_key('d', path, plen, 1, &kl);
        if (!dk) {
            lsmfs_iter_put(fs, it);
            return ENOMEM;
        }
        dk[kl - 1]++;
        lsm_iter_set_upper_bound(it, dk, kl);
        dk[kl - 1]--;
        lsm_iter_seek(it, dk, kl);
        for (int i = 0; i < 2 && lsm_iter_valid(it); i++, lsm_iter_next(it)) {
            size_t n;
            const char *k = lsm_iter_key(it, &n);
            if (n < kl || memcmp(k, dk, kl) != 0)
                break;
            if (n > kl) {
                *has = 1;
                break;
            }
        }
        free(dk);
    }
    rc = lsm_iter_status(it);
    lsmfs_iter_put(fs, it);
    if (rc != LSM_OK)
        return lsmfs_errno(fs, rc, "iterate", path);
    return 0;
}

/* What is at path in the engine: a file (its data key exists; a file hides any keys below it), an
   explicit directory, an implicit one (keys below it), or nothing (m->type == LSMFS_NONE). */
int lsmfs_stat_path(struct lsmfs *fs, const char *path, size_t plen, struct lsmfs_meta *m)
{
    size_t kl;
    int rc, found;
    char *k;

    if (plen > 0) {
        uint64_t vl;
        rc = lsm_get_size(fs->db, path, plen, &vl);
        if (rc == LSM_OK) {
            lsmfs_meta_default(fs, m, LSMFS_REG);
            m->size = vl;
            if (!(k = lsmfs_key('a', path, plen, 0, &kl)))
                return ENOMEM;
            rc = read_record(fs, k, kl, m, &found);
            free(k);
            m->size = vl;
            return rc;
        }
        if (rc != LSM_NOTFOUND)
            return lsmfs_errno(fs, rc, "stat", path);
    }
    lsmfs_meta_default(fs, m, LSMFS_DIR);
    if (!(k = lsmfs_key('d', path, plen, 1, &kl)))
        return ENOMEM;
    rc = read_record(fs, k, kl, m, &found);
    free(k);
    if (rc)
        return rc;
    if (found) {
        m->explicit_dir = 1;
        return 0;
    }
    if (plen == 0)
        return 0;
    int has;
    if ((rc = lsmfs_dir_has_children(fs, path, plen, &has)))
        return rc;
    if (!has)
        m->type = LSMFS_NONE;
    return 0;
}

/* Sets the modification and change times to now (a write, a new node). */
void lsmfs_meta_touch(struct lsmfs_meta *m)
{
    m->mtime_ns = m->ctime_ns = lsmfs_now();
}
