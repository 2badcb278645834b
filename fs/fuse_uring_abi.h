/*
 * fuse_uring_abi.h — the kernel's FUSE-over-io_uring interface, for uring.c.
 *
 * Copied by hand from include/uapi/linux/fuse.h of Linux 6.14 (protocol 7.42, where the
 * interface first appeared; unchanged through 6.18), because the <linux/fuse.h> of Debian 12 is
 * the 6.1 one and lacks it. The values are the kernel's: never change them. Linux 6.19+ (7.46)
 * grows fuse_uring_cmd_req with an init union in what is padding here; zero padding keeps the
 * old meaning.
 */
#ifndef LSMFS_FUSE_URING_ABI_H
#define LSMFS_FUSE_URING_ABI_H

#include <stdint.h>

/* Init flag, bit 41: in fuse_init_in.flags2 / fuse_init_out.flags2 as bit 9 (needs
   FUSE_INIT_EXT in flags). Offered only while the fuse module's enable_uring is Y. */
#define LSMFS_FUSE_OVER_IO_URING2  (1u << (41 - 32))

#define FUSE_URING_IN_OUT_HEADER_SZ 128
#define FUSE_URING_OP_IN_OUT_SZ     128

/* Part of fuse_uring_req_header. */
struct fuse_uring_ent_in_out {
    uint64_t flags;
    uint64_t commit_id;          /* the kernel's, echoed in the COMMIT_AND_FETCH command */
    uint32_t payload_sz;         /* bytes used in the payload buffer, either direction */
    uint32_t padding;
    uint64_t reserved;
};

/* The header buffer of a ring entry (iov[0] of REGISTER). */
struct fuse_uring_req_header {
    char in_out[FUSE_URING_IN_OUT_HEADER_SZ]; /* fuse_in_header, then fuse_out_header */
    char op_in[FUSE_URING_OP_IN_OUT_SZ];      /* the request's first argument (may be empty) */
    struct fuse_uring_ent_in_out ring_ent_in_out;
};

/* sqe->cmd_op of an IORING_OP_URING_CMD on /dev/fuse. */
enum fuse_uring_cmd {
    FUSE_IO_URING_CMD_INVALID = 0,
    FUSE_IO_URING_CMD_REGISTER = 1,         /* addr: iovec[2] {header, payload}; len: 2 */
    FUSE_IO_URING_CMD_COMMIT_AND_FETCH = 2, /* the reply is in the entry's buffers */
};

/* In the 80-byte command area of a 128-byte SQE (IORING_SETUP_SQE128). */
struct fuse_uring_cmd_req {
    uint64_t flags;
    uint64_t commit_id;
    uint16_t qid;                /* the queue: the CPU whose requests it takes */
    uint8_t  padding[6];
};

#endif
