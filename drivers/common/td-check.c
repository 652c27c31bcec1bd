/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stdio.h>

#include <tapfs/log.h>

#include "td-check.h"

/* Long enough for a message naming a path and a parent's open error. */
#define TD_CHECK_MSG_MAX	768

void td_check_emit(struct td_check *c, enum td_severity sev, bool keep,
		   const char *fmt, ...)
{
	char msg[TD_CHECK_MSG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	switch (sev) {
	case TD_SEV_ERROR:
		c->res->errors++;
		break;
	case TD_SEV_WARNING:
		c->res->warnings++;
		break;
	case TD_SEV_LEAK:
		c->res->leaks++;
		break;
	}
	if (keep && c->kept && !(*c->kept)++ && c->first)
		td_msgf(c->first, c->firstlen, "%s", msg);
	if (c->fn)
		c->fn(c->arg, sev, msg);
}
