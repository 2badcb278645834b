/*
 * memtable.c — the in-memory write buffer: a lock-free-for-readers skiplist whose nodes live in a
 * private arena.
 *
 * Every entry is one arena allocation laid out as
 *
 *     [ next[h-1] ... next[1] next[0] ][ klen u32 | vlen u32 ][ internal key ][ value ]
 *                                      ^ node pointer
 *
 * so the tower sits immediately before the header and the key right after it: following a level-0
 * link and comparing the key touches one or two adjacent cache lines, and no height byte is needed.
 * Nodes never move and are never freed on their own; the arena (large chunks, plus a block of its
 * own for any allocation bigger than a quarter chunk, since values reach 1 GiB) is released in one
 * sweep when the last reference drops. There is exactly one writer at a time (the engine serialises
 * memtable_add), so writer-side state needs no lock; readers take no lock at all. The writer fills a
 * node completely, then links it bottom-up with release stores; readers follow links with acquire
 * loads, so they see either the old list or the new node whole. The writer also keeps the
 * predecessors and successors of its last insert (a "splice"): when the next key lands in the same
 * level-0 gap, as in sequential loads, the search is skipped entirely.
 *
 * This module must never unlink, move or overwrite a published node, must never let a reader wait,
 * and must never let a reader observe a link to a node before the node's bytes are written.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include "memtable.h"

#define MEMTABLE_MAX_HEIGHT 16              /* 4^16 entries before towers stop helping */
#define MEMTABLE_CHUNK      (256u * 1024u)  /* arena chunk: few mallocs, bounded tail waste */
#define MEMTABLE_BIG        (MEMTABLE_CHUNK / 4) /* larger allocations get a block of their own */
#define MEMTABLE_ALIGN      sizeof(void *)  /* towers hold pointers */

typedef struct mt_node {
    uint32_t klen;                          /* internal key length (user key + trailer); immutable */
    uint32_t vlen;                          /* value length (0 for deletes); immutable */
    uint8_t  data[];                        /* internal key then value; immutable once linked */
} mt_node;

typedef _Atomic(mt_node *) mt_link;

typedef struct mt_block {
    struct mt_block *next;                  /* older block; guarded by the writer */
    size_t size;                            /* bytes of this malloc, header included */
} mt_block;

struct memtable {
    atomic_int refs;                        /* references; the last unref frees everything */
    atomic_int height;                      /* tallest tower in use; written by the writer only */
    atomic_size_t usage;                    /* bytes of arena in use; written by the writer only */
    atomic_uint_least64_t entries;          /* entries added; written by the writer only */
    mt_node *head;                          /* sentinel with a full tower; immutable */
    mt_block *blocks;                       /* every malloc the arena made; guarded by the writer */
    uint8_t *cur;                           /* free space in the current chunk; guarded by writer */
    size_t left;                            /* bytes free at cur; guarded by the writer */
    uint64_t rng;                           /* xorshift state for tower heights; guarded by writer */
    mt_node *sp_prev[MEMTABLE_MAX_HEIGHT];  /* last insert's predecessors; guarded by the writer */
    mt_node *sp_next[MEMTABLE_MAX_HEIGHT];  /* last insert's successors; guarded by the writer */
    uint64_t *pins;                         /* blob files pinned (memtable_pin); guarded by the writer */
    int npins, cappins;                     /* guarded by the writer */
    memtable_unpin_fn unpin;                /* called at free with pins; set by the first pin */
    void *unpin_arg;
};

typedef struct mt_iter {
    iiter base;                             /* ops; first member */
    memtable *m;                            /* referenced until the iterator is freed */
    mt_node *node;                          /* current entry, NULL when invalid */
} mt_iter;

static inline mt_link *memtable_link(mt_node *n, int level)
{
    return (mt_link *)((uint8_t *)n - sizeof(mt_link) * (size_t)(level + 1));
}

static inline mt_node *memtable_next(mt_node *n, int level)
{
    return atomic_load_explicit(memtable_link(n, level), memory_order_acquire);
}

static inline slice memtable_node_key(const mt_node *n)
{
    slice s = { n->data, n->klen };
    return s;
}

static inline slice memtable_node_value(const mt_node *n)
{
    slice s = { n->data + n->klen, n->vlen };
    return s;
}

/* Bytewise user-key order, eight bytes per step: with 16-byte keys (db_bench's shape) this is two
   loads and a byte swap instead of a memcmp call, and comparison is most of the search. */
static inline int memtable_ukey_cmp(const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
    size_t n = an < bn ? an : bn, i = 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    for (; i + 8 <= n; i += 8) {
        uint64_t x, y;
        memcpy(&x, a + i, 8);
        memcpy(&y, b + i, 8);
        if (x != y) {
            x = __builtin_bswap64(x);
            y = __builtin_bswap64(y);
            return x < y ? -1 : 1;
        }
    }
#endif
    for (; i < n; i++)
        if (a[i] != b[i])
            return a[i] < b[i] ? -1 : 1;
    return an < bn ? -1 : an > bn ? 1 : 0;
}

/* Orders node n against the internal key (uk, ul, trailer): <0 if n sorts first. */
static inline int memtable_cmp(const mt_node *n, const uint8_t *uk, size_t ul, uint64_t trailer)
{
    size_t nl = n->klen - LSM_TRAILER;
    int c = memtable_ukey_cmp(n->data, nl, uk, ul);
    if (c)
        return c;
    uint64_t t = dec_fixed64(n->data + nl);
    return t > trailer ? -1 : t < trailer ? 1 : 0;
}

static void *memtable_alloc(memtable *m, size_t n)
{
    n = (n + MEMTABLE_ALIGN - 1) & ~(MEMTABLE_ALIGN - 1);
    size_t used = n;
    if (n > MEMTABLE_BIG) {
        mt_block *b = xmalloc(sizeof(mt_block) + n);
        b->size = sizeof(mt_block) + n;
        b->next = m->blocks;
        m->blocks = b;
        used = b->size;
        atomic_store_explicit(&m->usage, atomic_load_explicit(&m->usage, memory_order_relaxed) + used,
                              memory_order_relaxed);
        return b + 1;
    }
    if (n > m->left) {
        /* The abandoned tail is still held, so it counts as used. */
        used += m->left + sizeof(mt_block);
        mt_block *b = xmalloc(sizeof(mt_block) + MEMTABLE_CHUNK);
        b->size = sizeof(mt_block) + MEMTABLE_CHUNK;
        b->next = m->blocks;
        m->blocks = b;
        m->cur = (uint8_t *)(b + 1);
        m->left = MEMTABLE_CHUNK;
    }
    void *p = m->cur;
    m->cur += n;
    m->left -= n;
    atomic_store_explicit(&m->usage, atomic_load_explicit(&m->usage, memory_order_relaxed) + used,
                          memory_order_relaxed);
    return p;
}

static mt_node *memtable_node_new(memtable *m, int height, size_t payload)
{
    size_t tower = sizeof(mt_link) * (size_t)height;
    uint8_t *p = memtable_alloc(m, tower + sizeof(mt_node) + payload);
    mt_node *n = (mt_node *)(p + tower);
    for (int i = 0; i < height; i++)
        atomic_init(memtable_link(n, i), NULL);
    return n;
}

/* Heights are geometric with p = 1/4: two random bits per extra level. */
static int memtable_random_height(memtable *m)
{
    uint64_t x = xorshift64(&m->rng);
    int h = 1;
    while (h < MEMTABLE_MAX_HEIGHT && (x & 3) == 0) {
        h++;
        x >>= 2;
    }
    return h;
}

memtable *memtable_new(void)
{
    memtable *m = xcalloc(1, sizeof(*m));
    atomic_init(&m->refs, 1);
    atomic_init(&m->height, 1);
    atomic_init(&m->usage, 0);
    atomic_init(&m->entries, 0);
    m->rng = 0x9e3779b97f4a7c15ull ^ (uint64_t)(uintptr_t)m;
    m->head = memtable_node_new(m, MEMTABLE_MAX_HEIGHT, 0);
    m->head->klen = 0;
    m->head->vlen = 0;
    for (int i = 0; i < MEMTABLE_MAX_HEIGHT; i++) {
        m->sp_prev[i] = m->head;
        m->sp_next[i] = NULL;
    }
    return m;
}

void memtable_ref(memtable *m)
{
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
}

void memtable_unref(memtable *m)
{
    if (!m || atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (m->unpin)
        m->unpin(m->unpin_arg, m->pins, m->npins);
    free(m->pins);
    mt_block *b = m->blocks;
    while (b) {
        mt_block *next = b->next;
        free(b);
        b = next;
    }
    free(m);
}

void memtable_pin(memtable *m, const uint64_t *nums, int n, memtable_unpin_fn fn, void *arg)
{
    if (n <= 0)
        return;
    if (m->npins + n > m->cappins) {
        m->cappins = m->npins + n > 2 * m->cappins ? m->npins + n : 2 * m->cappins;
        m->pins = xrealloc(m->pins, (size_t)m->cappins * sizeof *m->pins);
    }
    memcpy(m->pins + m->npins, nums, (size_t)n * sizeof *nums);
    m->npins += n;
    if (!m->unpin) {
        m->unpin = fn;
        m->unpin_arg = arg;
    }
}

size_t memtable_usage(const memtable *m)
{
    return atomic_load_explicit(&m->usage, memory_order_relaxed) + sizeof(*m);
}

uint64_t memtable_entries(const memtable *m)
{
    return atomic_load_explicit(&m->entries, memory_order_relaxed);
}

/* First node >= (uk, trailer) in internal order, or NULL. With splice set (the writer only), also
   records the neighbours of (uk, trailer) at every level for an insert; levels above the current
   height keep head/NULL, which is right for them. A link already found to be too far at the level
   above is not compared again (it is the same node). Large memtables make every hop a cache miss,
   so the candidate's own link is prefetched while its key is being compared. */
static mt_node *memtable_descend(memtable *m, const uint8_t *uk, size_t ul, uint64_t trailer,
                                 int splice)
{
    mt_node *x = m->head, *bigger = NULL;
    int level = atomic_load_explicit(&m->height, memory_order_relaxed) - 1;
    for (;;) {
        mt_node *next = memtable_next(x, level);
        if (next && next != bigger)
            __builtin_prefetch(memtable_link(next, level));
        if (next && next != bigger && memtable_cmp(next, uk, ul, trailer) < 0) {
            x = next;
            continue;
        }
        if (splice) {
            m->sp_prev[level] = x;
            m->sp_next[level] = next;
        }
        if (level == 0)
            return next;
        bigger = next;
        level--;
    }
}

void memtable_add(memtable *m, uint64_t seq, int type, const void *key, size_t klen,
                  const void *val, size_t vlen)
{
    if (type == LSM_TYPE_DELETE)
        vlen = 0;
    int height = memtable_random_height(m);
    mt_node *n = memtable_node_new(m, height, klen + LSM_TRAILER + vlen);
    n->klen = (uint32_t)(klen + LSM_TRAILER);
    n->vlen = (uint32_t)vlen;
    if (klen)
        memcpy(n->data, key, klen);
    uint64_t trailer = ikey_pack(seq, type);
    enc_fixed64(n->data + klen, trailer);
    if (vlen)
        memcpy(n->data + klen + LSM_TRAILER, val, vlen);

    /* Brackets nest upward, so if the last insert's level-0 gap holds the key, every level's does. */
    mt_node *p0 = m->sp_prev[0], *n0 = m->sp_next[0];
    const uint8_t *uk = n->data;
    if (!((p0 == m->head || memtable_cmp(p0, uk, klen, trailer) < 0) &&
          (!n0 || memtable_cmp(n0, uk, klen, trailer) > 0)))
        memtable_descend(m, uk, klen, trailer, 1);

    int old = atomic_load_explicit(&m->height, memory_order_relaxed);
    if (height > old)
        atomic_store_explicit(&m->height, height, memory_order_relaxed);

    for (int i = 0; i < height; i++) {
        atomic_store_explicit(memtable_link(n, i), m->sp_next[i], memory_order_relaxed);
        atomic_store_explicit(memtable_link(m->sp_prev[i], i), n, memory_order_release);
        m->sp_prev[i] = n;
    }
    atomic_store_explicit(&m->entries,
                          atomic_load_explicit(&m->entries, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

int memtable_get(memtable *m, const void *key, size_t klen, uint64_t snap, int *type, slice *val)
{
    mt_node *n = memtable_descend(m, key, klen, ikey_pack(snap, 0xff), 0);
    if (!n || n->klen - LSM_TRAILER != klen || (klen && memcmp(n->data, key, klen) != 0))
        return 0;
    *type = (int)(dec_fixed64(n->data + klen) & 0xff);
    *val = memtable_node_value(n);
    return 1;
}

static void memtable_iter_seek(iiter *it, slice ikey)
{
    mt_iter *mi = (mt_iter *)it;
    mi->node = memtable_descend(mi->m, ikey.p, ikey.n - LSM_TRAILER, ikey_trailer(ikey), 0);
}

static void memtable_iter_seek_first(iiter *it)
{
    mt_iter *mi = (mt_iter *)it;
    mi->node = memtable_next(mi->m->head, 0);
}

static int memtable_iter_valid(const iiter *it)
{
    return ((const mt_iter *)it)->node != NULL;
}

static void memtable_iter_next(iiter *it)
{
    mt_iter *mi = (mt_iter *)it;
    mt_node *n = memtable_next(mi->node, 0);
    mi->node = n;
    /* Key order is not arena order: every step of a flush is a cache miss unless the node after
       this one is on its way while this one is consumed. */
    mt_node *ahead = n ? memtable_next(n, 0) : NULL;
    if (ahead) {
        __builtin_prefetch(ahead);
        __builtin_prefetch((const uint8_t *)ahead + 64);
    }
}

static slice memtable_iter_key(const iiter *it)
{
    return memtable_node_key(((const mt_iter *)it)->node);
}

static slice memtable_iter_value(const iiter *it)
{
    return memtable_node_value(((const mt_iter *)it)->node);
}

static int memtable_iter_status(const iiter *it, char *err)
{
    (void)it;
    (void)err;
    return LSM_OK;
}

static void memtable_iter_free(iiter *it)
{
    mt_iter *mi = (mt_iter *)it;
    memtable_unref(mi->m);
    free(mi);
}

static const iiter_ops memtable_iter_ops = {
    .seek = memtable_iter_seek,
    .seek_first = memtable_iter_seek_first,
    .valid = memtable_iter_valid,
    .next = memtable_iter_next,
    .key = memtable_iter_key,
    .value = memtable_iter_value,
    .status = memtable_iter_status,
    .free = memtable_iter_free,
};

iiter *memtable_iter_new(memtable *m)
{
    mt_iter *mi = xmalloc(sizeof(*mi));
    mi->base.ops = &memtable_iter_ops;
    memtable_ref(m);
    mi->m = m;
    mi->node = NULL;
    return &mi->base;
}
