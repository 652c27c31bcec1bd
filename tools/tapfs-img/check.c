/* SPDX-License-Identifier: MIT */
/* check: an image's structure, problem by problem (offline). */
#include <errno.h>
#include <string.h>

#include "tapfs-img.h"
#include "formats.h"
#include "vmdk/vmdk-image.h"

/* One problem, one line: "FILE: [warning: |leak: ]message". */
static void check_line(void *arg, enum td_severity sev, const char *m)
{
	struct check_out *o = arg;
	size_t n = strlen(o->path);

	if (o->lines++ >= CHECK_MAX_LINES)
		return;
	/* Messages about the chain name the file; it is already there. */
	if (!strncmp(m, o->path, n) && !strncmp(m + n, ": ", 2))
		m += n + 2;
	printf("%s: %s%s\n", o->path, sev == TD_SEV_WARNING ? "warning: " :
	       sev == TD_SEV_LEAK ? "leak: " : "", m);
}

/*
 * The end of a check: how many lines were not shown, then, if there are
 * errors, "N errors, M <other>s" (true), else nothing (false).
 */
static bool check_summary(const struct check_out *out, unsigned errors,
			  unsigned other, const char *what)
{
	if (out->lines > CHECK_MAX_LINES)
		printf("%s: ... %u more lines not shown\n", out->path,
		       out->lines - CHECK_MAX_LINES);
	if (!errors)
		return false;
	printf("%s: %u error%s, %u %s%s\n", out->path, errors,
	       errors == 1 ? "" : "s", other, what, other == 1 ? "" : "s");
	return true;
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
	if (!res->dirty && res->base.leaks)
		printf("%s: the image is not dirty: a read-write open does "
		       "not scan it, and the leaks stay ('qemu-img check -r "
		       "leaks' reclaims them)\n", path);
}

/*
 * The verdict of a format whose problems are errors and warnings (no
 * leaks): the summary, and the exit status.
 */
static int check_verdict(const struct check_out *out,
			 const struct td_check_result *res)
{
	if (check_summary(out, res->errors, res->warnings, "warning"))
		return EXIT_FAIL;
	printf("%s: no errors found%s\n", out->path,
	       res->warnings ? " (warnings above are harmless)" : "");
	return 0;
}

/* Leaks (clusters counted but unused: a crash) do not fail the check. */
int check_qcow2(struct check_out *out)
{
	struct qcow2_check_result res;
	char err[1024];

	if (qcow2_image_check(out->path, check_line, out, &res, err,
			      sizeof(err))) {
		msg("%s", err);
		return EXIT_USAGE;
	}
	if (check_summary(out, res.base.errors, res.base.leaks,
			  "leaked cluster")) {
		check_qcow2_open(out->path, &res);
		return EXIT_FAIL;
	}
	printf("%s: no errors found", out->path);
	if (res.base.leaks)
		printf(" (%u leaked cluster%s: space, not data)",
		       res.base.leaks, res.base.leaks == 1 ? "" : "s");
	printf("\n");
	check_qcow2_open(out->path, &res);
	return 0;
}

/* qcow (v1): the header and every L1 and L2 entry; no refcounts. */
int check_qcow(struct check_out *out)
{
	struct td_check_result res;
	uint64_t allocated;
	char err[1024];

	if (qcow_image_check(out->path, check_line, out, &res, &allocated,
			     err, sizeof(err))) {
		msg("%s", err);
		return EXIT_USAGE;
	}
	return check_verdict(out, &res);
}

int check_raw(struct check_out *out)
{
	printf("%s: raw image (no VHD footer): nothing to check\n",
	       out->path);
	return 0;
}

int check_vhd(struct check_out *out)
{
	struct td_check_result res;
	char err[1024];

	if (vhd_image_check(out->path, check_line, out, &res, err,
			    sizeof(err))) {
		msg("%s", err);
		return EXIT_USAGE;
	}
	return check_verdict(out, &res);
}

static int cmd_check(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	const struct verb *v = &verb_check;
	const struct img_format *f = NULL;
	struct check_out out = { .path = NULL };
	int ch, ret;

	while ((ch = verb_getopt(v, argc, argv, "U", lo, &ret)) != -1)
		if (ch == 'U')
			img_force_share = true;
	if (ret >= 0)
		return ret;
	if (argc - optind != 1)
		return usage_error(v, "expected one FILE");
	out.path = argv[optind];
	/* An image being written cannot be checked: not "problems found". */
	if (img_lock(out.path, TD_LOCK_READ))
		return EXIT_USAGE;
	if (probe_format(out.path, &f))
		return EXIT_USAGE;
	return f->check(&out);
}

const struct verb verb_check = {
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
};

int check_vmdk(struct check_out *out)
{
	struct td_check_result res = { 0 };
	struct td_check c = { .fn = check_line, .arg = out, .res = &res };
	char err[1024];

	if (vmdk_image_check(out->path, &c, err, sizeof(err))) {
		msg("%s", err);
		return EXIT_USAGE;
	}
	return check_verdict(out, &res);
}
