/* SPDX-License-Identifier: MIT */
/*
 * The table of image formats: names, the engine driver that reads each
 * (and probes it: td_probe_driver), its -o options, and each verb's entry
 * for it (defined in the verb's file).  A verb asks the table instead of
 * branching on formats; a new format is one entry here.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tapfs-img.h"
#include "formats.h"

/* -o subformat=dynamic|fixed,block_size=SIZE */
static int vhd_parse_options(const struct verb *v, char *s,
			     struct img_create *c)
{
	char *tok, *save = NULL;

	for (tok = strtok_r(s, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		char *val = strchr(tok, '=');
		uint64_t b;

		if (!val)
			return usage_error(v, "option '%s' needs a value", tok);
		*val++ = '\0';
		if (!strcmp(tok, "subformat")) {
			if (!strcmp(val, "dynamic"))
				c->vhd_type = VHD_TYPE_DYNAMIC;
			else if (!strcmp(val, "fixed"))
				c->vhd_type = VHD_TYPE_FIXED;
			else
				return usage_error(v, "subformat must be "
						   "dynamic or fixed, not '%s'",
						   val);
			c->vhd_type_set = true;
		} else if (!strcmp(tok, "block_size")) {
			if (td_parse_size(val, &b) || b > UINT32_MAX)
				return usage_error(v, "invalid block_size "
						   "'%s'", val);
			c->vhd_block_size = (uint32_t)b;
		} else {
			return usage_error(v, "unknown option '%s' "
					   "(subformat, block_size)", tok);
		}
	}
	return 0;
}

/* -o cluster_size=SIZE,compat=0.10|1.1,refcount_bits=N */
static int qcow2_parse_options(const struct verb *v, char *s,
			       struct img_create *c)
{
	struct qcow2_create_params *p = &c->qcow2;
	char *tok, *save = NULL;

	for (tok = strtok_r(s, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		char *val = strchr(tok, '=');
		uint64_t b;

		if (!val)
			return usage_error(v, "option '%s' needs a value", tok);
		*val++ = '\0';
		if (!strcmp(tok, "cluster_size")) {
			if (td_parse_size(val, &b) || b < 512 ||
			    b > (2u << 20) || (b & (b - 1)))
				return usage_error(v, "cluster_size must be "
						   "a power of two from 512 to "
						   "2M, not '%s'", val);
			p->cluster_bits = (uint32_t)__builtin_ctzll(b);
		} else if (!strcmp(tok, "compat")) {
			if (!strcmp(val, "0.10") || !strcmp(val, "v2"))
				p->version = 2;
			else if (!strcmp(val, "1.1") || !strcmp(val, "v3"))
				p->version = 3;
			else
				return usage_error(v, "compat must be 0.10 "
						   "or 1.1, not '%s'", val);
		} else if (!strcmp(tok, "refcount_bits")) {
			if (td_parse_size(val, &b) || !b || b > 64 ||
			    (b & (b - 1)))
				return usage_error(v, "refcount_bits must "
						   "be 1, 2, 4, ... 64, not "
						   "'%s'", val);
			if (b == 1)
				return usage_error(v, "refcount_bits=1 is not "
						   "supported for new images "
						   "(2 to 64)");
			p->refcount_order = (uint32_t)__builtin_ctzll(b);
		} else {
			return usage_error(v, "unknown option '%s' "
					   "(cluster_size, compat, "
					   "refcount_bits)", tok);
		}
	}
	/* refcount_order 0 means "default" to the helpers. */
	if (p->version == 2 && p->refcount_order &&
	    p->refcount_order != QCOW2_DEFAULT_REFCOUNT_ORDER)
		return usage_error(v, "compat=0.10 images have 16-bit "
				   "refcounts only");
	return 0;
}

const struct img_format img_format_raw = {
	.name = "raw",
	.driver = "aio",
	.qemu_name = "raw",
	.create = create_raw,
	.info = info_raw,
	.check = check_raw,
};

const struct img_format img_format_vhd = {
	.name = "vhd",
	.alias = "vpc",
	.driver = "vhd",
	.qemu_name = "vpc",
	.parse_options = vhd_parse_options,
	.create = create_vhd,
	.can_have_parent = true,
	.info = info_vhd,
	.check = check_vhd,
	.runs_open = runs_open_vhd,
};

const struct img_format img_format_qcow2 = {
	.name = "qcow2",
	.driver = "qcow2",
	.qemu_name = "qcow2",
	.parse_options = qcow2_parse_options,
	.create = create_qcow2,
	.can_have_parent = true,
	.info = info_qcow2,
	.check = check_qcow2,
	.runs_open = runs_open_qcow2,
};

const struct img_format img_format_qcow = {
	.name = "qcow",
	.driver = "qcow",
	.qemu_name = "qcow",
	.create = create_qcow,
	.can_have_parent = true,
	.info = info_qcow,
	.check = check_qcow,
};

/* monolithicSparse only; read: every subformat (vmdk-image.h). */
const struct img_format img_format_vmdk = {
	.name = "vmdk",
	.driver = "vmdk",
	.qemu_name = "vmdk",
	.create = create_vmdk,
	.info = info_vmdk,
	.check = check_vmdk,
};

const struct img_format *const img_formats[] = {
	&img_format_qcow2, &img_format_qcow, &img_format_vhd, &img_format_vmdk,
	&img_format_raw, NULL,
};

const struct img_format *parse_format(const struct verb *v, const char *s)
{
	const struct img_format *const *f;

	for (f = img_formats; *f; f++)
		if (!strcmp(s, (*f)->name) ||
		    ((*f)->alias && !strcmp(s, (*f)->alias)))
			return *f;
	usage_error(v, "unknown format '%s' (raw, vhd, qcow2, qcow or vmdk)", s);
	return NULL;
}

int probe_format(const char *path, const struct img_format **out)
{
	const char *driver;
	int ret;

	if (*out)
		return 0;
	/* The engine asks every driver's td_probe; raw takes the rest. */
	ret = td_probe_driver(path, &driver);
	if (ret) {
		msg("%s: %s", path, strerror(-ret));
		return EXIT_FAIL;
	}
	*out = format_of_driver(driver);
	if (!*out) {
		msg("%s: a %s image, which tapfs-img does not handle", path,
		    driver);
		return EXIT_FAIL;
	}
	return 0;
}

const struct img_format *format_of_driver(const char *driver)
{
	const struct img_format *const *f;

	for (f = img_formats; *f; f++)
		if (!strcmp(driver, (*f)->driver))
			return *f;
	return NULL;
}
