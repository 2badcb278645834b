/*
 * inode.c — the in-memory inodes of lsmfs: the table that finds them by path, the content buffers
 * of files being written, and their write-back to the engine.
 *
 * What: the inode table (path -> inode, with the kernel's lookup count and the open count), the
 * FUSE inode numbers (an inode's address; st_ino is another number, the file's own, which keys.c
 * keeps in its record and this table only carries), the buffers of files being written with
 * their global memory budget, the copies read-only handles keep of a version being replaced, and
 * the write-back of an inode as one batch.
 *
 * Why so: one inode object per path lets every handle of a file share one buffer, so two
 * descriptors see each other's writes, and each write-back is one lsm_write batch holding the value
 * and its record, so a crash never leaves a torn value or a value without its attributes.
 *
 * Never: write back an inode that was unlinked or replaced; take an inode's mutex while holding
 * fs->tmu or fs->bmu (order: fs->ns, then inode mu, then fs->tmu, then fs->bmu; the one exception,
 * the budget's victim search, uses trylock).
 */
#include "lsmfs.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>

void lsmfs_meta_to_stat(const struct lsmfs_inode *ino, struct stat *st)
{
    const struct lsmfs_meta *m = &ino->m;
    memset(st, 0, sizeof *st);
    st->st_ino = m->ino ^ ino->fs->ino_salt;   /* a snapshot's numbers differ from the live ones */
    st->st_mode = m->mode;
    if (ino->deleted)
        st->st_nlink = 0;   /* unlinked (or replaced) while open */
    else if (m->type == LSMFS_DIR)
        st->st_nlink = ino->nsub >= 0 ? 2 + (nlink_t)ino->nsub : 1;   /* 1: not counted */
    else
        st->st_nlink = 1;
    st->st_uid = m->uid;
    st->st_gid = m->gid;
    st->st_size = m->type == LSMFS_DIR ? 4096 : (off_t)m->size;
    st->st_rdev = (dev_t)m->rdev;
    st->st_blksize = 4096;
    st->st_blocks = m->type == LSMFS_DIR ? 8 : (blkcnt_t)((m->size + 511) / 512);
    st->st_mtim.tv_sec = m->mtime_ns / 1000000000;
    st->st_mtim.tv_nsec = m->mtime_ns % 1000000000;
    st->st_ctim.tv_sec = m->ctime_ns / 1000000000;
    st->st_ctim.tv_nsec = m->ctime_ns % 1000000000;
    st->st_atim = st->st_mtim;
}

/* ---- inode table ---- */

static uint64_t inode_hash(const char *p, size_t n)
{
    return XXH3_64bits(p, n);
}

static void inode_tab_insert(struct lsmfs *fs, struct lsmfs_inode *ino)
{
    if (fs->count + 1 > fs->tabsize) {
        size_t nsize = fs->tabsize * 2;
        struct lsmfs_inode **nt = calloc(nsize, sizeof *nt);
        if (nt) {
            for (size_t i = 0; i < fs->tabsize; i++) {
                struct lsmfs_inode *e = fs->tab[i], *next;
                for (; e; e = next) {
                    next = e->hnext;
                    size_t b = inode_hash(e->path, e->plen) & (nsize - 1);
                    e->hnext = nt[b];
                    nt[b] = e;
                }
            }
            free(fs->tab);
            fs->tab = nt;
            fs->tabsize = nsize;
        }
    }
    size_t b = inode_hash(ino->path, ino->plen) & (fs->tabsize - 1);
    ino->hnext = fs->tab[b];
    fs->tab[b] = ino;
    ino->hashed = 1;
    fs->count++;
}

static void inode_tab_remove(struct lsmfs *fs, struct lsmfs_inode *ino)
{
    if (!ino->hashed)
        return;
    size_t b = inode_hash(ino->path, ino->plen) & (fs->tabsize - 1);
    for (struct lsmfs_inode **pp = &fs->tab[b]; *pp; pp = &(*pp)->hnext) {
        if (*pp == ino) {
            *pp = ino->hnext;
            break;
        }
    }
    ino->hnext = NULL;
    ino->hashed = 0;
    fs->count--;
}

static struct lsmfs_inode *inode_tab_find(struct lsmfs *fs, const char *path, size_t plen)
{
    size_t b = inode_hash(path, plen) & (fs->tabsize - 1);
    for (struct lsmfs_inode *e = fs->tab[b]; e; e = e->hnext)
        if (e->plen == plen && memcmp(e->path, path, plen) == 0)
            return e;
    return NULL;
}

static struct lsmfs_inode *inode_new(struct lsmfs *fs, char *path, size_t plen,
                                     const struct lsmfs_meta *m)
{
    struct lsmfs_inode *ino = calloc(1, sizeof *ino);
    if (!ino)
        return NULL;
    ino->fs = fs;
    pthread_mutex_init(&ino->mu, NULL);
    ino->path = path;
    ino->plen = plen;
    ino->m = *m;
    ino->nsub = -1;
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

int lsmfs_table_init(struct lsmfs *fs)
{
    struct lsmfs_meta m;
    int rc;
    fs->tabsize = 1024;
    fs->tab = calloc(fs->tabsize, sizeof *fs->tab);
    if (!fs->tab)
        return ENOMEM;
    if ((rc = lsmfs_ino_load(fs)) || (rc = lsmfs_stat_path(fs, "", 0, &m)))
        return rc;
    char *p = strdup("");
    if (!p || !(fs->root = inode_new(fs, p, 0, &m))) {
        free(p);
        return ENOMEM;
    }
    fs->root->nlookup = 1;
    inode_tab_insert(fs, fs->root);
    return 0;
}

void lsmfs_table_free(struct lsmfs *fs)
{
    if (!fs->tab)
        return;
    for (size_t i = 0; i < fs->tabsize; i++) {
        struct lsmfs_inode *e = fs->tab[i], *next;
        for (; e; e = next) {
            next = e->hnext;
            lsmfs_buf_drop(fs, e);
            inode_free(e);
        }
    }
    free(fs->tab);
    fs->tab = NULL;
}

struct lsmfs_inode *lsmfs_ino(struct lsmfs *fs, fuse_ino_t n)
{
    return n == FUSE_ROOT_ID ? fs->root : (struct lsmfs_inode *)(uintptr_t)n;
}

/* The live inode of path, or NULL. Without a reference: call with fs->ns held for writing, which
   keeps forget from freeing it. */
struct lsmfs_inode *lsmfs_table_find(struct lsmfs *fs, const char *path, size_t plen)
{
    pthread_mutex_lock(&fs->tmu);
    struct lsmfs_inode *ino = inode_tab_find(fs, path, plen);
    pthread_mutex_unlock(&fs->tmu);
    return ino;
}

/* The live inode of path with one more lookup reference, or NULL when there is none. */
struct lsmfs_inode *lsmfs_table_ref(struct lsmfs *fs, const char *path, size_t plen)
{
    pthread_mutex_lock(&fs->tmu);
    struct lsmfs_inode *ino = inode_tab_find(fs, path, plen);
    if (ino)
        ino->nlookup++;
    pthread_mutex_unlock(&fs->tmu);
    return ino;
}

/* The inode of path with one more lookup reference, made from m if not in the table. Takes
   ownership of path (freed if an inode already exists). NULL on out of memory. */
struct lsmfs_inode *lsmfs_table_get(struct lsmfs *fs, char *path, size_t plen,
                                    const struct lsmfs_meta *m)
{
    pthread_mutex_lock(&fs->tmu);
    struct lsmfs_inode *ino = inode_tab_find(fs, path, plen);
    if (ino) {
        free(path);
    } else if ((ino = inode_new(fs, path, plen, m))) {
        inode_tab_insert(fs, ino);
    } else {
        free(path);
    }
    if (ino)
        ino->nlookup++;
    pthread_mutex_unlock(&fs->tmu);
    return ino;
}

void lsmfs_table_unhash(struct lsmfs *fs, struct lsmfs_inode *ino)
{
    pthread_mutex_lock(&fs->tmu);
    inode_tab_remove(fs, ino);
    pthread_mutex_unlock(&fs->tmu);
}

/* Gives ino the new path (ownership taken). fs->ns held for writing; the caller has unhashed any
   other inode at that path. */
void lsmfs_table_rename(struct lsmfs *fs, struct lsmfs_inode *ino, char *path, size_t plen)
{
    pthread_mutex_lock(&fs->tmu);
    int was = ino->hashed;
    inode_tab_remove(fs, ino);
    free(ino->path);
    ino->path = path;
    ino->plen = plen;
    if (was)
        inode_tab_insert(fs, ino);
    pthread_mutex_unlock(&fs->tmu);
}

/* After a directory rename: every inode at or below from gets the same place below to. */
/* The inodes at or below path (every inode when all is set), caller holds fs->tmu. Returns a
   malloc'd array of *n entries (NULL when out of memory). */
static struct lsmfs_inode **inode_collect(struct lsmfs *fs, const char *path, size_t plen, int all,
                                          size_t *n)
{
    size_t cap = 16;
    struct lsmfs_inode **v = malloc(cap * sizeof *v);
    *n = 0;
    for (size_t i = 0; v && i < fs->tabsize; i++) {
        for (struct lsmfs_inode *e = fs->tab[i]; e; e = e->hnext) {
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

void lsmfs_table_move_prefix(struct lsmfs *fs, const char *from, size_t flen, const char *to,
                             size_t tlen)
{
    pthread_mutex_lock(&fs->tmu);
    size_t n;
    struct lsmfs_inode **v = inode_collect(fs, from, flen, 0, &n);
    for (size_t i = 0; i < n; i++) {
        struct lsmfs_inode *e = v[i];
        char *p = malloc(tlen + e->plen - flen + 1);
        if (!p)
            continue;   /* out of memory: the inode keeps its old path (lookup finds it anew) */
        memcpy(p, to, tlen);
        memcpy(p + tlen, e->path + flen, e->plen - flen + 1);
        inode_tab_remove(fs, e);
        free(e->path);
        e->plen = tlen + e->plen - flen;
        e->path = p;
        inode_tab_insert(fs, e);
    }
    free(v);
    pthread_mutex_unlock(&fs->tmu);
}

void lsmfs_table_forget(struct lsmfs *fs, struct lsmfs_inode *ino, uint64_t n)
{
    int gone = 0;
    pthread_rwlock_rdlock(&fs->ns);
    pthread_mutex_lock(&fs->tmu);
    ino->nlookup = ino->nlookup > n ? ino->nlookup - n : 0;
    if (ino->nlookup == 0 && ino->nopen == 0 && ino != fs->root) {
        inode_tab_remove(fs, ino);
        gone = 1;
    }
    pthread_mutex_unlock(&fs->tmu);
    pthread_rwlock_unlock(&fs->ns);
    if (gone) {
        lsmfs_buf_drop(fs, ino);
        inode_free(ino);
    }
}

void lsmfs_table_open(struct lsmfs *fs, struct lsmfs_inode *ino)
{
    pthread_mutex_lock(&fs->tmu);
    ino->nopen++;
    pthread_mutex_unlock(&fs->tmu);
}

/* Drops one open reference. The last one writes back what is left and frees the buffer. Caller
   holds fs->ns for reading. */
void lsmfs_table_close(struct lsmfs *fs, struct lsmfs_inode *ino)
{
    int last, gone = 0;
    pthread_mutex_lock(&ino->mu);
    pthread_mutex_lock(&fs->tmu);
    ino->nopen--;
    last = ino->nopen == 0;
    if (last && ino->nlookup == 0 && ino != fs->root) {
        inode_tab_remove(fs, ino);
        gone = 1;
    }
    pthread_mutex_unlock(&fs->tmu);
    if (last) {
        /* A write-back that fails (a full disk, say) keeps the bytes in the buffer: the file's
           size and content still agree, and the next flush tries again. Only an inode nobody
           can reach any more lets them go. */
        if (!ino->dirty || lsmfs_flush_locked(fs, ino, 0) == 0 || gone)
            lsmfs_buf_drop(fs, ino);
    }
    pthread_mutex_unlock(&ino->mu);
    if (gone)
        inode_free(ino);
}

static void inode_flush_matching(struct lsmfs *fs, const char *path, size_t plen, int all)
{
    pthread_mutex_lock(&fs->tmu);
    size_t n;
    struct lsmfs_inode **v = inode_collect(fs, path, plen, all, &n);
    pthread_mutex_unlock(&fs->tmu);
    for (size_t i = 0; i < n; i++) {
        pthread_mutex_lock(&v[i]->mu);
        if (v[i]->dirty)
            lsmfs_flush_locked(fs, v[i], 0);
        pthread_mutex_unlock(&v[i]->mu);
    }
    free(v);
}

/* Writes back every dirty inode at or below path. fs->ns held for writing. */
void lsmfs_table_flush_prefix(struct lsmfs *fs, const char *path, size_t plen)
{
    inode_flush_matching(fs, path, plen, 0);
}

void lsmfs_table_flush_all(struct lsmfs *fs)
{
    inode_flush_matching(fs, NULL, 0, 1);
}

/* ---- write-back and buffers ---- */

/* Adds ino's attribute (or directory) record to b. ino->mu held, fs->ns held. */
void lsmfs_add_record(lsm_batch *b, struct lsmfs_inode *ino)
{
    if (lsmfs_put_record(b, ino->path, ino->plen, &ino->m) != 0)
        abort();   /* as the engine does on out of memory */
    if (ino->m.type == LSMFS_DIR)
        ino->m.explicit_dir = 1;
}

/* Applies b (synced if asked or if sync=always); returns 0 or an errno. */
int lsmfs_write_batch(struct lsmfs *fs, lsm_batch *b, int sync)
{
    int rc = lsm_write(fs->db, b, sync || fs->sync_mode == LSMFS_SYNC_ALWAYS);
    return rc == LSM_OK ? 0 : lsmfs_errno(fs, rc, "write", "batch");
}

static void inode_blist_add(struct lsmfs *fs, struct lsmfs_inode *ino)
{
    ino->bprev = NULL;
    ino->bnext = fs->blist;
    if (fs->blist)
        fs->blist->bprev = ino;
    fs->blist = ino;
}

static void inode_blist_del(struct lsmfs *fs, struct lsmfs_inode *ino)
{
    if (ino->bprev)
        ino->bprev->bnext = ino->bnext;
    else if (fs->blist == ino)
        fs->blist = ino->bnext;
    if (ino->bnext)
        ino->bnext->bprev = ino->bprev;
    ino->bprev = ino->bnext = NULL;
}

/* Makes room for need bytes of content. ino->mu held. */
int lsmfs_buf_reserve(struct lsmfs *fs, struct lsmfs_inode *ino, size_t need)
{
    if (ino->data && ino->cap >= need)
        return 0;
    size_t ncap = ino->cap ? ino->cap : 4096;
    while (ncap < need)
        ncap *= 2;
    if (ncap > fs->max_file_size && need <= fs->max_file_size)
        ncap = fs->max_file_size > 0 ? fs->max_file_size : 1;
    char *nd = realloc(ino->data, ncap);
    if (!nd)
        return ENOMEM;
    pthread_mutex_lock(&fs->bmu);
    if (!ino->data)
        inode_blist_add(fs, ino);
    fs->buffered += ncap - ino->cap;
    pthread_mutex_unlock(&fs->bmu);
    ino->data = nd;
    ino->cap = ncap;
    return 0;
}

/* Frees ino's buffer (ino->mu held or ino unreachable). Write back first if it is dirty. */
void lsmfs_buf_drop(struct lsmfs *fs, struct lsmfs_inode *ino)
{
    if (!ino->data)
        return;
    pthread_mutex_lock(&fs->bmu);
    inode_blist_del(fs, ino);
    fs->buffered -= ino->cap;
    pthread_mutex_unlock(&fs->bmu);
    free(ino->data);
    ino->data = NULL;
    ino->cap = 0;
}

/* Loads the whole value into the buffer, if it is not there yet. ino->mu and fs->ns held. */
int lsmfs_buf_load(struct lsmfs *fs, struct lsmfs_inode *ino)
{
    if (ino->data)
        return 0;
    if (ino->m.size == 0)
        return lsmfs_buf_reserve(fs, ino, 1);
    void *v;
    size_t vl;
    int rc = lsm_get(fs->db, ino->path, ino->plen, &v, &vl);
    if (rc == LSM_NOTFOUND)
        return lsmfs_buf_reserve(fs, ino, 1);   /* deleted under us: treat as empty */
    if (rc != LSM_OK)
        return lsmfs_errno(fs, rc, "read", ino->path);
    size_t cap = vl ? vl : 1;
    pthread_mutex_lock(&fs->bmu);
    inode_blist_add(fs, ino);
    fs->buffered += cap;
    pthread_mutex_unlock(&fs->bmu);
    ino->data = v;
    ino->cap = cap;
    ino->m.size = vl;
    if (vl >= LSMFS_RECLAIM_MIN)
        ino->replaces_big = 1;
    return 0;
}

/* Before the value of ino changes in the engine: every read-only handle that still reads the
   engine gets (a share of) a copy of the current value, so that it keeps reading the version it
   opened. ino->mu and fs->ns held. */
void lsmfs_snap_readers(struct lsmfs *fs, struct lsmfs_inode *ino)
{
    struct lsmfs_snap *snap = NULL;
    for (struct lsmfs_handle *h = ino->readers; h; h = h->rnext) {
        if (h->snap)
            continue;
        if (!snap) {
            void *v = NULL;
            size_t vl = 0;
            int rc = lsm_get(fs->db, ino->path, ino->plen, &v, &vl);
            if (rc != LSM_OK && rc != LSM_NOTFOUND) {
                lsmfs_errno(fs, rc, "keep the old version of", ino->path);
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
   With sync set (or nothing to write) the engine is synced before returning. ino->mu and fs->ns
   held. */
int lsmfs_flush_locked(struct lsmfs *fs, struct lsmfs_inode *ino, int sync)
{
    int rc;
    if (ino->deleted) {
        ino->dirty = 0;
        return 0;
    }
    if (!ino->dirty) {
        if (!sync)
            return 0;
        rc = lsm_sync(fs->db);
        return rc == LSM_OK ? 0 : lsmfs_errno(fs, rc, "sync", ino->path);
    }
    lsm_batch *b = lsm_batch_new();
    if (ino->m.type != LSMFS_DIR && ino->data) {
        lsmfs_snap_readers(fs, ino);
        lsm_batch_put(b, ino->path, ino->plen, ino->data, ino->m.size);
    }
    int put = ino->m.type != LSMFS_DIR && ino->data;
    /* Emptying a large file (`: > log`) is how people free space: allowed on a full disk. */
    if (put && ino->replaces_big && ino->m.size <= LSMFS_FREES_MAX)
        lsm_batch_set_frees_space(b, 1);
    lsmfs_add_record(b, ino);
    rc = lsmfs_write_batch(fs, b, sync);
    lsm_batch_free(b);
    if (rc == 0)
        ino->dirty = 0;
    if (rc == 0 && put && ino->replaces_big) {
        ino->replaces_big = 0;
        lsmfs_reclaim_note(fs, ino->path, ino->plen);
    }
    return rc;
}

/* While buffers exceed the budget, write back and free the largest one. Called with fs->ns held
   for reading and no inode mutex held. */
void lsmfs_budget_enforce(struct lsmfs *fs)
{
    for (;;) {
        struct lsmfs_inode *victim = NULL;
        pthread_mutex_lock(&fs->bmu);
        if (fs->buffered > fs->dirty_limit) {
            size_t best = 0;
            for (struct lsmfs_inode *e = fs->blist; e; e = e->bnext) {
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
        pthread_mutex_unlock(&fs->bmu);
        if (!victim)
            return;
        int rc = lsmfs_flush_locked(fs, victim, 0);
        if (rc == 0)
            lsmfs_buf_drop(fs, victim);
        pthread_mutex_unlock(&victim->mu);
        if (rc != 0)
            return;
    }
}

fuse_ino_t lsmfs_nodeid(struct lsmfs *fs, const struct lsmfs_inode *ino)
{
    return ino == fs->root && !fs->live ? FUSE_ROOT_ID : (fuse_ino_t)(uintptr_t)ino;
}

void lsmfs_fill_entry(struct lsmfs *fs, struct lsmfs_inode *ino, struct fuse_entry_param *e)
{
    memset(e, 0, sizeof *e);
    e->ino = lsmfs_nodeid(fs, ino);
    e->generation = 1;
    e->attr_timeout = fs->timeout;
    e->entry_timeout = fs->timeout;
    pthread_mutex_lock(&ino->mu);
    lsmfs_meta_to_stat(ino, &e->attr);
    pthread_mutex_unlock(&ino->mu);
}

