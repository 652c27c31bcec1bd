/* SPDX-License-Identifier: MIT */
/* snapshot: a new, empty child on top of an image (offline). */
#include <string.h>

#include "tapfs-img.h"

static int cmd_snapshot(int argc, char **argv)
{
	const struct verb *v = &verb_snapshot;
	struct img_create c = { .vhd_type = VHD_TYPE_DYNAMIC };
	const struct img_format *f = NULL;
	char *opts = NULL;
	int ch, ret;

	while ((ch = verb_getopt(v, argc, argv, "F:o:", NULL, &ret)) != -1) {
		if (ch == 'F' && !(c.parent_fmt = parse_format(v, optarg)))
			return EXIT_USAGE;
		if (ch == 'o')
			opts = optarg;
	}
	if (ret >= 0)
		return ret;
	if (argc - optind != 2)
		return usage_error(v, "expected BASE NEWCHILD");
	c.parent = argv[optind];
	c.path = argv[optind + 1];
	c.quiet = true;
	f = c.parent_fmt;
	if ((ret = probe_format(c.parent, &f)))
		return ret;
	c.parent_fmt = f;
	/* The child is BASE's format; a raw BASE gets a VHD child. */
	if (!f->can_have_parent)
		f = &img_format_vhd;
	if (opts && !f->parse_options)
		return usage_error(v, "-o applies to vhd and qcow2 children");
	if (opts && (ret = f->parse_options(v, opts, &c)))
		return ret;
	if (c.vhd_type_set)
		return usage_error(v, "a child is differencing: only "
				   "block_size applies");
	ret = img_create(v, f, &c, NULL);
	if (!ret)
		printf("%s: new differencing image on %s\n", c.path, c.parent);
	return ret;
}

const struct verb verb_snapshot = {
	"snapshot", cmd_snapshot, "make a differencing child of an image",
"Usage: " PROG " snapshot [-F raw|vhd|qcow2] [-o OPTIONS] BASE NEWCHILD\n"
"\n"
"Offline snapshot: create NEWCHILD, an empty differencing image on top of\n"
"BASE, with BASE's virtual size: a VHD for a VHD or raw BASE, a qcow2\n"
"image for a qcow2 BASE.  From then on write to NEWCHILD only; BASE must\n"
"not change while NEWCHILD depends on it.  The same as\n"
"'" PROG " create -b BASE NEWCHILD' with BASE's format.  For a running VBD\n"
"use the mount's .ctl file (\"snapshot NAME\") instead.\n"
"\n"
"  -F FORMAT   BASE's format (default: probed); a raw BASE is allowed.\n"
"  -o OPTIONS  the child's: block_size=SIZE for a VHD, cluster_size=SIZE\n"
"              (and compat, refcount_bits) for qcow2.\n"
"\n"
"BASE is locked for reading while NEWCHILD is made: a BASE that a tapfs\n"
"mount or QEMU has open read-write is refused, naming the holder.\n"
"\n"
"Exit status: 0 created, 1 failed, 2 usage.\n"
};
