/*
 * pool.c — how lsmfs serves requests: one thread takes every request from the kernel and
 * answers it itself, except the few that wait for the disk, which it hands to a small pool of
 * worker threads.
 *
 * What: lsmfs_pool_ops wraps the callbacks of the requests that may wait for the disk (fsync,
 * fsyncdir, fallocate, copy_file_range, large reads, and flush and release when every close
 * syncs) so that, while the pool runs, each is queued with a copy of its arguments and answered
 * by a worker; lsmfs_pool_start and lsmfs_pool_stop run the workers around libfuse's
 * single-threaded loop (main.c, main_serve).
 *
 * Why so: a FUSE request is a round trip between two threads, and on a small machine what it
 * costs is mostly the scheduler waking a thread. libfuse's multi-threaded loop keeps several
 * threads waiting on /dev/fuse and the kernel wakes the one that has waited longest, so each
 * request lands on a thread that has gone cold, often on the other CPU. One thread that always
 * takes the next request stays warm: measured side by side on the 2-core VM it made small-file
 * creates, stats, renames and unlinks 1.3-2.5x as fast and `tar x` of /usr/include 2-3x (README,
 * Performance). Almost every lsmfs request is short (memory, the engine's memtable and block
 * cache), so answering them in order costs nothing; one that waits for the disk would make
 * every other process wait behind it, so those go to the workers, where several can wait at
 * once (and the engine groups their log syncs).
 *
 * Safety: libfuse's multi-threaded loop may run any requests at the same time, and every
 * callback is written for that, so running some of them on workers while the loop runs the rest
 * needs nothing new. A job carries copies of what libfuse lent the callback (the file info);
 * nothing here reads the request buffer after the wrapper returns. fuse_reply_* may be called
 * from any thread.
 *
 * Waiting for the next request: the serving thread first polls /dev/fuse for spin_us (-o spin,
 * default 50 us), yielding the CPU between polls, and only then sleeps in poll(2). On the
 * 2-core VM a thread woken on an idle CPU costs tens of microseconds (the virtual CPU has to be
 * woken too), several times what the request itself costs; a process that sends its next
 * request within the window finds the thread awake. Yielding leaves the CPU to any other thread
 * that wants it, so the window costs only CPU time nothing else wanted. Measured side by side
 * (2-core VM, fsbench 5,000 files): stat 30k/s -> 50k/s, unlink 19k/s -> 27-38k/s against
 * libfuse's multi-threaded loop on an idle machine, and 1-3x it on a busy one.
 *
 * Never: queue a request whose callback could wait for another request to be answered first;
 * keep a job's pointers into libfuse's buffers.
 */
#include "lsmfs.h"
#include "fuse_uring_abi.h"

#include <errno.h>
#include <linux/fuse.h>
#include <stddef.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <syslog.h>
#include <unistd.h>

/* Reads at least this large go to a worker: they are a large file's (readahead asks for up to
   128 KiB at a time) and may wait for the disk; smaller ones are usually served from memory. */
#define POOL_READ_MIN (128 * 1024)

enum { JOB_FSYNC, JOB_FSYNCDIR, JOB_READ, JOB_FALLOCATE, JOB_COPY, JOB_FLUSH, JOB_RELEASE };

struct pool_job {
    struct pool_job *next;       /* queue order; guarded by the pool's mu */
    int      op;                 /* JOB_* */
    fuse_req_t req;
    fuse_ino_t ino, ino_out;
    struct fuse_file_info fi, fi_out;
    off_t    off, off_out, len;
    size_t   size;
    int      arg;                /* datasync, fallocate's mode or copy_file_range's flags */
};

#define POOL_MAX 16

struct lsmfs_pool {
    pthread_mutex_t mu;          /* guards all below; a leaf */
    pthread_cond_t  cv;          /* signalled when a job is queued or stop is set */
    struct pool_job *head, **tail; /* the queue */
    int       stop;              /* the workers should finish what is queued and exit */
    int       n;                 /* workers started; constant after lsmfs_pool_start */
    pthread_t thread[POOL_MAX];
};

/* The callbacks the wrappers stand in for; set once by lsmfs_pool_ops, before the session. */
static struct fuse_lowlevel_ops inner;

static void pool_run(const struct pool_job *j)
{
    struct fuse_file_info fi = j->fi, fi_out = j->fi_out;
    switch (j->op) {
    case JOB_FSYNC:
        inner.fsync(j->req, j->ino, j->arg, &fi);
        break;
    case JOB_FSYNCDIR:
        inner.fsyncdir(j->req, j->ino, j->arg, &fi);
        break;
    case JOB_READ:
        inner.read(j->req, j->ino, j->size, j->off, &fi);
        break;
    case JOB_FALLOCATE:
        inner.fallocate(j->req, j->ino, j->arg, j->off, j->len, &fi);
        break;
    case JOB_COPY:
        inner.copy_file_range(j->req, j->ino, j->off, &fi, j->ino_out, j->off_out, &fi_out,
                              j->size, j->arg);
        break;
    case JOB_FLUSH:
        inner.flush(j->req, j->ino, &fi);
        break;
    case JOB_RELEASE:
        inner.release(j->req, j->ino, &fi);
        break;
    }
}

static void *pool_worker(void *arg)
{
    struct lsmfs_pool *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->head && !p->stop)
            pthread_cond_wait(&p->cv, &p->mu);
        struct pool_job *j = p->head;
        if (!j)
            break;   /* stop, and nothing left */
        p->head = j->next;
        if (!p->head)
            p->tail = &p->head;
        pthread_mutex_unlock(&p->mu);
        pool_run(j);
        free(j);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* Queues j for a worker, or, with no pool or no memory for the job, runs it here. */
static void pool_submit(struct pool_job *j)
{
    struct lsmfs *fs = fuse_req_userdata(j->req);
    struct lsmfs_pool *p = fs->workq;
    struct pool_job *q = p ? malloc(sizeof *q) : NULL;
    if (!q) {
        pool_run(j);
        return;
    }
    *q = *j;
    q->next = NULL;
    pthread_mutex_lock(&p->mu);
    *p->tail = q;
    p->tail = &q->next;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

static void pool_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    pool_submit(&(struct pool_job){ .op = JOB_FSYNC, .req = req, .ino = ino, .arg = datasync,
                                    .fi = *fi });
}

static void pool_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync,
                          struct fuse_file_info *fi)
{
    pool_submit(&(struct pool_job){ .op = JOB_FSYNCDIR, .req = req, .ino = ino,
                                    .arg = datasync, .fi = *fi });
}

static void pool_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                      struct fuse_file_info *fi)
{
    struct lsmfs *fs = fuse_req_userdata(req);
    if (!fs->workq || size < POOL_READ_MIN) {
        inner.read(req, ino, size, off, fi);
        return;
    }
    pool_submit(&(struct pool_job){ .op = JOB_READ, .req = req, .ino = ino, .size = size,
                                    .off = off, .fi = *fi });
}

static void pool_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
                           struct fuse_file_info *fi)
{
    pool_submit(&(struct pool_job){ .op = JOB_FALLOCATE, .req = req, .ino = ino, .arg = mode,
                                    .off = off, .len = len, .fi = *fi });
}

static void pool_copy(fuse_req_t req, fuse_ino_t ino_in, off_t off_in,
                      struct fuse_file_info *fi_in, fuse_ino_t ino_out, off_t off_out,
                      struct fuse_file_info *fi_out, size_t len, int flags)
{
    pool_submit(&(struct pool_job){ .op = JOB_COPY, .req = req, .ino = ino_in, .off = off_in,
                                    .fi = *fi_in, .ino_out = ino_out, .off_out = off_out,
                                    .fi_out = *fi_out, .size = len, .arg = flags });
}

/* flush and release go to a worker only when closing syncs (-o sync=close); otherwise a close
   commits to the memtable and is answered at once. */
static void pool_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct lsmfs *fs = fuse_req_userdata(req);
    if (!fs->workq || fs->sync_mode == LSMFS_SYNC_FSYNC) {
        inner.flush(req, ino, fi);
        return;
    }
    pool_submit(&(struct pool_job){ .op = JOB_FLUSH, .req = req, .ino = ino, .fi = *fi });
}

static void pool_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct lsmfs *fs = fuse_req_userdata(req);
    if (!fs->workq || fs->sync_mode == LSMFS_SYNC_FSYNC) {
        inner.release(req, ino, fi);
        return;
    }
    pool_submit(&(struct pool_job){ .op = JOB_RELEASE, .req = req, .ino = ino, .fi = *fi });
}

void lsmfs_pool_ops(struct fuse_lowlevel_ops *ops)
{
    inner = *ops;
    ops->fsync = pool_fsync;
    ops->fsyncdir = pool_fsyncdir;
    ops->read = pool_read;
    ops->fallocate = pool_fallocate;
    ops->copy_file_range = pool_copy;
    ops->flush = pool_flush;
    ops->release = pool_release;
}

int lsmfs_pool_start(struct lsmfs *fs, int n)
{
    struct lsmfs_pool *p = calloc(1, sizeof *p);
    if (!p)
        return ENOMEM;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->tail = &p->head;
    if (n > POOL_MAX)
        n = POOL_MAX;
    int rc = 0;
    while (p->n < n && (rc = lsmfs_thread_start(&p->thread[p->n], pool_worker, p)) == 0)
        p->n++;
    if (p->n == 0) {
        pthread_cond_destroy(&p->cv);
        pthread_mutex_destroy(&p->mu);
        free(p);
        return rc ? rc : EINVAL;
    }
    fs->workq = p;
    return 0;
}

void lsmfs_pool_stop(struct lsmfs *fs)
{
    struct lsmfs_pool *p = fs->workq;
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n; i++)
        pthread_join(p->thread[i], NULL);
    fs->workq = NULL;
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

/* How long the serving thread polls before it sleeps; set once, before the loop (0: it does
   not, and the device stays blocking). */
static int64_t spin_ns;

/* The INIT request's unique and the flags the kernel offered; the serving thread's (INIT is
   the first request, answered before any other is read). */
static uint64_t init_unique;
static uint32_t init_offered, init_offered2;

/* -o uring: the reply to INIT asks for FUSE_OVER_IO_URING and uring.c takes over the requests;
   both set once, before the loop. */
static int uring_wanted;
static struct fuse_session *uring_se;

/* libfuse's read of the next request: with spin_ns, polls the non-blocking device that long,
   yielding the CPU between tries, then sleeps until a request comes. */
static ssize_t pool_read_dev(int fd, void *buf, size_t len, void *userdata)
{
    (void)userdata;
    int64_t start = 0;
    for (;;) {
        ssize_t n = read(fd, buf, len);
        if (n >= (ssize_t)(sizeof(struct fuse_in_header) + sizeof(struct fuse_init_in)) &&
            ((struct fuse_in_header *)buf)->opcode == FUSE_INIT) {
            const struct fuse_init_in *in = (const struct fuse_init_in *)
                ((char *)buf + sizeof(struct fuse_in_header));
            init_unique = ((struct fuse_in_header *)buf)->unique;
            init_offered = in->flags;
            init_offered2 = (in->flags & FUSE_INIT_EXT) ? in->flags2 : 0;
        }
        if (n >= 0 || errno != EAGAIN)
            return n;
        int64_t now = lsmfs_mono_ns();
        if (start == 0) {
            start = now;
        } else if (now - start >= spin_ns) {
            struct pollfd p = { .fd = fd, .events = POLLIN };
            if (poll(&p, 1, -1) < 0)
                return -1;   /* EINTR: libfuse looks whether it should exit */
            start = 0;
            continue;
        }
        sched_yield();
    }
}

/* -o uring: adds FUSE_OVER_IO_URING to the reply to INIT when the kernel offered it (the fuse
   module's enable_uring is Y). Returns the payload size the ring's entries need (the kernel
   refuses a buffer smaller than max(8 KiB, max_write, max_pages pages)), or 0 after a
   warning. */
static size_t pool_ask_uring(struct fuse_init_out *out, size_t len)
{
    if (!(init_offered2 & LSMFS_FUSE_OVER_IO_URING2) ||
        len < offsetof(struct fuse_init_out, flags2) + sizeof(uint32_t)) {
        lsmfs_log(LOG_WARNING, "-o uring: the kernel does not offer FUSE over io_uring (needs "
                  "Linux 6.14+ and /sys/module/fuse/parameters/enable_uring = Y): requests are "
                  "served through /dev/fuse");
        return 0;
    }
    out->flags |= FUSE_INIT_EXT;
    out->flags2 |= LSMFS_FUSE_OVER_IO_URING2;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t pages = (out->flags & FUSE_MAX_PAGES) && out->max_pages ? out->max_pages : 32;
    size_t payload = 8192;
    if (out->max_write > payload)
        payload = out->max_write;
    if (pages * page > payload)
        payload = pages * page;
    return payload;
}

/* libfuse's write of a reply or notification. In the reply to INIT it adds
   FUSE_HANDLE_KILLPRIV_V2, which libfuse 3.14 cannot ask for, when the kernel offered it: the
   kernel then marks an inode found without set-user-ID bits or security.capability (S_NOSEC)
   and stops asking for security.capability (a GETXATTR) before every write to it. What the
   flag makes the daemon's job, clearing the set-user-ID and set-group-ID bits at a write or
   truncate by an unprivileged process, lsmfs does anyway (ops.c, ops_kill_priv_locked); the
   kernel still removes security.capability at the first write. With -o uring it asks for
   FUSE_OVER_IO_URING too and, once the kernel has the reply, starts uring.c; from then on a
   reply to a request that came by a ring goes to uring.c instead of /dev/fuse. */
static ssize_t pool_write_dev(int fd, struct iovec *iov, int count, void *userdata)
{
    ssize_t n;
    size_t payload = 0;
    /* first: a ring's thread may answer a request before lsmfs_uring_start returns */
    if (uring_wanted && lsmfs_uring_reply(iov, count, &n))
        return n;
    if (init_unique && count >= 2 && iov[0].iov_len >= sizeof(struct fuse_out_header) &&
        iov[1].iov_len >= offsetof(struct fuse_init_out, flags) + sizeof(uint32_t)) {
        struct fuse_out_header *oh = iov[0].iov_base;
        if (oh->unique == init_unique && oh->error == 0) {
            struct fuse_init_out *out = iov[1].iov_base;
            init_unique = 0;
            if (init_offered & FUSE_HANDLE_KILLPRIV_V2)
                out->flags |= FUSE_HANDLE_KILLPRIV_V2;
            if (uring_wanted)
                payload = pool_ask_uring(out, iov[1].iov_len);
        }
    }
    n = writev(fd, iov, count);
    if (payload && n >= 0) {
        /* the kernel has taken the reply: REGISTER works from now on */
        int rc = lsmfs_uring_start(uring_se, fd, payload);
        if (rc != 0)
            lsmfs_log(LOG_WARNING, "-o uring: the kernel refused the ring (%s): requests are "
                      "served through /dev/fuse", strerror(rc));
    }
    return n;
}

int lsmfs_pool_io(struct lsmfs *fs, long spin_us, int uring)
{
    static const struct fuse_custom_io io = { .read = pool_read_dev, .writev = pool_write_dev };
    int fd = fuse_session_fd(fs->se);
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return errno;
    if (spin_us > 0 && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return errno;
    spin_ns = spin_us > 0 ? (int64_t)spin_us * 1000 : 0;
    uring_wanted = uring;
    uring_se = fs->se;
    int rc = fuse_session_custom_io(fs->se, &io, fd);
    if (rc != 0) {
        spin_ns = 0;
        uring_wanted = 0;
        fcntl(fd, F_SETFL, fl);
        return -rc;
    }
    return 0;
}
