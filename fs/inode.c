/*
 * inode.c — the in-memory inodes of lsmfs: the table that finds them by path, the content of
 * files being written, and its write-back to the engine.
 *
 * What: the inode table (path -> inode, with the kernel's lookup count and the open count), the
 * FUSE inode numbers (an inode's address; st_ino is another number, the file's own, which keys.c
 * keeps in its record and this table only carries), the content of files being written with its
 * global memory budget, the versions read-only handles keep when a write-back replaces theirs,
 * and the write-back of an inode as one atomic engine write.
 *
 * A file being written holds its new content in one of two forms. A small one (at most
 * LSMFS_SMALL_MAX bytes) sits whole in a buffer (data) and is written back as one batch, the
 * value and its record: the cheapest way to store a small file written in one go. Anything larger
 * goes through the engine's value writer (w): each write goes to the writer's own blob file at its
 * offset (a sequential run is one record), so memory per open file is the writer's chunk, not the
 * file's size; holes cost nothing; ranges not written are shared with the version the writer
 * started from. The write-back of such a file is the writer's commit, with the record in the same
 * batch (lsm_value_writer_commit_batch). A buffer that grows past the threshold becomes a writer.
 *
 * Why so: one inode object per path lets every handle of a file share one buffer or writer, so two
 * descriptors see each other's writes, and each write-back is one atomic engine write holding the
 * value and its record, so a crash never leaves a torn value or a value without its attributes.
 *
 * Never: write back an inode that was unlinked or replaced; take an inode's mutex while holding
 * fs->tmu or fs->bmu (order: fs->ns, then inode mu, then fs->tmu, then fs->bmu; the one exception,
 * the budget's victim search, uses trylock); hold a large file's content in memory.
 */
#include "lsmfs.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
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
    /* du shows what the file occupies: holes take nothing (a writer's uncommitted bytes count) */
    uint64_t a = m->size;
    if (m->type == LSMFS_REG && ino->alloc_ok) {
        a = ino->alloc + (ino->w ? ino->wbytes : 0);
        if (a > m->size)
            a = m->size;
    }
    st->st_blocks = m->type == LSMFS_DIR ? 8 : (blkcnt_t)((a + 511) / 512);
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
    lsm_value_writer_abort(ino->w);
    lsm_value_reader_close(ino->r);
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

/* The writes a writer held since the last commit are gone (a failed write or commit): the
   kernel's pages and size may hold them, so they go now (notify.c) and at the next open. */
static void inode_writes_lost(struct lsmfs *fs, struct lsmfs_inode *ino)
{
    ino->kstale = 1;
    lsmfs_notify_inode(fs, lsmfs_nodeid(fs, ino));
}

/* Counts delta more (or less) bytes in the budget; ino enters or leaves the list of inodes holding
   content when its cap goes from or to 0. ino->mu held. */
static void inode_account(struct lsmfs *fs, struct lsmfs_inode *ino, size_t ncap)
{
    pthread_mutex_lock(&fs->bmu);
    if (!ino->cap && ncap)
        inode_blist_add(fs, ino);
    else if (ino->cap && !ncap)
        inode_blist_del(fs, ino);
    fs->buffered += ncap;
    fs->buffered -= ino->cap;
    pthread_mutex_unlock(&fs->bmu);
    ino->cap = ncap;
}

/* Before the content of ino starts to change: what the engine holds is what the next write-back
   supersedes. ino->mu held. */
static void inode_begin_change(struct lsmfs_inode *ino)
{
    if (!ino->data && !ino->w)
        ino->csize = ino->m.size;
}

/* Makes room for need bytes of content in the buffer. ino->mu held; no writer open. */
int lsmfs_buf_reserve(struct lsmfs *fs, struct lsmfs_inode *ino, size_t need)
{
    if (ino->data && ino->cap >= need)
        return 0;
    inode_begin_change(ino);
    size_t ncap = ino->cap && ino->data ? ino->cap : 4096;
    while (ncap < need)
        ncap *= 2;
    char *nd = realloc(ino->data, ncap);
    if (!nd)
        return ENOMEM;
    ino->data = nd;
    inode_account(fs, ino, ncap);
    return 0;
}

/* Frees ino's buffer, writer and reader (ino->mu held or ino unreachable). Write back first if it
   is dirty: an open writer is aborted. */
void lsmfs_buf_drop(struct lsmfs *fs, struct lsmfs_inode *ino)
{
    if (ino->w) {
        lsm_value_writer_abort(ino->w);
        ino->w = NULL;
        ino->wbytes = 0;
        ino->alloc_ok = 0;
    }
    if (ino->r) {
        lsm_value_reader_close(ino->r);
        ino->r = NULL;
    }
    free(ino->data);
    ino->data = NULL;
    if (ino->cap)
        inode_account(fs, ino, 0);
}

/* Loads the whole value into the buffer, if it is not there yet: only for a small file (at most
   LSMFS_SMALL_MAX). ino->mu and fs->ns held. */
int lsmfs_buf_load(struct lsmfs *fs, struct lsmfs_inode *ino)
{
    if (ino->data || ino->w)
        return 0;
    inode_begin_change(ino);
    if (ino->m.size == 0)
        return lsmfs_buf_reserve(fs, ino, 1);
    void *v;
    size_t vl;
    int rc = lsm_get(fs->db, ino->path, ino->plen, &v, &vl);
    if (rc == LSM_NOTFOUND)
        return lsmfs_buf_reserve(fs, ino, 1);   /* deleted under us: treat as empty */
    if (rc != LSM_OK)
        return lsmfs_errno(fs, rc, "read", ino->path);
    ino->data = v;
    inode_account(fs, ino, vl ? vl : 1);
    ino->m.size = ino->csize = vl;
    return 0;
}

/* Copies the content of r into the new writer w, a piece at a time. */
static int inode_copy_reader(lsm_value_reader *r, lsm_value_writer *w)
{
    size_t piece = 1u << 20, got;
    char *buf = malloc(piece);
    uint64_t size = lsm_value_reader_size(r);
    int rc = buf ? LSM_OK : LSM_NOMEM;
    for (uint64_t off = 0; rc == LSM_OK && off < size; off += got) {
        if ((rc = lsm_value_reader_read(r, off, buf, piece, &got)) == LSM_OK && got == 0)
            break;
        if (rc == LSM_OK)
            rc = lsm_value_writer_write(w, off, buf, got);
    }
    if (rc == LSM_OK)
        rc = lsm_value_writer_truncate(w, size);
    free(buf);
    return rc;
}

int lsmfs_writer_get(struct lsmfs *fs, struct lsmfs_inode *ino)
{
    if (ino->w)
        return 0;
    inode_begin_change(ino);
    /* From the buffer (it is the content) or an unlinked file's reader (its key may be someone
       else's now): the writer starts empty. Else from the engine's current value (a reader kept
       for reads goes: the writer's reads see more). */
    if (ino->r && !ino->deleted) {
        lsm_value_reader_close(ino->r);
        ino->r = NULL;
    }
    int keep = !ino->data && !ino->r;
    lsm_value_writer *w;
    int rc = lsm_value_writer_open(fs->db, ino->path, ino->plen, keep ? LSM_VW_KEEP : 0, &w);
    if (rc != LSM_OK)
        return lsmfs_errno(fs, rc, "open a writer for", ino->path);
    ino->wbytes = 0;
    if (ino->data && ino->m.size)
        rc = lsm_value_writer_write(w, 0, ino->data, ino->m.size);
    else if (ino->r)
        rc = inode_copy_reader(ino->r, w);
    if (rc != LSM_OK) {
        lsm_value_writer_abort(w);
        return lsmfs_errno(fs, rc, "write", ino->path);
    }
    if (!keep) {
        ino->alloc = 0;     /* every byte of the content is the writer's own */
        ino->alloc_ok = 1;
        ino->wbytes = ino->m.size;
    }
    free(ino->data);
    ino->data = NULL;
    if (ino->r) {
        lsm_value_reader_close(ino->r);
        ino->r = NULL;
    }
    ino->w = w;
    if (keep)
        ino->m.size = lsm_value_writer_size(w);  /* the engine's truth */
    inode_account(fs, ino, LSMFS_WRITER_MEM);
    return 0;
}

/* The size of the value in the engine, 0 when absent. */
static uint64_t inode_engine_size(struct lsmfs *fs, struct lsmfs_inode *ino)
{
    uint64_t size = 0;
    if (ino->deleted || lsm_get_size(fs->db, ino->path, ino->plen, &size) != LSM_OK)
        return 0;
    return size;
}

int lsmfs_writer_fail(struct lsmfs *fs, struct lsmfs_inode *ino, int rc, const char *what)
{
    int err = lsmfs_errno(fs, rc, what, ino->path);
    /* A writer that failed refuses everything after (lsm.h): what it held since the last commit
       is lost, as pages are on a local file system whose write-back failed. The file is again
       what the engine holds. */
    lsm_value_writer_abort(ino->w);
    ino->w = NULL;
    ino->wbytes = 0;
    ino->alloc_ok = 0;
    inode_account(fs, ino, 0);
    ino->m.size = inode_engine_size(fs, ino);
    inode_writes_lost(fs, ino);
    return err;
}

void lsmfs_content_keep(struct lsmfs *fs, struct lsmfs_inode *ino)
{
    if (ino->data || ino->w || ino->r || ino->m.type == LSMFS_DIR)
        return;
    int rc = 0;
    if (ino->m.size <= LSMFS_SMALL_MAX) {
        rc = lsmfs_buf_load(fs, ino);
    } else {
        int e = lsm_value_reader_open(fs->db, ino->path, ino->plen, &ino->r);
        if (e != LSM_OK && e != LSM_NOTFOUND)
            rc = lsmfs_errno(fs, e, "keep", ino->path);
    }
    if (rc)
        lsmfs_log(LOG_WARNING, "%s: removed while open; its content could not be kept", ino->path);
}

int lsmfs_content_read(struct lsmfs *fs, struct lsmfs_inode *ino, uint64_t off, char *buf,
                       size_t n, size_t *got)
{
    int rc;
    *got = 0;
    if (ino->data) {
        size_t len = off >= ino->m.size ? 0 : ino->m.size - off;
        *got = len < n ? len : n;
        memcpy(buf, ino->data + off * (*got != 0), *got);
        return 0;
    }
    if (ino->w) {
        rc = lsm_value_writer_read(ino->w, off, buf, n, got);
        return rc == LSM_OK ? 0 : lsmfs_writer_fail(fs, ino, rc, "read");
    }
    /* A large file read while open keeps a value reader of its stored version: the map is decoded
       once, not at every request, and if the file is unlinked its handles keep reading it. An
       unlinked file kept its content only if it was open then (dir.c): one opened later through a
       stale name reads what the name holds now, as before. */
    if (!ino->r && !ino->deleted && ino->m.size > LSMFS_SMALL_MAX) {
        rc = lsm_value_reader_open(fs->db, ino->path, ino->plen, &ino->r);
        if (rc != LSM_OK && rc != LSM_NOTFOUND)
            return lsmfs_errno(fs, rc, "read", ino->path);
    }
    if (ino->r)
        rc = lsm_value_reader_read(ino->r, off, buf, n, got);
    else
        rc = lsm_get_range(fs->db, ino->path, ino->plen, off, buf, n, got, NULL);
    if (rc == LSM_NOTFOUND)
        return 0;
    return rc == LSM_OK ? 0 : lsmfs_errno(fs, rc, "read", ino->path);
}

void lsmfs_alloc_update(struct lsmfs *fs, struct lsmfs_inode *ino)
{
    /* a plain value occupies its length: only large files ask the engine */
    if (ino->alloc_ok || ino->m.type != LSMFS_REG || ino->deleted || ino->data ||
        ino->m.size <= LSMFS_SMALL_MAX)
        return;
    uint64_t size, alloc;
    if (lsm_get_allocated(fs->db, ino->path, ino->plen, &size, &alloc) == LSM_OK) {
        ino->alloc = alloc;
        ino->alloc_ok = 1;
    }
}

/* Before the value of ino changes in the engine: every read-only handle that still reads the
   engine gets (a share of) a reader of the current version, so that it keeps reading the version
   it opened. ino->mu and fs->ns held. */
void lsmfs_snap_readers(struct lsmfs *fs, struct lsmfs_inode *ino)
{
    struct lsmfs_snap *snap = NULL;
    for (struct lsmfs_handle *h = ino->readers; h; h = h->rnext) {
        if (h->snap)
            continue;
        if (!snap) {
            lsm_value_reader *r = NULL;
            int rc = lsm_value_reader_open(fs->db, ino->path, ino->plen, &r);
            if (rc != LSM_OK && rc != LSM_NOTFOUND) {
                lsmfs_errno(fs, rc, "keep the old version of", ino->path);
                return;   /* those readers will see the new value */
            }
            if (!(snap = malloc(sizeof *snap))) {
                lsm_value_reader_close(r);
                return;
            }
            snap->refs = 0;
            snap->r = r;
        }
        snap->refs++;
        h->snap = snap;
    }
}

/* Writes back ino as one atomic engine write: the value (the buffer's, or the writer's commit)
   with its record. With sync set (or nothing to write) the engine is synced before returning. A
   failed write-back leaves size and content in agreement: a buffer stays for the next try; a
   writer is gone (the engine frees it whatever the result) and the size is the engine's again.
   ino->mu and fs->ns held. */
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
    int put = ino->m.type != LSMFS_DIR && (ino->data || ino->w);
    lsm_batch *b = lsm_batch_new();
    if (put)
        lsmfs_snap_readers(fs, ino);
    if (ino->m.type != LSMFS_DIR && ino->data)
        lsm_batch_put(b, ino->path, ino->plen, ino->data, ino->m.size);
    if (ino->w)
        ino->m.size = lsm_value_writer_size(ino->w);
    /* Emptying or shrinking a large file (`: > log`) is how people free space: allowed on a full
       disk. */
    if (put && ino->csize >= LSMFS_FREES_MAX && ino->m.size < ino->csize &&
        (ino->w || ino->m.size <= LSMFS_FREES_MAX))
        lsm_batch_set_frees_space(b, 1);
    lsmfs_add_record(b, ino);
    if (ino->w) {
        rc = lsm_value_writer_commit_batch(ino->w, b, sync || fs->sync_mode == LSMFS_SYNC_ALWAYS);
        ino->w = NULL;              /* freed by the commit, whatever the result */
        ino->wbytes = 0;
        inode_account(fs, ino, 0);
        rc = rc == LSM_OK ? 0 : lsmfs_errno(fs, rc, "write", ino->path);
        if (rc) {
            ino->m.size = inode_engine_size(fs, ino);
            inode_writes_lost(fs, ino);
        }
    } else {
        rc = lsmfs_write_batch(fs, b, sync);
    }
    lsm_batch_free(b);
    if (put)
        ino->alloc_ok = 0;
    if (put && ino->r) {            /* it reads the version just replaced */
        lsm_value_reader_close(ino->r);
        ino->r = NULL;
    }
    if (rc == 0)
        ino->dirty = 0;
    /* A large value superseded leaves its blob file (or extents) to be given back (reclaim.c);
       a writer sharing the old extents leaves garbage only where it shrank. */
    if (rc == 0 && put && ino->csize >= LSMFS_RECLAIM_MIN &&
        (ino->data || ino->m.size < ino->csize))
        lsmfs_reclaim_note(fs, ino->path, ino->plen);
    if (rc == 0 && put)
        ino->csize = ino->m.size;
    return rc;
}

/* While buffers and writers exceed the budget, write back and free the largest one. Called with
   fs->ns held for reading and no inode mutex held. */
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
    lsmfs_alloc_update(fs, ino);
    lsmfs_meta_to_stat(ino, &e->attr);
    pthread_mutex_unlock(&ino->mu);
}

