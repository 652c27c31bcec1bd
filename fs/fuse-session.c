/* SPDX-License-Identifier: MIT */
/*
 * The FUSE session: INIT, the operations table, mount and unmount, and
 * the signals.  The receive loops that read /dev/fuse - one, or one per
 * loop with -o workers=N - are fuse-workers.c; with -o uring the
 * requests come through fuse-uring.c's ring as well.  SIGINT, SIGTERM
 * and SIGHUP arrive through a signalfd and end the loop.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <tapfs/log.h>

#include "fuse-edge.h"

static void session_init(void *userdata, struct fuse_conn_info *conn)
{
	struct tapfs *fs = userdata;

	conn->max_write = FUSE_MAX_IO;
	conn->max_readahead = 0;
	conn->max_background = fs->opts.max_background;
	conn->congestion_threshold = fs->opts.max_background * 3 / 4;
	conn->want |= FUSE_CAP_ASYNC_DIO;
	if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
		conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
	conn->want &= ~(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE |
			FUSE_CAP_SPLICE_MOVE | FUSE_CAP_WRITEBACK_CACHE |
			FUSE_CAP_AUTO_INVAL_DATA);
}

static const struct fuse_lowlevel_ops tapfs_ll_ops = {
	.init		= session_init,
	.lookup		= ns_lookup,
	.forget		= ns_forget,
	.forget_multi	= ns_forget_multi,
	.getattr	= ns_getattr,
	.setattr	= ns_setattr,
	.readdir	= ns_readdir,
	.mkdir		= ns_mkdir,
	.rmdir		= ns_rmdir,
	.unlink		= ns_unlink,
	.mknod		= ns_mknod,
	.create		= ns_create,
	.rename		= ns_rename,
	.link		= ns_link,
	.symlink	= ns_symlink,
	.statfs		= ns_statfs,
	.open		= ns_open,
	.release	= ns_release,
	.read		= ns_read,
	.write		= ns_write,
	.flush		= ns_flush,
	.fsync		= ns_fsync,
	.fallocate	= ns_fallocate,
};

static void session_signal(struct td_event *ev, uint32_t events)
{
	struct fuse_state *st = ev->arg;
	struct signalfd_siginfo si;

	(void)events;
	if (read(st->sigfd, &si, sizeof(si)) != sizeof(si))
		return;
	td_log(TD_LOG_INFO, "signal %u: unmounting %s", si.ssi_signo,
	       st->fs->mountpoint);
	fuse_session_exit(st->se);
	td_loop_stop(st->fs->engine->loop);
}

static void session_free(struct fuse_state *st)
{
	if (!st)
		return;
	data_fini(&st->data);
	if (st->sigfd >= 0)
		close(st->sigfd);
	free(st);
}

int tapfs_fuse_mount(struct tapfs *fs, char *err, size_t errlen)
{
	char *argv[8];
	int argc = 0;
	struct fuse_args args;
	struct fuse_state *st;
	sigset_t mask;
	int rc;

	st = calloc(1, sizeof(*st));
	if (!st) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	st->fs = fs;
	st->sigfd = -1;
	td_list_init(&st->ctl_handles);
	rc = data_init(st, &st->data);
	if (rc) {
		snprintf(err, errlen, "cannot allocate I/O buffers: %s",
			 strerror(-rc));
		goto fail;
	}

	argv[argc++] = (char *)"tapfs";
	argv[argc++] = (char *)"-o";
	argv[argc++] = fs->opts.allow_other ?
		       (char *)"fsname=tapfs,subtype=tapfs,allow_other,"
			       "default_permissions" :
		       (char *)"fsname=tapfs,subtype=tapfs,"
			       "default_permissions";
	if (fs->opts.debug)
		argv[argc++] = (char *)"-d";
	args = (struct fuse_args)FUSE_ARGS_INIT(argc, argv);
	st->se = fuse_session_new(&args, &tapfs_ll_ops, sizeof(tapfs_ll_ops),
				  fs);
	fuse_opt_free_args(&args);
	if (!st->se) {
		snprintf(err, errlen, "cannot create the FUSE session");
		rc = -EINVAL;
		goto fail;
	}
	if (fuse_session_mount(st->se, fs->mountpoint)) {
		snprintf(err, errlen, "cannot mount on %s (is /dev/fuse "
			 "there, and are you root?)", fs->mountpoint);
		rc = -EPERM;
		goto fail;
	}
	st->mounted = true;
	fs->fuse = st;
	rc = fs->opts.uring ? fuse_uring_mount(st, err, errlen) : 0;
	if (!rc)
		rc = fuse_workers_mount(st, err, errlen);
	if (rc)
		goto fail_unmount;

	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	st->sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (st->sigfd >= 0) {
		st->sigev.fd = st->sigfd;
		st->sigev.events = EPOLLIN;
		st->sigev.cb = session_signal;
		st->sigev.arg = st;
		td_loop_add_event(fs->engine->loop, &st->sigev);
	}
	return 0;

fail_unmount:
	fuse_uring_unmount(st);
	fuse_session_unmount(st->se);
fail:
	if (st->se)
		fuse_session_destroy(st->se);
	fs->fuse = NULL;
	session_free(st);
	return rc ? rc : -EIO;
}

int tapfs_fuse_run(struct tapfs *fs)
{
	return fuse_workers_run(fs->fuse);
}

void tapfs_fuse_request_exit(struct tapfs *fs)
{
	if (fs->fuse)
		fuse_session_exit(fs->fuse->se);
	td_loop_stop(fs->engine->loop);
}

void tapfs_fuse_unmount(struct tapfs *fs)
{
	struct fuse_state *st = fs->fuse;

	if (!st)
		return;
	fuse_uring_unmount(st);
	fuse_workers_unmount(st);
	if (st->sigfd >= 0)
		td_loop_del_event(fs->engine->loop, &st->sigev);
	if (st->mounted)
		fuse_session_unmount(st->se);
	fuse_session_destroy(st->se);
	ns_free_ctl_handles(st);
	fs->fuse = NULL;
	session_free(st);
}
