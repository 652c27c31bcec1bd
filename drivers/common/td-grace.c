/* SPDX-License-Identifier: MIT */
/*
 * td-grace: hold freed space of an image until the I/O that may still
 * touch it has ended (see td-grace.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "td-grace.h"

void td_grace_init(struct td_grace *g, td_grace_release_t release,
		   void *ctx)
{
	memset(g, 0, sizeof(*g));
	g->ep[0].g = g;
	g->ep[1].g = g;
	g->release = release;
	g->ctx = ctx;
}

static void epoch_release(struct td_grace_epoch *ep)
{
	struct td_grace *g = ep->g;
	size_t i, n = ep->n;

	if (!n)
		return;

	/* The callback must not defer (it would land in this array). */
	ep->n = 0;
	for (i = 0; i < n; i++)
		g->release(g->ctx, ep->ext[i].off, ep->ext[i].len,
			   ep->ext[i].flags);
}

/*
 * Release the old epoch's space once its I/O is over, and switch epochs
 * when space waits in the current one and the old one is idle.
 */
static void grace_advance(struct td_grace *g)
{
	for (;;) {
		struct td_grace_epoch *cur = &g->ep[g->cur];
		struct td_grace_epoch *old = &g->ep[g->cur ^ 1];

		if (old->inflight)
			return;
		if (old->n)
			epoch_release(old);
		if (!cur->n)
			return;
		g->cur ^= 1;
	}
}

struct td_grace_epoch *td_grace_begin(struct td_grace *g)
{
	struct td_grace_epoch *ep = &g->ep[g->cur];

	ep->inflight++;
	return ep;
}

void td_grace_end(struct td_grace_epoch *ep)
{
	ep->inflight--;
	if (!ep->inflight)
		grace_advance(ep->g);
}

int td_grace_defer(struct td_grace *g, uint64_t off, uint64_t len,
		   unsigned flags)
{
	struct td_grace_epoch *ep = &g->ep[g->cur];

	if (ep->n == ep->cap) {
		size_t cap = ep->cap ? ep->cap * 2 : 64;
		struct td_grace_extent *e = realloc(ep->ext, cap * sizeof(*e));

		if (!e)
			return -ENOMEM;
		ep->ext = e;
		ep->cap = cap;
	}
	ep->ext[ep->n].off = off;
	ep->ext[ep->n].len = len;
	ep->ext[ep->n].flags = flags;
	ep->n++;
	grace_advance(g);
	return 0;
}

void td_grace_release_all(struct td_grace *g)
{
	/* The older epoch first: the order space was freed in. */
	epoch_release(&g->ep[g->cur ^ 1]);
	epoch_release(&g->ep[g->cur]);
}

size_t td_grace_pending(const struct td_grace *g)
{
	return g->ep[0].n + g->ep[1].n;
}

void td_grace_fini(struct td_grace *g)
{
	free(g->ep[0].ext);
	free(g->ep[1].ext);
	g->ep[0].ext = g->ep[1].ext = NULL;
	g->ep[0].cap = g->ep[1].cap = 0;
}
