/* SPDX-License-Identifier: MIT */
/* info: an image's format, size, allocation and chain (offline). */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "tapfs-img.h"
#include "formats.h"
#include "vmdk/vmdk-image.h"

/* info's "in use" line: who holds path, or "no". */
static void info_in_use(const char *path, bool json)
{
	char who[256];

	if (td_lock_describe(NULL, path, who, sizeof(who)))
		who[0] = '\0';
	if (json) {
		printf("    \"in-use\": ");
		if (who[0])
			json_str(stdout, who);
		else
			printf("false");
		printf(",\n");
	} else {
		printf("in use: %s\n", who[0] ? who : "no");
	}
}

struct info {
	const char		*path;
	struct vhd_image	*img;		/* NULL: raw */
	uint64_t		 size;
	uint64_t		 disk_size;
	uint64_t		 alloc_secs;
	uint32_t		 alloc_blocks;
};

static void info_locators(struct vhd_image *img, bool json)
{
	char path[4096], why[256], name[16];
	unsigned i;
	bool first = true;

	for (i = 0; i < VHD_MAX_LOCATORS; i++) {
		uint32_t code = img->header.loc[i].code;

		if (code == VHD_PLAT_NONE)
			continue;
		if (vhd_image_read_locator(img, i, path, sizeof(path), why,
					   sizeof(why)))
			snprintf(path, sizeof(path), "(%s)", why);
		vhd_platform_name(code, name, sizeof(name));
		if (json) {
			printf("%s{ \"platform\": ", first ? "" : ", ");
			json_str(stdout, name);
			printf(", \"path\": ");
			json_str(stdout, path);
			printf(" }");
		} else {
			printf("parent locator %u: %s %s\n", i, name, path);
		}
		first = false;
	}
}

/* Why the virtual size is not the footer's current size. */
static void info_size_source(const struct vhd_image *img)
{
	const struct vhd_footer *f = &img->footer;
	char a[32];

	printf("current size: %s (%" PRIu64 " bytes) in the footer; the "
	       "virtual size is the CHS geometry %u/%u/%u of creator "
	       "\"%.4s\"\n", human_size(f->curr_size, a, sizeof(a)),
	       f->curr_size, f->geometry.cylinders, f->geometry.heads,
	       f->geometry.sectors, f->creator_app);
}

static void info_print_text(const struct info *in)
{
	char a[32], b[32], u[40];

	printf("image: %s\n", in->path);
	printf("file format: %s\n", in->img ? "vhd" : "raw");
	if (in->img)
		printf("subformat: %s\n", vhd_type_name(in->img->footer.type));
	printf("virtual size: %s (%" PRIu64 " bytes)\n",
	       human_size(in->size, a, sizeof(a)), in->size);
	if (in->img && in->img->footer.curr_size != in->size)
		info_size_source(in->img);
	printf("disk size: %s\n", human_size(in->disk_size, b, sizeof(b)));
	info_in_use(in->path, false);
	if (!in->img)
		return;
	printf("allocated: %s (%" PRIu64 " bytes)", human_size(
	       in->alloc_secs << TD_SECTOR_SHIFT, a, sizeof(a)),
	       in->alloc_secs << TD_SECTOR_SHIFT);
	if (vhd_image_sparse(in->img))
		printf(" in %" PRIu32 " block%s", in->alloc_blocks,
		       in->alloc_blocks == 1 ? "" : "s");
	printf("\n");
	if (vhd_image_sparse(in->img))
		printf("block size: %s (%" PRIu32 " bytes)\n", human_size(
		       in->img->header.block_size, a, sizeof(a)),
		       in->img->header.block_size);
	vhd_uuid_format(in->img->footer.uuid, u);
	printf("uuid: %s\n", u);
	vhd_time_format(in->img->footer.timestamp, a, sizeof(a));
	printf("created: %s\n", a);
	printf("creator: %.4s\n", in->img->footer.creator_app);
	if (in->img->footer.type == VHD_TYPE_DIFF) {
		char name[VHD_PARENT_NAME_SIZE * 2];

		if (vhd_image_parent_is_raw(in->img))
			printf("parent uuid: none (raw parent)\n");
		else {
			vhd_uuid_format(in->img->header.parent_uuid, u);
			printf("parent uuid: %s\n", u);
		}
		if (!vhd_parent_name_get(&in->img->header, name, sizeof(name)))
			printf("parent name: %s\n", name);
		vhd_time_format(in->img->header.parent_timestamp, a, sizeof(a));
		printf("parent timestamp: %s\n", a);
		info_locators(in->img, false);
	}
}

static void info_print_json(const struct info *in)
{
	char u[40], t[40];
	unsigned i;

	printf("{\n    \"filename\": ");
	json_str(stdout, in->path);
	printf(",\n    \"format\": \"%s\",\n", in->img ? "vhd" : "raw");
	if (in->img)
		printf("    \"subformat\": \"%s\",\n",
		       vhd_type_name(in->img->footer.type));
	printf("    \"virtual-size\": %" PRIu64 ",\n", in->size);
	printf("    \"actual-size\": %" PRIu64 ",\n", in->disk_size);
	info_in_use(in->path, true);
	if (in->img) {
		printf("    \"allocated-bytes\": %" PRIu64 ",\n",
		       in->alloc_secs << TD_SECTOR_SHIFT);
		if (vhd_image_sparse(in->img))
			printf("    \"allocated-blocks\": %" PRIu32 ",\n"
			       "    \"block-size\": %" PRIu32 ",\n",
			       in->alloc_blocks, in->img->header.block_size);
		const struct vhd_footer *f = &in->img->footer;
		char app[sizeof(f->creator_app) + 1];

		vhd_uuid_format(f->uuid, u);
		vhd_time_format(f->timestamp, t, sizeof(t));
		printf("    \"uuid\": \"%s\",\n    \"created\": \"%s\",\n", u,
		       t);
		snprintf(app, sizeof(app), "%.4s", f->creator_app);
		for (i = 0; app[i]; i++)
			if (!isprint((unsigned char)app[i]))
				app[i] = '?';	/* JSON wants UTF-8 */
		printf("    \"creator\": ");
		json_str(stdout, app);
		printf(",\n    \"current-size\": %" PRIu64 ",\n"
		       "    \"geometry\": { \"cylinders\": %u, \"heads\": %u, "
		       "\"sectors\": %u },\n    \"size-from\": \"%s\",\n",
		       f->curr_size, f->geometry.cylinders, f->geometry.heads,
		       f->geometry.sectors, vhd_footer_size_from_geometry(f) ?
		       "geometry" : "current-size");
	}
	if (in->img && in->img->footer.type == VHD_TYPE_DIFF) {
		char name[VHD_PARENT_NAME_SIZE * 2] = "";

		vhd_uuid_format(in->img->header.parent_uuid, u);
		printf("    \"parent-raw\": %s,\n",
		       vhd_image_parent_is_raw(in->img) ? "true" : "false");
		printf("    \"parent-uuid\": \"%s\",\n", u);
		vhd_parent_name_get(&in->img->header, name, sizeof(name));
		printf("    \"parent-name\": ");
		json_str(stdout, name);
		vhd_time_format(in->img->header.parent_timestamp, t, sizeof(t));
		printf(",\n    \"parent-timestamp\": \"%s\",\n", t);
		printf("    \"parent-locators\": [ ");
		info_locators(in->img, true);
		printf(" ],\n");
	}
}


int info_raw(const char *path, uint64_t disk_size, bool json)
{
	struct info in = { .path = path, .disk_size = disk_size };
	struct stat st;

	if (stat(path, &st) < 0) {
		msg("%s: %s", path, strerror(errno));
		return EXIT_FAIL;
	}
	in.size = (uint64_t)st.st_size;
	if (json)
		info_print_json(&in);
	else
		info_print_text(&in);
	return img_print_chain(&img_format_raw, path, json);
}

int info_vhd(const char *path, uint64_t disk_size, bool json)
{
	struct info in = { .path = path, .disk_size = disk_size };
	char err[1024];
	int ret;

	if (vhd_image_open(&in.img, path, VHD_IMAGE_RDONLY, err,
			   sizeof(err))) {
		msg("%s", err);
		return EXIT_FAIL;
	}
	if (in.img->warning[0])
		msg("warning: %s", in.img->warning);
	in.size = vhd_image_size(in.img);
	if ((ret = vhd_image_allocated(in.img, &in.alloc_secs,
				       &in.alloc_blocks))) {
		msg("%s: reading bitmaps: %s", path, strerror(-ret));
		vhd_image_close(in.img);
		return EXIT_FAIL;
	}
	if (json)
		info_print_json(&in);
	else
		info_print_text(&in);
	vhd_image_close(in.img);
	return img_print_chain(&img_format_vhd, path, json);
}

/* info of a qcow2 image: its header, allocation and backing chain. */
/* info of a qcow2 image: its header, allocation and backing chain. */
int info_qcow2(const char *path, uint64_t disk_size, bool json)
{
	struct qcow2_image *img;
	char err[1024], a[32], b[32];
	uint64_t bytes = 0, clusters = 0;
	int ret, cret;

	if (qcow2_image_open(&img, path, 0, err, sizeof(err))) {
		msg("%s", err);
		return EXIT_FAIL;
	}
	ret = qcow2_image_allocated(img, &bytes, &clusters, err, sizeof(err));
	if (ret)
		msg("%s", err);
	if (json) {
		printf("{\n    \"filename\": ");
		json_str(stdout, path);
		printf(",\n    \"format\": \"qcow2\",\n");
		printf("    \"compat\": \"%s\",\n",
		       img->h.version == 2 ? "0.10" : "1.1");
		printf("    \"virtual-size\": %" PRIu64 ",\n", img->h.size);
		printf("    \"actual-size\": %" PRIu64 ",\n", disk_size);
		info_in_use(path, true);
		printf("    \"allocated-bytes\": %" PRIu64 ",\n", bytes);
		printf("    \"allocated-clusters\": %" PRIu64 ",\n", clusters);
		printf("    \"cluster-size\": %u,\n", img->g.cluster_size);
		printf("    \"refcount-bits\": %u,\n",
		       1u << img->g.refcount_order);
		printf("    \"dirty-flag\": %s,\n",
		       img->h.incompatible_features & QCOW2_INCOMPAT_DIRTY ?
		       "true" : "false");
		if (img->backing[0]) {
			printf("    \"backing-filename\": ");
			json_str(stdout, img->backing);
			printf(",\n");
		}
		if (img->ext.has_backing_format)
			printf("    \"backing-filename-format\": \"%s\",\n",
			       img->ext.backing_format);
	} else {
		printf("image: %s\nfile format: qcow2\n", path);
		printf("compat: %s\n", img->h.version == 2 ? "0.10" : "1.1");
		printf("virtual size: %s (%" PRIu64 " bytes)\n",
		       human_size(img->h.size, a, sizeof(a)), img->h.size);
		printf("disk size: %s\n", human_size(disk_size, b, sizeof(b)));
		info_in_use(path, false);
		printf("allocated: %s (%" PRIu64 " bytes) in %" PRIu64
		       " cluster%s\n", human_size(bytes, a, sizeof(a)), bytes,
		       clusters, clusters == 1 ? "" : "s");
		printf("cluster size: %u\nrefcount bits: %u\n",
		       img->g.cluster_size, 1u << img->g.refcount_order);
		if (img->h.incompatible_features & QCOW2_INCOMPAT_DIRTY)
			printf("dirty: yes (not closed cleanly)\n");
		if (img->backing[0])
			printf("backing file: %s (format %s)\n", img->backing,
			       img->ext.has_backing_format ?
			       img->ext.backing_format : "probed");
	}
	cret = img_print_chain(&img_format_qcow2, path, json);
	qcow2_image_close(img, false);
	return ret || cret ? EXIT_FAIL : 0;
}

/* info of a qcow (v1) image: its header, allocation and backing chain. */
int info_qcow(const char *path, uint64_t disk_size, bool json)
{
	struct td_check_result res;
	struct qcow_image *img;
	char err[1024], a[32], b[32];
	uint64_t bytes = 0;
	int ret, cret;

	if (qcow_image_open(&img, path, err, sizeof(err))) {
		msg("%s", err);
		return EXIT_FAIL;
	}
	ret = qcow_image_check(path, NULL, NULL, &res, &bytes, err,
			       sizeof(err));
	if (ret)
		msg("%s", err);
	if (json) {
		printf("{\n    \"filename\": ");
		json_str(stdout, path);
		printf(",\n    \"format\": \"qcow\",\n");
		printf("    \"virtual-size\": %" PRIu64 ",\n", img->h.size);
		printf("    \"actual-size\": %" PRIu64 ",\n", disk_size);
		info_in_use(path, true);
		printf("    \"allocated-bytes\": %" PRIu64 ",\n", bytes);
		printf("    \"cluster-size\": %u,\n", img->g.cluster_size);
		if (img->backing[0]) {
			printf("    \"backing-filename\": ");
			json_str(stdout, img->backing);
			printf(",\n");
		}
	} else {
		printf("image: %s\nfile format: qcow\n", path);
		printf("virtual size: %s (%" PRIu64 " bytes)\n",
		       human_size(img->h.size, a, sizeof(a)), img->h.size);
		printf("disk size: %s\n", human_size(disk_size, b, sizeof(b)));
		info_in_use(path, false);
		printf("allocated: %s (%" PRIu64 " bytes)\n",
		       human_size(bytes, a, sizeof(a)), bytes);
		printf("cluster size: %u\n", img->g.cluster_size);
		if (img->backing[0])
			printf("backing file: %s (format probed)\n",
			       img->backing);
	}
	cret = img_print_chain(&img_format_qcow, path, json);
	qcow_image_close(img);
	return ret || cret ? EXIT_FAIL : 0;
}

static int cmd_info(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "json", no_argument, NULL, 'j' },
		{ NULL, 0, NULL, 0 },
	};
	const struct verb *v = &verb_info;
	const struct img_format *f = NULL;
	struct stat st;
	bool json = false;
	int ch, ret;

	while ((ch = verb_getopt(v, argc, argv, "f:", lo, &ret)) != -1) {
		if (ch == 'f' && !(f = parse_format(v, optarg)))
			return EXIT_USAGE;
		if (ch == 'j')
			json = true;
	}
	if (ret >= 0)
		return ret;
	if (argc - optind != 1)
		return usage_error(v, "expected one FILE");
	if (stat(argv[optind], &st) < 0) {
		msg("%s: %s", argv[optind], strerror(errno));
		return EXIT_FAIL;
	}
	if ((ret = probe_format(argv[optind], &f)))
		return ret;
	return f->info(argv[optind], (uint64_t)st.st_blocks * 512, json);
}

const struct verb verb_info = {
	"info", cmd_info, "show an image's format, size and chain",
"Usage: " PROG " info [--json] [-f raw|vhd|qcow2|vmdk] FILE\n"
"\n"
"Show FILE's format (raw or vhd, probed unless -f says), VHD subformat\n"
"(fixed, dynamic, differencing), virtual size, disk size (blocks the file\n"
"uses), the data present in this image (\"allocated\", from the sector\n"
"bitmaps) and in how many blocks, the block size, UUID and creation time;\n"
"for a differencing image its parent's UUID (\"none\" for a raw parent),\n"
"name, timestamp and locators; and the chain from FILE (the leaf) to the\n"
"base image.  For qcow2: compat, cluster size, refcount bits, the\n"
"allocated clusters, the dirty flag, the backing file and its format,\n"
"and the chain (JSON keys: filename, format, compat, virtual-size,\n"
"actual-size, in-use, allocated-bytes, allocated-clusters, cluster-size,\n"
"refcount-bits, dirty-flag, backing-filename, backing-filename-format,\n"
"chain[]).\n"
"\n"
"\"in use\" says who has FILE open, from its image locks (docs/locking.md):\n"
"\"no\", or for example \"read-write by pid 4242 (tapfs)\" or \"read-only by\n"
"pid 77 (qemu-system-x86_64)\"; a holder on another host sharing the file\n"
"system is \"by another process\".  info reads an image in use anyway.\n"
"\n"
"  --json   the same as one JSON object (keys: filename, format,\n"
"           subformat, virtual-size, actual-size, in-use (false or\n"
"           the holder), allocated-bytes,\n"
"           allocated-blocks, block-size, uuid, created, parent-raw,\n"
"           parent-uuid, parent-name, parent-timestamp, parent-locators,\n"
"           chain[] of {filename, format, subformat, virtual-size}).\n"
"  -f FORMAT   read FILE as raw, vhd, qcow2 or vmdk instead of probing.\n"
"\n"
"Exit status: 0 shown, 1 FILE or a parent cannot be opened (what could\n"
"be read is still shown, the chain as broken), 2 usage.\n"
};

int info_vmdk(const char *path, uint64_t disk_size, bool json)
{
	struct vmdk_image *img;
	const char *type;
	char err[1024], hs[32], hd[32];
	uint64_t grains;

	if (vmdk_image_open(&img, path, 0, NULL, NULL, err, sizeof(err))) {
		msg("%s", err);
		return EXIT_FAIL;
	}
	type = img->desc.create_type[0] ? img->desc.create_type :
	       "sparse extent";
	grains = vmdk_image_allocated(img);
	if (json) {
		printf("{\n    \"filename\": ");
		json_str(stdout, path);
		printf(",\n    \"format\": \"vmdk\",\n"
		       "    \"virtual-size\": %" PRIu64 ",\n"
		       "    \"actual-size\": %" PRIu64 ",\n"
		       "    \"create-type\": ", img->capacity * 512,
		       disk_size);
		json_str(stdout, type);
		printf(",\n    \"cid\": %u,\n    \"extents\": %u,\n"
		       "    \"allocated-grains\": %" PRIu64 "\n}\n",
		       img->desc.cid, img->n_extents, grains);
	} else {
		printf("image: %s\nfile format: vmdk\nvirtual size: %s "
		       "(%" PRIu64 " bytes)\ndisk size: %s\n"
		       "create type: %s\nCID: %08x\nextents: %u\n"
		       "allocated grains: %" PRIu64 "\n", path,
		       human_size(img->capacity * 512, hs, sizeof(hs)),
		       img->capacity * 512,
		       human_size(disk_size, hd, sizeof(hd)), type,
		       img->desc.cid, img->n_extents, grains);
		if (img->desc.parent_hint[0])
			printf("parent: %s\n", img->desc.parent_hint);
	}
	vmdk_image_close(img);
	return 0;
}
