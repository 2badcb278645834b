/*
 * uring.c — FUSE over io_uring (-o uring, experimental): the kernel hands each request to a
 * thread on the CPU of the process that made it, instead of to whichever thread reads
 * /dev/fuse.
 *
 * What: once the kernel has accepted the INIT reply in which pool.c asked for
 * FUSE_OVER_IO_URING, lsmfs_uring_start runs one thread per possible CPU, pinned to it, each
 * with its own io_uring and URING_DEPTH entries registered on the queue of its CPU (the
 * kernel's queue id is the CPU number, and it serves no request by the ring until every
 * possible CPU's queue has an entry). A thread turns each request the kernel puts in an entry
 * (fuse_in_header and the first argument in the header buffer, the other arguments in the
 * payload buffer) into the contiguous layout of a read of /dev/fuse, in place, just before the
 * payload, and gives it to libfuse (fuse_session_process_buf). libfuse writes the reply
 * through pool.c's hook, which calls lsmfs_uring_reply: a reply to an entry's request is copied
 * into the entry and committed (COMMIT_AND_FETCH, which also asks for the next request). The
 * entry's thread commits it itself; a reply from another thread (pool.c's workers answer
 * fsync, large reads, ...) is queued for it and its thread woken through an eventfd that its
 * ring reads, so that only that thread ever submits to its ring.
 *
 * Why so: on the 2-core VM a FUSE round trip is mostly the scheduler waking a thread on the
 * other virtual CPU. A thread bound to the requester's CPU is woken there (doc/fuse-uring.md).
 *
 * What stays on /dev/fuse, served by libfuse's loop as before: INIT, FORGET and
 * BATCH_FORGET, INTERRUPT, every request sent before the ring was ready, and lsmfs's
 * notifications (the kernel takes none by the ring).
 *
 * Never: submit to a ring from a thread other than its own (IORING_SETUP_SINGLE_ISSUER); keep
 * a pointer into an entry's buffers after its reply is copied (the next request lands there);
 * start before the kernel has the INIT reply (REGISTER fails with EAGAIN).
 */
#include "lsmfs.h"
#include "fuse_uring_abi.h"

#include <errno.h>
#include <liburing.h>
#include <linux/fuse.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/sysinfo.h>
#include <sys/uio.h>
#include <syslog.h>
#include <unistd.h>

#define URING_DEPTH 8            /* entries per CPU: requests one CPU's thread holds at once */
#define URING_PRE   4096         /* room before the payload for fuse_in_header + op_in */

struct uring_queue;

struct uring_ent {
    struct uring_queue *q;                /* constant */
    struct fuse_uring_req_header *hdr;    /* iov[0]; constant */
    char    *buf;                         /* URING_PRE + payload bytes; constant */
    struct iovec iov[2];                  /* what REGISTER gave the kernel; constant */
    _Atomic uint64_t unique;              /* the request being answered; 0: none */
    uint64_t commit_id;                   /* the kernel's id of it; the queue's thread's */
    int      dead;                        /* the kernel ended it (unmount); thread's */
    struct uring_ent *next;               /* on q->done; guarded by q->mu */
};

struct uring_set;

struct uring_queue {
    struct uring_set *set;                /* constant */
    int      qid;                         /* = CPU; constant */
    struct io_uring ring;                 /* the thread's alone */
    int      ring_ok;                     /* ring was set up; thread's */
    int      efd;                         /* eventfd: replies queued on done, or stop */
    uint64_t efd_val;                     /* the ring reads the eventfd into it */
    pthread_t thread;
    int      started;                     /* thread runs; the starter's */
    pthread_mutex_t mu;                   /* guards done; a leaf */
    struct uring_ent *done;               /* answered on other threads, to commit */
    uint64_t served;                      /* requests taken by this ring; thread's */
    struct uring_ent ent[URING_DEPTH];
};

struct uring_set {
    struct fuse_session *se;              /* constant */
    int      fd;                          /* /dev/fuse; constant */
    size_t   payload;                     /* bytes of each payload buffer; constant */
    int      nq;                          /* queues = possible CPUs; constant */
    atomic_int stop;                      /* the threads should end */
    pthread_mutex_t mu;                   /* guards reported and err */
    pthread_cond_t cv;                    /* signalled as each thread reports */
    int      reported;                    /* threads that finished registering */
    int      err;                         /* first registration error (errno), 0 */
    int      refused;                     /* entries not registered */
    struct uring_queue *q;                /* [nq] */
};

/* The running set; set before its threads start (their replies need it), cleared after they
   end. */
static _Atomic(struct uring_set *) active;
/* The queue whose thread this is; NULL on every other thread. */
static _Thread_local struct uring_queue *self;

/* The kernel has one queue per possible CPU (num_possible_cpus), not per online one. */
static int uring_possible_cpus(void)
{
    FILE *f = fopen("/sys/devices/system/cpu/possible", "r");
    char line[256];
    int n = 0;
    if (f && fgets(line, sizeof line, f)) {
        for (char *p = line; *p; ) {
            char *end;
            long a = strtol(p, &end, 10), b = a;
            if (end == p)
                break;
            if (*end == '-')
                b = strtol(end + 1, &end, 10);
            if (b + 1 > n)
                n = (int)(b + 1);
            p = *end == ',' ? end + 1 : end;
            if (*p == '\n')
                break;
        }
    }
    if (f)
        fclose(f);
    return n > 0 ? n : get_nprocs_conf();
}

static struct io_uring_sqe *uring_sqe(struct uring_queue *q)
{
    struct io_uring_sqe *sqe;
    while (!(sqe = io_uring_get_sqe(&q->ring)))
        io_uring_submit(&q->ring);
    return sqe;
}

static void uring_prep_cmd(struct uring_queue *q, struct uring_ent *e, uint32_t op)
{
    struct io_uring_sqe *sqe = uring_sqe(q);
    memset(sqe, 0, 2 * sizeof *sqe);     /* SQE128: the command area runs into the next 64 */
    sqe->opcode = IORING_OP_URING_CMD;
    sqe->fd = q->set->fd;
    sqe->cmd_op = op;
    sqe->user_data = (uintptr_t)e;
    struct fuse_uring_cmd_req *req = (struct fuse_uring_cmd_req *)sqe->cmd;
    req->qid = (uint16_t)q->qid;
    if (op == FUSE_IO_URING_CMD_REGISTER) {
        sqe->addr = (uintptr_t)e->iov;
        sqe->len = 2;
    } else {
        req->commit_id = e->commit_id;
    }
}

static void uring_arm_eventfd(struct uring_queue *q)
{
    struct io_uring_sqe *sqe = uring_sqe(q);
    io_uring_prep_read(sqe, q->efd, &q->efd_val, sizeof q->efd_val, 0);
    sqe->user_data = 0;
}

/* Copies the reply into e and commits it: at once on e's thread, else through e's queue. */
static ssize_t uring_answer(struct uring_ent *e, const struct iovec *iov, int count)
{
    struct uring_queue *q = e->q;
    struct fuse_out_header oh;
    size_t total = 0, body = 0, skip = sizeof oh;
    char *dst = e->buf + URING_PRE;
    memcpy(&oh, iov[0].iov_base, sizeof oh);
    for (int i = 0; i < count; i++)
        total += iov[i].iov_len;
    if (total - sizeof oh > q->set->payload) {
        oh.error = -EIO;                 /* cannot happen: max_write bounds every reply */
    } else {
        for (int i = 0; i < count; i++) {
            size_t len = iov[i].iov_len;
            const char *src = iov[i].iov_base;
            if (skip) {
                size_t k = len < skip ? len : skip;
                src += k, len -= k, skip -= k;
            }
            memmove(dst + body, src, len);
            body += len;
        }
    }
    if (oh.error)
        body = 0;
    oh.len = (uint32_t)(sizeof oh + body);
    memcpy(e->hdr->in_out, &oh, sizeof oh);
    e->hdr->ring_ent_in_out.payload_sz = (uint32_t)body;
    atomic_store_explicit(&e->unique, 0, memory_order_relaxed);
    if (self == q) {
        uring_prep_cmd(q, e, FUSE_IO_URING_CMD_COMMIT_AND_FETCH);
    } else {
        pthread_mutex_lock(&q->mu);
        e->next = q->done;
        q->done = e;
        pthread_mutex_unlock(&q->mu);
        uint64_t one = 1;
        if (write(q->efd, &one, sizeof one) < 0)
            lsmfs_log(LOG_ERR, "uring: waking queue %d: %s", q->qid, strerror(errno));
    }
    return (ssize_t)total;
}

int lsmfs_uring_reply(const struct iovec *iov, int count, ssize_t *n)
{
    if (count < 1 || iov[0].iov_len < sizeof(struct fuse_out_header))
        return 0;
    uint64_t unique = ((const struct fuse_out_header *)iov[0].iov_base)->unique;
    if (unique == 0)
        return 0;                        /* a notification: /dev/fuse's */
    struct uring_set *s = atomic_load_explicit(&active, memory_order_acquire);
    if (!s)
        return 0;
    /* Most replies come from the ring's own thread, inside fuse_session_process_buf: look in
       its queue first, and in every queue (a worker's reply) only if not there. */
    for (int k = -1; k < s->nq; k++) {
        struct uring_queue *q = k < 0 ? self : &s->q[k];
        if (!q || (k >= 0 && q == self))
            continue;
        for (int j = 0; j < URING_DEPTH; j++)
            if (atomic_load_explicit(&q->ent[j].unique, memory_order_relaxed) == unique) {
                *n = uring_answer(&q->ent[j], iov, count);
                return 1;
            }
    }
    return 0;
}

/* Lays the request in e out as a read of /dev/fuse would, just before the payload, and hands
   it to libfuse. */
static void uring_serve(struct uring_queue *q, struct uring_ent *e)
{
    struct fuse_in_header ih;
    memcpy(&ih, e->hdr->in_out, sizeof ih);
    uint32_t psz = e->hdr->ring_ent_in_out.payload_sz;
    e->commit_id = e->hdr->ring_ent_in_out.commit_id;
    if (ih.len < sizeof ih + psz || ih.len - sizeof ih - psz > FUSE_URING_OP_IN_OUT_SZ ||
        psz > q->set->payload) {
        lsmfs_log(LOG_ERR, "uring: queue %d: request %llu (opcode %u) of %u bytes with %u "
                  "of payload: answered EIO", q->qid, (unsigned long long)ih.unique, ih.opcode,
                  ih.len, psz);
        struct fuse_out_header oh = { .len = sizeof oh, .error = -EIO, .unique = ih.unique };
        uring_answer(e, &(struct iovec){ .iov_base = &oh, .iov_len = sizeof oh }, 1);
        return;
    }
    size_t oplen = ih.len - sizeof ih - psz;
    char *p = e->buf + URING_PRE - oplen - sizeof ih;
    memcpy(p, &ih, sizeof ih);
    memcpy(p + sizeof ih, e->hdr->op_in, oplen);
    atomic_store_explicit(&e->unique, ih.unique, memory_order_relaxed);
    struct fuse_buf fb = { .mem = p, .size = ih.len };
    fuse_session_process_buf(q->set->se, &fb);
}

static void uring_report(struct uring_set *s, int err, int refused)
{
    pthread_mutex_lock(&s->mu);
    s->reported++;
    s->refused += refused;
    if (err && !s->err)
        s->err = err;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* Sets up q's ring and registers its entries; counts in *refused those the kernel refused.
   0, or the errno that stopped it (setting up the ring, or the first refusal). An error of
   REGISTER comes back at once, in the submitting call; success brings no completion until a
   request comes, so what is in the ring shortly after is looked at and left there. */
static int uring_register(struct uring_queue *q, int *refused)
{
    struct io_uring_params p = { .flags = IORING_SETUP_SQE128 | IORING_SETUP_SINGLE_ISSUER |
                                          IORING_SETUP_DEFER_TASKRUN };
    int rc = io_uring_queue_init_params(2 * URING_DEPTH + 2, &q->ring, &p);
    if (rc == -EINVAL) {
        p = (struct io_uring_params){ .flags = IORING_SETUP_SQE128 };
        rc = io_uring_queue_init_params(2 * URING_DEPTH + 2, &q->ring, &p);
    }
    *refused = URING_DEPTH;
    if (rc < 0)
        return -rc;
    q->ring_ok = 1;
    for (int j = 0; j < URING_DEPTH; j++)
        uring_prep_cmd(q, &q->ent[j], FUSE_IO_URING_CMD_REGISTER);
    uring_arm_eventfd(q);
    rc = io_uring_submit(&q->ring);
    if (rc < 0)
        return -rc;
    *refused = 0;
    int err = 0;
    struct io_uring_cqe *cqe;
    struct __kernel_timespec ts = { .tv_nsec = 20 * 1000 * 1000 };
    io_uring_wait_cqe_timeout(&q->ring, &cqe, &ts);
    unsigned head;
    io_uring_for_each_cqe(&q->ring, head, cqe) {
        if (cqe->user_data && cqe->res < 0) {
            ((struct uring_ent *)(uintptr_t)cqe->user_data)->dead = 1;
            ++*refused;
            if (!err)
                err = -cqe->res;
        }
    }
    return err;
}

static void uring_loop(struct uring_queue *q)
{
    struct uring_set *s = q->set;
    while (!atomic_load(&s->stop)) {
        int rc = io_uring_submit_and_wait(&q->ring, 1);
        if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
            lsmfs_log(LOG_ERR, "uring: queue %d: %s; its requests wait for unmount",
                      q->qid, strerror(-rc));
            break;
        }
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&q->ring, head, cqe) {
            struct uring_ent *e = (struct uring_ent *)(uintptr_t)cqe->user_data;
            seen++;
            if (!e) {                          /* the eventfd: replies from other threads */
                pthread_mutex_lock(&q->mu);
                struct uring_ent *d = q->done;
                q->done = NULL;
                pthread_mutex_unlock(&q->mu);
                for (; d; d = d->next)
                    uring_prep_cmd(q, d, FUSE_IO_URING_CMD_COMMIT_AND_FETCH);
                if (!atomic_load(&s->stop))
                    uring_arm_eventfd(q);
            } else if (cqe->res < 0) {
                /* ENOTCONN, ECANCELED: the connection is ending */
                e->dead = 1;
            } else {
                q->served++;
                uring_serve(q, e);
            }
        }
        io_uring_cq_advance(&q->ring, seen);
    }
}

static void *uring_main(void *arg)
{
    struct uring_queue *q = arg;
    self = q;
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    CPU_SET(q->qid, &cpus);
    /* a CPU that is offline refuses; its queue then only has to exist */
    pthread_setaffinity_np(pthread_self(), sizeof cpus, &cpus);
    int refused;
    int err = uring_register(q, &refused);
    uring_report(q->set, err, refused);
    /* A thread with entries keeps serving even if others were refused: once every CPU's queue
       has had an entry the kernel sends everything by the rings and never goes back. */
    if (q->ring_ok && refused < URING_DEPTH)
        uring_loop(q);
    if (q->ring_ok)
        io_uring_queue_exit(&q->ring);   /* cancels the entries the kernel still holds */
    return NULL;
}

static void uring_free(struct uring_set *s)
{
    for (int i = 0; i < s->nq; i++) {
        struct uring_queue *q = &s->q[i];
        for (int j = 0; j < URING_DEPTH; j++) {
            free(q->ent[j].hdr);
            free(q->ent[j].buf);
        }
        if (q->efd >= 0)
            close(q->efd);
        pthread_mutex_destroy(&q->mu);
    }
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s->q);
    free(s);
}

static void uring_end(struct uring_set *s)
{
    atomic_store(&s->stop, 1);
    for (int i = 0; i < s->nq; i++) {
        uint64_t one = 1;
        if (s->q[i].started && write(s->q[i].efd, &one, sizeof one) < 0)
            lsmfs_log(LOG_ERR, "uring: waking queue %d: %s", i, strerror(errno));
    }
    for (int i = 0; i < s->nq; i++)
        if (s->q[i].started)
            pthread_join(s->q[i].thread, NULL);
    atomic_store(&active, NULL);
    uint64_t served = 0;
    for (int i = 0; i < s->nq; i++)
        served += s->q[i].served;
    if (served)
        lsmfs_log(LOG_INFO, "uring: %llu requests came by the rings",
                  (unsigned long long)served);
    uring_free(s);
}

int lsmfs_uring_start(struct fuse_session *se, int fd, size_t payload)
{
    long page = sysconf(_SC_PAGESIZE);
    struct uring_set *s = calloc(1, sizeof *s);
    if (!s)
        return ENOMEM;
    s->se = se;
    s->fd = fd;
    s->payload = (payload + (size_t)page - 1) / (size_t)page * (size_t)page;
    s->nq = uring_possible_cpus();
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->q = calloc((size_t)s->nq, sizeof *s->q);
    if (!s->q) {
        s->nq = 0;
        uring_free(s);
        return ENOMEM;
    }
    int err = 0;
    for (int i = 0; i < s->nq; i++) {
        struct uring_queue *q = &s->q[i];
        q->set = s;
        q->qid = i;
        pthread_mutex_init(&q->mu, NULL);
        q->efd = eventfd(0, EFD_CLOEXEC);
        if (q->efd < 0 && !err)
            err = errno;
        for (int j = 0; j < URING_DEPTH; j++) {
            struct uring_ent *e = &q->ent[j];
            e->q = q;
            e->hdr = aligned_alloc((size_t)page, (size_t)page);
            e->buf = aligned_alloc((size_t)page, URING_PRE + s->payload);
            if ((!e->hdr || !e->buf) && !err)
                err = ENOMEM;
            if (e->hdr)
                memset(e->hdr, 0, sizeof *e->hdr);
            e->iov[0] = (struct iovec){ .iov_base = e->hdr, .iov_len = sizeof *e->hdr };
            e->iov[1] = (struct iovec){ .iov_base = e->buf + URING_PRE, .iov_len = s->payload };
        }
    }
    if (err) {
        uring_free(s);
        return err;
    }
    atomic_store(&active, s);
    int started = 0;
    for (int i = 0; i < s->nq && !err; i++)
        if ((err = lsmfs_thread_start(&s->q[i].thread, uring_main, &s->q[i])) == 0) {
            s->q[i].started = 1;
            started++;
        }
    pthread_mutex_lock(&s->mu);
    while (s->reported < started)
        pthread_cond_wait(&s->cv, &s->mu);
    int refused = s->refused + (s->nq - started) * URING_DEPTH;
    if (!err)
        err = s->err;
    pthread_mutex_unlock(&s->mu);
    if (refused == s->nq * URING_DEPTH) {
        /* nothing registered: the kernel serves the connection by /dev/fuse */
        uring_end(s);
        return err ? err : EIO;
    }
    if (err)
        lsmfs_log(LOG_WARNING, "uring: the kernel refused %d of %d ring entries (%s); those "
                  "registered keep serving", refused, s->nq * URING_DEPTH, strerror(err));
    lsmfs_log(LOG_INFO, "uring: serving requests on %d queues of %d entries", s->nq,
              URING_DEPTH);
    return 0;
}

void lsmfs_uring_stop(void)
{
    struct uring_set *s = atomic_load(&active);
    if (s)
        uring_end(s);
}
