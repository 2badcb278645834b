/*
 * ctl_client.c — lsmctl's side of the control socket (protocol: ctl_proto.h): it hands a command
 * to the lsmfs that has the DATADIR mounted and relays what the daemon's run of it prints and its
 * exit status, so a command run on a mounted file system looks as it does offline. Also finds
 * the DATADIR of a mount point, so lsmctl takes either.
 *
 * It never opens the database itself, and it never leaves a command half sent: a request goes out
 * whole or the connection is closed.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "ctl_client.h"
#include "ctl_proto.h"

/* Connects to datadir's control socket; -1 with errno when nothing listens there. */
static int ctl_connect(const char *datadir)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if ((size_t)snprintf(sa.sun_path, sizeof sa.sun_path, "%s/" CTL_SOCKET_NAME, datadir) >=
        sizeof sa.sun_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

int ctl_forward(const char *datadir, int argc, char **argv, FILE *out, FILE *err)
{
    int fd = ctl_connect(datadir);
    if (fd < 0)
        return -1;
    uint8_t h[8];
    ctl_put32(h, CTL_PROTO_VERSION);
    ctl_put32(h + 4, (uint32_t)argc);
    int bad = ctl_send_all(fd, h, sizeof h);
    for (int i = 0; i < argc && !bad; i++) {
        size_t n = strlen(argv[i]);
        ctl_put32(h, (uint32_t)n);
        bad = ctl_send_all(fd, h, 4) || ctl_send_all(fd, argv[i], n);
    }
    int status = -2;
    char buf[65536];
    while (!bad && status == -2) {
        uint8_t fh[5];
        if (ctl_recv_all(fd, fh, sizeof fh) != 0)
            break;
        uint32_t n = ctl_get32(fh + 1);
        if (fh[0] == CTL_FRAME_EXIT) {
            uint8_t s[4];
            if (n == 4 && ctl_recv_all(fd, s, 4) == 0)
                status = (int)(int32_t)ctl_get32(s);
            break;
        }
        FILE *to = fh[0] == CTL_FRAME_OUT ? out : err;
        while (n > 0) {
            size_t part = n < sizeof buf ? n : sizeof buf;
            if (ctl_recv_all(fd, buf, part) != 0) {
                bad = 1;
                break;
            }
            fwrite(buf, 1, part, to);
            n -= (uint32_t)part;
        }
    }
    close(fd);
    fflush(out);
    if (status < 0) {
        fprintf(err, "lsmctl: %s: the lsmfs daemon closed the control connection before the "
                     "command ended\n", datadir);
        return 5;
    }
    return status;
}

/* Undoes the octal escapes (\040 for a space, ...) of a /proc/self/mountinfo field, in place. */
static void ctl_unescape(char *s)
{
    char *w = s;
    for (char *r = s; *r; r++) {
        if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' &&
            r[3] >= '0' && r[3] <= '7') {
            *w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
            r += 3;
        } else {
            *w++ = *r;
        }
    }
    *w = 0;
}

char *ctl_mount_datadir(const char *path)
{
    char *real = realpath(path, NULL);
    FILE *f = real ? fopen("/proc/self/mountinfo", "r") : NULL;
    char *found = NULL, *line = NULL;
    size_t cap = 0;
    while (f && !found && getline(&line, &cap, f) > 0) {
        /* id parent dev root MOUNTPOINT options [optional...] - FSTYPE SOURCE super */
        char *save = NULL, *field[5] = { 0 };
        char *tok = strtok_r(line, " \n", &save);
        for (int i = 0; tok && i < 5; i++, tok = strtok_r(NULL, " \n", &save))
            field[i] = tok;
        while (tok && strcmp(tok, "-") != 0)
            tok = strtok_r(NULL, " \n", &save);
        char *type = tok ? strtok_r(NULL, " \n", &save) : NULL;
        char *source = type ? strtok_r(NULL, " \n", &save) : NULL;
        if (!field[4] || !source || strcmp(type, "fuse.lsmfs") != 0)
            continue;
        ctl_unescape(field[4]);
        ctl_unescape(source);
        if (strcmp(field[4], real) == 0)
            found = strdup(source);
    }
    free(line);
    if (f)
        fclose(f);
    free(real);
    return found;
}
