/* SPDX-License-Identifier: MIT */
/* tapfs-img: the verb table and the command line (see tapfs-img.h). */
#include <string.h>

#include "tapfs-img.h"

static const struct verb *const verbs[] = {
	&verb_create, &verb_info, &verb_check, &verb_snapshot,
	&verb_coalesce, &verb_convert, NULL,
};

static const struct verb *verb_find(const char *name)
{
	const struct verb *const *v;

	for (v = verbs; *v; v++)
		if (!strcmp((*v)->name, name))
			return *v;
	return NULL;
}

static void usage(FILE *f)
{
	const struct verb *const *v;

	fprintf(f,
"Usage: " PROG " VERB [OPTIONS] ARGS...\n"
"       " PROG " VERB --help\n"
"\n"
"Create, inspect, check, snapshot, coalesce and convert tapfs disk images\n"
"(raw files, VHD: fixed, dynamic and differencing, qcow2, qcow version 1\n"
"and VMware VMDK).  VHD images are the format QEMU calls \"vpc\"; QEMU\n"
"reads each VHD on its own (it does not follow differencing parents).\n"
"Image data is read and written through the same drivers as the tapfs\n"
"daemon's.\n"
"\n"
"Verbs:\n");
	for (v = verbs; *v; v++)
		fprintf(f, "  %-10s %s\n", (*v)->name, (*v)->summary);
	fprintf(f,
"\n"
"Exit status: 0 success, 1 failure (check: problems found), 2 usage.\n");
}

int main(int argc, char **argv)
{
	const struct verb *v;
	int ret;

	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "help")) {
		if (argc < 3) {
			usage(stdout);
			return 0;
		}
		v = verb_find(argv[2]);
		if (!v) {
			msg("unknown verb '%s'", argv[2]);
			return EXIT_USAGE;
		}
		fputs(v->usage, stdout);
		return 0;
	}
	v = verb_find(argv[1]);
	if (!v) {
		msg("unknown verb '%s'; try '" PROG " --help'", argv[1]);
		return EXIT_USAGE;
	}
	optind = 1;
	opterr = 0;
	ret = v->run(argc - 1, argv + 1);
	img_unlock_all();
	img_engine_stop();
	return ret;
}
