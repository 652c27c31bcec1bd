/* SPDX-License-Identifier: MIT */
/*
 * convert: copy what an image shows, through its chain, into a new image.
 *
 * Both ends are opened through the engine (the daemon's drivers: every
 * format the daemon reads is a SRC, every format it writes a DST); DST is
 * created empty first by its format's create, then written with requests
 * in flight (engine.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tapfs-img.h"

static int cmd_convert(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "progress", no_argument, NULL, 'p' },
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	const struct verb *v = &verb_convert;
	const struct img_format *ifmt = NULL, *ofmt = NULL;
	struct img_create oc = { .vhd_type = VHD_TYPE_DYNAMIC, .quiet = true };
	td_vbd_t *src = NULL, *dst = NULL;
	bool want_progress = false, created = false, device = false;
	unsigned long depth = IMG_COPY_DEPTH;
	struct progress pg;
	char *opts = NULL, *end;
	struct stat st;
	int ch, ret;

	while ((ch = verb_getopt(v, argc, argv, "f:O:o:m:pU", lo,
				 &ret)) != -1) {
		switch (ch) {
		case 'U':
			img_force_share = true;
			break;
		case 'f':
			if (!(ifmt = parse_format(v, optarg)))
				return EXIT_USAGE;
			break;
		case 'O':
			if (!(ofmt = parse_format(v, optarg)))
				return EXIT_USAGE;
			break;
		case 'o':
			opts = optarg;	/* parsed once -O is known */
			break;
		case 'm':
			errno = 0;
			depth = strtoul(optarg, &end, 10);
			if (errno || *end || !depth ||
			    depth > IMG_COPY_MAX_DEPTH)
				return usage_error(v, "-m takes 1 to %u "
						   "requests, not '%s'",
						   IMG_COPY_MAX_DEPTH, optarg);
			break;
		case 'p':
			want_progress = true;
			break;
		}
	}
	if (ret >= 0)
		return ret;
	if (!ofmt)
		return usage_error(v, "-O raw|vhd|qcow2|vmdk is required");
	if (argc - optind != 2)
		return usage_error(v, "expected SRC DST");
	if (opts && !ofmt->parse_options)
		return usage_error(v, "-o applies to -O vhd|qcow2 only");
	if (opts && (ret = ofmt->parse_options(v, opts, &oc)))
		return ret;
	oc.path = argv[optind + 1];
	if ((ret = probe_format(argv[optind], &ifmt)))
		return ret;
	ret = img_open(ifmt, argv[optind], TD_OPEN_RDONLY |
		       (img_force_share ? TD_OPEN_FORCE_SHARE : 0), &src);
	if (ret)
		return ret;
	oc.size = vbd_size(src);
	/* A block device given as raw DST is written whole, zeros too. */
	device = ofmt == &img_format_raw && stat(oc.path, &st) == 0 &&
		 S_ISBLK(st.st_mode);
	if (!device) {
		ret = ofmt->create(&oc);
		created = !ret;
	}
	/*
	 * DST is removed if the copy fails: the drivers' ordering barriers
	 * are skipped (as qemu-img convert's default cache=unsafe) and the
	 * file is synced once, when it is complete.
	 */
	if (!ret)
		ret = img_open(ofmt, oc.path, TD_OPEN_UNSAFE, &dst);
	if (!ret && device && vbd_size(dst) < oc.size) {
		msg("%s has %" PRIu64 " bytes, %s %" PRIu64, oc.path,
		    vbd_size(dst), argv[optind], oc.size);
		ret = EXIT_FAIL;
	}
	if (!ret) {
		struct img_copy c = {
			.src = src, .dst = dst,
			.src_name = argv[optind], .dst_name = oc.path,
			.secs = oc.size >> TD_SECTOR_SHIFT,
			.skip_zero = !device,	/* a new image reads zeros */
			.depth = (unsigned)depth,
			.pg = &pg,
		};

		progress_init(&pg, want_progress);
		ret = img_copy(&c);
	}
	if (img_close(dst, oc.path))
		ret = EXIT_FAIL;
	if (!ret && img_sync_file(oc.path))
		ret = EXIT_FAIL;
	if (img_close(src, argv[optind]))
		ret = EXIT_FAIL;
	if (ret && created)
		unlink(oc.path);
	return ret;
}

const struct verb verb_convert = {
	"convert", cmd_convert, "copy an image (through its chain)",
"Usage: " PROG " convert [-p] [-U] [-m N]\n"
"                 [-f raw|vhd|qcow2|qcow|vmdk] -O raw|vhd|qcow2|qcow|vmdk\n"
"                 [-o OPTIONS] SRC DST\n"
"\n"
"Copy what SRC shows (reading through its whole chain of parents) into a\n"
"new image DST, which must not exist (or is an existing block device for\n"
"-O raw).  Zero ranges are skipped, so DST is sparse (a block device is\n"
"written whole, zeros too).  If the copy fails, a DST this command created\n"
"is removed.  Both images are opened through the tapfs daemon's drivers;\n"
"DST is written without ordering barriers (as qemu-img's cache=unsafe)\n"
"and synced once, complete.\n"
"\n"
"  -O FORMAT   DST's format: raw, vhd, qcow2 or vmdk (monolithicSparse)\n"
"              (a single image, no parent).\n"
"  -o OPTIONS  for -O vhd: subformat=dynamic|fixed, block_size=SIZE;\n"
"              for -O qcow2: cluster_size=SIZE, compat=1.1|0.10,\n"
"              refcount_bits=N.\n"
"  -f FORMAT   read SRC as raw, vhd or qcow2 instead of probing (a qcow2\n"
"              SRC is read through its backing files: qcow2, raw, vhd).\n"
"  -m N        keep N requests (of up to 1 MiB) in flight, 1 to 64\n"
"              (default 8).\n"
"  -p, --progress   show progress (always shown on a terminal).\n"
"  -U, --force-share   copy SRC even though it is in use read-write (a\n"
"              paused VBD); without -U such a SRC is refused, naming the\n"
"              holder.  DST is always locked for writing.\n"
"\n"
"Exit status: 0 converted, 1 failed, 2 usage.\n"
"\n"
"Example:\n"
"  " PROG " convert -O raw leaf.vhd disk.img\n"
};
