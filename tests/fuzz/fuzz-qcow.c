/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for qcow (version 1) images: the input is taken as a
 * whole image file.  Its start goes to the header decoder and check,
 * every 8 bytes to the L2 entry decoder (at several cluster sizes); then
 * the image is opened from a memfd by the offline code (header, backing
 * name, L1 table), checked, and read through the qcow driver on an
 * engine (compressed clusters inflated), as the daemon reads it.
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

#include "common/td-util.h"
#include "fuzz-engine.h"
#include "qcow/qcow-format.h"
#include "qcow/qcow-image.h"

/* Largest input written to a memfd and opened as an image. */
#define FUZZ_MAX_IMAGE		(4u << 20)
/* Sectors read through the driver at most. */
#define FUZZ_MAX_SECTORS	8192u

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_parsers(const uint8_t *data, size_t size)
{
	static const uint8_t bits[] = { 9, 12, 16 };
	struct qcow_header h;
	struct qcow_geometry g;
	struct qcow_mapping m;
	uint8_t hdr[QCOW_HEADER_SIZE] = { 0 };
	char err[512];
	size_t i, k;

	memcpy(hdr, data, size < sizeof(hdr) ? size : sizeof(hdr));
	qcow_format_probe(data, size);
	qcow_header_decode(hdr, &h);
	qcow_header_check(&h, size, &g, err, sizeof(err));
	for (k = 0; k < sizeof(bits) / sizeof(bits[0]); k++) {
		struct qcow_header t = {
			.magic = QCOW_MAGIC, .version = QCOW_VERSION,
			.cluster_bits = bits[k], .l2_bits = bits[k] - 3,
			.size = 1u << 20, .l1_table_offset = QCOW_HEADER_SIZE,
		};

		if (qcow_header_check(&t, 1u << 30, &g, err, sizeof(err)))
			continue;
		for (i = 0; i + 8 <= size && i < 4096; i += 8)
			qcow_l2_decode(&g, bits[k], td_get_be64(data + i), &m,
				       err, sizeof(err));
	}
}

static void fuzz_image(int fd)
{
	struct td_check_result res;
	struct qcow_image *img;
	uint64_t allocated;
	char err[1024], path[64];

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	if (qcow_image_open(&img, path, err, sizeof(err)) == 0)
		qcow_image_close(img);
	qcow_image_check(path, NULL, NULL, &res, &allocated, err, sizeof(err));
	fuzz_read_engine("qcow", path, FUZZ_MAX_SECTORS);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int fd;

	fuzz_parsers(data, size);
	if (size < QCOW_HEADER_SIZE || size > FUZZ_MAX_IMAGE)
		return 0;
	fd = fuzz_memfd("fuzz-qcow", data, size);
	if (fd < 0)
		return 0;
	fuzz_image(fd);
	close(fd);
	return 0;
}
