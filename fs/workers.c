/* SPDX-License-Identifier: MIT */
/*
 * Multi-queue workers: the loops, their threads and queues, and the
 * quiescing of workers for the control plane.  See workers.h.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <tapfs/log.h>

#include "tapfs.h"
#include "workers.h"

/* One loop.  Only its thread touches engine and the events. */
struct wloop {
	struct tapfs			*fs;
	unsigned			 id;
	struct td_engine		*engine;	/* loop 0: fs->engine */
	pthread_t			 thread;
	bool				 started;
	/* The queue: a lock-free stack, reversed by the consumer. */
	_Atomic(struct workers_msg *)	 head;
	int				 efd;
	struct td_event			 ev;
	struct workers_msg		 stop;		/* ends this loop */
	struct workers_call		 stop_main;	/* ends loop 0 */
};

struct tapfs_workers {
	unsigned		 n;
	/* Quiescing: protected by mu. */
	pthread_mutex_t		 mu;
	pthread_cond_t		 cv;
	_Atomic bool		 hold;		/* written under mu */
	unsigned		 parked;	/* workers in wloop_park */
	unsigned		 gone;		/* workers whose loop ended */
	unsigned		 depth;		/* loop 0's nesting */
	struct wloop		 loops[];
};

static __thread unsigned workers_self_id;

unsigned workers_self(void)
{
	return workers_self_id;
}

unsigned workers_count(const struct tapfs *fs)
{
	return fs->workers ? fs->workers->n : 1;
}

struct td_engine *workers_engine(struct tapfs *fs, unsigned loop)
{
	if (!fs->workers || !loop)
		return fs->engine;
	return fs->workers->loops[loop].engine;
}

/*
 * A new VBD goes to the loop that owns the fewest open VBDs, so that the
 * loops stay even as VBDs come and go (a VBD that failed to open never
 * counts).  Ties go to the lowest loop but 0, which also serves the
 * namespace and the control plane: loop 0 gets a VBD only when every
 * other loop has more.
 */
struct td_engine *workers_pick(struct tapfs *fs, unsigned *owner)
{
	struct tapfs_workers *w = fs->workers;
	unsigned owned[WORKERS_MAX] = { 0 }, i, best = 0;

	if (!w) {
		*owner = 0;
		return fs->engine;
	}
	tapfs_vbds_per_loop(fs, owned);
	for (i = w->n - 1; i >= 1; i--)
		if (owned[i] <= owned[best])
			best = i;
	*owner = best;
	return workers_engine(fs, best);
}

/* ---- queues --------------------------------------------------------- */

void workers_post(struct tapfs *fs, unsigned loop, struct workers_msg *m)
{
	struct wloop *l = &fs->workers->loops[loop];
	struct workers_msg *old = atomic_load_explicit(&l->head,
						       memory_order_relaxed);
	uint64_t one = 1;

	do {
		m->next = old;
	} while (!atomic_compare_exchange_weak_explicit(&l->head, &old, m,
			memory_order_release, memory_order_relaxed));
	/* The consumer reads the eventfd before it takes the queue. */
	if (!old && write(l->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		td_log(TD_LOG_ERR, "loop %u: eventfd: %m", loop);
}

/* Run what was posted to l, oldest first. */
static void wloop_drain(struct wloop *l)
{
	struct workers_msg *m, *fifo = NULL;

	m = atomic_exchange_explicit(&l->head, NULL, memory_order_acquire);
	while (m) {
		struct workers_msg *next = m->next;

		m->next = fifo;
		fifo = m;
		m = next;
	}
	while (fifo) {
		m = fifo;
		fifo = m->next;
		m->fn(m);
	}
}

/* A worker waits here while loop 0 holds the others. */
static void wloop_park(struct tapfs_workers *w)
{
	pthread_mutex_lock(&w->mu);
	if (atomic_load(&w->hold)) {
		w->parked++;
		pthread_cond_broadcast(&w->cv);
		while (atomic_load(&w->hold))
			pthread_cond_wait(&w->cv, &w->mu);
		w->parked--;
	}
	pthread_mutex_unlock(&w->mu);
}

static void wloop_event(struct td_event *ev, uint32_t events)
{
	struct wloop *l = ev->arg;
	uint64_t v;

	(void)events;
	if (read(l->efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		td_log(TD_LOG_ERR, "loop %u: eventfd: %m", l->id);
	wloop_drain(l);
	if (l->id && atomic_load(&l->fs->workers->hold))
		wloop_park(l->fs->workers);
}

void workers_quiesce(struct tapfs *fs)
{
	struct tapfs_workers *w = fs->workers;
	uint64_t one = 1;
	unsigned i;

	if (!w || w->depth++)
		return;
	pthread_mutex_lock(&w->mu);
	atomic_store(&w->hold, true);
	pthread_mutex_unlock(&w->mu);
	for (i = 1; i < w->n; i++)
		if (write(w->loops[i].efd, &one, sizeof(one)) < 0)
			td_log(TD_LOG_ERR, "loop %u: eventfd: %m", i);
	pthread_mutex_lock(&w->mu);
	while (w->parked + w->gone < w->n - 1)
		pthread_cond_wait(&w->cv, &w->mu);
	pthread_mutex_unlock(&w->mu);
}

void workers_release(struct tapfs *fs)
{
	struct tapfs_workers *w = fs->workers;

	if (!w || --w->depth)
		return;
	pthread_mutex_lock(&w->mu);
	atomic_store(&w->hold, false);
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

/* ---- calls to loop 0 -------------------------------------------------- */

static void main_call_run(struct workers_msg *m)
{
	struct workers_call *c = td_container_of(m, struct workers_call, msg);

	workers_on_main(c->fs, c, c->fn, c->obj, c->arg, c->err);
}

void workers_on_main(struct tapfs *fs, struct workers_call *c,
		     workers_main_fn fn, void *obj, void *arg, int err)
{
	if (!fs->workers) {
		fn(obj, arg, err);
		return;
	}
	if (!workers_self_id) {
		workers_quiesce(fs);
		fn(obj, arg, err);
		workers_release(fs);
		return;
	}
	c->msg.fn = main_call_run;
	c->fs = fs;
	c->fn = fn;
	c->obj = obj;
	c->arg = arg;
	c->err = err;
	workers_post(fs, 0, &c->msg);
}

/* ---- threads ---------------------------------------------------------- */

static void wloop_stop(struct workers_msg *m)
{
	struct wloop *l = td_container_of(m, struct wloop, stop);

	td_loop_stop(l->engine->loop);
}

static void main_stop(void *obj, void *arg, int err)
{
	struct tapfs *fs = arg;

	(void)obj;
	(void)err;
	td_loop_stop(fs->engine->loop);
}

void workers_stop_all(struct tapfs *fs)
{
	unsigned self = workers_self_id;

	td_loop_stop(workers_engine(fs, self)->loop);
	if (self && fs->workers)
		workers_on_main(fs, &fs->workers->loops[self].stop_main,
				main_stop, NULL, fs, 0);
}

static void *wloop_main(void *arg)
{
	struct wloop *l = arg;
	struct tapfs_workers *w = l->fs->workers;
	int rc;

	workers_self_id = l->id;
	rc = td_loop_run(l->engine->loop);
	if (rc)
		td_log(TD_LOG_ERR, "loop %u: %s", l->id, strerror(-rc));
	pthread_mutex_lock(&w->mu);
	w->gone++;
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

int workers_start(struct tapfs *fs)
{
	struct tapfs_workers *w = fs->workers;
	unsigned i;
	int rc;

	if (!w)
		return 0;
	for (i = 1; i < w->n; i++) {
		rc = pthread_create(&w->loops[i].thread, NULL, wloop_main,
				    &w->loops[i]);
		if (rc) {
			td_log(TD_LOG_ERR, "starting loop %u: %s", i,
			       strerror(rc));
			workers_stop(fs);
			return -rc;
		}
		w->loops[i].started = true;
	}
	return 0;
}

void workers_stop(struct tapfs *fs)
{
	struct tapfs_workers *w = fs->workers;
	unsigned i;

	if (!w)
		return;
	for (i = 1; i < w->n; i++)
		if (w->loops[i].started)
			workers_post(fs, i, &w->loops[i].stop);
	for (i = 1; i < w->n; i++) {
		if (!w->loops[i].started)
			continue;
		pthread_join(w->loops[i].thread, NULL);
		w->loops[i].started = false;
	}
	/* What loop 0 was sent meanwhile (a main call) runs in its loop. */
}

int workers_run_once(struct tapfs *fs, unsigned loop, int timeout_ms)
{
	unsigned self = workers_self_id;
	int rc;

	workers_self_id = loop;
	rc = td_loop_run_once(workers_engine(fs, loop)->loop, timeout_ms);
	workers_self_id = self;
	return rc;
}

/* Bounds workers_flush should what runs keep posting. */
#define WORKERS_FLUSH_ROUNDS	64

void workers_flush(struct tapfs *fs)
{
	struct tapfs_workers *w = fs->workers;
	unsigned i, round;
	bool more = true;

	if (!w)
		return;		/* one loop: nothing is posted */
	for (round = 0; more && round < WORKERS_FLUSH_ROUNDS; round++) {
		more = false;
		for (i = 0; i < w->n; i++) {
			if (!atomic_load(&w->loops[i].head))
				continue;
			more = true;
			workers_run_once(fs, i, 0);
		}
	}
	if (more)
		td_log(TD_LOG_WARN, "loops still busy after %d rounds",
		       WORKERS_FLUSH_ROUNDS);
}

/* ---- set-up ----------------------------------------------------------- */

static int wloop_init(struct tapfs *fs, struct wloop *l, unsigned id)
{
	int rc;

	l->fs = fs;
	l->id = id;
	l->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (l->efd < 0)
		return -errno;
	l->stop.fn = wloop_stop;
	l->ev.fd = l->efd;
	l->ev.events = EPOLLIN;
	l->ev.cb = wloop_event;
	l->ev.arg = l;
	rc = td_loop_add_event(l->engine->loop, &l->ev);
	if (rc) {
		close(l->efd);
		l->efd = -1;
	}
	return rc;
}

int workers_new(struct tapfs *fs, unsigned n,
		struct td_engine *(*new_engine)(struct tapfs *fs),
		char *err, size_t errlen)
{
	struct tapfs_workers *w;
	unsigned i;
	int rc = 0;

	if (n <= 1)
		return 0;
	w = calloc(1, sizeof(*w) + n * sizeof(w->loops[0]));
	if (!w) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	w->n = n;
	for (i = 0; i < n; i++)
		w->loops[i].efd = -1;
	fs->workers = w;
	for (i = 0; i < n && !rc; i++) {
		w->loops[i].engine = i ? new_engine(fs) : fs->engine;
		if (!w->loops[i].engine) {
			snprintf(err, errlen, "cannot start the engine of "
				 "loop %u (see the log)", i);
			rc = -ENOMEM;
			break;
		}
		/* One lock table: one writer per image across the loops. */
		if (i)
			td_engine_join(w->loops[i].engine, fs->engine);
		rc = wloop_init(fs, &w->loops[i], i);
		if (rc)
			snprintf(err, errlen, "loop %u: %s", i, strerror(-rc));
	}
	if (rc)
		workers_free(fs);
	return rc;
}

void workers_free(struct tapfs *fs)
{
	struct tapfs_workers *w = fs->workers;
	unsigned i;

	if (!w)
		return;
	for (i = 0; i < w->n; i++) {
		struct wloop *l = &w->loops[i];

		if (l->efd >= 0) {
			td_loop_del_event(l->engine->loop, &l->ev);
			close(l->efd);
		}
		if (i && l->engine)
			td_engine_free(l->engine);
	}
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->cv);
	free(w);
	fs->workers = NULL;
}
