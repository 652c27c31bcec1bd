/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "td-zlib.h"

/* Window of QEMU's compressed clusters (raw deflate, 4 KiB window). */
#define TD_DEFLATE_WINDOW	(-12)
/* Inflate accepts any window: raw deflate up to 32 KiB. */
#define TD_INFLATE_WINDOW	(-15)

void *td_inflate_new(void)
{
	z_stream *zs = calloc(1, sizeof(*zs));

	if (!zs)
		return NULL;
	if (inflateInit2(zs, TD_INFLATE_WINDOW) != Z_OK) {
		free(zs);
		return NULL;
	}
	return zs;
}

void td_inflate_free(void *p)
{
	z_stream *zs = p;

	if (!zs)
		return;
	inflateEnd(zs);
	free(zs);
}

int td_inflate(void *p, const uint8_t *in, size_t in_len, uint8_t *out,
	       size_t out_len)
{
	z_stream *zs = p;
	int ret;

	if (inflateReset(zs) != Z_OK)
		return -EINVAL;
	zs->next_in = (Bytef *)(uintptr_t)in;
	zs->avail_in = (uInt)in_len;
	zs->next_out = out;
	zs->avail_out = (uInt)out_len;
	ret = inflate(zs, Z_FINISH);
	/* The data may stop short of its last sector: padding follows. */
	if ((ret == Z_STREAM_END || ret == Z_BUF_ERROR || ret == Z_OK) &&
	    zs->avail_out == 0)
		return 0;
	return -EINVAL;
}

int td_deflate(const uint8_t *in, size_t in_len, uint8_t *out,
	       size_t *out_len)
{
	z_stream zs;
	int ret;

	memset(&zs, 0, sizeof(zs));
	if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED,
			 TD_DEFLATE_WINDOW, 9, Z_DEFAULT_STRATEGY) != Z_OK)
		return -ENOMEM;
	zs.next_in = (Bytef *)(uintptr_t)in;
	zs.avail_in = (uInt)in_len;
	zs.next_out = out;
	zs.avail_out = (uInt)*out_len;
	ret = deflate(&zs, Z_FINISH);
	deflateEnd(&zs);
	if (ret != Z_STREAM_END)
		return -ENOSPC;
	*out_len = *out_len - zs.avail_out;
	return 0;
}
