/* SPDX-License-Identifier: MIT */
/*
 * The argument of the rbd driver, "POOL/IMAGE" or "POOL/NAMESPACE/IMAGE",
 * either followed by "@SNAP" for a snapshot of the image, then optionally
 * by QEMU's cluster options ":conf=FILE" and ":id=NAME" (in any order):
 * parsing only (text in, struct or reason out), unit-tested alone.
 */
#ifndef TD_RBD_TARGET_H
#define TD_RBD_TARGET_H

#include <limits.h>
#include <stddef.h>

/*
 * Longest pool, namespace and image names taken (RADOS object names
 * derive from them; Ceph allows more, nobody uses it).
 */
#define RBD_NAME_MAX	255

struct rbd_target {
	char	pool[RBD_NAME_MAX + 1];
	char	ns[RBD_NAME_MAX + 1];		/* "" : the default one */
	char	image[RBD_NAME_MAX + 1];
	char	snap[RBD_NAME_MAX + 1];		/* "" : the image itself */
	/* The cluster: "" for the mount's (ceph_conf, ceph_id). */
	char	conf[PATH_MAX];			/* absolute, as written */
	char	id[RBD_NAME_MAX + 1];
};

/*
 * Parse s into t.  0, or -EINVAL with a reason naming s and the problem
 * in err (an empty part, a fourth part, an '@' outside the image part or
 * twice, a name too long, a blank or control character; an option other
 * than conf= and id=, one given twice or empty, a relative conf, QEMU's
 * '\' escapes).
 */
int rbd_parse_target(const char *s, struct rbd_target *t, char *err,
		     size_t errlen);

#endif
