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

/* Any window: raw deflate (negative) or a zlib stream (positive). */
#define TD_INFLATE_ZLIB		15

static void *inflate_new(int window)
{
	z_stream *zs = calloc(1, sizeof(*zs));

	if (!zs)
		return NULL;
	if (inflateInit2(zs, window) != Z_OK) {
		free(zs);
		return NULL;
	}
	return zs;
}

void *td_inflate_new(void)
{
	return inflate_new(TD_INFLATE_WINDOW);
}

void *td_inflate_new_zlib(void)
{
	return inflate_new(TD_INFLATE_ZLIB);
}

void td_inflate_free(void *p)
{
	z_stream *zs = p;

	if (!zs)
		return;
	inflateEnd(zs);
	free(zs);
}

/* One inflate call over in, into out: zlib's return, or Z_STREAM_ERROR. */
static int inflate_once(z_stream *zs, const uint8_t *in, size_t in_len,
			uint8_t *out, size_t out_len)
{
	if (inflateReset(zs) != Z_OK)
		return Z_STREAM_ERROR;
	zs->next_in = (Bytef *)(uintptr_t)in;
	zs->avail_in = (uInt)in_len;
	zs->next_out = out;
	zs->avail_out = (uInt)out_len;
	return inflate(zs, Z_FINISH);
}

int td_inflate(void *p, const uint8_t *in, size_t in_len, uint8_t *out,
	       size_t out_len)
{
	z_stream *zs = p;
	int ret = inflate_once(zs, in, in_len, out, out_len);

	/* The data may stop short of its last sector: padding follows. */
	if ((ret == Z_STREAM_END || ret == Z_BUF_ERROR || ret == Z_OK) &&
	    zs->avail_out == 0)
		return 0;
	return -EINVAL;
}

int td_inflate_stream(void *p, const uint8_t *in, size_t in_len,
		      uint8_t *out, size_t out_len)
{
	z_stream *zs = p;

	if (inflate_once(zs, in, in_len, out, out_len) != Z_STREAM_END)
		return -EINVAL;
	memset(out + (out_len - zs->avail_out), 0, zs->avail_out);
	return 0;
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
