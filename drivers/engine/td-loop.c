/* SPDX-License-Identifier: MIT */
/*
 * The event loop: epoll for file descriptors, a sorted list of one-shot
 * timers, and hooks that run before every sleep (the aio queue submits its
 * batch there).  All state lives in struct td_loop so that several loops,
 * one per thread, can run side by side.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include <tapfs/engine.h>
#include <tapfs/log.h>

#define TD_LOOP_MAX_EVENTS	64

struct td_loop {
	int		epfd;
	bool		stop;		/* ends td_loop_run() */
	bool		running;	/* td_loop_run() is on the stack */
	/* The batch being dispatched; td_loop_del_event() clears entries. */
	struct epoll_event batch[TD_LOOP_MAX_EVENTS];
	int		nbatch;
	struct td_list	timers;		/* sorted by expires_ns */
	struct td_list	hooks;
};

/* This thread's last td_now_ns(). */
static __thread uint64_t td_last_now_ns;

uint64_t td_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	td_last_now_ns = (uint64_t)ts.tv_sec * 1000000000ull +
			 (uint64_t)ts.tv_nsec;
	return td_last_now_ns;
}

uint64_t td_recent_ns(void)
{
	return td_last_now_ns;
}

struct td_loop *td_loop_new(void)
{
	struct td_loop *loop = calloc(1, sizeof(*loop));

	if (!loop)
		return NULL;
	loop->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (loop->epfd < 0) {
		td_log(TD_LOG_ERR, "epoll_create1: %m");
		free(loop);
		return NULL;
	}
	td_list_init(&loop->timers);
	td_list_init(&loop->hooks);
	return loop;
}

void td_loop_free(struct td_loop *loop)
{
	if (!loop)
		return;
	close(loop->epfd);
	free(loop);
}

int td_loop_add_event(struct td_loop *loop, struct td_event *ev)
{
	struct epoll_event e = { .events = ev->events, .data.ptr = ev };

	if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, ev->fd, &e) < 0)
		return -errno;
	return 0;
}

int td_loop_mod_event(struct td_loop *loop, struct td_event *ev,
		      uint32_t events)
{
	struct epoll_event e = { .events = events, .data.ptr = ev };

	if (ev->events == events)
		return 0;
	if (epoll_ctl(loop->epfd, EPOLL_CTL_MOD, ev->fd, &e) < 0)
		return -errno;
	ev->events = events;
	return 0;
}

void td_loop_del_event(struct td_loop *loop, struct td_event *ev)
{
	int i;

	epoll_ctl(loop->epfd, EPOLL_CTL_DEL, ev->fd, NULL);
	for (i = 0; i < loop->nbatch; i++)
		if (loop->batch[i].data.ptr == ev)
			loop->batch[i].data.ptr = NULL;
}

void td_timer_init(struct td_timer *t, td_timer_cb_t cb, void *arg)
{
	td_list_init(&t->link);
	t->cb = cb;
	t->arg = arg;
	t->armed = false;
	t->expires_ns = 0;
}

void td_timer_arm(struct td_loop *loop, struct td_timer *t, uint64_t ms)
{
	struct td_list *pos;

	td_timer_cancel(t);
	t->expires_ns = td_now_ns() + ms * 1000000ull;
	/* Few timers are ever armed (retries, pauses): a sorted list. */
	for (pos = loop->timers.prev; pos != &loop->timers; pos = pos->prev) {
		struct td_timer *o = td_container_of(pos, struct td_timer, link);

		if (o->expires_ns <= t->expires_ns)
			break;
	}
	td_list_add(&t->link, pos);
	t->armed = true;
}

void td_timer_cancel(struct td_timer *t)
{
	if (!t->armed)
		return;
	td_list_del(&t->link);
	t->armed = false;
}

void td_loop_add_hook(struct td_loop *loop, struct td_hook *h)
{
	td_list_add_tail(&h->link, &loop->hooks);
}

void td_loop_del_hook(struct td_hook *h)
{
	td_list_del(&h->link);
}

static int td_loop_timeout(struct td_loop *loop, int timeout_ms)
{
	struct td_timer *t;
	uint64_t now, ms;

	if (td_list_empty(&loop->timers))
		return timeout_ms;
	t = td_container_of(loop->timers.next, struct td_timer, link);
	now = td_now_ns();
	ms = t->expires_ns > now ? (t->expires_ns - now + 999999) / 1000000 : 0;
	if (timeout_ms >= 0 && (uint64_t)timeout_ms < ms)
		return timeout_ms;
	return ms > INT32_MAX ? INT32_MAX : (int)ms;
}

static void td_loop_run_timers(struct td_loop *loop)
{
	uint64_t now = td_now_ns();

	while (!td_list_empty(&loop->timers)) {
		struct td_timer *t = td_container_of(loop->timers.next,
						     struct td_timer, link);
		if (t->expires_ns > now)
			break;
		td_timer_cancel(t);
		t->cb(t);
	}
}

static void td_loop_run_hooks(struct td_loop *loop)
{
	struct td_list *pos, *next;

	for (pos = loop->hooks.next; pos != &loop->hooks; pos = next) {
		struct td_hook *h = td_container_of(pos, struct td_hook, link);

		next = pos->next;
		h->cb(h);
	}
}

int td_loop_run_once(struct td_loop *loop, int timeout_ms)
{
	int i, n;

	td_loop_run_hooks(loop);
	if (loop->stop && loop->running)
		return 0;
	n = epoll_wait(loop->epfd, loop->batch, TD_LOOP_MAX_EVENTS,
		       td_loop_timeout(loop, timeout_ms));
	if (n < 0) {
		if (errno == EINTR)
			return 0;
		td_log(TD_LOG_ERR, "epoll_wait: %m");
		return -errno;
	}
	loop->nbatch = n;
	for (i = 0; i < n; i++) {
		struct td_event *ev = loop->batch[i].data.ptr;

		if (ev)
			ev->cb(ev, loop->batch[i].events);
	}
	loop->nbatch = 0;
	td_loop_run_timers(loop);
	return 0;
}

int td_loop_run(struct td_loop *loop)
{
	int err = 0;

	loop->stop = false;
	loop->running = true;
	while (!loop->stop && !err)
		err = td_loop_run_once(loop, -1);
	loop->running = false;
	return err;
}

void td_loop_stop(struct td_loop *loop)
{
	loop->stop = true;
}

bool td_loop_stopped(const struct td_loop *loop)
{
	return loop->stop;
}
