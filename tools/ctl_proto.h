/*
 * ctl_proto.h — the control socket's protocol: how lsmctl hands a command to a mounted lsmfs.
 *
 * The daemon listens on DATADIR/lsmfs.ctl (AF_UNIX, SOCK_STREAM, mode 0600, in a 0700 directory)
 * and serves only its own user and root (SO_PEERCRED). One connection carries one command:
 *
 *   request   u32 CTL_PROTO_VERSION, u32 argc, then argc times: u32 length, that many bytes
 *             (argv as lsmctl would give ctl_run: [global options...] COMMAND [ARGS...])
 *   response  frames until the status frame: u8 type, u32 length, that many bytes, where type
 *             is 'o' (bytes for standard output), 'e' (for standard error) or 'x' (the command's
 *             exit status as a little-endian i32; the last frame)
 *
 * Integers are little-endian. A request past the limits below, or of another version, gets an 'e'
 * frame saying why and the status CTL_EXIT_USAGE.
 */
#ifndef CTL_PROTO_H
#define CTL_PROTO_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

#define CTL_SOCKET_NAME     "lsmfs.ctl"
#define CTL_PROTO_VERSION   1u
#define CTL_PROTO_MAX_ARGS  4096u
#define CTL_PROTO_MAX_ARG   (1u << 20)     /* bytes of one argument */
#define CTL_FRAME_OUT       'o'
#define CTL_FRAME_ERR       'e'
#define CTL_FRAME_EXIT      'x'

static inline void ctl_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static inline uint32_t ctl_get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Sends all n bytes (never SIGPIPE); 0, or -1 once the peer is gone. */
static inline int ctl_send_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads exactly n bytes; 0, or -1 at an error or the end of the stream. */
static inline int ctl_recv_all(int fd, void *p, size_t n)
{
    uint8_t *b = p;
    while (n) {
        ssize_t r = read(fd, b, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        b += r;
        n -= (size_t)r;
    }
    return 0;
}

#endif /* CTL_PROTO_H */
