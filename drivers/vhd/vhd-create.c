/* SPDX-License-Identifier: MIT */
/*
 * Creating an empty VHD (the driver's create and create_child, tapfs-img
 * create): fixed, dynamic, or differencing with the parent's identity
 * and three locators (see vhd_image_create and the conventions in
 * vhd-image.h).  The image is written whole, then made durable; on
 * failure it is removed.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "common/td-fileio.h"
#include "vhd-image.h"

/* Metadata area of a new dynamic disk: footer copy, then the header. */
#define VHD_HEADER_OFFSET	VHD_FOOTER_SIZE
#define VHD_META_START		(VHD_HEADER_OFFSET + VHD_HEADER_SIZE)
/* Locators written on create: W2ru, W2ku, MacX. */
#define VHD_LOCATORS_WRITTEN	3u

/* Path of canonical absolute "to" relative to canonical directory "from". */
static char *relative_path(const char *from, const char *to)
{
	size_t i = 0, common = 0, ups = 0, len;
	const char *rest, *p;
	char *out;

	while (from[i] && to[i] && from[i] == to[i]) {
		if (to[i] == '/')
			common = i;
		i++;
	}
	if (!from[i] && to[i] == '/')
		common = i;
	rest = common < strlen(from) ? from + common + 1 : "";
	for (p = rest; *p; p++)
		if (*p != '/' && (p == rest || p[-1] == '/'))
			ups++;
	len = ups * 3 + strlen(to + common + 1) + 1;
	out = malloc(len);
	if (!out)
		return NULL;
	out[0] = '\0';
	while (ups--)
		strcat(out, "../");
	strcat(out, to + common + 1);
	return out;
}

/* The parent's identity: uuid (nil for raw), size, mtime. */
struct parent_info {
	uint8_t		uuid[VHD_UUID_SIZE];
	uint64_t	size;
	time_t		mtime;
	char		*real;		/* canonical path */
	char		*rel;		/* relative to the child's directory */
};

static int parent_info_get(const char *child, const struct vhd_create_params *p,
			   struct parent_info *pi, char *err, size_t errlen)
{
	struct vhd_image *parent = NULL;
	char *dir = NULL, *dreal = NULL;
	struct stat st;
	int ret;

	pi->real = realpath(p->parent, NULL);
	if (!pi->real || stat(pi->real, &st) < 0)
		return td_errf(err, errlen, -errno, "parent %s: %s", p->parent,
			    strerror(errno));
	pi->mtime = st.st_mtime;
	if (p->parent_raw) {
		if (!S_ISREG(st.st_mode))
			return td_errf(err, errlen, -EINVAL, "parent %s: not a "
				    "regular file", p->parent);
		if (st.st_size % VHD_SECTOR_SIZE)
			return td_errf(err, errlen, -EINVAL, "raw parent %s: size "
				    "%lld is not a multiple of 512", p->parent,
				    (long long)st.st_size);
		pi->size = (uint64_t)st.st_size;
		memset(pi->uuid, 0, sizeof(pi->uuid));
	} else {
		ret = vhd_image_open(&parent, pi->real, VHD_IMAGE_RDONLY, err,
				     errlen);
		if (ret)
			return ret;
		memcpy(pi->uuid, parent->footer.uuid, sizeof(pi->uuid));
		pi->size = vhd_image_size(parent);
		vhd_image_close(parent);
		if (vhd_uuid_is_nil(pi->uuid))
			return td_errf(err, errlen, -EINVAL, "parent %s has a "
				    "nil UUID: a child could not tell it from "
				    "a raw parent", p->parent);
	}
	dir = strdup(child);
	if (!dir)
		return td_errf(err, errlen, -ENOMEM, "no memory");
	dreal = realpath(dirname(dir), NULL);
	free(dir);
	if (!dreal)
		return td_errf(err, errlen, -errno, "%s: directory: %s", child,
			    strerror(errno));
	pi->rel = relative_path(dreal, pi->real);
	free(dreal);
	if (!pi->rel)
		return td_errf(err, errlen, -ENOMEM, "no memory");
	return 0;
}

/*
 * Fill h's parent fields and lay out the locators from VHD_META_START,
 * their payloads in buf (at file offsets).  Returns the end offset.
 */
static int header_set_parent(struct vhd_header *h, const struct parent_info *pi,
			     uint8_t *payload[VHD_LOCATORS_WRITTEN],
			     size_t plen[VHD_LOCATORS_WRITTEN], uint64_t *end,
			     char *err, size_t errlen)
{
	static const uint32_t codes[VHD_LOCATORS_WRITTEN] = {
		VHD_PLAT_W2RU, VHD_PLAT_W2KU, VHD_PLAT_MACX,
	};
	const char *base = strrchr(pi->real, '/');
	const char *bn = base ? base + 1 : pi->real;
	uint64_t off = VHD_META_START;
	unsigned i;
	int ret;

	memcpy(h->parent_uuid, pi->uuid, VHD_UUID_SIZE);
	h->parent_timestamp = vhd_time_from_unix(pi->mtime);
	ret = vhd_parent_name_set(h, bn);
	if (ret)
		return td_errf(err, errlen, ret, "parent file name %s does not "
			    "fit the header's 256 UTF-16 units", bn);
	for (i = 0; i < VHD_LOCATORS_WRITTEN; i++) {
		const char *path = codes[i] == VHD_PLAT_W2RU ? pi->rel :
							      pi->real;
		char name[16];

		ret = vhd_locator_encode(codes[i], path, payload[i],
					 VHD_MAX_LOCATOR_BYTES, &plen[i]);
		if (ret)
			return td_errf(err, errlen, ret, "parent path %s cannot "
				    "be stored in a %s locator%s", path,
				    vhd_platform_name(codes[i], name,
						      sizeof(name)),
				    strchr(path, '\\') ?
				    " (it contains a backslash)" : "");
		h->loc[i].code = codes[i];
		h->loc[i].data_len = (uint32_t)plen[i];
		h->loc[i].data_space = (uint32_t)(td_round_up(plen[i],
				VHD_SECTOR_SIZE) >> VHD_SECTOR_SHIFT);
		h->loc[i].data_offset = off;
		off += td_round_up(plen[i], VHD_SECTOR_SIZE);
	}
	*end = off;
	return 0;
}

static int create_fixed(int fd, struct vhd_footer *f)
{
	uint8_t buf[VHD_FOOTER_SIZE];

	vhd_footer_encode(f, buf);
	if (ftruncate(fd, (off_t)(f->curr_size + VHD_FOOTER_SIZE)) < 0)
		return -errno;
	return td_pwrite_full(fd, buf, sizeof(buf), f->curr_size);
}

static int create_dynamic(int fd, struct vhd_footer *f,
			  const struct vhd_create_params *p,
			  const struct parent_info *pi, char *err,
			  size_t errlen)
{
	uint8_t *payload[VHD_LOCATORS_WRITTEN] = { NULL };
	size_t plen[VHD_LOCATORS_WRITTEN] = { 0 };
	uint64_t table = VHD_META_START, bat_len, total;
	struct vhd_header h;
	uint8_t *meta = NULL;
	unsigned i;
	int ret = 0;

	vhd_header_init(&h, f->curr_size, p->block_size, 0);
	bat_len = vhd_bat_bytes(h.max_bat_entries);
	if (bat_len > VHD_MAX_BAT_BYTES)
		return td_errf(err, errlen, -EFBIG, "a BAT of %" PRIu32 " entries "
			    "is larger than the %u bytes supported: use a "
			    "larger block size", h.max_bat_entries,
			    VHD_MAX_BAT_BYTES);
	if (p->type == VHD_TYPE_DIFF) {
		for (i = 0; i < VHD_LOCATORS_WRITTEN; i++) {
			payload[i] = calloc(1, VHD_MAX_LOCATOR_BYTES);
			if (!payload[i]) {
				ret = td_errf(err, errlen, -ENOMEM, "no memory");
				goto out;
			}
		}
		ret = header_set_parent(&h, pi, payload, plen, &table, err,
					errlen);
		if (ret)
			goto out;
	}
	h.table_offset = table;
	total = table + bat_len + VHD_FOOTER_SIZE;
	meta = calloc(1, (size_t)total);
	if (!meta) {
		ret = td_errf(err, errlen, -ENOMEM, "no memory");
		goto out;
	}
	vhd_footer_encode(f, meta);
	memcpy(meta + total - VHD_FOOTER_SIZE, meta, VHD_FOOTER_SIZE);
	vhd_header_encode(&h, meta + VHD_HEADER_OFFSET);
	for (i = 0; i < VHD_LOCATORS_WRITTEN && p->type == VHD_TYPE_DIFF; i++)
		memcpy(meta + h.loc[i].data_offset, payload[i], plen[i]);
	memset(meta + table, 0xff,
	       (size_t)h.max_bat_entries * VHD_BAT_ENTRY_SIZE);
	ret = td_pwrite_full(fd, meta, (size_t)total, 0);
	if (ret)
		td_errf(err, errlen, ret, "writing: %s", strerror(-ret));
out:
	for (i = 0; i < VHD_LOCATORS_WRITTEN; i++)
		free(payload[i]);
	free(meta);
	return ret;
}

static int create_check_params(const struct vhd_create_params *p,
			       uint64_t size, char *err, size_t errlen)
{
	uint32_t bs = p->block_size;

	if (p->type != VHD_TYPE_FIXED && p->type != VHD_TYPE_DYNAMIC &&
	    p->type != VHD_TYPE_DIFF)
		return td_errf(err, errlen, -EINVAL, "unknown disk type %d",
			    (int)p->type);
	if ((p->type == VHD_TYPE_DIFF) != (p->parent != NULL))
		return td_errf(err, errlen, -EINVAL, "a parent is needed by, and "
			    "only by, a differencing image");
	if (size == 0)
		return td_errf(err, errlen, -EINVAL, "size must not be 0");
	if (size % VHD_SECTOR_SIZE)
		return td_errf(err, errlen, -EINVAL, "size %" PRIu64 " is not a "
			    "multiple of 512", size);
	if (size > VHD_MAX_SIZE)
		return td_errf(err, errlen, -EFBIG, "size %" PRIu64 " exceeds the "
			    "VHD maximum of %llu bytes (2040 GiB)", size,
			    VHD_MAX_SIZE);
	if (p->type != VHD_TYPE_FIXED &&
	    (bs < VHD_MIN_BLOCK_SIZE || bs > VHD_MAX_BLOCK_SIZE ||
	     (bs & (bs - 1))))
		return td_errf(err, errlen, -EINVAL, "block size %" PRIu32 " is "
			    "not a power of two from 512 bytes to 256 MiB", bs);
	return 0;
}

int vhd_image_create(const char *path, const struct vhd_create_params *p,
		     char *err, size_t errlen)
{
	struct parent_info pi = { .real = NULL, .rel = NULL };
	struct vhd_create_params q = *p;
	char why[512] = "";
	struct vhd_footer f;
	uuid_t uuid;
	int fd, ret;

	if (!q.block_size)
		q.block_size = VHD_DEFAULT_BLOCK_SIZE;
	if (q.type == VHD_TYPE_DIFF && q.parent) {
		ret = parent_info_get(path, &q, &pi, why, sizeof(why));
		if (ret)
			goto out;
		if (!q.size)
			q.size = pi.size;
	}
	ret = create_check_params(&q, q.size, why, sizeof(why));
	if (ret)
		goto out;

	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		ret = -errno;
		snprintf(why, sizeof(why), "%s", strerror(errno));
		goto out;
	}
	uuid_generate(uuid);
	vhd_footer_init(&f, q.type, q.size, vhd_time_from_unix(time(NULL)),
			uuid);
	if (q.type == VHD_TYPE_FIXED) {
		ret = create_fixed(fd, &f);
		if (ret)
			snprintf(why, sizeof(why), "writing: %s",
				 strerror(-ret));
	} else {
		ret = create_dynamic(fd, &f, &q, &pi, why, sizeof(why));
	}
	if (!ret && fsync(fd) < 0) {
		ret = -errno;
		snprintf(why, sizeof(why), "fsync: %s", strerror(errno));
	}
	if (close(fd) < 0 && !ret) {
		ret = -errno;
		snprintf(why, sizeof(why), "close: %s", strerror(errno));
	}
	if (ret)
		unlink(path);
out:
	free(pi.real);
	free(pi.rel);
	if (ret)
		td_errf(err, errlen, ret, "cannot create %s: %s", path, why);
	return ret;
}
