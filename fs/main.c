/* SPDX-License-Identifier: MIT */
/*
 * tapfs - mount a directory of live virtual disks.
 *
 * Without -f the daemon forks; the parent waits until the child reports
 * that the mount is live (exit 0) or why it failed (message, exit 1).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <tapfs/log.h>

#include "tapfs.h"
#include "workers.h"

#define TAPFS_VERSION		"0.1"
#define DEFAULT_MAX_BACKGROUND	128

static void usage(FILE *out)
{
	fprintf(out,
"Usage: tapfs [-f] [-d] [-o OPTION[,OPTION...]] MOUNTPOINT\n"
"       tapfs -h | --help\n"
"       tapfs -V | --version\n"
"\n"
"Mount a tapfs file system on MOUNTPOINT: every directory in it is a group,\n"
"every file a live virtual block device (VBD) backed by an image chain in the\n"
"store.  Control VBDs by writing commands to GROUP/.ctl; read counters from\n"
"GROUP/.stats.  See docs/user-guide.md and docs/control-files.md.\n"
"\n"
"Options:\n"
"  -f                     stay in the foreground, log to stderr\n"
"  -d                     debug logging (implies -f)\n"
"  -h, --help             show this help\n"
"  -V, --version          show the version\n"
"  -o store=DIR           image store (default " TAPFS_DEFAULT_STORE ")\n"
"  -o pidfile=FILE        write the daemon's PID to FILE once mounted\n"
"  -o allow_other         let other users use the mount (they need the\n"
"                         permissions on the files: VBDs and .ctl are 0600)\n"
"  -o allow_path=DIR[:DIR...]\n"
"                         images (and the parent or backing files they name)\n"
"                         may also be opened from DIR; repeatable.  Without\n"
"                         it only images in the store are opened.  Paths are\n"
"                         judged after following symbolic links and '..'\n"
"  -o max_background=N    FUSE requests in flight (default %d)\n"
"  -o workers=N           N event loops (threads), 1..%d, each with its own\n"
"                         /dev/fuse clone and aio context; each VBD is served\n"
"                         by one of them (default 1: one thread; see\n"
"                         docs/performance.md before raising it)\n"
"  -o uring               take FUSE requests through io_uring instead of\n"
"                         read()/writev() on /dev/fuse: fewer system calls\n"
"                         per request (Linux 6.14+ with CONFIG_FUSE_IO_URING\n"
"                         and fuse.enable_uring=Y; one loop only, not with\n"
"                         workers=N; see docs/performance.md)\n"
"  -o retry_max=N         retries of a transient I/O error (default %d)\n"
"  -o retry_delay_ms=N    first retry delay, doubling (default %d)\n"
"  -o deadline_ms=N       give up (EIO) after N ms of retrying (default %d)\n"
"  -o retry_eio           treat EIO from the storage as transient too\n"
"  -o ceph_conf=FILE      Ceph configuration for rbd:POOL/IMAGE VBDs (default\n"
"                         $CEPH_CONF, then /etc/ceph/ceph.conf)\n"
"  -o ceph_id=NAME        Ceph client id, client.NAME (default admin)\n"
"  -o ceph_pool=POOL      where \"create NAME rbd SIZE\" makes images: POOL\n"
"                         or POOL/NAMESPACE (default rbd)\n"
"\n"
"Images made by create live in the store.  open, and the parent (VHD) or\n"
"backing (qcow2) files an image names, at any depth, are served only from\n"
"the store and the allow_path directories; any other file is refused with\n"
"EACCES, the reason in GROUP/.ctl, so a crafted image cannot make the\n"
"daemon open an arbitrary file.  allow_path=/ turns this off.\n"
"\n"
"Generic mount options (rw, defaults, nofail, noauto, auto, _netdev, user,\n"
"nouser, dev, nodev, suid, nosuid, exec, noexec, x-*) are accepted and\n"
"ignored.\n"
"\n"
"Without -f, tapfs returns once the mount is live (exit 0) or prints why\n"
"it failed (exit 1).  umount, fusermount3 -u, SIGINT or SIGTERM flush every\n"
"VBD and end the daemon with exit status 0.\n",
		DEFAULT_MAX_BACKGROUND, WORKERS_MAX, VBD_RETRY_MAX,
		VBD_RETRY_DELAY_MS, VBD_DEADLINE_MS);
}

static int parse_uint(const char *opt, const char *v, unsigned *out)
{
	char *end;
	unsigned long n;

	errno = 0;
	n = strtoul(v, &end, 10);
	if (errno || !*v || *end || n > 0xffffffffUL) {
		fprintf(stderr, "tapfs: option %s: '%s' is not a number\n",
			opt, v);
		return -EINVAL;
	}
	*out = (unsigned)n;
	return 0;
}

/* allow_path=DIR[:DIR...]; repeatable.  Modifies v (kept: it is argv). */
static int parse_allow_path(char *v, struct tapfs_opts *o)
{
	char *save = NULL, *dir;

	for (dir = strtok_r(v, ":", &save); dir;
	     dir = strtok_r(NULL, ":", &save)) {
		if (dir[0] != '/') {
			fprintf(stderr, "tapfs: option allow_path: '%s' is not "
				"an absolute path\n", dir);
			return -EINVAL;
		}
		if (o->nallow_path == TAPFS_ALLOW_MAX) {
			fprintf(stderr, "tapfs: option allow_path: more than "
				"%d directories\n", TAPFS_ALLOW_MAX);
			return -EINVAL;
		}
		o->allow_path[o->nallow_path++] = dir;
	}
	return 0;
}

/*
 * A driver's setting (rbd's ceph_conf=FILE, ceph_id=NAME, ceph_pool=POOL):
 * handed to the engine as given, checked here only for what would
 * surprise later (a relative path: the daemon works from "/").
 */
static int parse_driver_opt(const char *opt, const char *v,
			    struct tapfs_opts *o)
{
	unsigned i;

	if (!v || !*v) {
		fprintf(stderr, "tapfs: option %s needs a value\n", opt);
		return -EINVAL;
	}
	if (!strcmp(opt, "ceph_conf") && v[0] != '/') {
		fprintf(stderr, "tapfs: option ceph_conf: '%s' is not an "
			"absolute path\n", v);
		return -EINVAL;
	}
	for (i = 0; i < o->ndriver_opts; i++)
		if (!strcmp(o->driver_opts[i].name, opt))
			break;
	if (i == TAPFS_DRIVER_OPTS_MAX)
		return -EINVAL;
	o->driver_opts[i].name = opt;
	o->driver_opts[i].value = v;
	if (i == o->ndriver_opts)
		o->ndriver_opts++;
	return 0;
}

static bool generic_mount_option(const char *o)
{
	static const char *const ignored[] = {
		"rw", "defaults", "nofail", "noauto", "auto", "_netdev",
		"user", "nouser", "users", "dev", "nodev", "suid", "nosuid",
		"exec", "noexec", "atime", "noatime", "relatime", "nosymfollow",
		"async", "sync", "owner", "group", "comment", NULL,
	};
	size_t i;

	if (!strncmp(o, "x-", 2) || !strncmp(o, "comment=", 8))
		return true;
	for (i = 0; ignored[i]; i++)
		if (!strcmp(o, ignored[i]))
			return true;
	return false;
}

static int parse_options(char *list, struct tapfs_opts *o)
{
	char *save = NULL, *opt;
	struct vbd_params *p = &o->params;

	for (opt = strtok_r(list, ",", &save); opt;
	     opt = strtok_r(NULL, ",", &save)) {
		char *v = strchr(opt, '=');
		int rc = 0;

		if (v)
			*v++ = '\0';
		if (!strcmp(opt, "store") && v && *v)
			o->store = v;
		else if (!strcmp(opt, "pidfile") && v && *v)
			o->pidfile = v;
		else if (!strcmp(opt, "allow_other") && !v)
			o->allow_other = true;
		else if (!strcmp(opt, "allow_path") && v && *v)
			rc = parse_allow_path(v, o);
		else if (!strcmp(opt, "max_background") && v)
			rc = parse_uint(opt, v, &o->max_background);
		else if (!strcmp(opt, "workers") && v)
			rc = parse_uint(opt, v, &o->workers);
		else if (!strcmp(opt, "uring") && !v)
			o->uring = true;
		else if (!strcmp(opt, "retry_max") && v)
			rc = parse_uint(opt, v, &p->retry_max);
		else if (!strcmp(opt, "retry_delay_ms") && v)
			rc = parse_uint(opt, v, &p->retry_delay_ms);
		else if (!strcmp(opt, "deadline_ms") && v)
			rc = parse_uint(opt, v, &p->deadline_ms);
		else if (!strcmp(opt, "retry_eio") && !v)
			p->retry_eio = true;
		else if (!strcmp(opt, "ceph_conf") || !strcmp(opt, "ceph_id") ||
			 !strcmp(opt, "ceph_pool"))
			rc = parse_driver_opt(opt, v, o);
		else if (!strcmp(opt, "ro")) {
			fprintf(stderr, "tapfs: option ro: a read-only mount "
				"is not supported; open VBDs with 'ro'\n");
			return -EINVAL;
		} else if (!v && generic_mount_option(opt))
			continue;
		else if (v && generic_mount_option(opt))
			continue;
		else {
			fprintf(stderr, "tapfs: unknown option '%s%s%s' (see "
				"tapfs --help)\n", opt, v ? "=" : "",
				v ? v : "");
			return -EINVAL;
		}
		if (rc)
			return rc;
	}
	if (!o->max_background || o->max_background > 65535) {
		fprintf(stderr, "tapfs: max_background must be 1..65535\n");
		return -EINVAL;
	}
	if (!o->workers || o->workers > WORKERS_MAX) {
		fprintf(stderr, "tapfs: workers=%u: must be 1..%d\n",
			o->workers, WORKERS_MAX);
		return -EINVAL;
	}
	if (o->uring) {
		char err[256];

		if (o->workers > 1) {
			fprintf(stderr, "tapfs: uring: not with workers=%u "
				"(one loop serves the ring)\n", o->workers);
			return -EINVAL;
		}
		if (fuse_uring_check(err, sizeof(err))) {
			fprintf(stderr, "tapfs: %s\n", err);
			return -EOPNOTSUPP;
		}
	}
	return 0;
}

/* Tell the waiting parent how start-up went (daemon mode). */
static void report(int fd, const char *msg)
{
	size_t len = strlen(msg);

	if (fd < 0)
		return;
	if (write(fd, msg, len) != (ssize_t)len)
		_exit(1);
	close(fd);
}

static int wait_for_child(int fd)
{
	char msg[1024];
	ssize_t n, got = 0;

	while ((n = read(fd, msg + got, sizeof(msg) - 1 - (size_t)got)) > 0)
		got += n;
	msg[got] = '\0';
	if (!strcmp(msg, "OK"))
		return 0;
	fprintf(stderr, "tapfs: %s\n", got ? msg : "daemon died on start-up "
		"(see the system log)");
	return 1;
}

static int write_pidfile(const char *path)
{
	FILE *f = fopen(path, "we");

	if (!f || fprintf(f, "%d\n", (int)getpid()) < 0 || fclose(f)) {
		td_log(TD_LOG_ERR, "pidfile %s: %m", path);
		return -errno;
	}
	return 0;
}

/* Resume everything and wait for in-flight I/O before closing. */
static void drain(struct tapfs *fs)
{
	struct td_list *gp, *vp;
	unsigned k, n = workers_count(fs);
	bool busy;

	do {
		busy = false;
		for (gp = fs->groups.next; gp != &fs->groups; gp = gp->next) {
			struct tapfs_group *g = td_container_of(gp,
						struct tapfs_group, link);
			for (vp = g->vbds.next; vp != &g->vbds;
			     vp = vp->next) {
				struct tapfs_vbd *tv = td_container_of(vp,
						struct tapfs_vbd, link);
				if (!tv->vbd)
					continue;
				if (vbd_state(tv->vbd) != VBD_RUNNING)
					vbd_resume(tv->vbd);
				if (vbd_inflight(tv->vbd) ||
				    vbd_queued(tv->vbd))
					busy = true;
			}
		}
		/* The worker threads are gone: run their loops here. */
		for (k = 0; busy && k < n; k++)
			workers_run_once(fs, k, n > 1 ? 10 : 100);
	} while (busy);
	workers_flush(fs);
}

static int serve(struct tapfs_opts *opts, int report_fd)
{
	char err[1024];
	struct tapfs *fs;
	int rc, status = 0;

	if (td_drivers_init()) {
		report(report_fd, "driver table is invalid (see the log)");
		return 1;
	}
	fs = tapfs_new(opts, err, sizeof(err));
	if (!fs) {
		td_log(TD_LOG_ERR, "%s", err);
		report(report_fd, err);
		return 1;
	}
	rc = tapfs_store_load(fs, err, sizeof(err));
	if (!rc)
		rc = tapfs_fuse_mount(fs, err, sizeof(err));
	if (rc) {
		td_log(TD_LOG_ERR, "%s", err);
		report(report_fd, err);
		tapfs_free(fs);
		return 1;
	}
	/*
	 * Under a loop device our own writeback may be what reclaim waits
	 * for: keep the daemon's memory resident (lazily, pools included).
	 */
	if (mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) < 0)
		td_log(TD_LOG_WARN, "mlockall: %m; the daemon may be paged "
		       "out under memory pressure");
#ifdef PR_SET_IO_FLUSHER
	prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0);	/* refused without CAP */
#endif
	if (opts->pidfile && write_pidfile(opts->pidfile))
		status = 1;
	td_log(TD_LOG_INFO, "mounted %s on store %s", fs->mountpoint,
	       fs->store);
	report(report_fd, "OK");
	if (report_fd >= 0) {
		int null = open("/dev/null", O_RDWR);

		if (null >= 0) {
			dup2(null, STDIN_FILENO);
			dup2(null, STDOUT_FILENO);
			dup2(null, STDERR_FILENO);
			if (null > STDERR_FILENO)
				close(null);
		}
	}

	rc = tapfs_fuse_run(fs);
	if (rc)
		status = 1;
	drain(fs);
	rc = tapfs_close_all(fs);
	if (rc) {
		td_log(TD_LOG_ERR, "flushing VBDs at unmount: %s",
		       strerror(-rc));
		status = 1;
	}
	tapfs_fuse_unmount(fs);
	td_log(TD_LOG_INFO, "unmounted %s", fs->mountpoint);
	if (opts->pidfile)
		unlink(opts->pidfile);
	tapfs_free(fs);
	return status;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct tapfs_opts opts = {
		.store = TAPFS_DEFAULT_STORE,
		.max_background = DEFAULT_MAX_BACKGROUND,
		.workers = 1,
	};
	char *mnt_abs = NULL;
	int c, rc, pipefd[2];
	pid_t pid;

	vbd_params_default(&opts.params);
	while ((c = getopt_long(argc, argv, "fdho:V", longopts, NULL)) != -1) {
		switch (c) {
		case 'f':
			opts.foreground = true;
			break;
		case 'd':
			opts.debug = opts.foreground = true;
			break;
		case 'o':
			if (parse_options(optarg, &opts))
				return 1;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("tapfs %s\n", TAPFS_VERSION);
			return 0;
		default:
			usage(stderr);
			return 1;
		}
	}
	if (optind != argc - 1) {
		fprintf(stderr, "tapfs: %s\n", optind == argc ?
			"missing MOUNTPOINT" : "too many arguments");
		usage(stderr);
		return 1;
	}
	opts.mountpoint = argv[optind];
	/*
	 * A daemon works from "/": a relative mount point is resolved now,
	 * or "mnt" would be /mnt.
	 */
	if (opts.mountpoint[0] != '/') {
		mnt_abs = realpath(opts.mountpoint, NULL);
		if (!mnt_abs) {
			fprintf(stderr, "tapfs: mount point %s: %s\n",
				opts.mountpoint, strerror(errno));
			return 1;
		}
		opts.mountpoint = mnt_abs;
	}
	if (opts.store[0] != '/') {
		fprintf(stderr, "tapfs: store %s must be an absolute path\n",
			opts.store);
		free(mnt_abs);
		return 1;
	}

	if (opts.foreground) {
		td_log_open("tapfs", false, opts.debug ? TD_LOG_DEBUG :
			    TD_LOG_INFO);
		rc = serve(&opts, -1);
		free(mnt_abs);
		return rc;
	}
	if (pipe2(pipefd, O_CLOEXEC) < 0) {
		perror("tapfs: pipe");
		free(mnt_abs);
		return 1;
	}
	pid = fork();
	if (pid < 0) {
		perror("tapfs: fork");
		free(mnt_abs);
		return 1;
	}
	if (pid > 0) {
		close(pipefd[1]);
		free(mnt_abs);
		return wait_for_child(pipefd[0]);
	}
	close(pipefd[0]);
	setsid();
	if (chdir("/") < 0)
		_exit(1);
	td_log_open("tapfs", true, TD_LOG_INFO);
	rc = serve(&opts, pipefd[1]);
	free(mnt_abs);
	return rc;
}
