/* SPDX-License-Identifier: MIT */
/*
 * The VHD consistency check (tapfs-img check): every problem of an image
 * file, one line each, counted by severity (see vhd_image_check in
 * vhd-image.h).  It reads the file itself, so that it can go on past
 * what makes vhd_image_open refuse an image.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/td-fileio.h"
#include "vhd-image.h"

struct check_ctx {
	struct td_check		 chk;		/* where problems go */
	const char		*prefix;	/* for td_report messages */
	int			 fd;
	uint64_t		 size;
	bool			 backup;	/* trailing footer bad */
};

static void check_report_fn(void *arg, const char *msg)
{
	struct check_ctx *c = arg;

	td_check_emit(&c->chk, TD_SEV_ERROR, false, "%s%s", c->prefix, msg);
}

static struct td_report check_report(struct check_ctx *c,
				      const char *prefix)
{
	struct td_report r = { .fn = check_report_fn, .arg = c };

	c->prefix = prefix;
	return r;
}

/*
 * Footers: the trailing one, and for sparse disks the backup copy.
 * Returns 0 with *f the footer to go on with, or 1 when nothing more can
 * be checked.
 */
static int check_footers(struct check_ctx *c, struct vhd_footer *f,
			 uint64_t *limit)
{
	uint8_t tail[VHD_FOOTER_SIZE], head[VHD_FOOTER_SIZE];
	struct vhd_footer hf;
	struct td_report r;
	int tret, hret;

	if (td_pread_full(c->fd, tail, sizeof(tail),
		       c->size - VHD_FOOTER_SIZE) ||
	    td_pread_full(c->fd, head, sizeof(head), 0))
		return -EIO;
	r = check_report(c, "footer at end of file: ");
	tret = vhd_footer_parse(tail, f, &r);
	*limit = c->size - VHD_FOOTER_SIZE;
	if (!tret && f->type == VHD_TYPE_FIXED)
		return 0;
	r = check_report(c, "backup footer at offset 0: ");
	/* Once the trailing footer is bad, offset 0 may be a fixed disk's
	 * data: its problems are only news if it holds a cookie. */
	hret = vhd_footer_parse(head, &hf, !tret ||
				!memcmp(head, VHD_FOOTER_COOKIE,
					VHD_COOKIE_SIZE) ? &r : NULL);
	if (!tret) {
		if (!hret && memcmp(head, tail, sizeof(tail)))
			td_check_emit(&c->chk, TD_SEV_ERROR, false, "backup "
				      "footer at offset 0 differs from the "
				      "footer at end of file");
		return 0;
	}
	if (!hret && hf.type != VHD_TYPE_FIXED) {
		td_check_emit(&c->chk, TD_SEV_WARNING, false, "going on with "
			      "the backup footer at offset 0");
		c->backup = true;
		*f = hf;
		*limit = c->size;
		return 0;
	}
	return 1;
}

static void check_footer_fields(struct check_ctx *c,
				const struct vhd_footer *f, uint64_t limit)
{
	uint64_t data;

	if (vhd_uuid_is_nil(f->uuid))
		td_check_emit(&c->chk, TD_SEV_WARNING, false,
			      "footer: UUID is nil");
	if (!(f->features & VHD_FEATURE_RESERVED))
		td_check_emit(&c->chk, TD_SEV_WARNING, false, "footer: "
			      "features 0x%08" PRIx32 " lack the reserved bit "
			      "0x2", f->features);
	if (f->saved_state)
		td_check_emit(&c->chk, TD_SEV_WARNING, false,
			      "footer: saved state is set");
	if (f->type != VHD_TYPE_FIXED)
		return;
	/* Data for the virtual size must be there; up to the current
	 * size (when the geometry gives less) is still data. */
	data = vhd_footer_virtual_size(f);
	if (limit < data)
		td_check_emit(&c->chk, TD_SEV_ERROR, false, "fixed disk is "
			      "truncated: %" PRIu64 " bytes of data before the "
			      "footer, virtual size %" PRIu64, limit, data);
	if (f->curr_size > data)
		data = f->curr_size;
	if (limit > data)
		td_check_emit(&c->chk, TD_SEV_WARNING, false, "fixed disk: %"
			      PRIu64 " bytes between the data and the footer",
			      limit - data);
}

static int check_bitmaps(struct check_ctx *c, const struct vhd_footer *f,
			 const struct vhd_header *h, const uint32_t *bat,
			 uint32_t entries, uint64_t limit)
{
	uint32_t bsize = vhd_bitmap_size(h->block_size);
	uint32_t spb = h->block_size >> VHD_SECTOR_SHIFT;
	uint64_t total = vhd_footer_virtual_size(f) >> VHD_SECTOR_SHIFT;
	uint8_t *map;
	uint32_t i;
	int ret = 0;

	map = malloc(bsize);
	if (!map)
		return -ENOMEM;
	for (i = 0; i < entries && !ret; i++) {
		uint64_t off = (uint64_t)bat[i] << VHD_SECTOR_SHIFT;
		uint64_t first = (uint64_t)i * spb;
		uint32_t valid, extra;

		if (bat[i] == VHD_BAT_UNUSED || off + bsize > limit ||
		    first >= total)
			continue;
		ret = td_pread_full(c->fd, map, bsize, off);
		if (ret)
			break;
		valid = total - first < spb ? (uint32_t)(total - first) : spb;
		extra = vhd_bitmap_count(map, valid, spb - valid);
		/* An all-ones bitmap is how QEMU and the vhd driver allocate
		 * a dynamic disk's blocks: not worth a line. */
		if (extra && vhd_bitmap_count(map, 0, spb) != spb)
			td_check_emit(&c->chk, TD_SEV_WARNING, false, "block %"
				      PRIu32 ": sector bitmap marks %" PRIu32
				      " sectors beyond the virtual size as "
				      "present", i, extra);
	}
	free(map);
	return ret;
}

static void check_tail(struct check_ctx *c, const struct vhd_footer *f,
		       const struct vhd_header *h, const uint32_t *bat,
		       uint32_t entries, uint64_t limit)
{
	uint64_t end = vhd_data_end(f, h, bat, entries, limit);

	if (end < limit)
		td_check_emit(&c->chk, TD_SEV_WARNING, false, "%" PRIu64 " "
			      "bytes at 0x%" PRIx64 "-0x%" PRIx64 " before the "
			      "footer are not used by any block (left by an "
			      "interrupted allocation; a read-write open in "
			      "tapfs reclaims them)", limit - end, end, limit);
}

static int check_dynamic(struct check_ctx *c, const struct vhd_footer *f,
			 uint64_t limit)
{
	uint8_t buf[VHD_HEADER_SIZE], *raw = NULL;
	uint64_t *scratch = NULL, need;
	struct vhd_layout layout;
	struct vhd_header h;
	struct td_report r;
	uint32_t *bat = NULL, entries;
	int ret;

	if (f->data_offset > limit ||
	    limit - f->data_offset < VHD_HEADER_SIZE) {
		td_check_emit(&c->chk, TD_SEV_ERROR, false, "dynamic header at "
			      "offset 0x%" PRIx64 " lies past the end of the "
			      "file", f->data_offset);
		return 0;
	}
	ret = td_pread_full(c->fd, buf, sizeof(buf), f->data_offset);
	if (ret)
		return ret;
	r = check_report(c, "dynamic header: ");
	vhd_header_parse(buf, &h, f, limit, &r);
	if (memcmp(h.cookie, VHD_HEADER_COOKIE, VHD_COOKIE_SIZE) ||
	    !h.block_size || (h.block_size & (h.block_size - 1)) ||
	    h.block_size < VHD_MIN_BLOCK_SIZE ||
	    h.block_size > VHD_MAX_BLOCK_SIZE)
		return 0;
	if (h.table_offset > limit ||
	    (uint64_t)h.max_bat_entries * VHD_BAT_ENTRY_SIZE >
	    limit - h.table_offset)
		return 0;
	entries = h.max_bat_entries;
	if ((uint64_t)entries * VHD_BAT_ENTRY_SIZE > VHD_MAX_BAT_BYTES) {
		td_check_emit(&c->chk, TD_SEV_ERROR, false, "BAT of %" PRIu32
			      " entries is too large to check", entries);
		return 0;
	}
	bat = malloc((size_t)entries * sizeof(*bat) + 1);
	raw = malloc((size_t)entries * VHD_BAT_ENTRY_SIZE + 1);
	scratch = malloc((size_t)entries * sizeof(*scratch) + 1);
	if (!bat || !raw || !scratch) {
		ret = -ENOMEM;
		goto out;
	}
	ret = td_pread_full(c->fd, raw, (size_t)entries * VHD_BAT_ENTRY_SIZE,
			 h.table_offset);
	if (ret)
		goto out;
	vhd_bat_decode(raw, entries, bat);
	vhd_layout_init(&layout, f, &h, limit);
	r = check_report(c, "");
	vhd_bat_check(&layout, bat, scratch, &r);
	need = vhd_blocks_for_size(layout.size, h.block_size);
	if (need < entries)
		entries = (uint32_t)need;
	ret = check_bitmaps(c, f, &h, bat, entries, limit);
	if (!ret && !c->backup)
		check_tail(c, f, &h, bat, entries, limit);
out:
	free(bat);
	free(raw);
	free(scratch);
	return ret;
}

/* Parent name, locators, and the parent itself (through a full open). */
static void check_parent(struct check_ctx *c, const char *path)
{
	char why[1024], warn[512], p[PATH_MAX], name[16];
	struct vhd_image *img = NULL, *parent = NULL;
	char *ppath = NULL;
	unsigned i;
	int ret;

	if (vhd_image_open(&img, path, VHD_IMAGE_RDONLY, why, sizeof(why)))
		return;	/* every reason has been reported already */
	if (img->footer.type != VHD_TYPE_DIFF)
		goto out;
	if (vhd_parent_name_get(&img->header, p, sizeof(p)))
		td_check_emit(&c->chk, TD_SEV_ERROR, false, "dynamic header: "
			      "parent name is not valid UTF-16BE");
	for (i = 0; i < VHD_MAX_LOCATORS; i++) {
		if (!vhd_locator_supported(img->header.loc[i].code))
			continue;
		if (vhd_image_read_locator(img, i, p, sizeof(p), why,
					   sizeof(why)))
			td_check_emit(&c->chk, TD_SEV_ERROR, false, "parent "
				      "locator %u (%s): %s", i,
				      vhd_platform_name(img->header.loc[i].code,
							name, sizeof(name)),
				      why);
	}
	if (vhd_image_find_parent(img, &ppath, why, sizeof(why))) {
		td_check_emit(&c->chk, TD_SEV_ERROR, false, "%s", why);
		goto out;
	}
	if (!vhd_image_parent_is_raw(img)) {
		ret = vhd_image_open(&parent, ppath, VHD_IMAGE_RDONLY, why,
				     sizeof(why));
		if (ret) {
			td_check_emit(&c->chk, TD_SEV_ERROR, false,
				      "parent: %s", why);
			goto out;
		}
	}
	if (vhd_image_validate_parent(img, parent, ppath, warn, sizeof(warn),
				      why, sizeof(why)))
		td_check_emit(&c->chk, TD_SEV_ERROR, false, "%s", why);
	else if (warn[0])
		td_check_emit(&c->chk, TD_SEV_WARNING, false, "%s", warn);
out:
	vhd_image_close(parent);
	vhd_image_close(img);
	free(ppath);
}

int vhd_image_check(const char *path, td_check_fn *fn, void *arg,
		    struct td_check_result *res, char *err, size_t errlen)
{
	struct check_ctx c = { .chk = { .fn = fn, .arg = arg, .res = res } };
	struct vhd_footer f;
	struct stat st;
	uint64_t limit;
	int ret;

	memset(res, 0, sizeof(*res));
	c.fd = td_open_file(path, O_RDONLY | O_CLOEXEC);
	if (c.fd < 0 || fstat(c.fd, &st) < 0) {
		ret = td_errf(err, errlen, -errno, "%s: %s", path,
			   strerror(errno));
		if (c.fd >= 0)
			close(c.fd);
		return ret;
	}
	c.size = (uint64_t)st.st_size;
	ret = 0;
	if (!S_ISREG(st.st_mode)) {
		ret = td_errf(err, errlen, -EINVAL, "%s: not a regular file",
			   path);
		goto out;
	}
	if (c.size < VHD_FOOTER_SIZE) {
		td_check_emit(&c.chk, TD_SEV_ERROR, false, "file is %" PRIu64
			      " bytes, too small for a VHD footer (512)",
			      c.size);
		goto out;
	}
	if (c.size % VHD_SECTOR_SIZE)
		td_check_emit(&c.chk, TD_SEV_ERROR, false, "file size %" PRIu64
			      " is not a multiple of 512", c.size);
	ret = check_footers(&c, &f, &limit);
	if (ret) {
		ret = ret < 0 ? td_errf(err, errlen, ret, "%s: %s", path,
				     strerror(-ret)) : 0;
		goto out;
	}
	check_footer_fields(&c, &f, limit);
	if (f.type == VHD_TYPE_DYNAMIC || f.type == VHD_TYPE_DIFF) {
		ret = check_dynamic(&c, &f, limit);
		if (ret) {
			td_errf(err, errlen, ret, "%s: %s", path, strerror(-ret));
			goto out;
		}
		if (f.type == VHD_TYPE_DIFF)
			check_parent(&c, path);
	}
out:
	close(c.fd);
	return ret;
}
