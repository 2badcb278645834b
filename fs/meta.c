/*
 * meta.c — how lsmfs keeps files in the engine, and the in-memory inodes that stand for them.
 *
 * What: the key layout (data key = the path, "\0a" PATH = attribute record, "\0d" PATH "/" =
 * explicit directory; see lsmfs.h), the 32-byte attribute record codec, path resolution
 * (file, explicit or implicit directory, or nothing), the inode table (path -> inode, with the
 * kernel's lookup count and the open count), and the content buffers of files being written with
 * their global memory budget.
 *
 * Why so: a file's bytes must be exactly the value, so attributes cannot share the key; a key
 * starting with NUL can never be a name, so the reserved namespace is free. One inode object per
 * path lets every handle of a file share one buffer, so two descriptors see each other's writes,
 * and each write-back is one lsm_write batch holding the value and its record, so a crash never
 * leaves a torn value or a value without its attributes.
 *
 * Never: copy a file's content to answer a stat (lsm_get_size only); write back an inode that was
 * unlinked or replaced; map engine codes to errno anywhere but lsmfs_errno(); take an inode's mutex
 * while holding fs.tmu or fs.bmu (order: fs.ns, then inode mu, then fs.tmu, then fs.bmu; the one
 * exception uses trylock).
 */
#include "lsmfs.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <xxhash.h>

struct lsmfs fs;

/* The one place engine codes become errno values. Hard failures are logged with the engine's
   detail so that an EIO always leaves a line in syslog (or on stderr in the foreground). */
int lsmfs_errno(int rc, const char *what, const char *path)
{
    switch (rc) {
    case LSM_OK:       return 0;
    case LSM_NOTFOUND: return ENOENT;
    case LSM_BUSY:     return EBUSY;
    case LSM_NOMEM:    return ENOMEM;
    case LSM_INVALID:  return EINVAL;
    case LSM_EXISTS:   return EEXIST;
    case LSM_NOSPACE:
        lsmfs_log(LOG_ERR, "%s %s: %s", what, path ? path : "", lsm_errmsg(fs.db));
        return ENOSPC;
    case LSM_CORRUPT:
    case LSM_IOERR:
    case LSM_CLOSED:
    default:
        lsmfs_log(LOG_ERR, "%s %s: %s: %s", what, path ? path : "", lsm_strerror(rc),
                  lsm_errmsg(fs.db));
        return EIO;
    }
}

void lsmfs_log(int prio, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (fs.foreground) {
        fputs("lsmfs: ", stderr);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
    } else {
        vsyslog(prio, fmt, ap);
    }
    va_end(ap);
}

int64_t lsmfs_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t lsmfs_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

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

/* 0 if name can be a component created through the mount, else an errno. */
int lsmfs_name_check(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || (name[0] == '.' && (n == 1 || (n == 2 && name[1] == '.'))))
        return EINVAL;
    if (n > LSMFS_NAME_MAX)
        return ENAMETOOLONG;
    return 0;
}

/* parent's path + "/" + name; NULL (errno set) if too long or out of memory. Caller frees. */
char *lsmfs_child_path(const struct lsmfs_inode *parent, const char *name, size_t *plen)
{
    size_t nl = strlen(name), n = parent->plen ? parent->plen + 1 + nl : nl;
    if (n > LSMFS_PATH_MAX) {
        errno = ENAMETOOLONG;
        return NULL;
    }
    char *p = malloc(n + 1);
    if (!p) {
        errno = ENOMEM;
        return NULL;
    }
    if (parent->plen) {
        memcpy(p, parent->path, parent->plen);
        p[parent->plen] = '/';
        memcpy(p + parent->plen + 1, name, nl + 1);
    } else {
        memcpy(p, name, nl + 1);
    }
    *plen = n;
    return p;
}

void lsmfs_meta_default(struct lsmfs_meta *m, int type)
{
    memset(m, 0, sizeof *m);
    m->type = type;
    m->mode = type == LSMFS_DIR ? (S_IFDIR | 0755) : type == LSMFS_LNK ? (S_IFLNK | 0777)
                                                                       : (S_IFREG | 0644);
    m->uid = fs.uid;
    m->gid = fs.gid;
    m->mtime_ns = m->ctime_ns = fs.mount_ns;
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

/* Fills the attribute fields of m from a record; -1 (m untouched) if it is not one we read. */
int lsmfs_meta_decode(const void *buf, size_t len, struct lsmfs_meta *m)
{
    const unsigned char *p = buf;
    if (len < LSMFS_REC_LEN || p[0] != 1 || p[1] < LSMFS_REG || p[1] > LSMFS_LNK)
        return -1;
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
static int read_record(const char *key, size_t klen, struct lsmfs_meta *m, int *found)
{
    void *v = NULL;
    size_t vl = 0;
    int rc = lsm_get(fs.db, key, klen, &v, &vl);
    *found = 0;
    if (rc == LSM_NOTFOUND)
        return 0;
    if (rc != LSM_OK)
        return -lsmfs_errno(rc, "read attributes of", key + 2);
    *found = 1;
    int type = m->type;
    if (lsmfs_meta_decode(v, vl, m) != 0)
        lsmfs_log(LOG_WARNING, "unreadable attribute record for %s: using defaults", key + 2);
    else if (type == LSMFS_DIR && m->type != LSMFS_DIR)
        lsmfs_meta_default(m, LSMFS_DIR);
    free(v);
    return 0;
}

/* Idle iterators kept for prefix probes: refreshing one costs a mutex and a pointer check when no
   flush or compaction happened since, where a new one allocates and opens an iterator per table.
   An idle iterator pins one past view of the database (memtables, tables, snapshot) until it is
   reused or the pool is freed at unmount; the pool is small so that view is bounded. */
#define ITER_POOL 4
static pthread_mutex_t iter_pool_mu = PTHREAD_MUTEX_INITIALIZER;
static lsm_iter *iter_pool[ITER_POOL];      /* guarded by iter_pool_mu */
static int iter_pool_n;                     /* guarded by iter_pool_mu */
static int64_t iter_pool_last;              /* lsmfs_mono_ns of the last put; same guard */

int lsmfs_iter_get(lsm_iter **out)
{
    lsm_iter *it = NULL;
    pthread_mutex_lock(&iter_pool_mu);
    if (iter_pool_n > 0)
        it = iter_pool[--iter_pool_n];
    pthread_mutex_unlock(&iter_pool_mu);
    if (it) {
        *out = it;
        lsm_iter_set_upper_bound(it, NULL, 0);
        return lsm_iter_refresh(it);
    }
    return lsm_iter_new(fs.db, out);
}

void lsmfs_iter_put(lsm_iter *it)
{
    if (!it)
        return;
    pthread_mutex_lock(&iter_pool_mu);
    if (iter_pool_n < ITER_POOL && lsm_iter_status(it) == LSM_OK) {
        iter_pool[iter_pool_n++] = it;
        iter_pool_last = lsmfs_mono_ns();
        it = NULL;
    }
    pthread_mutex_unlock(&iter_pool_mu);
    lsm_iter_free(it);
}

/* A pooled iterator holds the snapshot and version of its last use, and with them tables (and
   blob files) that merges have since replaced: when none was put back for idle_ns, let them go. */
void lsmfs_iter_pool_trim(int64_t idle_ns)
{
    pthread_mutex_lock(&iter_pool_mu);
    if (iter_pool_n > 0 && lsmfs_mono_ns() - iter_pool_last >= idle_ns)
        while (iter_pool_n > 0)
            lsm_iter_free(iter_pool[--iter_pool_n]);
    pthread_mutex_unlock(&iter_pool_mu);
}

void lsmfs_iter_pool_free(void)
{
    pthread_mutex_lock(&iter_pool_mu);
    while (iter_pool_n > 0)
        lsm_iter_free(iter_pool[--iter_pool_n]);
    pthread_mutex_unlock(&iter_pool_mu);
}

/* Is there any key below directory path (data keys or directory records)? */
int lsmfs_dir_has_children(const char *path, size_t plen, int *has)
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
        return -ENOMEM;
    rc = lsmfs_iter_get(&it);
    if (rc != LSM_OK) {
        lsm_iter_free(it);
        free(pre);
        return -lsmfs_errno(rc, "iterate", path);
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
            lsmfs_iter_put(it);
            return -ENOMEM;
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
    lsmfs_iter_put(it);
    if (rc != LSM_OK)
        return -lsmfs_errno(rc, "iterate", path);
    return 0;
}

/* What is at path in the engine: a file (its data key exists; a file hides any keys below it), an
   explicit directory, an implicit one (keys below it), or nothing (m->type == LSMFS_NONE). */
int lsmfs_stat_path(const char *path, size_t plen, struct lsmfs_meta *m)
{
    size_t kl;
    int rc, found;
    char *k;

    if (plen > 0) {
        uint64_t vl;
        rc = lsm_get_size(fs.db, path, plen, &vl);
        if (rc == LSM_OK) {
            lsmfs_meta_default(m, LSMFS_REG);
            m->size = vl;
            if (!(k = lsmfs_key('a', path, plen, 0, &kl)))
                return -ENOMEM;
            rc = read_record(k, kl, m, &found);
            free(k);
            m->size = vl;
            return rc;
        }
        if (rc != LSM_NOTFOUND)
            return -lsmfs_errno(rc, "stat", path);
    }
    lsmfs_meta_default(m, LSMFS_DIR);
    if (!(k = lsmfs_key('d', path, plen, 1, &kl)))
        return -ENOMEM;
    rc = read_record(k, kl, m, &found);
    free(k);
    if (rc < 0)
        return rc;
    if (found) {
        m->explicit_dir = 1;
        return 0;
    }
    if (plen == 0)
        return 0;
    int has;
    if ((rc = lsmfs_dir_has_children(path, plen, &has)) < 0)
        return rc;
    if (!has)
        m->type = LSMFS_NONE;
    return 0;
}

void lsmfs_meta_to_stat(const struct lsmfs_inode *ino, struct stat *st)
{
    const struct lsmfs_meta *m = &ino->m;
    memset(st, 0, sizeof *st);
    st->st_ino = ino->stino;
    st->st_mode = m->mode;
    st->st_nlink = m->type == LSMFS_DIR ? 2 : 1;
    st->st_uid = m->uid;
    st->st_gid = m->gid;
    st->st_size = m->type == LSMFS_DIR ? 4096 : (off_t)m->size;
    st->st_blksize = 4096;
    st->st_blocks = m->type == LSMFS_DIR ? 8 : (blkcnt_t)((m->size + 511) / 512);
    st->st_mtim.tv_sec = m->mtime_ns / 1000000000;
    st->st_mtim.tv_nsec = m->mtime_ns % 1000000000;
    st->st_ctim.tv_sec = m->ctime_ns / 1000000000;
    st->st_ctim.tv_nsec = m->ctime_ns % 1000000000;
    st->st_atim = st->st_mtim;
}

/* ---- inode table ---- */

static uint64_t path_hash(const char *p, size_t n)
{
    return XXH3_64bits(p, n);
}

static void tab_insert(struct lsmfs_inode *ino)
{
    if (fs.count + 1 > fs.tabsize) {
        size_t nsize = fs.tabsize * 2;
        struct lsmfs_inode **nt = calloc(nsize, sizeof *nt);
        if (nt) {
            for (size_t i = 0; i < fs.tabsize; i++) {
                struct lsmfs_inode *e = fs.tab[i], *next;
                for (; e; e = next) {
                    next = e->hnext;
                    size_t b = path_hash(e->path, e->plen) & (nsize - 1);
                    e->hnext = nt[b];
                    nt[b] = e;
                }
            }
            free(fs.tab);
            fs.tab = nt;
            fs.tabsize = nsize;
        }
    }
    size_t b = path_hash(ino->path, ino->plen) & (fs.tabsize - 1);
    ino->hnext = fs.tab[b];
    fs.tab[b] = ino;
    ino->hashed = 1;
    fs.count++;
}

static void tab_remove(struct lsmfs_inode *ino)
{
    if (!ino->hashed)
        return;
    size_t b = path_hash(ino->path, ino->plen) & (fs.tabsize - 1);
    for (struct lsmfs_inode **pp = &fs.tab[b]; *pp; pp = &(*pp)->hnext) {
        if (*pp == ino) {
            *pp = ino->hnext;
            break;
        }
    }
    ino->hnext = NULL;
    ino->hashed = 0;
    fs.count--;
}

static struct lsmfs_inode *tab_find(const char *path, size_t plen)
{
    size_t b = path_hash(path, plen) & (fs.tabsize - 1);
    for (struct lsmfs_inode *e = fs.tab[b]; e; e = e->hnext)
        if (e->plen == plen && memcmp(e->path, path, plen) == 0)
            return e;
    return NULL;
}

static struct lsmfs_inode *inode_new(char *path, size_t plen, const struct lsmfs_meta *m)
{
    struct lsmfs_inode *ino = calloc(1, sizeof *ino);
    if (!ino)
        return NULL;
    pthread_mutex_init(&ino->mu, NULL);
    ino->path = path;
    ino->plen = plen;
    ino->m = *m;
    return ino;
}

static void inode_free(struct lsmfs_inode *ino)
{
    if (!ino)
        return;
    pthread_mutex_destroy(&ino->mu);
    free(ino->data);
    free(ino->path);
    free(ino);
}

int lsmfs_table_init(void)
{
    struct lsmfs_meta m;
    int rc;
    fs.tabsize = 1024;
    fs.tab = calloc(fs.tabsize, sizeof *fs.tab);
    if (!fs.tab)
        return -ENOMEM;
    if ((rc = lsmfs_stat_path("", 0, &m)) < 0)
        return rc;
    char *p = strdup("");
    if (!p || !(fs.root = inode_new(p, 0, &m))) {
        free(p);
        return -ENOMEM;
    }
    fs.root->nlookup = 1;
    fs.root->stino = 1;
    fs.next_stino = 2;
    tab_insert(fs.root);
    return 0;
}

void lsmfs_table_free(void)
{
    if (!fs.tab)
        return;
    for (size_t i = 0; i < fs.tabsize; i++) {
        struct lsmfs_inode *e = fs.tab[i], *next;
        for (; e; e = next) {
            next = e->hnext;
            lsmfs_buf_drop(e);
            inode_free(e);
        }
    }
    free(fs.tab);
    fs.tab = NULL;
}

struct lsmfs_inode *lsmfs_ino(fuse_ino_t n)
{
    return n == FUSE_ROOT_ID ? fs.root : (struct lsmfs_inode *)(uintptr_t)n;
}

/* The live inode of path, or NULL. Without a reference: call with fs.ns held for writing, which
   keeps forget from freeing it. */
struct lsmfs_inode *lsmfs_table_find(const char *path, size_t plen)
{
    pthread_mutex_lock(&fs.tmu);
    struct lsmfs_inode *ino = tab_find(path, plen);
    pthread_mutex_unlock(&fs.tmu);
    return ino;
}

/* The inode of path with one more lookup reference, made from m if not in the table. Takes
   ownership of path (freed if an inode already exists). NULL on out of memory. */
struct lsmfs_inode *lsmfs_table_get(char *path, size_t plen, const struct lsmfs_meta *m)
{
    pthread_mutex_lock(&fs.tmu);
    struct lsmfs_inode *ino = tab_find(path, plen);
    if (ino) {
        free(path);
    } else if ((ino = inode_new(path, plen, m))) {
        ino->stino = fs.next_stino++;
        tab_insert(ino);
    } else {
        free(path);
    }
    if (ino)
        ino->nlookup++;
    pthread_mutex_unlock(&fs.tmu);
    return ino;
}

void lsmfs_table_unhash(struct lsmfs_inode *ino)
{
    pthread_mutex_lock(&fs.tmu);
    tab_remove(ino);
    pthread_mutex_unlock(&fs.tmu);
}

/* Gives ino the new path (ownership taken). fs.ns held for writing; the caller has unhashed any
   other inode at that path. */
void lsmfs_table_rename(struct lsmfs_inode *ino, char *path, size_t plen)
{
    pthread_mutex_lock(&fs.tmu);
    int was = ino->hashed;
    tab_remove(ino);
    free(ino->path);
    ino->path = path;
    ino->plen = plen;
    if (was)
        tab_insert(ino);
    pthread_mutex_unlock(&fs.tmu);
}

/* After a directory rename: every inode at or below from gets the same place below to. */
/* The inodes at or below path (every inode when all is set), caller holds fs.tmu. Returns a
   malloc'd array of *n entries (NULL when out of memory). */
static struct lsmfs_inode **table_collect(const char *path, size_t plen, int all, size_t *n)
{
    size_t cap = 16;
    struct lsmfs_inode **v = malloc(cap * sizeof *v);
    *n = 0;
    for (size_t i = 0; v && i < fs.tabsize; i++) {
        for (struct lsmfs_inode *e = fs.tab[i]; e; e = e->hnext) {
            if (!all && (e->plen < plen || memcmp(e->path, path, plen) != 0 ||
                         (e->plen > plen && e->path[plen] != '/')))
                continue;
            if (*n == cap) {
                struct lsmfs_inode **nv = realloc(v, (cap *= 2) * sizeof *v);
                if (!nv)
                    return v;
                v = nv;
            }
            v[(*n)++] = e;
        }
    }
    return v;
}

void lsmfs_table_move_prefix(const char *from, size_t flen, const char *to, size_t tlen)
{
    pthread_mutex_lock(&fs.tmu);
    size_t n;
    struct lsmfs_inode **v = table_collect(from, flen, 0, &n);
    for (size_t i = 0; i < n; i++) {
        struct lsmfs_inode *e = v[i];
        char *p = malloc(tlen + e->plen - flen + 1);
        if (!p)
            continue;   /* out of memory: the inode keeps its old path (lookup finds it anew) */
        memcpy(p, to, tlen);
        memcpy(p + tlen, e->path + flen, e->plen - flen + 1);
        tab_remove(e);
        free(e->path);
        e->plen = tlen + e->plen - flen;
        e->path = p;
        tab_insert(e);
    }
    free(v);
    pthread_mutex_unlock(&fs.tmu);
}

void lsmfs_table_forget(struct lsmfs_inode *ino, uint64_t n)
{
    int gone = 0;
    pthread_rwlock_rdlock(&fs.ns);
    pthread_mutex_lock(&fs.tmu);
    ino->nlookup = ino->nlookup > n ? ino->nlookup - n : 0;
    if (ino->nlookup == 0 && ino->nopen == 0 && ino != fs.root) {
        tab_remove(ino);
        gone = 1;
    }
    pthread_mutex_unlock(&fs.tmu);
    pthread_rwlock_unlock(&fs.ns);
    if (gone) {
        lsmfs_buf_drop(ino);
        inode_free(ino);
    }
}

void lsmfs_table_open(struct lsmfs_inode *ino)
{
    pthread_mutex_lock(&fs.tmu);
    ino->nopen++;
    pthread_mutex_unlock(&fs.tmu);
}

/* Drops one open reference. The last one writes back what is left and frees the buffer. Caller
   holds fs.ns for reading. */
void lsmfs_table_close(struct lsmfs_inode *ino)
{
    int last, gone = 0;
    pthread_mutex_lock(&ino->mu);
    pthread_mutex_lock(&fs.tmu);
    ino->nopen--;
    last = ino->nopen == 0;
    if (last && ino->nlookup == 0 && ino != fs.root) {
        tab_remove(ino);
        gone = 1;
    }
    pthread_mutex_unlock(&fs.tmu);
    if (last) {
        if (ino->dirty)
            lsmfs_flush_locked(ino, 0);
        lsmfs_buf_drop(ino);
    }
    pthread_mutex_unlock(&ino->mu);
    if (gone)
        inode_free(ino);
}

static void flush_matching(const char *path, size_t plen, int all)
{
    pthread_mutex_lock(&fs.tmu);
    size_t n;
    struct lsmfs_inode **v = table_collect(path, plen, all, &n);
    pthread_mutex_unlock(&fs.tmu);
    for (size_t i = 0; i < n; i++) {
        pthread_mutex_lock(&v[i]->mu);
        if (v[i]->dirty)
            lsmfs_flush_locked(v[i], 0);
        pthread_mutex_unlock(&v[i]->mu);
    }
    free(v);
}

/* Writes back every dirty inode at or below path. fs.ns held for writing. */
void lsmfs_table_flush_prefix(const char *path, size_t plen)
{
    flush_matching(path, plen, 0);
}

void lsmfs_table_flush_all(void)
{
    flush_matching(NULL, 0, 1);
}

/* ---- write-back and buffers ---- */

/* Adds ino's attribute (or directory) record to b. ino->mu held, fs.ns held. */
void lsmfs_add_record(lsm_batch *b, struct lsmfs_inode *ino)
{
    unsigned char rec[LSMFS_REC_LEN];
    size_t kl, rl = lsmfs_meta_encode(&ino->m, rec);
    int dir = ino->m.type == LSMFS_DIR;
    char *k = lsmfs_key(dir ? 'd' : 'a', ino->path, ino->plen, dir, &kl);
    if (!k)
        abort();   /* as the engine does on out of memory */
    lsm_batch_put(b, k, kl, rec, rl);
    free(k);
    if (dir)
        ino->m.explicit_dir = 1;
}

/* Applies b (synced if asked or if sync=always); returns 0 or -errno. */
int lsmfs_write_batch(lsm_batch *b, int sync)
{
    int rc = lsm_write(fs.db, b, sync || fs.sync_mode == LSMFS_SYNC_ALWAYS);
    return rc == LSM_OK ? 0 : -lsmfs_errno(rc, "write", "batch");
}

static void blist_add(struct lsmfs_inode *ino)
{
    ino->bprev = NULL;
    ino->bnext = fs.blist;
    if (fs.blist)
        fs.blist->bprev = ino;
    fs.blist = ino;
}

static void blist_del(struct lsmfs_inode *ino)
{
    if (ino->bprev)
        ino->bprev->bnext = ino->bnext;
    else if (fs.blist == ino)
        fs.blist = ino->bnext;
    if (ino->bnext)
        ino->bnext->bprev = ino->bprev;
    ino->bprev = ino->bnext = NULL;
}

/* Makes room for need bytes of content. ino->mu held. */
int lsmfs_buf_reserve(struct lsmfs_inode *ino, size_t need)
{
    if (ino->data && ino->cap >= need)
        return 0;
    size_t ncap = ino->cap ? ino->cap : 4096;
    while (ncap < need)
        ncap *= 2;
    if (ncap > fs.max_file_size && need <= fs.max_file_size)
        ncap = fs.max_file_size > 0 ? fs.max_file_size : 1;
    char *nd = realloc(ino->data, ncap);
    if (!nd)
        return -ENOMEM;
    pthread_mutex_lock(&fs.bmu);
    if (!ino->data)
        blist_add(ino);
    fs.buffered += ncap - ino->cap;
    pthread_mutex_unlock(&fs.bmu);
    ino->data = nd;
    ino->cap = ncap;
    return 0;
}

/* Frees ino's buffer (ino->mu held or ino unreachable). Write back first if it is dirty. */
void lsmfs_buf_drop(struct lsmfs_inode *ino)
{
    if (!ino->data)
        return;
    pthread_mutex_lock(&fs.bmu);
    blist_del(ino);
    fs.buffered -= ino->cap;
    pthread_mutex_unlock(&fs.bmu);
    free(ino->data);
    ino->data = NULL;
    ino->cap = 0;
}

/* Loads the whole value into the buffer, if it is not there yet. ino->mu and fs.ns held. */
int lsmfs_buf_load(struct lsmfs_inode *ino)
{
    if (ino->data)
        return 0;
    if (ino->m.size == 0)
        return lsmfs_buf_reserve(ino, 1);
    void *v;
    size_t vl;
    int rc = lsm_get(fs.db, ino->path, ino->plen, &v, &vl);
    if (rc == LSM_NOTFOUND)
        return lsmfs_buf_reserve(ino, 1);   /* deleted under us: treat as empty */
    if (rc != LSM_OK)
        return -lsmfs_errno(rc, "read", ino->path);
    size_t cap = vl ? vl : 1;
    pthread_mutex_lock(&fs.bmu);
    blist_add(ino);
    fs.buffered += cap;
    pthread_mutex_unlock(&fs.bmu);
    ino->data = v;
    ino->cap = cap;
    ino->m.size = vl;
    if (vl >= LSMFS_RECLAIM_MIN)
        ino->replaces_big = 1;
    return 0;
}

/* Before the value of ino changes in the engine: every read-only handle that still reads the
   engine gets (a share of) a copy of the current value, so that it keeps reading the version it
   opened. ino->mu and fs.ns held. */
void lsmfs_snap_readers(struct lsmfs_inode *ino)
{
    struct lsmfs_snap *snap = NULL;
    for (struct lsmfs_handle *h = ino->readers; h; h = h->rnext) {
        if (h->snap)
            continue;
        if (!snap) {
            void *v = NULL;
            size_t vl = 0;
            int rc = lsm_get(fs.db, ino->path, ino->plen, &v, &vl);
            if (rc != LSM_OK && rc != LSM_NOTFOUND) {
                lsmfs_errno(rc, "keep the old version of", ino->path);
                return;   /* those readers will see the new value */
            }
            if (rc != LSM_OK)
                vl = 0;
            snap = malloc(sizeof *snap + vl);
            if (!snap) {
                free(v);
                return;
            }
            snap->refs = 0;
            snap->len = vl;
            if (vl)
                memcpy(snap->data, v, vl);
            free(v);
        }
        snap->refs++;
        h->snap = snap;
    }
}

/* Writes back ino as one atomic batch: the value (when the buffer is loaded) and its record.
   With sync set (or nothing to write) the engine is synced before returning. ino->mu and fs.ns
   held. */
int lsmfs_flush_locked(struct lsmfs_inode *ino, int sync)
{
    int rc;
    if (ino->deleted) {
        ino->dirty = 0;
        return 0;
    }
    if (!ino->dirty) {
        if (!sync)
            return 0;
        rc = lsm_sync(fs.db);
        return rc == LSM_OK ? 0 : -lsmfs_errno(rc, "sync", ino->path);
    }
    lsm_batch *b = lsm_batch_new();
    if (ino->m.type != LSMFS_DIR && ino->data) {
        lsmfs_snap_readers(ino);
        lsm_batch_put(b, ino->path, ino->plen, ino->data, ino->m.size);
    }
    int put = ino->m.type != LSMFS_DIR && ino->data;
    lsmfs_add_record(b, ino);
    rc = lsmfs_write_batch(b, sync);
    lsm_batch_free(b);
    if (rc == 0)
        ino->dirty = 0;
    if (rc == 0 && put && ino->replaces_big) {
        ino->replaces_big = 0;
        lsmfs_reclaim_note(ino->path, ino->plen);
    }
    return rc;
}

/* While buffers exceed the budget, write back and free the largest one. Called with fs.ns held
   for reading and no inode mutex held. */
void lsmfs_budget_enforce(void)
{
    for (;;) {
        struct lsmfs_inode *victim = NULL;
        pthread_mutex_lock(&fs.bmu);
        if (fs.buffered > fs.dirty_limit) {
            size_t best = 0;
            for (struct lsmfs_inode *e = fs.blist; e; e = e->bnext) {
                if (e->deleted || e->cap <= best)
                    continue;
                if (pthread_mutex_trylock(&e->mu) != 0)
                    continue;
                if (victim)
                    pthread_mutex_unlock(&victim->mu);
                victim = e;
                best = e->cap;
            }
        }
        pthread_mutex_unlock(&fs.bmu);
        if (!victim)
            return;
        int rc = lsmfs_flush_locked(victim, 0);
        if (rc == 0)
            lsmfs_buf_drop(victim);
        pthread_mutex_unlock(&victim->mu);
        if (rc != 0)
            return;
    }
}
