/* SPDX-License-Identifier: MIT */
/*
 * The engine of one tapfs-img run: images opened through the daemon's
 * drivers and VBD code (include/tapfs/engine.h), and a copy that keeps
 * requests in flight on the engine's loop.  Nothing here knows a format:
 * the drivers do.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <tapfs/log.h>

#include "tapfs-img.h"

static struct td_engine *engine;

int img_engine_start(void)
{
	if (engine)
		return 0;
	/* The drivers' warnings read as ours: "tapfs-img: warning: ...". */
	td_log_open(PROG, false, TD_LOG_WARN);
	if (td_drivers_init()) {
		msg("the built-in driver table is invalid");
		return EXIT_FAIL;
	}
	engine = td_engine_new();
	if (!engine) {
		msg("cannot start the engine: %s", strerror(errno ? errno :
							    ENOMEM));
		return EXIT_FAIL;
	}
	return 0;
}

void img_engine_stop(void)
{
	td_engine_free(engine);
	engine = NULL;
}

int img_open(const struct img_format *f, const char *path, td_flag_t flags,
	     td_vbd_t **out)
{
	char spec[4200], err[1024];
	int rc;

	if (img_engine_start())
		return EXIT_FAIL;
	if (snprintf(spec, sizeof(spec), "%s:%s", f->driver, path) >=
	    (int)sizeof(spec)) {
		msg("%s: path too long", path);
		return EXIT_FAIL;
	}
	rc = vbd_open(engine, spec, flags, NULL, out, err, sizeof(err));
	if (rc == -EBUSY)
		msg("%s (close the VBD, or stop the program that has it "
		    "open)", err);
	else if (rc)
		msg("%s", err[0] ? err : strerror(-rc));
	if (rc)
		return EXIT_FAIL;
	vbd_set_name(*out, PROG);
	return 0;
}

int img_remote_size(const char *spec, uint64_t *size)
{
	char err[1024];
	td_vbd_t *vbd = NULL;
	int rc;

	if (img_engine_start())
		return EXIT_FAIL;
	/* Read, never written: no lock, as info. */
	rc = vbd_open(engine, spec, TD_OPEN_RDONLY | TD_OPEN_FORCE_SHARE, NULL,
		      &vbd, err, sizeof(err));
	if (rc) {
		msg("%s", err[0] ? err : strerror(-rc));
		return EXIT_FAIL;
	}
	*size = vbd_size(vbd);
	return img_close(vbd, spec);
}

int img_close(td_vbd_t *vbd, const char *path)
{
	int rc;

	if (!vbd)
		return 0;
	rc = vbd_close(vbd);
	if (rc) {
		msg("%s: closing: %s", path, strerror(-rc));
		return EXIT_FAIL;
	}
	return 0;
}

int img_sync_file(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC), rc = 0;

	if (fd < 0 || fsync(fd) < 0)
		rc = -errno;
	if (fd >= 0)
		close(fd);
	if (rc) {
		msg("%s: fsync: %s", path, strerror(-rc));
		return EXIT_FAIL;
	}
	return 0;
}

/* ---- the chain ------------------------------------------------------- */

/* A VHD's subformat, read from its footer; NULL if it cannot be. */
static const char *vhd_subformat(const char *path, char *buf, size_t len)
{
	struct vhd_image *img;
	char err[256];

	if (vhd_image_open(&img, path, VHD_IMAGE_RDONLY, err, sizeof(err)))
		return NULL;
	snprintf(buf, len, "%s", vhd_type_name(img->footer.type));
	vhd_image_close(img);
	return buf;
}

int img_print_chain(const struct img_format *f, const char *path, bool json)
{
	char spec[4200], err[1024];
	td_vbd_t *vbd = NULL;
	unsigned i, n;
	int rc;

	if (img_engine_start())
		return EXIT_FAIL;
	snprintf(spec, sizeof(spec), "%s:%s", f->driver, path);
	/* info reads an image in use: no locks, as qemu-img info. */
	rc = vbd_open(engine, spec, TD_OPEN_RDONLY | TD_OPEN_FORCE_SHARE, NULL,
		      &vbd, err, sizeof(err));
	if (rc && !err[0])
		snprintf(err, sizeof(err), "%s: %s", path, strerror(-rc));
	if (rc && json) {
		printf("    \"chain-error\": ");
		json_str(stdout, err);
		printf(",\n    \"chain\": []\n}\n");
	} else if (rc) {
		printf("chain: broken: %s\n", err);
	}
	if (rc) {
		msg("%s", err);
		return EXIT_FAIL;
	}
	n = vbd_chain_length(vbd);
	printf(json ? "    \"chain\": [\n" : "chain (leaf -> base): ");
	for (i = 0; i < n; i++) {
		const td_driver_t *d = vbd_image(vbd, i);
		const struct img_format *lf = format_of_driver(d->ops->name);
		const char *fname = lf ? lf->name : d->ops->name, *sub = NULL;
		char b[32];

		if (!json) {
			printf("%s%s", i ? " -> " : "", d->name);
			continue;
		}
		if (lf == &img_format_vhd)
			sub = vhd_subformat(d->name, b, sizeof(b));
		printf("        { \"filename\": ");
		json_str(stdout, d->name);
		printf(", \"format\": \"%s\"", fname);
		if (sub)
			printf(", \"subformat\": \"%s\"", sub);
		printf(", \"virtual-size\": %" PRIu64 " }%s\n",
		       (uint64_t)d->info.size << TD_SECTOR_SHIFT,
		       i + 1 < n ? "," : "");
	}
	printf(json ? "    ]\n}\n" : "\n");
	return img_close(vbd, path);
}

/* ---- copy ------------------------------------------------------------ */

/*
 * One request slot: a read from SRC into buf, then (unless it read
 * zeros and DST reads zeros already) a write of the same sectors to DST.
 * A run that is not aligned to the VBDs' I/O alignment is read aligned
 * and written as a read-modify-write of just its bytes (bounce holds the
 * aligned sectors then), so that no neighbour's sector is overwritten.
 */
struct copy_slot {
	struct copy_job		*job;
	struct vbd_request	 rreq, wreq;
	char			*buf, *bounce;
	uint64_t		 sec, asec;	/* the run, the aligned range */
	uint32_t		 secs, asecs;
	bool			 busy;
};

struct copy_job {
	const struct img_copy	*c;
	struct copy_slot	*slots;
	unsigned		 nslots, busy;
	uint64_t		 pos;		/* next sector to look at */
	bool			 more;
	int			 err;		/* first error: stop */
	uint32_t		 align;		/* sectors */
};

/* Largest run per request: what the VBD hands a driver in one piece. */
#define COPY_SECS		VBD_MAX_SEGMENT_SECS
#define COPY_BUF_BYTES		(((size_t)COPY_SECS << TD_SECTOR_SHIFT) + \
				 2 * TD_MAX_IO_ALIGN)

static void copy_fail(struct copy_job *j, const char *what,
		      const char *name, uint64_t sec, int err)
{
	if (j->err)
		return;		/* said once */
	if (sec == UINT64_MAX)
		msg("%s %s: %s", what, name, strerror(-err));
	else
		msg("%s %s at sector %" PRIu64 ": %s", what, name, sec,
		    strerror(-err));
	j->err = err;
}

static void copy_slot_done(struct copy_slot *s)
{
	s->busy = false;
	s->job->busy--;
}

static void copy_write_done(struct vbd_request *vreq, int err)
{
	struct copy_slot *s = vreq->cb_data;

	if (err)
		copy_fail(s->job, "writing", s->job->c->dst_name, s->sec, err);
	copy_slot_done(s);
}

static void copy_read_done(struct vbd_request *vreq, int err)
{
	struct copy_slot *s = vreq->cb_data;
	struct copy_job *j = s->job;
	const char *data = s->buf + ((s->sec - s->asec) << TD_SECTOR_SHIFT);
	size_t len = (size_t)s->secs << TD_SECTOR_SHIFT;

	if (err || j->err) {
		if (err)
			copy_fail(j, "reading", j->c->src_name, s->sec, err);
		copy_slot_done(s);
		return;
	}
	if (j->c->skip_zero && td_all_zero(data, len)) {
		copy_slot_done(s);
		return;
	}
	s->wreq = (struct vbd_request){
		.op = TD_OP_WRITE,
		.buf = s->buf,
		.sec = s->asec,
		.secs = s->asecs,
		.cb = copy_write_done,
		.cb_data = s,
	};
	if (s->asec != s->sec || s->asecs != s->secs) {
		s->wreq.buf = s->bounce;
		s->wreq.rmw_data = data;
		s->wreq.rmw_off = (uint32_t)((s->sec - s->asec) <<
					     TD_SECTOR_SHIFT);
		s->wreq.rmw_len = (uint32_t)len;
	}
	vbd_submit(j->c->dst, &s->wreq);
}

/* The next run to copy: 1 and s->sec/secs, 0 when there is none. */
static int copy_next(struct copy_job *j, struct copy_slot *s)
{
	const struct img_copy *c = j->c;
	uint64_t start = j->pos, n = c->secs - j->pos;

	if (j->pos >= c->secs)
		return 0;
	if (c->runs) {
		int r = c->runs->next(c->runs, j->pos, c->secs, &start, &n);

		if (r <= 0) {
			if (r < 0)
				copy_fail(j, "mapping", c->src_name, j->pos, r);
			j->pos = c->secs;
			return 0;
		}
	}
	if (n > COPY_SECS)
		n = COPY_SECS;
	s->sec = start;
	s->secs = (uint32_t)n;
	s->asec = start / j->align * j->align;
	s->asecs = (uint32_t)(((start + n + j->align - 1) / j->align *
			       j->align) - s->asec);
	j->pos = start + n;
	return 1;
}

static void copy_issue(struct copy_job *j)
{
	unsigned i;

	for (i = 0; i < j->nslots && j->more && !j->err; i++) {
		struct copy_slot *s = &j->slots[i];

		if (s->busy)
			continue;
		if (!copy_next(j, s)) {
			j->more = false;
			break;
		}
		s->busy = true;
		j->busy++;
		s->rreq = (struct vbd_request){
			.op = TD_OP_READ,
			.buf = s->buf,
			.sec = s->asec,
			.secs = s->asecs,
			.cb = copy_read_done,
			.cb_data = s,
		};
		vbd_submit(j->c->src, &s->rreq);
	}
}

/* Where the copy is: the first sector not known to be done. */
static uint64_t copy_done_upto(const struct copy_job *j)
{
	uint64_t upto = j->pos;
	unsigned i;

	for (i = 0; i < j->nslots; i++)
		if (j->slots[i].busy && j->slots[i].sec < upto)
			upto = j->slots[i].sec;
	return upto;
}

static void copy_flush_done(struct vbd_request *vreq, int err)
{
	int *res = vreq->cb_data;

	*res = err;
}

static int copy_wait(struct copy_job *j)
{
	while (j->busy) {
		int rc = td_loop_run_once(engine->loop, -1);

		if (rc && rc != -EINTR) {
			msg("engine loop: %s", strerror(-rc));
			return rc;
		}
	}
	return 0;
}

int img_copy(const struct img_copy *c)
{
	struct copy_job j = {
		.c = c,
		.more = true,
		.nslots = c->depth ? c->depth : IMG_COPY_DEPTH,
	};
	struct vbd_request flush = { .op = TD_OP_FLUSH };
	uint32_t a = vbd_io_align(c->src) > vbd_io_align(c->dst) ?
		     vbd_io_align(c->src) : vbd_io_align(c->dst);
	int res = 1, rc = 0;
	unsigned i;

	j.align = a >> TD_SECTOR_SHIFT;
	j.slots = calloc(j.nslots, sizeof(*j.slots));
	if (!j.slots) {
		msg("out of memory");
		return EXIT_FAIL;
	}
	for (i = 0; i < j.nslots; i++) {
		j.slots[i].job = &j;
		if (posix_memalign((void **)&j.slots[i].buf, TD_BUF_ALIGN,
				   COPY_BUF_BYTES) ||
		    posix_memalign((void **)&j.slots[i].bounce, TD_BUF_ALIGN,
				   COPY_BUF_BYTES)) {
			msg("out of memory");
			rc = -ENOMEM;
			goto out;
		}
	}
	while (((j.more && !j.err) || j.busy) && !rc) {
		copy_issue(&j);
		if (!j.busy)
			continue;	/* all completed at once (zeros) */
		rc = td_loop_run_once(engine->loop, -1);
		if (rc == -EINTR)
			rc = 0;
		if (rc)
			msg("engine loop: %s", strerror(-rc));
		progress_show(c->pg, copy_done_upto(&j), c->secs);
	}
	if (!rc)
		rc = copy_wait(&j);	/* what an error left in flight */
	if (!rc && !j.err) {
		flush.cb = copy_flush_done;
		flush.cb_data = &res;
		j.busy = 0;
		vbd_submit(c->dst, &flush);
		while (res == 1 && !rc)
			rc = td_loop_run_once(engine->loop, -1);
		if (res < 0)
			copy_fail(&j, "flushing", c->dst_name, UINT64_MAX,
				  res);
		else if (!j.err)
			progress_show(c->pg, c->secs, c->secs);
	}
out:
	if (j.busy)
		return EXIT_FAIL;	/* the loop broke: buffers stay in use */
	for (i = 0; i < j.nslots; i++) {
		free(j.slots[i].buf);
		free(j.slots[i].bounce);
	}
	free(j.slots);
	return rc || j.err ? EXIT_FAIL : 0;
}
