/* SPDX-License-Identifier: MIT */
/*
 * The .ctl command language: parsing only (bytes in, struct or error out),
 * so it can be unit-tested and fuzzed.  fs/control.c turns a parsed command
 * into engine calls.
 */
#ifndef TAPFS_CTL_H
#define TAPFS_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CTL_NAME_MAX	255
#define CTL_PATH_MAX	4096
#define CTL_LINE_MAX	(CTL_PATH_MAX + 512)

enum ctl_verb {
	CTL_CREATE,	/* create NAME [FORMAT] SIZE */
	CTL_OPEN,	/* open NAME FORMAT:PATH [ro|rw|standby] [steal] */
	CTL_CLOSE,	/* close NAME */
	CTL_PAUSE,	/* pause [NAME] */
	CTL_RESUME,	/* resume [NAME] */
	CTL_FLUSH,	/* flush [NAME] */
	CTL_SNAPSHOT,	/* snapshot [NAME] */
	CTL_FAULT,	/* fault NAME SETTINGS (in path) */
	CTL_RESET_STATS, /* reset-stats [NAME] */
	CTL_RELEASE,	/* release NAME: hand the image over */
};

/* The format of "create NAME SIZE". */
#define CTL_DEFAULT_FORMAT	"vhd"

struct ctl_command {
	enum ctl_verb	verb;
	char		name[CTL_NAME_MAX + 1];	/* "" = every VBD */
	char		format[32];
	char		path[CTL_PATH_MAX];
	uint64_t	size;
	bool		readonly;
	bool		standby;	/* open: wait to take the image over */
	bool		steal;		/* open: break a dead holder's lock */
};

/*
 * Parse one command (a trailing newline and surrounding blanks are
 * ignored).  Returns 0, or -EINVAL with a one-line reason in err.
 */
int ctl_parse(const char *buf, size_t len, struct ctl_command *cmd,
	      char *err, size_t errlen);

/* 0 if name may name a group or VBD, else -EINVAL and the reason. */
int ctl_check_name(const char *name, char *err, size_t errlen);

const char *ctl_verb_name(enum ctl_verb verb);

#endif
