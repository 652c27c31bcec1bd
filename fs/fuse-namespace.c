/* SPDX-License-Identifier: MIT */
/*
 * The mount tree as FUSE sees it: the root, one directory per group, and
 * in each its VBD files and the .ctl and .stats control files.  Lookups,
 * attributes, listings and mkdir/rmdir are answered at once from
 * fs/tree.c; a VBD file's reads and writes go to the data path
 * (fuse-data.c), a control file's are answered here.
 *
 * Every callback replies exactly once; see fuse-edge.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#include <tapfs/log.h>

#include "fuse-edge.h"

#define ATTR_TIMEOUT		1.0
#define ENTRY_TIMEOUT		0.0

/* A handle on .ctl or .stats: the text as it was at open. */
struct ctl_handle {
	struct td_list		 link;		/* in fuse_state.ctl_handles */
	struct tapfs_group	*g;
	char			*text;
	size_t			 len;
};

/* ---- attributes ------------------------------------------------------ */

static int node_attr(struct tapfs *fs, struct tapfs_node *n, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = n->ino;
	st->st_uid = fs->uid;
	st->st_gid = fs->gid;
	st->st_blksize = 4096;
	st->st_atime = st->st_mtime = st->st_ctime = n->ctime;
	switch (n->kind) {
	case TAPFS_ROOT:
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2 + tapfs_group_count(fs);
		break;
	case TAPFS_GROUP:
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2;
		break;
	case TAPFS_CTL:
		st->st_mode = S_IFREG | 0600;
		st->st_nlink = 1;
		break;
	case TAPFS_STATS:
		st->st_mode = S_IFREG | 0444;
		st->st_nlink = 1;
		break;
	case TAPFS_VBD: {
		struct tapfs_vbd *tv = n->obj;

		if (!tv || !tv->vbd)
			return -ENOENT;
		st->st_mode = S_IFREG | (tv->readonly ? 0400 : 0600);
		st->st_nlink = 1;
		st->st_size = (off_t)vbd_size(tv->vbd);
		st->st_blocks = st->st_size / 512;
		/*
		 * The preferred I/O size cp, cmp and dd's peers use: a disk's
		 * (the largest request), not a page (4 KiB reads ran at a
		 * tenth of the speed).  FUSE uses it for stat(2) only.
		 */
		st->st_blksize = FUSE_MAX_IO;
		break;
	}
	}
	return 0;
}

static struct tapfs_node *live_node(struct tapfs *fs, fuse_ino_t ino)
{
	struct tapfs_node *n = tapfs_node_get(fs, ino);

	return n && !n->dead ? n : NULL;
}

static void reply_entry(fuse_req_t req, struct tapfs *fs,
			struct tapfs_node *n)
{
	struct fuse_entry_param e;
	int err;

	memset(&e, 0, sizeof(e));
	err = node_attr(fs, n, &e.attr);
	if (err) {
		fuse_reply_err(req, -err);
		return;
	}
	e.ino = n->ino;
	e.generation = 1;
	e.attr_timeout = ATTR_TIMEOUT;
	e.entry_timeout = ENTRY_TIMEOUT;
	if (fuse_reply_entry(req, &e) == 0)
		n->nlookup++;
}

/* ---- namespace operations ----------------------------------------------- */

void ns_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct tapfs *fs = fuse_req_fs(req);
	struct tapfs_node *p = live_node(fs, parent);
	struct tapfs_group *g;
	struct tapfs_vbd *tv;

	if (!p) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (p->kind == TAPFS_ROOT) {
		g = tapfs_group_find(fs, name);
		if (!g) {
			fuse_reply_err(req, ENOENT);
			return;
		}
		reply_entry(req, fs, g->node);
		return;
	}
	if (p->kind != TAPFS_GROUP) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	g = p->obj;
	if (!strcmp(name, ".ctl")) {
		reply_entry(req, fs, g->ctl);
		return;
	}
	if (!strcmp(name, ".stats")) {
		reply_entry(req, fs, g->stats);
		return;
	}
	tv = tapfs_vbd_find(g, name);
	if (!tv || !tv->vbd) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	reply_entry(req, fs, tv->node);
}

void ns_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	struct tapfs *fs = fuse_req_fs(req);
	struct tapfs_node *n = tapfs_node_get(fs, ino);

	if (n && ino != TAPFS_ROOT_INO)
		tapfs_node_forget(fs, n, nlookup);
	fuse_reply_none(req);
}

void ns_forget_multi(fuse_req_t req, size_t count,
		     struct fuse_forget_data *forgets)
{
	struct tapfs *fs = fuse_req_fs(req);
	size_t i;

	for (i = 0; i < count; i++) {
		struct tapfs_node *n = tapfs_node_get(fs, forgets[i].ino);

		if (n && forgets[i].ino != TAPFS_ROOT_INO)
			tapfs_node_forget(fs, n, forgets[i].nlookup);
	}
	fuse_reply_none(req);
}

void ns_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct tapfs *fs = fuse_req_fs(req);
	struct tapfs_node *n = live_node(fs, ino);
	struct stat st;
	int err;

	(void)fi;
	if (!n) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	err = node_attr(fs, n, &st);
	if (err)
		fuse_reply_err(req, -err);
	else
		fuse_reply_attr(req, &st, ATTR_TIMEOUT);
}

/*
 * A VBD's size is its image's: truncate to another size is refused, and
 * O_TRUNC is ignored as on a block device.  Times are not stored.
 */
void ns_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		struct fuse_file_info *fi)
{
	struct tapfs *fs = fuse_req_fs(req);
	struct tapfs_node *n = live_node(fs, ino);
	struct stat st;
	int err;

	(void)fi;
	if (!n) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	err = node_attr(fs, n, &st);
	if (err) {
		fuse_reply_err(req, -err);
		return;
	}
	if (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID |
		      FUSE_SET_ATTR_GID)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	if ((to_set & FUSE_SET_ATTR_SIZE) && n->kind == TAPFS_VBD &&
	    ((struct tapfs_vbd *)n->obj)->readonly) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if ((to_set & FUSE_SET_ATTR_SIZE) && n->kind == TAPFS_VBD &&
	    attr->st_size != st.st_size) {
		td_log(TD_LOG_INFO, "refused truncate of a VBD to %lld bytes",
		       (long long)attr->st_size);
		fuse_reply_err(req, EINVAL);
		return;
	}
	if ((to_set & FUSE_SET_ATTR_SIZE) && n->kind == TAPFS_STATS) {
		fuse_reply_err(req, EACCES);
		return;
	}
	fuse_reply_attr(req, &st, ATTR_TIMEOUT);
}

void ns_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		struct fuse_file_info *fi)
{
	struct tapfs *fs = fuse_req_fs(req);
	struct tapfs_node *n = live_node(fs, ino);
	struct td_list *pos, *head;
	char *buf;
	size_t used = 0;
	off_t idx = 0;

	(void)fi;
	if (!n) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (n->kind != TAPFS_ROOT && n->kind != TAPFS_GROUP) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	buf = malloc(size);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}

#define ADD_ENTRY(name_, ino_, mode_)					\
	do {								\
		struct stat st_ = { .st_ino = (ino_), .st_mode = (mode_) };\
		size_t sz_;						\
		idx++;							\
		if (idx <= off)						\
			break;						\
		sz_ = fuse_add_direntry(req, buf + used, size - used,	\
					(name_), &st_, idx);		\
		if (sz_ > size - used)					\
			goto full;					\
		used += sz_;						\
	} while (0)

	ADD_ENTRY(".", n->ino, S_IFDIR);
	ADD_ENTRY("..", TAPFS_ROOT_INO, S_IFDIR);
	if (n->kind == TAPFS_ROOT) {
		head = &fs->groups;
		for (pos = head->next; pos != head; pos = pos->next) {
			struct tapfs_group *g = td_container_of(pos,
						struct tapfs_group, link);
			ADD_ENTRY(g->name, g->node->ino, S_IFDIR);
		}
	} else {
		struct tapfs_group *g = n->obj;

		ADD_ENTRY(".ctl", g->ctl->ino, S_IFREG);
		ADD_ENTRY(".stats", g->stats->ino, S_IFREG);
		head = &g->vbds;
		for (pos = head->next; pos != head; pos = pos->next) {
			struct tapfs_vbd *tv = td_container_of(pos,
						struct tapfs_vbd, link);
			if (tv->vbd)
				ADD_ENTRY(tv->name, tv->node->ino, S_IFREG);
		}
	}
#undef ADD_ENTRY
full:
	fuse_reply_buf(req, buf, used);
	free(buf);
}

void ns_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct tapfs *fs = fuse_req_fs(req);
	struct tapfs_node *p = live_node(fs, parent);
	struct tapfs_group *g;
	char err[256];
	int rc;

	(void)mode;
	if (!p || p->kind != TAPFS_ROOT) {
		fuse_reply_err(req, p ? EPERM : ENOENT);
		return;
	}
	rc = tapfs_group_add(fs, name, &g, err, sizeof(err));
	if (rc) {
		td_log(TD_LOG_INFO, "mkdir %s: %s", name, err);
		fuse_reply_err(req, -rc);
		return;
	}
	rc = tapfs_store_save(fs, err, sizeof(err));
	if (rc) {
		tapfs_group_remove(fs, g, err, sizeof(err));
		fuse_reply_err(req, -rc);
		return;
	}
	reply_entry(req, fs, g->node);
}

void ns_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct tapfs *fs = fuse_req_fs(req);
	struct tapfs_node *p = live_node(fs, parent);
	struct tapfs_group *g;
	char err[256];
	int rc;

	if (!p || p->kind != TAPFS_ROOT) {
		fuse_reply_err(req, p ? ENOTDIR : ENOENT);
		return;
	}
	g = tapfs_group_find(fs, name);
	if (!g) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	rc = tapfs_group_remove(fs, g, err, sizeof(err));
	if (!rc)
		rc = tapfs_store_save(fs, err, sizeof(err));
	if (rc)
		td_log(TD_LOG_INFO, "rmdir %s: %s", name, err);
	fuse_reply_err(req, -rc);
}

/* VBDs come and go through .ctl; nothing else creates files here. */
void ns_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	(void)parent;
	(void)name;
	fuse_reply_err(req, EPERM);
}

void ns_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
	      dev_t rdev)
{
	(void)parent;
	(void)name;
	(void)mode;
	(void)rdev;
	fuse_reply_err(req, EPERM);
}

void ns_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
	       struct fuse_file_info *fi)
{
	(void)parent;
	(void)name;
	(void)mode;
	(void)fi;
	fuse_reply_err(req, EPERM);
}

void ns_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
	       fuse_ino_t newparent, const char *newname, unsigned int flags)
{
	(void)parent;
	(void)name;
	(void)newparent;
	(void)newname;
	(void)flags;
	fuse_reply_err(req, EPERM);
}

void ns_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
	     const char *newname)
{
	(void)ino;
	(void)newparent;
	(void)newname;
	fuse_reply_err(req, EPERM);
}

void ns_symlink(fuse_req_t req, const char *link, fuse_ino_t parent,
		const char *name)
{
	(void)link;
	(void)parent;
	(void)name;
	fuse_reply_err(req, EPERM);
}

void ns_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct tapfs *fs = fuse_req_fs(req);
	struct statvfs sv;

	(void)ino;
	if (statvfs(fs->store, &sv) < 0)
		memset(&sv, 0, sizeof(sv));
	sv.f_namemax = CTL_NAME_MAX;
	fuse_reply_statfs(req, &sv);
}

/* ---- open / release ---------------------------------------------------- */

/*
 * libfuse 3.14 cannot ask for FOPEN_PARALLEL_DIRECT_WRITES, without which
 * the kernel serialises direct writes to one file; the open reply is a
 * plain struct fuse_open_out, so send it ourselves.
 */
static int reply_open_vbd(fuse_req_t req, uint64_t fh)
{
	struct fuse_open_out out;

	memset(&out, 0, sizeof(out));
	out.fh = fh;
	out.open_flags = FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES;
	return fuse_reply_buf(req, (const char *)&out, sizeof(out));
}

void ns_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct tapfs *fs = fuse_req_fs(req);
	struct tapfs_node *n = live_node(fs, ino);
	int acc = fi->flags & O_ACCMODE;
	struct ctl_handle *h;

	if (!n) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	switch (n->kind) {
	case TAPFS_VBD: {
		struct tapfs_vbd *tv = n->obj;

		if (!tv->vbd) {
			fuse_reply_err(req, ENOENT);
			return;
		}
		if (acc != O_RDONLY && tv->readonly) {
			fuse_reply_err(req, EROFS);
			return;
		}
		tv->open_count++;
		if (reply_open_vbd(req, vbd_fh(tv)) == -ENOENT)
			tv->open_count--;	/* the open was interrupted */
		return;
	}
	case TAPFS_CTL:
	case TAPFS_STATS:
		if (n->kind == TAPFS_STATS && acc != O_RDONLY) {
			fuse_reply_err(req, EACCES);
			return;
		}
		h = calloc(1, sizeof(*h));
		if (!h) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
		h->g = n->obj;
		h->g->busy++;
		td_list_add_tail(&h->link, &fs->fuse->ctl_handles);
		h->text = n->kind == TAPFS_CTL ?
			  control_render_ctl(fs, h->g, &h->len) :
			  control_render_stats(fs, h->g, &h->len);
		fi->fh = (uintptr_t)h;
		fi->direct_io = 1;
		fi->nonseekable = 0;
		if (fuse_reply_open(req, fi) == -ENOENT) {
			/* libfuse called release for us */
		}
		return;
	default:
		fuse_reply_err(req, EISDIR);
	}
}

static void ctl_handle_free(struct ctl_handle *h)
{
	td_list_del(&h->link);
	h->g->busy--;
	free(h->text);
	free(h);
}

void ns_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct tapfs *fs = fuse_req_fs(req);
	struct tapfs_node *n = tapfs_node_get(fs, ino);

	if (n && n->kind == TAPFS_VBD) {
		struct tapfs_vbd *tv = fh_vbd(fi->fh);

		if (tv && tv->open_count)
			tv->open_count--;
	} else if (n && (n->kind == TAPFS_CTL || n->kind == TAPFS_STATS)) {
		struct ctl_handle *h = (struct ctl_handle *)(uintptr_t)fi->fh;

		if (h)
			ctl_handle_free(h);
	}
	fuse_reply_err(req, 0);
}

void ns_free_ctl_handles(struct fuse_state *st)
{
	while (!td_list_empty(&st->ctl_handles))
		ctl_handle_free(td_container_of(st->ctl_handles.next,
						struct ctl_handle, link));
}

/* ---- read / write / fsync dispatch ------------------------------------- */

void ns_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
	     struct fuse_file_info *fi)
{
	struct tapfs *fs = fuse_req_fs(req);
	struct tapfs_node *n = tapfs_node_get(fs, ino);
	struct ctl_handle *h;

	if (n && n->kind == TAPFS_VBD) {
		data_read(req, size, off, fi);
		return;
	}
	h = (struct ctl_handle *)(uintptr_t)fi->fh;
	if (!n || !h || !h->text) {
		fuse_reply_err(req, h && !h->text ? ENOMEM : EBADF);
		return;
	}
	if (off < 0 || (size_t)off >= h->len) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	if (size > h->len - (size_t)off)
		size = h->len - (size_t)off;
	fuse_reply_buf(req, h->text + off, size);
}

struct ctl_write {
	fuse_req_t	req;
	size_t		size;
	int		reply_fd;	/* fuse_reply_fd at receipt */
};

static void ctl_write_done(void *arg, int err)
{
	struct ctl_write *w = arg;

	fuse_reply_fd = w->reply_fd;
	if (err)
		fuse_reply_err(w->req, -err);
	else
		fuse_reply_write(w->req, w->size);
	free(w);
}

void ns_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size,
	      off_t off, struct fuse_file_info *fi)
{
	struct tapfs *fs = fuse_req_fs(req);
	struct tapfs_node *n = tapfs_node_get(fs, ino);
	struct ctl_handle *h;
	struct ctl_write *w;
	int rc;

	if (n && n->kind == TAPFS_VBD) {
		data_write(req, buf, size, off, fi);
		return;
	}
	h = (struct ctl_handle *)(uintptr_t)fi->fh;
	if (!n || n->kind != TAPFS_CTL || !h) {
		fuse_reply_err(req, EBADF);
		return;
	}
	w = malloc(sizeof(*w));
	if (!w) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	w->req = req;
	w->size = size;
	w->reply_fd = fuse_reply_fd;
	rc = control_exec(fs, h->g, buf, size, ctl_write_done, w);
	if (rc != -EINPROGRESS)
		ctl_write_done(w, rc);
}

void ns_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	fuse_reply_err(req, 0);		/* close(): nothing cached here */
}

void ns_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
	      struct fuse_file_info *fi)
{
	struct tapfs *fs = fuse_req_fs(req);
	struct tapfs_node *n = tapfs_node_get(fs, ino);

	(void)datasync;
	if (n && n->kind == TAPFS_VBD)
		data_fsync(req, fi);
	else
		fuse_reply_err(req, 0);
}

void ns_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off,
		  off_t length, struct fuse_file_info *fi)
{
	struct tapfs *fs = fuse_req_fs(req);
	struct tapfs_node *n = tapfs_node_get(fs, ino);

	if (n && n->kind == TAPFS_VBD)
		data_fallocate(req, mode, off, length, fi);
	else
		fuse_reply_err(req, EOPNOTSUPP);
}
