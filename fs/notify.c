/*
 * notify.c — the invalidations lsmfs sends the kernel when a change of its own could leave the
 * kernel's caches stale.
 *
 * What: a queue of "drop the pages and attributes of this inode" notes, and one thread that
 * hands each to libfuse (fuse_lowlevel_notify_inval_inode). Callers only queue: nothing here
 * blocks a request. (Names need no note: the daemon never makes or removes one on its own.)
 *
 * Why so: the kernel keeps file pages across opens, names, negative names, attributes and
 * directory listings for a long time (lsmfs(1), CACHING), which is right because every change
 * goes through the mount and the kernel invalidates what its own requests change. What it cannot
 * know is a change the daemon makes on its own, such as a write from the page cache that the
 * daemon refused. An invalidation takes the kernel's locks on the inode, its pages or its parent
 * directory; a request handler may run while the kernel holds exactly those (a WRITE from
 * write-back holds the page, a CREATE the directory), and it must reply before the kernel lets
 * go. So a handler never notifies itself: it queues, and this thread, which holds no lock of the
 * daemon and serves no request, waits in the kernel for as long as it takes. So the invalidation
 * lands moments after the reply, not before it: the writer's close(2), which reports the failed
 * write-back without asking the daemon, may return first. What opens the file after is safe
 * regardless: an inode with a refused write-back drops its pages at its next open (ops.c).
 *
 * Never: call libfuse's notify functions from a request handler or with any daemon lock held;
 * keep a pointer to an inode (the queue holds node ids, which the kernel may have forgotten by
 * the time a note is sent: it then answers ENOENT, which is fine).
 */
#include "lsmfs.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

struct notify_ent {
    struct notify_ent *next;     /* queue order; guarded by the queue's mu */
    fuse_ino_t node;             /* the inode whose pages and attributes go */
};

struct lsmfs_notify {
    pthread_mutex_t mu;          /* guards all below; a leaf */
    pthread_cond_t  cv;          /* signalled when a note is queued or stop is set */
    struct notify_ent *head, **tail; /* the queue */
    int       stop;              /* the thread should send what is queued and exit */
    pthread_t thread;            /* constant after lsmfs_notify_start */
};

static void notify_send(struct lsmfs *fs, const struct notify_ent *e)
{
    int rc = fuse_lowlevel_notify_inval_inode(fs->se, e->node, 0, 0);   /* all pages, attrs */
    if (rc != 0 && rc != -ENOENT && rc != -ENOTCONN && rc != -ENODEV)
        lsmfs_log(LOG_WARNING, "cannot invalidate the kernel's cache: %s", strerror(-rc));
}

static void *notify_thread(void *arg)
{
    struct lsmfs *fs = arg;
    struct lsmfs_notify *q = fs->notify;
    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (!q->head && !q->stop)
            pthread_cond_wait(&q->cv, &q->mu);
        struct notify_ent *e = q->head;
        if (!e)
            break;   /* stop, and nothing left */
        q->head = e->next;
        if (!q->head)
            q->tail = &q->head;
        pthread_mutex_unlock(&q->mu);
        notify_send(fs, e);
        free(e);
        pthread_mutex_lock(&q->mu);
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

void lsmfs_notify_inode(struct lsmfs *fs, fuse_ino_t node)
{
    struct lsmfs_notify *q = fs->notify;
    if (!q)
        return;
    struct notify_ent *e = malloc(sizeof *e);
    if (!e) {
        lsmfs_log(LOG_WARNING, "out of memory: a kernel cache invalidation is lost");
        return;
    }
    e->next = NULL;
    e->node = node;
    pthread_mutex_lock(&q->mu);
    *q->tail = e;
    q->tail = &e->next;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

int lsmfs_notify_start(struct lsmfs *fs)
{
    struct lsmfs_notify *q = calloc(1, sizeof *q);
    if (!q)
        return ENOMEM;
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    q->tail = &q->head;
    fs->notify = q;
    int rc = lsmfs_thread_start(&q->thread, notify_thread, fs);
    if (rc != 0) {
        fs->notify = NULL;
        pthread_cond_destroy(&q->cv);
        pthread_mutex_destroy(&q->mu);
        free(q);
    }
    return rc;
}

void lsmfs_notify_stop(struct lsmfs *fs)
{
    struct lsmfs_notify *q = fs->notify;
    if (!q)
        return;
    pthread_mutex_lock(&q->mu);
    q->stop = 1;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
    pthread_join(q->thread, NULL);
    fs->notify = NULL;
    pthread_cond_destroy(&q->cv);
    pthread_mutex_destroy(&q->mu);
    free(q);
}
