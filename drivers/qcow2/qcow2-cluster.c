/* SPDX-License-Identifier: MIT */
/*
 * The qcow2 driver's cluster mapping: allocating a cluster for a write
 * (copy on write from the backing image, a shared or a compressed
 * cluster), discarding one, allocating L2 tables, and reading compressed
 * clusters.  The tables themselves, their writes and loads:
 * common/td-l2.c.  The order an allocation follows, and why it is
 * crash-safe, is written down at the top of qcow2.c.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <tapfs/engine.h>
#include <tapfs/log.h>

#include "qcow2-driver.h"

/* ---- allocations ----------------------------------------------------- */

static struct q2_state *q2_of(struct q2_alloc *a)
{
	return a->r.tb->m->ctx;
}

static struct q2_alloc *q2_alloc_get(struct q2_state *s, struct td_l2 *t,
				     enum td_l2_alloc_kind kind, uint64_t gcl)
{
	return (struct q2_alloc *)td_l2_alloc_get(&s->tables, kind, t, gcl);
}

/* 5. The old host cluster is unreferenced on disk: free it. */
static void q2_alloc_freed(struct td_meta_wait *w, int err)
{
	struct q2_alloc *a = td_container_of(w, struct q2_alloc, r.wait);

	if (!err)
		q2_unref_mapping(q2_of(a), &a->old);
	td_l2_alloc_finish(&a->r, err);
}

/* 4 done: the L2 entry is written. */
static void q2_alloc_l2_done(struct td_meta_wait *w, int err)
{
	struct q2_alloc *a = td_container_of(w, struct q2_alloc, r.wait);

	if (err || !q2_mapping_owns(&a->old)) {
		td_l2_alloc_finish(&a->r, err);
		return;
	}
	td_meta_barrier(&q2_of(a)->meta, &a->r.wait, q2_alloc_freed);
}

/* 3 done: the new cluster is counted and its data durable. */
static void q2_alloc_committed(struct td_meta_wait *w, int err)
{
	struct q2_alloc *a = td_container_of(w, struct q2_alloc, r.wait);

	if (err) {
		td_l2_alloc_finish(&a->r, err);
		return;
	}
	td_l2_set(a->r.t, a->r.l2i, a->r.host | QCOW2_OFLAG_COPIED, &a->r.wait,
		  q2_alloc_l2_done);
}

/* 2 done: 3. the refcount commit. */
void q2_alloc_written(void *ctx, void *arg, int err)
{
	struct q2_state *s = ctx;
	struct q2_alloc *a = arg;

	if (err) {
		td_l2_alloc_finish(&a->r, err);
		return;
	}
	td_meta_seq_wait(&s->commit_seq, &a->r.wait, q2_alloc_committed);
}

/*
 * Does the new cluster already read as zeros?  Clusters past the end of
 * the file at open were never written, or were data clusters punched out
 * when freed (unless punching ever failed).
 */
static bool q2_alloc_fresh(const struct q2_state *s, const struct q2_alloc *a)
{
	return s->punch_ok &&
	       (a->r.host >> s->g->cluster_bits) >= s->fresh_from;
}

static void q2_alloc_own_read_done(void *ctx, void *arg, int err)
{
	struct q2_alloc *a = arg;

	(void)ctx;
	td_l2_fill_put(&a->r.fill, 1, err);
}

/* Read sectors [from, to) of the cluster from the backing image. */
static void q2_alloc_read_parent(struct q2_alloc *a, uint64_t from,
				 uint64_t to)
{
	if (from < to)
		td_l2_fill_parent(&a->r.fill, a->r.treq.image,
				  (char *)a->r.buf + (from << TD_SECTOR_SHIFT),
				  a->r.gcl * q2_of(a)->cl_secs + from,
				  (uint32_t)(to - from));
}

/* 2 (before): fill the bounce buffer with what the cluster held. */
static void q2_alloc_fill(struct q2_alloc *a)
{
	struct q2_state *s = q2_of(a);
	uint64_t first = a->r.gcl * s->cl_secs, in = a->r.treq.sec - first;
	uint64_t end = s->vsecs - first < s->cl_secs ? s->vsecs - first :
		       s->cl_secs, head, tail;

	if (td_l2_covers(&s->tables, a->r.treq, a->r.gcl) &&
	    a->r.treq.op == TD_OP_WRITE) {
		td_l2_alloc_write(&a->r);
		return;
	}
	/* Zeros around the data, in a cluster that holds zeros already. */
	if (a->r.treq.op == TD_OP_WRITE && q2_alloc_fresh(s, a) &&
	    (a->old.type == QCOW2_CLUSTER_ZERO_PLAIN ||
	     a->old.type == QCOW2_CLUSTER_ZERO_ALLOC ||
	     (a->old.type == QCOW2_CLUSTER_UNALLOCATED && !s->has_backing))) {
		td_l2_alloc_write_direct(&a->r);
		return;
	}
	memset(a->r.buf, 0, s->cs);
	td_l2_alloc_fill(&a->r);
	switch (a->old.type) {
	case QCOW2_CLUSTER_UNALLOCATED:
		if (!s->has_backing)
			break;
		/* 4 KiB-aligned pieces (O_DIRECT parents); the sectors the
		 * write covers are overwritten afterwards. */
		head = td_round_up(in, Q2_SECS_ALIGN);
		tail = td_round_down(in + a->r.treq.secs, Q2_SECS_ALIGN);
		if (head > end)
			head = end;
		if (head >= tail) {
			q2_alloc_read_parent(a, 0, end);
			break;
		}
		q2_alloc_read_parent(a, 0, head);
		q2_alloc_read_parent(a, tail, end);
		break;
	case QCOW2_CLUSTER_NORMAL:
		s->n_cow++;
		a->r.fill.pending++;
		td_meta_read_data(&s->meta, td_grace_begin(&s->grace), a->r.buf,
				  s->cs, a->old.host_offset,
				  q2_alloc_own_read_done, a);
		break;
	case QCOW2_CLUSTER_COMPRESSED:
		s->n_cow++;
		if (td_l2_alloc_read_compressed(&a->r, a->old.host_offset,
						a->old.csize))
			a->r.fill.err = -EBUSY;	/* retried by the engine */
		break;
	default:
		break;		/* zero clusters: zeros */
	}
	td_l2_fill_put(&a->r.fill, 1, 0);
}

/* A write (or zeroing) of treq, inside guest cluster gcl, needs a new
 * cluster; old is what the entry held. */
void q2_alloc_data(struct q2_state *s, struct td_l2 *t, uint32_t l2i,
		   uint64_t gcl, const struct qcow2_mapping *old,
		   td_request_t treq)
{
	struct q2_alloc *a;
	int err;

	if (q2_check_meta_old(s, old, gcl)) {
		td_complete_request(treq, -EIO);
		return;
	}
	a = q2_alloc_get(s, t, TD_L2_ALLOC_DATA, gcl);
	if (!a) {
		td_meta_park(&s->meta, &s->res_waiters, treq);
		return;
	}
	a->r.treq = treq;
	a->r.l2i = l2i;
	a->old = *old;
	/* 1. A free cluster, counted in memory. */
	err = q2_alloc_cluster(s, &a->r.host);
	if (err) {
		td_l2_alloc_finish(&a->r, err);
		return;
	}
	q2_alloc_fill(a);
}

/* A discard of the whole guest cluster gcl: the entry, then the free. */
void q2_discard_cluster(struct q2_state *s, struct td_l2 *t,
			uint32_t l2i, uint64_t gcl,
			const struct qcow2_mapping *old,
			td_request_t treq)
{
	struct q2_alloc *a;

	if (q2_check_meta_old(s, old, gcl)) {
		td_complete_request(treq, -EIO);
		return;
	}
	a = q2_alloc_get(s, t, TD_L2_ALLOC_DISCARD, gcl);
	if (!a) {
		td_meta_park(&s->meta, &s->res_waiters, treq);
		return;
	}
	s->n_discard++;
	a->r.treq = treq;
	a->r.l2i = l2i;
	a->old = *old;
	td_l2_set(t, l2i, s->has_backing ? QCOW2_OFLAG_ZERO : 0, &a->r.wait,
		  q2_alloc_l2_done);
}

/* ---- L2 tables: allocate --------------------------------------------- */

static void q2_l2_alloc_l1_done(struct td_meta_wait *w, int err)
{
	struct q2_alloc *a = td_container_of(w, struct q2_alloc, r.wait);
	struct q2_state *s = q2_of(a);
	struct td_l2 *t = a->r.t;

	if (err) {
		/* The entry stays in memory: the table is usable. */
		td_log(TD_LOG_ERR, "%s: L1 entry %" PRIu64 " not written",
		       s->drv->name, t->index);
	}
	td_l2_ready(t, 0);
	td_l2_alloc_finish(&a->r, err);
}

static void q2_l2_alloc_committed(struct td_meta_wait *w, int err)
{
	struct q2_alloc *a = td_container_of(w, struct q2_alloc, r.wait);

	if (err) {
		td_l2_ready(a->r.t, err);
		td_l2_alloc_finish(&a->r, err);
		return;
	}
	td_l2_link(a->r.t, a->r.host | QCOW2_OFLAG_COPIED, &a->r.wait,
		   q2_l2_alloc_l1_done);
}

static void q2_l2_alloc_written(void *ctx, void *arg, int err)
{
	struct q2_state *s = ctx;
	struct q2_alloc *a = arg;

	if (err) {
		td_l2_ready(a->r.t, err);
		td_l2_alloc_finish(&a->r, err);
		return;
	}
	td_meta_seq_wait(&s->commit_seq, &a->r.wait, q2_l2_alloc_committed);
}

/* A new, empty L2 table for L1 entry t->index; treq waits for it. */
void q2_l2_alloc(void *ctx, struct td_l2 *t, td_request_t treq)
{
	struct q2_state *s = ctx;
	struct q2_alloc *a = q2_alloc_get(s, t, TD_L2_ALLOC_TABLE, t->index);
	int err;

	if (!a) {
		td_meta_park(&s->meta, &s->res_waiters, treq);
		return;
	}
	err = q2_alloc_cluster(s, &a->r.host);
	/* An L2 table is metadata from now on. */
	if (!err && qcow2_image_meta_add(s->img,
					 a->r.host >> s->g->cluster_bits)) {
		q2_set_refcount(s, a->r.host >> s->g->cluster_bits, 0);
		err = -ENOMEM;
	}
	if (err) {
		td_l2_alloc_finish(&a->r, err);
		td_complete_request(treq, err);
		return;
	}
	td_l2_write_new(t, treq, a->r.host, q2_l2_alloc_written, a);
}
