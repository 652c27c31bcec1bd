/* SPDX-License-Identifier: MIT */
/*
 * -o uring: FUSE requests over io_uring instead of read()/writev() on
 * /dev/fuse (Linux 6.14+, CONFIG_FUSE_IO_URING, fuse.enable_uring=Y).
 *
 * The kernel has one request queue per possible CPU and hands a request
 * to a free ring entry of the sender's CPU's queue: the entry's header
 * gets the fuse_in_header and the opcode's fixed argument, its payload
 * buffer the rest (a WRITE's data, a LOOKUP's name).  The reply goes back
 * in the same entry, and one FUSE_IO_URING_CMD_COMMIT_AND_FETCH both
 * delivers it and makes the entry wait for the next request.  So a
 * request costs one completion and a share of one io_uring_enter, where
 * /dev/fuse costs a read() and a writev().
 *
 * How it meets the rest of the FUSE edge, which stays as it is:
 *
 *  - INIT, FORGET, INTERRUPT and notifications keep to /dev/fuse
 *    (fuse-workers.c's receive loop reads it as before).  The INIT
 *    reply, built by libfuse 3.14 (which knows nothing of io_uring), gets
 *    FUSE_OVER_IO_URING added on its way out through our writev; right
 *    after it, every entry is registered.
 *  - A request from the ring is laid out in place as /dev/fuse would
 *    have delivered it (header, fixed argument, payload): each entry's
 *    payload buffer has a page of its own in front of it, where the
 *    header and the fixed argument are copied, right before the payload
 *    the kernel put there.  fuse_session_process_buf takes it from
 *    there, so the operations and the throttling when the data path is
 *    full are the /dev/fuse path's, and no payload is copied.
 *  - The data path keeps a request's data in its entry
 *    (fuse_uring_lend): a READ whose range is aligned reads straight
 *    into the payload, so its data is not copied again for the reply; a
 *    WRITE goes to the disk from where the kernel put it.  The entry's
 *    commit waits until the buffer is given back, except for an answer
 *    ahead of the I/O (a failed VBD): the buffer then moves out of the
 *    entry (spare slots, below).
 *  - libfuse sends every reply through fuse_session_custom_io's writev.
 *    A reply to a ring request (found by its unique) is copied into its
 *    entry and its COMMIT_AND_FETCH queued; the queued commands go to the
 *    kernel in one io_uring_enter before the loop sleeps.  Any other
 *    reply (INIT, notifications) is written to /dev/fuse.
 *
 * One ring for every queue, served by the engine's loop thread: the
 * ring's fd is one more event in the loop.  Not with -o workers=N.
 * On unmount the kernel ends the waiting entries (-ENOTCONN) and the
 * /dev/fuse read ends the loop as before.
 */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#include <tapfs/fuse-uring-uapi.h>
#include <tapfs/log.h>

#include "fuse-edge.h"

/*
 * Entries per CPU queue: max_background + URING_SPARE.  A request holds
 * its entry until it is answered, and tapfs keeps requests for a paused
 * VBD unanswered until resume: if they could fill a queue, the resume
 * written to .ctl from that CPU would wait for an entry for ever.  The
 * kernel sends at most max_background asynchronous requests (all a loop
 * device's are), so a queue always keeps URING_SPARE entries for the
 * rest: the control files, synchronous clients.
 */
#define URING_SPARE		32
#define URING_MAX_BACKGROUND	1024	/* the entries' memory: see below */
#define URING_PARAM		"/sys/module/fuse/parameters/enable_uring"
/* In front of each payload: room for the header and fixed argument. */
#define URING_HEAD_ROOM		4096

_Static_assert(sizeof(struct fuse_in_header) + FUSE_URING_OP_IN_OUT_SZ <=
	       URING_HEAD_ROOM, "a request's head fits before its payload");

/*
 * Payload memory: one memfd of slots (URING_HEAD_ROOM + payload each),
 * two per entry: its own and a spare.  An entry maps its slot at the
 * address it registered with the kernel (base); the data path does its
 * I/O in `alias`, a second mapping of every slot.  A request answered
 * while its I/O still runs in its slot (its VBD failed: the client gets
 * EIO now, fuse_uring_abandon) cannot keep the entry from the kernel, so
 * the entry's base is remapped to a spare slot and the entry committed;
 * the I/O ends in the old slot, which becomes a spare when given back.
 * A spare per entry lets every entry's I/O be stuck at once (a storage
 * that hangs under a full queue) and still be answered; the memfd's pages
 * come only as a slot is first used, so unused spares cost address space
 * only.  With no spare slot left (requests stuck again after a rescue,
 * before the first stuck I/O ended), the answer waits for the I/O.
 */

struct uring_slot {
	struct uring_ent	*e;		/* lent for e's request */
};

struct uring_ent {
	struct fuse_uring_req_header *hdr;
	char			*base;		/* the slot, as the kernel sees it */
	char			*payload;	/* base + URING_HEAD_ROOM */
	unsigned		 slot;
	struct iovec		 iov[2];	/* for REGISTER */
	uint16_t		 qid;
	uint64_t		 unique;	/* request in the entry, 0: none */
	uint64_t		 commit_id;
	bool			 deferred;	/* replied; commit when given back */
};

struct fuse_uring {
	struct fuse_state	*st;
	struct io_uring		 ring;
	bool			 ring_up;
	struct td_event		 ev;		/* the ring's fd */
	bool			 watched;
	bool			 throttled;	/* ev not polled */
	struct td_hook		 hook;		/* submit before each sleep */
	bool			 hooked;
	struct uring_ent	*ent;
	unsigned		 nr_ent;
	unsigned		 nr_queues;
	unsigned		 depth;		/* entries per queue */
	size_t			 payload_sz;
	size_t			 slot_sz;	/* URING_HEAD_ROOM + payload_sz */
	int			 memfd;		/* the slots */
	char			*alias;		/* every slot, for the I/O */
	struct uring_slot	*slots;
	unsigned		 nr_slots;
	unsigned		*spare;		/* free slots, a stack */
	unsigned		 nr_spare;
	unsigned		 nr_rescue;	/* spare slots: nr_ent */
	unsigned long long	 rescued;
	bool			 init_seen;	/* INIT reply patched */
	bool			 registered;
	struct uring_ent	*cur;		/* request being dispatched */
	/* unique -> entry, open addressing; size a power of two. */
	struct uring_ent	**map;
	unsigned		 map_mask;
	unsigned long long	 served;
};

/* ---- unique -> entry ------------------------------------------------- */

static unsigned map_slot(const struct fuse_uring *u, uint64_t unique)
{
	return (unsigned)((unique * 0x9e3779b97f4a7c15ull) >> 32) &
	       u->map_mask;
}

static void map_put(struct fuse_uring *u, struct uring_ent *e)
{
	unsigned i = map_slot(u, e->unique);

	while (u->map[i])
		i = (i + 1) & u->map_mask;
	u->map[i] = e;
}

static struct uring_ent *map_take(struct fuse_uring *u, uint64_t unique)
{
	unsigned i = map_slot(u, unique), j, k;
	struct uring_ent *e;

	for (; (e = u->map[i]) && e->unique != unique; i = (i + 1) &
							 u->map_mask)
		;
	if (!e)
		return NULL;
	/* Delete, moving later entries of the cluster back (no tombstones). */
	u->map[i] = NULL;
	for (j = (i + 1) & u->map_mask; u->map[j]; j = (j + 1) & u->map_mask) {
		k = map_slot(u, u->map[j]->unique);
		if ((j > i && (k <= i || k > j)) ||
		    (j < i && (k <= i && k > j))) {
			u->map[i] = u->map[j];
			u->map[j] = NULL;
			i = j;
		}
	}
	return e;
}

/* Slot k's payload as the data path sees it. */
static char *slot_payload(const struct fuse_uring *u, unsigned k)
{
	return u->alias + (size_t)k * u->slot_sz + URING_HEAD_ROOM;
}

/* Whether e's payload is an I/O buffer now (fuse_uring_lend). */
static bool ent_lent(const struct fuse_uring *u, const struct uring_ent *e)
{
	return u->slots[e->slot].e != NULL;
}

/* ---- commands ------------------------------------------------------- */

static int uring_queue(struct fuse_uring *u, struct uring_ent *e,
		       uint32_t cmd_op)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);

	if (!sqe) {
		/* One SQE per entry at most: cannot happen. */
		td_log(TD_LOG_ERR, "uring: submission queue full");
		return -EIO;
	}
	fuse_uring_prep_cmd(sqe, cmd_op, e->qid, e->commit_id, e->iov, e);
	return 0;
}

/*
 * Hand the queued commands to the kernel.  What a transient error leaves
 * queued goes at the next loop sleep; any other error means replies can
 * no longer reach the kernel, so the daemon stops (and drains) rather
 * than leave its clients waiting.
 */
static void uring_submit(struct fuse_uring *u)
{
	int rc;

	if (!io_uring_sq_ready(&u->ring))
		return;
	rc = io_uring_submit(&u->ring);
	if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
		td_log(TD_LOG_ERR, "uring: io_uring_enter: %s: stopping",
		       strerror(-rc));
		td_loop_stop(u->st->fs->engine->loop);
	}
}

/* Register every entry of every queue (after the INIT reply). */
static int uring_register(struct fuse_uring *u)
{
	unsigned i;
	int rc;

	for (i = 0; i < u->nr_ent; i++) {
		rc = uring_queue(u, &u->ent[i], FUSE_IO_URING_CMD_REGISTER);
		if (rc)
			return rc;
	}
	u->registered = true;
	uring_submit(u);
	td_log(TD_LOG_INFO, "uring: %u queues of %u entries registered",
	       u->nr_queues, u->depth);
	return 0;
}

/* ---- replies ---------------------------------------------------------- */

/*
 * Put the reply (header, then count argument pieces) in e and queue it;
 * returns the payload bytes, or -errno.
 */
static ssize_t uring_commit(struct fuse_uring *u, struct uring_ent *e,
			const struct fuse_out_header *in_oh,
			const struct iovec *iov, int count)
{
	struct fuse_out_header oh = *in_oh;
	const char *lent = slot_payload(u, e->slot);
	size_t len = 0;
	int i;

	for (i = 0; i < count; i++) {
		if (len + iov[i].iov_len > u->payload_sz) {
			/* More than max_write: cannot happen; fail it. */
			oh.error = -EIO;
			len = 0;
			break;
		}
		/* A READ read into the payload (lent) is already there. */
		if (iov[i].iov_base != lent + len)
			memcpy(e->payload + len, iov[i].iov_base,
			       iov[i].iov_len);
		len += iov[i].iov_len;
	}
	oh.len = (uint32_t)(sizeof(oh) + len);
	memcpy(e->hdr->in_out, &oh, sizeof(oh));
	e->hdr->ring_ent_in_out.payload_sz = (uint32_t)len;
	e->unique = 0;
	/*
	 * The payload still lent (a READ's reply points into it; or an
	 * answer ahead of the I/O that fuse_uring_abandon found no spare
	 * slot for): the entry must not take a new request before the
	 * buffer comes back.
	 */
	if (ent_lent(u, e)) {
		e->deferred = true;
		return (ssize_t)len;
	}
	if (uring_queue(u, e, FUSE_IO_URING_CMD_COMMIT_AND_FETCH))
		return -EIO;
	return (ssize_t)len;
}

/*
 * libfuse's writev (ud: its userdata, the tapfs): a ring request's reply
 * into its entry, anything else to /dev/fuse.  Returns the bytes
 * "written", or -1 with errno.
 */
static ssize_t uring_writev(int fd, struct iovec *iov, int count, void *ud)
{
	struct tapfs *fs = ud;
	struct fuse_uring *u = fs->fuse->uring;
	struct fuse_out_header *oh = iov[0].iov_base;
	struct uring_ent *e;
	ssize_t len;

	if (!u->init_seen) {
		/* The first reply is INIT's: ask for the ring. */
		struct fuse_init_out *io = iov[1].iov_base;

		u->init_seen = true;
		if (count == 2 && !oh->error && iov[1].iov_len >=
		    offsetof(struct fuse_init_out, flags2) +
		    sizeof(io->flags2) && (io->flags & FUSE_INIT_EXT)) {
			ssize_t n;

			io->flags2 |= (uint32_t)(FUSE_OVER_IO_URING >> 32);
			n = writev(fd, iov, count);
			if (n >= 0 && uring_register(u))
				td_loop_stop(fs->engine->loop);
			return n;
		}
		td_log(TD_LOG_ERR, "uring: the INIT exchange has no room for "
		       "FUSE_OVER_IO_URING: staying on /dev/fuse");
	}
	e = oh->unique ? map_take(u, oh->unique) : NULL;
	if (!e)
		return writev(fd, iov, count);
	len = uring_commit(u, e, oh, iov + 1, count - 1);
	if (len < 0) {
		errno = (int)-len;
		return -1;
	}
	return (ssize_t)sizeof(*oh) + len;
}

static ssize_t uring_read(int fd, void *buf, size_t len, void *ud)
{
	(void)ud;
	return read(fd, buf, len);
}

static const struct fuse_custom_io uring_io = {
	.writev	= uring_writev,
	.read	= uring_read,
};

/* ---- requests ------------------------------------------------------- */

/*
 * Lay e's request out as /dev/fuse would, in place: the header and the
 * fixed argument right before the payload.  Dispatch it.
 */
static void uring_serve(struct fuse_uring *u, struct uring_ent *e)
{
	struct fuse_uring_ent_in_out *eio = &e->hdr->ring_ent_in_out;
	struct fuse_in_header in;
	struct fuse_buf fbuf;
	size_t op, payload = eio->payload_sz;
	char *p;

	memcpy(&in, e->hdr->in_out, sizeof(in));
	e->commit_id = eio->commit_id;
	e->unique = in.unique;
	/* in.len covers the header, the fixed argument and the payload. */
	if (payload > u->payload_sz || in.len < sizeof(in) + payload ||
	    (op = in.len - sizeof(in) - payload) > FUSE_URING_OP_IN_OUT_SZ) {
		struct fuse_out_header oh = {
			.error = -EIO, .unique = in.unique,
		};

		td_log(TD_LOG_ERR, "uring: request %llu (opcode %u): length "
		       "%u does not fit its payload of %zu bytes",
		       (unsigned long long)in.unique, in.opcode, in.len,
		       payload);
		uring_commit(u, e, &oh, NULL, 0);
		return;
	}
	p = e->payload - op - sizeof(in);
	memcpy(p, &in, sizeof(in));
	memcpy(p + sizeof(in), e->hdr->op_in, op);
	memset(&fbuf, 0, sizeof(fbuf));
	fbuf.mem = p;
	fbuf.size = in.len;
	map_put(u, e);
	u->served++;
	u->cur = e;
	fuse_recv_unique = in.unique;
	fuse_session_process_buf(u->st->se, &fbuf);
	u->cur = NULL;
	data_received(data_here(u->st), in.unique);
}

void *fuse_uring_lend(struct fuse_state *st, size_t need, char **buf)
{
	struct fuse_uring *u = st->uring;
	struct uring_ent *e = u ? u->cur : NULL;

	if (!e || ent_lent(u, e) || need > u->payload_sz ||
	    (*buf && *buf != e->payload))
		return NULL;
	*buf = slot_payload(u, e->slot);
	u->slots[e->slot].e = e;
	return &u->slots[e->slot];
}

void fuse_uring_abandon(struct fuse_state *st, void *token)
{
	struct fuse_uring *u = st->uring;
	struct uring_slot *s = token;
	struct uring_ent *e = s->e;
	unsigned k, old = (unsigned)(s - u->slots);

	if (e->slot != old)
		return;
	if (!u->nr_spare) {
		td_log(TD_LOG_WARN, "uring: %u requests already answered "
		       "ahead of their I/O: this answer waits for its I/O",
		       u->nr_rescue);
		return;
	}
	k = u->spare[u->nr_spare - 1];
	if (mmap(e->base, u->slot_sz, PROT_READ | PROT_WRITE,
		 MAP_SHARED | MAP_FIXED, u->memfd,
		 (off_t)k * (off_t)u->slot_sz) == MAP_FAILED) {
		td_log(TD_LOG_ERR, "uring: remapping a ring entry: %s; its "
		       "answer waits for its I/O", strerror(errno));
		return;
	}
	u->nr_spare--;
	e->slot = k;		/* a slot no one has lent */
	u->rescued++;
}

void fuse_uring_give_back(struct fuse_state *st, void *token)
{
	struct fuse_uring *u = st->uring;
	struct uring_slot *s = token;
	struct uring_ent *e = s->e;
	unsigned k = (unsigned)(s - u->slots);

	s->e = NULL;
	if (e->slot != k) {
		/* The entry moved on (fuse_uring_abandon): k is free. */
		u->spare[u->nr_spare++] = k;
		return;
	}
	if (e->deferred) {
		e->deferred = false;
		uring_queue(u, e, FUSE_IO_URING_CMD_COMMIT_AND_FETCH);
	}
}

static void uring_throttle(struct fuse_uring *u, bool on)
{
	if (u->throttled == on)
		return;
	u->throttled = on;
	td_loop_mod_event(u->st->fs->engine->loop, &u->ev, on ? 0 : EPOLLIN);
}

/* Take what the ring completed, as far as the data path has room. */
static void uring_reap(struct fuse_uring *u)
{
	struct io_uring_cqe *cqe;

	while (!io_uring_peek_cqe(&u->ring, &cqe)) {
		struct uring_ent *e = io_uring_cqe_get_data(cqe);
		int res = cqe->res;

		if (res == 0) {
			if (!data_has_room(&u->st->data)) {
				/* Back when buffers are: the hook looks. */
				uring_throttle(u, true);
				return;
			}
			io_uring_cqe_seen(&u->ring, cqe);
			uring_serve(u, e);
			continue;
		}
		io_uring_cqe_seen(&u->ring, cqe);
		if (res == -EAGAIN) {
			/* REGISTER before the kernel took the INIT reply. */
			uring_queue(u, e, FUSE_IO_URING_CMD_REGISTER);
		} else if (res != -ENOTCONN && res != -ECONNABORTED &&
			   res != -ENODEV) {
			td_log(TD_LOG_ERR, "uring: ring entry of queue %u: %s",
			       e->qid, strerror(-res));
			if (!fuse_session_exited(u->st->se))
				td_loop_stop(u->st->fs->engine->loop);
		}
	}
	uring_throttle(u, false);
}

static void uring_event(struct td_event *ev, uint32_t events)
{
	(void)events;
	uring_reap(ev->arg);
}

/* Before each loop sleep: requests held back for buffers, then submit. */
static void uring_hook(struct td_hook *h)
{
	struct fuse_uring *u = h->arg;

	if (u->throttled)
		uring_reap(u);
	uring_submit(u);
}

/* ---- setup ---------------------------------------------------------- */

/* 0 if the kernel will take FUSE_OVER_IO_URING, else why not. */
int fuse_uring_check(char *err, size_t errlen)
{
	char c = 0;
	int fd = open(URING_PARAM, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		snprintf(err, errlen, "uring: %s: %s (the kernel has no FUSE "
			 "over io_uring: Linux 6.14+ with "
			 "CONFIG_FUSE_IO_URING)", URING_PARAM, strerror(errno));
		return -EOPNOTSUPP;
	}
	if (read(fd, &c, 1) != 1)
		c = 0;
	close(fd);
	if (c != 'Y') {
		snprintf(err, errlen, "uring: FUSE over io_uring is off in "
			 "this kernel (as root: echo Y > %s)", URING_PARAM);
		return -EOPNOTSUPP;
	}
	return 0;
}

static void *uring_map(size_t len, int fd, off_t off)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       fd < 0 ? MAP_PRIVATE | MAP_ANONYMOUS : MAP_SHARED,
		       fd, off);

	return p == MAP_FAILED ? NULL : p;
}

void fuse_uring_unmount(struct fuse_state *st)
{
	struct fuse_uring *u = st->uring;
	unsigned i;

	if (!u)
		return;
	if (u->watched)
		td_loop_del_event(st->fs->engine->loop, &u->ev);
	if (u->hooked)
		td_loop_del_hook(&u->hook);
	if (u->ring_up) {
		/*
		 * Replies made since the loop's last sleep (the drain at
		 * exit answers the last requests) are owed to their clients:
		 * hand them to the kernel before the ring goes.
		 */
		uring_submit(u);
		io_uring_queue_exit(&u->ring);
	}
	if (u->registered || u->served)
		td_log(TD_LOG_INFO, "uring: %llu requests served on the ring "
		       "(%llu answered ahead of their I/O)", u->served,
		       u->rescued);
	for (i = 0; u->ent && i < u->nr_ent; i++) {
		if (u->ent[i].hdr)
			munmap(u->ent[i].hdr, sizeof(*u->ent[i].hdr));
		if (u->ent[i].base)
			munmap(u->ent[i].base, u->slot_sz);
	}
	if (u->alias)
		munmap(u->alias, (size_t)u->nr_slots * u->slot_sz);
	if (u->memfd >= 0)
		close(u->memfd);
	free(u->ent);
	free(u->slots);
	free(u->spare);
	free(u->map);
	free(u);
	st->uring = NULL;
}

int fuse_uring_mount(struct fuse_state *st, char *err, size_t errlen)
{
	long ncpu = sysconf(_SC_NPROCESSORS_CONF);
	struct io_uring_params p;
	struct fuse_uring *u;
	unsigned i;
	int rc, fd = fuse_session_fd(st->se);

	/* fuse_uring_check() passed when the options were read (main.c). */
	/* The kernel has a queue per possible CPU. */
	if (ncpu < 1 || ncpu > 4096) {
		snprintf(err, errlen, "uring: %ld CPUs?", ncpu);
		return -EINVAL;
	}
	/*
	 * Every entry has a max_write (1 MiB) payload buffer, mapped on
	 * first use: (max_background + 32) MiB per CPU at the most.
	 */
	if (st->fs->opts.max_background > URING_MAX_BACKGROUND) {
		snprintf(err, errlen, "uring: max_background=%u: at most %u "
			 "with uring (each queue has max_background + %u "
			 "entries of 1 MiB)", st->fs->opts.max_background,
			 URING_MAX_BACKGROUND, URING_SPARE);
		return -EINVAL;
	}
	u = calloc(1, sizeof(*u));
	if (!u) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	st->uring = u;
	u->st = st;
	u->nr_queues = (unsigned)ncpu;
	u->depth = st->fs->opts.max_background + URING_SPARE;
	u->nr_ent = u->nr_queues * u->depth;
	/* max(8 KiB, max_write, max_pages pages): max_write here. */
	u->payload_sz = FUSE_MAX_IO;
	u->slot_sz = URING_HEAD_ROOM + u->payload_sz;
	u->nr_rescue = u->nr_ent;
	u->nr_slots = u->nr_ent + u->nr_rescue;
	u->memfd = -1;
	u->ent = calloc(u->nr_ent, sizeof(*u->ent));
	u->slots = calloc(u->nr_slots, sizeof(*u->slots));
	u->spare = calloc(u->nr_rescue, sizeof(*u->spare));
	for (i = 1; i < 2 * u->nr_ent; i <<= 1)
		;
	u->map = calloc(i, sizeof(*u->map));
	u->map_mask = i - 1;
	rc = -ENOMEM;
	if (!u->ent || !u->slots || !u->spare || !u->map) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	/* The slots: pages come as they are first touched. */
	u->memfd = memfd_create("tapfs-uring", MFD_CLOEXEC);
	if (u->memfd < 0 || ftruncate(u->memfd, (off_t)u->nr_slots *
				      (off_t)u->slot_sz) ||
	    !(u->alias = uring_map((size_t)u->nr_slots * u->slot_sz,
				   u->memfd, 0))) {
		rc = -errno;
		snprintf(err, errlen, "uring: %u ring buffers of %zu bytes: "
			 "%s", u->nr_slots, u->slot_sz, strerror(errno));
		goto fail;
	}
	for (i = 0; i < u->nr_rescue; i++)
		u->spare[u->nr_spare++] = u->nr_ent + i;
	for (i = 0; i < u->nr_ent; i++) {
		struct uring_ent *e = &u->ent[i];

		e->qid = (uint16_t)(i / u->depth);
		e->slot = i;
		e->hdr = uring_map(sizeof(*e->hdr), -1, 0);
		e->base = uring_map(u->slot_sz, u->memfd,
				    (off_t)i * (off_t)u->slot_sz);
		if (!e->hdr || !e->base) {
			snprintf(err, errlen, "uring: cannot map %u ring "
				 "buffers of %zu bytes", u->nr_ent,
				 u->slot_sz);
			goto fail;
		}
		e->payload = e->base + URING_HEAD_ROOM;
		e->iov[0].iov_base = e->hdr;
		e->iov[0].iov_len = sizeof(*e->hdr);
		e->iov[1].iov_base = e->payload;
		e->iov[1].iov_len = u->payload_sz;
	}
	memset(&p, 0, sizeof(p));
	/*
	 * The kernel delivers each request to an entry as task work on this
	 * thread.  By default that interrupts the thread (an IPI when it
	 * runs elsewhere); COOP_TASKRUN lets it run at the thread's next
	 * entry into the kernel (a sleeping thread is still woken), and
	 * TASKRUN_FLAG has liburing's peek enter the kernel for it when no
	 * completion is waiting.  On 2 vCPUs this took a fifth to a third
	 * off the host's CPU per 4 KiB read (docs/performance.md).
	 */
	p.flags = IORING_SETUP_SQE128 | IORING_SETUP_CQSIZE |
		  IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
	p.cq_entries = 2 * u->nr_ent;
	rc = io_uring_queue_init_params(u->nr_ent, &u->ring, &p);
	if (rc) {
		snprintf(err, errlen, "uring: io_uring_setup (%u entries): %s",
			 u->nr_ent, strerror(-rc));
		goto fail;
	}
	u->ring_up = true;
	rc = io_uring_register_files(&u->ring, &fd, 1);
	if (rc) {
		snprintf(err, errlen, "uring: registering /dev/fuse with the "
			 "ring: %s", strerror(-rc));
		goto fail;
	}
	if (fuse_session_custom_io(st->se, &uring_io, fd)) {
		snprintf(err, errlen, "libfuse refused our /dev/fuse I/O");
		rc = -EINVAL;
		goto fail;
	}
	u->ev.fd = u->ring.ring_fd;
	u->ev.events = EPOLLIN;
	u->ev.cb = uring_event;
	u->ev.arg = u;
	rc = td_loop_add_event(st->fs->engine->loop, &u->ev);
	if (rc) {
		snprintf(err, errlen, "epoll: %s", strerror(-rc));
		goto fail;
	}
	u->watched = true;
	u->hook.cb = uring_hook;
	u->hook.arg = u;
	td_loop_add_hook(st->fs->engine->loop, &u->hook);
	u->hooked = true;
	return 0;
fail:
	fuse_uring_unmount(st);
	return rc;
}
