/* SPDX-License-Identifier: MIT */
/*
 * Compressed clusters as QEMU writes them (qcow2, qcow): raw deflate, no
 * zlib header, a 4 KiB window; and VMDK's compressed grains: zlib streams
 * (RFC 1950, header and checksum).  Pure, no I/O; the only allocation is
 * the stream td_inflate_new makes, once per open image, so that inflating
 * on the data path allocates nothing.
 */
#ifndef TAPFS_TD_ZLIB_H
#define TAPFS_TD_ZLIB_H

#include <stddef.h>
#include <stdint.h>

/* An inflate stream (opaque) of raw deflate, or NULL when out of memory. */
void *td_inflate_new(void);
/* The same for zlib streams (VMDK grains). */
void *td_inflate_new_zlib(void);
void td_inflate_free(void *zs);
/*
 * Inflate raw deflate data into exactly out_len bytes (the data may stop
 * short of in_len: padding follows it).  0, or -EINVAL if the data does
 * not give out_len bytes.
 */
int td_inflate(void *zs, const uint8_t *in, size_t in_len, uint8_t *out,
	       size_t out_len);
/*
 * Inflate one whole stream of in_len bytes into at most out_len bytes,
 * zero-filling what it leaves of out (a VMDK grain may inflate short).
 * 0, or -EINVAL if the stream is damaged or does not end within out_len.
 */
int td_inflate_stream(void *zs, const uint8_t *in, size_t in_len,
		      uint8_t *out, size_t out_len);

/* Raw deflate with QEMU's window (tests, tools): 0 and *out_len, or
 * -ENOSPC when it does not fit in *out_len bytes. */
int td_deflate(const uint8_t *in, size_t in_len, uint8_t *out,
	       size_t *out_len);

#endif /* TAPFS_TD_ZLIB_H */
