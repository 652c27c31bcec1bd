/* SPDX-License-Identifier: MIT */
/* create: a new, empty image (offline: the format's metadata code). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tapfs-img.h"
#include "formats.h"
#include "common/td-fileio.h"
#include "vmdk/vmdk-image.h"

int create_raw(const struct img_create *c)
{
	int fd = open(c->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);

	if (fd < 0) {
		msg("cannot create %s: %s", c->path, strerror(errno));
		return EXIT_FAIL;
	}
	if (ftruncate(fd, (off_t)c->size) < 0 || fsync(fd) < 0) {
		msg("cannot create %s: %s", c->path, strerror(errno));
		close(fd);
		unlink(c->path);
		return EXIT_FAIL;
	}
	close(fd);
	if (!c->quiet)
		printf("Formatting '%s', fmt=raw size=%" PRIu64 "\n", c->path,
		       c->size);
	return 0;
}

/* The parent's format: -F, else probed. */
static int parent_format(const struct img_create *c,
			 const struct img_format **pf)
{
	*pf = c->parent_fmt;
	return probe_format(c->parent, pf);
}

/*
 * parent_format for a parent named relative to FILE's directory (qcow,
 * qcow2): *found is the resolved name (the caller frees it, also on
 * failure; NULL when out of memory).
 */
static int parent_format_at(const struct img_create *c, char **found,
			    const struct img_format **pf)
{
	struct img_create at = *c;

	*found = td_path_resolve(c->path, c->parent);
	if (!*found) {
		msg("out of memory");
		return EXIT_FAIL;
	}
	at.parent = *found;
	return parent_format(&at, pf);
}

int create_vhd(const struct img_create *c)
{
	struct vhd_create_params p = {
		.type = c->parent ? VHD_TYPE_DIFF : c->vhd_type,
		.size = c->size,
		.block_size = c->vhd_block_size,
		.parent = c->parent,
	};
	const struct img_format *pf = NULL;
	char err[1024];
	int ret;

	if (c->parent) {
		if ((ret = parent_format(c, &pf)))
			return ret;
		if (pf != &img_format_vhd && pf != &img_format_raw) {
			msg("%s is a %s image: the parent of a VHD is a VHD or "
			    "a raw image", c->parent, pf->name);
			return EXIT_FAIL;
		}
		/* blktap records a raw parent as a nil parent UUID. */
		p.parent_raw = pf == &img_format_raw;
	}
	if (vhd_image_create(c->path, &p, err, sizeof(err))) {
		msg("%s", err);
		return EXIT_FAIL;
	}
	if (c->quiet)
		return 0;
	if (c->parent && c->size)
		printf("Formatting '%s', fmt=vhd subformat=differencing "
		       "backing_file='%s' size=%" PRIu64 "\n", c->path,
		       c->parent, c->size);
	else if (c->parent)
		printf("Formatting '%s', fmt=vhd subformat=differencing "
		       "backing_file='%s'\n", c->path, c->parent);
	else
		printf("Formatting '%s', fmt=vhd subformat=%s size=%" PRIu64
		       "\n", c->path, c->vhd_type == VHD_TYPE_FIXED ? "fixed" :
		       "dynamic", c->size);
	return 0;
}

int create_qcow2(const struct img_create *c)
{
	struct qcow2_create_params p = c->qcow2;
	const struct img_format *pf = NULL;
	const char *arg;
	uint64_t psize;
	char err[1024];
	int ret;

	p.size = c->size;
	if (c->parent && td_remote_parent(c->parent, &arg)) {
		/* rbd:POOL/IMAGE@SNAP, as qemu-img create -b names it. */
		if (c->parent_fmt && c->parent_fmt != &img_format_raw) {
			msg("%s is a remote image: its format is raw, not %s",
			    c->parent, c->parent_fmt->name);
			return EXIT_FAIL;
		}
		if ((ret = img_remote_size(c->parent, &psize)))
			return ret;
		if (!p.size)
			p.size = td_round_up(psize, TD_SECTOR_SIZE);
		pf = &img_format_raw;
		p.backing = c->parent;
		p.backing_fmt = pf->qemu_name;
	} else if (c->parent) {
		char *found;

		ret = parent_format_at(c, &found, &pf);
		free(found);
		if (ret)
			return ret;
		p.backing = c->parent;
		p.backing_fmt = pf->qemu_name;
	}
	if (qcow2_image_create(c->path, &p, err, sizeof(err))) {
		msg("%s", err);
		return EXIT_FAIL;
	}
	if (c->quiet)
		return 0;
	printf("Formatting '%s', fmt=qcow2 cluster_size=%u compat=%s",
	       c->path, 1u << (p.cluster_bits ? p.cluster_bits :
			       QCOW2_DEFAULT_CLUSTER_BITS),
	       p.version == 2 ? "0.10" : "1.1");
	if (c->parent)
		printf(" backing_file='%s' backing_fmt=%s", c->parent,
		       p.backing_fmt);
	if (p.size)
		printf(" size=%" PRIu64, p.size);
	printf("\n");
	return 0;
}

/* qcow (v1) records no backing format: a reader probes the parent. */
int create_qcow(const struct img_create *c)
{
	const struct img_format *pf = NULL;
	uint64_t size = c->size;
	char err[1024];
	int ret;

	if (c->parent) {
		char *found;

		ret = parent_format_at(c, &found, &pf);
		if (!ret && !size &&
		    td_image_size(pf->driver, found, &size, err, sizeof(err))) {
			msg("%s", err);
			ret = EXIT_FAIL;
		}
		free(found);
		if (ret)
			return ret;
		size = (size + 511) / 512 * 512;
	}
	if (qcow_image_create(c->path, size, c->parent, err, sizeof(err))) {
		msg("%s", err);
		return EXIT_FAIL;
	}
	if (c->quiet)
		return 0;
	printf("Formatting '%s', fmt=qcow size=%" PRIu64, c->path, size);
	if (c->parent)
		printf(" backing_file='%s'", c->parent);
	printf("\n");
	return 0;
}

/*
 * Check what c asks of format f (usage errors), lock the parent, create.
 * opts: -o, parsed here once the format is known (NULL: none).
 */
int img_create(const struct verb *v, const struct img_format *f,
	       struct img_create *c, char *opts)
{
	const char *arg;
	int ret;

	if (opts && !f->parse_options)
		return usage_error(v, "-o applies to vhd and qcow2 images "
				   "only");
	if (opts && (ret = f->parse_options(v, opts, c)))
		return ret;
	if (c->parent && !f->can_have_parent)
		return usage_error(v, "a %s image has no parent: -b needs "
				   "-f vhd or qcow2", f->name);
	if (c->parent && c->vhd_type_set && c->vhd_type == VHD_TYPE_FIXED)
		return usage_error(v, "a differencing image cannot be fixed");
	if (!c->parent && c->size == 0)
		return usage_error(v, "SIZE must be greater than 0");
	if (c->parent && td_remote_parent(c->parent, &arg)) {
		/* Not a file: nothing to lock (an RBD snapshot is frozen). */
		if (f != &img_format_qcow2) {
			msg("%s: a %s image cannot have a remote parent (its "
			    "parent is named as a file): use -f qcow2",
			    c->parent, f->name);
			return EXIT_FAIL;
		}
		return f->create(c);
	}
	/* A parent someone writes would change under its new child. */
	if (c->parent && (ret = img_lock(c->parent, TD_LOCK_READ)))
		return ret;
	return f->create(c);
}

static int cmd_create(int argc, char **argv)
{
	const struct verb *v = &verb_create;
	const struct img_format *f = &img_format_vhd;
	struct img_create c = { .vhd_type = VHD_TYPE_DYNAMIC };
	char *opts = NULL;
	int ch, ret;

	while ((ch = verb_getopt(v, argc, argv, "f:o:b:F:q", NULL,
				 &ret)) != -1) {
		switch (ch) {
		case 'f':
			if (!(f = parse_format(v, optarg)))
				return EXIT_USAGE;
			break;
		case 'o':
			opts = optarg;	/* parsed once the format is known */
			break;
		case 'b':
			c.parent = optarg;
			break;
		case 'F':
			if (!(c.parent_fmt = parse_format(v, optarg)))
				return EXIT_USAGE;
			break;
		case 'q':
			c.quiet = true;
			break;
		}
	}
	if (ret >= 0)
		return ret;
	if (optind >= argc || argc - optind > 2)
		return usage_error(v, "expected FILE [SIZE]");
	c.path = argv[optind];
	if (optind + 1 < argc &&
	    (ret = parse_size(v, "size", argv[optind + 1], &c.size)))
		return ret;
	if (!c.parent && optind + 1 >= argc)
		return usage_error(v, "SIZE is required without -b");
	return img_create(v, f, &c, opts);
}

const struct verb verb_create = {
	"create", cmd_create, "create a new image",
"Usage: " PROG " create [-q] [-f raw|vhd|qcow2|qcow|vmdk] [-o OPTIONS]\n"
"                 FILE SIZE\n"
"       " PROG " create [-q] [-f vhd|qcow2|qcow] [-o OPTIONS] -b PARENT\n"
"                 [-F raw|vhd|qcow2] FILE [SIZE]\n"
"\n"
"Create a new image FILE, which must not exist.\n"
"\n"
"  -f FORMAT   vhd (the default), qcow2 or raw.\n"
"  -o OPTIONS  for vhd, a comma-separated list of\n"
"                subformat=dynamic  sparse, grows as it is written (default)\n"
"                subformat=fixed    SIZE bytes of data and a footer\n"
"                block_size=SIZE    dynamic block, a power of two from 512\n"
"                                   bytes to 256M (default 2M)\n"
"              for qcow2:\n"
"                cluster_size=SIZE  512 bytes to 2M, a power of two (64K)\n"
"                compat=1.1|0.10    version 3 (default) or 2\n"
"                refcount_bits=N    2, 4, ... 64 (default 16)\n"
"  -b PARENT   make a differencing VHD whose unwritten sectors read from\n"
"              PARENT (a VHD, or a raw image).  SIZE defaults to PARENT's\n"
"              virtual size.  The child records PARENT's UUID and three\n"
"              locators: its path relative to FILE's directory (W2ru), its\n"
"              absolute path (W2ku) and a file:// URL (MacX).\n"
"  -F FORMAT   PARENT's format, raw, vhd or qcow2 (default: probed).  A\n"
"              raw parent of a VHD is recorded as a nil parent UUID, as\n"
"              blktap does.  A qcow2 child records PARENT's name as given\n"
"              (relative names are resolved against FILE's directory)\n"
"              and its format (qcow2, raw, vpc).\n"
"              A qcow2 child may have a Ceph RBD image as PARENT, named\n"
"              as QEMU names it: rbd:POOL/IMAGE[@SNAP][:conf=FILE][:id=ID]\n"
"              (raw; the cluster of $CEPH_CONF unless conf= says).\n"
"  -q          no \"Formatting\" line.\n"
"\n"
"SIZE is in bytes, or with a suffix K, M, G or T (powers of 1024), and is\n"
"rounded up to a multiple of 512.  VHD images hold at most 2040G.\n"
"\n"
"Exit status: 0 created, 1 failed (nothing is left behind), 2 usage.\n"
"\n"
"Examples:\n"
"  " PROG " create disk.vhd 20G\n"
"  " PROG " create -o subformat=fixed disk.vhd 512M\n"
"  " PROG " create -f raw disk.img 20G\n"
"  " PROG " create -b base.vhd child.vhd\n"
"  " PROG " create -f qcow2 -o cluster_size=4K disk.qcow2 20G\n"
"  " PROG " create -f qcow2 -b base.qcow2 -F qcow2 child.qcow2\n"
"  " PROG " create -f qcow2 -b rbd:rbd/golden@v1 child.qcow2\n"
};

int create_vmdk(const struct img_create *c)
{
	char err[1024];

	if (vmdk_image_create(c->path, c->size, err, sizeof(err))) {
		msg("cannot create %s", err);
		return EXIT_FAIL;
	}
	if (!c->quiet)
		printf("Formatting '%s', fmt=vmdk size=%" PRIu64 " "
		       "subformat=monolithicSparse\n", c->path, c->size);
	return 0;
}
