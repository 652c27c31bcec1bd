/* SPDX-License-Identifier: MIT */
/*
 * A differencing VHD's parent: reading its locators, finding the parent
 * file through them, and telling whether a file is the parent the child
 * was made on (the conventions are in vhd-image.h).  Used by the driver
 * at open and by tapfs-img info and check.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/td-fileio.h"
#include "vhd-image.h"

bool vhd_image_parent_is_raw(const struct vhd_image *img)
{
	return img->footer.type == VHD_TYPE_DIFF &&
	       vhd_uuid_is_nil(img->header.parent_uuid);
}

int vhd_image_read_locator(struct vhd_image *img, unsigned i, char *path,
			   size_t pathlen, char *err, size_t errlen)
{
	const struct vhd_locator *l;
	uint8_t *raw;
	int ret;

	if (img->footer.type != VHD_TYPE_DIFF || i >= VHD_MAX_LOCATORS)
		return td_errf(err, errlen, -EINVAL, "no locator %u", i);
	l = &img->header.loc[i];
	if (l->data_len > VHD_MAX_LOCATOR_BYTES)
		return td_errf(err, errlen, -EINVAL, "locator %u: %" PRIu32
			    " bytes is too long", i, l->data_len);
	raw = malloc(l->data_len + 1);
	if (!raw)
		return td_errf(err, errlen, -ENOMEM, "no memory");
	ret = td_pread_full(img->fd, raw, l->data_len, l->data_offset);
	if (ret)
		td_errf(err, errlen, ret, "reading locator %u: %s", i,
		     strerror(-ret));
	else
		ret = vhd_locator_decode(l->code, raw, l->data_len, path,
					 pathlen, err, errlen);
	free(raw);
	return ret;
}

/* Append "; text" to a list in buf. */
static void list_add(char *buf, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void list_add(char *buf, size_t len, const char *fmt, ...)
{
	size_t n = strlen(buf);
	va_list ap;

	if (n && n + 2 < len) {
		strcpy(buf + n, "; ");
		n += 2;
	}
	if (n >= len)
		return;
	va_start(ap, fmt);
	vsnprintf(buf + n, len - n, fmt, ap);
	va_end(ap);
}

int vhd_image_find_parent(struct vhd_image *img, char **out, char *err,
			  size_t errlen)
{
	return vhd_image_find_parent_checked(img, NULL, NULL, out, err,
					     errlen);
}

int vhd_image_find_parent_checked(struct vhd_image *img,
				  vhd_path_check_t check, void *arg,
				  char **out, char *err, size_t errlen)
{
	char tried[1024] = "", dir[PATH_MAX], cand[PATH_MAX + 8];
	char path[PATH_MAX], why[256], name[16];
	char refusal[512], first[512] = "";
	unsigned pass, i, usable = 0;
	int n, refused = 0;
	struct stat st;
	char *slash;

	*out = NULL;
	if (img->footer.type != VHD_TYPE_DIFF)
		return td_errf(err, errlen, -EINVAL, "%s is not a differencing "
			    "image", img->path);
	snprintf(dir, sizeof(dir), "%s", img->path);
	slash = strrchr(dir, '/');
	if (!slash)
		snprintf(dir, sizeof(dir), ".");
	else if (slash == dir)
		dir[1] = '\0';
	else
		*slash = '\0';

	for (pass = 0; pass < 2; pass++) {
		for (i = 0; i < VHD_MAX_LOCATORS; i++) {
			uint32_t code = img->header.loc[i].code;
			const char *pn = vhd_platform_name(code, name,
							   sizeof(name));
			const char *rel;

			if (!vhd_locator_supported(code))
				continue;
			if (vhd_image_read_locator(img, i, path, sizeof(path),
						   why, sizeof(why))) {
				if (pass == 0)
					list_add(tried, sizeof(tried),
						 "locator %u (%s): %s", i, pn,
						 why);
				continue;
			}
			usable += pass == 0;
			if ((path[0] != '/') != (pass == 0))
				continue;
			rel = path;
			while (!strncmp(rel, "./", 2))
				rel += 2;
			if (path[0] == '/')
				n = snprintf(cand, sizeof(cand), "%s", path);
			else
				n = snprintf(cand, sizeof(cand), "%s/%s", dir,
					     rel);
			if (n < 0 || (size_t)n >= sizeof(cand)) {
				list_add(tried, sizeof(tried), "%s/%s (%s): "
					 "path too long", dir, rel, pn);
				continue;
			}
			n = check ? check(arg, cand, refusal, sizeof(refusal))
				  : 0;
			if ((n == -EACCES || n == -EINVAL) && !refused) {
				refused = n;	/* keep the first reason */
				snprintf(first, sizeof(first), "%s", refusal);
			}
			if (n && n != -EACCES && n != -EINVAL)
				list_add(tried, sizeof(tried), "%s (%s): %s",
					 cand, pn, strerror(-n));
			if (n)
				continue;
			if (stat(cand, &st) == 0 && S_ISREG(st.st_mode)) {
				*out = realpath(cand, NULL);
				if (!*out)
					*out = strdup(cand);
				if (!*out)
					return td_errf(err, errlen, -ENOMEM,
						    "no memory");
				return 0;
			}
			list_add(tried, sizeof(tried), "%s (%s): %s", cand, pn,
				 stat(cand, &st) ? strerror(errno) :
				 "not a regular file");
		}
	}
	if (refused)
		return td_errf(err, errlen, refused, "%s: parent %s", img->path,
			    first);
	if (!usable)
		return td_errf(err, errlen, -ENOENT, "%s: differencing image has "
			    "no usable parent locator%s%s", img->path,
			    tried[0] ? ": " : "", tried);
	return td_errf(err, errlen, -ENOENT, "%s: parent not found; tried %s",
		    img->path, tried);
}

int vhd_image_validate_parent(struct vhd_image *child,
			      struct vhd_image *parent,
			      const char *parent_path, char *warn,
			      size_t warnlen, char *err, size_t errlen)
{
	char want[40], have[40], t1[40], t2[40];
	struct stat st;
	uint32_t ts;

	if (warn && warnlen)
		warn[0] = '\0';
	if (child->footer.type != VHD_TYPE_DIFF)
		return td_errf(err, errlen, -EINVAL, "%s is not a differencing "
			    "image", child->path);
	vhd_uuid_format(child->header.parent_uuid, want);
	if (vhd_image_parent_is_raw(child)) {
		if (parent)
			return td_errf(err, errlen, -EINVAL, "%s records a raw "
				    "parent (nil parent UUID), but %s was "
				    "opened as a VHD", child->path,
				    parent_path);
	} else if (!parent) {
		return td_errf(err, errlen, -EINVAL, "%s expects a VHD parent "
			    "with UUID %s, but %s was opened as a raw image",
			    child->path, want, parent_path);
	} else if (memcmp(child->header.parent_uuid, parent->footer.uuid,
			  VHD_UUID_SIZE)) {
		vhd_uuid_format(parent->footer.uuid, have);
		return td_errf(err, errlen, -EINVAL, "parent UUID mismatch: %s "
			    "expects parent UUID %s, but %s has UUID %s",
			    child->path, want, parent_path, have);
	}
	if (stat(parent_path, &st) < 0)
		return td_errf(err, errlen, -errno, "parent %s of %s: %s",
			    parent_path, child->path, strerror(errno));
	ts = vhd_time_from_unix(st.st_mtime);
	if (ts != child->header.parent_timestamp && warn && warnlen) {
		vhd_time_format(child->header.parent_timestamp, t1, sizeof(t1));
		vhd_time_format(ts, t2, sizeof(t2));
		snprintf(warn, warnlen, "%s: parent %s was modified after the "
			 "child was made (recorded %s, file mtime %s)",
			 child->path, parent_path, t1, t2);
	}
	return 0;
}
