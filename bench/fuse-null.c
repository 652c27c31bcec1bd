/* SPDX-License-Identifier: MIT */
/*
 * fuse-null - the smallest FUSE daemon that serves one file: the ceiling
 * of the kernel's FUSE path, for bench/bench.sh.
 *
 *   fuse-null [-f] [-o size=BYTES] [-o max_background=N]
 *             [-o backing=FILE [-o sync]] MOUNTPOINT
 *
 * MOUNTPOINT holds one regular file, "null", of size BYTES (default
 * 1 GiB).  A read replies with zeros from one static buffer, a write is
 * acknowledged without storing anything, flush and fsync succeed: no
 * image, no I/O, no allocation per request.  Whatever a client measures
 * through it (directly, or through a loop device over the file) is what
 * the kernel and libfuse's request round trip cost, with nothing behind.
 *
 * With -o backing=FILE ("nullio") the file is FILE, of FILE's size, and
 * reads and writes go to it with O_DIRECT through libaio, in the simplest
 * one-thread way: one epoll on /dev/fuse and the aio eventfd; a fixed
 * array of slots, each a receive buffer placed so that a WRITE's payload
 * is page-aligned (written from there, no copy) and a READ's data lands
 * in the same page-aligned spot (replied from there); the iocbs queued
 * while requests are read are submitted in one io_submit before the
 * loop sleeps; completions are reaped and replied in one pass.  No
 * merging, no request splitting, no statistics, no pools beyond the
 * slots: the floor cost of any one-thread FUSE daemon doing this I/O,
 * against which tapfs's raw VBD is measured.  Reads and writes must be
 * 512-byte aligned (as a loop device in direct I/O mode sends them);
 * others get EINVAL.  fsync is an fdatasync in the loop.
 *
 * With -o sync as well ("nullsync") there is no aio and no epoll: the
 * thread blocks in libfuse's session loop on /dev/fuse, and a read or a
 * write is one pread or pwrite (O_DIRECT, through one page-aligned
 * buffer; a write's payload is copied there first) in the handler,
 * replied as soon as it returns.  The block layer's completion wakes the
 * thread straight out of the system call.  One request at a time, so it
 * is no ceiling at any depth above 1; at QD1 it is the shortest way any
 * one-thread daemon can take from request to reply, the reference for
 * what tapfs's asynchronous path (the aio eventfd, the wake-up in epoll,
 * io_getevents) costs a request when nothing overlaps.
 *
 * The INIT and open settings are tapfs's (fs/fuse-session.c and
 * fs/fuse-namespace.c): max_write 1 MiB, no readahead, max_background
 * (default 128, as tapfs) with the congestion threshold at 3/4 of it,
 * asynchronous direct I/O, no splice, no writeback cache, and the file
 * opened with FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES.  It runs
 * libfuse's single-threaded session loop (one thread, as tapfs).  The
 * directory is not listable (lookup only).  Built by `make fuse-null`
 * (build/fuse-null), for the bench only.
 */
#define FUSE_USE_VERSION 34

#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <libaio.h>
#include <linux/fuse.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define NULL_INO		2
#define NULL_NAME		"null"
#define NULL_MAX_IO		(1u << 20)
#define NULL_DEFAULT_SIZE	(1ull << 30)
#define NULL_DEFAULT_BG		128
#define NULL_ATTR_TIMEOUT	3600.0
/* nullio: slots (requests in the daemon at once), as tapfs's NR_CTX. */
#define NULLIO_SLOTS		256
/* libfuse reads up to 256 pages + one header page per request. */
#define NULLIO_RECV		((256u << 12) + 4096)
/* A slot: one header page, then the receive buffer (data page-aligned). */
#define NULLIO_HDR_PAGE		4096u
#define NULLIO_SLOT_SIZE	(NULLIO_HDR_PAGE + NULLIO_RECV)
#define NULLIO_WRITE_HDR	(sizeof(struct fuse_in_header) + \
				 sizeof(struct fuse_write_in))
#define NULLIO_ALIGN		512u
#define NULLIO_RECV_BATCH	64	/* requests read per wake-up, as tapfs */

struct null_opts {
	unsigned long long size;
	unsigned max_background;
	char *backing;
	int sync;
};

/* One request of the nullio mode, from receipt to reply. */
struct nullio_slot {
	char		*mem;		/* NULLIO_SLOT_SIZE bytes */
	fuse_req_t	 req;
	struct iocb	 iocb;
	bool		 is_read;
};

/* The nullio mode's state: the one thread's, no locking. */
struct nullio {
	int		 fd;		/* FILE, O_DIRECT */
	int		 efd;		/* aio completions */
	io_context_t	 ctx;
	struct nullio_slot slots[NULLIO_SLOTS];
	struct nullio_slot *free[NULLIO_SLOTS];
	unsigned	 nfree;
	struct nullio_slot *cur;	/* the request being dispatched */
	bool		 claimed;	/* cur went to the kernel */
	struct iocb	*queued[NULLIO_SLOTS];
	unsigned	 nqueued;
	unsigned	 inflight;
	struct io_event	 events[NULLIO_SLOTS];
};

static struct nullio nio;	/* only with -o backing */
static char *nullsync_buf;	/* only with -o sync: NULL_MAX_IO, aligned */

/* A read's reply: never written to. */
static const char null_zeros[NULL_MAX_IO];

static const struct fuse_opt null_opt_spec[] = {
	{ "size=%llu", offsetof(struct null_opts, size), 0 },
	{ "max_background=%u", offsetof(struct null_opts, max_background), 0 },
	{ "backing=%s", offsetof(struct null_opts, backing), 0 },
	{ "sync", offsetof(struct null_opts, sync), 1 },
	FUSE_OPT_END
};

static struct null_opts *null_opts(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static void null_init(void *userdata, struct fuse_conn_info *conn)
{
	struct null_opts *o = userdata;

	conn->max_write = NULL_MAX_IO;
	conn->max_readahead = 0;
	conn->max_background = o->max_background;
	conn->congestion_threshold = o->max_background * 3 / 4;
	conn->want |= FUSE_CAP_ASYNC_DIO;
	conn->want &= ~(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE |
			FUSE_CAP_SPLICE_MOVE | FUSE_CAP_WRITEBACK_CACHE |
			FUSE_CAP_AUTO_INVAL_DATA);
}

static void null_stat(const struct null_opts *o, fuse_ino_t ino,
		      struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	if (ino == FUSE_ROOT_ID) {
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2;
	} else {
		st->st_mode = S_IFREG | 0600;
		st->st_nlink = 1;
		st->st_size = o->size;
		st->st_blocks = o->size / 512;
	}
}

/* Replies: an entry for "null" in the root, ENOENT otherwise. */
static void null_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e;

	if (parent != FUSE_ROOT_ID || strcmp(name, NULL_NAME)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	memset(&e, 0, sizeof(e));
	e.ino = NULL_INO;
	e.attr_timeout = NULL_ATTR_TIMEOUT;
	e.entry_timeout = NULL_ATTR_TIMEOUT;
	null_stat(null_opts(req), NULL_INO, &e.attr);
	fuse_reply_entry(req, &e);
}

/* Replies: the attributes of the root or of "null". */
static void null_getattr(fuse_req_t req, fuse_ino_t ino,
			 struct fuse_file_info *fi)
{
	struct stat st;

	(void)fi;
	null_stat(null_opts(req), ino, &st);
	fuse_reply_attr(req, &st, NULL_ATTR_TIMEOUT);
}

/* Replies: an open of "null" in direct I/O; EISDIR for the root. */
static void null_open(fuse_req_t req, fuse_ino_t ino,
		      struct fuse_file_info *fi)
{
	struct fuse_open_out out;

	(void)fi;
	if (ino != NULL_INO) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	/* fuse_file_info of libfuse 3.14 has no parallel_direct_writes. */
	memset(&out, 0, sizeof(out));
	out.open_flags = FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES;
	fuse_reply_buf(req, (const char *)&out, sizeof(out));
}

static size_t null_clamp(const struct null_opts *o, size_t len, off_t off)
{
	if (off < 0 || (unsigned long long)off >= o->size)
		return 0;
	if (len > o->size - off)
		len = o->size - off;
	return len;
}

/*
 * nullio: queue the I/O of the request in nio.cur for the next io_submit;
 * the reply comes from nullio_reap().  False (EINVAL replied) if it is
 * not aligned for O_DIRECT.
 */
static bool nullio_queue(fuse_req_t req, bool is_read, char *buf,
			 size_t len, off_t off)
{
	struct nullio_slot *s = nio.cur;

	if ((len | (size_t)off | (uintptr_t)buf) & (NULLIO_ALIGN - 1)) {
		fuse_reply_err(req, EINVAL);
		return false;
	}
	if (is_read)
		io_prep_pread(&s->iocb, nio.fd, buf, len, off);
	else
		io_prep_pwrite(&s->iocb, nio.fd, buf, len, off);
	io_set_eventfd(&s->iocb, nio.efd);
	s->iocb.data = s;
	s->req = req;
	s->is_read = is_read;
	nio.queued[nio.nqueued++] = &s->iocb;
	nio.claimed = true;
	return true;
}

/*
 * nullsync: the read or write done here, in the handler, and replied.
 * A write's payload is copied into the aligned buffer first.
 */
static void nullsync_io(fuse_req_t req, bool is_read, const char *buf,
			size_t len, off_t off)
{
	ssize_t n;

	if ((len | (size_t)off) & (NULLIO_ALIGN - 1) || len > NULL_MAX_IO) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (is_read) {
		n = pread(nio.fd, nullsync_buf, len, off);
	} else {
		memcpy(nullsync_buf, buf, len);
		n = pwrite(nio.fd, nullsync_buf, len, off);
	}
	if (n < 0)
		fuse_reply_err(req, errno);
	else if (is_read)
		fuse_reply_buf(req, nullsync_buf, (size_t)n);
	else
		fuse_reply_write(req, (size_t)n);
}

/*
 * Replies: zeros up to the end of the file (at most max_write); with
 * backing, the file's data, or EINVAL for an unaligned read.
 */
static void null_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		      struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	size = null_clamp(null_opts(req), size, off);
	if (null_opts(req)->sync && size) {
		nullsync_io(req, true, NULL, size, off);
		return;
	}
	if (null_opts(req)->backing && size) {
		nullio_queue(req, true, nio.cur->mem + NULLIO_HDR_PAGE, size,
			     off);
		return;
	}
	if (size > sizeof(null_zeros))
		size = sizeof(null_zeros);
	fuse_reply_buf(req, null_zeros, size);
}

/* Replies: the whole write acknowledged, or EFBIG past the end. */
static void null_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
		       size_t size, off_t off, struct fuse_file_info *fi)
{
	(void)ino;
	(void)buf;
	(void)fi;
	if (size && !null_clamp(null_opts(req), size, off)) {
		fuse_reply_err(req, EFBIG);
		return;
	}
	size = null_clamp(null_opts(req), size, off);
	if (null_opts(req)->sync && size) {
		nullsync_io(req, false, buf, size, off);
		return;
	}
	if (null_opts(req)->backing && size) {
		nullio_queue(req, false, (char *)buf, size, off);
		return;
	}
	fuse_reply_write(req, size);
}

static void null_flush(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	fuse_reply_err(req, 0);
}

static void null_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
		       struct fuse_file_info *fi)
{
	(void)datasync;
	if (null_opts(req)->backing && fdatasync(nio.fd)) {
		fuse_reply_err(req, errno);
		return;
	}
	null_flush(req, ino, fi);
}

static const struct fuse_lowlevel_ops null_ops = {
	.init		= null_init,
	.lookup		= null_lookup,
	.getattr	= null_getattr,
	.open		= null_open,
	.read		= null_read,
	.write		= null_write,
	.flush		= null_flush,
	.fsync		= null_fsync,
};

/* ---- nullio: the loop ------------------------------------------------ */

static int nullio_open(struct null_opts *o)
{
	off_t end;
	unsigned i;
	char *mem;
	int err;

	nio.fd = open(o->backing, O_RDWR | O_DIRECT | O_CLOEXEC);
	if (nio.fd < 0) {
		fprintf(stderr, "fuse-null: %s: %s\n", o->backing,
			strerror(errno));
		return -1;
	}
	end = lseek(nio.fd, 0, SEEK_END);
	if (end <= 0) {
		fprintf(stderr, "fuse-null: %s: empty or no size\n",
			o->backing);
		return -1;
	}
	o->size = (unsigned long long)end;
	if (o->sync)	/* no slots, no aio: one buffer (main) */
		return 0;
	/* Only the pages a request touches become resident. */
	mem = mmap(NULL, (size_t)NULLIO_SLOTS * NULLIO_SLOT_SIZE,
		   PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED) {
		perror("fuse-null: mmap");
		return -1;
	}
	for (i = 0; i < NULLIO_SLOTS; i++) {
		nio.slots[i].mem = mem + (size_t)i * NULLIO_SLOT_SIZE;
		nio.free[nio.nfree++] = &nio.slots[NULLIO_SLOTS - 1 - i];
	}
	err = io_setup(NULLIO_SLOTS, &nio.ctx);
	if (err) {
		fprintf(stderr, "fuse-null: io_setup(%u): %s\n", NULLIO_SLOTS,
			strerror(-err));
		return -1;
	}
	nio.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (nio.efd < 0) {
		perror("fuse-null: eventfd");
		return -1;
	}
	return 0;
}

static void nullio_submit(void)
{
	unsigned done = 0;
	int rc;

	while (done < nio.nqueued) {
		rc = io_submit(nio.ctx, (long)(nio.nqueued - done),
			       nio.queued + done);
		if (rc <= 0) {
			/* The first iocb is refused: fail its request. */
			struct nullio_slot *s = nio.queued[done]->data;

			fuse_reply_err(s->req, rc ? -rc : EIO);
			nio.free[nio.nfree++] = s;
			done++;
			continue;
		}
		nio.inflight += (unsigned)rc;
		done += (unsigned)rc;
	}
	nio.nqueued = 0;
}

/* Reap every completion and reply to each, in one pass. */
static void nullio_reap(void)
{
	struct timespec zero = { 0, 0 };
	uint64_t count;
	int n, i;

	if (read(nio.efd, &count, sizeof(count)) < 0 && errno != EAGAIN)
		perror("fuse-null: eventfd read");
	do {
		n = io_getevents(nio.ctx, 0, NULLIO_SLOTS, nio.events, &zero);
		for (i = 0; i < n; i++) {
			struct nullio_slot *s = nio.events[i].data;
			long res = (long)nio.events[i].res;

			if (res < 0)
				fuse_reply_err(s->req, (int)-res);
			else if (s->is_read)
				fuse_reply_buf(s->req, (char *)s->iocb.u.c.buf,
					       (size_t)res);
			else
				fuse_reply_write(s->req, (size_t)res);
			nio.free[nio.nfree++] = s;
		}
		if (n > 0)
			nio.inflight -= (unsigned)n;
	} while (n == NULLIO_SLOTS);
}

/* Read and dispatch up to NULLIO_RECV_BATCH requests; -1 at the end. */
static int nullio_receive(struct fuse_session *se)
{
	struct fuse_buf fbuf;
	unsigned i;
	int res;

	for (i = 0; i < NULLIO_RECV_BATCH && nio.nfree; i++) {
		nio.cur = nio.free[--nio.nfree];
		nio.claimed = false;
		memset(&fbuf, 0, sizeof(fbuf));
		/* A WRITE's payload lands on the slot's page boundary. */
		fbuf.mem = nio.cur->mem + NULLIO_HDR_PAGE - NULLIO_WRITE_HDR;
		fbuf.size = NULLIO_RECV;
		res = fuse_session_receive_buf(se, &fbuf);
		if (res > 0 && !fuse_session_exited(se))
			fuse_session_process_buf(se, &fbuf);
		if (!nio.claimed)
			nio.free[nio.nfree++] = nio.cur;
		if (res == -EINTR)
			continue;
		if (res == -EAGAIN)
			return 0;
		if (res <= 0 || fuse_session_exited(se))
			return -1;
	}
	return 0;
}

static int nullio_add(int ep, int fd, uint32_t events)
{
	struct epoll_event e = { .events = events, .data.fd = fd };

	return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
}

/*
 * The loop: submit what was queued, sleep in epoll, reap, receive.  Stops
 * reading /dev/fuse while every slot is taken.
 */
static int nullio_loop(struct fuse_session *se)
{
	int sfd = fuse_session_fd(se), ep, n, i;
	struct epoll_event ev[2], on = { .data.fd = sfd };
	bool polling = true;

	fcntl(sfd, F_SETFL, fcntl(sfd, F_GETFL) | O_NONBLOCK);
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0 || nullio_add(ep, sfd, EPOLLIN) ||
	    nullio_add(ep, nio.efd, EPOLLIN)) {
		perror("fuse-null: epoll");
		return 1;
	}
	while (!fuse_session_exited(se)) {
		if (nio.nqueued)
			nullio_submit();
		if (polling != (nio.nfree > 0)) {
			polling = nio.nfree > 0;
			on.events = polling ? EPOLLIN : 0;
			epoll_ctl(ep, EPOLL_CTL_MOD, sfd, &on);
		}
		n = epoll_wait(ep, ev, 2, -1);
		if (n < 0 && errno != EINTR) {
			perror("fuse-null: epoll_wait");
			break;
		}
		for (i = 0; i < n; i++)
			if (ev[i].data.fd == nio.efd)
				nullio_reap();
		for (i = 0; i < n; i++)
			if (ev[i].data.fd == sfd && nullio_receive(se))
				fuse_session_exit(se);
	}
	close(ep);
	return 0;
}

int main(int argc, char **argv)
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct null_opts o = {
		.size = NULL_DEFAULT_SIZE,
		.max_background = NULL_DEFAULT_BG,
	};
	struct fuse_cmdline_opts cl;
	struct fuse_session *se = NULL;
	int rc = 1;

	memset(&cl, 0, sizeof(cl));
	if (fuse_parse_cmdline(&args, &cl) ||
	    fuse_opt_parse(&args, &o, null_opt_spec, NULL))
		goto out;
	if (cl.show_help || !cl.mountpoint) {
		fprintf(stderr, "usage: %s [-f] [-o size=BYTES] "
			"[-o max_background=N] [-o backing=FILE [-o sync]] "
			"MOUNTPOINT\n",
			argv[0]);
		goto out;
	}
	if (!o.size || o.max_background < 1 || o.max_background > 65535) {
		fprintf(stderr, "fuse-null: size must be > 0 and "
			"max_background 1..65535 (got %llu, %u)\n",
			o.size, o.max_background);
		goto out;
	}
	if (o.sync && !o.backing) {
		fprintf(stderr, "fuse-null: -o sync needs -o backing=FILE\n");
		goto out;
	}
	if (o.backing && nullio_open(&o))
		goto out;
	if (o.sync && posix_memalign((void **)&nullsync_buf, 4096,
				     NULL_MAX_IO)) {
		fprintf(stderr, "fuse-null: out of memory\n");
		goto out;
	}
	se = fuse_session_new(&args, &null_ops, sizeof(null_ops), &o);
	if (!se)
		goto out;
	if (fuse_set_signal_handlers(se))
		goto out;
	if (fuse_session_mount(se, cl.mountpoint))
		goto out_signals;
	if (fuse_daemonize(cl.foreground))
		goto out_unmount;
	if (o.backing && !o.sync)
		rc = nullio_loop(se);
	else
		rc = fuse_session_loop(se) ? 1 : 0;
out_unmount:
	fuse_session_unmount(se);
out_signals:
	fuse_remove_signal_handlers(se);
out:
	if (se)
		fuse_session_destroy(se);
	free(cl.mountpoint);
	free(o.backing);
	free(nullsync_buf);
	fuse_opt_free_args(&args);
	return rc;
}
