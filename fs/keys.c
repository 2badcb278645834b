/*
 * keys.c — how lsmfs keeps files in the engine: the key layout, names, the attribute record
 * codec, and what a path is when only the engine is asked.
 *
 * What: building keys (data key = the path, "\0a" PATH = attribute record, "\0d" PATH "/" =
 * explicit directory, "\0x" PATH for xattr.c; see lsmfs.h), checking names made through the mount, encoding and decoding
 * the attribute record, inode numbers (the "\0i" high-water mark they are given from, and the
 * number a file without one in its record has), and resolving a path from the engine alone: a
 * file, an explicit or implicit directory, or nothing. A small pool of iterators serves the prefix
 * probes that resolution needs.
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
#include <xxhash.h>

/* Builds a key for path: tag 0 = the data key, 'a' = attribute record, 'd' = directory record,
   'x' = the start of an extended attribute's (xattr.c) (with the trailing '/' when slash is set). Caller frees with free(). */
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
 * Attribute record, version 1, 40 bytes (48 for a device node), little-endian (documented in lsmfs(1), FILES):
 *   off 0  u8   version (1)         off 8  u32 uid
 *   off 1  u8   type 1=reg 2=dir 3=symlink
 *   off 2  u16  special file        off 12 u32 gid
 *   off 4  u32  permission bits     off 16 i64 mtime, ns since the epoch
 *                                   off 24 i64 ctime, ns since the epoch
 *                                   off 32 u64 inode number (st_ino); 0 = none
 * The inode number was added without a new version, as the first field past the 32 bytes that
 * lsmfs wrote before, which it reads without one (lsmfs_ino_derived gives it one) and which older
 * daemons read in a 40-byte record by ignoring the bytes past 32. A longer record is accepted
 * (bytes past 40 are ignored) so later versions can add fields.
 *
 * Special files (FIFOs, sockets, device nodes) are type 1 with their S_IFMT bits, shifted right
 * by 12, in the u16 at offset 2 (0 for every other object), and, for a device node, a 48-byte
 * record whose u64 at offset 40 is st_rdev. A daemon older than this shows them as empty regular
 * files. Their value key holds nothing: the kernel, not lsmfs, carries their I/O.
 */
#define LSMFS_REC_LEN 40
#define LSMFS_REC_MIN 32                /* a record written before inode numbers were kept */
#define LSMFS_REC_MAX 48                /* a device node's, with st_rdev */

static void keys_put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}
static void keys_put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t keys_get32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}
static uint64_t keys_get64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

size_t lsmfs_meta_encode(const struct lsmfs_meta *m, unsigned char *buf)
{
    memset(buf, 0, LSMFS_REC_MAX);
    buf[0] = 1;
    buf[1] = (unsigned char)m->type;
    uint32_t fmt = m->mode & S_IFMT;
    if (m->type == LSMFS_REG && fmt != S_IFREG && fmt != 0) {
        buf[2] = (unsigned char)(fmt >> 12);
        buf[3] = (unsigned char)(fmt >> 20);
    }
    keys_put32(buf + 4, m->mode & 07777);
    keys_put32(buf + 8, m->uid);
    keys_put32(buf + 12, m->gid);
    keys_put64(buf + 16, (uint64_t)m->mtime_ns);
    keys_put64(buf + 24, (uint64_t)m->ctime_ns);
    keys_put64(buf + 32, m->ino);
    if (!m->rdev)
        return LSMFS_REC_LEN;
    keys_put64(buf + 40, m->rdev);
    return LSMFS_REC_MAX;
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
    unsigned char rec[LSMFS_REC_MAX];
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
    if (len < LSMFS_REC_MIN || p[0] != 1 || p[1] < LSMFS_REG || p[1] > LSMFS_LNK)
        return EINVAL;
    uint32_t fmt = p[1] == LSMFS_DIR ? S_IFDIR : p[1] == LSMFS_LNK ? S_IFLNK : S_IFREG;
    uint32_t special = ((uint32_t)p[2] | (uint32_t)p[3] << 8) << 12;
    if (special) {
        if (p[1] != LSMFS_REG || !(S_ISFIFO(special) || S_ISSOCK(special) || S_ISCHR(special) ||
                                   S_ISBLK(special)))
            return EINVAL;
        fmt = special;
    }
    m->type = p[1];
    m->mode = fmt | (keys_get32(p + 4) & 07777);
    m->uid = keys_get32(p + 8);
    m->gid = keys_get32(p + 12);
    m->mtime_ns = (int64_t)keys_get64(p + 16);
    m->ctime_ns = (int64_t)keys_get64(p + 24);
    m->ino = len >= LSMFS_REC_LEN ? keys_get64(p + 32) : 0;
    m->rdev = len >= LSMFS_REC_MAX ? keys_get64(p + 40) : 0;
    return 0;
}

/* Puts at key the record rec that moves from the object at path: as it is when it holds an inode
   number (or cannot be read), else with the number derived from path, which the object showed
   until now and keeps. */
void lsmfs_put_moved_record(lsm_batch *b, const char *key, size_t klen, const void *rec,
                            size_t rlen, const char *path, size_t plen)
{
    struct lsmfs_meta m;
    unsigned char buf[LSMFS_REC_MAX];
    if (lsmfs_meta_decode(rec, rlen, &m) != 0 || m.ino != 0) {
        lsm_batch_put(b, key, klen, rec, rlen);
        return;
    }
    m.ino = lsmfs_ino_derived(path, plen);
    lsm_batch_put(b, key, klen, buf, lsmfs_meta_encode(&m, buf));
}

/* ---- inode numbers ----
 *
 * A file made through the mount gets a number from a counter and keeps it in its record: rename
 * copies the record, so the number follows the file, and a number is never given twice. The
 * counter's high-water mark is the key "\0i" (u64, little-endian): every number given is below
 * it. It is raised LSMFS_INO_STEP at a time, synced before any number below the new mark is given,
 * so a crash can waste numbers but never hand one out again, and a create costs no extra write.
 *
 * An object without a number in a record (a key written through the library, an implicit
 * directory, a record written by an older lsmfs) has one derived from its path: a 64-bit hash with
 * the top bit set, which counted numbers never reach. It is stable while the path is, and is
 * written into a record whenever lsmfs writes one for the object (a write, chmod, rename).
 */

#define LSMFS_INO_ROOT  1               /* the root's, always */
#define LSMFS_INO_FIRST 2               /* the first counted one */
#define LSMFS_INO_STEP  4096            /* numbers reserved by one write of "\0i" */
#define LSMFS_INO_DERIVED (1ull << 63)  /* set in every derived number, in no counted one */

static const char keys_ino_key[2] = { '\0', 'i' };

uint64_t lsmfs_ino_derived(const char *path, size_t plen)
{
    return plen == 0 ? LSMFS_INO_ROOT : XXH3_64bits(path, plen) | LSMFS_INO_DERIVED;
}

/* Reads the high-water mark at mount (before the session starts). Absent: a database that lsmfs
   never made a file in (or an older lsmfs did, without numbers). */
int lsmfs_ino_load(struct lsmfs *fs)
{
    void *v = NULL;
    size_t vl = 0;
    int rc = lsm_get(fs->db, keys_ino_key, sizeof keys_ino_key, &v, &vl);
    fs->ino_next = fs->ino_limit = LSMFS_INO_FIRST;
    if (rc == LSM_NOTFOUND)
        return 0;
    if (rc != LSM_OK)
        return lsmfs_errno(fs, rc, "read", "the inode number counter");
    uint64_t mark = vl == 8 ? keys_get64(v) : 0;
    free(v);
    if (vl != 8 || mark >= LSMFS_INO_DERIVED) {
        lsmfs_log(LOG_ERR, "the inode number counter (key \\0i) is damaged: %zu bytes", vl);
        return EIO;
    }
    if (mark > LSMFS_INO_FIRST)
        fs->ino_next = fs->ino_limit = mark;
    return 0;
}

/* A number no file was ever given, for a file being made. fs->ns held for writing. Returns 0, or
   the errno of the synced write that raises the mark (nothing is given then). */
int lsmfs_ino_alloc(struct lsmfs *fs, uint64_t *ino)
{
    if (fs->ino_next >= fs->ino_limit) {
        unsigned char v[8];
        uint64_t mark = fs->ino_limit + LSMFS_INO_STEP;
        if (mark >= LSMFS_INO_DERIVED)
            return ENOSPC;
        keys_put64(v, mark);
        lsm_batch *b = lsm_batch_new();
        lsm_batch_put(b, keys_ino_key, sizeof keys_ino_key, v, sizeof v);
        int rc = lsm_write(fs->db, b, 1);
        lsm_batch_free(b);
        if (rc != LSM_OK)
            return lsmfs_errno(fs, rc, "write", "the inode number counter");
        fs->ino_limit = mark;
    }
    *ino = fs->ino_next++;
    return 0;
}

/* Reads the record at key into m (keeping m's defaults when absent or unreadable). */
static int keys_read_record(struct lsmfs *fs, const char *key, size_t klen, struct lsmfs_meta *m,
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

/* The record of the object of type at path alone (a directory's "\0d" record, a file's "\0a"):
   m holds it, or the defaults when there is none (*found 0); m->ino is set either way. */
int lsmfs_read_record(struct lsmfs *fs, const char *path, size_t plen, int type,
                      struct lsmfs_meta *m, int *found)
{
    size_t kl;
    int dir = type == LSMFS_DIR;
    char *k = lsmfs_key(dir ? 'd' : 'a', path, plen, dir, &kl);
    lsmfs_meta_default(fs, m, type);
    if (!k)
        return ENOMEM;
    int rc = keys_read_record(fs, k, kl, m, found);
    free(k);
    if (!m->ino || plen == 0)
        m->ino = lsmfs_ino_derived(path, plen);
    return rc;
}

/* Idle iterators kept for prefix probes: refreshing one costs a mutex and a pointer check when no
   flush or compaction happened since, where a new one allocates and opens an iterator per table.
   An idle iterator pins one past view of the database (memtables, tables, snapshot) until it is
   reused or the pool is freed at unmount; the pool is small so that view is bounded. */

static int keys_iter_get(struct lsmfs *fs, lsm_iter **out, const char *path)
{
    lsm_iter *it = NULL;
    int rc;
    pthread_mutex_lock(&fs->pool_mu);
    if (fs->pool_n > 0)
        it = fs->pool[--fs->pool_n];
    pthread_mutex_unlock(&fs->pool_mu);
    if (it) {
        lsm_iter_set_upper_bound(it, NULL, 0);
        rc = lsm_iter_refresh(it);
    } else {
        rc = lsm_iter_new(fs->db, &it);
    }
    if (rc != LSM_OK) {
        lsm_iter_free(it);
        return lsmfs_errno(fs, rc, "iterate", path);
    }
    *out = it;
    return 0;
}

static void keys_iter_put(struct lsmfs *fs, lsm_iter *it)
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

int lsmfs_iter_get(struct lsmfs *fs, lsm_iter **out, const char *path)
{
    return keys_iter_get(fs, out, path);
}

void lsmfs_iter_put(struct lsmfs *fs, lsm_iter *it)
{
    keys_iter_put(fs, it);
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

/* Whether some key starts with the kl bytes at pre (and is longer than them when longer is set:
   a directory's own record is a prefix of its children's). The iterator is bounded to the prefix,
   so keys deleted just after it (a renamed sibling) are not walked. */
static int keys_probe(lsm_iter *it, char *pre, size_t kl, int longer)
{
    pre[kl - 1]++;
    lsm_iter_set_upper_bound(it, pre, kl);
    pre[kl - 1]--;
    lsm_iter_seek(it, pre, kl);
    for (int i = 0; i < 2 && lsm_iter_valid(it); i++, lsm_iter_next(it)) {
        size_t n;
        const char *k = lsm_iter_key(it, &n);
        if (n < kl || memcmp(k, pre, kl) != 0)
            return 0;
        if (!longer || n > kl)
            return 1;
    }
    return 0;
}

/* Is there any key below directory path (data keys or directory records)? */
int lsmfs_dir_has_children(struct lsmfs *fs, const char *path, size_t plen, int *has)
{
    lsm_iter *it = NULL;
    size_t kl, dl;
    int rc, err;
    *has = plen == 0;   /* the root always is a directory */
    if (plen == 0)
        return 0;
    char *pre = lsmfs_key(0, path, plen, 1, &kl), *dk = lsmfs_key('d', path, plen, 1, &dl);
    if (!pre || !dk)
        err = ENOMEM;
    else if (!(err = keys_iter_get(fs, &it, path))) {
        *has = keys_probe(it, pre, kl, 0) || keys_probe(it, dk, dl, 1);
        rc = lsm_iter_status(it);
        keys_iter_put(fs, it);
        if (rc != LSM_OK)
            err = lsmfs_errno(fs, rc, "iterate", path);
    }
    free(pre);
    free(dk);
    return err;
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
            rc = keys_read_record(fs, k, kl, m, &found);
            free(k);
            m->size = vl;
            if (!m->ino)
                m->ino = lsmfs_ino_derived(path, plen);
            return rc;
        }
        if (rc != LSM_NOTFOUND)
            return lsmfs_errno(fs, rc, "stat", path);
    }
    lsmfs_meta_default(fs, m, LSMFS_DIR);
    if (!(k = lsmfs_key('d', path, plen, 1, &kl)))
        return ENOMEM;
    rc = keys_read_record(fs, k, kl, m, &found);
    free(k);
    if (rc)
        return rc;
    if (!m->ino || plen == 0)
        m->ino = lsmfs_ino_derived(path, plen);
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
