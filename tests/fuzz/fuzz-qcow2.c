/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the qcow2 parsers: the input is taken as a whole
 * image file.  Its start goes to the header and extension parsers, every
 * 8 bytes to the L1, L2 and refcount table entry decoders (and, with
 * extended L2, the subcluster decoder), a block of it to the refcount
 * getters of every width and to inflate; then the image helpers open it
 * from a memfd read-only (header, L1 table), read every sector range
 * through the qcow2 driver on an engine (compressed clusters inflated), count
 * allocation, run the full check, and - for small virtual sizes - open
 * it read-write (refcount blocks, the dirty-bit scan, refcount table
 * growth, the dirty bit).
 *
 * make fuzz builds it with libFuzzer; make fuzz-replay builds it with
 * tests/fuzz/fuzz-main.c instead, which runs it once over each file named
 * on the command line (a crash, a corpus).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <tapfs/engine.h>

#include "common/td-zlib.h"
#include "fuzz-engine.h"
#include "qcow2/qcow2-format.h"
#include "qcow2/qcow2-image.h"

/* Largest input written to a memfd and opened as an image. */
#define FUZZ_MAX_IMAGE		(4u << 20)
/* Largest virtual size opened read-write (growth writes the file). */
#define FUZZ_MAX_RW_SIZE	(64u << 20)
/* Sectors read through the chain at most. */
#define FUZZ_MAX_SECTORS	8192u

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_entries(const uint8_t *data, size_t size)
{
	static const uint32_t bits[] = { 9, 12, 16, 21 };
	struct qcow2_header h = { .version = 3, .refcount_order = 4 };
	struct qcow2_geometry g;
	struct qcow2_mapping m;
	uint64_t first, last, off;
	size_t i, k;

	for (k = 0; k < sizeof(bits) / sizeof(bits[0]); k++) {
		h.cluster_bits = bits[k];
		qcow2_geometry_init(&g, &h);
		for (i = 0; i + 8 <= size && i < 4096; i += 8) {
			uint64_t e = td_get_be64(data + i);

			if (!qcow2_l2_decode(&g, 2 + (i & 8) / 8, e, &m, NULL) &&
			    m.type == QCOW2_CLUSTER_COMPRESSED)
				qcow2_compressed_clusters(&g, &m, &first,
							  &last);
			qcow2_l1_decode(&g, e, &off, NULL);
			qcow2_reftable_decode(&g, e, &off, NULL);
			qcow2_subcluster_state(e, (unsigned)(i / 8) %
					       QCOW2_SUBCLUSTERS);
		}
	}
}

static void fuzz_refcounts_inflate(const uint8_t *data, size_t size)
{
	uint8_t block[512], out[4096];
	uint32_t order;
	uint64_t i;
	void *zs;

	memset(block, 0, sizeof(block));
	memcpy(block, data, size < sizeof(block) ? size : sizeof(block));
	for (order = 0; order <= 6; order++) {
		for (i = 0; i < (512u * 8 >> order); i += 17) {
			uint64_t v = qcow2_refcount_get(block, i, order);

			qcow2_refcount_set(block, i, order, v + 1);
		}
	}
	zs = td_inflate_new();
	if (zs) {
		td_inflate(zs, data, size < 65536 ? size : 65536, out,
			      sizeof(out));
		td_inflate_free(zs);
	}
}

static void fuzz_parsers(const uint8_t *data, size_t size)
{
	struct qcow2_extensions ext;
	struct qcow2_header h;
	char err[512], name[QCOW2_MAX_BACKING_NAME + 1];
	struct td_report r = td_report_err(err, sizeof(err));

	if (qcow2_header_parse(data, size, size, &h, &ext, &r))
		return;
	qcow2_backing_name(data, size, &h, name, sizeof(name), NULL);
	qcow2_header_check_writable(&h, &ext, NULL);
}

static void fuzz_image(int fd)
{
	struct qcow2_check_result res;
	struct qcow2_image *img;
	uint64_t bytes, clusters;
	char err[1024], path[64];
	int dfd;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	dfd = dup(fd);
	if (dfd < 0)
		return;
	if (qcow2_image_open_fd(&img, dfd, path, 0, err, sizeof(err)))
		return;
	qcow2_image_allocated(img, &bytes, &clusters, err, sizeof(err));
	qcow2_image_close(img, false);
	fuzz_read_engine("qcow2", path, FUZZ_MAX_SECTORS);
	qcow2_image_check(path, NULL, NULL, &res, err, sizeof(err));
}

static void fuzz_image_rw(int fd)
{
	struct qcow2_image *img;
	char err[1024], path[64];
	int dfd = dup(fd);

	if (dfd < 0)
		return;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	if (!qcow2_image_open_fd(&img, dfd, path, QCOW2_IMAGE_RDWR, err,
				 sizeof(err)))
		qcow2_image_close(img, true);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct qcow2_header h;
	int fd;

	fuzz_entries(data, size);
	fuzz_refcounts_inflate(data, size);
	fuzz_parsers(data, size);
	if (size < QCOW2_V2_HEADER_SIZE || size > FUZZ_MAX_IMAGE)
		return 0;
	fd = fuzz_memfd("fuzz-qcow2", data, size);
	if (fd < 0)
		return 0;
	fuzz_image(fd);
	if (!qcow2_header_parse(data, size, size, &h, NULL, NULL) &&
	    h.size <= FUZZ_MAX_RW_SIZE)
		fuzz_image_rw(fd);
	close(fd);
	return 0;
}
