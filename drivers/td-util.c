/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <strings.h>

#include <tapfs/tapdisk.h>

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
