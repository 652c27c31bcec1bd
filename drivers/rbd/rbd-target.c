/* SPDX-License-Identifier: MIT */
/* Parsing of the rbd driver's argument: see rbd-target.h. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "rbd-target.h"

/* Copy one '/'-separated part of s; 0 or -EINVAL with the reason. */
static int rbd_part(const char *s, const char *part, size_t len,
		    const char *what, char *out, size_t max, char *err,
		    size_t errlen)
{
	size_t i;

	if (!len) {
		snprintf(err, errlen, "rbd target '%s': empty %s name (want "
			 "POOL/IMAGE or POOL/NAMESPACE/IMAGE, then "
			 "optionally @SNAP)", s, what);
		return -EINVAL;
	}
	if (len > max) {
		/* Not echoed whole: the reason would not fit. */
		snprintf(err, errlen, "rbd target '%.64s...': %s name longer "
			 "than %zu bytes", s, what, max);
		return -EINVAL;
	}
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)part[i];

		if (c <= ' ' || c == 0x7f) {
			snprintf(err, errlen, "rbd target '%s': %s name "
				 "contains character 0x%02x", s, what, c);
			return -EINVAL;
		}
	}
	memcpy(out, part, len);
	out[len] = '\0';
	return 0;
}

/* One "KEY=VALUE" option of s (opt, len bytes) into t. */
static int rbd_option(const char *s, const char *opt, size_t len,
		      struct rbd_target *t, char *err, size_t errlen)
{
	const char *eq = memchr(opt, '=', len);
	size_t klen = eq ? (size_t)(eq - opt) : len;
	size_t vlen = eq ? len - klen - 1 : 0;
	char *out;
	size_t max;

	if (klen == 4 && !memcmp(opt, "conf", 4)) {
		out = t->conf;
		max = sizeof(t->conf) - 1;
	} else if (klen == 2 && !memcmp(opt, "id", 2)) {
		out = t->id;
		max = RBD_NAME_MAX;
	} else {
		snprintf(err, errlen, "rbd target '%s': option '%.*s' is not "
			 "taken (only :conf=FILE and :id=NAME)", s, (int)len,
			 opt);
		return -EINVAL;
	}
	if (!eq || !vlen) {
		snprintf(err, errlen, "rbd target '%s': option %.*s has no "
			 "value", s, (int)klen, opt);
		return -EINVAL;
	}
	if (out[0]) {
		snprintf(err, errlen, "rbd target '%s': option %.*s given "
			 "twice", s, (int)klen, opt);
		return -EINVAL;
	}
	if (out == t->conf && eq[1] != '/') {
		snprintf(err, errlen, "rbd target '%s': conf=%.*s is not an "
			 "absolute path", s, (int)vlen, eq + 1);
		return -EINVAL;
	}
	return rbd_part(s, eq + 1, vlen, out == t->conf ? "conf file" :
			"client id", out, max, err, errlen);
}

/* The options after the image (opts: past the first ':'). */
static int rbd_options(const char *s, const char *opts,
		       struct rbd_target *t, char *err, size_t errlen)
{
	const char *end;
	int rc = 0;

	if (strchr(opts, '\\')) {
		snprintf(err, errlen, "rbd target '%s': '\\' escapes are not "
			 "taken (a name or path with ':' cannot be given)", s);
		return -EINVAL;
	}
	while (!rc) {
		end = strchr(opts, ':');
		rc = rbd_option(s, opts, end ? (size_t)(end - opts) :
				strlen(opts), t, err, errlen);
		if (!end)
			break;
		opts = end + 1;
	}
	return rc;
}

int rbd_parse_target(const char *s, struct rbd_target *t, char *err,
		     size_t errlen)
{
	const char *colon = strchr(s, ':');
	size_t len = colon ? (size_t)(colon - s) : strlen(s);
	char main_part[3 * (RBD_NAME_MAX + 1) + RBD_NAME_MAX + 1];
	const char *a, *b, *img, *at;
	int rc;

	memset(t, 0, sizeof(*t));
	if (len >= sizeof(main_part)) {
		snprintf(err, errlen, "rbd target '%.64s...' is too long", s);
		return -EINVAL;
	}
	memcpy(main_part, s, len);
	main_part[len] = '\0';
	a = strchr(main_part, '/');
	b = a ? strchr(a + 1, '/') : NULL;
	at = strrchr(main_part, '@');
	if (!a) {
		snprintf(err, errlen, "rbd target '%s' is not POOL/IMAGE or "
			 "POOL/NAMESPACE/IMAGE", s);
		return -EINVAL;
	}
	if (b && strchr(b + 1, '/')) {
		snprintf(err, errlen, "rbd target '%s' has more than three "
			 "parts (want POOL/IMAGE or POOL/NAMESPACE/IMAGE)", s);
		return -EINVAL;
	}
	img = b ? b + 1 : a + 1;
	/* Only the image part may name a snapshot, and one only. */
	if (at && (at < img || strchr(img, '@') != at)) {
		snprintf(err, errlen, "rbd target '%s': '@' only separates "
			 "IMAGE from SNAP, once", s);
		return -EINVAL;
	}
	rc = rbd_part(s, main_part, (size_t)(a - main_part), "pool", t->pool,
		      RBD_NAME_MAX, err, errlen);
	if (!rc && b)
		rc = rbd_part(s, a + 1, (size_t)(b - a - 1), "namespace",
			      t->ns, RBD_NAME_MAX, err, errlen);
	if (!rc)
		rc = rbd_part(s, img, at ? (size_t)(at - img) : strlen(img),
			      "image", t->image, RBD_NAME_MAX, err, errlen);
	if (!rc && at)
		rc = rbd_part(s, at + 1, strlen(at + 1), "snapshot", t->snap,
			      RBD_NAME_MAX, err, errlen);
	if (!rc && colon)
		rc = rbd_options(s, colon + 1, t, err, errlen);
	return rc;
}
