/* SPDX-License-Identifier: MIT */
/*
 * Opening a VHD image (footer or its backup, dynamic header, BAT),
 * giving back at open the space an interrupted block allocation left at
 * the end of the file, and reading what the image holds: block bitmaps
 * and the map of its sectors (see vhd-image.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/td-fileio.h"
#include "vhd-image.h"

int vhd_probe(const char *path, bool *is_vhd)
{
	uint8_t buf[VHD_COOKIE_SIZE];
	struct stat st;
	int fd, ret = 0;

	*is_vhd = false;
	fd = td_open_file(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		ret = -errno;
		goto out;
	}
	if (st.st_size >= (off_t)VHD_FOOTER_SIZE) {
		ret = td_pread_full(fd, buf, sizeof(buf),
				 (uint64_t)st.st_size - VHD_FOOTER_SIZE);
		if (!ret && !memcmp(buf, VHD_FOOTER_COOKIE, VHD_COOKIE_SIZE))
			*is_vhd = true;
		if (!ret && !*is_vhd) {
			ret = td_pread_full(fd, buf, sizeof(buf), 0);
			if (!ret && !memcmp(buf, VHD_FOOTER_COOKIE,
					    VHD_COOKIE_SIZE))
				*is_vhd = true;
		}
	}
out:
	close(fd);
	return ret;
}

/* ---- open ------------------------------------------------------------- */

static int image_read_footer(struct vhd_image *img, char *err,
			     size_t errlen)
{
	uint8_t tail[VHD_FOOTER_SIZE], head[VHD_FOOTER_SIZE];
	char terr[256], herr[256];
	struct vhd_footer tf, hf;
	int tret, hret, ret;

	if (img->file_size < VHD_FOOTER_SIZE)
		return td_errf(err, errlen, -EINVAL,
			    "%s: file is %" PRIu64 " bytes, too small for a "
			    "VHD footer (512)", img->path, img->file_size);
	ret = td_pread_full(img->fd, tail, sizeof(tail),
			 img->file_size - VHD_FOOTER_SIZE);
	if (!ret)
		ret = td_pread_full(img->fd, head, sizeof(head), 0);
	if (ret)
		return td_errf(err, errlen, ret, "%s: reading the footer: %s",
			    img->path, strerror(-ret));

	tret = vhd_footer_decode(tail, &tf, terr, sizeof(terr));
	hret = vhd_footer_decode(head, &hf, herr, sizeof(herr));
	if (!tret) {
		img->footer = tf;
		memcpy(img->footer_buf, tail, sizeof(tail));
		img->footer_off = img->file_size - VHD_FOOTER_SIZE;
		if (tf.type == VHD_TYPE_FIXED)
			return 0;
		if (hret)
			snprintf(img->warning, sizeof(img->warning),
				 "%s: backup footer at offset 0 is invalid: %s",
				 img->path, herr);
		else if (memcmp(head, tail, sizeof(tail)))
			snprintf(img->warning, sizeof(img->warning),
				 "%s: backup footer at offset 0 differs from "
				 "the footer at the end of the file",
				 img->path);
		return 0;
	}
	if (!hret && hf.type != VHD_TYPE_FIXED) {
		img->footer = hf;
		memcpy(img->footer_buf, head, sizeof(head));
		img->footer_from_backup = true;
		snprintf(img->warning, sizeof(img->warning),
			 "%s: footer at the end of the file is invalid (%s); "
			 "using the backup copy at offset 0", img->path, terr);
		return 0;
	}
	if (memcmp(tail, VHD_FOOTER_COOKIE, VHD_COOKIE_SIZE) &&
	    memcmp(head, VHD_FOOTER_COOKIE, VHD_COOKIE_SIZE))
		return td_errf(err, errlen, -EINVAL,
			    "%s: not a VHD image: no \"%s\" footer at the end "
			    "of the file or at offset 0", img->path,
			    VHD_FOOTER_COOKIE);
	if (!memcmp(head, VHD_FOOTER_COOKIE, VHD_COOKIE_SIZE) && hret)
		return td_errf(err, errlen, tret,
			    "%s: footer at the end of the file: %s; backup "
			    "footer at offset 0: %s", img->path, terr, herr);
	return td_errf(err, errlen, tret, "%s: footer at the end of the file: %s",
		    img->path, terr);
}

static int image_open_fixed(struct vhd_image *img, char *err, size_t errlen)
{
	if (img->footer_off < vhd_image_size(img))
		return td_errf(err, errlen, -EINVAL,
			    "%s: fixed disk is truncated: %" PRIu64 " bytes of "
			    "data before the footer, virtual size %" PRIu64,
			    img->path, img->footer_off, vhd_image_size(img));
	return 0;
}

static int image_read_bat(struct vhd_image *img, uint64_t limit, char *err,
			  size_t errlen)
{
	struct vhd_layout layout;
	uint64_t need, *scratch;
	uint8_t *raw;
	int ret;

	/* Every entry a block may use, past the virtual size too: the
	 * allocator must know them all (header validation only promises
	 * the entries the virtual size needs). */
	vhd_layout_init(&layout, &img->footer, &img->header, limit);
	need = vhd_blocks_for_size(layout.size, img->header.block_size);
	if (need > img->header.max_bat_entries)
		need = img->header.max_bat_entries;
	if (need * VHD_BAT_ENTRY_SIZE > VHD_MAX_BAT_BYTES)
		return td_errf(err, errlen, -EFBIG,
			    "%s: BAT of %" PRIu64 " entries is larger than the "
			    "%u bytes supported", img->path, need,
			    VHD_MAX_BAT_BYTES);
	img->bat_entries = (uint32_t)need;
	img->bat = malloc((size_t)need * sizeof(*img->bat) + 1);
	raw = malloc((size_t)need * VHD_BAT_ENTRY_SIZE + 1);
	scratch = malloc((size_t)need * sizeof(*scratch) + 1);
	if (!img->bat || !raw || !scratch) {
		ret = td_errf(err, errlen, -ENOMEM, "%s: no memory for the BAT",
			   img->path);
		goto out;
	}
	ret = td_pread_full(img->fd, raw, (size_t)need * VHD_BAT_ENTRY_SIZE,
			 img->header.table_offset);
	if (ret) {
		td_errf(err, errlen, ret, "%s: reading the BAT at 0x%" PRIx64
		     ": %s", img->path, img->header.table_offset,
		     strerror(-ret));
		goto out;
	}
	vhd_bat_decode(raw, img->bat_entries, img->bat);

	layout.entries = img->bat_entries;
	{
		char why[384];
		struct td_report r = td_report_err(why, sizeof(why));

		ret = vhd_bat_check(&layout, img->bat, scratch, &r);
		if (ret)
			td_errf(err, errlen, ret, "%s: %s", img->path, why);
	}
out:
	free(raw);
	free(scratch);
	return ret;
}

/* Reclaim's ordering point: what was written is on the disk. */
static int image_barrier(struct vhd_image *img)
{
	return fdatasync(img->fd) < 0 ? -errno : 0;
}

/* Append one sentence to img->warning. */
static void image_warn(struct vhd_image *img, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void image_warn(struct vhd_image *img, const char *fmt, ...)
{
	size_t n = strlen(img->warning);
	va_list ap;

	if (n && n + 2 < sizeof(img->warning)) {
		memcpy(img->warning + n, "; ", 2);
		n += 2;
	}
	va_start(ap, fmt);
	vsnprintf(img->warning + n, sizeof(img->warning) - n, fmt, ap);
	va_end(ap);
}

/*
 * Give back [next_block, footer_off): referenced by nothing, left by an
 * interrupted allocation (see "Reclaim" in vhd-image.h for the order and
 * why a crash anywhere leaves a valid image).  0, with what was done in
 * ->notice, or a warning if nothing was; -errno only once the file has
 * been truncated and cannot be made durable.
 */
static int image_reclaim(struct vhd_image *img, char *err, size_t errlen)
{
	uint64_t end = img->next_block, old = img->file_size;
	int ret;

	ret = td_pwrite_full(img->fd, img->footer_buf, VHD_FOOTER_SIZE, end);
	if (!ret)
		ret = image_barrier(img);
	if (!ret && ftruncate(img->fd, (off_t)(end + VHD_FOOTER_SIZE)) < 0)
		ret = -errno;
	if (ret) {
		image_warn(img, "%s: %" PRIu64 " bytes at 0x%" PRIx64 "-0x%"
			   PRIx64 " are referenced by nothing (an interrupted "
			   "block allocation) and could not be reclaimed: %s",
			   img->path, img->footer_off - end, end,
			   img->footer_off, strerror(-ret));
		return 0;
	}
	img->footer_off = end;
	img->file_size = end + VHD_FOOTER_SIZE;
	ret = image_barrier(img);
	if (ret)
		return td_errf(err, errlen, ret, "%s: syncing the file after "
			       "truncating it to %" PRIu64 " bytes: %s",
			       img->path, img->file_size, strerror(-ret));
	img->reclaimed = old - img->file_size;
	snprintf(img->notice, sizeof(img->notice), "%s: reclaimed %" PRIu64
		 " bytes left past the last block by an interrupted block "
		 "allocation: the file went from %" PRIu64 " to %" PRIu64
		 " bytes", img->path, img->reclaimed, old, img->file_size);
	return 0;
}

static int image_open_dynamic(struct vhd_image *img, char *err,
			      size_t errlen)
{
	uint8_t buf[VHD_HEADER_SIZE];
	uint64_t limit, off = img->footer.data_offset;
	char why[384];
	int ret;

	/* Without a trailing footer, blocks may run to the end of file. */
	limit = img->footer_from_backup ? img->file_size : img->footer_off;
	if (off > limit || limit - off < VHD_HEADER_SIZE)
		return td_errf(err, errlen, -EINVAL,
			    "%s: dynamic header at offset 0x%" PRIx64 " lies "
			    "past the end of the file (%" PRIu64 " bytes)",
			    img->path, off, img->file_size);
	ret = td_pread_full(img->fd, buf, sizeof(buf), off);
	if (ret)
		return td_errf(err, errlen, ret, "%s: reading the dynamic header: "
			    "%s", img->path, strerror(-ret));
	ret = vhd_header_decode(buf, &img->header, &img->footer, limit, why,
				sizeof(why));
	if (ret)
		return td_errf(err, errlen, ret, "%s: %s", img->path, why);

	img->spb = img->header.block_size >> VHD_SECTOR_SHIFT;
	img->bitmap_size = vhd_bitmap_size(img->header.block_size);
	img->bitmap_block = VHD_BAT_UNUSED;
	img->bitmap = malloc(img->bitmap_size);
	if (!img->bitmap)
		return td_errf(err, errlen, -ENOMEM, "%s: no memory", img->path);

	ret = image_read_bat(img, limit, err, errlen);
	if (ret)
		return ret;

	img->next_block = vhd_data_end(&img->footer, &img->header, img->bat,
				       img->bat_entries, limit);
	if ((img->flags & VHD_IMAGE_RECLAIM) &&
	    !(img->flags & VHD_IMAGE_RDONLY) && !img->footer_from_backup &&
	    img->next_block < img->footer_off) {
		ret = image_reclaim(img, err, errlen);
		if (ret)
			return ret;
	}
	if (img->footer_from_backup) {
		uint64_t end = td_round_up(img->file_size, VHD_SECTOR_SIZE);

		if (end > img->next_block)
			img->next_block = end;
		img->footer_off = img->next_block;
	} else if (img->footer_off > img->next_block) {
		img->next_block = img->footer_off;
	}
	return 0;
}

int vhd_image_open_fd(struct vhd_image **out, int fd, const char *name,
		      unsigned flags, char *err, size_t errlen)
{
	struct vhd_image *img;
	struct stat st;
	int ret;

	*out = NULL;
	img = calloc(1, sizeof(*img));
	if (!img || !(img->path = strdup(name))) {
		free(img);
		close(fd);
		return td_errf(err, errlen, -ENOMEM, "%s: no memory", name);
	}
	img->fd = fd;
	img->flags = flags;
	if (fstat(fd, &st) < 0) {
		ret = td_errf(err, errlen, -errno, "%s: %s", name,
			   strerror(errno));
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		ret = td_errf(err, errlen, -EINVAL, "%s: not a regular file",
			   name);
		goto fail;
	}
	img->file_size = (uint64_t)st.st_size;

	ret = image_read_footer(img, err, errlen);
	if (ret)
		goto fail;
	if (img->footer.type == VHD_TYPE_FIXED)
		ret = image_open_fixed(img, err, errlen);
	else
		ret = image_open_dynamic(img, err, errlen);
	if (ret)
		goto fail;
	*out = img;
	return 0;
fail:
	img->flags |= VHD_IMAGE_RDONLY;
	vhd_image_close(img);
	return ret;
}

int vhd_image_open(struct vhd_image **out, const char *path,
		   unsigned flags, char *err, size_t errlen)
{
	int fd;

	*out = NULL;
	fd = td_open_file(path, ((flags & VHD_IMAGE_RDONLY) ? O_RDONLY :
				 O_RDWR) | O_CLOEXEC);
	if (fd < 0)
		return td_errf(err, errlen, -errno, "%s: %s", path,
			    strerror(errno));
	return vhd_image_open_fd(out, fd, path, flags, err, errlen);
}

int vhd_image_close(struct vhd_image *img)
{
	int ret = 0;

	if (!img)
		return 0;
	if (!(img->flags & VHD_IMAGE_RDONLY) && fsync(img->fd) < 0)
		ret = -errno;
	if (close(img->fd) < 0 && !ret)
		ret = -errno;
	free(img->bat);
	free(img->bitmap);
	free(img->path);
	free(img);
	return ret;
}

/* ---- reading ---------------------------------------------------------- */

int vhd_image_read_bitmap(struct vhd_image *img, uint32_t block,
			  const uint8_t **map)
{
	int ret;

	if (!vhd_image_sparse(img) || block >= img->bat_entries ||
	    img->bat[block] == VHD_BAT_UNUSED)
		return -EINVAL;
	if (img->bitmap_block != block) {
		img->bitmap_block = VHD_BAT_UNUSED;
		ret = td_pread_full(img->fd, img->bitmap, img->bitmap_size,
				 (uint64_t)img->bat[block] << VHD_SECTOR_SHIFT);
		if (ret)
			return ret;
		img->bitmap_block = block;
	}
	*map = img->bitmap;
	return 0;
}

int vhd_image_map(struct vhd_image *img, uint64_t sec, uint32_t max,
		  uint32_t *run, uint64_t *off)
{
	uint64_t total = vhd_image_size(img) >> VHD_SECTOR_SHIFT;
	uint32_t blk, in, lim, n;
	enum vhd_map absent;
	const uint8_t *map;
	bool present;
	int ret;

	*off = 0;
	if (max == 0)
		return -EINVAL;
	if (sec >= total) {
		*run = max;
		return VHD_MAP_ZERO;
	}
	if (total - sec < max)
		max = (uint32_t)(total - sec);
	if (!vhd_image_sparse(img)) {
		*run = max;
		*off = sec << VHD_SECTOR_SHIFT;
		return VHD_MAP_DATA;
	}
	absent = img->footer.type == VHD_TYPE_DIFF ? VHD_MAP_PARENT :
						     VHD_MAP_ZERO;
	blk = (uint32_t)(sec / img->spb);
	in = (uint32_t)(sec % img->spb);
	lim = img->spb - in < max ? img->spb - in : max;
	if (img->bat[blk] == VHD_BAT_UNUSED) {
		*run = lim;
		return absent;
	}
	ret = vhd_image_read_bitmap(img, blk, &map);
	if (ret)
		return ret;
	n = vhd_bitmap_run(map, in, lim, &present);
	*run = n;
	if (!present)
		return absent;
	*off = ((uint64_t)img->bat[blk] << VHD_SECTOR_SHIFT) +
	       img->bitmap_size + ((uint64_t)in << VHD_SECTOR_SHIFT);
	return VHD_MAP_DATA;
}

int vhd_image_allocated(struct vhd_image *img, uint64_t *sectors,
			uint32_t *blocks)
{
	uint64_t total = vhd_image_size(img) >> VHD_SECTOR_SHIFT;
	const uint8_t *map;
	uint32_t i;
	int ret;

	*sectors = 0;
	*blocks = 0;
	if (!vhd_image_sparse(img)) {
		*sectors = total;
		return 0;
	}
	for (i = 0; i < img->bat_entries; i++) {
		uint64_t first = (uint64_t)i * img->spb;
		uint32_t n = img->spb;

		if (img->bat[i] == VHD_BAT_UNUSED)
			continue;
		ret = vhd_image_read_bitmap(img, i, &map);
		if (ret)
			return ret;
		if (total - first < n)
			n = (uint32_t)(total - first);
		*sectors += vhd_bitmap_count(map, 0, n);
		(*blocks)++;
	}
	return 0;
}
