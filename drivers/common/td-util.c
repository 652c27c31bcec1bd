/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

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

/* A page or more: mapped; less: from the heap, where it costs little. */
static bool td_sparse_mapped(size_t len)
{
	return len >= (size_t)sysconf(_SC_PAGESIZE);
}

void *td_zalloc_sparse(size_t len)
{
	void *p;

	if (!td_sparse_mapped(len))
		return td_zalloc_aligned(len);
	p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

void td_free_sparse(void *p, size_t len)
{
	if (!p)
		return;
	if (td_sparse_mapped(len))
		munmap(p, len);
	else
		free(p);
}

bool td_all_zero(const void *p, size_t len)
{
	const uint8_t *b = p;
	size_t i;

	for (i = 0; i < len; i++)
		if (b[i])
			return false;
	return true;
}

void td_copy_sparse(void *dst, const void *src, size_t len)
{
	const uint8_t *s = src;
	uint8_t *d = dst;
	size_t o, n;

	for (o = 0; o < len; o += n) {
		n = len - o < TD_BUF_ALIGN ? len - o : TD_BUF_ALIGN;
		if (!td_all_zero(s + o, n))
			memcpy(d + o, s + o, n);
	}
}
