/* SPDX-License-Identifier: MIT */
/* Parsing of the rbd driver's argument: see rbd-target.h. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "rbd-target.h"

/* Copy one '/'-separated part of s; 0 or -EINVAL with the reason. */
static int rbd_part(const char *s, const char *part, size_t len,
		    const char *what, char *out, char *err, size_t errlen)
{
	size_t i;

	if (!len) {
		snprintf(err, errlen, "rbd target '%s': empty %s name (want "
			 "POOL/IMAGE or POOL/NAMESPACE/IMAGE, then "
			 "optionally @SNAP)", s, what);
		return -EINVAL;
	}
	if (len > RBD_NAME_MAX) {
		snprintf(err, errlen, "rbd target '%s': %s name longer than "
			 "%d bytes", s, what, RBD_NAME_MAX);
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

int rbd_parse_target(const char *s, struct rbd_target *t, char *err,
		     size_t errlen)
{
	const char *a = strchr(s, '/'), *b = a ? strchr(a + 1, '/') : NULL;
	const char *img, *at = strrchr(s, '@');
	int rc;

	memset(t, 0, sizeof(*t));
	if (strchr(s, ':')) {
		snprintf(err, errlen, "rbd target '%s': ':' options (QEMU's "
			 ":conf=FILE) are not taken: the cluster is the "
			 "mount's ceph_conf", s);
		return -EINVAL;
	}
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
	rc = rbd_part(s, s, (size_t)(a - s), "pool", t->pool, err, errlen);
	if (!rc && b)
		rc = rbd_part(s, a + 1, (size_t)(b - a - 1), "namespace",
			      t->ns, err, errlen);
	if (!rc)
		rc = rbd_part(s, img, at ? (size_t)(at - img) : strlen(img),
			      "image", t->image, err, errlen);
	if (!rc && at)
		rc = rbd_part(s, at + 1, strlen(at + 1), "snapshot", t->snap,
			      err, errlen);
	return rc;
}
