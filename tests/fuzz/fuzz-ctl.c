/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: the .ctl command parser (fs/ctl.c), which takes
 * whatever a client writes to a group's .ctl file.  make fuzz builds it
 * with libFuzzer, make fuzz-replay with tests/fuzz/fuzz-main.c.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ctl_command cmd;
	char err[256];
	int rc;

	rc = ctl_parse((const char *)data, size, &cmd, err, sizeof(err));
	if (rc && rc != -EINVAL)
		abort();		/* the only error is EINVAL */
	if (rc && !err[0])
		abort();		/* and it always says why */
	if (!rc && (memchr(cmd.name, '/', sizeof(cmd.name)) ||
		    (cmd.name[0] == '.')))
		abort();		/* a bad name never gets through */
	return 0;
}
