/* SPDX-License-Identifier: MIT */
/*
 * tapfs-img: create, inspect, check, snapshot, coalesce and convert tapfs
 * disk images (raw, VHD and qcow2), offline, in the style of
 * qemu-img/vhd-util.
 *
 * Exit status: 0 success; 1 the operation failed (or, for check, problems
 * were found); 2 usage error (and, for check, an image that cannot be
 * read at all).
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <tapfs/lock.h>
#include <tapfs/tapdisk.h>

#include "qcow2-image.h"
#include "vhd-image.h"

#define EXIT_FAIL	1
#define EXIT_USAGE	2

#define PROG		"tapfs-img"
/* Sectors moved per read or write (1 MiB). */
#define COPY_SECTORS	2048u
/* Problem lines check prints before it only counts. */
#define CHECK_MAX_LINES	1000u

struct verb {
	const char	*name;
	int		(*run)(int argc, char **argv);
	const char	*summary;
	const char	*usage;
};

static const struct verb *verb_find(const char *name);

static void msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void msg(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, PROG ": ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/*
 * The image locks of this run (include/tapfs/lock.h): taken before an
 * image is read for a result or written, held until the verb returns, so
 * that an image a tapfs mount or QEMU is writing is refused instead of
 * read half-written or written under its writer.
 */
#define IMG_MAX_LOCKS	4

static struct td_lock *img_locks[IMG_MAX_LOCKS];
static unsigned img_nlocks;
static bool img_force_share;	/* -U of check and convert */

static int img_lock(const char *path, enum td_lock_mode mode)
{
	char err[1024];
	int rc;

	/* -U: the caller reads an image in use, knowingly (as qemu-img -U). */
	if (mode == TD_LOCK_READ && img_force_share)
		return 0;

	if (img_nlocks == IMG_MAX_LOCKS) {
		msg("%s: too many images locked", path);
		return EXIT_FAIL;
	}
	rc = td_lock_acquire(NULL, path, mode, TD_LOCK_ROLE_IMAGE, NULL,
			     PROG, &img_locks[img_nlocks], err, sizeof(err));
	if (rc == -EBUSY) {
		msg("%s (close the VBD, or stop the program that has it "
		    "open)", err);
		return EXIT_FAIL;
	}
	if (rc) {
		msg("%s", err);
		return EXIT_FAIL;
	}
	img_nlocks++;
	return 0;
}

static void img_unlock_all(void)
{
	while (img_nlocks)
		td_lock_release(img_locks[--img_nlocks]);
}

/* A usage error of a verb: the message, then where to find help. */
static int usage_error(const char *verb, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int usage_error(const char *verb, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, PROG " %s: ", verb);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry '" PROG " %s --help'.\n", verb);
	return EXIT_USAGE;
}

/* getopt's '?' (unknown option) or ':' (missing argument). */
static int bad_option(const char *verb, int c, char **argv)
{
	if (c == ':')
		return usage_error(verb, "option '%s' needs an argument",
				   argv[optind - 1]);
	return usage_error(verb, "unknown option '%s'", argv[optind - 1]);
}

static int verb_help(const char *name)
{
	const struct verb *v = verb_find(name);

	fputs(v->usage, stdout);
	return 0;
}

/* "100 MiB" */
static const char *human_size(uint64_t b, char *buf, size_t len)
{
	static const char *const unit[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double v = (double)b;
	unsigned u = 0;
	int n;

	while (v >= 1024 && u + 1 < sizeof(unit) / sizeof(unit[0])) {
		v /= 1024;
		u++;
	}
	if (u == 0) {
		snprintf(buf, len, "%" PRIu64 " B", b);
		return buf;
	}
	n = snprintf(buf, len, "%.2f", v);
	/* "1.50" -> "1.5", "100.00" -> "100" */
	while (n > 0 && (size_t)n < len && buf[n - 1] == '0')
		buf[--n] = '\0';
	if (n > 0 && (size_t)n < len && buf[n - 1] == '.')
		buf[--n] = '\0';
	snprintf(buf + n, len - (size_t)n, " %s", unit[u]);
	return buf;
}

/*
 * qcow2 images go to their own helpers (qcow2-image.h), never to the VHD
 * chain code: a value past enum vhd_format's, not passed to vhd_*().
 */
#define FORMAT_QCOW2	((enum vhd_format)(VHD_FORMAT_VHD + 1))

static int parse_format(const char *verb, const char *s, enum vhd_format *f)
{
	if (!strcmp(s, "raw"))
		*f = VHD_FORMAT_RAW;
	else if (!strcmp(s, "vhd") || !strcmp(s, "vpc"))
		*f = VHD_FORMAT_VHD;
	else if (!strcmp(s, "qcow2"))
		*f = FORMAT_QCOW2;
	else
		return usage_error(verb, "unknown format '%s' (raw, vhd or "
				   "qcow2)", s);
	return 0;
}

/* FORMAT_QCOW2 when the file at path is a qcow2 image, else f. */
static int probe_qcow2(const char *path, enum vhd_format *f)
{
	bool is_qcow2;
	int ret;

	if (*f != VHD_FORMAT_AUTO)
		return 0;
	ret = qcow2_probe(path, &is_qcow2);
	if (ret) {
		msg("%s: %s", path, strerror(-ret));
		return EXIT_FAIL;
	}
	if (is_qcow2)
		*f = FORMAT_QCOW2;
	return 0;
}

/* Parse a size argument, rounded up to a whole sector. */
static int parse_size(const char *verb, const char *what, const char *s,
		      uint64_t *out)
{
	uint64_t v;

	if (td_parse_size(s, &v) || v > UINT64_MAX - TD_SECTOR_SIZE)
		return usage_error(verb, "invalid %s '%s' (bytes, or a number "
				   "with K, M, G or T)", what, s);
	*out = (v + TD_SECTOR_SIZE - 1) & ~(uint64_t)(TD_SECTOR_SIZE - 1);
	return 0;
}

struct create_opts {
	enum vhd_disk_type	type;
	uint32_t		block_size;
	bool			type_set;
};

/* -o subformat=dynamic|fixed,block_size=SIZE */
static int parse_vhd_options(const char *verb, char *s,
			     struct create_opts *o)
{
	char *tok, *save = NULL;

	for (tok = strtok_r(s, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		char *val = strchr(tok, '=');
		uint64_t v;

		if (!val)
			return usage_error(verb, "option '%s' needs a value",
					   tok);
		*val++ = '\0';
		if (!strcmp(tok, "subformat")) {
			if (!strcmp(val, "dynamic"))
				o->type = VHD_TYPE_DYNAMIC;
			else if (!strcmp(val, "fixed"))
				o->type = VHD_TYPE_FIXED;
			else
				return usage_error(verb, "subformat must be "
						   "dynamic or fixed, not '%s'",
						   val);
			o->type_set = true;
		} else if (!strcmp(tok, "block_size")) {
			if (td_parse_size(val, &v) || v > UINT32_MAX)
				return usage_error(verb, "invalid block_size "
						   "'%s'", val);
			o->block_size = (uint32_t)v;
		} else {
			return usage_error(verb, "unknown option '%s' "
					   "(subformat, block_size)", tok);
		}
	}
	return 0;
}

/* -o cluster_size=SIZE,compat=0.10|1.1,refcount_bits=N (qcow2) */
static int parse_qcow2_options(const char *verb, char *s,
			       struct qcow2_create_params *p)
{
	char *tok, *save = NULL;

	for (tok = s ? strtok_r(s, ",", &save) : NULL; tok;
	     tok = strtok_r(NULL, ",", &save)) {
		char *val = strchr(tok, '=');
		uint64_t v;

		if (!val)
			return usage_error(verb, "option '%s' needs a value",
					   tok);
		*val++ = '\0';
		if (!strcmp(tok, "cluster_size")) {
			if (td_parse_size(val, &v) || v < 512 ||
			    v > (2u << 20) || (v & (v - 1)))
				return usage_error(verb, "cluster_size must be "
						   "a power of two from 512 to "
						   "2M, not '%s'", val);
			p->cluster_bits = (uint32_t)__builtin_ctzll(v);
		} else if (!strcmp(tok, "compat")) {
			if (!strcmp(val, "0.10") || !strcmp(val, "v2"))
				p->version = 2;
			else if (!strcmp(val, "1.1") || !strcmp(val, "v3"))
				p->version = 3;
			else
				return usage_error(verb, "compat must be 0.10 "
						   "or 1.1, not '%s'", val);
		} else if (!strcmp(tok, "refcount_bits")) {
			if (td_parse_size(val, &v) || !v || v > 64 ||
			    (v & (v - 1)))
				return usage_error(verb, "refcount_bits must "
						   "be 1, 2, 4, ... 64, not "
						   "'%s'", val);
			p->refcount_order = (uint32_t)__builtin_ctzll(v);
			if (!p->refcount_order)
				p->refcount_order = QCOW2_MAX_REFCOUNT_ORDER + 1;
		} else {
			return usage_error(verb, "unknown option '%s' "
					   "(cluster_size, compat, "
					   "refcount_bits)", tok);
		}
	}
	/* refcount_order 0 means "default" to the helpers. */
	if (p->refcount_order == QCOW2_MAX_REFCOUNT_ORDER + 1)
		return usage_error(verb, "refcount_bits=1 is not supported "
				   "for new images (2 to 64)");
	if (p->version == 2 && p->refcount_order &&
	    p->refcount_order != QCOW2_DEFAULT_REFCOUNT_ORDER)
		return usage_error(verb, "compat=0.10 images have 16-bit "
				   "refcounts only");
	return 0;
}

/* ---- progress -------------------------------------------------------- */

struct progress {
	bool	 on;
	bool	 tty;
	int	 last;		/* per mille (tty) or per cent (lines) shown */
};

static void progress_init(struct progress *p, bool wanted)
{
	p->tty = isatty(STDERR_FILENO);
	p->on = wanted || p->tty;
	p->last = -1;
}

static void progress_show(struct progress *p, uint64_t done, uint64_t total)
{
	unsigned width = 40, fill, i;
	int pm;

	if (!p->on)
		return;
	pm = total ? (int)(done * 1000 / total) : 1000;
	if (!p->tty) {
		if (pm / 100 * 10 > p->last) {
			p->last = pm / 100 * 10;
			fprintf(stderr, "progress: %d%%\n", p->last);
		}
		return;
	}
	if (pm == p->last)
		return;
	p->last = pm;
	fill = (unsigned)pm * width / 1000;
	fputs("\r[", stderr);
	for (i = 0; i < width; i++)
		fputc(i < fill ? '#' : ' ', stderr);
	fprintf(stderr, "] %5.1f%%", pm / 10.0);
	if (done >= total)
		fputc('\n', stderr);
	fflush(stderr);
}

/* ---- create / snapshot ---------------------------------------------- */

static int create_raw(const char *path, uint64_t size)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);

	if (fd < 0) {
		msg("cannot create %s: %s", path, strerror(errno));
		return EXIT_FAIL;
	}
	if (ftruncate(fd, (off_t)size) < 0 || fsync(fd) < 0) {
		msg("cannot create %s: %s", path, strerror(errno));
		close(fd);
		unlink(path);
		return EXIT_FAIL;
	}
	close(fd);
	return 0;
}

/* Is the parent raw: from -F, else probed. */
static int parent_is_raw(const char *parent, enum vhd_format pfmt, bool *raw)
{
	bool is_vhd;
	int ret;

	if (pfmt != VHD_FORMAT_AUTO) {
		*raw = pfmt == VHD_FORMAT_RAW;
		return 0;
	}
	ret = vhd_probe(parent, &is_vhd);
	if (ret) {
		msg("parent %s: %s", parent, strerror(-ret));
		return EXIT_FAIL;
	}
	*raw = !is_vhd;
	return 0;
}

static int create_vhd(const char *path, const struct create_opts *o,
		      uint64_t size, const char *parent,
		      enum vhd_format pfmt)
{
	struct vhd_create_params p = {
		.type = parent ? VHD_TYPE_DIFF : o->type,
		.size = size,
		.block_size = o->block_size,
		.parent = parent,
	};
	char err[1024];
	int ret;

	if (parent) {
		ret = parent_is_raw(parent, pfmt, &p.parent_raw);
		if (ret)
			return ret;
	}
	if (vhd_image_create(path, &p, err, sizeof(err))) {
		msg("%s", err);
		return EXIT_FAIL;
	}
	return 0;
}

/* qemu's name of PARENT's format: from -F, else probed. */
static int parent_format_name(const char *parent, enum vhd_format pfmt,
			      const char **name)
{
	bool raw;
	int ret;

	if (pfmt == VHD_FORMAT_AUTO && (ret = probe_qcow2(parent, &pfmt)))
		return ret;
	if (pfmt == FORMAT_QCOW2) {
		*name = "qcow2";
		return 0;
	}
	ret = parent_is_raw(parent, pfmt, &raw);
	*name = raw ? "raw" : "vpc";
	return ret;
}

static int create_qcow2(const char *path, struct qcow2_create_params *p,
			const char *parent, enum vhd_format pfmt, bool quiet)
{
	char err[1024];
	int ret;

	if (parent) {
		/* A relative name is relative to FILE's directory. */
		char *found = qcow2_path_resolve(path, parent);

		if (!found) {
			msg("out of memory");
			return EXIT_FAIL;
		}
		p->backing = parent;
		ret = parent_format_name(found, pfmt, &p->backing_fmt);
		free(found);
		if (ret)
			return ret;
	}
	if (qcow2_image_create(path, p, err, sizeof(err))) {
		msg("%s", err);
		return EXIT_FAIL;
	}
	if (quiet)
		return 0;
	printf("Formatting '%s', fmt=qcow2 cluster_size=%u compat=%s",
	       path, 1u << (p->cluster_bits ? p->cluster_bits :
			    QCOW2_DEFAULT_CLUSTER_BITS),
	       p->version == 2 ? "0.10" : "1.1");
	if (parent)
		printf(" backing_file='%s' backing_fmt=%s", parent,
		       p->backing_fmt);
	if (p->size)
		printf(" size=%" PRIu64, p->size);
	printf("\n");
	return 0;
}

static int cmd_create(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct create_opts o = { .type = VHD_TYPE_DYNAMIC };
	struct qcow2_create_params qp = { .size = 0 };
	enum vhd_format fmt = VHD_FORMAT_VHD, pfmt = VHD_FORMAT_AUTO;
	const char *parent = NULL;
	char *opts = NULL;
	bool quiet = false;
	uint64_t size = 0;
	int c, ret;

	while ((c = getopt_long(argc, argv, ":f:o:b:F:qh", lo, NULL)) != -1) {
		switch (c) {
		case 'f':
			if ((ret = parse_format("create", optarg, &fmt)))
				return ret;
			break;
		case 'o':
			opts = optarg;	/* parsed once the format is known */
			break;
		case 'b':
			parent = optarg;
			break;
		case 'F':
			if ((ret = parse_format("create", optarg, &pfmt)))
				return ret;
			break;
		case 'q':
			quiet = true;
			break;
		case 'h':
			return verb_help("create");
		default:
			return bad_option("create", c, argv);
		}
	}
	if (optind >= argc || argc - optind > 2)
		return usage_error("create", "expected FILE [SIZE]");
	if (optind + 1 < argc &&
	    (ret = parse_size("create", "size", argv[optind + 1], &size)))
		return ret;
	if (!parent && optind + 1 >= argc)
		return usage_error("create", "SIZE is required without -b");
	/* A parent someone writes would change under its new child. */
	if (parent && (ret = img_lock(parent, TD_LOCK_READ)))
		return ret;
	if (fmt == FORMAT_QCOW2) {
		if ((ret = parse_qcow2_options("create", opts, &qp)))
			return ret;
		if (!parent && size == 0)
			return usage_error("create", "SIZE must be greater "
					   "than 0");
		qp.size = size;
		return create_qcow2(argv[optind], &qp, parent, pfmt, quiet);
	}
	if (opts && (ret = parse_vhd_options("create", opts, &o)))
		return ret;
	if (parent && fmt == VHD_FORMAT_RAW)
		return usage_error("create", "-b PARENT makes a differencing "
				   "VHD: it needs -f vhd");
	if (parent && o.type_set && o.type == VHD_TYPE_FIXED)
		return usage_error("create", "a differencing image cannot be "
				   "fixed");
	if (fmt == VHD_FORMAT_RAW && (o.type_set || o.block_size))
		return usage_error("create", "-o applies to vhd images only");
	if (!parent && size == 0)
		return usage_error("create", "SIZE must be greater than 0");

	if (fmt == VHD_FORMAT_RAW)
		ret = create_raw(argv[optind], size);
	else
		ret = create_vhd(argv[optind], &o, size, parent, pfmt);
	if (!ret && !quiet) {
		if (parent && size)
			printf("Formatting '%s', fmt=vhd subformat=differencing"
			       " backing_file='%s' size=%" PRIu64 "\n",
			       argv[optind], parent, size);
		else if (parent)
			printf("Formatting '%s', fmt=vhd subformat=differencing"
			       " backing_file='%s'\n", argv[optind], parent);
		else
			printf("Formatting '%s', fmt=%s%s size=%" PRIu64 "\n",
			       argv[optind], fmt == VHD_FORMAT_RAW ? "raw" :
			       "vhd", fmt == VHD_FORMAT_RAW ? "" :
			       o.type == VHD_TYPE_FIXED ?
			       " subformat=fixed" : " subformat=dynamic", size);
	}
	return ret;
}

static int cmd_snapshot(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct create_opts o = { .type = VHD_TYPE_DYNAMIC };
	enum vhd_format pfmt = VHD_FORMAT_AUTO;
	int c, ret;

	while ((c = getopt_long(argc, argv, ":F:o:h", lo, NULL)) != -1) {
		switch (c) {
		case 'F':
			if ((ret = parse_format("snapshot", optarg, &pfmt)))
				return ret;
			break;
		case 'o':
			if ((ret = parse_vhd_options("snapshot", optarg, &o)))
				return ret;
			if (o.type_set)
				return usage_error("snapshot", "only "
						   "block_size applies");
			break;
		case 'h':
			return verb_help("snapshot");
		default:
			return bad_option("snapshot", c, argv);
		}
	}
	if (argc - optind != 2)
		return usage_error("snapshot", "expected BASE NEWCHILD");
	if ((ret = img_lock(argv[optind], TD_LOCK_READ)))
		return ret;
	ret = create_vhd(argv[optind + 1], &o, 0, argv[optind], pfmt);
	if (!ret)
		printf("%s: new differencing image on %s\n", argv[optind + 1],
		       argv[optind]);
	return ret;
}

/* ---- info ------------------------------------------------------------- */

static void json_str(FILE *f, const char *s)
{
	const unsigned char *p;

	fputc('"', f);
	for (p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p < 0x20)
			fprintf(f, "\\u%04x", *p);
		else
			fputc(*p, f);
	}
	fputc('"', f);
}

/* info's "in use" line: who holds path, or "no". */
static void info_in_use(const char *path, bool json)
{
	char who[256];

	if (td_lock_describe(NULL, path, who, sizeof(who)))
		who[0] = '\0';
	if (json) {
		printf("    \"in-use\": ");
		if (who[0])
			json_str(stdout, who);
		else
			printf("false");
		printf(",\n");
	} else {
		printf("in use: %s\n", who[0] ? who : "no");
	}
}

static const char *link_subformat(const struct vhd_link *l)
{
	return l->vhd ? vhd_type_name(l->vhd->footer.type) : NULL;
}

static void vhd_time_str(uint32_t vt, char *buf, size_t len)
{
	time_t t = vhd_time_to_unix(vt);
	struct tm tm;

	if (!gmtime_r(&t, &tm) ||
	    !strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm))
		snprintf(buf, len, "%" PRIu32, vt);
}

struct info {
	const char		*path;
	struct vhd_image	*img;		/* NULL: raw */
	uint64_t		 size;
	uint64_t		 disk_size;
	uint64_t		 alloc_secs;
	uint32_t		 alloc_blocks;
	struct vhd_chain	*chain;		/* NULL if it did not open */
	char			 chain_err[1024];
};

static void info_locators(struct vhd_image *img, bool json)
{
	char path[4096], why[256], name[16];
	unsigned i;
	bool first = true;

	for (i = 0; i < VHD_MAX_LOCATORS; i++) {
		uint32_t code = img->header.loc[i].code;

		if (code == VHD_PLAT_NONE)
			continue;
		if (vhd_image_read_locator(img, i, path, sizeof(path), why,
					   sizeof(why)))
			snprintf(path, sizeof(path), "(%s)", why);
		vhd_platform_name(code, name, sizeof(name));
		if (json) {
			printf("%s{ \"platform\": ", first ? "" : ", ");
			json_str(stdout, name);
			printf(", \"path\": ");
			json_str(stdout, path);
			printf(" }");
		} else {
			printf("parent locator %u: %s %s\n", i, name, path);
		}
		first = false;
	}
}

/* Why the virtual size is not the footer's current size. */
static void info_size_source(const struct vhd_image *img)
{
	const struct vhd_footer *f = &img->footer;
	char a[32];

	printf("current size: %s (%" PRIu64 " bytes) in the footer; the "
	       "virtual size is the CHS geometry %u/%u/%u of creator "
	       "\"%.4s\"\n", human_size(f->curr_size, a, sizeof(a)),
	       f->curr_size, f->geometry.cylinders, f->geometry.heads,
	       f->geometry.sectors, f->creator_app);
}

static void info_print_text(const struct info *in)
{
	char a[32], b[32], u[40];

	printf("image: %s\n", in->path);
	printf("file format: %s\n", in->img ? "vhd" : "raw");
	if (in->img)
		printf("subformat: %s\n", vhd_type_name(in->img->footer.type));
	printf("virtual size: %s (%" PRIu64 " bytes)\n",
	       human_size(in->size, a, sizeof(a)), in->size);
	if (in->img && in->img->footer.curr_size != in->size)
		info_size_source(in->img);
	printf("disk size: %s\n", human_size(in->disk_size, b, sizeof(b)));
	info_in_use(in->path, false);
	if (!in->img)
		goto chain;
	printf("allocated: %s (%" PRIu64 " bytes)", human_size(
	       in->alloc_secs << TD_SECTOR_SHIFT, a, sizeof(a)),
	       in->alloc_secs << TD_SECTOR_SHIFT);
	if (vhd_image_sparse(in->img))
		printf(" in %" PRIu32 " block%s", in->alloc_blocks,
		       in->alloc_blocks == 1 ? "" : "s");
	printf("\n");
	if (vhd_image_sparse(in->img))
		printf("block size: %s (%" PRIu32 " bytes)\n", human_size(
		       in->img->header.block_size, a, sizeof(a)),
		       in->img->header.block_size);
	vhd_uuid_format(in->img->footer.uuid, u);
	printf("uuid: %s\n", u);
	vhd_time_str(in->img->footer.timestamp, a, sizeof(a));
	printf("created: %s\n", a);
	printf("creator: %.4s\n", in->img->footer.creator_app);
	if (in->img->footer.type == VHD_TYPE_DIFF) {
		char name[VHD_PARENT_NAME_SIZE * 2];

		if (vhd_image_parent_is_raw(in->img))
			printf("parent uuid: none (raw parent)\n");
		else {
			vhd_uuid_format(in->img->header.parent_uuid, u);
			printf("parent uuid: %s\n", u);
		}
		if (!vhd_parent_name_get(&in->img->header, name, sizeof(name)))
			printf("parent name: %s\n", name);
		vhd_time_str(in->img->header.parent_timestamp, a, sizeof(a));
		printf("parent timestamp: %s\n", a);
		info_locators(in->img, false);
	}
chain:
	if (in->chain) {
		unsigned i;

		printf("chain (leaf -> base): ");
		for (i = 0; i < in->chain->n; i++)
			printf("%s%s", i ? " -> " : "",
			       in->chain->link[i].path);
		printf("\n");
	} else {
		printf("chain: broken: %s\n", in->chain_err);
	}
}

static void info_print_json(const struct info *in)
{
	char u[40], t[40];
	unsigned i;

	printf("{\n    \"filename\": ");
	json_str(stdout, in->path);
	printf(",\n    \"format\": \"%s\",\n", in->img ? "vhd" : "raw");
	if (in->img)
		printf("    \"subformat\": \"%s\",\n",
		       vhd_type_name(in->img->footer.type));
	printf("    \"virtual-size\": %" PRIu64 ",\n", in->size);
	printf("    \"actual-size\": %" PRIu64 ",\n", in->disk_size);
	info_in_use(in->path, true);
	if (in->img) {
		printf("    \"allocated-bytes\": %" PRIu64 ",\n",
		       in->alloc_secs << TD_SECTOR_SHIFT);
		if (vhd_image_sparse(in->img))
			printf("    \"allocated-blocks\": %" PRIu32 ",\n"
			       "    \"block-size\": %" PRIu32 ",\n",
			       in->alloc_blocks, in->img->header.block_size);
		const struct vhd_footer *f = &in->img->footer;
		char app[sizeof(f->creator_app) + 1];

		vhd_uuid_format(f->uuid, u);
		vhd_time_str(f->timestamp, t, sizeof(t));
		printf("    \"uuid\": \"%s\",\n    \"created\": \"%s\",\n", u,
		       t);
		snprintf(app, sizeof(app), "%.4s", f->creator_app);
		for (i = 0; app[i]; i++)
			if (!isprint((unsigned char)app[i]))
				app[i] = '?';	/* JSON wants UTF-8 */
		printf("    \"creator\": ");
		json_str(stdout, app);
		printf(",\n    \"current-size\": %" PRIu64 ",\n"
		       "    \"geometry\": { \"cylinders\": %u, \"heads\": %u, "
		       "\"sectors\": %u },\n    \"size-from\": \"%s\",\n",
		       f->curr_size, f->geometry.cylinders, f->geometry.heads,
		       f->geometry.sectors, vhd_footer_size_from_geometry(f) ?
		       "geometry" : "current-size");
	}
	if (in->img && in->img->footer.type == VHD_TYPE_DIFF) {
		char name[VHD_PARENT_NAME_SIZE * 2] = "";

		vhd_uuid_format(in->img->header.parent_uuid, u);
		printf("    \"parent-raw\": %s,\n",
		       vhd_image_parent_is_raw(in->img) ? "true" : "false");
		printf("    \"parent-uuid\": \"%s\",\n", u);
		vhd_parent_name_get(&in->img->header, name, sizeof(name));
		printf("    \"parent-name\": ");
		json_str(stdout, name);
		vhd_time_str(in->img->header.parent_timestamp, t, sizeof(t));
		printf(",\n    \"parent-timestamp\": \"%s\",\n", t);
		printf("    \"parent-locators\": [ ");
		info_locators(in->img, true);
		printf(" ],\n");
	}
	if (!in->chain) {
		printf("    \"chain-error\": ");
		json_str(stdout, in->chain_err);
		printf(",\n    \"chain\": []\n}\n");
		return;
	}
	printf("    \"chain\": [\n");
	for (i = 0; i < in->chain->n; i++) {
		const struct vhd_link *l = &in->chain->link[i];

		printf("        { \"filename\": ");
		json_str(stdout, l->path);
		printf(", \"format\": \"%s\"", l->vhd ? "vhd" : "raw");
		if (l->vhd)
			printf(", \"subformat\": \"%s\"", link_subformat(l));
		printf(", \"virtual-size\": %" PRIu64 " }%s\n", l->size,
		       i + 1 < in->chain->n ? "," : "");
	}
	printf("    ]\n}\n");
}

/* info of a qcow2 image: its header, allocation and backing chain. */
static int info_qcow2(const char *path, uint64_t disk_size, bool json)
{
	struct qcow2_image *img;
	struct qcow2_chain *c = NULL;
	char err[1024], chain_err[1024] = "", a[32], b[32];
	uint64_t bytes = 0, clusters = 0;
	unsigned i;
	int ret, cret;

	if (qcow2_image_open(&img, path, 0, err, sizeof(err))) {
		msg("%s", err);
		return EXIT_FAIL;
	}
	ret = qcow2_image_allocated(img, &bytes, &clusters, err, sizeof(err));
	if (ret)
		msg("%s", err);
	cret = qcow2_chain_open(&c, path, chain_err, sizeof(chain_err));
	if (json) {
		printf("{\n    \"filename\": ");
		json_str(stdout, path);
		printf(",\n    \"format\": \"qcow2\",\n");
		printf("    \"compat\": \"%s\",\n",
		       img->h.version == 2 ? "0.10" : "1.1");
		printf("    \"virtual-size\": %" PRIu64 ",\n", img->h.size);
		printf("    \"actual-size\": %" PRIu64 ",\n", disk_size);
		info_in_use(path, true);
		printf("    \"allocated-bytes\": %" PRIu64 ",\n", bytes);
		printf("    \"allocated-clusters\": %" PRIu64 ",\n", clusters);
		printf("    \"cluster-size\": %u,\n", img->g.cluster_size);
		printf("    \"refcount-bits\": %u,\n",
		       1u << img->g.refcount_order);
		printf("    \"dirty-flag\": %s,\n",
		       img->h.incompatible_features & QCOW2_INCOMPAT_DIRTY ?
		       "true" : "false");
		if (img->backing[0]) {
			printf("    \"backing-filename\": ");
			json_str(stdout, img->backing);
			printf(",\n");
		}
		if (img->ext.has_backing_format)
			printf("    \"backing-filename-format\": \"%s\",\n",
			       img->ext.backing_format);
		if (cret) {
			printf("    \"chain-error\": ");
			json_str(stdout, chain_err);
			printf(",\n");
		}
		printf("    \"chain\": [\n");
		for (i = 0; c && i < c->n; i++) {
			printf("        { \"filename\": ");
			json_str(stdout, c->link[i].path);
			printf(", \"format\": \"%s\", \"virtual-size\": %"
			       PRIu64 " }%s\n", c->link[i].q ? "qcow2" :
			       c->link[i].vhd ? "vhd" : "raw",
			       c->link[i].size, i + 1 < c->n ? "," : "");
		}
		printf("    ]\n}\n");
	} else {
		printf("image: %s\nfile format: qcow2\n", path);
		printf("compat: %s\n", img->h.version == 2 ? "0.10" : "1.1");
		printf("virtual size: %s (%" PRIu64 " bytes)\n",
		       human_size(img->h.size, a, sizeof(a)), img->h.size);
		printf("disk size: %s\n", human_size(disk_size, b, sizeof(b)));
		info_in_use(path, false);
		printf("allocated: %s (%" PRIu64 " bytes) in %" PRIu64
		       " cluster%s\n", human_size(bytes, a, sizeof(a)), bytes,
		       clusters, clusters == 1 ? "" : "s");
		printf("cluster size: %u\nrefcount bits: %u\n",
		       img->g.cluster_size, 1u << img->g.refcount_order);
		if (img->h.incompatible_features & QCOW2_INCOMPAT_DIRTY)
			printf("dirty: yes (not closed cleanly)\n");
		if (img->backing[0])
			printf("backing file: %s (format %s)\n", img->backing,
			       img->ext.has_backing_format ?
			       img->ext.backing_format : "probed");
		if (cret) {
			printf("chain: broken: %s\n", chain_err);
		} else {
			printf("chain (leaf -> base): ");
			for (i = 0; i < c->n; i++)
				printf("%s%s", i ? " -> " : "",
				       c->link[i].path);
			printf("\n");
		}
	}
	if (cret)
		msg("%s", chain_err);
	qcow2_chain_close(c);
	qcow2_image_close(img, false);
	return ret || cret ? EXIT_FAIL : 0;
}

static int cmd_info(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	enum vhd_format fmt = VHD_FORMAT_AUTO;
	struct info in = { .path = NULL };
	char err[1024];
	struct stat st;
	bool json = false, is_vhd;
	int c, ret;

	while ((c = getopt_long(argc, argv, ":f:h", lo, NULL)) != -1) {
		switch (c) {
		case 'f':
			if ((ret = parse_format("info", optarg, &fmt)))
				return ret;
			break;
		case 'j':
			json = true;
			break;
		case 'h':
			return verb_help("info");
		default:
			return bad_option("info", c, argv);
		}
	}
	if (argc - optind != 1)
		return usage_error("info", "expected one FILE");
	in.path = argv[optind];
	if (stat(in.path, &st) < 0) {
		msg("%s: %s", in.path, strerror(errno));
		return EXIT_FAIL;
	}
	in.disk_size = (uint64_t)st.st_blocks * 512;
	if ((ret = probe_qcow2(in.path, &fmt)))
		return ret;
	if (fmt == FORMAT_QCOW2)
		return info_qcow2(in.path, in.disk_size, json);
	if (fmt == VHD_FORMAT_AUTO) {
		if ((ret = vhd_probe(in.path, &is_vhd))) {
			msg("%s: %s", in.path, strerror(-ret));
			return EXIT_FAIL;
		}
		fmt = is_vhd ? VHD_FORMAT_VHD : VHD_FORMAT_RAW;
	}
	if (fmt == VHD_FORMAT_VHD) {
		if (vhd_image_open(&in.img, in.path, VHD_IMAGE_RDONLY, err,
				   sizeof(err))) {
			msg("%s", err);
			return EXIT_FAIL;
		}
		if (in.img->warning[0])
			msg("warning: %s", in.img->warning);
		in.size = vhd_image_size(in.img);
		if ((ret = vhd_image_allocated(in.img, &in.alloc_secs,
					       &in.alloc_blocks))) {
			msg("%s: reading bitmaps: %s", in.path,
			    strerror(-ret));
			vhd_image_close(in.img);
			return EXIT_FAIL;
		}
	} else {
		in.size = (uint64_t)st.st_size;
	}
	ret = vhd_chain_open(&in.chain, in.path, fmt, VHD_IMAGE_RDONLY,
			     in.chain_err, sizeof(in.chain_err));
	if (json)
		info_print_json(&in);
	else
		info_print_text(&in);
	if (ret)
		msg("%s", in.chain_err);
	vhd_chain_close(in.chain);
	vhd_image_close(in.img);
	return ret ? EXIT_FAIL : 0;
}

/* ---- check ------------------------------------------------------------ */

struct check_out {
	const char	*path;
	unsigned	 lines;
};

static void check_line(void *arg, enum vhd_severity sev, const char *m)
{
	struct check_out *o = arg;
	size_t n = strlen(o->path);

	if (o->lines++ >= CHECK_MAX_LINES)
		return;
	/* Messages about the chain name the file; it is already there. */
	if (!strncmp(m, o->path, n) && !strncmp(m + n, ": ", 2))
		m += n + 2;
	printf("%s: %s%s\n", o->path, sev == VHD_SEV_WARNING ?
	       "warning: " : "", m);
}

static void check_line_qcow2(void *arg, enum qcow2_severity sev,
			     const char *m)
{
	struct check_out *o = arg;

	if (o->lines++ >= CHECK_MAX_LINES)
		return;
	printf("%s: %s%s\n", o->path, sev == QCOW2_SEV_WARNING ?
	       "warning: " : sev == QCOW2_SEV_LEAK ? "leak: " : "", m);
}

/*
 * What a read-write open (tapfs) does with the image: the check and the
 * open judge it with the same code (qcow2_image_check).
 */
static void check_qcow2_open(const char *path,
			     const struct qcow2_check_result *res)
{
	if (res->dirty && res->unrepairable) {
		printf("%s: a read-write open refuses this dirty image: %u "
		       "error%s a repair of refcounts does not fix "
		       "('qemu-img check -r all' may)\n", path,
		       res->unrepairable, res->unrepairable == 1 ? "" : "s");
		return;
	}
	if (res->dirty && (res->repair_lower || res->repair_raise)) {
		printf("%s: a read-write open repairs this dirty image: %u "
		       "leaked cluster%s freed, %u cluster%s in use counted\n",
		       path, res->repair_lower,
		       res->repair_lower == 1 ? "" : "s", res->repair_raise,
		       res->repair_raise == 1 ? "" : "s");
		return;
	}
	if (!res->dirty && res->leaks)
		printf("%s: the image is not dirty: a read-write open does "
		       "not scan it, and the leaks stay ('qemu-img check -r "
		       "leaks' reclaims them)\n", path);
}

/* Leaks (clusters counted but unused: a crash) do not fail the check. */
static int check_qcow2(struct check_out *out)
{
	struct qcow2_check_result res;
	char err[1024];

	if (qcow2_image_check(out->path, check_line_qcow2, out, &res, err,
			      sizeof(err))) {
		msg("%s", err);
		return EXIT_USAGE;
	}
	if (out->lines > CHECK_MAX_LINES)
		printf("%s: ... %u more lines not shown\n", out->path,
		       out->lines - CHECK_MAX_LINES);
	if (res.errors) {
		printf("%s: %u error%s, %u leaked cluster%s\n", out->path,
		       res.errors, res.errors == 1 ? "" : "s", res.leaks,
		       res.leaks == 1 ? "" : "s");
		check_qcow2_open(out->path, &res);
		return EXIT_FAIL;
	}
	printf("%s: no errors found", out->path);
	if (res.leaks)
		printf(" (%u leaked cluster%s: space, not data)", res.leaks,
		       res.leaks == 1 ? "" : "s");
	printf("\n");
	check_qcow2_open(out->path, &res);
	return 0;
}

static int cmd_check(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "force-share", no_argument, NULL, 'U' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct vhd_check_result res;
	struct check_out out;
	char err[1024];
	bool is_vhd, is_qcow2;
	int c, ret;

	while ((c = getopt_long(argc, argv, ":Uh", lo, NULL)) != -1) {
		if (c == 'U') {
			img_force_share = true;
			continue;
		}
		if (c == 'h')
			return verb_help("check");
		return bad_option("check", c, argv);
	}
	if (argc - optind != 1)
		return usage_error("check", "expected one FILE");
	out.path = argv[optind];
	out.lines = 0;
	/* An image being written cannot be checked: not "problems found". */
	if (img_lock(out.path, TD_LOCK_READ))
		return EXIT_USAGE;
	if ((ret = qcow2_probe(out.path, &is_qcow2))) {
		msg("%s: %s", out.path, strerror(-ret));
		return EXIT_USAGE;
	}
	if (is_qcow2)
		return check_qcow2(&out);
	if ((ret = vhd_probe(out.path, &is_vhd))) {
		msg("%s: %s", out.path, strerror(-ret));
		return EXIT_USAGE;
	}
	if (!is_vhd) {
		printf("%s: raw image (no VHD footer): nothing to check\n",
		       out.path);
		return 0;
	}
	ret = vhd_image_check(out.path, check_line, &out, &res, err,
			      sizeof(err));
	if (ret) {
		msg("%s", err);
		return EXIT_USAGE;
	}
	if (out.lines > CHECK_MAX_LINES)
		printf("%s: ... %u more lines not shown\n", out.path,
		       out.lines - CHECK_MAX_LINES);
	if (res.errors) {
		printf("%s: %u error%s, %u warning%s\n", out.path, res.errors,
		       res.errors == 1 ? "" : "s", res.warnings,
		       res.warnings == 1 ? "" : "s");
		return EXIT_FAIL;
	}
	printf("%s: no errors found%s\n", out.path,
	       res.warnings ? " (warnings above are harmless)" : "");
	return 0;
}

/* ---- coalesce --------------------------------------------------------- */

static int coalesce_copy(struct vhd_chain *c, struct progress *pg,
			 uint8_t *buf)
{
	struct vhd_image *child = c->link[0].vhd;
	uint64_t total = vhd_image_size(child) >> TD_SECTOR_SHIFT, sec = 0;
	int m, ret;

	while (sec < total) {
		uint32_t want = total - sec < COPY_SECTORS ?
				(uint32_t)(total - sec) : COPY_SECTORS, run;
		uint64_t off;

		m = vhd_image_map(child, sec, want, &run, &off);
		if (m < 0) {
			msg("%s: sector %" PRIu64 ": %s", child->path, sec,
			    strerror(-m));
			return EXIT_FAIL;
		}
		if (m == VHD_MAP_DATA) {
			ret = vhd_chain_read(c, sec, run, buf);
			if (!ret)
				ret = vhd_link_write(&c->link[1], sec, run,
						     buf);
			if (ret) {
				msg("copying sectors %" PRIu64 "+%" PRIu32
				    " of %s into %s: %s", sec, run, child->path,
				    c->link[1].path, strerror(-ret));
				return EXIT_FAIL;
			}
		}
		sec += run;
		progress_show(pg, sec, total);
	}
	return 0;
}

static int cmd_coalesce(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "progress", no_argument, NULL, 'p' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct vhd_chain *c = NULL;
	struct progress pg;
	bool want_progress = false;
	uint8_t *buf = NULL;
	char err[1024];
	int ch, ret;

	while ((ch = getopt_long(argc, argv, ":ph", lo, NULL)) != -1) {
		if (ch == 'p')
			want_progress = true;
		else if (ch == 'h')
			return verb_help("coalesce");
		else
			return bad_option("coalesce", ch, argv);
	}
	if (argc - optind != 1)
		return usage_error("coalesce", "expected one CHILD");
	if ((ret = img_lock(argv[optind], TD_LOCK_READ)))
		return ret;
	if (vhd_chain_open(&c, argv[optind], VHD_FORMAT_VHD,
			   VHD_IMAGE_RDONLY | VHD_CHAIN_PARENT_RDWR, err,
			   sizeof(err))) {
		msg("%s", err);
		return EXIT_FAIL;
	}
	if (c->warning[0])
		msg("warning: %s", c->warning);
	ret = EXIT_FAIL;
	if (c->n < 2) {
		msg("%s is not a differencing image: it has no parent to "
		    "coalesce into", argv[optind]);
		goto out;
	}
	/* The parent is written: nobody else may have it open. */
	if (img_lock(c->link[1].path, TD_LOCK_WRITE))
		goto out;
	if (c->link[0].size > c->link[1].size) {
		msg("cannot coalesce %s (%" PRIu64 " bytes) into its smaller "
		    "parent %s (%" PRIu64 " bytes)", c->link[0].path,
		    c->link[0].size, c->link[1].path, c->link[1].size);
		goto out;
	}
	buf = malloc((size_t)COPY_SECTORS << TD_SECTOR_SHIFT);
	if (!buf) {
		msg("no memory");
		goto out;
	}
	progress_init(&pg, want_progress);
	ret = coalesce_copy(c, &pg, buf);
	if (!ret) {
		int err2 = c->link[1].vhd ? vhd_image_flush(c->link[1].vhd) :
			   (fsync(c->link[1].fd) < 0 ? -errno : 0);

		if (err2) {
			msg("%s: fsync: %s", c->link[1].path, strerror(-err2));
			ret = EXIT_FAIL;
		}
	}
out:
	free(buf);
	vhd_chain_close(c);
	return ret;
}

/* ---- convert ---------------------------------------------------------- */

static bool all_zero(const uint8_t *p, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (p[i])
			return false;
	return true;
}

/* Input: a chain of raw and VHD images, or a qcow2 chain. */
struct convert_in {
	const char		*path;
	struct vhd_chain	*vhd;
	struct qcow2_chain	*q;
	uint64_t		 size;
};

static int convert_read(struct convert_in *in, uint64_t sec, uint32_t secs,
			uint8_t *buf)
{
	char err[1024];
	int ret;

	if (!in->q) {
		ret = vhd_chain_read(in->vhd, sec, secs, buf);
		if (ret)
			msg("reading %s at sector %" PRIu64 ": %s", in->path,
			    sec, strerror(-ret));
		return ret;
	}
	ret = qcow2_chain_read(in->q, sec, secs, buf, err, sizeof(err));
	if (ret)
		msg("reading %s at sector %" PRIu64 ": %s", in->path, sec,
		    err);
	return ret;
}

/* Output: a raw file (or block device), a new VHD or a new qcow2. */
struct convert_out {
	const char		*path;
	int			 fd;		/* raw */
	struct vhd_image	*vhd;
	struct qcow2_writer	*q;
	bool			 created;	/* removed on failure */
};

static int convert_open_out(struct convert_out *o, enum vhd_format ofmt,
			    const struct create_opts *co,
			    struct qcow2_create_params *qp, uint64_t size)
{
	struct vhd_create_params p = {
		.type = co->type, .size = size, .block_size = co->block_size,
	};
	char err[1024];
	struct stat st;

	o->fd = -1;
	if (ofmt == FORMAT_QCOW2) {
		qp->size = (size + TD_SECTOR_SIZE - 1) &
			   ~(uint64_t)(TD_SECTOR_SIZE - 1);
		if (qcow2_writer_open(&o->q, o->path, qp, err, sizeof(err))) {
			msg("%s", err);
			return EXIT_FAIL;
		}
		o->created = true;
		return 0;
	}
	if (ofmt == VHD_FORMAT_RAW) {
		if (stat(o->path, &st) == 0 && S_ISBLK(st.st_mode)) {
			o->fd = open(o->path, O_WRONLY | O_CLOEXEC);
		} else {
			o->fd = open(o->path, O_WRONLY | O_CREAT | O_EXCL |
				     O_CLOEXEC, 0644);
			o->created = o->fd >= 0;
			if (o->fd >= 0 && ftruncate(o->fd, (off_t)size) < 0) {
				msg("%s: %s", o->path, strerror(errno));
				return EXIT_FAIL;
			}
		}
		if (o->fd < 0) {
			msg("cannot create %s: %s", o->path, strerror(errno));
			return EXIT_FAIL;
		}
		return 0;
	}
	if (vhd_image_create(o->path, &p, err, sizeof(err))) {
		msg("%s", err);
		return EXIT_FAIL;
	}
	o->created = true;
	if (vhd_image_open(&o->vhd, o->path, VHD_IMAGE_NOSYNC, err,
			   sizeof(err))) {
		msg("%s", err);
		return EXIT_FAIL;
	}
	return 0;
}

static int convert_write(struct convert_out *o, uint64_t sec, uint32_t secs,
			 const uint8_t *buf)
{
	size_t len = (size_t)secs << TD_SECTOR_SHIFT, done = 0;

	if (o->vhd)
		return vhd_image_write(o->vhd, sec, secs, buf);
	while (done < len) {
		ssize_t n = pwrite(o->fd, buf + done, len - done,
				   (off_t)((sec << TD_SECTOR_SHIFT) + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		done += (size_t)n;
	}
	return 0;
}

/* Into a qcow2 writer: one cluster at a time (zeros are skipped). */
static int convert_copy_qcow2(struct convert_in *in, struct convert_out *o,
			      struct progress *pg)
{
	uint32_t cs = qcow2_writer_cluster_size(o->q);
	uint64_t total = in->size >> TD_SECTOR_SHIFT, sec, cl = 0;
	uint32_t per = cs >> TD_SECTOR_SHIFT;
	uint8_t *buf = malloc(cs);
	char err[1024];
	int ret = 0;

	if (!buf) {
		msg("out of memory");
		return EXIT_FAIL;
	}
	for (sec = 0; sec < total && !ret; sec += per, cl++) {
		uint32_t n = total - sec < per ? (uint32_t)(total - sec) : per;

		memset(buf, 0, cs);
		if (convert_read(in, sec, n, buf))
			ret = EXIT_FAIL;
		else if (qcow2_writer_put(o->q, cl, buf, err, sizeof(err))) {
			msg("writing %s: %s", o->path, err);
			ret = EXIT_FAIL;
		}
		progress_show(pg, sec + n, total);
	}
	free(buf);
	return ret;
}

static int convert_copy(struct convert_in *in, struct convert_out *o,
			struct progress *pg, uint8_t *buf)
{
	uint64_t total = in->size >> TD_SECTOR_SHIFT, sec;
	int ret;

	if (o->q)
		return convert_copy_qcow2(in, o, pg);
	for (sec = 0; sec < total; sec += COPY_SECTORS) {
		uint32_t n = total - sec < COPY_SECTORS ?
			     (uint32_t)(total - sec) : COPY_SECTORS;
		size_t len = (size_t)n << TD_SECTOR_SHIFT;

		if (convert_read(in, sec, n, buf))
			return EXIT_FAIL;
		if (!all_zero(buf, len)) {
			ret = convert_write(o, sec, n, buf);
			if (ret) {
				msg("writing %s at sector %" PRIu64 ": %s",
				    o->path, sec, strerror(-ret));
				return EXIT_FAIL;
			}
		}
		progress_show(pg, sec + n, total);
	}
	return 0;
}

static int cmd_convert(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "progress", no_argument, NULL, 'p' },
		{ "force-share", no_argument, NULL, 'U' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct create_opts co = { .type = VHD_TYPE_DYNAMIC };
	struct qcow2_create_params qp = { .size = 0 };
	enum vhd_format ifmt = VHD_FORMAT_AUTO, ofmt = VHD_FORMAT_AUTO;
	struct convert_out o = { .fd = -1 };
	struct convert_in in = { .path = NULL };
	char *opts = NULL;
	bool want_progress = false;
	struct progress pg;
	uint8_t *buf = NULL;
	char err[1024];
	int ch, ret;

	while ((ch = getopt_long(argc, argv, ":f:O:o:pUh", lo, NULL)) != -1) {
		switch (ch) {
		case 'U':
			img_force_share = true;
			break;
		case 'f':
			if ((ret = parse_format("convert", optarg, &ifmt)))
				return ret;
			break;
		case 'O':
			if ((ret = parse_format("convert", optarg, &ofmt)))
				return ret;
			break;
		case 'o':
			opts = optarg;	/* parsed once -O is known */
			break;
		case 'p':
			want_progress = true;
			break;
		case 'h':
			return verb_help("convert");
		default:
			return bad_option("convert", ch, argv);
		}
	}
	if (ofmt == VHD_FORMAT_AUTO)
		return usage_error("convert", "-O raw|vhd is required (or qcow2)");
	if (argc - optind != 2)
		return usage_error("convert", "expected SRC DST");
	if (ofmt == FORMAT_QCOW2)
		ret = parse_qcow2_options("convert", opts, &qp);
	else
		ret = opts ? parse_vhd_options("convert", opts, &co) : 0;
	if (ret)
		return ret;
	if (ofmt == VHD_FORMAT_RAW && (co.type_set || co.block_size))
		return usage_error("convert", "-o applies to -O vhd|qcow2 "
				   "only");
	in.path = argv[optind];
	if ((ret = img_lock(in.path, TD_LOCK_READ)))
		return ret;
	if ((ret = probe_qcow2(in.path, &ifmt)))
		return ret;
	if (ifmt == FORMAT_QCOW2) {
		if (qcow2_chain_open(&in.q, in.path, err, sizeof(err))) {
			msg("%s", err);
			return EXIT_FAIL;
		}
		in.size = in.q->link[0].size;
	} else {
		if (vhd_chain_open(&in.vhd, in.path, ifmt, VHD_IMAGE_RDONLY,
				   err, sizeof(err))) {
			msg("%s", err);
			return EXIT_FAIL;
		}
		if (in.vhd->warning[0])
			msg("warning: %s", in.vhd->warning);
		in.size = in.vhd->link[0].size;
	}
	o.path = argv[optind + 1];
	buf = malloc((size_t)COPY_SECTORS << TD_SECTOR_SHIFT);
	ret = buf ? convert_open_out(&o, ofmt, &co, &qp, in.size) :
		    EXIT_FAIL;
	/* New, or a device given as DST: nobody else may be using it. */
	if (!ret)
		ret = img_lock(o.path, TD_LOCK_WRITE);
	if (!ret) {
		progress_init(&pg, want_progress);
		ret = convert_copy(&in, &o, &pg, buf);
	}
	if (o.q) {
		int e = qcow2_writer_close(o.q, ret != 0, err, sizeof(err));

		if (e && !ret) {
			msg("%s", err);
			ret = EXIT_FAIL;
		}
	}
	if (o.vhd) {
		int e = vhd_image_close(o.vhd);

		if (e && !ret) {
			msg("%s: %s", o.path, strerror(-e));
			ret = EXIT_FAIL;
		}
	}
	if (o.fd >= 0) {
		if ((fsync(o.fd) < 0 || close(o.fd) < 0) && !ret) {
			msg("%s: %s", o.path, strerror(errno));
			ret = EXIT_FAIL;
		}
	}
	if (ret && o.created)
		unlink(o.path);
	free(buf);
	vhd_chain_close(in.vhd);
	qcow2_chain_close(in.q);
	return ret;
}

/* ---- the verb table -------------------------------------------------- */

static const struct verb verbs[] = {
	{
		"create", cmd_create, "create a new image",
"Usage: " PROG " create [-q] [-f raw|vhd|qcow2] [-o OPTIONS] FILE SIZE\n"
"       " PROG " create [-q] [-f vhd|qcow2] [-o OPTIONS] -b PARENT\n"
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
	},
	{
		"info", cmd_info, "show an image's format, size and chain",
"Usage: " PROG " info [--json] [-f raw|vhd|qcow2] FILE\n"
"\n"
"Show FILE's format (raw or vhd, probed unless -f says), VHD subformat\n"
"(fixed, dynamic, differencing), virtual size, disk size (blocks the file\n"
"uses), the data present in this image (\"allocated\", from the sector\n"
"bitmaps) and in how many blocks, the block size, UUID and creation time;\n"
"for a differencing image its parent's UUID (\"none\" for a raw parent),\n"
"name, timestamp and locators; and the chain from FILE (the leaf) to the\n"
"base image.  For qcow2: compat, cluster size, refcount bits, the\n"
"allocated clusters, the dirty flag, the backing file and its format,\n"
"and the chain (JSON keys: filename, format, compat, virtual-size,\n"
"actual-size, in-use, allocated-bytes, allocated-clusters, cluster-size,\n"
"refcount-bits, dirty-flag, backing-filename, backing-filename-format,\n"
"chain[]).\n"
"\n"
"\"in use\" says who has FILE open, from its image locks (docs/locking.md):\n"
"\"no\", or for example \"read-write by pid 4242 (tapfs)\" or \"read-only by\n"
"pid 77 (qemu-system-x86_64)\"; a holder on another host sharing the file\n"
"system is \"by another process\".  info reads an image in use anyway.\n"
"\n"
"  --json   the same as one JSON object (keys: filename, format,\n"
"           subformat, virtual-size, actual-size, in-use (false or\n"
"           the holder), allocated-bytes,\n"
"           allocated-blocks, block-size, uuid, created, parent-raw,\n"
"           parent-uuid, parent-name, parent-timestamp, parent-locators,\n"
"           chain[] of {filename, format, subformat, virtual-size}).\n"
"  -f FORMAT   read FILE as raw, vhd or qcow2 instead of probing.\n"
"\n"
"Exit status: 0 shown, 1 FILE or a parent cannot be opened (what could\n"
"be read is still shown, the chain as broken), 2 usage.\n"
	},
	{
		"check", cmd_check, "check an image's structure",
"Usage: " PROG " check [-U] FILE\n"
"\n"
"Check the structure of the VHD image FILE and print one line per\n"
"problem, naming it: footer cookie, checksum (expected and found),\n"
"version, disk type and sizes; the backup footer at offset 0 matches the\n"
"one at the end; the dynamic header's fields; every BAT entry inside the\n"
"file, clear of the metadata and of every other block; bitmap bits set\n"
"past the virtual size; parent locators; and for a differencing image,\n"
"that its parent is found and carries the UUID the child recorded.\n"
"\n"
"Lines starting with \"warning:\" are harmless or expected after a crash\n"
"(space left by an interrupted allocation, a parent modified since the\n"
"snapshot) and do not make the check fail.  A raw file has nothing to\n"
"check.\n"
"\n"
"A qcow2 FILE: the header and every L1, L2 and refcount table entry;\n"
"every reference (header, tables, data and compressed clusters,\n"
"internal snapshots) counted and compared with the stored refcounts;\n"
"the copied flags; a cluster used as two things at once (metadata and\n"
"data, an L2 table and data).  A cluster in use with a refcount lower\n"
"than its references is an error; one counted but unused is a \"leak:\"\n"
"line (space lost by a crash, harmless: not a failure).  A last line\n"
"says what a read-write open (tapfs) does with the image: a dirty one\n"
"(not closed cleanly) is repaired, leaks freed and refcounts raised,\n"
"unless it has damage that fixing refcounts does not mend, which makes\n"
"the open refuse it.\n"
"\n"
"FILE is locked for reading first (docs/locking.md): an image that a tapfs\n"
"mount, QEMU or another program has open read-write is refused, naming\n"
"the holder, since its metadata changes while it is read.\n"
"\n"
"  -U, --force-share   check an image that is in use anyway (an idle one:\n"
"                      a running writer makes the result meaningless).\n"
"\n"
"Exit status: 0 no errors, 1 errors found (one line each), 2 usage, or\n"
"FILE cannot be read at all (or is in use).\n"
	},
	{
		"snapshot", cmd_snapshot,
		"make a differencing child of an image",
"Usage: " PROG " snapshot [-F raw|vhd] [-o block_size=N] BASE NEWCHILD\n"
"\n"
"Offline snapshot: create NEWCHILD, a differencing VHD on top of BASE,\n"
"with BASE's virtual size.  From then on write to NEWCHILD only; BASE\n"
"must not change while NEWCHILD depends on it.  The same as\n"
"'" PROG " create -b BASE NEWCHILD'.  For a running VBD use the mount's\n"
".ctl file (\"snapshot NAME\") instead.\n"
"\n"
"  -F FORMAT   BASE's format (default: probed); a raw BASE is allowed.\n"
"\n"
"BASE is locked for reading while NEWCHILD is made: a BASE that a tapfs\n"
"mount or QEMU has open read-write is refused, naming the holder.\n"
"\n"
"Exit status: 0 created, 1 failed, 2 usage.\n"
	},
	{
		"coalesce", cmd_coalesce, "merge a child into its parent",
"Usage: " PROG " coalesce [-p] CHILD\n"
"\n"
"Write every sector present in the differencing image CHILD into its\n"
"parent (a VHD, or a raw image), so that the parent alone then holds what\n"
"CHILD showed.  CHILD itself is not modified and still reads the same; it\n"
"can be deleted once nothing else depends on it.  The parent must not be\n"
"in use (it is locked for writing, CHILD for reading: a holder is named\n"
"and nothing is written), and should be backed up first: an interrupted\n"
"coalesce leaves it\n"
"partly updated (CHILD still reads correctly; run coalesce again).\n"
"\n"
"  -p, --progress   show progress (always shown on a terminal).\n"
"\n"
"Exit status: 0 merged, 1 failed, 2 usage.\n"
	},
	{
		"convert", cmd_convert, "copy an image (through its chain)",
"Usage: " PROG " convert [-p] [-U] [-f raw|vhd|qcow2] -O raw|vhd|qcow2\n"
"                 [-o OPTIONS] SRC DST\n"
"\n"
"Copy what SRC shows (reading through its whole chain of parents) into a\n"
"new image DST, which must not exist (or is an existing block device for\n"
"-O raw).  Zero ranges are skipped, so DST is sparse.  If the copy fails,\n"
"a DST this command created is removed.\n"
"\n"
"  -O FORMAT   DST's format: raw, vhd or qcow2 (a single image, no\n"
"              parent).\n"
"  -o OPTIONS  for -O vhd: subformat=dynamic|fixed, block_size=SIZE;\n"
"              for -O qcow2: cluster_size=SIZE, compat=1.1|0.10,\n"
"              refcount_bits=N.\n"
"  -f FORMAT   read SRC as raw, vhd or qcow2 instead of probing (a qcow2\n"
"              SRC is read through its backing files: qcow2, raw, vhd).\n"
"  -p, --progress   show progress (always shown on a terminal).\n"
"  -U, --force-share   copy SRC even though it is in use read-write (a\n"
"              paused VBD); without -U such a SRC is refused, naming the\n"
"              holder.  DST is always locked for writing.\n"
"\n"
"Exit status: 0 converted, 1 failed, 2 usage.\n"
"\n"
"Example:\n"
"  " PROG " convert -O raw leaf.vhd disk.img\n"
	},
};

#define NVERBS (sizeof(verbs) / sizeof(verbs[0]))

static const struct verb *verb_find(const char *name)
{
	size_t i;

	for (i = 0; i < NVERBS; i++)
		if (!strcmp(verbs[i].name, name))
			return &verbs[i];
	return NULL;
}

static void usage(FILE *f)
{
	size_t i;

	fprintf(f,
"Usage: " PROG " VERB [OPTIONS] ARGS...\n"
"       " PROG " VERB --help\n"
"\n"
"Create, inspect, check, snapshot, coalesce and convert tapfs disk images\n"
"(raw files, VHD: fixed, dynamic and differencing, and qcow2).  VHD images\n"
"are the format QEMU calls \"vpc\"; QEMU reads each image on its own (it\n"
"does not follow differencing parents).\n"
"\n"
"Verbs:\n");
	for (i = 0; i < NVERBS; i++)
		fprintf(f, "  %-10s %s\n", verbs[i].name, verbs[i].summary);
	fprintf(f,
"\n"
"Exit status: 0 success, 1 failure (check: problems found), 2 usage.\n");
}

int main(int argc, char **argv)
{
	const struct verb *v;
	int ret;

	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "help")) {
		if (argc < 3) {
			usage(stdout);
			return 0;
		}
		v = verb_find(argv[2]);
		if (!v) {
			msg("unknown verb '%s'", argv[2]);
			return EXIT_USAGE;
		}
		fputs(v->usage, stdout);
		return 0;
	}
	v = verb_find(argv[1]);
	if (!v) {
		msg("unknown verb '%s'; try '" PROG " --help'", argv[1]);
		return EXIT_USAGE;
	}
	optind = 1;
	opterr = 0;
	ret = v->run(argc - 1, argv + 1);
	img_unlock_all();
	return ret;
}
