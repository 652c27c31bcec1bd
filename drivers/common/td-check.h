/* SPDX-License-Identifier: MIT */
/*
 * What the consistency checks of the image formats share (vhd-check.c,
 * qcow2-check.c; tapfs-img check prints them): every problem of an image
 * is one message with a severity, handed to the caller's callback and
 * counted by severity.
 */
#ifndef TAPFS_TD_CHECK_H
#define TAPFS_TD_CHECK_H

#include <stdbool.h>
#include <stddef.h>

enum td_severity {
	TD_SEV_ERROR,		/* the image is damaged or not usable */
	TD_SEV_WARNING,		/* harmless, or expected after a crash */
	TD_SEV_LEAK,		/* space counted but unused: harmless */
};

/* One problem, one line (no newline). */
typedef void td_check_fn(void *arg, enum td_severity sev, const char *msg);

/* Problems found, by severity. */
struct td_check_result {
	unsigned	errors;
	unsigned	warnings;
	unsigned	leaks;
};

/*
 * Where a check sends its problems.  A check that singles out a kind of
 * problem (qcow2: an error the repair at open does not fix) emits those
 * with keep set: they are counted in *kept as well, and the first one's
 * message is kept in first[firstlen] (cut with "..." if longer), for a
 * refusal that names it.
 */
struct td_check {
	td_check_fn		*fn;	/* every problem; may be NULL */
	void			*arg;
	struct td_check_result	*res;	/* counts; never NULL */
	unsigned		*kept;	/* NULL: nothing singled out */
	char			*first;
	size_t			 firstlen;
};

/*
 * Report one problem (printf format): count it by severity (with keep,
 * also as one of the kind c singles out: see struct td_check), then hand
 * it to c->fn.
 */
void td_check_emit(struct td_check *c, enum td_severity sev, bool keep,
		   const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

#endif /* TAPFS_TD_CHECK_H */
