/* SPDX-License-Identifier: MIT */
/*
 * Which image files the daemon may open: the store, and the directories
 * given with -o allow_path.  A path is judged by where it really leads
 * (every symbolic link and ".." followed, as open(2) would), so a link in
 * the store, a "../" or a parent locator in a crafted image cannot reach
 * a file elsewhere.
 *
 * The engine asks (struct td_engine's path_policy) before it opens any
 * image of a chain, leaf or parent; fs/tree.c installs path_policy_check
 * there.  The engine then opens the canonical path following no link
 * (openat2 RESOLVE_NO_SYMLINKS), so a link swapped in after the check
 * is refused, and the driver works on that file.  Pure apart from
 * lstat/readlink: unit-tested without a mount.
 */
#ifndef TAPFS_PATH_POLICY_H
#define TAPFS_PATH_POLICY_H

#include <stdbool.h>
#include <stddef.h>

struct path_policy {
	char		**dirs;		/* canonical; dirs[0] is the store */
	unsigned	  ndirs;
	/*
	 * The mount point (canonical), never entered while resolving: a
	 * lookup in our own mount from the loop thread would deadlock.
	 * NULL: no mount to avoid.
	 */
	char		 *mount;
};

void path_policy_init(struct path_policy *pp);
void path_policy_fini(struct path_policy *pp);

/*
 * Allow dir and everything below it (or, if it names a file, that file).
 * dir must be absolute; it is resolved now if it exists, else kept as
 * written (normalised) so that a directory mounted later still counts.
 * The first one added is the store.  Returns 0, or -errno and err.
 */
int path_policy_allow(struct path_policy *pp, const char *dir, char *err,
		      size_t errlen);

/* Set the mount point never to enter (copied); 0 or -ENOMEM. */
int path_policy_set_mount(struct path_policy *pp, const char *mount);

/*
 * Resolve path as open(2) would (absolute path, symbolic links, "." and
 * ".."), into out.  Never looks up anything at or below mount (if not
 * NULL): -EXDEV then.  Returns 0, or -EINVAL (relative), -ENOENT,
 * -ENOTDIR, -ELOOP, -ENAMETOOLONG, -EACCES... as the kernel would.
 */
int path_resolve(const char *path, const char *mount, char *out,
		 size_t outlen);

/* Is the canonical path p dir itself or below it?  ("/a/bc" is not
 * below "/a/b".) */
bool path_is_below(const char *p, const char *dir);

/*
 * May an image at path be opened?  Returns 0 and the canonical path to
 * open (*real, malloc'd, the caller frees), or -errno with a one-line
 * reason naming path in err: -EACCES outside every allowed directory,
 * -EINVAL inside the mount, or what resolving it met (-ENOENT...).
 * Matches td_path_policy_t with pp as arg.
 */
int path_policy_check(void *pp, const char *path, char **real, char *err,
		      size_t errlen);

#endif
