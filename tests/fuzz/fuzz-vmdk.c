/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for VMDK images: the input is taken as a whole file.
 * Its start goes to the sparse header decoder, all of it to the text
 * descriptor parser and, at every sector, to the grain marker decoder;
 * then it is opened from a memfd by the offline code (a sparse extent
 * with its embedded descriptor, or a descriptor whose extents do not
 * exist beside a memfd), checked, and read through the vmdk driver on an
 * engine (compressed grains inflated), as the daemon reads it.
 *
 * make fuzz builds it with libFuzzer; make fuzz-replay builds it with
 * tests/fuzz/fuzz-main.c, which runs it once over each file named on the
 * command line (a crash, a corpus).
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/td-check.h"
#include "fuzz-engine.h"
#include "vmdk/vmdk-format.h"
#include "vmdk/vmdk-image.h"

/* Largest input written to a memfd and opened as an image. */
#define FUZZ_MAX_IMAGE		(4u << 20)
/* Sectors read through the driver at most. */
#define FUZZ_MAX_SECTORS	8192u

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_parsers(const uint8_t *data, size_t size)
{
	uint8_t hdr[VMDK_HEADER_SIZE] = { 0 };
	struct vmdk_header h;
	struct vmdk_desc d;
	char err[512];
	uint64_t lba;
	uint32_t csize;
	size_t off;

	memcpy(hdr, data, size < sizeof(hdr) ? size : sizeof(hdr));
	vmdk_header_decode(hdr, size / VMDK_SECTOR, &h, err, sizeof(err));
	memset(&d, 0, sizeof(d));
	vmdk_desc_parse((const char *)data, size, &d, err, sizeof(err));
	vmdk_desc_free(&d);
	for (off = 0; off < size && off < (64u << 10); off += VMDK_SECTOR)
		vmdk_marker_decode(data + off, size - off, &lba, &csize, err,
				   sizeof(err));
}

static void fuzz_image(int fd)
{
	struct td_check_result res = { 0 };
	struct td_check c = { .res = &res };
	struct vmdk_image *img;
	char err[1024], path[64];

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	if (vmdk_image_open(&img, path, 0, NULL, NULL, err, sizeof(err)) == 0)
		vmdk_image_close(img);
	vmdk_image_check(path, &c, err, sizeof(err));
	fuzz_read_engine("vmdk", path, FUZZ_MAX_SECTORS);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int fd;

	fuzz_parsers(data, size);
	if (size > FUZZ_MAX_IMAGE)
		return 0;
	fd = fuzz_memfd("fuzz-vmdk", data, size);
	if (fd < 0)
		return 0;
	fuzz_image(fd);
	close(fd);
	return 0;
}
