/* SPDX-License-Identifier: MIT */
/*
 * The qcow (v1) driver's cluster mapping: allocating an L2 table or a
 * data cluster at the end of the file (copy on write from the backing
 * image or a compressed cluster).  The tables, their cache and their
 * writes, compressed reads: common/td-l2.c.  The order an
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

static struct qc_state *qc_of(struct qc_alloc *a)
{
	return a->r.tb->m->ctx;
}

static struct qc_alloc *qc_alloc_get(struct qc_state *s, struct td_l2 *t,
				     enum td_l2_alloc_kind kind, uint64_t gcl)
{
	return (struct qc_alloc *)td_l2_alloc_get(&s->tables, kind, t, gcl);
}

/* 4 done: the L2 entry is written; the write completes. */
static void qc_alloc_l2_done(struct td_meta_wait *w, int err)
{
	td_l2_alloc_finish(td_container_of(w, struct td_l2_alloc, wait), err);
}

/* 3 done: the data is durable; 4. the L2 entry. */
static void qc_alloc_synced(struct td_meta_wait *w, int err)
{
	struct qc_alloc *a = td_container_of(w, struct qc_alloc, r.wait);

	if (err) {
		td_l2_alloc_finish(&a->r, err);
		return;
	}
	td_l2_set(a->r.t, a->r.l2i, a->r.host, &a->r.wait, qc_alloc_l2_done);
}

/* 2 done: 3. a barrier. */
void qc_alloc_written(void *ctx, void *arg, int err)
{
	struct qc_state *s = ctx;
	struct qc_alloc *a = arg;

	if (err) {
		td_l2_alloc_finish(&a->r, err);
		return;
	}
	td_meta_barrier(&s->meta, &a->r.wait, qc_alloc_synced);
}

static void qc_alloc_cdata_done(void *ctx, void *arg, int err)
{
	struct qc_state *s = ctx;
	struct qc_alloc *a = arg;

	if (!err)
		err = td_zcache_inflate(&s->tables.zc, s->drv->name,
					a->old.host_offset, a->old.csize,
					a->r.buf + s->cs, a->r.buf);
	td_l2_fill_put(&a->r.fill, 1, err);
}

/* 1 done: fill the bounce buffer with what the cluster held. */
static void qc_alloc_fill(struct qc_alloc *a)
{
	struct qc_state *s = qc_of(a);
	uint64_t first = a->r.gcl * s->cl_secs;
	uint64_t end = s->vsecs - first < s->cl_secs ? s->vsecs - first :
		       s->cl_secs;

	if (td_l2_covers(&s->tables, a->r.treq, a->r.gcl)) {
		td_l2_alloc_write(&a->r);
		return;
	}
	memset(a->r.buf, 0, s->cs);
	td_l2_alloc_fill(&a->r);
	if (a->old.type == QCOW_CLUSTER_COMPRESSED) {
		s->n_cow++;
		a->r.fill.pending++;
		td_meta_read_data(&s->meta, NULL, a->r.buf + s->cs,
				  a->old.csize, a->old.host_offset,
				  qc_alloc_cdata_done, a);
	} else if (s->has_backing) {
		/* The whole cluster; the request's sectors overwrite it. */
		s->n_cow++;
		td_l2_fill_parent(&a->r.fill, a->r.treq.image,
				  (char *)a->r.buf, first, (uint32_t)end);
	}
	td_l2_fill_put(&a->r.fill, 1, 0);
}

void qc_alloc_data(struct qc_state *s, struct td_l2 *t, uint32_t l2i,
		   uint64_t gcl, const struct qcow_mapping *old,
		   td_request_t treq)
{
	struct qc_alloc *a = qc_alloc_get(s, t, TD_L2_ALLOC_DATA, gcl);

	if (!a) {
		td_meta_park(&s->meta, &s->res_waiters, treq);
		return;
	}
	s->n_alloc++;
	a->r.treq = treq;
	a->r.l2i = l2i;
	a->old = *old;
	/* 1. A new cluster at the end of the file, never reused. */
	a->r.host = s->next_free;
	s->next_free += s->cs;
	qc_alloc_fill(a);
}

/* ---- L2 tables: allocate ----------------------------------------------- */

/* The L1 entry is written (or failed: the table stays usable in memory
 * until close, and its clusters are lost on a crash). */
static void qc_l2_alloc_linked(struct td_meta_wait *w, int err)
{
	struct qc_alloc *a = td_container_of(w, struct qc_alloc, r.wait);
	struct td_l2_tables *tb = a->r.t->tb;
	uint64_t i = a->r.t->index;

	if (err) {
		tb->l1[i] = 0;
		td_put_be64(tb->l1_disk + i * 8, 0);
	}
	td_l2_ready(a->r.t, err);
	td_l2_alloc_finish(&a->r, err);
}

/* The zeroed table is durable: link it from the L1 table. */
static void qc_l2_alloc_synced(struct td_meta_wait *w, int err)
{
	struct qc_alloc *a = td_container_of(w, struct qc_alloc, r.wait);

	if (err) {
		qc_l2_alloc_linked(w, err);
		return;
	}
	td_l2_link(a->r.t, a->r.host, &a->r.wait, qc_l2_alloc_linked);
}

static void qc_l2_alloc_written(void *ctx, void *arg, int err)
{
	struct qc_state *s = ctx;
	struct qc_alloc *a = arg;

	if (err) {
		qc_l2_alloc_linked(&a->r.wait, err);
		return;
	}
	td_meta_barrier(&s->meta, &a->r.wait, qc_l2_alloc_synced);
}

void qc_l2_alloc(void *ctx, struct td_l2 *t, td_request_t treq)
{
	struct qc_state *s = ctx;
	struct qc_alloc *a = qc_alloc_get(s, t, TD_L2_ALLOC_TABLE, t->index);

	if (!a) {
		td_meta_park(&s->meta, &s->res_waiters, treq);
		return;
	}
	s->n_l2_alloc++;
	a->r.host = s->next_free;
	s->next_free += td_round_up(s->img->g.l2_bytes, s->cs);
	td_l2_write_new(t, treq, a->r.host, qc_l2_alloc_written, a);
}
