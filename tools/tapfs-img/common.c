/* SPDX-License-Identifier: MIT */
/*
 * What every verb shares: messages, usage errors and option parsing,
 * sizes, JSON strings, image locks and progress.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tapfs-img.h"

void msg(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, PROG ": ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

int usage_error(const struct verb *v, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, PROG " %s: ", v->name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry '" PROG " %s --help'.\n", v->name);
	return EXIT_USAGE;
}

#define VERB_MAX_LONGOPTS	16

int verb_getopt(const struct verb *v, int argc, char **argv,
		const char *shortopts, const struct option *longopts,
		int *ret)
{
	struct option lo[VERB_MAX_LONGOPTS + 2];
	char so[64];
	size_t n = 0;
	int c;

	while (longopts && longopts[n].name && n < VERB_MAX_LONGOPTS) {
		lo[n] = longopts[n];
		n++;
	}
	lo[n++] = (struct option){ "help", no_argument, NULL, 'h' };
	lo[n] = (struct option){ NULL, 0, NULL, 0 };
	/* ':' first: a missing argument is ':', an unknown option '?'. */
	snprintf(so, sizeof(so), ":%sh", shortopts);
	*ret = -1;
	c = getopt_long(argc, argv, so, lo, NULL);
	switch (c) {
	case -1:
		return -1;
	case 'h':
		fputs(v->usage, stdout);
		*ret = 0;
		return -1;
	case ':':
		*ret = usage_error(v, "option '%s' needs an argument",
				   argv[optind - 1]);
		return -1;
	case '?':
		*ret = usage_error(v, "unknown option '%s'",
				   argv[optind - 1]);
		return -1;
	}
	return c;
}

int parse_size(const struct verb *v, const char *what, const char *s,
	       uint64_t *out)
{
	uint64_t b;

	if (td_parse_size(s, &b) || b > UINT64_MAX - TD_SECTOR_SIZE)
		return usage_error(v, "invalid %s '%s' (bytes, or a number "
				   "with K, M, G or T)", what, s);
	*out = (b + TD_SECTOR_SIZE - 1) & ~(uint64_t)(TD_SECTOR_SIZE - 1);
	return 0;
}

const char *human_size(uint64_t b, char *buf, size_t len)
{
	static const char *const unit[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double d = (double)b;
	unsigned u = 0;
	int n;

	while (d >= 1024 && u + 1 < sizeof(unit) / sizeof(unit[0])) {
		d /= 1024;
		u++;
	}
	if (u == 0) {
		snprintf(buf, len, "%" PRIu64 " B", b);
		return buf;
	}
	n = snprintf(buf, len, "%.2f", d);
	/* "1.50" -> "1.5", "100.00" -> "100" */
	while (n > 0 && (size_t)n < len && buf[n - 1] == '0')
		buf[--n] = '\0';
	if (n > 0 && (size_t)n < len && buf[n - 1] == '.')
		buf[--n] = '\0';
	snprintf(buf + n, len - (size_t)n, " %s", unit[u]);
	return buf;
}

void json_str(FILE *f, const char *s)
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

/* ---- image locks ------------------------------------------------------ */

/*
 * Taken before an image is read for a result or written, held until the
 * verb returns, so that an image a tapfs mount or QEMU is writing is
 * refused instead of read half-written or written under its writer.
 */
#define IMG_MAX_LOCKS	4

static struct td_lock *img_locks[IMG_MAX_LOCKS];
static unsigned img_nlocks;
bool img_force_share;

int img_lock(const char *path, enum td_lock_mode mode)
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

void img_unlock_all(void)
{
	while (img_nlocks)
		td_lock_release(img_locks[--img_nlocks]);
}

/* ---- progress -------------------------------------------------------- */

void progress_init(struct progress *p, bool wanted)
{
	p->tty = isatty(STDERR_FILENO);
	p->on = wanted || p->tty;
	p->last = -1;
}

void progress_show(struct progress *p, uint64_t done, uint64_t total)
{
	unsigned width = 40, fill, i;
	int pm;

	if (!p || !p->on)
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
