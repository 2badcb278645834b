/*
 * control.c — the control socket: how lsmctl(1) reaches a mounted file system (protocol:
 * tools/ctl_proto.h). The daemon listens on DATADIR/lsmfs.ctl and runs each command it gets with
 * lsmctl's own code (tools/ctl_cmd.c, tools/ctl_snapshot.c) on the handle it has open, so stats,
 * scans, dumps, checks, backups, compactions and snapshots work while mounted, and print exactly
 * what they print offline.
 *
 * Why only commands that change no key: the kernel caches names, attributes and pages on the
 * promise that this daemon is the only writer; a put or delete that went around the mount would
 * leave them stale. So the commands that write keys (put, del, load, script) are refused here
 * (change files through the mount), and so is repair, which needs the database closed; reads,
 * backups, checks, statistics, compactions and snapshots run.
 *
 * Each connection runs in a thread of its own, so a long dump does not hold up stats. The socket
 * is 0600 in a 0700 directory, and a peer that is neither root nor the daemon's user is refused
 * (SO_PEERCRED). Stop waits for every running command before the database is closed.
 */
#include "lsmfs.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <syslog.h>
#include <unistd.h>

#include "../tools/ctl_cmd.h"
#include "../tools/ctl_proto.h"
#include "../tools/ctl_snapshot.h"

struct lsmfs_control {
    int lfd;                     /* the listening socket; constant */
    char *path;                  /* DATADIR/lsmfs.ctl; constant */
    pthread_t thread;            /* accepts */
    pthread_mutex_t mu;
    pthread_cond_t cv;           /* a command ended */
    int running;                 /* commands being served; guarded by mu */
    int stopping;                /* guarded by mu */
};

struct control_conn {
    struct lsmfs *fs;
    int fd;
};

/* One frame of type t; -1 once the peer is gone. */
static int control_frame(int fd, char t, const void *p, size_t n)
{
    uint8_t h[5];
    h[0] = (uint8_t)t;
    ctl_put32(h + 1, (uint32_t)n);
    return ctl_send_all(fd, h, sizeof h) == 0 && ctl_send_all(fd, p, n) == 0 ? 0 : -1;
}

/* A stdio stream whose bytes go out as frames of one type (fopencookie). */
struct control_stream {
    int fd;
    char type;
};

static ssize_t control_stream_write(void *cookie, const char *buf, size_t n)
{
    struct control_stream *s = cookie;
    return control_frame(s->fd, s->type, buf, n) == 0 ? (ssize_t)n : -1;
}

static FILE *control_stream_open(struct control_stream *s)
{
    cookie_io_functions_t io = { .write = control_stream_write };
    return fopencookie(s, "w", io);
}

/* Reads a request: 0 with *argv (argc strings and a NULL; free with control_free_args), or a
   message for the peer in why. */
static int control_read_request(int fd, int *argc, char ***argv, char *why, size_t wl)
{
    uint8_t h[8];
    if (ctl_recv_all(fd, h, sizeof h) != 0)
        return snprintf(why, wl, "truncated request"), -1;
    uint32_t version = ctl_get32(h), n = ctl_get32(h + 4);
    if (version != CTL_PROTO_VERSION)
        return snprintf(why, wl, "control protocol version %u, this lsmfs speaks %u", version,
                        CTL_PROTO_VERSION), -1;
    if (n == 0 || n > CTL_PROTO_MAX_ARGS)
        return snprintf(why, wl, "%u arguments (1 to %u allowed)", n, CTL_PROTO_MAX_ARGS), -1;
    char **v = calloc(n + 1, sizeof *v);
    if (!v)
        return snprintf(why, wl, "out of memory"), -1;
    for (uint32_t i = 0; i < n; i++) {
        uint8_t l[4];
        uint32_t len = ctl_recv_all(fd, l, 4) == 0 ? ctl_get32(l) : UINT32_MAX;
        if (len > CTL_PROTO_MAX_ARG || !(v[i] = malloc(len + 1)) ||
            ctl_recv_all(fd, v[i], len) != 0) {
            for (uint32_t j = 0; j <= i; j++)
                free(v[j]);
            free(v);
            return snprintf(why, wl, "argument %u is too long or truncated", i + 1), -1;
        }
        v[i][len] = 0;
        if (strlen(v[i]) != len) {      /* a NUL inside: not a C string any command takes */
            for (uint32_t j = 0; j <= i; j++)
                free(v[j]);
            free(v);
            return snprintf(why, wl, "argument %u holds a NUL byte", i + 1), -1;
        }
    }
    *argc = (int)n;
    *argv = v;
    return 0;
}

static void control_free_args(int argc, char **argv)
{
    for (int i = 0; i < argc; i++)
        free(argv[i]);
    free(argv);
}

/* Runs the command, writing its output to out and err; its exit status. */
static int control_run(struct lsmfs *fs, int argc, char **argv, FILE *out, FILE *err)
{
    int c = 0;
    while (c < argc && argv[c][0] == '-')
        c++;
    const char *cmd = c < argc ? argv[c] : "";
    if (strcmp(cmd, "backup") == 0 || strcmp(cmd, "snapshot") == 0) {
        /* A copy holds what was written through the mount, also in files still open: their
           buffers are written back first (fs->ns held for writing keeps inodes from going). */
        pthread_rwlock_wrlock(&fs->ns);
        lsmfs_table_flush_all(fs);
        pthread_rwlock_unlock(&fs->ns);
    }
    if (strcmp(cmd, "snapshot") == 0)
        return ctl_snapshot(fs->db, fs->datadir, argc - c, argv + c, out, err);
    int mode = ctl_command_mode(argc, argv);
    if (mode == CTL_MODE_READ || mode == CTL_MODE_MAINTAIN || mode == CTL_MODE_UNKNOWN)
        return ctl_run_io(fs->db, argc, argv, NULL, out, err);  /* UNKNOWN: it says what is wrong */
    if (mode == CTL_MODE_OFFLINE)
        fprintf(err, "lsmctl: %s: '%s' needs the database closed: unmount it first\n",
                fs->datadir, cmd);
    else
        fprintf(err, "lsmctl: %s is mounted by lsmfs (pid %ld), and '%s' would change keys "
                     "behind the kernel's caches: change files through the mount, or unmount "
                     "first\n", fs->datadir, (long)getpid(), cmd);
    return CTL_EXIT_BUSY;
}

/* Whether the peer may run commands: root or the daemon's own user. */
static int control_peer_ok(int fd)
{
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
        return 0;
    return cred.uid == 0 || cred.uid == geteuid();
}

static void *control_serve(void *arg)
{
    struct control_conn *cc = arg;
    struct lsmfs *fs = cc->fs;
    struct lsmfs_control *ctl = fs->control;
    int fd = cc->fd, argc = 0, status = CTL_EXIT_USAGE;
    char **argv = NULL, why[256];
    free(cc);
    struct control_stream so = { fd, CTL_FRAME_OUT }, se = { fd, CTL_FRAME_ERR };
    FILE *out = control_stream_open(&so), *err = control_stream_open(&se);
    if (!out || !err) {
        status = CTL_EXIT_ERROR;
    } else if (!control_peer_ok(fd)) {
        fprintf(err, "lsmctl: the lsmfs daemon serves only root and its own user\n");
        status = CTL_EXIT_ERROR;
    } else if (control_read_request(fd, &argc, &argv, why, sizeof why) != 0) {
        fprintf(err, "lsmctl: bad control request: %s\n", why);
    } else {
        status = control_run(fs, argc, argv, out, err);
        control_free_args(argc, argv);
    }
    if (out)
        fclose(out);
    if (err)
        fclose(err);
    uint8_t s[4];
    ctl_put32(s, (uint32_t)status);
    control_frame(fd, CTL_FRAME_EXIT, s, sizeof s);
    close(fd);
    pthread_mutex_lock(&ctl->mu);
    ctl->running--;
    pthread_cond_broadcast(&ctl->cv);
    pthread_mutex_unlock(&ctl->mu);
    return NULL;
}

static void *control_main(void *arg)
{
    struct lsmfs *fs = arg;
    struct lsmfs_control *ctl = fs->control;
    /* born with every signal blocked (lsmfs_thread_start); the commands' threads inherit it */
    for (;;) {
        int fd = accept4(ctl->lfd, NULL, NULL, SOCK_CLOEXEC);
        pthread_mutex_lock(&ctl->mu);
        int stop = ctl->stopping;
        pthread_mutex_unlock(&ctl->mu);
        if (stop) {
            if (fd >= 0)
                close(fd);
            break;
        }
        if (fd < 0) {
            if (errno != EINTR && errno != ECONNABORTED)
                usleep(10000);          /* EMFILE and the like: do not spin */
            continue;
        }
        struct control_conn *cc = malloc(sizeof *cc);
        pthread_t t;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        pthread_mutex_lock(&ctl->mu);
        ctl->running++;
        pthread_mutex_unlock(&ctl->mu);
        if (cc) {
            cc->fs = fs;
            cc->fd = fd;
        }
        if (!cc || pthread_create(&t, &at, control_serve, cc) != 0) {
            free(cc);
            close(fd);
            pthread_mutex_lock(&ctl->mu);
            ctl->running--;
            pthread_mutex_unlock(&ctl->mu);
        }
        pthread_attr_destroy(&at);
    }
    return NULL;
}

int lsmfs_control_start(struct lsmfs *fs)
{
    struct lsmfs_control *ctl = calloc(1, sizeof *ctl);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (!ctl)
        return ENOMEM;
    if ((size_t)snprintf(sa.sun_path, sizeof sa.sun_path, "%s/" CTL_SOCKET_NAME, fs->datadir) >=
        sizeof sa.sun_path) {
        free(ctl);
        return ENAMETOOLONG;
    }
    ctl->path = strdup(sa.sun_path);
    /* The database lock is ours, so a socket left here is a dead daemon's. */
    unlink(sa.sun_path);
    ctl->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int err = 0;
    if (!ctl->path || ctl->lfd < 0 || bind(ctl->lfd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        chmod(sa.sun_path, 0600) != 0 || listen(ctl->lfd, 16) != 0)
        err = errno ? errno : ENOMEM;
    pthread_mutex_init(&ctl->mu, NULL);
    pthread_cond_init(&ctl->cv, NULL);
    fs->control = ctl;
    if (!err && (err = lsmfs_thread_start(&ctl->thread, control_main, fs)) != 0)
        unlink(sa.sun_path);
    if (err) {
        if (ctl->lfd >= 0)
            close(ctl->lfd);
        pthread_mutex_destroy(&ctl->mu);
        pthread_cond_destroy(&ctl->cv);
        free(ctl->path);
        free(ctl);
        fs->control = NULL;
    }
    return err;
}

void lsmfs_control_stop(struct lsmfs *fs)
{
    struct lsmfs_control *ctl = fs->control;
    if (!ctl)
        return;
    pthread_mutex_lock(&ctl->mu);
    ctl->stopping = 1;
    pthread_mutex_unlock(&ctl->mu);
    /* Wakes accept: a connection of our own, and shutdown for good measure. */
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", ctl->path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        fd = -1;
    }
    shutdown(ctl->lfd, SHUT_RDWR);
    pthread_join(ctl->thread, NULL);
    if (fd >= 0)
        close(fd);
    unlink(ctl->path);
    close(ctl->lfd);
    pthread_mutex_lock(&ctl->mu);
    while (ctl->running > 0)
        pthread_cond_wait(&ctl->cv, &ctl->mu);
    pthread_mutex_unlock(&ctl->mu);
    pthread_mutex_destroy(&ctl->mu);
    pthread_cond_destroy(&ctl->cv);
    free(ctl->path);
    free(ctl);
    fs->control = NULL;
}
