/* SPDX-License-Identifier: MIT */
/*
 * coalesce: write what a child image holds itself into its parent.
 *
 * The child is opened through the engine alone (TD_OPEN_LEAF_ONLY: its
 * parent is not opened under it), the parent as a writable VBD of its
 * own; the runs the child holds are found offline in its metadata and
 * copied with requests in flight (engine.c).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "tapfs-img.h"
#include "formats.h"

/* ---- the runs a child holds, per format ------------------------------ */

struct vhd_runs {
	struct img_runs		 r;
	struct vhd_image	*img;
};

static int vhd_runs_next(struct img_runs *r, uint64_t sec, uint64_t end,
			 uint64_t *start, uint64_t *n)
{
	struct vhd_runs *vr = td_container_of(r, struct vhd_runs, r);

	while (sec < end) {
		uint32_t want = end - sec < UINT32_MAX ?
				(uint32_t)(end - sec) : UINT32_MAX, run;
		uint64_t off;
		int m = vhd_image_map(vr->img, sec, want, &run, &off);

		if (m < 0)
			return m;
		if (m == VHD_MAP_DATA) {
			*start = sec;
			*n = run;
			return 1;
		}
		sec += run;
	}
	return 0;
}

static void vhd_runs_close(struct img_runs *r)
{
	struct vhd_runs *vr = td_container_of(r, struct vhd_runs, r);

	vhd_image_close(vr->img);
	free(vr);
}

struct img_runs *runs_open_vhd(const char *path)
{
	struct vhd_runs *vr = calloc(1, sizeof(*vr));
	char err[1024];

	if (!vr) {
		msg("out of memory");
		return NULL;
	}
	if (vhd_image_open(&vr->img, path, VHD_IMAGE_RDONLY, err,
			   sizeof(err))) {
		msg("%s", err);
		free(vr);
		return NULL;
	}
	vr->r.next = vhd_runs_next;
	vr->r.close = vhd_runs_close;
	return &vr->r;
}

struct qcow2_runs {
	struct img_runs		 r;
	struct qcow2_image	*img;
	struct qcow2_map_ctx	 ctx;
	const char		*path;
};

/* Data, compressed and zero clusters are the child's; the rest reads on. */
static int qcow2_runs_next(struct img_runs *r, uint64_t sec, uint64_t end,
			   uint64_t *start, uint64_t *n)
{
	struct qcow2_runs *qr = td_container_of(r, struct qcow2_runs, r);
	char err[1024];

	while (sec < end) {
		uint32_t want = end - sec < UINT32_MAX ?
				(uint32_t)(end - sec) : UINT32_MAX, run, csize;
		uint64_t off;
		int m = qcow2_image_map(qr->img, &qr->ctx, sec, want, &run,
					&off, &csize, err, sizeof(err));

		if (m < 0) {
			msg("%s", err);
			return m;
		}
		if (m != QCOW2_MAP_BACKING) {
			*start = sec;
			*n = run;
			return 1;
		}
		sec += run;
	}
	return 0;
}

static void qcow2_runs_close(struct img_runs *r)
{
	struct qcow2_runs *qr = td_container_of(r, struct qcow2_runs, r);

	qcow2_map_ctx_fini(&qr->ctx);
	qcow2_image_close(qr->img, false);
	free(qr);
}

struct img_runs *runs_open_qcow2(const char *path)
{
	struct qcow2_runs *qr = calloc(1, sizeof(*qr));
	char err[1024];

	if (!qr) {
		msg("out of memory");
		return NULL;
	}
	if (qcow2_image_open(&qr->img, path, 0, err, sizeof(err))) {
		msg("%s", err);
		free(qr);
		return NULL;
	}
	qr->ctx.l2_index = UINT64_MAX;
	qr->r.next = qcow2_runs_next;
	qr->r.close = qcow2_runs_close;
	return &qr->r;
}

/* ---- the verb -------------------------------------------------------- */

/* Open the parent the child names, writable: 0 or EXIT_FAIL (said). */
static int open_parent(td_vbd_t *child, const char *cpath, td_vbd_t **out,
		       char **ppath)
{
	td_driver_t *cd = vbd_image(child, 0);
	const struct img_format *pf;
	td_disk_id_t id = { NULL, NULL };
	int rc;

	rc = td_drv_get_parent_id(cd, &id);
	if (rc == TD_NO_PARENT) {
		msg("%s is not a differencing image: it has no parent to "
		    "coalesce into", cpath);
		return EXIT_FAIL;
	}
	if (rc < 0) {
		msg("%s", cd->error[0] ? cd->error : strerror(-rc));
		return EXIT_FAIL;
	}
	pf = format_of_driver(id.drivertype ? id.drivertype :
			      cd->ops->name);
	if (!pf) {
		msg("%s: parent %s has driver %s, which " PROG " cannot "
		    "write", cpath, id.name, id.drivertype);
		rc = EXIT_FAIL;
	} else {
		/* The parent is written: nobody else may have it open. */
		rc = img_open(pf, id.name, 0, out);
	}
	if (!rc && (rc = td_drv_validate_parent(cd, vbd_image(*out, 0), 0))) {
		msg("%s", cd->error[0] ? cd->error : strerror(-rc));
		img_close(*out, id.name);
		*out = NULL;
		rc = EXIT_FAIL;
	}
	free(id.drivertype);
	if (rc)
		free(id.name);
	else
		*ppath = id.name;
	return rc;
}

static int cmd_coalesce(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "progress", no_argument, NULL, 'p' },
		{ NULL, 0, NULL, 0 },
	};
	const struct verb *v = &verb_coalesce;
	const struct img_format *f = NULL;
	td_vbd_t *child = NULL, *parent = NULL;
	struct img_runs *runs = NULL;
	struct progress pg;
	bool want_progress = false;
	char *ppath = NULL;
	const char *cpath;
	int ch, ret;

	while ((ch = verb_getopt(v, argc, argv, "p", lo, &ret)) != -1)
		if (ch == 'p')
			want_progress = true;
	if (ret >= 0)
		return ret;
	if (argc - optind != 1)
		return usage_error(v, "expected one CHILD");
	cpath = argv[optind];
	if ((ret = probe_format(cpath, &f)))
		return ret;
	if (!f->runs_open) {
		msg("%s is a %s image: it has no parent to coalesce into",
		    cpath, f->name);
		return EXIT_FAIL;
	}
	ret = img_open(f, cpath, TD_OPEN_RDONLY | TD_OPEN_LEAF_ONLY, &child);
	if (!ret)
		ret = open_parent(child, cpath, &parent, &ppath);
	if (!ret && vbd_size(child) > vbd_size(parent)) {
		msg("cannot coalesce %s (%" PRIu64 " bytes) into its smaller "
		    "parent %s (%" PRIu64 " bytes)", cpath, vbd_size(child),
		    ppath, vbd_size(parent));
		ret = EXIT_FAIL;
	}
	if (!ret && !(runs = f->runs_open(cpath)))
		ret = EXIT_FAIL;
	if (!ret) {
		struct img_copy c = {
			.src = child, .dst = parent,
			.src_name = cpath, .dst_name = ppath,
			.secs = vbd_size(child) >> TD_SECTOR_SHIFT,
			.runs = runs,
			.pg = &pg,
		};

		progress_init(&pg, want_progress);
		ret = img_copy(&c);
	}
	if (runs)
		runs->close(runs);
	if (img_close(parent, ppath))
		ret = EXIT_FAIL;
	if (img_close(child, cpath))
		ret = EXIT_FAIL;
	free(ppath);
	return ret;
}

const struct verb verb_coalesce = {
	"coalesce", cmd_coalesce, "merge a child into its parent",
"Usage: " PROG " coalesce [-p] CHILD\n"
"\n"
"Write every sector present in the differencing image CHILD (a VHD or a\n"
"qcow2 image) into its parent (for a VHD: a VHD or a raw image; for qcow2:\n"
"its backing file, qcow2, VHD or raw), so that the parent alone then holds\n"
"what CHILD showed.  CHILD itself is not modified and still reads the same; it\n"
"can be deleted once nothing else depends on it.  The parent must not be\n"
"in use (it is locked for writing, CHILD for reading: a holder is named\n"
"and nothing is written), and should be backed up first: an interrupted\n"
"coalesce leaves it\n"
"partly updated (CHILD still reads correctly; run coalesce again).\n"
"\n"
"  -p, --progress   show progress (always shown on a terminal).\n"
"\n"
"Exit status: 0 merged, 1 failed, 2 usage.\n"
};
