/* SPDX-License-Identifier: MIT */
/*
 * The qcow (v1) driver's cluster mapping: allocating an L2 table or a
 * data cluster at the end of the file (copy on write from the backing
 * image or a compressed cluster), and reading compressed clusters.  The
 * tables, their cache and their writes: common/td-l2.c.  The order an
 * allocation follows, and why it is crash-safe, is written down at the
 * top of qcow.c.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <tapfs/log.h>

#include "qcow-driver.h"

/* ---- allocations ----------------------------------------------------- */

struct qc_alloc *qc_alloc_find(struct qc_state *s, uint64_t gcl)
{
	struct td_list *n;

	for (n = s->active.next; n != &s->active; n = n->next) {
		struct qc_alloc *a = td_container_of(n, struct qc_alloc,
						     link);

		if (!a->table && a->gcl == gcl)
			return a;
	}
	return NULL;
}

static struct qc_alloc *qc_alloc_get(struct qc_state *s, struct td_l2 *t,
				     bool table, uint64_t gcl)
{
	struct qc_alloc *a = td_pool_get(&s->allocs);

	if (!a)
		return NULL;
	memset(a, 0, s->alloc_hdr);
	a->s = s;
	a->table = table;
	a->gcl = gcl;
	a->t = t;
	a->buf = (uint8_t *)a + s->alloc_hdr;
	td_list_init(&a->waiters);
	td_list_add_tail(&a->link, &s->active);
	t->pins++;
	return a;
}

/* The allocation is over: release it, complete its request, wake. */
static void qc_alloc_finish(struct qc_alloc *a, int err)
{
	struct qc_state *s = a->s;
	td_request_t treq = a->treq;
	struct td_list waiters;
	bool table = a->table;

	if (err)
		td_log(TD_LOG_ERR, "%s: allocating %s %" PRIu64 ": %s",
		       s->drv->name, table ? "the L2 table of L1 entry" :
		       "guest cluster", table ? a->t->index : a->gcl,
		       strerror(-err));
	a->t->pins--;
	td_list_del(&a->link);
	td_list_move(&waiters, &a->waiters);
	td_pool_put(&s->allocs, a);
	if (!table)
		td_complete_request(treq, err);
	td_meta_wake(&s->meta, &waiters, 0);
	td_meta_wake(&s->meta, &s->res_waiters, 0);
}

/* 4 done: the L2 entry is written; the write completes. */
static void qc_alloc_l2_done(struct td_meta_wait *w, int err)
{
	qc_alloc_finish(td_container_of(w, struct qc_alloc, wait), err);
}

/* 3 done: the data is durable; 4. the L2 entry. */
static void qc_alloc_synced(struct td_meta_wait *w, int err)
{
	struct qc_alloc *a = td_container_of(w, struct qc_alloc, wait);

	if (err) {
		qc_alloc_finish(a, err);
		return;
	}
	td_l2_set(a->t, a->l2i, a->host, &a->wait, qc_alloc_l2_done);
}

/* 2 done: 3. a barrier. */
static void qc_alloc_data_done(void *ctx, void *arg, int err)
{
	struct qc_state *s = ctx;
	struct qc_alloc *a = arg;

	if (err) {
		qc_alloc_finish(a, err);
		return;
	}
	td_meta_barrier(&s->meta, &a->wait, qc_alloc_synced);
}

/* Does the request cover the whole cluster (or all of a last one)? */
static bool qc_alloc_whole(const struct qc_state *s, const struct qc_alloc *a)
{
	uint64_t first = a->gcl * s->cl_secs;

	return a->treq.sec == first && (a->treq.secs == s->cl_secs ||
					first + a->treq.secs == s->vsecs);
}

/* 2. The cluster's data: the request's over the old contents. */
static void qc_alloc_write_data(struct qc_alloc *a)
{
	struct qc_state *s = a->s;
	uint64_t first = a->gcl * s->cl_secs;

	if (qc_alloc_whole(s, a)) {
		td_meta_io(&s->meta, TD_OP_WRITE, a->treq.buf,
			   (size_t)a->treq.secs << TD_SECTOR_SHIFT, a->host,
			   qc_alloc_data_done, a);
		return;
	}
	memcpy(a->buf + ((a->treq.sec - first) << TD_SECTOR_SHIFT),
	       a->treq.buf, (size_t)a->treq.secs << TD_SECTOR_SHIFT);
	td_meta_io(&s->meta, TD_OP_WRITE, a->buf, s->cs, a->host,
		   qc_alloc_data_done, a);
}

/* The old contents are in the bounce buffer (or failed). */
static void qc_alloc_filled(struct td_l2_fill *f, int err)
{
	struct qc_alloc *a = td_container_of(f, struct qc_alloc, fill);

	if (err)
		qc_alloc_finish(a, err);
	else
		qc_alloc_write_data(a);
}

static void qc_alloc_cdata_done(void *ctx, void *arg, int err)
{
	struct qc_state *s = ctx;
	struct qc_alloc *a = arg;

	if (!err && td_inflate(s->zc.zs, a->buf + s->cs, a->old.csize, a->buf,
			       s->cs)) {
		td_log(TD_LOG_ERR, "%s: compressed cluster at %" PRIu64
		       " (%u bytes) does not inflate", s->drv->name,
		       a->old.host_offset, a->old.csize);
		err = -EIO;
	}
	td_l2_fill_put(&a->fill, 1, err);
}

/* 1 done: fill the bounce buffer with what the cluster held. */
static void qc_alloc_fill(struct qc_alloc *a)
{
	struct qc_state *s = a->s;
	uint64_t first = a->gcl * s->cl_secs;
	uint64_t end = s->vsecs - first < s->cl_secs ? s->vsecs - first :
		       s->cl_secs;

	if (qc_alloc_whole(s, a)) {
		qc_alloc_write_data(a);
		return;
	}
	memset(a->buf, 0, s->cs);
	a->fill = (struct td_l2_fill){ .pending = 1, .done = qc_alloc_filled };
	if (a->old.type == QCOW_CLUSTER_COMPRESSED) {
		s->n_cow++;
		a->fill.pending++;
		td_meta_read_data(&s->meta, NULL, a->buf + s->cs,
				  a->old.csize, a->old.host_offset,
				  qc_alloc_cdata_done, a);
	} else if (s->has_backing) {
		/* The whole cluster; the request's sectors overwrite it. */
		s->n_cow++;
		td_l2_fill_parent(&a->fill, a->treq.image, (char *)a->buf,
				  first, (uint32_t)end);
	}
	td_l2_fill_put(&a->fill, 1, 0);
}

void qc_alloc_data(struct qc_state *s, struct td_l2 *t, uint32_t l2i,
		   uint64_t gcl, const struct qcow_mapping *old,
		   td_request_t treq)
{
	struct qc_alloc *a = qc_alloc_get(s, t, false, gcl);

	if (!a) {
		td_meta_park(&s->meta, &s->res_waiters, treq);
		return;
	}
	s->n_alloc++;
	a->treq = treq;
	a->l2i = l2i;
	a->old = *old;
	/* 1. A new cluster at the end of the file, never reused. */
	a->host = s->next_free;
	s->next_free += s->cs;
	qc_alloc_fill(a);
}

/* ---- L2 tables: allocate ----------------------------------------------- */

/* The L1 entry is written (or failed: the table stays usable in memory
 * until close, and its clusters are lost on a crash). */
static void qc_l2_alloc_linked(struct td_meta_wait *w, int err)
{
	struct qc_alloc *a = td_container_of(w, struct qc_alloc, wait);
	struct td_l2_tables *tb = a->t->tb;
	uint64_t i = a->t->index;

	if (err) {
		tb->l1[i] = 0;
		td_put_be64(tb->l1_disk + i * 8, 0);
	}
	td_l2_ready(a->t, err);
	qc_alloc_finish(a, err);
}

/* The zeroed table is durable: link it from the L1 table. */
static void qc_l2_alloc_synced(struct td_meta_wait *w, int err)
{
	struct qc_alloc *a = td_container_of(w, struct qc_alloc, wait);

	if (err) {
		qc_l2_alloc_linked(w, err);
		return;
	}
	td_l2_link(a->t, a->host, &a->wait, qc_l2_alloc_linked);
}

static void qc_l2_alloc_written(void *ctx, void *arg, int err)
{
	struct qc_state *s = ctx;
	struct qc_alloc *a = arg;

	if (err) {
		qc_l2_alloc_linked(&a->wait, err);
		return;
	}
	td_meta_barrier(&s->meta, &a->wait, qc_l2_alloc_synced);
}

void qc_l2_alloc(void *ctx, struct td_l2 *t, td_request_t treq)
{
	struct qc_state *s = ctx;
	struct qc_alloc *a = qc_alloc_get(s, t, true, 0);

	if (!a) {
		td_meta_park(&s->meta, &s->res_waiters, treq);
		return;
	}
	s->n_l2_alloc++;
	a->host = s->next_free;
	s->next_free += td_round_up(s->img->g.l2_bytes, s->cs);
	td_l2_write_new(t, treq, a->host, qc_l2_alloc_written, a);
}

/* ---- compressed clusters --------------------------------------------- */

static void qc_cread_done(void *ctx, void *arg, int err)
{
	struct qc_state *s = ctx;
	struct qc_cread *c = arg;
	td_request_t treq = c->treq;

	if (!err)
		err = td_zcache_fill(&s->zc, s->drv->name, c->off, c->csize,
				     c->buf);
	if (!err)
		td_zcache_copy_out(&s->zc, treq);
	td_pool_put(&s->creads, c);
	td_complete_request(treq, err);
	td_meta_wake(&s->meta, &s->res_waiters, 0);
}

void qc_read_compressed(struct qc_state *s, td_request_t treq,
			const struct qcow_mapping *m)
{
	struct qc_cread *c;

	if (td_zcache_holds(&s->zc, m->host_offset, m->csize)) {
		td_zcache_copy_out(&s->zc, treq);
		td_complete_request(treq, 0);
		return;
	}
	c = td_pool_get(&s->creads);
	if (!c) {
		td_meta_park(&s->meta, &s->res_waiters, treq);
		return;
	}
	c->s = s;
	c->treq = treq;
	c->off = m->host_offset;
	c->csize = m->csize;
	c->buf = (uint8_t *)c + s->cread_hdr;
	td_meta_read_data(&s->meta, NULL, c->buf, c->csize, c->off,
			  qc_cread_done, c);
}
