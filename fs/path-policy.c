/* SPDX-License-Identifier: MIT */
/*
 * The image path policy: resolve a path the way open(2) will, without
 * entering our own mount, and allow it only inside the store or an
 * -o allow_path directory.  See path-policy.h.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <tapfs/log.h>

#include "path-policy.h"

/* Symbolic links followed in one resolution, as Linux's MAXSYMLINKS. */
#define PATH_MAX_LINKS	40

void path_policy_init(struct path_policy *pp)
{
	pp->dirs = NULL;
	pp->ndirs = 0;
	pp->mount = NULL;
}

void path_policy_fini(struct path_policy *pp)
{
	unsigned i;

	for (i = 0; i < pp->ndirs; i++)
		free(pp->dirs[i]);
	free(pp->dirs);
	free(pp->mount);
	path_policy_init(pp);
}

bool path_is_below(const char *p, const char *dir)
{
	size_t len = strlen(dir);

	while (len > 1 && dir[len - 1] == '/')
		len--;
	if (len == 1 && dir[0] == '/')
		return p[0] == '/';
	return !strncmp(p, dir, len) && (p[len] == '/' || p[len] == '\0');
}

/* The next component of *p (skipping slashes); its length, 0 at the end. */
static size_t path_next(const char **p, const char **comp)
{
	const char *s = *p;

	while (*s == '/')
		s++;
	*comp = s;
	while (*s && *s != '/')
		s++;
	*p = s;
	return (size_t)(s - *comp);
}

/* Drop the last component of the canonical prefix out[0..*len). */
static void path_pop(char *out, size_t *len)
{
	while (*len && out[*len - 1] != '/')
		(*len)--;
	if (*len)
		(*len)--;
	out[*len] = '\0';
}

/*
 * Lexical normalisation only ("." "..", repeated slashes): for allowed
 * directories that do not exist (yet).
 */
static int path_normalise(const char *in, char *out, size_t outlen)
{
	const char *p = in, *c;
	size_t n, len = 0;

	if (in[0] != '/')
		return -EINVAL;
	out[0] = '\0';
	while ((n = path_next(&p, &c))) {
		if (n == 1 && c[0] == '.')
			continue;
		if (n == 2 && c[0] == '.' && c[1] == '.') {
			path_pop(out, &len);
			continue;
		}
		if (len + 1 + n + 1 > outlen)
			return -ENAMETOOLONG;
		out[len++] = '/';
		memcpy(out + len, c, n);
		len += n;
		out[len] = '\0';
	}
	if (!len)
		snprintf(out, outlen, "/");
	return 0;
}

int path_resolve(const char *path, const char *mount, char *out,
		 size_t outlen)
{
	char rest[PATH_MAX], next[PATH_MAX], link[PATH_MAX];
	const char *p, *c;
	unsigned links = 0;
	size_t n, len = 0;

	if (path[0] != '/' || outlen < 2)
		return -EINVAL;
	if (strlen(path) >= sizeof(rest))
		return -ENAMETOOLONG;
	strcpy(rest, path);
	p = rest;
	out[0] = '\0';
	while ((n = path_next(&p, &c))) {
		struct stat st;
		ssize_t l;

		if (n == 1 && c[0] == '.')
			continue;
		if (n == 2 && c[0] == '.' && c[1] == '.') {
			/* out is canonical: its parent is lexical. */
			path_pop(out, &len);
			continue;
		}
		if (len + 1 + n + 1 > outlen)
			return -ENAMETOOLONG;
		out[len] = '/';
		memcpy(out + len + 1, c, n);
		out[len + 1 + n] = '\0';
		if (mount && path_is_below(out, mount))
			return -EXDEV;
		if (lstat(out, &st) < 0)
			return -errno;
		if (!S_ISLNK(st.st_mode)) {
			len += 1 + n;
			/* "file/..", "file/": the kernel says ENOTDIR. */
			if (*p && !S_ISDIR(st.st_mode))
				return -ENOTDIR;
			continue;
		}
		if (++links > PATH_MAX_LINKS)
			return -ELOOP;
		l = readlink(out, link, sizeof(link) - 1);
		if (l < 0)
			return -errno;
		link[l] = '\0';
		/* The link's target, then what was left after the link. */
		if ((size_t)snprintf(next, sizeof(next), "%s%s", link, p) >=
		    sizeof(next))
			return -ENAMETOOLONG;
		strcpy(rest, next);
		p = rest;
		if (link[0] == '/')
			len = 0;
		out[len] = '\0';
	}
	if (!len)
		snprintf(out, outlen, "/");
	return 0;
}

int path_policy_set_mount(struct path_policy *pp, const char *mount)
{
	char *m = strdup(mount);

	if (!m)
		return -ENOMEM;
	free(pp->mount);
	pp->mount = m;
	return 0;
}

int path_policy_allow(struct path_policy *pp, const char *dir, char *err,
		      size_t errlen)
{
	char canon[PATH_MAX];
	char **dirs;
	int rc;

	if (dir[0] != '/') {
		snprintf(err, errlen, "allow_path %s: not an absolute path",
			 dir);
		return -EINVAL;
	}
	rc = path_resolve(dir, pp->mount, canon, sizeof(canon));
	if (rc == -ENOENT) {
		rc = path_normalise(dir, canon, sizeof(canon));
		if (!rc)
			td_log(TD_LOG_WARN, "allow_path %s does not exist "
			       "(yet): allowing it as written", dir);
	}
	if (rc == -EXDEV) {
		snprintf(err, errlen, "allow_path %s lies inside the mount "
			 "point %s", dir, pp->mount);
		return -EINVAL;
	}
	if (rc) {
		snprintf(err, errlen, "allow_path %s: %s", dir, strerror(-rc));
		return rc;
	}
	if (pp->mount && path_is_below(canon, pp->mount)) {
		snprintf(err, errlen, "allow_path %s lies inside the mount "
			 "point %s", dir, pp->mount);
		return -EINVAL;
	}
	dirs = realloc(pp->dirs, (pp->ndirs + 1) * sizeof(*dirs));
	if (!dirs)
		goto nomem;
	pp->dirs = dirs;
	pp->dirs[pp->ndirs] = strdup(canon);
	if (!pp->dirs[pp->ndirs])
		goto nomem;
	pp->ndirs++;
	return 0;
nomem:
	snprintf(err, errlen, "out of memory");
	return -ENOMEM;
}

/* "store /s" or "store /s, allow_path /a:/b", cut to fit. */
static void path_policy_describe(const struct path_policy *pp, char *buf,
				 size_t len)
{
	size_t used;
	unsigned i;

	if (!pp->ndirs) {
		snprintf(buf, len, "none");
		return;
	}
	used = (size_t)snprintf(buf, len, "store %s", pp->dirs[0]);
	for (i = 1; i < pp->ndirs && used < len; i++)
		used += (size_t)snprintf(buf + used, len - used, "%s%s",
					 i == 1 ? ", allow_path " : ":",
					 pp->dirs[i]);
}

int path_policy_check(void *arg, const char *path, char **real, char *err,
		      size_t errlen)
{
	const struct path_policy *pp = arg;
	char canon[PATH_MAX], really[PATH_MAX + 16], dirs[256];
	unsigned i;
	int rc;

	*real = NULL;
	if (path[0] != '/') {
		snprintf(err, errlen, "path '%s' is not absolute", path);
		return -EINVAL;
	}
	rc = path_resolve(path, pp->mount, canon, sizeof(canon));
	if (rc == -EXDEV) {
		snprintf(err, errlen, "%s lies inside this tapfs mount %s",
			 path, pp->mount);
		return -EINVAL;
	}
	if (rc) {
		snprintf(err, errlen, "%s: %s", path, strerror(-rc));
		return rc;
	}
	for (i = 0; i < pp->ndirs; i++) {
		if (path_is_below(canon, pp->dirs[i])) {
			*real = strdup(canon);
			return *real ? 0 : -ENOMEM;
		}
	}
	really[0] = '\0';
	if (strcmp(canon, path))
		snprintf(really, sizeof(really), " (really %s)", canon);
	path_policy_describe(pp, dirs, sizeof(dirs));
	snprintf(err, errlen, "%s%s is outside the allowed directories (%s; "
		 "see -o allow_path)", path, really, dirs);
	return -EACCES;
}
