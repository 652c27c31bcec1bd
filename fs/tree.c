/* SPDX-License-Identifier: MIT */
/*
 * The namespace model and the store.
 *
 * Store layout:  STORE/manifest      groups and VBDs, one per line
 *                STORE/GROUP/NAME.raw images made by "create"
 *                STORE/.lock         flock'd by the running daemon
 *
 * The manifest is rewritten whole on every change (temp file, fsync,
 * rename, fsync of the directory) so a crash leaves the old or the new
 * one, never a mix.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <tapfs/log.h>

#include "tapfs.h"
#include "workers.h"

#define MANIFEST	"manifest"
#define MANIFEST_TMP	"manifest.tmp"
#define MANIFEST_HEADER	"# tapfs manifest v1 - rewritten by tapfs; " \
			"edit only while unmounted\n"
#define LOCKFILE	".lock"

/* ---- nodes --------------------------------------------------------- */

static struct tapfs_node *tapfs_node_new(struct tapfs *fs,
					 enum tapfs_kind kind, void *obj)
{
	struct tapfs_node *n;

	if (fs->nnodes >= fs->nodes_cap) {
		uint64_t cap = fs->nnodes * 2 + 64;
		struct tapfs_node **nodes = realloc(fs->nodes,
						    cap * sizeof(*nodes));
		if (!nodes)
			return NULL;
		memset(nodes + fs->nodes_cap, 0,
		       (cap - fs->nodes_cap) * sizeof(*nodes));
		fs->nodes = nodes;
		fs->nodes_cap = cap;
	}
	n = calloc(1, sizeof(*n));
	if (!n)
		return NULL;
	n->kind = kind;
	n->obj = obj;
	n->ino = fs->nnodes++;
	n->ctime = time(NULL);
	fs->nodes[n->ino] = n;
	return n;
}

struct tapfs_node *tapfs_node_get(struct tapfs *fs, uint64_t ino)
{
	if (ino >= fs->nnodes)
		return NULL;
	return fs->nodes[ino];
}

static void tapfs_node_free(struct tapfs *fs, struct tapfs_node *n)
{
	fs->nodes[n->ino] = NULL;
	free(n);
}

/* A node leaves the tree; it is freed once the kernel forgets it. */
static void tapfs_node_kill(struct tapfs *fs, struct tapfs_node *n)
{
	n->dead = true;
	n->obj = NULL;
	if (!n->nlookup)
		tapfs_node_free(fs, n);
}

void tapfs_node_forget(struct tapfs *fs, struct tapfs_node *n, uint64_t nl)
{
	n->nlookup = nl > n->nlookup ? 0 : n->nlookup - nl;
	if (n->dead && !n->nlookup)
		tapfs_node_free(fs, n);
}

/* ---- paths --------------------------------------------------------- */

/*
 * Normalise an absolute path without touching the file system ("." and
 * ".." and repeated slashes): stat'ing a path inside our own mount from
 * the loop thread would deadlock.
 */
static int tapfs_path_normalise(const char *in, char *out, size_t outlen)
{
	size_t o = 0;
	const char *p = in;

	if (in[0] != '/' || outlen < 2)
		return -EINVAL;
	while (*p) {
		const char *s;
		size_t n;

		while (*p == '/')
			p++;
		s = p;
		while (*p && *p != '/')
			p++;
		n = (size_t)(p - s);
		if (!n || (n == 1 && s[0] == '.'))
			continue;
		if (n == 2 && s[0] == '.' && s[1] == '.') {
			while (o && out[o - 1] != '/')
				o--;
			if (o)
				o--;
			continue;
		}
		if (o + 1 + n + 1 > outlen)
			return -ENAMETOOLONG;
		out[o++] = '/';
		memcpy(out + o, s, n);
		o += n;
	}
	if (!o)
		out[o++] = '/';
	out[o] = '\0';
	return 0;
}

bool tapfs_path_outside_mount(const struct tapfs *fs, const char *path)
{
	char norm[PATH_MAX];
	size_t mlen = strlen(fs->mountpoint);

	if (tapfs_path_normalise(path, norm, sizeof(norm)))
		return false;
	if (!strcmp(fs->mountpoint, "/"))
		return false;
	return strncmp(norm, fs->mountpoint, mlen) ||
	       (norm[mlen] != '/' && norm[mlen] != '\0');
}

/* ---- groups and VBDs ----------------------------------------------- */

struct tapfs_group *tapfs_group_find(struct tapfs *fs, const char *name)
{
	struct td_list *pos;

	for (pos = fs->groups.next; pos != &fs->groups; pos = pos->next) {
		struct tapfs_group *g = td_container_of(pos,
						struct tapfs_group, link);
		if (!strcmp(g->name, name))
			return g;
	}
	return NULL;
}

unsigned tapfs_group_count(const struct tapfs *fs)
{
	const struct td_list *pos;
	unsigned n = 0;

	for (pos = fs->groups.next; pos != &fs->groups; pos = pos->next)
		n++;
	return n;
}

int tapfs_group_add(struct tapfs *fs, const char *name,
		    struct tapfs_group **out, char *err, size_t errlen)
{
	struct tapfs_group *g;
	char dir[PATH_MAX];
	int rc;

	rc = ctl_check_name(name, err, errlen);
	if (rc)
		return rc;
	if (tapfs_group_find(fs, name)) {
		snprintf(err, errlen, "group '%s' exists", name);
		return -EEXIST;
	}
	if ((size_t)snprintf(dir, sizeof(dir), "%s/%s", fs->store, name) >=
	    sizeof(dir)) {
		snprintf(err, errlen, "store path too long");
		return -ENAMETOOLONG;
	}
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", dir, strerror(errno));
		return rc;
	}
	g = calloc(1, sizeof(*g));
	if (!g)
		return -ENOMEM;
	strcpy(g->name, name);
	td_list_init(&g->vbds);
	snprintf(g->status, sizeof(g->status), "ok");
	g->node = tapfs_node_new(fs, TAPFS_GROUP, g);
	g->ctl = g->node ? tapfs_node_new(fs, TAPFS_CTL, g) : NULL;
	g->stats = g->ctl ? tapfs_node_new(fs, TAPFS_STATS, g) : NULL;
	if (!g->stats) {
		if (g->node)
			tapfs_node_kill(fs, g->node);
		if (g->ctl)
			tapfs_node_kill(fs, g->ctl);
		free(g);
		return -ENOMEM;
	}
	td_list_add_tail(&g->link, &fs->groups);
	if (out)
		*out = g;
	return 0;
}

int tapfs_group_remove(struct tapfs *fs, struct tapfs_group *g,
		       char *err, size_t errlen)
{
	char dir[PATH_MAX];

	if (!td_list_empty(&g->vbds)) {
		snprintf(err, errlen, "group '%s' still has VBDs", g->name);
		return -ENOTEMPTY;
	}
	if (g->busy) {
		snprintf(err, errlen, "group '%s' is in use (.ctl or .stats "
			 "open, or a command running)",
			 g->name);
		return -EBUSY;
	}
	/* Images of closed VBDs stay: the directory goes only if empty. */
	snprintf(dir, sizeof(dir), "%s/%s", fs->store, g->name);
	if (rmdir(dir) < 0 && errno != ENOENT && errno != ENOTEMPTY &&
	    errno != EEXIST)
		td_log(TD_LOG_WARN, "%s: %m", dir);
	td_list_del(&g->link);
	tapfs_node_kill(fs, g->node);
	tapfs_node_kill(fs, g->ctl);
	tapfs_node_kill(fs, g->stats);
	free(g);
	return 0;
}

struct tapfs_vbd *tapfs_vbd_find(struct tapfs_group *g, const char *name)
{
	struct td_list *pos;

	for (pos = g->vbds.next; pos != &g->vbds; pos = pos->next) {
		struct tapfs_vbd *tv = td_container_of(pos, struct tapfs_vbd,
						       link);
		if (!strcmp(tv->name, name))
			return tv;
	}
	return NULL;
}

unsigned tapfs_vbds_per_loop(const struct tapfs *fs, unsigned *owned)
{
	const struct td_list *gp, *vp;
	unsigned total = 0;

	for (gp = fs->groups.next; gp != &fs->groups; gp = gp->next) {
		const struct tapfs_group *g = td_container_of(gp,
						struct tapfs_group, link);

		for (vp = g->vbds.next; vp != &g->vbds; vp = vp->next) {
			const struct tapfs_vbd *tv = td_container_of(vp,
						struct tapfs_vbd, link);
			if (tv->vbd) {
				owned[tv->owner]++;
				total++;
			}
		}
	}
	return total;
}

int tapfs_vbd_add(struct tapfs *fs, struct tapfs_group *g, const char *name,
		  const char *format, const char *spec, bool readonly,
		  td_flag_t flags, bool persistent, struct tapfs_vbd **out,
		  char *err, size_t errlen)
{
	struct tapfs_vbd *tv;
	int rc;

	rc = ctl_check_name(name, err, errlen);
	if (rc)
		return rc;
	if (tapfs_vbd_find(g, name)) {
		snprintf(err, errlen, "VBD '%s' exists in group '%s'", name,
			 g->name);
		return -EEXIST;
	}
	tv = calloc(1, sizeof(*tv));
	if (!tv)
		return -ENOMEM;
	if (strlen(format) >= sizeof(tv->format) ||
	    strlen(spec) >= sizeof(tv->spec)) {
		free(tv);
		snprintf(err, errlen, "image path too long");
		return -ENAMETOOLONG;
	}
	strcpy(tv->name, name);
	strcpy(tv->format, format);
	strcpy(tv->spec, spec);
	tv->group = g;
	tv->readonly = readonly;
	tv->standby = !!(flags & TD_OPEN_STANDBY);
	tv->persistent = persistent;
	if (readonly)
		flags |= TD_OPEN_RDONLY;
	rc = vbd_open(workers_pick(fs, &tv->owner), spec, flags,
		      &fs->opts.params, &tv->vbd, err, errlen);
	if (rc) {
		free(tv);
		return rc;
	}
	{
		char who[TD_VBD_NAME_MAX];

		snprintf(who, sizeof(who), "%s/%s", g->name, name);
		vbd_set_name(tv->vbd, who);
	}
	tv->node = tapfs_node_new(fs, TAPFS_VBD, tv);
	if (!tv->node) {
		vbd_close(tv->vbd);
		free(tv);
		return -ENOMEM;
	}
	td_list_add_tail(&tv->link, &g->vbds);
	if (out)
		*out = tv;
	return 0;
}

/* Keep a VBD that failed to open at mount, so its manifest line stays. */
static int tapfs_vbd_add_broken(struct tapfs *fs, struct tapfs_group *g,
				const char *name, const char *format,
				const char *spec, bool readonly,
				bool standby, const char *why)
{
	struct tapfs_vbd *tv = calloc(1, sizeof(*tv));

	(void)fs;
	if (!tv)
		return -ENOMEM;
	snprintf(tv->name, sizeof(tv->name), "%s", name);
	snprintf(tv->format, sizeof(tv->format), "%s", format);
	snprintf(tv->spec, sizeof(tv->spec), "%s", spec);
	td_msgf(tv->error, sizeof(tv->error), "%s", why);
	tv->group = g;
	tv->readonly = readonly;
	tv->standby = standby;
	tv->persistent = true;
	td_list_add_tail(&tv->link, &g->vbds);
	return 0;
}

int tapfs_vbd_remove(struct tapfs *fs, struct tapfs_vbd *tv)
{
	int rc = 0;

	if (tv->open_count)
		return -EBUSY;
	if (tv->vbd) {
		rc = vbd_close(tv->vbd);
		if (rc == -EBUSY)
			return rc;
		if (rc)
			td_log(TD_LOG_ERR, "%s/%s: close: %s", tv->group->name,
			       tv->name, strerror(-rc));
	}
	td_list_del(&tv->link);
	if (tv->node)
		tapfs_node_kill(fs, tv->node);
	free(tv);
	return rc;
}

int tapfs_close_all(struct tapfs *fs)
{
	struct td_list *gp, *vp, *vn;
	int rc = 0, r;

	for (gp = fs->groups.next; gp != &fs->groups; gp = gp->next) {
		struct tapfs_group *g = td_container_of(gp, struct tapfs_group,
							link);
		for (vp = g->vbds.next; vp != &g->vbds; vp = vn) {
			struct tapfs_vbd *tv = td_container_of(vp,
						struct tapfs_vbd, link);
			vn = vp->next;
			if (!tv->vbd)
				continue;
			r = vbd_close(tv->vbd);
			tv->vbd = NULL;
			snprintf(tv->error, sizeof(tv->error), "closed");
			if (r && !rc)
				rc = r;
		}
	}
	return rc;
}

/* ---- manifest ------------------------------------------------------- */

/* Names and paths are written %XX-escaped: blanks, '%', controls. */
static void manifest_put(FILE *f, const char *s)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c <= 0x20 || c == '%' || c == 0x7f)
			fprintf(f, "%%%02X", c);
		else
			fputc(c, f);
	}
}

static int manifest_unescape(char *s)
{
	char *o = s;

	for (; *s; s++) {
		if (*s == '%') {
			unsigned v;

			if (sscanf(s + 1, "%2x", &v) != 1 || !s[1] || !s[2])
				return -EINVAL;
			*o++ = (char)v;
			s += 2;
		} else {
			*o++ = *s;
		}
	}
	*o = '\0';
	return 0;
}

int tapfs_store_save(struct tapfs *fs, char *err, size_t errlen)
{
	char tmp[PATH_MAX], path[PATH_MAX];
	struct td_list *gp, *vp;
	FILE *f;
	int fd, rc = 0;

	snprintf(tmp, sizeof(tmp), "%s/" MANIFEST_TMP, fs->store);
	snprintf(path, sizeof(path), "%s/" MANIFEST, fs->store);
	f = fopen(tmp, "we");
	if (!f)
		goto fail_errno;
	fputs(MANIFEST_HEADER, f);
	for (gp = fs->groups.next; gp != &fs->groups; gp = gp->next) {
		struct tapfs_group *g = td_container_of(gp, struct tapfs_group,
							link);
		fputs("group ", f);
		manifest_put(f, g->name);
		fputc('\n', f);
		for (vp = g->vbds.next; vp != &g->vbds; vp = vp->next) {
			struct tapfs_vbd *tv = td_container_of(vp,
						struct tapfs_vbd, link);
			if (!tv->persistent)
				continue;
			fputs("vbd ", f);
			manifest_put(f, g->name);
			fputc(' ', f);
			manifest_put(f, tv->name);
			/*
			 * One that does not write (standby, released) comes
			 * back in standby: it takes the image over only when
			 * told, or at its first write.
			 */
			fprintf(f, " %s %s ", tv->format,
				tv->readonly ? "ro" : (tv->vbd ?
				vbd_hold(tv->vbd) != VBD_HOLD_ACTIVE :
				tv->standby) ? "standby" : "rw");
			manifest_put(f, tv->spec);
			fputc('\n', f);
		}
	}
	if (fflush(f) || fsync(fileno(f)) < 0) {
		rc = -errno;
		fclose(f);
		unlink(tmp);
		snprintf(err, errlen, "%s: %s", tmp, strerror(-rc));
		return rc;
	}
	if (fclose(f))
		goto fail_errno;
	if (rename(tmp, path) < 0)
		goto fail_errno;
	fd = open(fs->store, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
	return 0;
fail_errno:
	rc = -errno;
	snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
	td_log(TD_LOG_ERR, "cannot write manifest %s", err);
	return rc;
}

static int manifest_line(struct tapfs *fs, char *line, unsigned lineno,
			 char *err, size_t errlen)
{
	char *w[6], *save = NULL, *p;
	char why[512];
	struct tapfs_group *g;
	unsigned n = 0;
	int rc;

	for (p = strtok_r(line, " \t\n", &save); p && n < 6;
	     p = strtok_r(NULL, " \t\n", &save))
		w[n++] = p;
	if (!n || w[0][0] == '#')
		return 0;
	for (unsigned i = 0; i < n; i++)
		if (manifest_unescape(w[i]))
			goto bad;
	if (!strcmp(w[0], "group") && n == 2) {
		rc = tapfs_group_add(fs, w[1], NULL, why, sizeof(why));
		if (rc && rc != -EEXIST) {
			snprintf(err, errlen, "manifest line %u: %s", lineno,
				 why);
			return rc;
		}
		return 0;
	}
	if (strcmp(w[0], "vbd") || n != 6 ||
	    (strcmp(w[4], "ro") && strcmp(w[4], "rw") &&
	     strcmp(w[4], "standby")))
		goto bad;
	g = tapfs_group_find(fs, w[1]);
	if (!g) {
		rc = tapfs_group_add(fs, w[1], &g, why, sizeof(why));
		if (rc) {
			snprintf(err, errlen, "manifest line %u: %s", lineno,
				 why);
			return rc;
		}
	}
	/* A bad line stops the mount; a bad image only fails its VBD. */
	if (ctl_check_name(w[2], why, sizeof(why)) ||
	    tapfs_vbd_find(g, w[2])) {
		if (tapfs_vbd_find(g, w[2]))
			snprintf(why, sizeof(why), "VBD '%s' listed twice",
				 w[2]);
		snprintf(err, errlen, "manifest line %u: %s", lineno, why);
		return -EINVAL;
	}
	rc = tapfs_vbd_add(fs, g, w[2], w[3], w[5], !strcmp(w[4], "ro"),
			   !strcmp(w[4], "standby") ? TD_OPEN_STANDBY : 0, true,
			   NULL, why, sizeof(why));
	if (rc) {
		td_log(TD_LOG_ERR, "%s/%s: %s (kept in the manifest; 'close "
		       "%s' forgets it)", w[1], w[2], why, w[2]);
		return tapfs_vbd_add_broken(fs, g, w[2], w[3], w[5],
					    !strcmp(w[4], "ro"),
					    !strcmp(w[4], "standby"), why);
	}
	return 0;
bad:
	snprintf(err, errlen, "manifest line %u: cannot parse", lineno);
	return -EINVAL;
}

int tapfs_store_load(struct tapfs *fs, char *err, size_t errlen)
{
	char path[PATH_MAX], *line = NULL;
	size_t cap = 0;
	unsigned lineno = 0;
	FILE *f;
	int rc = 0;

	snprintf(path, sizeof(path), "%s/" MANIFEST, fs->store);
	f = fopen(path, "re");
	if (!f) {
		if (errno == ENOENT)
			return 0;
		rc = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return rc;
	}
	while (getline(&line, &cap, f) > 0) {
		lineno++;
		rc = manifest_line(fs, line, lineno, err, errlen);
		if (rc) {
			size_t l = strlen(err);

			snprintf(err + l, errlen - l, " (in %s)", path);
			break;
		}
	}
	free(line);
	fclose(f);
	return rc;
}

/* ---- the daemon object ----------------------------------------------- */

static int tapfs_lock_store(struct tapfs *fs, char *err, size_t errlen)
{
	char path[PATH_MAX], pid[32] = "";
	ssize_t n;
	int rc;

	snprintf(path, sizeof(path), "%s/" LOCKFILE, fs->store);
	fs->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fs->lock_fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return rc;
	}
	if (flock(fs->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		rc = -errno;
		n = pread(fs->lock_fd, pid, sizeof(pid) - 1, 0);
		pid[n > 0 ? n : 0] = '\0';
		pid[strcspn(pid, "\n")] = '\0';
		if (rc == -EWOULDBLOCK)
			snprintf(err, errlen, "store %s is in use by another "
				 "tapfs (pid %s)", fs->store,
				 pid[0] ? pid : "?");
		else
			snprintf(err, errlen, "%s: %s", path,
				 strerror(-rc));
		return rc == -EWOULDBLOCK ? -EBUSY : rc;
	}
	return 0;
}

/* Record our pid in the lock file (after daemonising). */
static void tapfs_lock_write_pid(struct tapfs *fs)
{
	char pid[32];
	int n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());

	if (ftruncate(fs->lock_fd, 0) < 0 ||
	    pwrite(fs->lock_fd, pid, (size_t)n, 0) != n)
		td_log(TD_LOG_WARN, "%s/" LOCKFILE ": %m", fs->store);
}

static int tapfs_mkdir_p(const char *path)
{
	char tmp[PATH_MAX];
	char *p;

	if (strlen(path) >= sizeof(tmp))
		return -ENAMETOOLONG;
	strcpy(tmp, path);
	for (p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/*
 * Images may be opened from the store and the -o allow_path directories,
 * never from inside the mount (see path-policy.h).
 */
static int tapfs_paths_init(struct tapfs *fs, char *err, size_t errlen)
{
	unsigned i;
	int rc;

	rc = path_policy_set_mount(&fs->paths, fs->mountpoint);
	if (rc) {
		snprintf(err, errlen, "out of memory");
		return rc;
	}
	rc = path_policy_allow(&fs->paths, fs->store, err, errlen);
	for (i = 0; !rc && i < fs->opts.nallow_path; i++)
		rc = path_policy_allow(&fs->paths, fs->opts.allow_path[i], err,
				       errlen);
	if (rc)
		return rc;
	for (i = 1; i < fs->paths.ndirs; i++)
		td_log(TD_LOG_INFO, "images may also be opened from %s",
		       fs->paths.dirs[i]);
	return 0;
}

/*
 * An engine of the daemon's: every image it opens passes the path policy,
 * and its drivers see the mount's options.  NULL: see the log.
 */
static struct td_engine *tapfs_engine_new(struct tapfs *fs)
{
	struct td_engine *e = td_engine_new();
	unsigned i;

	if (!e)
		return NULL;
	e->path_policy = path_policy_check;
	e->path_policy_arg = &fs->paths;
	for (i = 0; i < fs->opts.ndriver_opts; i++) {
		if (td_engine_set_option(e, fs->opts.driver_opts[i].name,
					 fs->opts.driver_opts[i].value)) {
			td_log(TD_LOG_ERR, "out of memory");
			td_engine_free(e);
			return NULL;
		}
	}
	return e;
}

struct tapfs *tapfs_new(const struct tapfs_opts *opts, char *err,
			size_t errlen)
{
	struct tapfs *fs = calloc(1, sizeof(*fs));
	struct stat st;
	int rc;

	if (!fs) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	fs->opts = *opts;
	fs->lock_fd = -1;
	path_policy_init(&fs->paths);
	td_list_init(&fs->groups);
	fs->start_time = time(NULL);
	fs->uid = getuid();
	fs->gid = getgid();
	fs->nnodes = TAPFS_ROOT_INO;	/* ino 0 is never used */

	fs->mountpoint = realpath(opts->mountpoint, NULL);
	if (!fs->mountpoint || stat(fs->mountpoint, &st) < 0) {
		snprintf(err, errlen, "mount point %s: %s", opts->mountpoint,
			 strerror(errno));
		goto fail;
	}
	if (!S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "mount point %s: not a directory",
			 opts->mountpoint);
		goto fail;
	}
	rc = tapfs_mkdir_p(opts->store);
	if (rc || !(fs->store = realpath(opts->store, NULL))) {
		snprintf(err, errlen, "store %s: %s", opts->store,
			 strerror(rc ? -rc : errno));
		goto fail;
	}
	if (!tapfs_path_outside_mount(fs, fs->store)) {
		snprintf(err, errlen, "store %s lies inside the mount point "
			 "%s", fs->store, fs->mountpoint);
		goto fail;
	}
	if (tapfs_paths_init(fs, err, errlen))
		goto fail;
	if (tapfs_lock_store(fs, err, errlen))
		goto fail;
	fs->root = tapfs_node_new(fs, TAPFS_ROOT, NULL);
	if (!fs->root) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	fs->engine = tapfs_engine_new(fs);
	if (!fs->engine) {
		snprintf(err, errlen, "cannot start the I/O engine (see "
			 "the log)");
		goto fail;
	}
	if (workers_new(fs, opts->workers, tapfs_engine_new, err, errlen))
		goto fail;
	tapfs_lock_write_pid(fs);
	return fs;
fail:
	tapfs_free(fs);
	return NULL;
}

void tapfs_free(struct tapfs *fs)
{
	struct td_list *gp, *vp;
	uint64_t i;

	if (!fs)
		return;
	while ((gp = fs->groups.next) != &fs->groups) {
		struct tapfs_group *g = td_container_of(gp, struct tapfs_group,
							link);
		while ((vp = g->vbds.next) != &g->vbds) {
			struct tapfs_vbd *tv = td_container_of(vp,
						struct tapfs_vbd, link);
			td_list_del(&tv->link);
			if (tv->vbd)
				vbd_close(tv->vbd);
			free(tv);
		}
		td_list_del(&g->link);
		free(g);
	}
	for (i = 0; i < fs->nnodes && fs->nodes; i++)
		free(fs->nodes[i]);
	free(fs->nodes);
	workers_free(fs);
	td_engine_free(fs->engine);
	if (fs->lock_fd >= 0)
		close(fs->lock_fd);
	path_policy_fini(&fs->paths);
	free(fs->mountpoint);
	free(fs->store);
	free(fs);
}
