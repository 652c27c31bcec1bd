/* SPDX-License-Identifier: MIT */
/*
 * fuse-uring-null - bench/fuse-null served over FUSE-over-io_uring: what
 * the kernel's FUSE round trip costs when requests travel through
 * io_uring commands instead of read()/writev() on /dev/fuse.
 *
 *   fuse-uring-null [-o size=BYTES] [-o max_background=N]
 *                   [-o transport=uring|dev] [-o depth=N]
 *                   [-o threads=1|queue] [-o taskrun=plain|coop|defer]
 *                   MOUNTPOINT
 *
 * Runs in the foreground, as root (it mounts with mount(2) itself), and
 * serves one regular file, "null", of size BYTES (default 1 GiB): a read
 * replies with zeros, a write is acknowledged without storing anything,
 * flush, fsync and release succeed.  The INIT reply is the one
 * bench/fuse-null's libfuse 3.14 sends (protocol 7.31; ASYNC_READ,
 * ATOMIC_O_TRUNC, BIG_WRITES, ASYNC_DIO, MAX_PAGES, INIT_EXT; max_write
 * 1 MiB, max_pages 256, no readahead, max_background default 128, the
 * congestion threshold at 3/4 of it, time_gran 1), plus
 * FUSE_OVER_IO_URING for transport=uring; "null" is opened with
 * FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES.  It does the FUSE
 * protocol itself (no libfuse: libfuse 3.14 knows neither io_uring nor
 * the flag), so transport=dev (read()/writev() on /dev/fuse, one thread,
 * like fuse-null) is the same code on the old transport: the difference
 * between the two transports of this tool is the transport alone, and
 * the difference between transport=dev and fuse-null is libfuse's own
 * request handling.  Exits 0 when unmounted (umount, fusermount3 -u);
 * SIGINT/SIGTERM unmount lazily and exit the same way.  Built by
 * `make fuse-uring-null`, for bench/bench-transport.sh only.
 *
 * The FUSE-over-io_uring protocol as this file relies on it (kernel
 * 6.14+, fs/fuse/dev_uring.c; Documentation/filesystems/fuse-io-uring.rst):
 *
 * 1. The module parameter fuse.enable_uring must be Y when the INIT reply
 *    arrives, and the reply must carry FUSE_INIT_EXT in flags and
 *    FUSE_OVER_IO_URING (bit 41 of the 64 flag bits: bit 9 of flags2).
 *    INIT itself is read and answered on /dev/fuse.  From then on the
 *    kernel holds every new request back until the ring is ready.  This
 *    tool sets enable_uring to Y if it is not, and puts the old value
 *    back when it exits.
 * 2. An io_uring with 128-byte SQEs (IORING_SETUP_SQE128: the command's
 *    struct fuse_uring_cmd_req lives in the SQE's 80-byte cmd area).
 *    Every command is IORING_OP_URING_CMD on the /dev/fuse fd (here a
 *    registered file), with sqe->cmd_op the FUSE command.
 * 3. FUSE_IO_URING_CMD_REGISTER, once per ring entry: sqe->addr points
 *    to two iovecs, [0] a struct fuse_uring_req_header (at least its
 *    size), [1] the payload buffer (at least the ring's max payload:
 *    max(8 KiB, max_write, max_pages * page size) = 1 MiB here);
 *    cmd.qid is the queue.  The kernel has one queue per possible CPU
 *    and picks a request's queue by the CPU of the task that sends it;
 *    it starts using the ring only once every queue has at least one
 *    registered entry.  A REGISTER before the INIT reply is processed
 *    fails with -EAGAIN (resubmitted).
 * 4. A REGISTER (or COMMIT_AND_FETCH) completes (cqe res 0) when a
 *    request has been put in its entry: fuse_in_header in
 *    header.in_out, the opcode's fixed argument (fuse_read_in,
 *    fuse_write_in, ...) in header.op_in, the rest (a LOOKUP's name, a
 *    WRITE's data) in the payload, and header.ring_ent_in_out.commit_id
 *    and .payload_sz.
 * 5. The reply: fuse_out_header in header.in_out (unique, error; len is
 *    not used), the reply's arguments (fuse_entry_out, a READ's data,
 *    ...) in the payload and their size in ring_ent_in_out.payload_sz,
 *    then FUSE_IO_URING_CMD_COMMIT_AND_FETCH with cmd.commit_id = the
 *    request's commit_id and cmd.qid: the kernel takes the reply while
 *    the SQE is submitted and the same entry waits for the next request.
 * 6. FORGET and INTERRUPT still come through /dev/fuse (a second thread
 *    reads it here); notifications would have to be written there too.
 * 7. On unmount the kernel completes the waiting entries with -ENOTCONN
 *    and fails later commits the same way; read() on /dev/fuse returns
 *    ENODEV.  The tool exits when every entry has come back.
 *
 * threads=1 (the default): one thread serves every queue on one ring: it
 * waits in io_uring_enter for at least one completion, answers every
 * request that came in, and submits all the commits at the next wait, as
 * tapfs's one-thread engine loop would.  threads=queue: one ring and one
 * thread per queue, pinned to the queue's CPU (libfuse 3.18's model).
 * depth=N: ring entries per queue (default 32).  taskrun= picks how the
 * kernel runs the ring's task work (which delivers each request):
 * plain (default, as libfuse), coop (IORING_SETUP_COOP_TASKRUN |
 * TASKRUN_FLAG) or defer (SINGLE_ISSUER | DEFER_TASKRUN).  The main
 * thread reads /dev/fuse meanwhile and takes SIGINT/SIGTERM.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <liburing.h>
#include <linux/fuse.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <tapfs/fuse-uring-uapi.h>

#define NULL_INO		2
#define NULL_NAME		"null"
#define NULL_MAX_IO		(1u << 20)
#define NULL_MAX_PAGES		256	/* NULL_MAX_IO in 4 KiB pages */
#define NULL_DEFAULT_SIZE	(1ull << 30)
#define NULL_DEFAULT_BG		128
#define NULL_DEFAULT_DEPTH	32
#define NULL_MAX_DEPTH		1024
#define NULL_ATTR_TIMEOUT	3600
/* What bench/fuse-null's libfuse 3.14 answers to this kernel's INIT. */
#define NULL_PROTO_MINOR	31
#define NULL_INIT_FLAGS		(FUSE_ASYNC_READ | FUSE_ATOMIC_O_TRUNC | \
				 FUSE_BIG_WRITES | FUSE_ASYNC_DIO | \
				 FUSE_MAX_PAGES | FUSE_INIT_EXT)
/* A /dev/fuse read buffer: a header, a fuse_write_in and max_write. */
#define NULL_DEV_BUFSIZE	(NULL_MAX_IO + 4096)
#define NULL_URING_PARAM	"/sys/module/fuse/parameters/enable_uring"
#define ARRAY_SIZE(a)		(sizeof(a) / sizeof((a)[0]))

enum null_transport { NULL_DEV, NULL_URING };

/* How the kernel runs a ring's task work (io_uring_setup flags). */
enum null_taskrun {
	NULL_TASKRUN_PLAIN,	/* none: signal-like notification */
	NULL_TASKRUN_COOP,	/* COOP_TASKRUN | TASKRUN_FLAG */
	NULL_TASKRUN_DEFER,	/* SINGLE_ISSUER | DEFER_TASKRUN */
};

struct null_opts {
	unsigned long long size;
	unsigned max_background;
	unsigned depth;			/* ring entries per queue */
	enum null_transport transport;
	enum null_taskrun taskrun;
	bool thread_per_queue;		/* else one thread for all queues */
	const char *mountpoint;
};

/* One request, wherever it came from. */
struct null_req {
	const struct fuse_in_header *in;
	const void *op_in;		/* the opcode's fixed argument */
	const char *payload;		/* what follows it */
	size_t payload_len;
};

/* Scratch space for a reply's fixed-size argument. */
union null_out {
	struct fuse_init_out init;
	struct fuse_entry_out entry;
	struct fuse_attr_out attr;
	struct fuse_open_out open;
	struct fuse_write_out write;
	struct fuse_statfs_out statfs;
};

/* A reply: error, or len bytes at data (null_zeros for a READ). */
struct null_reply {
	int error;			/* 0 or -errno */
	bool none;			/* FORGET, INTERRUPT: no reply */
	const void *data;
	size_t len;
};

/* A READ's reply on /dev/fuse: never written to. */
static const char null_zeros[NULL_MAX_IO];

/* Set by SIGINT/SIGTERM; the serving loops unmount when they see it. */
static volatile sig_atomic_t null_stop;

/* ---- the file system ------------------------------------------------- */

static void null_attr(const struct null_opts *o, uint64_t ino,
		      struct fuse_attr *a)
{
	memset(a, 0, sizeof(*a));
	a->ino = ino;
	if (ino == FUSE_ROOT_ID) {
		a->mode = S_IFDIR | 0755;
		a->nlink = 2;
	} else {
		a->mode = S_IFREG | 0600;
		a->nlink = 1;
		a->size = o->size;
		a->blocks = o->size / 512;
	}
	a->blksize = 4096;
}

static bool null_known(uint64_t ino)
{
	return ino == FUSE_ROOT_ID || ino == NULL_INO;
}

static size_t null_clamp(const struct null_opts *o, size_t len, uint64_t off)
{
	if (off >= o->size)
		return 0;
	if (len > o->size - off)
		len = o->size - off;
	return len;
}

/* Fills r with the reply's argument (not for INIT: null_init). */
static void null_dispatch(const struct null_opts *o, const struct null_req *q,
			  union null_out *out, struct null_reply *r)
{
	const struct fuse_in_header *in = q->in;

	memset(r, 0, sizeof(*r));
	switch (in->opcode) {
	case FUSE_LOOKUP:
		if (in->nodeid != FUSE_ROOT_ID ||
		    strnlen(q->payload, q->payload_len) != strlen(NULL_NAME) ||
		    memcmp(q->payload, NULL_NAME, strlen(NULL_NAME))) {
			r->error = -ENOENT;
			return;
		}
		memset(&out->entry, 0, sizeof(out->entry));
		out->entry.nodeid = NULL_INO;
		out->entry.entry_valid = NULL_ATTR_TIMEOUT;
		out->entry.attr_valid = NULL_ATTR_TIMEOUT;
		null_attr(o, NULL_INO, &out->entry.attr);
		r->data = &out->entry;
		r->len = sizeof(out->entry);
		return;
	case FUSE_GETATTR:
		if (!null_known(in->nodeid)) {
			r->error = -ENOENT;
			return;
		}
		memset(&out->attr, 0, sizeof(out->attr));
		out->attr.attr_valid = NULL_ATTR_TIMEOUT;
		null_attr(o, in->nodeid, &out->attr.attr);
		r->data = &out->attr;
		r->len = sizeof(out->attr);
		return;
	case FUSE_OPEN:
		if (in->nodeid != NULL_INO) {
			r->error = null_known(in->nodeid) ? -EISDIR : -ENOENT;
			return;
		}
		memset(&out->open, 0, sizeof(out->open));
		out->open.open_flags = FOPEN_DIRECT_IO |
				       FOPEN_PARALLEL_DIRECT_WRITES;
		r->data = &out->open;
		r->len = sizeof(out->open);
		return;
	case FUSE_READ: {
		const struct fuse_read_in *ri = q->op_in;
		size_t len = null_clamp(o, ri->size, ri->offset);

		r->data = null_zeros;
		r->len = len > NULL_MAX_IO ? NULL_MAX_IO : len;
		return;
	}
	case FUSE_WRITE: {
		const struct fuse_write_in *wi = q->op_in;
		size_t len = null_clamp(o, wi->size, wi->offset);

		if (wi->size && !len) {
			r->error = -EFBIG;
			return;
		}
		memset(&out->write, 0, sizeof(out->write));
		out->write.size = len;
		r->data = &out->write;
		r->len = sizeof(out->write);
		return;
	}
	case FUSE_STATFS:
		memset(&out->statfs, 0, sizeof(out->statfs));
		out->statfs.st.namelen = 255;
		out->statfs.st.bsize = 512;
		r->data = &out->statfs;
		r->len = sizeof(out->statfs);
		return;
	case FUSE_FLUSH:
	case FUSE_FSYNC:
	case FUSE_RELEASE:
	case FUSE_OPENDIR:	/* an empty fuse_open_out would do too */
	case FUSE_RELEASEDIR:
		if (in->opcode == FUSE_OPENDIR) {
			memset(&out->open, 0, sizeof(out->open));
			r->data = &out->open;
			r->len = sizeof(out->open);
		}
		return;
	case FUSE_FORGET:
	case FUSE_BATCH_FORGET:
	case FUSE_INTERRUPT:	/* nothing here blocks: nothing to cancel */
		r->none = true;
		return;
	default:
		r->error = -ENOSYS;
		return;
	}
}

/* The size of an opcode's fixed argument on /dev/fuse (before payload). */
static size_t null_op_in_size(uint32_t opcode)
{
	switch (opcode) {
	case FUSE_READ:		return sizeof(struct fuse_read_in);
	case FUSE_WRITE:	return sizeof(struct fuse_write_in);
	default:		return 0;	/* LOOKUP: the name at once */
	}
}

/* ---- /dev/fuse ------------------------------------------------------- */

/* Writes the reply to request unique; returns 0 or -errno. */
static int null_dev_reply(int fd, uint64_t unique, const struct null_reply *r)
{
	struct fuse_out_header oh = {
		.unique = unique,
		.error = r->error,
	};
	struct iovec iov[2] = {
		{ .iov_base = &oh, .iov_len = sizeof(oh) },
		{ .iov_base = (void *)r->data, .iov_len = r->len },
	};
	int n = r->error || !r->len ? 1 : 2;

	oh.len = sizeof(oh) + (n == 2 ? r->len : 0);
	if (writev(fd, iov, n) < 0) {
		/* ENOENT: the request was interrupted meanwhile. */
		if (errno == ENOENT)
			return 0;
		return -errno;
	}
	return 0;
}

/*
 * Reads one request into buf; returns its length, 0 when the connection
 * is gone (unmounted), or -errno.
 */
static ssize_t null_dev_read(const struct null_opts *o, int fd, char *buf)
{
	ssize_t n;

	for (;;) {
		n = read(fd, buf, NULL_DEV_BUFSIZE);
		if (n >= (ssize_t)sizeof(struct fuse_in_header))
			return n;
		if (n >= 0) {
			fprintf(stderr, "fuse-uring-null: short read of %zd "
				"bytes from /dev/fuse\n", n);
			return -EIO;
		}
		if (errno == ENODEV)
			return 0;
		if (errno == EINTR && null_stop && o->mountpoint) {
			umount2(o->mountpoint, MNT_DETACH);
			continue;
		}
		if (errno != EINTR && errno != ENOENT && errno != EAGAIN)
			return -errno;
	}
}

/*
 * Serves /dev/fuse until unmount, counting the requests in *served;
 * returns 0 or -errno.
 */
static int null_dev_loop(const struct null_opts *o, int fd, char *buf,
			 unsigned long long *served)
{
	for (;;) {
		const struct fuse_in_header *in = (const void *)buf;
		union null_out out;
		struct null_reply r;
		struct null_req q;
		size_t hdr;
		ssize_t n;
		int err;

		n = null_dev_read(o, fd, buf);
		if (n <= 0)
			return n;
		hdr = null_op_in_size(in->opcode);
		if ((size_t)n < sizeof(*in) + hdr || in->len != (size_t)n) {
			fprintf(stderr, "fuse-uring-null: opcode %u: %zd bytes "
				"read, header says %u\n", in->opcode, n, in->len);
			return -EIO;
		}
		q.in = in;
		q.op_in = buf + sizeof(*in);
		q.payload = buf + sizeof(*in) + hdr;
		q.payload_len = n - sizeof(*in) - hdr;
		(*served)++;
		null_dispatch(o, &q, &out, &r);
		if (r.none)
			continue;
		err = null_dev_reply(fd, in->unique, &r);
		if (err == -ENODEV)
			return 0;
		if (err) {
			fprintf(stderr, "fuse-uring-null: reply to opcode %u: "
				"%s\n", in->opcode, strerror(-err));
			return err;
		}
	}
}

/* Reads INIT and answers it; returns 0 or -errno. */
static int null_init(const struct null_opts *o, int fd, char *buf)
{
	const struct fuse_in_header *in = (const void *)buf;
	const struct fuse_init_in *ii = (const void *)(in + 1);
	struct fuse_init_out io;
	struct null_reply r = { .data = &io, .len = sizeof(io) };
	uint64_t want = NULL_INIT_FLAGS;
	ssize_t n;

	n = null_dev_read(o, fd, buf);
	if (n <= 0)
		return n ? (int)n : -ENODEV;
	if (in->opcode != FUSE_INIT ||
	    (size_t)n < sizeof(*in) + sizeof(*ii)) {
		fprintf(stderr, "fuse-uring-null: first request: opcode %u "
			"(%zd bytes), not INIT\n", in->opcode, n);
		return -EPROTO;
	}
	if (ii->major != FUSE_KERNEL_VERSION) {
		fprintf(stderr, "fuse-uring-null: kernel FUSE protocol %u.%u, "
			"need %u.x\n", ii->major, ii->minor,
			FUSE_KERNEL_VERSION);
		return -EPROTO;
	}
	if (o->transport == NULL_URING)
		want |= FUSE_OVER_IO_URING;
	memset(&io, 0, sizeof(io));
	io.major = FUSE_KERNEL_VERSION;
	io.minor = NULL_PROTO_MINOR;
	io.max_readahead = 0;
	/* What we want, of what the kernel offers (flags2 only with EXT). */
	io.flags = want & ii->flags;
	if (ii->flags & FUSE_INIT_EXT)
		io.flags2 = (want >> 32) & ii->flags2;
	io.max_background = o->max_background;
	io.congestion_threshold = o->max_background * 3 / 4;
	io.max_write = NULL_MAX_IO;
	io.time_gran = 1;
	io.max_pages = NULL_MAX_PAGES;
	if (o->transport == NULL_URING &&
	    !(io.flags2 & (FUSE_OVER_IO_URING >> 32))) {
		fprintf(stderr, "fuse-uring-null: the kernel does not offer "
			"FUSE_OVER_IO_URING (protocol %u.%u, flags2 %#x)\n",
			ii->major, ii->minor, ii->flags2);
		return -EOPNOTSUPP;
	}
	return null_dev_reply(fd, in->unique, &r);
}

/* ---- io_uring -------------------------------------------------------- */

struct null_ent {
	struct fuse_uring_req_header *hdr;
	char *payload;
	size_t dirty;			/* payload bytes not known zero */
	struct iovec iov[2];		/* for REGISTER */
	uint16_t qid;
	bool resubmit_register;
};

/* A ring and the thread that serves it; owned by that thread. */
struct null_ring {
	const struct null_opts *o;
	int fd;				/* /dev/fuse */
	unsigned first_qid;		/* serves queues first_qid.. */
	unsigned nr_queues;		/* ..first_qid + nr_queues - 1 */
	int cpu;			/* pinned to this CPU, or -1 */
	pthread_t tid;
	int err;			/* the thread's result */
	struct io_uring ring;
	struct null_ent *ent;
	unsigned nr_ent;
	unsigned live;			/* entries the kernel still holds */
	size_t payload_sz;
	unsigned long long served;	/* requests answered on the ring */
};

static void null_sqe_cmd(struct io_uring_sqe *sqe, struct null_ent *e,
			 uint32_t cmd_op, uint64_t commit_id)
{
	fuse_uring_prep_cmd(sqe, cmd_op, e->qid, commit_id, e->iov, e);
}

/* Prepares the SQE of e's next command; -EIO if the SQ is full. */
static int null_queue_cmd(struct null_ring *nr, struct null_ent *e,
			  uint32_t cmd_op, uint64_t commit_id)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&nr->ring);

	if (!sqe) {
		/* One SQE per entry: cannot happen. */
		fprintf(stderr, "fuse-uring-null: submission queue full\n");
		return -EIO;
	}
	null_sqe_cmd(sqe, e, cmd_op, commit_id);
	return 0;
}

/* Serves the request in e and queues its commit. */
static int null_ring_serve(const struct null_opts *o, struct null_ring *nr,
			   struct null_ent *e)
{
	struct fuse_uring_req_header *h = e->hdr;
	struct fuse_uring_ent_in_out *eio = &h->ring_ent_in_out;
	struct fuse_in_header in;
	struct fuse_out_header *oh = (void *)h->in_out;
	union null_out out;
	struct null_reply r;
	struct null_req q;
	uint64_t commit_id = eio->commit_id;

	memcpy(&in, h->in_out, sizeof(in));
	q.in = &in;
	q.op_in = h->op_in;
	q.payload = e->payload;
	q.payload_len = eio->payload_sz;
	if (q.payload_len > nr->payload_sz)
		q.payload_len = nr->payload_sz;
	if (q.payload_len > e->dirty)
		e->dirty = q.payload_len;
	null_dispatch(o, &q, &out, &r);
	if (r.none)	/* the ring carries no FORGET: keep it going anyway */
		r.error = 0;
	if (r.error || r.none) {
		eio->payload_sz = 0;
	} else if (r.data == null_zeros) {
		memset(e->payload, 0, r.len < e->dirty ? r.len : e->dirty);
		if (r.len >= e->dirty)
			e->dirty = 0;
		eio->payload_sz = r.len;
	} else {
		memcpy(e->payload, r.data, r.len);
		if (r.len > e->dirty)
			e->dirty = r.len;
		eio->payload_sz = r.len;
	}
	memset(oh, 0, sizeof(*oh));
	oh->unique = in.unique;
	oh->error = r.error;
	oh->len = sizeof(*oh) + eio->payload_sz;
	return null_queue_cmd(nr, e, FUSE_IO_URING_CMD_COMMIT_AND_FETCH,
			      commit_id);
}

static void *null_map(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

static void null_ring_free(struct null_ring *nr)
{
	unsigned i;

	if (!nr->ent)
		return;
	for (i = 0; i < nr->nr_ent; i++) {
		if (nr->ent[i].hdr)
			munmap(nr->ent[i].hdr, 4096);
		if (nr->ent[i].payload)
			munmap(nr->ent[i].payload, nr->payload_sz);
	}
	free(nr->ent);
	nr->ent = NULL;
}

/*
 * Sets up nr's ring for its queues, o->depth entries each, and submits
 * every REGISTER; returns 0 or -errno.
 */
static int null_ring_start(struct null_ring *nr)
{
	const struct null_opts *o = nr->o;
	struct io_uring_params p;
	unsigned i;
	int err;

	nr->nr_ent = nr->nr_queues * o->depth;
	nr->payload_sz = NULL_MAX_IO;	/* = max_pages * 4 KiB = max_write */
	nr->ent = calloc(nr->nr_ent, sizeof(*nr->ent));
	if (!nr->ent)
		return -ENOMEM;
	for (i = 0; i < nr->nr_ent; i++) {
		struct null_ent *e = &nr->ent[i];

		e->qid = nr->first_qid + i / o->depth;
		e->hdr = null_map(4096);
		e->payload = null_map(nr->payload_sz);
		if (!e->hdr || !e->payload)
			return -ENOMEM;
		e->iov[0].iov_base = e->hdr;
		e->iov[0].iov_len = sizeof(*e->hdr);
		e->iov[1].iov_base = e->payload;
		e->iov[1].iov_len = nr->payload_sz;
	}
	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_SQE128 | IORING_SETUP_CQSIZE;
	if (o->taskrun == NULL_TASKRUN_COOP)
		p.flags |= IORING_SETUP_COOP_TASKRUN |
			   IORING_SETUP_TASKRUN_FLAG;
	else if (o->taskrun == NULL_TASKRUN_DEFER)
		p.flags |= IORING_SETUP_SINGLE_ISSUER |
			   IORING_SETUP_DEFER_TASKRUN;
	p.cq_entries = 2 * nr->nr_ent;
	err = io_uring_queue_init_params(nr->nr_ent, &nr->ring, &p);
	if (err) {
		fprintf(stderr, "fuse-uring-null: io_uring_setup (%u "
			"entries, SQE128): %s\n", nr->nr_ent, strerror(-err));
		return err;
	}
	err = io_uring_register_files(&nr->ring, &nr->fd, 1);
	if (err) {
		fprintf(stderr, "fuse-uring-null: registering /dev/fuse "
			"with the ring: %s\n", strerror(-err));
		return err;
	}
	for (i = 0; i < nr->nr_ent; i++) {
		err = null_queue_cmd(nr, &nr->ent[i],
				     FUSE_IO_URING_CMD_REGISTER, 0);
		if (err)
			return err;
	}
	nr->live = nr->nr_ent;
	err = io_uring_submit(&nr->ring);
	return err < 0 ? err : 0;
}

/* Serves the ring until every entry is gone; returns 0 or -errno. */
static int null_ring_loop(struct null_ring *nr)
{
	const struct null_opts *o = nr->o;
	int first_err = 0;

	while (nr->live) {
		struct io_uring_cqe *cqe;
		unsigned head, seen = 0;
		int err;

		err = io_uring_submit_and_wait(&nr->ring, 1);
		if (err == -EINTR)
			continue;	/* signals: the /dev/fuse thread's */
		if (err < 0) {
			fprintf(stderr, "fuse-uring-null: io_uring_enter: "
				"%s\n", strerror(-err));
			return err;
		}
		io_uring_for_each_cqe(&nr->ring, head, cqe) {
			struct null_ent *e = io_uring_cqe_get_data(cqe);

			seen++;
			if (cqe->res == 0) {
				nr->served++;
				err = null_ring_serve(o, nr, e);
			} else if (cqe->res == -EAGAIN) {
				/* REGISTER before INIT was processed */
				err = null_queue_cmd(nr, e,
					FUSE_IO_URING_CMD_REGISTER, 0);
			} else {
				/* -ENOTCONN: unmounted; others: logged */
				if (cqe->res != -ENOTCONN &&
				    cqe->res != -ECONNABORTED && !first_err) {
					first_err = cqe->res;
					fprintf(stderr, "fuse-uring-null: "
						"ring entry (queue %u): %s\n",
						e->qid, strerror(-cqe->res));
				}
				nr->live--;
				err = 0;
			}
			if (err)
				return err;
		}
		io_uring_cq_advance(&nr->ring, seen);
	}
	return first_err;
}

/* ---- setup ----------------------------------------------------------- */

/* A ring thread: sets its ring up and serves it until unmount. */
static void *null_ring_thread(void *arg)
{
	struct null_ring *nr = arg;
	cpu_set_t cpus;

	if (nr->cpu >= 0) {
		CPU_ZERO(&cpus);
		CPU_SET(nr->cpu, &cpus);
		if (sched_setaffinity(0, sizeof(cpus), &cpus))
			fprintf(stderr, "fuse-uring-null: pinning queue %u's "
				"thread to CPU %d: %s\n", nr->first_qid,
				nr->cpu, strerror(errno));
	}
	nr->err = null_ring_start(nr);
	if (!nr->err)
		nr->err = null_ring_loop(nr);
	if (nr->err)	/* let the other threads go too */
		umount2(nr->o->mountpoint, MNT_DETACH);
	return NULL;
}

/* fuse.enable_uring: reads it into *old ('Y'/'N'), sets it to Y. */
static int null_enable_uring(char *old)
{
	char c = 0;
	int fd = open(NULL_URING_PARAM, O_RDWR | O_CLOEXEC);

	if (fd < 0 || read(fd, &c, 1) != 1) {
		fprintf(stderr, "fuse-uring-null: %s: %s (a kernel without "
			"CONFIG_FUSE_IO_URING?)\n", NULL_URING_PARAM,
			strerror(errno));
		if (fd >= 0)
			close(fd);
		return -EOPNOTSUPP;
	}
	*old = c;
	if (c != 'Y' && pwrite(fd, "Y", 1, 0) != 1) {
		fprintf(stderr, "fuse-uring-null: writing Y to %s: %s\n",
			NULL_URING_PARAM, strerror(errno));
		close(fd);
		return -EPERM;
	}
	close(fd);
	if (c != 'Y')
		fprintf(stderr, "fuse-uring-null: %s was %c, set to Y until "
			"exit\n", NULL_URING_PARAM, c);
	return 0;
}

static void null_restore_uring(char old)
{
	int fd;

	if (old == 'Y' || !old)
		return;
	fd = open(NULL_URING_PARAM, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, &old, 1) != 1)
		fprintf(stderr, "fuse-uring-null: restoring %s to %c: %s\n",
			NULL_URING_PARAM, old, strerror(errno));
	if (fd >= 0)
		close(fd);
}

static void null_on_signal(int sig)
{
	(void)sig;
	null_stop = 1;
}

static const char *const null_taskrun_names[] = {
	[NULL_TASKRUN_PLAIN] = "plain",
	[NULL_TASKRUN_COOP] = "coop",
	[NULL_TASKRUN_DEFER] = "defer",
};

static int null_parse_opt(struct null_opts *o, const char *opt)
{
	unsigned i;
	char *end;

	if (!strncmp(opt, "size=", 5)) {
		o->size = strtoull(opt + 5, &end, 0);
		return *end || !o->size ? -1 : 0;
	}
	if (!strncmp(opt, "max_background=", 15)) {
		unsigned long v = strtoul(opt + 15, &end, 0);

		o->max_background = v;
		return *end || v < 1 || v > 65535 ? -1 : 0;
	}
	if (!strncmp(opt, "depth=", 6)) {
		unsigned long v = strtoul(opt + 6, &end, 0);

		o->depth = v;
		return *end || v < 1 || v > NULL_MAX_DEPTH ? -1 : 0;
	}
	if (!strcmp(opt, "threads=1") || !strcmp(opt, "threads=queue")) {
		o->thread_per_queue = !strcmp(opt, "threads=queue");
		return 0;
	}
	if (!strncmp(opt, "taskrun=", 8)) {
		for (i = 0; i < ARRAY_SIZE(null_taskrun_names); i++) {
			if (!strcmp(opt + 8, null_taskrun_names[i])) {
				o->taskrun = i;
				return 0;
			}
		}
		return -1;
	}
	if (!strcmp(opt, "transport=uring")) {
		o->transport = NULL_URING;
		return 0;
	}
	if (!strcmp(opt, "transport=dev")) {
		o->transport = NULL_DEV;
		return 0;
	}
	return -1;
}

static int null_parse(struct null_opts *o, int argc, char **argv)
{
	int i;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-o") && i + 1 < argc) {
			char *list = strdup(argv[++i]), *save = NULL, *opt;
			int bad = 0;

			if (!list)
				return -1;
			for (opt = strtok_r(list, ",", &save); opt && !bad;
			     opt = strtok_r(NULL, ",", &save)) {
				bad = null_parse_opt(o, opt);
				if (bad)
					fprintf(stderr, "fuse-uring-null: bad "
						"option '%s' (size=BYTES>0, "
						"max_background=1..65535, "
						"depth=1..%u, transport="
						"uring|dev, threads=1|queue, "
						"taskrun=plain|coop|defer)\n",
						opt,
						NULL_MAX_DEPTH);
			}
			free(list);
			if (bad)
				return -1;
		} else if (!strcmp(argv[i], "-f")) {
			continue;	/* always in the foreground */
		} else if (argv[i][0] != '-' && !o->mountpoint) {
			o->mountpoint = argv[i];
		} else {
			return -1;
		}
	}
	return o->mountpoint ? 0 : -1;
}

/* Opens /dev/fuse and mounts it on o->mountpoint; returns the fd. */
static int null_mount(const struct null_opts *o)
{
	char data[128];
	int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);

	if (fd < 0) {
		fprintf(stderr, "fuse-uring-null: /dev/fuse: %s\n",
			strerror(errno));
		return -1;
	}
	snprintf(data, sizeof(data), "fd=%d,rootmode=40000,user_id=%u,"
		 "group_id=%u", fd, getuid(), getgid());
	if (mount("fuse-uring-null", o->mountpoint, "fuse.fuse-uring-null",
		  MS_NOSUID | MS_NODEV, data)) {
		fprintf(stderr, "fuse-uring-null: mount on %s: %s (root "
			"needed)\n", o->mountpoint, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/*
 * Serves the ring (one thread for every queue, or one per queue pinned
 * to its CPU) while this thread reads /dev/fuse (FORGET, INTERRUPT, and
 * the signals); returns 0 or -errno once unmounted.
 */
static int null_serve_uring(const struct null_opts *o, int fd, char *buf)
{
	long ncpu = sysconf(_SC_NPROCESSORS_CONF);
	unsigned nthreads, i, started = 0;
	unsigned long long ring_served = 0, dev_served = 0;
	struct null_ring *rings;
	sigset_t sigs, old;
	int err = 0;

	/* The kernel has a queue per possible CPU. */
	if (ncpu < 1 || ncpu > 65535) {
		fprintf(stderr, "fuse-uring-null: %ld CPUs?\n", ncpu);
		return -EINVAL;
	}
	nthreads = o->thread_per_queue ? ncpu : 1;
	rings = calloc(nthreads, sizeof(*rings));
	if (!rings)
		return -ENOMEM;
	/* SIGINT and SIGTERM stay with this thread. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, &old);
	for (i = 0; i < nthreads; i++) {
		struct null_ring *nr = &rings[i];

		nr->o = o;
		nr->fd = fd;
		nr->ring.ring_fd = -1;
		nr->first_qid = o->thread_per_queue ? i : 0;
		nr->nr_queues = o->thread_per_queue ? 1 : ncpu;
		nr->cpu = o->thread_per_queue ? (int)i : -1;
		err = -pthread_create(&nr->tid, NULL, null_ring_thread, nr);
		if (err)
			break;
		started++;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err)
		umount2(o->mountpoint, MNT_DETACH);
	/* Until unmounted (the ring threads unmount on failure). */
	err = null_dev_loop(o, fd, buf, &dev_served);
	for (i = 0; i < started; i++) {
		pthread_join(rings[i].tid, NULL);
		if (!err)
			err = rings[i].err;
		ring_served += rings[i].served;
		if (rings[i].ring.ring_fd >= 0)
			io_uring_queue_exit(&rings[i].ring);
		null_ring_free(&rings[i]);
	}
	free(rings);
	fprintf(stderr, "fuse-uring-null: served %llu requests on the ring, "
		"%llu on /dev/fuse (%ld queues of %u entries, %u thread%s)\n",
		ring_served, dev_served, ncpu, o->depth, nthreads,
		nthreads > 1 ? "s" : "");
	return err;
}

int main(int argc, char **argv)
{
	struct null_opts o = {
		.size = NULL_DEFAULT_SIZE,
		.max_background = NULL_DEFAULT_BG,
		.depth = NULL_DEFAULT_DEPTH,
		.transport = NULL_URING,
	};
	struct sigaction sa;
	char old_uring = 0;
	char *buf;
	int fd, err;

	if (null_parse(&o, argc, argv)) {
		fprintf(stderr, "usage: %s [-o size=BYTES] "
			"[-o max_background=N] [-o transport=uring|dev] "
			"[-o depth=N] [-o threads=1|queue] "
			"[-o taskrun=plain|coop|defer] MOUNTPOINT\n", argv[0]);
		return 2;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = null_on_signal;	/* no SA_RESTART: wake the loops */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	buf = null_map(NULL_DEV_BUFSIZE);
	if (!buf)
		return 1;
	if (o.transport == NULL_URING && null_enable_uring(&old_uring))
		return 1;
	fd = null_mount(&o);
	if (fd < 0) {
		null_restore_uring(old_uring);
		return 1;
	}
	err = null_init(&o, fd, buf);
	if (err) {
		fprintf(stderr, "fuse-uring-null: INIT: %s\n", strerror(-err));
		umount2(o.mountpoint, MNT_DETACH);
	} else if (o.transport == NULL_URING) {
		err = null_serve_uring(&o, fd, buf);
	} else {
		unsigned long long served = 0;

		err = null_dev_loop(&o, fd, buf, &served);
		fprintf(stderr, "fuse-uring-null: served %llu requests on "
			"/dev/fuse\n", served);
	}
	close(fd);
	null_restore_uring(old_uring);
	if (err)
		fprintf(stderr, "fuse-uring-null: %s\n", strerror(-err));
	return err ? 1 : 0;
}
