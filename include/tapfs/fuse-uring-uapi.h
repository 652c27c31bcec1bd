/* SPDX-License-Identifier: MIT */
/*
 * The FUSE-over-io_uring UAPI (Linux 6.14+, include/uapi/linux/fuse.h,
 * protocol 7.42), for system headers older than it: what tapfs's ring
 * transport (fs/fuse-uring.c) and bench/fuse-uring-null.c speak.
 */
#ifndef TAPFS_FUSE_URING_UAPI_H
#define TAPFS_FUSE_URING_UAPI_H

#include <stdint.h>
#include <linux/fuse.h>

#ifndef FUSE_OVER_IO_URING
#define FUSE_OVER_IO_URING		(1ULL << 41)
#define FUSE_URING_IN_OUT_HEADER_SZ	128
#define FUSE_URING_OP_IN_OUT_SZ		128

struct fuse_uring_ent_in_out {
	uint64_t flags;
	uint64_t commit_id;	/* echoed in fuse_uring_cmd_req.commit_id */
	uint32_t payload_sz;	/* bytes valid in the payload, either way */
	uint32_t padding;
	uint64_t reserved;
};

struct fuse_uring_req_header {
	char in_out[FUSE_URING_IN_OUT_HEADER_SZ];  /* fuse_in/out_header */
	char op_in[FUSE_URING_OP_IN_OUT_SZ];	    /* the opcode's in arg */
	struct fuse_uring_ent_in_out ring_ent_in_out;
};

enum fuse_uring_cmd {
	FUSE_IO_URING_CMD_INVALID = 0,
	FUSE_IO_URING_CMD_REGISTER = 1,
	FUSE_IO_URING_CMD_COMMIT_AND_FETCH = 2,
};

struct fuse_uring_cmd_req {	/* in the SQE128's 80-byte cmd area */
	uint64_t flags;
	uint64_t commit_id;
	uint16_t qid;
	uint8_t padding[6];
};
#ifdef LIB_URING_H
#include <string.h>
#include <sys/uio.h>

/*
 * Prepare sqe (an SQE128) as the FUSE command cmd_op on the ring's
 * registered file 0 (/dev/fuse) for queue qid: a REGISTER hands the
 * kernel the entry's two buffers (iov[2]: header, payload), a
 * COMMIT_AND_FETCH names the request answered by commit_id.
 */
static inline void fuse_uring_prep_cmd(struct io_uring_sqe *sqe,
				       uint32_t cmd_op, uint16_t qid,
				       uint64_t commit_id,
				       const struct iovec *iov, void *data)
{
	struct fuse_uring_cmd_req *cr;

	memset(sqe, 0, 2 * sizeof(*sqe));
	sqe->opcode = IORING_OP_URING_CMD;
	sqe->flags = IOSQE_FIXED_FILE;
	sqe->fd = 0;
	sqe->cmd_op = cmd_op;
	io_uring_sqe_set_data(sqe, data);
	if (cmd_op == FUSE_IO_URING_CMD_REGISTER) {
		sqe->addr = (uintptr_t)iov;
		sqe->len = 2;
	}
	cr = (struct fuse_uring_cmd_req *)sqe->cmd;
	cr->qid = qid;
	cr->commit_id = commit_id;
}
#endif /* LIB_URING_H */

#endif

#endif
