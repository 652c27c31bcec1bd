/* SPDX-License-Identifier: MIT */
/*
 * The receive loops: read /dev/fuse, hand each request to libfuse on the
 * loop it belongs to.  Without -o workers there is one, loop 0, reading
 * the session's fd, and every request is its own.  With -o workers=N
 * (the loops, queues and parking are fs/workers.c) every loop reads
 * requests from its own clone of the /dev/fuse fd (FUSE_DEV_IOC_CLONE;
 * loop 0 reads the session's).  The clones share one kernel queue, so
 * any loop may read any request; the reader looks at the request before
 * libfuse does:
 *
 *   READ, WRITE, FSYNC, FALLOCATE on a VBD file (its fh says which,
 *   vbd_fh) belong to the loop that owns the VBD (tapfs_vbd.owner);
 *   everything else (the namespace, .ctl and .stats) belongs to loop 0.
 *
 * A request of the reader's own goes to libfuse at once; another's is
 * handed to its owner in the receive buffer itself (a struct mq_buf in
 * the buffer's headroom, posted to the owner's queue): no copy.  The
 * owner hands the buffer back the same way once it is done with it.
 *
 * A reply must be written to the clone its request was read from (the
 * kernel finds the request in that clone's processing list), whichever
 * thread sends it: with more than one loop libfuse writes every reply
 * through our writev (fuse_session_custom_io), which uses the thread's
 * fuse_reply_fd, set before libfuse processes a request and, for a later
 * reply, from what the request recorded at receipt.
 *
 * On loop 0, namespace requests that may touch VBD state (OPEN renders
 * .stats, a .ctl WRITE runs a command, MKDIR and RMDIR save the
 * manifest) run with the other loops parked.
 *
 * Only loops that own a VBD read /dev/fuse (mq_choose_readers): with
 * fewer VBDs than loops, a loop with nothing of its own would only hand
 * requests on.  A loop whose data path runs out of contexts or buffers
 * stops reading until they come back (it looks before each loop sleep):
 * the kernel holds what we do not read.
 *
 * FUSE_INTERRUPT does not go to libfuse, which would look for the
 * request among the reader's: the interrupted request may be on any
 * loop.  The reader sends it to every loop instead, and the one holding
 * a request of that unique interrupts it (data_interrupt).  One that
 * overtakes its request (still in a queue between two loops) is
 * remembered by every loop for a while, and acts when the request comes
 * (data_received, fs/intr-memo.h).  With one loop the request is always
 * read first.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <tapfs/log.h>

#include "fuse-edge.h"
#include "workers.h"

#define RECV_BATCH		64

__thread int fuse_reply_fd = -1;
__thread uint64_t fuse_recv_unique;
__thread struct data_loop *data_loop_here;

/* One loop's FUSE side; only its thread touches it. */
struct fuse_loop {
	struct fuse_state	*st;
	unsigned		 id;
	int			 fd;		/* loop 0: the session's */
	struct td_loop		*loop;
	struct data_loop	*dl;		/* loop 0: st->data */
	struct data_loop	 own;
	bool			 data_ready;	/* own is initialised */
	struct td_event		 ev;
	bool			 watched;	/* ev is in the loop's epoll */
	bool			 hooked;	/* unthrottle is a hook */
	bool			 throttled;	/* no buffer or context free */
	bool			 idle;		/* owns no VBD: leaves reading */
	struct td_hook		 unthrottle;
};

struct fuse_mq {
	unsigned		 n;
	struct fuse_loop	 loops[];
};

/* The head of a receive buffer on its way between loops. */
struct mq_buf {
	struct workers_msg	 msg;
	struct fuse_loop	*from;		/* read it; owns the buffer */
	struct tapfs_vbd	*tv;		/* mq_vbd's, as the reader saw */
	size_t			 len;		/* bytes of the request */
};

_Static_assert(sizeof(struct mq_buf) <= DATA_RECV_HEADROOM,
	       "the hand-off header fits before the request");

/* ---- replies ------------------------------------------------------------ */

static ssize_t mq_writev(int fd, struct iovec *iov, int count, void *ud)
{
	(void)ud;
	return writev(fuse_reply_fd >= 0 ? fuse_reply_fd : fd, iov, count);
}

static ssize_t mq_read(int fd, void *buf, size_t len, void *ud)
{
	(void)ud;
	return read(fd, buf, len);
}

static const struct fuse_custom_io mq_io = {
	.writev	= mq_writev,
	.read	= mq_read,
};

/* ---- routing ------------------------------------------------------------ */

static const struct fuse_in_header *mq_header(const char *buf)
{
	return (const struct fuse_in_header *)(buf + DATA_RECV_HEADROOM);
}

/* The VBD of a request on a VBD file, or NULL. */
static struct tapfs_vbd *mq_vbd(const char *buf, size_t len)
{
	const struct fuse_in_header *in = mq_header(buf);
	uint64_t fh;

	switch (in->opcode) {
	case FUSE_READ:
	case FUSE_WRITE:
	case FUSE_FSYNC:
	case FUSE_FALLOCATE:
		break;
	default:
		return NULL;
	}
	/* Every one of these starts with the file handle. */
	if (len < sizeof(*in) + sizeof(fh))
		return NULL;
	memcpy(&fh, (const char *)(in + 1), sizeof(fh));
	return fh_vbd(fh);
}

/* Loop 0's requests that may read or change a VBD's state (tv: mq_vbd's). */
static bool mq_needs_parking(const char *buf, const struct tapfs_vbd *tv)
{
	switch (mq_header(buf)->opcode) {
	case FUSE_OPEN:
	case FUSE_MKDIR:
	case FUSE_RMDIR:
		return true;
	case FUSE_WRITE:
		return !tv;			/* .ctl */
	default:
		return false;
	}
}

static void mq_choose_readers(struct fuse_state *st);

/*
 * libfuse processes the request in buf (fl->dl->cur), read from fd; tv
 * is its VBD (mq_vbd).
 */
static void mq_process(struct fuse_loop *fl, char *buf, size_t len, int fd,
		       const struct tapfs_vbd *tv)
{
	struct fuse_buf fbuf = {
		.mem = buf + DATA_RECV_HEADROOM,
		.size = len,
	};
	bool park = !fl->id && mq_needs_parking(buf, tv);
	uint64_t unique = mq_header(buf)->unique;

	data_loop_here = fl->dl;
	fuse_reply_fd = fd;
	fuse_recv_unique = unique;
	if (park)
		workers_quiesce(fl->st->fs);
	fuse_session_process_buf(fl->st->se, &fbuf);
	data_received(fl->dl, unique);
	if (park) {
		mq_choose_readers(fl->st);
		workers_release(fl->st->fs);
	}
}

static struct fuse_loop *mq_here(struct fuse_state *st)
{
	return &st->mq->loops[workers_self()];
}

/* On the owner: a request another loop read. */
static void mq_forwarded(struct workers_msg *m)
{
	struct mq_buf *b = td_container_of(m, struct mq_buf, msg);
	struct fuse_loop *fl = mq_here(b->from->st);
	struct data_loop *dl = fl->dl;
	char *spare = dl->cur;

	dl->cur = (char *)b;
	mq_process(fl, (char *)b, b->len, b->from->fd, b->tv);
	/* Not kept by the request (a large write keeps it): home. */
	if (dl->cur)
		data_put_recv(dl, dl->cur);
	dl->cur = spare;
}

/* On the reader: a buffer it handed off comes back. */
static void mq_returned(struct workers_msg *m)
{
	struct mq_buf *b = td_container_of(m, struct mq_buf, msg);

	td_pool_put(&b->from->dl->recv_pool, b);
}

void fuse_workers_return_recv(struct fuse_state *st, char *buf)
{
	struct mq_buf *b = (struct mq_buf *)buf;

	b->msg.fn = mq_returned;
	workers_post(st->fs, b->from->id, &b->msg);
}

/* ---- interrupts -------------------------------------------------------- */

/*
 * A FUSE_INTERRUPT may be for a request on any loop: every loop looks for
 * it (and remembers it if the request has not come yet, fs/intr-memo.h).
 * The buffer it was read into goes from loop to loop, round the ring, and
 * home to its reader: nothing to allocate, so none is ever lost.
 */
static void mq_interrupt_next(struct workers_msg *m);

/* This loop looks for the request the INTERRUPT in b names. */
static void mq_interrupt_here(struct fuse_loop *fl, const struct mq_buf *b)
{
	const struct fuse_in_header *in = mq_header((const char *)b);
	struct fuse_interrupt_in arg;

	if (b->len < sizeof(*in) + sizeof(arg))
		return;
	memcpy(&arg, in + 1, sizeof(arg));
	data_interrupt(fl->dl, arg.unique);
}

/* On to the loop after fl, or home to the reader once round. */
static void mq_interrupt_pass(struct fuse_loop *fl, struct mq_buf *b)
{
	unsigned next = (fl->id + 1) % fl->st->mq->n;

	if (next == b->from->id) {
		fuse_workers_return_recv(fl->st, (char *)b);
		return;
	}
	b->msg.fn = mq_interrupt_next;
	workers_post(fl->st->fs, next, &b->msg);
}

static void mq_interrupt_next(struct workers_msg *m)
{
	struct mq_buf *b = td_container_of(m, struct mq_buf, msg);
	struct fuse_loop *fl = mq_here(b->from->st);

	mq_interrupt_here(fl, b);
	mq_interrupt_pass(fl, b);
}

/* The INTERRUPT just read into fl->dl->cur, len bytes. */
static void mq_interrupt(struct fuse_loop *fl, size_t len)
{
	struct mq_buf *b = (struct mq_buf *)fl->dl->cur;

	b->from = fl;
	b->len = len;
	mq_interrupt_here(fl, b);
	if (fl->st->mq->n == 1)
		return;			/* one loop: the buffer stays cur */
	fl->dl->cur = NULL;
	mq_interrupt_pass(fl, b);
}

/* ---- the receive loop ---------------------------------------------------- */

/*
 * A loop watches its fd only while it reads (not idle, not throttled).
 * Left in the epoll set with no events, the fd of an idle loop still
 * woke it in the kernel for every request queued (some 280k futile
 * wake-ups a second at 320k IOPS).  Reading loops are not exclusive
 * waiters: with EPOLLEXCLUSIVE two loops over two VBDs did no better
 * (244-256k 4k reads/s against 262-271k without, 2 vCPUs).
 */
static void mq_watch(struct fuse_loop *fl)
{
	bool want = !fl->idle && !fl->throttled;

	if (!want && fl->watched) {
		td_loop_del_event(fl->loop, &fl->ev);
		fl->watched = false;
	} else if (want && !fl->watched) {
		fl->watched = !td_loop_add_event(fl->loop, &fl->ev);
		if (!fl->watched)
			td_log(TD_LOG_ERR, "loop %u: cannot watch /dev/fuse",
			       fl->id);
	}
}

static void mq_throttle(struct fuse_loop *fl, bool on)
{
	if (fl->throttled == on)
		return;
	fl->throttled = on;
	mq_watch(fl);
}

/*
 * Which loops read /dev/fuse: those that own a VBD (or loop 0 alone
 * when none does).  A reader of a VBD it does not own hands the request
 * on (a wake-up of the owner); with fewer VBDs than loops the others
 * would only add such hand-offs.  From loop 0 with the others parked
 * (their fuse_loop is ours meanwhile), after each change of the VBDs.
 */
static void mq_choose_readers(struct fuse_state *st)
{
	struct fuse_mq *mq = st->mq;
	unsigned owned[WORKERS_MAX] = { 0 }, total, i;

	total = tapfs_vbds_per_loop(st->fs, owned);
	for (i = 0; i < mq->n; i++) {
		struct fuse_loop *fl = &mq->loops[i];

		fl->idle = !owned[i] && (i || total);
		if (fl->hooked)
			mq_watch(fl);
	}
}

static void mq_unthrottle(struct td_hook *h)
{
	struct fuse_loop *fl = h->arg;
	struct fuse_buf fbuf;

	if (fl->throttled && !fl->idle && !td_loop_stopped(fl->loop) &&
	    data_recv_buffer(fl->dl, &fbuf))
		mq_throttle(fl, false);
}

static void mq_receive(struct td_event *ev, uint32_t events)
{
	struct fuse_loop *fl = ev->arg;
	struct data_loop *dl = fl->dl;
	struct fuse_buf fbuf;
	struct tapfs_vbd *tv;
	unsigned i, owner;
	ssize_t n;

	(void)events;
	/* Stopped: the final drain runs this loop; /dev/fuse is done. */
	if (td_loop_stopped(fl->loop)) {
		mq_throttle(fl, true);
		return;
	}
	for (i = 0; i < RECV_BATCH && !fl->idle; i++) {
		if (!data_recv_buffer(dl, &fbuf)) {
			mq_throttle(fl, true);
			return;
		}
		n = read(fl->fd, fbuf.mem, fbuf.size);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n < (ssize_t)sizeof(struct fuse_in_header)) {
			/* ENODEV: unmounted.  Every loop ends. */
			if (n < 0 && errno != ENODEV)
				td_log(TD_LOG_ERR, "reading /dev/fuse: %m");
			mq_throttle(fl, true);
			workers_stop_all(fl->st->fs);
			return;
		}
		if (mq_header(dl->cur)->opcode == FUSE_INTERRUPT) {
			mq_interrupt(fl, (size_t)n);
			continue;
		}
		tv = mq_vbd(dl->cur, (size_t)n);
		owner = tv ? tv->owner : 0;
		if (owner == fl->id) {
			mq_process(fl, dl->cur, (size_t)n, fl->fd, tv);
		} else {
			struct mq_buf *b = (struct mq_buf *)dl->cur;

			dl->cur = NULL;
			b->msg.fn = mq_forwarded;
			b->from = fl;
			b->tv = tv;
			b->len = (size_t)n;
			workers_post(fl->st->fs, owner, &b->msg);
		}
	}
}

/* ---- set-up -------------------------------------------------------------- */

static int mq_clone(int session_fd)
{
	uint32_t sfd = (uint32_t)session_fd;
	int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	if (ioctl(fd, FUSE_DEV_IOC_CLONE, &sfd) < 0) {
		int rc = -errno;

		close(fd);
		return rc;
	}
	return fd;
}

static int mq_loop_init(struct fuse_state *st, struct fuse_loop *fl,
			unsigned id, char *err, size_t errlen)
{
	int sfd = fuse_session_fd(st->se);
	int rc;

	fl->st = st;
	fl->id = id;
	fl->loop = workers_engine(st->fs, id)->loop;
	if (id) {
		fl->fd = mq_clone(sfd);
		if (fl->fd < 0) {
			snprintf(err, errlen, "cannot clone /dev/fuse for "
				 "loop %u: %s", id, strerror(-fl->fd));
			return fl->fd;
		}
		rc = data_init(st, &fl->own);
		fl->data_ready = true;
		if (rc) {
			snprintf(err, errlen, "cannot allocate I/O buffers "
				 "of loop %u: %s", id, strerror(-rc));
			return rc;
		}
		fl->dl = &fl->own;
	} else {
		fl->fd = sfd;
		fl->dl = &st->data;
	}
	fcntl(fl->fd, F_SETFL, fcntl(fl->fd, F_GETFL) | O_NONBLOCK);
	fl->ev.fd = fl->fd;
	fl->ev.events = EPOLLIN;
	fl->ev.cb = mq_receive;
	fl->ev.arg = fl;
	rc = td_loop_add_event(fl->loop, &fl->ev);
	if (rc) {
		snprintf(err, errlen, "epoll: %s", strerror(-rc));
		return rc;
	}
	fl->watched = true;
	fl->unthrottle.cb = mq_unthrottle;
	fl->unthrottle.arg = fl;
	td_loop_add_hook(fl->loop, &fl->unthrottle);
	fl->hooked = true;
	return 0;
}

int fuse_workers_mount(struct fuse_state *st, char *err, size_t errlen)
{
	unsigned i, n = workers_count(st->fs);
	struct fuse_mq *mq;
	int rc;

	mq = calloc(1, sizeof(*mq) + n * sizeof(mq->loops[0]));
	if (!mq) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	for (i = 0; i < n; i++)
		mq->loops[i].fd = -1;
	mq->n = n;
	st->mq = mq;
	/* One loop replies on the session's fd (or -o uring's writev). */
	if (n > 1 &&
	    fuse_session_custom_io(st->se, &mq_io, fuse_session_fd(st->se))) {
		snprintf(err, errlen, "libfuse refused our /dev/fuse I/O");
		rc = -EINVAL;
		goto fail;
	}
	for (i = 0; i < n; i++) {
		rc = mq_loop_init(st, &mq->loops[i], i, err, errlen);
		if (rc)
			goto fail;
	}
	mq_choose_readers(st);
	if (n > 1)
		td_log(TD_LOG_INFO, "%u event loops, one /dev/fuse clone "
		       "each", n);
	return 0;
fail:
	fuse_workers_unmount(st);
	return rc;
}

int fuse_workers_run(struct fuse_state *st)
{
	struct tapfs *fs = st->fs;
	int rc;

	rc = workers_start(fs);
	if (rc)
		return rc;
	rc = td_loop_run(fs->engine->loop);
	workers_stop(fs);
	workers_flush(fs);
	return rc;
}

void fuse_workers_unmount(struct fuse_state *st)
{
	struct fuse_mq *mq = st->mq;
	unsigned i;

	if (!mq)
		return;
	for (i = 0; i < mq->n; i++) {
		struct fuse_loop *fl = &mq->loops[i];

		if (fl->watched)
			td_loop_del_event(fl->loop, &fl->ev);
		if (fl->hooked)
			td_loop_del_hook(&fl->unthrottle);
		if (fl->data_ready)
			data_fini(&fl->own);
		if (i && fl->fd >= 0)
			close(fl->fd);
	}
	free(mq);
	st->mq = NULL;
}
