/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the VHD parsers: the input is taken as a whole
 * image file.  Its first and last 512 bytes go to the footer parser, the
 * 1024 bytes after the first to the header parser, the rest to the BAT
 * checker, locator and UTF-16 decoders; then the image helpers open it
 * from a memfd (footer fallback, header, BAT validation), map and read
 * every sector range, count allocation and run the full check.
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

#include "fuzz-engine.h"
#include "vhd/vhd-format.h"
#include "vhd/vhd-image.h"

/* Largest input written to a memfd and opened as an image. */
#define FUZZ_MAX_IMAGE	(1u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_locators(const uint8_t *data, size_t size)
{
	static const uint32_t codes[] = {
		VHD_PLAT_W2RU, VHD_PLAT_W2KU, VHD_PLAT_MACX, VHD_PLAT_MAC,
	};
	char path[512], err[256];
	size_t i, len = size < 1024 ? size : 1024;

	for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
		vhd_locator_decode(codes[i], data, len, path, sizeof(path),
				   err, sizeof(err));
	vhd_utf16_to_utf8(data, len, true, path, sizeof(path));
}

static void fuzz_parsers(const uint8_t *data, size_t size)
{
	struct vhd_footer f;
	struct vhd_header h;
	struct vhd_layout l;
	char err[512];
	uint64_t entries;
	uint32_t *bat;
	uint64_t *scratch;

	vhd_footer_decode(data, &f, err, sizeof(err));
	vhd_footer_decode(data + size - VHD_FOOTER_SIZE, &f, err, sizeof(err));
	if (size < VHD_FOOTER_SIZE + VHD_HEADER_SIZE)
		return;
	if (vhd_header_decode(data + VHD_FOOTER_SIZE, &h, &f, size, err,
			      sizeof(err)))
		return;
	/* A valid header: check the BAT the input holds, if it fits. */
	entries = h.max_bat_entries;
	if (h.table_offset > size ||
	    entries > (size - h.table_offset) / VHD_BAT_ENTRY_SIZE)
		return;
	bat = malloc(entries * sizeof(*bat) + 1);
	scratch = malloc(entries * sizeof(*scratch) + 1);
	if (bat && scratch) {
		struct td_report r = td_report_err(err, sizeof(err));

		vhd_bat_decode(data + h.table_offset, (uint32_t)entries, bat);
		vhd_layout_init(&l, &f, &h, size);
		vhd_bat_check(&l, bat, scratch, &r);
	}
	free(bat);
	free(scratch);
}

static void fuzz_image(int fd)
{
	struct td_check_result res;
	struct vhd_image *img;
	uint8_t buf[8 * 512];
	uint64_t sec, secs, off;
	uint32_t blocks, run;
	char err[1024], path[64];
	int dfd, m;

	dfd = dup(fd);
	if (dfd < 0)
		return;
	if (vhd_image_open_fd(&img, dfd, "fuzz.vhd", VHD_IMAGE_RDONLY, err,
			      sizeof(err)) == 0) {
		vhd_image_allocated(img, &secs, &blocks);
		for (sec = 0; sec < (vhd_image_size(img) >> 9) && sec < 4096;
		     sec += run) {
			m = vhd_image_map(img, sec, 8, &run, &off);
			if (m < 0)
				break;
			if (m == VHD_MAP_DATA &&
			    pread(img->fd, buf, (size_t)run * 512,
				  (off_t)off) < 0)
				break;
		}
		vhd_image_close(img);
	}
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	vhd_image_check(path, NULL, NULL, &res, err, sizeof(err));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int fd;

	fuzz_locators(data, size);
	if (size < VHD_FOOTER_SIZE)
		return 0;
	fuzz_parsers(data, size);
	if (size > FUZZ_MAX_IMAGE)
		return 0;
	fd = fuzz_memfd("fuzz-vhd", data, size);
	if (fd < 0)
		return 0;
	fuzz_image(fd);
	close(fd);
	return 0;
}
