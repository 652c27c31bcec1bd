/* SPDX-License-Identifier: MIT */
/* The VMDK on-disk format, pure: see vmdk-format.h. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/td-fileio.h"
#include "common/td-util.h"
#include "vmdk-format.h"

/* Byte offsets of the header's fields (the structure is packed). */
enum {
	H_MAGIC		= 0,
	H_VERSION	= 4,
	H_FLAGS		= 8,
	H_CAPACITY	= 12,
	H_GRAIN		= 20,
	H_DESC_OFF	= 28,
	H_DESC_SIZE	= 36,
	H_GTES		= 44,
	H_RGD		= 48,
	H_GD		= 56,
	H_OVERHEAD	= 64,
	H_UNCLEAN	= 72,
	H_NL		= 73,	/* '\n', ' ', '\r', '\n': transfer check */
	H_COMPRESS	= 77,
};

#define VMDK_MAX_VERSION	3u

static int vmdk_table_fits(const char *what, uint64_t off, uint64_t secs,
			   uint64_t file_secs, char *err, size_t errlen)
{
	if (!off || off > file_secs || secs > file_secs - off)
		return td_errf(err, errlen, -EINVAL, "%s at sector %" PRIu64
			       " (%" PRIu64 " sectors) is past the end of the "
			       "file (%" PRIu64 " sectors)", what, off, secs,
			       file_secs);
	return 0;
}

int vmdk_header_decode(const uint8_t *buf, uint64_t file_secs,
		       struct vmdk_header *h, char *err, size_t errlen)
{
	uint64_t gd_secs;
	uint32_t magic = td_get_le32(buf + H_MAGIC);
	int rc;

	memset(h, 0, sizeof(*h));
	if (magic != VMDK_MAGIC)
		return td_errf(err, errlen, -EINVAL, "not a sparse extent "
			       "(magic 0x%08x)", magic);
	h->version = td_get_le32(buf + H_VERSION);
	h->flags = td_get_le32(buf + H_FLAGS);
	h->capacity = td_get_le64(buf + H_CAPACITY);
	h->grain_secs = td_get_le64(buf + H_GRAIN);
	h->desc_offset = td_get_le64(buf + H_DESC_OFF);
	h->desc_size = td_get_le64(buf + H_DESC_SIZE);
	h->gtes = td_get_le32(buf + H_GTES);
	h->rgd_offset = td_get_le64(buf + H_RGD);
	h->gd_offset = td_get_le64(buf + H_GD);
	h->overhead = td_get_le64(buf + H_OVERHEAD);
	h->unclean = buf[H_UNCLEAN] != 0;
	h->compress = td_get_le16(buf + H_COMPRESS);

	if (h->version < 1 || h->version > VMDK_MAX_VERSION)
		return td_errf(err, errlen, -ENOTSUP, "sparse extent version "
			       "%u is not supported (1 to %u)", h->version,
			       VMDK_MAX_VERSION);
	if (!h->grain_secs || h->grain_secs > VMDK_MAX_GRAIN_SECS ||
	    (h->grain_secs & (h->grain_secs - 1)))
		return td_errf(err, errlen, -EINVAL, "grain size %" PRIu64
			       " sectors is not a power of two from 1 to %u",
			       h->grain_secs, VMDK_MAX_GRAIN_SECS);
	if (h->capacity > VMDK_MAX_CAPACITY)
		return td_errf(err, errlen, -EINVAL, "capacity %" PRIu64
			       " sectors is larger than %llu (64 TiB)",
			       h->capacity, VMDK_MAX_CAPACITY);
	if (!h->gtes || h->gtes > VMDK_MAX_GTES)
		return td_errf(err, errlen, -EINVAL, "%u entries per grain "
			       "table (1 to %u)", h->gtes, VMDK_MAX_GTES);
	if (h->flags & VMDK_FLAG_COMPRESSED) {
		if (h->compress != VMDK_COMPRESS_DEFLATE)
			return td_errf(err, errlen, -ENOTSUP, "compression "
				       "algorithm %u is not supported (1: "
				       "deflate)", h->compress);
		if (!(h->flags & VMDK_FLAG_MARKERS))
			return td_errf(err, errlen, -ENOTSUP, "compressed "
				       "grains without markers are not "
				       "supported");
	}
	if (h->desc_offset) {
		if (h->desc_size > VMDK_MAX_DESC / VMDK_SECTOR)
			return td_errf(err, errlen, -EINVAL, "embedded "
				       "descriptor of %" PRIu64 " sectors is "
				       "larger than %u bytes", h->desc_size,
				       VMDK_MAX_DESC);
		rc = vmdk_table_fits("the embedded descriptor",
				     h->desc_offset, h->desc_size, file_secs,
				     err, errlen);
		if (rc)
			return rc;
	}
	if (h->gd_offset == VMDK_GD_AT_END)
		return 0;
	gd_secs = td_div_round_up(vmdk_header_gd_entries(h) * 4,
				  VMDK_SECTOR);
	rc = vmdk_table_fits("the grain directory", h->gd_offset, gd_secs,
			     file_secs, err, errlen);
	if (!rc && (h->flags & VMDK_FLAG_RGD))
		rc = vmdk_table_fits("the redundant grain directory",
				     h->rgd_offset, gd_secs, file_secs, err,
				     errlen);
	return rc;
}

void vmdk_header_encode(const struct vmdk_header *h, uint8_t *buf)
{
	memset(buf, 0, VMDK_HEADER_SIZE);
	td_put_le32(buf + H_MAGIC, VMDK_MAGIC);
	td_put_le32(buf + H_VERSION, h->version);
	td_put_le32(buf + H_FLAGS, h->flags);
	td_put_le64(buf + H_CAPACITY, h->capacity);
	td_put_le64(buf + H_GRAIN, h->grain_secs);
	td_put_le64(buf + H_DESC_OFF, h->desc_offset);
	td_put_le64(buf + H_DESC_SIZE, h->desc_size);
	td_put_le32(buf + H_GTES, h->gtes);
	td_put_le64(buf + H_RGD, h->rgd_offset);
	td_put_le64(buf + H_GD, h->gd_offset);
	td_put_le64(buf + H_OVERHEAD, h->overhead);
	buf[H_UNCLEAN] = h->unclean;
	memcpy(buf + H_NL, "\n \r\n", 4);
	td_put_le16(buf + H_COMPRESS, h->compress);
}

/* ---- descriptor ----------------------------------------------------- */

static char *vmdk_trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
		*--e = '\0';
	return s;
}

/* A value, without the quotes around it if any. */
static char *vmdk_unquote(char *s)
{
	size_t n = strlen(s);

	if (n >= 2 && s[0] == '"' && s[n - 1] == '"') {
		s[n - 1] = '\0';
		return s + 1;
	}
	return s;
}

static int vmdk_parse_u64(const char *s, int base, uint64_t *v)
{
	char *end;

	if (!*s || *s == '-' || *s == '+' || *s == ' ')
		return -EINVAL;
	errno = 0;
	*v = strtoull(s, &end, base);
	return errno || *end ? -EINVAL : 0;
}

bool vmdk_extent_name_ok(const char *name)
{
	const char *p = name;

	if (!*name || *name == '/')
		return false;
	while (*p) {
		size_t n = strcspn(p, "/");

		if (n == 2 && p[0] == '.' && p[1] == '.')
			return false;
		p += n;
		if (*p == '/')
			p++;
	}
	return true;
}

/* "RW 4192256 SPARSE "name.vmdk" [offset]" */
static int vmdk_parse_extent(char *line, unsigned lineno,
			     struct vmdk_extent_desc *e, char *err,
			     size_t errlen)
{
	char *access, *secs, *type, *rest, *name, *q, *save = NULL;

	memset(e, 0, sizeof(*e));
	access = strtok_r(line, " \t", &save);
	secs = strtok_r(NULL, " \t", &save);
	type = strtok_r(NULL, " \t", &save);
	rest = save ? vmdk_trim(save) : NULL;
	if (!access || !secs || !type)
		return td_errf(err, errlen, -EINVAL, "descriptor line %u: an "
			       "extent needs access, size and type", lineno);
	if (!strcmp(access, "RW"))
		e->access = VMDK_ACCESS_RW;
	else if (!strcmp(access, "RDONLY"))
		e->access = VMDK_ACCESS_RDONLY;
	else
		return td_errf(err, errlen, -ENOTSUP, "descriptor line %u: "
			       "extent access %s is not supported", lineno,
			       access);
	if (vmdk_parse_u64(secs, 10, &e->secs) || !e->secs ||
	    e->secs > VMDK_MAX_CAPACITY)
		return td_errf(err, errlen, -EINVAL, "descriptor line %u: "
			       "extent size '%s' is not a number of sectors "
			       "from 1 to %llu", lineno, secs,
			       VMDK_MAX_CAPACITY);
	if (!strcmp(type, "SPARSE"))
		e->type = VMDK_EXTENT_SPARSE;
	else if (!strcmp(type, "FLAT") || !strcmp(type, "VMFS"))
		e->type = VMDK_EXTENT_FLAT;
	else if (!strcmp(type, "ZERO"))
		e->type = VMDK_EXTENT_ZERO;
	else
		return td_errf(err, errlen, -ENOTSUP, "descriptor line %u: "
			       "extent type %s is not supported (SPARSE, "
			       "FLAT, ZERO)", lineno, type);
	if (e->type == VMDK_EXTENT_ZERO)
		return 0;
	if (!rest || *rest != '"' || !(q = strchr(rest + 1, '"')))
		return td_errf(err, errlen, -EINVAL, "descriptor line %u: the "
			       "extent's file name must be quoted", lineno);
	name = rest + 1;
	*q = '\0';
	if (q - name > VMDK_MAX_NAME)
		return td_errf(err, errlen, -EINVAL, "descriptor line %u: "
			       "extent file name longer than %u bytes",
			       lineno, VMDK_MAX_NAME);
	if (!vmdk_extent_name_ok(name))
		return td_errf(err, errlen, -EACCES, "descriptor line %u: "
			       "extent file '%s' is outside the descriptor's "
			       "folder", lineno, name);
	memcpy(e->name, name, (size_t)(q - name) + 1);
	rest = vmdk_trim(q + 1);
	if (*rest && (e->type != VMDK_EXTENT_FLAT ||
		      vmdk_parse_u64(rest, 10, &e->offset) ||
		      e->offset > VMDK_MAX_CAPACITY))
		return td_errf(err, errlen, -EINVAL, "descriptor line %u: "
			       "bad extent offset '%s'", lineno, rest);
	return 0;
}

static int vmdk_parse_kv(char *line, unsigned lineno, struct vmdk_desc *d,
			 char *err, size_t errlen)
{
	char *eq = strchr(line, '='), *key, *val;
	uint64_t v;

	if (!eq)
		return 0;		/* not ours to judge */
	*eq = '\0';
	key = vmdk_trim(line);
	val = vmdk_unquote(vmdk_trim(eq + 1));
	if (!strcmp(key, "CID") || !strcmp(key, "parentCID")) {
		if (vmdk_parse_u64(val, 16, &v) || v > UINT32_MAX)
			return td_errf(err, errlen, -EINVAL, "descriptor line "
				       "%u: %s '%s' is not a 32-bit hex "
				       "number", lineno, key, val);
		if (key[0] == 'C') {
			d->cid = (uint32_t)v;
		} else {
			d->parent_cid = (uint32_t)v;
			d->has_parent_cid = true;
		}
	} else if (!strcmp(key, "createType")) {
		if (strlen(val) >= sizeof(d->create_type))
			return td_errf(err, errlen, -EINVAL, "descriptor line "
				       "%u: createType too long", lineno);
		strcpy(d->create_type, val);
	} else if (!strcmp(key, "parentFileNameHint")) {
		if (strlen(val) > VMDK_MAX_NAME || !*val)
			return td_errf(err, errlen, -EINVAL, "descriptor line "
				       "%u: bad parentFileNameHint", lineno);
		strcpy(d->parent_hint, val);
	}
	return 0;
}

static int vmdk_parse_line(char *line, unsigned lineno, struct vmdk_desc *d,
			   char *err, size_t errlen)
{
	struct vmdk_extent_desc *e;
	int rc;

	line = vmdk_trim(line);
	if (!*line || *line == '#')
		return 0;
	if (strncmp(line, "RW ", 3) && strncmp(line, "RDONLY ", 7) &&
	    strncmp(line, "NOACCESS ", 9))
		return vmdk_parse_kv(line, lineno, d, err, errlen);
	if (d->n_extents == VMDK_MAX_EXTENTS)
		return td_errf(err, errlen, -EINVAL, "more than %u extents",
			       VMDK_MAX_EXTENTS);
	e = realloc(d->extents, (d->n_extents + 1) * sizeof(*e));
	if (!e)
		return -ENOMEM;
	d->extents = e;
	rc = vmdk_parse_extent(line, lineno, &e[d->n_extents], err, errlen);
	if (rc)
		return rc;
	e = &e[d->n_extents++];
	if (e->secs > VMDK_MAX_CAPACITY - d->capacity)
		return td_errf(err, errlen, -EINVAL, "descriptor: extents "
			       "larger than %llu sectors in all",
			       VMDK_MAX_CAPACITY);
	d->capacity += e->secs;
	return 0;
}

int vmdk_desc_parse(const char *text, size_t len, struct vmdk_desc *d,
		    char *err, size_t errlen)
{
	char line[VMDK_MAX_LINE + 1];
	const char *end, *p = text;
	unsigned lineno = 0;
	int rc;

	memset(d, 0, sizeof(*d));
	d->parent_cid = VMDK_NO_PARENT_CID;
	end = memchr(text, '\0', len);
	if (!end)
		end = text + len;
	if (end - text > VMDK_MAX_DESC)
		return td_errf(err, errlen, -EINVAL, "descriptor of %zu bytes "
			       "is larger than %u", (size_t)(end - text),
			       VMDK_MAX_DESC);
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = (size_t)((nl ? nl : end) - p);

		lineno++;
		if (n > VMDK_MAX_LINE)
			return td_errf(err, errlen, -EINVAL, "descriptor line "
				       "%u is longer than %u bytes", lineno,
				       VMDK_MAX_LINE);
		memcpy(line, p, n);
		line[n] = '\0';
		if (strlen(line) != n)
			return td_errf(err, errlen, -EINVAL, "descriptor line "
				       "%u holds a NUL byte", lineno);
		rc = vmdk_parse_line(line, lineno, d, err, errlen);
		if (rc)
			return rc;
		p += n + (nl != NULL);
	}
	if (!d->n_extents)
		return td_errf(err, errlen, -EINVAL, "descriptor names no "
			       "extent");
	return 0;
}

void vmdk_desc_free(struct vmdk_desc *d)
{
	free(d->extents);
	d->extents = NULL;
	d->n_extents = 0;
}

int vmdk_desc_format(char *buf, size_t len, uint64_t capacity,
		     const char *name, uint32_t cid)
{
	int n = snprintf(buf, len,
			 "# Disk DescriptorFile\n"
			 "version=1\n"
			 "CID=%08x\n"
			 "parentCID=ffffffff\n"
			 "createType=\"monolithicSparse\"\n"
			 "\n"
			 "# Extent description\n"
			 "RW %" PRIu64 " SPARSE \"%s\"\n"
			 "\n"
			 "# The Disk Data Base\n"
			 "#DDB\n"
			 "\n"
			 "ddb.virtualHWVersion = \"4\"\n"
			 "ddb.adapterType = \"ide\"\n",
			 cid, capacity, name);

	return n < 0 || (size_t)n >= len ? -ENOSPC : n;
}

/* ---- grain markers ---------------------------------------------------- */

int vmdk_marker_decode(const uint8_t *buf, size_t len, uint64_t *lba,
		       uint32_t *size, char *err, size_t errlen)
{
	if (len < VMDK_MARKER_SIZE)
		return td_errf(err, errlen, -EINVAL, "grain marker cut short "
			       "(%zu bytes)", len);
	*lba = td_get_le64(buf);
	*size = td_get_le32(buf + 8);
	if (!*size || *size > len - VMDK_MARKER_SIZE)
		return td_errf(err, errlen, -EINVAL, "compressed grain of %u "
			       "bytes (at most %zu)", *size,
			       len - VMDK_MARKER_SIZE);
	return 0;
}
