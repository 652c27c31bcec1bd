/* SPDX-License-Identifier: MIT */
/*
 * fuse-null - the smallest FUSE daemon that serves one file: the ceiling
 * of the kernel's FUSE path, for bench/bench.sh.
 *
 *   fuse-null [-f] [-o size=BYTES] [-o max_background=N] MOUNTPOINT
 *
 * MOUNTPOINT holds one regular file, "null", of size BYTES (default
 * 1 GiB).  A read replies with zeros from one static buffer, a write is
 * acknowledged without storing anything, flush and fsync succeed: no
 * image, no I/O, no allocation per request.  Whatever a client measures
 * through it (directly, or through a loop device over the file) is what
 * the kernel and libfuse's request round trip cost, with nothing behind.
 *
 * The INIT and open settings are tapfs's (fs/fuse-session.c and
 * fs/fuse-namespace.c): max_write 1 MiB, no readahead, max_background
 * (default 128, as tapfs) with the congestion threshold at 3/4 of it,
 * asynchronous direct I/O, no splice, no writeback cache, and the file
 * opened with FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES.  It runs
 * libfuse's single-threaded session loop (one thread, as tapfs).  The
 * directory is not listable (lookup only).  Built by `make fuse-null`
 * (build/fuse-null), for the bench only.
 */
#define FUSE_USE_VERSION 34

#include <errno.h>
#include <fuse_lowlevel.h>
#include <linux/fuse.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define NULL_INO		2
#define NULL_NAME		"null"
#define NULL_MAX_IO		(1u << 20)
#define NULL_DEFAULT_SIZE	(1ull << 30)
#define NULL_DEFAULT_BG		128
#define NULL_ATTR_TIMEOUT	3600.0

struct null_opts {
	unsigned long long size;
	unsigned max_background;
};

/* A read's reply: never written to. */
static const char null_zeros[NULL_MAX_IO];

static const struct fuse_opt null_opt_spec[] = {
	{ "size=%llu", offsetof(struct null_opts, size), 0 },
	{ "max_background=%u", offsetof(struct null_opts, max_background), 0 },
	FUSE_OPT_END
};

static struct null_opts *null_opts(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static void null_init(void *userdata, struct fuse_conn_info *conn)
{
	struct null_opts *o = userdata;

	conn->max_write = NULL_MAX_IO;
	conn->max_readahead = 0;
	conn->max_background = o->max_background;
	conn->congestion_threshold = o->max_background * 3 / 4;
	conn->want |= FUSE_CAP_ASYNC_DIO;
	conn->want &= ~(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE |
			FUSE_CAP_SPLICE_MOVE | FUSE_CAP_WRITEBACK_CACHE |
			FUSE_CAP_AUTO_INVAL_DATA);
}

static void null_stat(const struct null_opts *o, fuse_ino_t ino,
		      struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	if (ino == FUSE_ROOT_ID) {
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2;
	} else {
		st->st_mode = S_IFREG | 0600;
		st->st_nlink = 1;
		st->st_size = o->size;
		st->st_blocks = o->size / 512;
	}
}

/* Replies: an entry for "null" in the root, ENOENT otherwise. */
static void null_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e;

	if (parent != FUSE_ROOT_ID || strcmp(name, NULL_NAME)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	memset(&e, 0, sizeof(e));
	e.ino = NULL_INO;
	e.attr_timeout = NULL_ATTR_TIMEOUT;
	e.entry_timeout = NULL_ATTR_TIMEOUT;
	null_stat(null_opts(req), NULL_INO, &e.attr);
	fuse_reply_entry(req, &e);
}

/* Replies: the attributes of the root or of "null". */
static void null_getattr(fuse_req_t req, fuse_ino_t ino,
			 struct fuse_file_info *fi)
{
	struct stat st;

	(void)fi;
	null_stat(null_opts(req), ino, &st);
	fuse_reply_attr(req, &st, NULL_ATTR_TIMEOUT);
}

/* Replies: an open of "null" in direct I/O; EISDIR for the root. */
static void null_open(fuse_req_t req, fuse_ino_t ino,
		      struct fuse_file_info *fi)
{
	struct fuse_open_out out;

	(void)fi;
	if (ino != NULL_INO) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	/* fuse_file_info of libfuse 3.14 has no parallel_direct_writes. */
	memset(&out, 0, sizeof(out));
	out.open_flags = FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES;
	fuse_reply_buf(req, (const char *)&out, sizeof(out));
}

static size_t null_clamp(const struct null_opts *o, size_t len, off_t off)
{
	if (off < 0 || (unsigned long long)off >= o->size)
		return 0;
	if (len > o->size - off)
		len = o->size - off;
	return len;
}

/* Replies: zeros up to the end of the file (at most max_write). */
static void null_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		      struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	size = null_clamp(null_opts(req), size, off);
	if (size > sizeof(null_zeros))
		size = sizeof(null_zeros);
	fuse_reply_buf(req, null_zeros, size);
}

/* Replies: the whole write acknowledged, or EFBIG past the end. */
static void null_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
		       size_t size, off_t off, struct fuse_file_info *fi)
{
	(void)ino;
	(void)buf;
	(void)fi;
	if (size && !null_clamp(null_opts(req), size, off)) {
		fuse_reply_err(req, EFBIG);
		return;
	}
	fuse_reply_write(req, null_clamp(null_opts(req), size, off));
}

static void null_flush(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	fuse_reply_err(req, 0);
}

static void null_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
		       struct fuse_file_info *fi)
{
	(void)datasync;
	null_flush(req, ino, fi);
}

static const struct fuse_lowlevel_ops null_ops = {
	.init		= null_init,
	.lookup		= null_lookup,
	.getattr	= null_getattr,
	.open		= null_open,
	.read		= null_read,
	.write		= null_write,
	.flush		= null_flush,
	.fsync		= null_fsync,
};

int main(int argc, char **argv)
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct null_opts o = {
		.size = NULL_DEFAULT_SIZE,
		.max_background = NULL_DEFAULT_BG,
	};
	struct fuse_cmdline_opts cl;
	struct fuse_session *se = NULL;
	int rc = 1;

	memset(&cl, 0, sizeof(cl));
	if (fuse_parse_cmdline(&args, &cl) ||
	    fuse_opt_parse(&args, &o, null_opt_spec, NULL))
		goto out;
	if (cl.show_help || !cl.mountpoint) {
		fprintf(stderr, "usage: %s [-f] [-o size=BYTES] "
			"[-o max_background=N] MOUNTPOINT\n", argv[0]);
		goto out;
	}
	if (!o.size || o.max_background < 1 || o.max_background > 65535) {
		fprintf(stderr, "fuse-null: size must be > 0 and "
			"max_background 1..65535 (got %llu, %u)\n",
			o.size, o.max_background);
		goto out;
	}
	se = fuse_session_new(&args, &null_ops, sizeof(null_ops), &o);
	if (!se)
		goto out;
	if (fuse_set_signal_handlers(se))
		goto out;
	if (fuse_session_mount(se, cl.mountpoint))
		goto out_signals;
	if (fuse_daemonize(cl.foreground))
		goto out_unmount;
	rc = fuse_session_loop(se) ? 1 : 0;
out_unmount:
	fuse_session_unmount(se);
out_signals:
	fuse_remove_signal_handlers(se);
out:
	if (se)
		fuse_session_destroy(se);
	free(cl.mountpoint);
	fuse_opt_free_args(&args);
	return rc;
}
