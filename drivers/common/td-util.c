/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <tapfs/tapdisk.h>

#include "td-util.h"

int td_parse_size(const char *s, uint64_t *out)
{
	static const char units[] = "KMGT";
	uint64_t v = 0, mult = 1;
	const char *p = s;
	unsigned i;

	if (!isdigit((unsigned char)*p))
		return -EINVAL;
	for (; isdigit((unsigned char)*p); p++) {
		unsigned d = (unsigned)(*p - '0');

		if (v > (UINT64_MAX - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	if (*p) {
		for (i = 0; units[i]; i++) {
			mult <<= 10;
			if (toupper((unsigned char)*p) == units[i])
				break;
		}
		if (!units[i])
			return -EINVAL;
		p++;
		if (!strcasecmp(p, "iB") || !strcasecmp(p, "B"))
			p += *p == 'i' || *p == 'I' ? 2 : 1;
		if (*p)
			return -EINVAL;
		if (v > UINT64_MAX / mult)
			return -ERANGE;
	}
	*out = v * mult;
	return 0;
}

int td_report(struct td_report *r, int err, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	if (!r)
		return err;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (r->count == 0 && r->err && r->errlen)
		snprintf(r->err, r->errlen, "%s", msg);
	r->count++;
	if (r->fn)
		r->fn(r->arg, msg);
	return err;
}

void *td_zalloc_aligned(size_t len)
{
	void *p;

	if (posix_memalign(&p, TD_BUF_ALIGN, len ? len : 1))
		return NULL;
	memset(p, 0, len);
	return p;
}
