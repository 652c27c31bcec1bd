/* SPDX-License-Identifier: MIT */
/*
 * The qcow2 driver's cluster mapping: the L1 and L2 tables in memory and
 * their group-commit writes, allocating a cluster for a write (copy on
 * write from the backing image, a shared or a compressed cluster),
 * discarding one, loading and allocating L2 tables, and reading
 * compressed clusters.  The order an allocation follows, and why it is
 * crash-safe, is written down at the top of qcow2.c.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <tapfs/engine.h>
#include <tapfs/log.h>

#include "qcow2-driver.h"

/* ---- sequencers: L1, L2 (barrier: td-meta) --------------------------- */

void q2_l1_failed(struct td_meta_seq *q, int err)
{
	struct q2_state *s = q->m->ctx;

	td_log(TD_LOG_ERR, "%s: writing the L1 table: %s", s->drv->name,
	       strerror(-err));
	s->meta_error = true;
}

void q2_l1_issue(struct td_meta_seq *q)
{
	struct q2_state *s = q->m->ctx;
	uint64_t lo, hi;

	lo = td_round_down(s->l1_lo * 8, s->io_align);
	hi = td_round_up((s->l1_hi + 1) * 8, s->io_align);
	if (hi > s->l1_bytes)
		hi = s->l1_bytes;
	s->l1_dirty = false;
	td_meta_seq_io(q, TD_OP_WRITE, s->l1_disk + lo, hi - lo,
		       s->img->h.l1_table_offset + lo);
}

static void q2_l1_set(struct q2_state *s, uint64_t i, uint64_t entry)
{
	s->l1[i] = entry;
	td_put_be64(s->l1_disk + i * 8, entry);
	if (!s->l1_dirty || i < s->l1_lo)
		s->l1_lo = i;
	if (!s->l1_dirty || i > s->l1_hi)
		s->l1_hi = i;
	s->l1_dirty = true;
}

static void q2_l2_failed(struct td_meta_seq *q, int err)
{
	struct q2_state *s = q->m->ctx;
	struct q2_l2 *t = td_container_of(q, struct q2_l2, seq);

	td_log(TD_LOG_ERR, "%s: writing the L2 table of L1 entry %" PRIu64
	       ": %s", s->drv->name, t->index, strerror(-err));
	s->meta_error = true;
}

static void q2_l2_issue(struct td_meta_seq *q)
{
	struct q2_state *s = q->m->ctx;
	struct q2_l2 *t = td_container_of(q, struct q2_l2, seq);
	uint64_t lo, hi, esz = s->g->l2_entry_size;

	lo = td_round_down(t->lo * esz, s->io_align);
	hi = td_round_up((t->hi + 1) * esz, s->io_align);
	if (hi > s->cs)
		hi = s->cs;
	t->dirty = false;
	td_meta_seq_io(q, TD_OP_WRITE, t->buf + lo, hi - lo,
		       (s->l1[t->index] & QCOW2_OFFSET_MASK) + lo);
}

/* Set entry i of table t in memory and queue w for the write of it. */
static void q2_l2_set(struct q2_state *s, struct q2_l2 *t, uint32_t i,
		      uint64_t entry, struct td_meta_wait *w,
		      td_meta_wait_fn done)
{
	td_put_be64(t->buf + (size_t)i * s->g->l2_entry_size, entry);
	if (!t->dirty || i < t->lo)
		t->lo = i;
	if (!t->dirty || i > t->hi)
		t->hi = i;
	t->dirty = true;
	td_meta_seq_wait(&t->seq, w, done);
}

/* ---- allocations ----------------------------------------------------- */

static struct td_list *q2_bucket(struct q2_state *s, uint64_t gcl)
{
	return &s->hash[(gcl * 0x9e3779b97f4a7c15ull) >> 54 &
			(Q2_HASH_BUCKETS - 1)];
}

struct q2_alloc *q2_alloc_find(struct q2_state *s, uint64_t gcl)
{
	struct td_list *b = q2_bucket(s, gcl), *n;

	for (n = b->next; n != b; n = n->next) {
		struct q2_alloc *a = td_container_of(n, struct q2_alloc,
						     hash_link);

		if (a->gcl == gcl && a->kind != A_L2)
			return a;
	}
	return NULL;
}

static struct q2_alloc *q2_alloc_get(struct q2_state *s,
				     enum q2_alloc_kind kind, uint64_t gcl)
{
	struct q2_alloc *a = td_pool_get(&s->allocs);

	if (!a)
		return NULL;
	memset(a, 0, s->alloc_hdr);
	a->s = s;
	a->kind = kind;
	a->gcl = gcl;
	a->buf = (uint8_t *)a + s->alloc_hdr;
	td_list_init(&a->waiters);
	td_list_init(&a->hash_link);
	if (kind != A_L2)
		td_list_add_tail(&a->hash_link, q2_bucket(s, gcl));
	return a;
}

/* The allocation is over: release it, complete its request, wake. */
static void q2_alloc_finish(struct q2_alloc *a, int err)
{
	struct q2_state *s = a->s;
	td_request_t treq = a->treq;
	struct td_list waiters;
	enum q2_alloc_kind kind = a->kind;

	if (err)
		td_log(TD_LOG_ERR, "%s: %s %" PRIu64 ": %s", s->drv->name,
		       kind == A_DISCARD ? "discarding guest cluster" :
		       kind == A_L2 ? "allocating the L2 table of L1 entry" :
		       "allocating guest cluster", a->gcl, strerror(-err));
	td_list_del(&a->hash_link);
	td_list_move(&waiters, &a->waiters);
	td_pool_put(&s->allocs, a);
	if (kind != A_L2)
		td_complete_request(treq, err);
	td_meta_wake(&s->meta, &waiters, 0);
	td_meta_wake(&s->meta, &s->res_waiters, 0);
}

/* 5. The old host cluster is unreferenced on disk: free it. */
static void q2_alloc_freed(struct td_meta_wait *w, int err)
{
	struct q2_alloc *a = td_container_of(w, struct q2_alloc, wait);

	if (!err)
		q2_unref_mapping(a->s, &a->old);
	q2_alloc_finish(a, err);
}

/* 4 done: the L2 entry is written. */
static void q2_alloc_l2_done(struct td_meta_wait *w, int err)
{
	struct q2_alloc *a = td_container_of(w, struct q2_alloc, wait);

	if (err || !q2_mapping_owns(&a->old)) {
		q2_alloc_finish(a, err);
		return;
	}
	td_meta_barrier(&a->s->meta, &a->wait, q2_alloc_freed);
}

/* 3 done: the new cluster is counted and its data durable. */
static void q2_alloc_committed(struct td_meta_wait *w, int err)
{
	struct q2_alloc *a = td_container_of(w, struct q2_alloc, wait);
	struct q2_state *s = a->s;

	if (err) {
		q2_alloc_finish(a, err);
		return;
	}
	q2_l2_set(s, a->l2, a->l2i, a->host | QCOW2_OFLAG_COPIED, &a->wait,
		  q2_alloc_l2_done);
}

static void q2_alloc_data_done(void *ctx, void *arg, int err)
{
	struct q2_state *s = ctx;
	struct q2_alloc *a = arg;

	if (err) {
		q2_alloc_finish(a, err);
		return;
	}
	td_meta_seq_wait(&s->commit_seq, &a->wait, q2_alloc_committed);
}

/* Write the request's data alone at its place in the new cluster. */
static void q2_alloc_write_direct(struct q2_alloc *a)
{
	struct q2_state *s = a->s;
	uint64_t in = a->treq.sec - a->gcl * s->cl_secs;

	td_meta_io(&s->meta, TD_OP_WRITE, a->treq.buf,
		   (size_t)a->treq.secs << TD_SECTOR_SHIFT,
		   a->host + (in << TD_SECTOR_SHIFT), q2_alloc_data_done, a);
}

/*
 * Does the new cluster already read as zeros?  Clusters past the end of
 * the file at open were never written, or were data clusters punched out
 * when freed (unless punching ever failed).
 */
static bool q2_alloc_fresh(const struct q2_state *s, const struct q2_alloc *a)
{
	return s->punch_ok && (a->host >> s->g->cluster_bits) >= s->fresh_from;
}

/* 2. The whole cluster's data, from the bounce buffer or the request. */
static void q2_alloc_write_data(struct q2_alloc *a)
{
	struct q2_state *s = a->s;
	uint64_t first = a->gcl * s->cl_secs;

	if (a->treq.sec == first && (a->treq.secs == s->cl_secs ||
				     first + a->treq.secs == s->vsecs)) {
		q2_alloc_write_direct(a);
		return;
	}
	if (a->treq.op == TD_OP_WRITE)
		memcpy(a->buf + ((a->treq.sec - first) << TD_SECTOR_SHIFT),
		       a->treq.buf, (size_t)a->treq.secs << TD_SECTOR_SHIFT);
	else
		memset(a->buf + ((a->treq.sec - first) << TD_SECTOR_SHIFT), 0,
		       (size_t)a->treq.secs << TD_SECTOR_SHIFT);
	td_meta_io(&s->meta, TD_OP_WRITE, a->buf, s->cs, a->host,
		   q2_alloc_data_done, a);
}

/* n units of the old contents arrived (sectors from the backing image,
 * 1 for a read of this file or the guard). */
static void q2_alloc_fill_put(struct q2_alloc *a, unsigned n, int err)
{
	if (err && !a->err)
		a->err = err;
	a->pending -= n;
	if (a->pending)
		return;
	if (a->err) {
		q2_alloc_finish(a, a->err);
		return;
	}
	q2_alloc_write_data(a);
}

static void q2_alloc_fill_done(struct q2_alloc *a, int err)
{
	q2_alloc_fill_put(a, 1, err);
}

/* Completion of a forwarded read comes by pieces: count sectors. */
static void q2_alloc_parent_done(td_request_t treq, int err)
{
	q2_alloc_fill_put(treq.cb_data, treq.secs, err);
}

static void q2_alloc_own_read_done(void *ctx, void *arg, int err)
{
	(void)ctx;
	q2_alloc_fill_done(arg, err);
}

/* Read sectors [from, to) of the cluster from the backing image. */
static void q2_alloc_read_parent(struct q2_alloc *a, uint64_t from,
				 uint64_t to)
{
	struct q2_state *s = a->s;
	uint64_t first = a->gcl * s->cl_secs;
	td_request_t r = {
		.op = TD_OP_READ,
		.buf = (char *)a->buf + (from << TD_SECTOR_SHIFT),
		.sec = first + from,
		.secs = (uint32_t)(to - from),
		.image = a->treq.image,
		.cb = q2_alloc_parent_done,
		.cb_data = a,
	};

	if (from >= to)
		return;
	a->pending += r.secs;
	td_forward_request(r);
}

static void q2_cread_start(struct q2_state *s, struct q2_cread *c);

/* 2 (before): fill the bounce buffer with what the cluster held. */
static void q2_alloc_fill(struct q2_alloc *a)
{
	struct q2_state *s = a->s;
	uint64_t first = a->gcl * s->cl_secs, in = a->treq.sec - first;
	uint64_t end = s->vsecs - first < s->cl_secs ? s->vsecs - first :
		       s->cl_secs, head, tail;
	struct q2_cread *c;

	if (a->treq.sec == first && (a->treq.secs == s->cl_secs ||
				     first + a->treq.secs == s->vsecs) &&
	    a->treq.op == TD_OP_WRITE) {
		q2_alloc_write_data(a);
		return;
	}
	/* Zeros around the data, in a cluster that holds zeros already. */
	if (a->treq.op == TD_OP_WRITE && q2_alloc_fresh(s, a) &&
	    (a->old.type == QCOW2_CLUSTER_ZERO_PLAIN ||
	     a->old.type == QCOW2_CLUSTER_ZERO_ALLOC ||
	     (a->old.type == QCOW2_CLUSTER_UNALLOCATED && !s->has_backing))) {
		q2_alloc_write_direct(a);
		return;
	}
	memset(a->buf, 0, s->cs);
	a->pending = 1;
	switch (a->old.type) {
	case QCOW2_CLUSTER_UNALLOCATED:
		if (!s->has_backing)
			break;
		/* 4 KiB-aligned pieces (O_DIRECT parents); the sectors the
		 * write covers are overwritten afterwards. */
		head = td_round_up(in, Q2_SECS_ALIGN);
		tail = td_round_down(in + a->treq.secs, Q2_SECS_ALIGN);
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
		a->pending++;
		td_meta_read_data(&s->meta, td_grace_begin(&s->grace), a->buf,
				  s->cs, a->old.host_offset,
				  q2_alloc_own_read_done, a);
		break;
	case QCOW2_CLUSTER_COMPRESSED:
		s->n_cow++;
		c = td_pool_get(&s->creads);
		if (!c) {
			a->err = -EBUSY;	/* retried by the engine */
			break;
		}
		memset(c, 0, s->cread_hdr);
		c->s = s;
		c->alloc = a;
		c->off = a->old.host_offset;
		c->csize = a->old.csize;
		c->buf = (uint8_t *)c + s->cread_hdr;
		a->pending++;
		q2_cread_start(s, c);
		break;
	default:
		break;		/* zero clusters: zeros */
	}
	q2_alloc_fill_done(a, 0);
}

/* A write (or zeroing) of treq, inside guest cluster gcl, needs a new
 * cluster; old is what the entry held. */
void q2_alloc_data(struct q2_state *s, struct q2_l2 *t, uint32_t l2i,
		   uint64_t gcl, const struct qcow2_mapping *old,
		   td_request_t treq)
{
	struct q2_alloc *a;
	int err;

	if (q2_check_meta_old(s, old, gcl)) {
		td_complete_request(treq, -EIO);
		return;
	}
	a = q2_alloc_get(s, A_DATA, gcl);
	if (!a) {
		td_meta_park(&s->meta, &s->res_waiters, treq);
		return;
	}
	a->treq = treq;
	a->l2 = t;
	a->l2i = l2i;
	a->old = *old;
	/* 1. A free cluster, counted in memory. */
	err = q2_alloc_cluster(s, &a->host);
	if (err) {
		q2_alloc_finish(a, err);
		return;
	}
	q2_alloc_fill(a);
}

/* A discard of the whole guest cluster gcl: the entry, then the free. */
void q2_discard_cluster(struct q2_state *s, struct q2_l2 *t,
			uint32_t l2i, uint64_t gcl,
			const struct qcow2_mapping *old,
			td_request_t treq)
{
	struct q2_alloc *a;

	if (q2_check_meta_old(s, old, gcl)) {
		td_complete_request(treq, -EIO);
		return;
	}
	a = q2_alloc_get(s, A_DISCARD, gcl);
	if (!a) {
		td_meta_park(&s->meta, &s->res_waiters, treq);
		return;
	}
	s->n_discard++;
	a->treq = treq;
	a->l2 = t;
	a->l2i = l2i;
	a->old = *old;
	q2_l2_set(s, t, l2i, s->has_backing ? QCOW2_OFLAG_ZERO : 0, &a->wait,
		  q2_alloc_l2_done);
}

/* ---- L2 tables: load and allocate ------------------------------------ */

struct q2_l2 *q2_l2_get(struct q2_state *s, uint64_t l1i)
{
	struct q2_l2 *t = s->l2s[l1i];

	if (t)
		return t;
	/* Once per L2 table in the image's life, not per request. */
	t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->buf = td_zalloc_aligned(s->cs);
	if (!t->buf) {
		free(t);
		return NULL;
	}
	t->index = l1i;
	t->state = L2_UNLOADED;
	td_list_init(&t->waiters);
	td_meta_seq_init(&t->seq, &s->meta, q2_l2_issue, q2_l2_failed);
	s->l2s[l1i] = t;
	return t;
}

void q2_l2_loaded(void *ctx, void *arg, int err)
{
	struct q2_state *s = ctx;
	struct q2_l2 *t = arg;

	if (err)
		td_log(TD_LOG_ERR, "%s: reading the L2 table of L1 entry %"
		       PRIu64 ": %s", s->drv->name, t->index, strerror(-err));
	t->state = err ? L2_UNLOADED : L2_READY;
	td_meta_wake(&s->meta, &t->waiters, err);
}

static void q2_l2_alloc_l1_done(struct td_meta_wait *w, int err)
{
	struct q2_alloc *a = td_container_of(w, struct q2_alloc, wait);
	struct q2_state *s = a->s;
	struct q2_l2 *t = a->l2;

	if (err) {
		/* The entry stays in memory: the table is usable. */
		td_log(TD_LOG_ERR, "%s: L1 entry %" PRIu64 " not written",
		       s->drv->name, t->index);
	}
	t->state = L2_READY;
	td_meta_wake(&s->meta, &t->waiters, 0);
	q2_alloc_finish(a, err);
}

static void q2_l2_alloc_committed(struct td_meta_wait *w, int err)
{
	struct q2_alloc *a = td_container_of(w, struct q2_alloc, wait);
	struct q2_state *s = a->s;
	struct q2_l2 *t = a->l2;

	if (err) {
		t->state = L2_UNLOADED;
		td_meta_wake(&s->meta, &t->waiters, err);
		q2_alloc_finish(a, err);
		return;
	}
	q2_l1_set(s, t->index, a->host | QCOW2_OFLAG_COPIED);
	td_meta_seq_wait(&s->l1_seq, &a->wait, q2_l2_alloc_l1_done);
}

static void q2_l2_alloc_written(void *ctx, void *arg, int err)
{
	struct q2_state *s = ctx;
	struct q2_alloc *a = arg;

	if (err) {
		a->l2->state = L2_UNLOADED;
		td_meta_wake(&s->meta, &a->l2->waiters, err);
		q2_alloc_finish(a, err);
		return;
	}
	td_meta_seq_wait(&s->commit_seq, &a->wait, q2_l2_alloc_committed);
}

/* A new, empty L2 table for L1 entry t->index; treq waits for it. */
void q2_l2_alloc(struct q2_state *s, struct q2_l2 *t,
		 td_request_t treq)
{
	struct q2_alloc *a = q2_alloc_get(s, A_L2, t->index);
	int err;

	if (!a) {
		td_meta_park(&s->meta, &s->res_waiters, treq);
		return;
	}
	a->l2 = t;
	err = q2_alloc_cluster(s, &a->host);
	/* An L2 table is metadata from now on. */
	if (!err && qcow2_image_meta_add(s->img,
					 a->host >> s->g->cluster_bits)) {
		q2_set_refcount(s, a->host >> s->g->cluster_bits, 0);
		err = -ENOMEM;
	}
	if (err) {
		q2_alloc_finish(a, err);
		td_complete_request(treq, err);
		return;
	}
	t->state = L2_ALLOCATING;
	td_meta_park(&s->meta, &t->waiters, treq);
	memset(t->buf, 0, s->cs);
	td_meta_io(&s->meta, TD_OP_WRITE, t->buf, s->cs, a->host,
		   q2_l2_alloc_written, a);
}

/* ---- compressed clusters --------------------------------------------- */

static void q2_cread_put(struct q2_state *s, struct q2_cread *c)
{
	td_pool_put(&s->creads, c);
}

/*
 * Inflate into the cache (unless it is there already); the cache and the
 * stream are made for the first compressed cluster read.
 */
static int q2_inflate_cached(struct q2_state *s, uint64_t off, uint32_t csize,
			     const uint8_t *data)
{
	if (s->zcache_csize == csize && s->zcache_off == off)
		return 0;
	s->zcache_csize = 0;
	if ((!s->zcache && !(s->zcache = td_zalloc_aligned(s->cs))) ||
	    (!s->zs && !(s->zs = td_inflate_new()))) {
		td_log(TD_LOG_ERR, "%s: no memory to inflate a compressed "
		       "cluster", s->drv->name);
		return -ENOMEM;
	}
	if (td_inflate(s->zs, data, csize, s->zcache, s->cs)) {
		td_log(TD_LOG_ERR, "%s: compressed cluster at %" PRIu64
		       " (%u bytes) does not inflate", s->drv->name, off,
		       csize);
		return -EIO;
	}
	s->zcache_off = off;
	s->zcache_csize = csize;
	return 0;
}

static void q2_cread_copy_out(struct q2_state *s, td_request_t treq)
{
	uint64_t in = (treq.sec % s->cl_secs) << TD_SECTOR_SHIFT;

	memcpy(treq.buf, s->zcache + in, (size_t)treq.secs << TD_SECTOR_SHIFT);
}

static void q2_cread_done(void *ctx, void *arg, int err)
{
	struct q2_state *s = ctx;
	struct q2_cread *c = arg;
	struct q2_alloc *a = c->alloc;
	td_request_t treq = c->treq;

	if (!err)
		err = q2_inflate_cached(s, c->off, c->csize, c->buf + c->skip);
	q2_cread_put(s, c);
	if (a) {
		if (!err)
			memcpy(a->buf, s->zcache, s->cs);
		q2_alloc_fill_done(a, err);
	} else {
		if (!err)
			q2_cread_copy_out(s, treq);
		td_complete_request(treq, err);
	}
	td_meta_wake(&s->meta, &s->res_waiters, 0);
}

static void q2_cread_start(struct q2_state *s, struct q2_cread *c)
{
	uint64_t start = td_round_down(c->off, Q2_IO_ALIGN);
	uint64_t end = td_round_up(c->off + c->csize, Q2_IO_ALIGN);

	if (s->zcache_csize == c->csize && s->zcache_off == c->off) {
		q2_cread_done(s, c, 0);
		return;
	}
	c->skip = (uint32_t)(c->off - start);
	c->len = end - start;
	if (c->len > s->cread_buf) {
		td_log(TD_LOG_ERR, "%s: compressed cluster at %" PRIu64
		       " claims %u bytes", s->drv->name, c->off, c->csize);
		q2_cread_done(s, c, -EIO);
		return;
	}
	td_meta_read_data(&s->meta, td_grace_begin(&s->grace), c->buf, c->len,
			  start, q2_cread_done, c);
}

void q2_read_compressed(struct q2_state *s, td_request_t treq,
			const struct qcow2_mapping *m)
{
	struct q2_cread *c;

	if (s->zcache_csize == m->csize && s->zcache_off == m->host_offset) {
		q2_cread_copy_out(s, treq);
		td_complete_request(treq, 0);
		return;
	}
	c = td_pool_get(&s->creads);
	if (!c) {
		td_meta_park(&s->meta, &s->res_waiters, treq);
		return;
	}
	memset(c, 0, s->cread_hdr);
	c->s = s;
	c->treq = treq;
	c->off = m->host_offset;
	c->csize = m->csize;
	c->buf = (uint8_t *)c + s->cread_hdr;
	q2_cread_start(s, c);
}
