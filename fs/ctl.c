/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <tapfs/tapdisk.h>

#include "ctl.h"

#define CTL_MAX_WORDS	8

static const struct {
	const char	*word;
	enum ctl_verb	 verb;
	unsigned	 min_args, max_args;
	const char	*usage;
} ctl_verbs[] = {
	{ "create", CTL_CREATE, 2, 3, "create NAME [FORMAT] SIZE" },
	{ "open",   CTL_OPEN,   2, 4, "open NAME FORMAT:PATH "
				      "[ro|rw|standby] [steal]" },
	{ "close",  CTL_CLOSE,  1, 1, "close NAME" },
	{ "pause",  CTL_PAUSE,  0, 1, "pause [NAME]" },
	{ "resume", CTL_RESUME, 0, 1, "resume [NAME]" },
	{ "flush",  CTL_FLUSH,  0, 1, "flush [NAME]" },
	{ "snapshot", CTL_SNAPSHOT, 0, 1, "snapshot [NAME]" },
	{ "fault",  CTL_FAULT,  2, 2, "fault NAME SETTINGS" },
	{ "reset-stats", CTL_RESET_STATS, 0, 1, "reset-stats [NAME]" },
	{ "release", CTL_RELEASE, 1, 1, "release NAME" },
};

#define CTL_NVERBS	(sizeof(ctl_verbs) / sizeof(ctl_verbs[0]))

const char *ctl_verb_name(enum ctl_verb verb)
{
	size_t i;

	for (i = 0; i < CTL_NVERBS; i++)
		if (ctl_verbs[i].verb == verb)
			return ctl_verbs[i].word;
	return "?";
}

int ctl_check_name(const char *name, char *err, size_t errlen)
{
	const unsigned char *p;
	size_t len = strlen(name);

	if (!len) {
		snprintf(err, errlen, "empty name");
		return -EINVAL;
	}
	if (len > CTL_NAME_MAX) {
		snprintf(err, errlen, "name longer than %d bytes",
			 CTL_NAME_MAX);
		return -EINVAL;
	}
	if (name[0] == '.') {
		snprintf(err, errlen, "name '%s' starts with '.'", name);
		return -EINVAL;
	}
	for (p = (const unsigned char *)name; *p; p++) {
		if (*p == '/') {
			snprintf(err, errlen, "name '%s' contains '/'", name);
			return -EINVAL;
		}
		if (*p < 0x20 || *p == 0x7f) {
			snprintf(err, errlen, "name contains control "
				 "character 0x%02x", *p);
			return -EINVAL;
		}
	}
	return 0;
}

static bool ctl_blank(char c)
{
	return c == ' ' || c == '\t';
}

/* Split line (modified in place) into blank-separated words. */
static int ctl_split(char *line, char **words, unsigned *nwords)
{
	unsigned n = 0;
	char *p = line;

	for (;;) {
		while (ctl_blank(*p))
			p++;
		if (!*p)
			break;
		if (n == CTL_MAX_WORDS)
			return -E2BIG;
		words[n++] = p;
		while (*p && !ctl_blank(*p))
			p++;
		if (*p)
			*p++ = '\0';
	}
	*nwords = n;
	return 0;
}

static int ctl_copy(char *dst, size_t dstlen, const char *src,
		    const char *what, char *err, size_t errlen)
{
	if (strlen(src) >= dstlen) {
		snprintf(err, errlen, "%s too long", what);
		return -EINVAL;
	}
	strcpy(dst, src);
	return 0;
}

static int ctl_parse_words(char **w, unsigned n, struct ctl_command *cmd,
			   char *err, size_t errlen)
{
	size_t v;
	int rc;

	for (v = 0; v < CTL_NVERBS; v++)
		if (!strcmp(w[0], ctl_verbs[v].word))
			break;
	if (v == CTL_NVERBS) {
		snprintf(err, errlen, "unknown command '%.64s' (commands: "
			 "create open close pause resume flush snapshot fault)", w[0]);
		return -EINVAL;
	}
	if (n - 1 < ctl_verbs[v].min_args || n - 1 > ctl_verbs[v].max_args) {
		snprintf(err, errlen, "usage: %s", ctl_verbs[v].usage);
		return -EINVAL;
	}
	cmd->verb = ctl_verbs[v].verb;
	if (n > 1) {
		rc = ctl_check_name(w[1], err, errlen);
		if (rc)
			return rc;
		strcpy(cmd->name, w[1]);
	}
	switch (cmd->verb) {
	case CTL_CREATE: {
		const char *size = n == 4 ? w[3] : w[2];

		rc = ctl_copy(cmd->format, sizeof(cmd->format),
			      n == 4 ? w[2] : CTL_DEFAULT_FORMAT, "format",
			      err, errlen);
		if (rc)
			return rc;
		rc = td_parse_size(size, &cmd->size);
		if (rc || !cmd->size || cmd->size % TD_SECTOR_SIZE) {
			snprintf(err, errlen, "bad size '%.64s': give bytes "
				 "or K/M/G/T, a non-zero multiple of %u",
				 size, TD_SECTOR_SIZE);
			return -EINVAL;
		}
		return 0;
	}
	case CTL_OPEN: {
		const char *colon = strchr(w[2], ':');

		if (!colon || colon == w[2] || !colon[1]) {
			snprintf(err, errlen, "'%.64s' is not FORMAT:PATH",
				 w[2]);
			return -EINVAL;
		}
		if ((size_t)(colon - w[2]) >= sizeof(cmd->format)) {
			snprintf(err, errlen, "format too long");
			return -EINVAL;
		}
		memcpy(cmd->format, w[2], (size_t)(colon - w[2]));
		cmd->format[colon - w[2]] = '\0';
		rc = ctl_copy(cmd->path, sizeof(cmd->path), colon + 1,
			      "path", err, errlen);
		if (rc)
			return rc;
		for (unsigned i = 3; i < n; i++) {
			if (!strcmp(w[i], "steal") && !cmd->steal) {
				cmd->steal = true;
			} else if (i == 3 && (!strcmp(w[i], "ro") ||
					      !strcmp(w[i], "rw") ||
					      !strcmp(w[i], "standby"))) {
				cmd->readonly = !strcmp(w[i], "ro");
				cmd->standby = !strcmp(w[i], "standby");
			} else {
				snprintf(err, errlen, "unknown open mode "
					 "'%.16s' (ro, rw or standby), or "
					 "steal", w[i]);
				return -EINVAL;
			}
		}
		if (cmd->steal && (cmd->readonly || cmd->standby)) {
			snprintf(err, errlen, "steal takes a writer's lock: "
				 "not with %s", cmd->readonly ? "ro" :
				 "standby");
			return -EINVAL;
		}
		return 0;
	}
	case CTL_FAULT:
		return ctl_copy(cmd->path, sizeof(cmd->path), w[2],
				"settings", err, errlen);
	default:
		return 0;
	}
}

int ctl_parse(const char *buf, size_t len, struct ctl_command *cmd,
	      char *err, size_t errlen)
{
	char line[CTL_LINE_MAX + 1];
	char *words[CTL_MAX_WORDS];
	unsigned n;
	size_t i;

	memset(cmd, 0, sizeof(*cmd));
	while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
		len--;
	if (len > CTL_LINE_MAX) {
		snprintf(err, errlen, "command longer than %d bytes",
			 CTL_LINE_MAX);
		return -EINVAL;
	}
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)buf[i];

		if (c == '\n') {
			snprintf(err, errlen, "one command per write");
			return -EINVAL;
		}
		if ((c < 0x20 && c != '\t') || c == 0x7f) {
			snprintf(err, errlen, "command contains control "
				 "character 0x%02x", c);
			return -EINVAL;
		}
	}
	memcpy(line, buf, len);
	line[len] = '\0';
	if (ctl_split(line, words, &n)) {
		snprintf(err, errlen, "too many words");
		return -EINVAL;
	}
	if (!n) {
		snprintf(err, errlen, "empty command");
		return -EINVAL;
	}
	return ctl_parse_words(words, n, cmd, err, errlen);
}
