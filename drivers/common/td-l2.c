/* SPDX-License-Identifier: MIT */
/*
 * td-l2: the L1 and L2 tables of the qcow formats, their writes, the L2
 * cache and the dispatch of a request to its table (see td-l2.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <tapfs/log.h>

#include "td-l2.h"
#include "td-zlib.h"

static const char *l2_name(const struct td_l2_tables *tb)
{
	return tb->m->drv->name;
}

/* ---- sequencers: L1, L2 (barrier: td-meta) --------------------------- */

static void l1_failed(struct td_meta_seq *q, int err)
{
	struct td_l2_tables *tb = td_container_of(q, struct td_l2_tables,
						  l1_seq);

	td_log(TD_LOG_ERR, "%s: writing the L1 table: %s", l2_name(tb),
	       strerror(-err));
	tb->write_failed = true;
}

/* The dirty entries, widened to whole units of the write granularity. */
static void l1_issue(struct td_meta_seq *q)
{
	struct td_l2_tables *tb = td_container_of(q, struct td_l2_tables,
						  l1_seq);
	uint64_t lo, hi;

	lo = td_round_down(tb->l1_lo * 8, tb->p.align);
	hi = td_round_up((tb->l1_hi + 1) * 8, tb->p.align);
	if (hi > tb->l1_bytes)
		hi = tb->l1_bytes;
	tb->l1_dirty = false;
	td_meta_seq_io(q, TD_OP_WRITE, tb->l1_disk + lo, hi - lo,
		       tb->p.l1_offset + lo);
}

void td_l1_set(struct td_l2_tables *tb, uint64_t i, uint64_t entry)
{
	tb->l1[i] = entry;
	td_put_be64(tb->l1_disk + i * 8, entry);
	if (!tb->l1_dirty || i < tb->l1_lo)
		tb->l1_lo = i;
	if (!tb->l1_dirty || i > tb->l1_hi)
		tb->l1_hi = i;
	tb->l1_dirty = true;
}

static void l2_failed(struct td_meta_seq *q, int err)
{
	struct td_l2 *t = td_container_of(q, struct td_l2, seq);

	td_log(TD_LOG_ERR, "%s: writing the L2 table of L1 entry %" PRIu64
	       ": %s", l2_name(t->tb), t->index, strerror(-err));
	t->tb->write_failed = true;
}

static uint64_t l2_offset(const struct td_l2 *t)
{
	return t->tb->l1[t->index] & t->tb->p.offset_mask;
}

static void l2_issue(struct td_meta_seq *q)
{
	struct td_l2 *t = td_container_of(q, struct td_l2, seq);
	const struct td_l2_params *p = &t->tb->p;
	uint64_t lo, hi;

	lo = td_round_down((uint64_t)t->lo * p->entry_size, p->align);
	hi = td_round_up(((uint64_t)t->hi + 1) * p->entry_size, p->align);
	if (hi > p->table_bytes)
		hi = p->table_bytes;
	t->dirty = false;
	td_meta_seq_io(q, TD_OP_WRITE, t->buf + lo, hi - lo,
		       l2_offset(t) + lo);
}

void td_l2_set(struct td_l2 *t, uint32_t i, uint64_t entry,
	       struct td_meta_wait *w, td_meta_wait_fn done)
{
	td_put_be64(t->buf + (size_t)i * t->tb->p.entry_size, entry);
	if (!t->dirty || i < t->lo)
		t->lo = i;
	if (!t->dirty || i > t->hi)
		t->hi = i;
	t->dirty = true;
	td_meta_seq_wait(&t->seq, w, done);
}

/* ---- tables in memory ------------------------------------------------ */

static int l2_setup(struct td_l2_tables *tb, struct td_l2 *t)
{
	t->buf = td_zalloc_aligned(tb->p.table_bytes);
	if (!t->buf)
		return -ENOMEM;
	t->tb = tb;
	t->state = TD_L2_EMPTY;
	td_list_init(&t->waiters);
	td_meta_seq_init(&t->seq, tb->m, l2_issue, l2_failed);
	return 0;
}

int td_l2_init(struct td_l2_tables *tb, struct td_meta *m, uint64_t *l1,
	       const struct td_l2_params *p)
{
	uint64_t i;

	tb->m = m;
	tb->p = *p;
	tb->l1 = l1;
	tb->l1_bytes = td_round_up(p->l1_size * 8, p->align);
	tb->l1_disk = td_zalloc_aligned(tb->l1_bytes);
	if (!tb->l1_disk)
		return -ENOMEM;
	for (i = 0; i < p->l1_size; i++)
		td_put_be64(tb->l1_disk + i * 8, l1[i]);
	td_meta_seq_init(&tb->l1_seq, m, l1_issue, l1_failed);
	for (i = 0; i < TD_L2_HASH_BUCKETS; i++)
		td_list_init(&tb->hash[i]);
	tb->alloc_hdr = td_round_up(p->alloc_size, TD_BUF_ALIGN);
	tb->cread_hdr = td_round_up(sizeof(struct td_l2_cread), TD_BUF_ALIGN);
	if (td_pool_init(&tb->allocs, p->nallocs, tb->alloc_hdr +
			 p->alloc_buf, TD_BUF_ALIGN) ||
	    td_pool_init(&tb->creads, p->ncreads, tb->cread_hdr +
			 p->cread_buf, TD_BUF_ALIGN) ||
	    td_zcache_init(&tb->zc, p->cl_secs << TD_SECTOR_SHIFT))
		return -ENOMEM;
	if (!p->nslots) {
		/* Made on first use, once per L1 entry in the image's life. */
		tb->tables = calloc(p->l1_size ? p->l1_size : 1,
				    sizeof(*tb->tables));
		return tb->tables ? 0 : -ENOMEM;
	}
	tb->slots = calloc(p->nslots, sizeof(*tb->slots));
	if (!tb->slots)
		return -ENOMEM;
	for (i = 0; i < p->nslots; i++)
		if (l2_setup(tb, &tb->slots[i]))
			return -ENOMEM;
	return 0;
}

void td_l2_fini(struct td_l2_tables *tb)
{
	uint64_t i;

	if (tb->slots)
		for (i = 0; i < tb->p.nslots; i++)
			free(tb->slots[i].buf);
	if (tb->tables) {
		for (i = 0; i < tb->p.l1_size; i++) {
			if (tb->tables[i])
				free(tb->tables[i]->buf);
			free(tb->tables[i]);
		}
	}
	free(tb->slots);
	free(tb->tables);
	free(tb->l1_disk);
	td_pool_fini(&tb->allocs);
	td_pool_fini(&tb->creads);
	td_zcache_fini(&tb->zc);
	tb->slots = NULL;
	tb->tables = NULL;
	tb->l1_disk = NULL;
}

/* The table of L1 entry l1i in memory (maybe empty), or NULL. */
static struct td_l2 *l2_find(struct td_l2_tables *tb, uint64_t l1i)
{
	unsigned i;

	if (tb->tables)
		return tb->tables[l1i];
	for (i = 0; i < tb->p.nslots; i++)
		if (tb->slots[i].state != TD_L2_EMPTY &&
		    tb->slots[i].index == l1i)
			return &tb->slots[i];
	return NULL;
}

/* A free slot, or the least recently used idle table's, or NULL. */
static struct td_l2 *l2_evict(struct td_l2_tables *tb)
{
	struct td_l2 *best = NULL, *t;
	unsigned i;

	for (i = 0; i < tb->p.nslots; i++) {
		t = &tb->slots[i];
		if (t->state == TD_L2_EMPTY)
			return t;
		if (t->state != TD_L2_READY || t->pins || t->dirty ||
		    t->seq.busy)
			continue;
		if (!best || t->used < best->used)
			best = t;
	}
	return best;
}

/*
 * An empty table for L1 entry l1i (t, if it is there already), or NULL
 * with treq parked for a slot or completed with -ENOMEM.
 */
static struct td_l2 *l2_get(struct td_l2_tables *tb, struct td_l2 *t,
			    uint64_t l1i, td_request_t treq)
{
	if (t)
		return t;
	if (tb->tables) {
		t = calloc(1, sizeof(*t));
		if (!t || l2_setup(tb, t)) {
			free(t);
			td_complete_request(treq, -ENOMEM);
			return NULL;
		}
		tb->tables[l1i] = t;
	} else {
		t = l2_evict(tb);
		if (!t) {
			td_meta_park(tb->m, tb->p.res_waiters, treq);
			return NULL;
		}
		t->dirty = false;
		t->used = ++tb->tick;
	}
	t->state = TD_L2_EMPTY;
	t->index = l1i;
	return t;
}

void td_l2_ready(struct td_l2 *t, int err)
{
	t->state = err ? TD_L2_EMPTY : TD_L2_READY;
	td_meta_wake(t->tb->m, &t->waiters, err);
}

static void l2_loaded(void *ctx, void *arg, int err)
{
	struct td_l2 *t = arg;
	struct td_l2_tables *tb = t->tb;

	(void)ctx;
	if (err)
		td_log(TD_LOG_ERR, "%s: reading the L2 table of L1 entry %"
		       PRIu64 ": %s", l2_name(tb), t->index, strerror(-err));
	td_l2_ready(t, err);
	if (err && tb->p.nslots)	/* the slot is free again */
		td_meta_wake(tb->m, tb->p.res_waiters, 0);
}

void td_l2_write_new(struct td_l2 *t, td_request_t treq, uint64_t host,
		     td_meta_cb_t cb, void *arg)
{
	struct td_l2_tables *tb = t->tb;

	t->state = TD_L2_ALLOCATING;
	td_meta_park(tb->m, &t->waiters, treq);
	memset(t->buf, 0, tb->p.table_bytes);
	td_meta_io(tb->m, TD_OP_WRITE, t->buf, tb->p.table_bytes, host, cb,
		   arg);
}

void td_l2_link(struct td_l2 *t, uint64_t entry, struct td_meta_wait *w,
		td_meta_wait_fn done)
{
	td_l1_set(t->tb, t->index, entry);
	td_meta_seq_wait(&t->tb->l1_seq, w, done);
}

/* ---- allocations ------------------------------------------------------ */

static struct td_list *alloc_bucket(struct td_l2_tables *tb, uint64_t gcl)
{
	return &tb->hash[(gcl * 0x9e3779b97f4a7c15ull) >> 54 &
			 (TD_L2_HASH_BUCKETS - 1)];
}

struct td_l2_alloc *td_l2_alloc_find(struct td_l2_tables *tb, uint64_t gcl)
{
	struct td_list *b = alloc_bucket(tb, gcl), *n;

	for (n = b->next; n != b; n = n->next) {
		struct td_l2_alloc *a = td_container_of(n, struct td_l2_alloc,
							link);

		if (a->gcl == gcl)
			return a;
	}
	return NULL;
}

struct td_l2_alloc *td_l2_alloc_get(struct td_l2_tables *tb,
				    enum td_l2_alloc_kind kind,
				    struct td_l2 *t, uint64_t gcl)
{
	struct td_l2_alloc *a = td_pool_get(&tb->allocs);

	if (!a)
		return NULL;
	memset(a, 0, tb->alloc_hdr);
	a->tb = tb;
	a->kind = kind;
	a->gcl = gcl;
	a->t = t;
	a->buf = (uint8_t *)a + tb->alloc_hdr;
	td_list_init(&a->waiters);
	td_list_init(&a->link);
	if (kind != TD_L2_ALLOC_TABLE)
		td_list_add_tail(&a->link, alloc_bucket(tb, gcl));
	t->pins++;
	return a;
}

void td_l2_alloc_write_direct(struct td_l2_alloc *a)
{
	struct td_l2_tables *tb = a->tb;
	uint64_t in = a->treq.sec - a->gcl * tb->p.cl_secs;

	td_meta_io(tb->m, TD_OP_WRITE, a->treq.buf,
		   (size_t)a->treq.secs << TD_SECTOR_SHIFT,
		   a->host + (in << TD_SECTOR_SHIFT), tb->p.ops->written, a);
}

void td_l2_alloc_write(struct td_l2_alloc *a)
{
	struct td_l2_tables *tb = a->tb;
	uint64_t in = a->treq.sec - a->gcl * tb->p.cl_secs;
	uint8_t *at = a->buf + (in << TD_SECTOR_SHIFT);
	size_t len = (size_t)a->treq.secs << TD_SECTOR_SHIFT;

	if (td_l2_covers(tb, a->treq, a->gcl)) {
		td_l2_alloc_write_direct(a);
		return;
	}
	if (a->treq.op == TD_OP_WRITE)
		memcpy(at, a->treq.buf, len);
	else
		memset(at, 0, len);
	td_meta_io(tb->m, TD_OP_WRITE, a->buf,
		   (size_t)tb->p.cl_secs << TD_SECTOR_SHIFT, a->host,
		   tb->p.ops->written, a);
}

static void alloc_filled(struct td_l2_fill *f, int err)
{
	struct td_l2_alloc *a = td_container_of(f, struct td_l2_alloc, fill);

	if (err)
		td_l2_alloc_finish(a, err);
	else
		td_l2_alloc_write(a);
}

void td_l2_alloc_fill(struct td_l2_alloc *a)
{
	a->fill = (struct td_l2_fill){ .pending = 1, .done = alloc_filled };
}

void td_l2_alloc_finish(struct td_l2_alloc *a, int err)
{
	struct td_l2_tables *tb = a->tb;
	enum td_l2_alloc_kind kind = a->kind;
	td_request_t treq = a->treq;
	struct td_list waiters;

	if (err)
		td_log(TD_LOG_ERR, "%s: %s %" PRIu64 ": %s", l2_name(tb),
		       kind == TD_L2_ALLOC_DISCARD ?
		       "discarding guest cluster" :
		       kind == TD_L2_ALLOC_TABLE ?
		       "allocating the L2 table of L1 entry" :
		       "allocating guest cluster", a->gcl, strerror(-err));
	a->t->pins--;
	td_list_del(&a->link);
	td_list_move(&waiters, &a->waiters);
	td_pool_put(&tb->allocs, a);
	if (kind != TD_L2_ALLOC_TABLE)
		td_complete_request(treq, err);
	td_meta_wake(tb->m, &waiters, 0);
	td_meta_wake(tb->m, tb->p.res_waiters, 0);
}

/* ---- dispatch ---------------------------------------------------------- */

/* treq lies inside the range of one L1 entry. */
static void l2_dispatch_l1(void *arg, td_request_t treq)
{
	struct td_l2_tables *tb = arg;
	const struct td_l2_ops *ops = tb->p.ops;
	void *ctx = tb->m->ctx;
	uint64_t l1i = treq.sec / tb->p.span_secs;
	struct td_l2 *t;

	if (l1i >= tb->p.l1_size) {
		td_complete_request(treq, -EIO);
		return;
	}
	t = l2_find(tb, l1i);
	if (t && (t->state == TD_L2_LOADING ||
		  t->state == TD_L2_ALLOCATING)) {
		td_meta_park(tb->m, &t->waiters, treq);
		return;
	}
	if (t && t->state == TD_L2_READY) {
		t->used = ++tb->tick;
		ops->table(ctx, t, treq);
		return;
	}
	if (!(tb->l1[l1i] & tb->p.offset_mask) && ops->unmapped(ctx, treq))
		return;
	t = l2_get(tb, t, l1i, treq);
	if (!t)
		return;
	if (!(tb->l1[l1i] & tb->p.offset_mask)) {
		ops->alloc(ctx, t, treq);
		return;
	}
	t->state = TD_L2_LOADING;
	td_meta_park(tb->m, &t->waiters, treq);
	td_meta_io(tb->m, TD_OP_READ, t->buf, tb->p.table_bytes, l2_offset(t),
		   l2_loaded, t);
}

void td_l2_dispatch(struct td_l2_tables *tb, td_request_t treq)
{
	td_meta_split(treq, tb->p.span_secs, l2_dispatch_l1, tb);
}

/* ---- filling a new cluster from its old contents ----------------------- */

void td_l2_fill_put(struct td_l2_fill *f, unsigned n, int err)
{
	if (err && !f->err)
		f->err = err;
	f->pending -= n;
	if (!f->pending)
		f->done(f, f->err);
}

/* A forwarded read completes by pieces: count sectors. */
static void fill_parent_done(td_request_t treq, int err)
{
	td_l2_fill_put(treq.cb_data, treq.secs, err);
}

void td_l2_fill_parent(struct td_l2_fill *f, td_image_t *image, char *buf,
		       uint64_t sec, uint32_t secs)
{
	td_request_t r = {
		.op = TD_OP_READ,
		.buf = buf,
		.sec = sec,
		.secs = secs,
		.image = image,
		.cb = fill_parent_done,
		.cb_data = f,
	};

	if (!secs)
		return;
	f->pending += secs;
	td_forward_request(r);
}

/* ---- compressed clusters ----------------------------------------------- */

static void cread_done(void *ctx, void *arg, int err)
{
	struct td_l2_cread *c = arg;
	struct td_l2_tables *tb = c->tb;
	struct td_l2_alloc *a = c->alloc;
	td_request_t treq = c->treq;

	(void)ctx;
	if (!err)
		err = td_zcache_fill(&tb->zc, l2_name(tb), c->off, c->csize,
				     c->buf + c->skip);
	td_pool_put(&tb->creads, c);
	if (a) {
		if (!err)
			memcpy(a->buf, tb->zc.buf, tb->zc.size);
		td_l2_fill_put(&a->fill, 1, err);
	} else {
		if (!err)
			td_zcache_copy_out(&tb->zc, treq);
		td_complete_request(treq, err);
	}
	td_meta_wake(tb->m, tb->p.res_waiters, 0);
}

static void cread_start(struct td_l2_cread *c)
{
	struct td_l2_tables *tb = c->tb;
	uint64_t start = td_round_down(c->off, tb->p.cread_align);
	uint64_t end = td_round_up(c->off + c->csize, tb->p.cread_align);

	if (td_zcache_holds(&tb->zc, c->off, c->csize)) {
		cread_done(NULL, c, 0);
		return;
	}
	c->skip = (uint32_t)(c->off - start);
	c->len = end - start;
	if (c->len > tb->p.cread_buf) {
		td_log(TD_LOG_ERR, "%s: compressed cluster at %" PRIu64
		       " claims %u bytes", l2_name(tb), c->off, c->csize);
		cread_done(NULL, c, -EIO);
		return;
	}
	td_meta_read_data(tb->m, tb->p.grace ? td_grace_begin(tb->p.grace) :
			  NULL, c->buf, c->len, start, cread_done, c);
}

/* A record for a compressed read of csize bytes at off, or NULL. */
static struct td_l2_cread *cread_get(struct td_l2_tables *tb, uint64_t off,
				     uint32_t csize)
{
	struct td_l2_cread *c = td_pool_get(&tb->creads);

	if (!c)
		return NULL;
	memset(c, 0, tb->cread_hdr);
	c->tb = tb;
	c->off = off;
	c->csize = csize;
	c->buf = (uint8_t *)c + tb->cread_hdr;
	return c;
}

void td_l2_read_compressed(struct td_l2_tables *tb, td_request_t treq,
			   uint64_t off, uint32_t csize)
{
	struct td_l2_cread *c;

	if (td_zcache_holds(&tb->zc, off, csize)) {
		td_zcache_copy_out(&tb->zc, treq);
		td_complete_request(treq, 0);
		return;
	}
	c = cread_get(tb, off, csize);
	if (!c) {
		td_meta_park(tb->m, tb->p.res_waiters, treq);
		return;
	}
	c->treq = treq;
	cread_start(c);
}

int td_l2_alloc_read_compressed(struct td_l2_alloc *a, uint64_t off,
				uint32_t csize)
{
	struct td_l2_cread *c = cread_get(a->tb, off, csize);

	if (!c)
		return -EBUSY;
	c->alloc = a;
	a->fill.pending++;
	cread_start(c);
	return 0;
}

/* ---- the last inflated compressed cluster ------------------------------ */

/* The buffer and the stream are made for the first compressed cluster:
 * most images have none, and every VBD of a chain has its cache. */
int td_zcache_init(struct td_zcache *z, uint32_t cluster_size)
{
	z->size = cluster_size;
	z->csize = 0;
	z->buf = NULL;
	z->zs = NULL;
	return 0;
}

void td_zcache_fini(struct td_zcache *z)
{
	free(z->buf);
	td_inflate_free(z->zs);
	z->buf = NULL;
	z->zs = NULL;
}

int td_zcache_inflate(struct td_zcache *z, const char *name, uint64_t off,
		      uint32_t csize, const uint8_t *data, uint8_t *out)
{
	if (!z->zs && !(z->zs = td_inflate_new())) {
		td_log(TD_LOG_ERR, "%s: no memory to inflate a compressed "
		       "cluster", name);
		return -ENOMEM;
	}
	if (td_inflate(z->zs, data, csize, out, z->size)) {
		td_log(TD_LOG_ERR, "%s: compressed cluster at %" PRIu64
		       " (%u bytes) does not inflate", name, off, csize);
		return -EIO;
	}
	return 0;
}

int td_zcache_fill(struct td_zcache *z, const char *name, uint64_t off,
		   uint32_t csize, const uint8_t *data)
{
	int rc;

	if (td_zcache_holds(z, off, csize))
		return 0;
	z->csize = 0;
	if (!z->buf && !(z->buf = td_zalloc_aligned(z->size))) {
		td_log(TD_LOG_ERR, "%s: no memory to inflate a compressed "
		       "cluster", name);
		return -ENOMEM;
	}
	rc = td_zcache_inflate(z, name, off, csize, data, z->buf);
	if (rc)
		return rc;
	z->off = off;
	z->csize = csize;
	return 0;
}

void td_zcache_copy_out(const struct td_zcache *z, td_request_t treq)
{
	uint64_t in = (treq.sec % (z->size >> TD_SECTOR_SHIFT)) <<
		      TD_SECTOR_SHIFT;

	memcpy(treq.buf, z->buf + in, (size_t)treq.secs << TD_SECTOR_SHIFT);
}
