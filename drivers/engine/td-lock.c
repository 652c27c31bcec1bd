/* SPDX-License-Identifier: MIT */
/*
 * Image locks: the in-process table and QEMU-compatible OFD byte locks
 * (see include/tapfs/lock.h for the layout and the contract).
 */
#include <ctype.h>
#include <dirent.h>
#include <linux/kcmp.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <tapfs/engine.h>
#include <tapfs/lock.h>
#include <tapfs/log.h>

/* QEMU's permission bits (block/block-common.h: BLK_PERM_*), by index. */
enum {
	PERM_CONSISTENT_READ,
	PERM_WRITE,
	PERM_WRITE_UNCHANGED,
	PERM_RESIZE,
	PERM_COUNT,
};

#define PERM_BIT(i)	(1u << (i))

/* What each mode uses, and what it does not let others use. */
static const unsigned mode_perm[] = {
	[TD_LOCK_READ]	= PERM_BIT(PERM_CONSISTENT_READ),
	[TD_LOCK_WRITE]	= PERM_BIT(PERM_CONSISTENT_READ) |
			  PERM_BIT(PERM_WRITE) | PERM_BIT(PERM_RESIZE),
	[TD_LOCK_STANDBY] = PERM_BIT(PERM_CONSISTENT_READ),
};
static const unsigned mode_unshared[] = {
	[TD_LOCK_READ]	= PERM_BIT(PERM_WRITE) | PERM_BIT(PERM_RESIZE),
	[TD_LOCK_WRITE]	= PERM_BIT(PERM_WRITE) | PERM_BIT(PERM_RESIZE),
	[TD_LOCK_STANDBY] = 0,
};

/* Most other processes named in one message. */
#define LOCK_MAX_HOLDERS	4

/* One image file held in this process. */
struct lock_file {
	struct td_list		 link;		/* in table->files */
	struct td_lock_table	*table;		/* NULL: a tool's lone lock */
	dev_t			 dev;
	ino_t			 ino;
	int			 fd;		/* carries the OFD locks */
	bool			 nolock;	/* no byte-range locks here */
	unsigned		 perm;		/* bytes held: 100 + i */
	unsigned		 unshared;	/* bytes held: 200 + i */
	struct td_list		 holds;		/* struct td_lock */
};

struct td_lock {
	struct td_list		 link;		/* in file->holds */
	struct lock_file	*file;
	enum td_lock_mode	 mode;
	enum td_lock_role	 role;
	const void		*owner;
	const char		*name;		/* the owner's, not copied */
};

/*
 * Shared by the engines of one process (one per loop with -o workers=N):
 * mu guards everything reachable from it.  Only open, close and handover
 * come here, never the data path.
 */
struct td_lock_table {
	pthread_mutex_t		 mu;
	unsigned		 refs;		/* under mu */
	struct td_list		 files;		/* struct lock_file */
};

struct td_lock_table *td_lock_table_new(void)
{
	struct td_lock_table *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	pthread_mutex_init(&t->mu, NULL);
	t->refs = 1;
	td_list_init(&t->files);
	return t;
}

struct td_lock_table *td_lock_table_get(struct td_lock_table *t)
{
	pthread_mutex_lock(&t->mu);
	t->refs++;
	pthread_mutex_unlock(&t->mu);
	return t;
}

void td_lock_table_free(struct td_lock_table *t)
{
	unsigned refs;

	if (!t)
		return;
	pthread_mutex_lock(&t->mu);
	refs = --t->refs;
	pthread_mutex_unlock(&t->mu);
	if (refs)
		return;
	if (!td_list_empty(&t->files))
		td_log(TD_LOG_ERR, "lock table freed with images still held");
	pthread_mutex_destroy(&t->mu);
	free(t);
}

/* A tool's lone lock has no table: nothing to guard. */
static void table_lock(struct td_lock_table *t)
{
	if (t)
		pthread_mutex_lock(&t->mu);
}

static void table_unlock(struct td_lock_table *t)
{
	if (t)
		pthread_mutex_unlock(&t->mu);
}

/* ---- OFD byte locks ------------------------------------------------ */

static int ofd_lock(int fd, unsigned off, short type)
{
	struct flock fl = {
		.l_type = type,
		.l_whence = SEEK_SET,
		.l_start = off,
		.l_len = 1,
	};

	return fcntl(fd, F_OFD_SETLK, &fl) < 0 ? -errno : 0;
}

/* 1 when another open file description holds byte off, 0 if not. */
static int ofd_held(int fd, unsigned off)
{
	struct flock fl = {
		.l_type = F_WRLCK,
		.l_whence = SEEK_SET,
		.l_start = off,
		.l_len = 1,
	};

	if (fcntl(fd, F_OFD_GETLK, &fl) < 0)
		return -errno;
	return fl.l_type != F_UNLCK;
}

/* The file system cannot lock at all (as opposed to: someone holds it). */
static bool ofd_unsupported(int err)
{
	return err == -ENOLCK || err == -EOPNOTSUPP || err == -ENOSYS ||
	       err == -EINVAL;
}

/* Lock the bytes of want not in have, unlock those of have not in want. */
static int ofd_apply(int fd, unsigned base, unsigned have, unsigned want)
{
	unsigned i;
	int rc;

	for (i = 0; i < PERM_COUNT; i++) {
		if ((want & PERM_BIT(i)) && !(have & PERM_BIT(i)))
			rc = ofd_lock(fd, base + i, F_RDLCK);
		else if (!(want & PERM_BIT(i)) && (have & PERM_BIT(i)))
			rc = ofd_lock(fd, base + i, F_UNLCK);
		else
			continue;
		if (rc)
			return rc;
	}
	return 0;
}

/*
 * Test what perm/unshared conflict with: the first byte another holder
 * has in the way, in *byte.  0 (none), 1 (a conflict), or -errno.
 */
static int ofd_check(int fd, unsigned perm, unsigned unshared,
		     unsigned *byte)
{
	unsigned i;
	int rc;

	for (i = 0; i < PERM_COUNT; i++) {
		if (!(perm & PERM_BIT(i)))
			continue;
		*byte = TD_LOCK_SHARED_BASE + i;
		if ((rc = ofd_held(fd, *byte)))
			return rc;
	}
	for (i = 0; i < PERM_COUNT; i++) {
		if (!(unshared & PERM_BIT(i)))
			continue;
		*byte = TD_LOCK_PERM_BASE + i;
		if ((rc = ofd_held(fd, *byte)))
			return rc;
	}
	return 0;
}

/* ---- who holds it: /proc/PID/fdinfo ------------------------------- */

struct lock_holder {
	pid_t		 pid;
	unsigned	 perm;		/* bytes 100 + i it holds */
	unsigned	 unshared;	/* bytes 200 + i */
};

/* Fold one "lock:" line of an fdinfo file into h if it is about dev:ino. */
static void holder_parse_line(const char *line, dev_t dev, ino_t ino,
			      struct lock_holder *h)
{
	char type[16], end[24];
	unsigned maj, min;
	unsigned long lino;
	long long start, last;

	if (sscanf(line, "lock: %*d: %15s %*s %*s %*s %x:%x:%lu %lld %23s",
		   type, &maj, &min, &lino, &start, end) != 6)
		return;
	if ((strcmp(type, "OFDLCK") && strcmp(type, "POSIX")) ||
	    maj != major(dev) || min != minor(dev) || lino != ino)
		return;
	last = strcmp(end, "EOF") ? atoll(end) : TD_LOCK_SHARED_BASE + 99;
	for (unsigned i = 0; i < PERM_COUNT; i++) {
		if (start <= TD_LOCK_PERM_BASE + i &&
		    last >= TD_LOCK_PERM_BASE + i)
			h->perm |= PERM_BIT(i);
		if (start <= TD_LOCK_SHARED_BASE + i &&
		    last >= TD_LOCK_SHARED_BASE + i)
			h->unshared |= PERM_BIT(i);
	}
}

static void holder_scan_fd(int dirfd, const char *fdname, dev_t dev,
			   ino_t ino, struct lock_holder *h)
{
	char buf[8192], *line, *save;
	ssize_t n;
	int fd = openat(dirfd, fdname, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = '\0';
	for (line = strtok_r(buf, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save))
		if (!strncmp(line, "lock:", 5))
			holder_parse_line(line, dev, ino, h);
}

/*
 * Whether fd of this process is, or shares the open file description of,
 * own_fd (a dup shares its OFD locks, and fdinfo shows them on both).
 * Without kcmp(2) every fd of ours counts as own: this process is then
 * left out, as before -o workers=N.
 */
static bool own_file(int own_fd, int fd)
{
	pid_t self = getpid();

	long r;

	if (own_fd < 0)
		return false;
	if (fd == own_fd)
		return true;
	/* 0: the same file; 1, 2, 3: another; -1: cannot tell. */
	r = syscall(SYS_kcmp, self, self, KCMP_FILE, own_fd, fd);
	return r <= 0;
}

/*
 * The processes of this host whose open files hold lock bytes of dev:ino
 * (OFD locks show pid -1 in F_OFD_GETLK and /proc/locks; fdinfo lists
 * them by the file that holds them).  This process counts too, through
 * any fd but own_fd (the asking table's): a second table of this process
 * (a tool's lone lock beside a table) holds the image through its own fd.
 * Returns how many were found.
 */
static unsigned holders_find(dev_t dev, ino_t ino, int own_fd,
			     struct lock_holder *hs, unsigned max)
{
	DIR *proc = opendir("/proc"), *fds;
	struct dirent *pe, *fe;
	unsigned n = 0;
	pid_t self = getpid();

	if (!proc)
		return 0;
	while (n < max && (pe = readdir(proc))) {
		char path[64];
		struct lock_holder h = { .pid = 0 };

		if (!isdigit((unsigned char)pe->d_name[0]))
			continue;
		h.pid = (pid_t)atoi(pe->d_name);
		snprintf(path, sizeof(path), "/proc/%d/fdinfo", (int)h.pid);
		fds = opendir(path);
		if (!fds)
			continue;
		while ((fe = readdir(fds)))
			if (isdigit((unsigned char)fe->d_name[0]) &&
			    !(h.pid == self &&
			      own_file(own_fd, atoi(fe->d_name))))
				holder_scan_fd(dirfd(fds), fe->d_name, dev,
					       ino, &h);
		closedir(fds);
		if (h.perm || h.unshared)
			hs[n++] = h;
	}
	closedir(proc);
	return n;
}

/* "qemu-storage-daemon": the basename of argv[0], else comm. */
static void holder_program(pid_t pid, char *buf, size_t len)
{
	char path[64], arg[256];
	const char *base;
	ssize_t n;
	int fd;

	snprintf(buf, len, "?");
	snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		n = read(fd, arg, sizeof(arg) - 1);
		close(fd);
		if (n > 0) {
			arg[n] = '\0';
			base = strrchr(arg, '/');
			td_msgf(buf, len, "%s", base ? base + 1 : arg);
			return;
		}
	}
	snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	n = read(fd, arg, sizeof(arg) - 1);
	close(fd);
	if (n > 0) {
		arg[n] = '\0';
		arg[strcspn(arg, "\n")] = '\0';
		td_msgf(buf, len, "%s", arg);
	}
}

/*
 * Describe the other processes holding dev:ino: "read-write by pid 42
 * (qemu-io)", naming the writers when there are any (they are in the
 * way), else the readers.  writer_seen: what the lock test saw, for when
 * no holder is visible from here (another host over NFS).
 */
static void holders_describe(dev_t dev, ino_t ino, int own_fd,
			     bool writer_seen, char *buf, size_t len)
{
	const unsigned wbits = PERM_BIT(PERM_WRITE) | PERM_BIT(PERM_RESIZE);
	struct lock_holder hs[LOCK_MAX_HOLDERS];
	unsigned n = holders_find(dev, ino, own_fd, hs, LOCK_MAX_HOLDERS);
	unsigned i, named;
	size_t used;
	bool any_writer = false;

	for (i = 0; i < n; i++)
		if (hs[i].perm & wbits)
			any_writer = true;
	if (!n) {
		snprintf(buf, len, "%s by another process (on another "
			 "host, or not visible here)", writer_seen ?
			 "read-write" : "read-only");
		return;
	}
	used = (size_t)snprintf(buf, len, "%s by", any_writer ?
				"read-write" : "read-only");
	for (i = 0, named = 0; i < n && used < len; i++) {
		char prog[64];

		if (any_writer && !(hs[i].perm & wbits))
			continue;
		if (hs[i].pid == getpid()) {
			used += (size_t)snprintf(buf + used, len - used,
						 "%s this process (pid %d), "
						 "outside its lock table",
						 named++ ? "," : "",
						 (int)hs[i].pid);
			continue;
		}
		holder_program(hs[i].pid, prog, sizeof(prog));
		used += (size_t)snprintf(buf + used, len - used,
					 "%s pid %d (%s)", named++ ? "," : "",
					 (int)hs[i].pid, prog);
	}
}

/* ---- the table ------------------------------------------------------ */

static struct lock_file *table_find(struct td_lock_table *t, dev_t dev,
				    ino_t ino)
{
	struct td_list *pos;

	if (!t)
		return NULL;
	for (pos = t->files.next; pos != &t->files; pos = pos->next) {
		struct lock_file *f = td_container_of(pos, struct lock_file,
						      link);
		if (f->dev == dev && f->ino == ino)
			return f;
	}
	return NULL;
}

/* The strongest mode of the file's holds: write, else read, else standby. */
static enum td_lock_mode file_mode(const struct lock_file *f)
{
	const struct td_list *pos;
	enum td_lock_mode m = TD_LOCK_STANDBY;

	for (pos = f->holds.next; pos != &f->holds; pos = pos->next) {
		enum td_lock_mode h = td_container_of(pos, struct td_lock,
						      link)->mode;

		if (h == TD_LOCK_WRITE)
			return TD_LOCK_WRITE;
		if (h == TD_LOCK_READ)
			m = TD_LOCK_READ;
	}
	return m;
}

/* The bytes the file's holds need together, and those of mode on top. */
static void file_bits(const struct lock_file *f, enum td_lock_mode mode,
		      unsigned *perm, unsigned *unshared)
{
	const struct td_list *pos;

	*perm = mode_perm[mode];
	*unshared = mode_unshared[mode];
	for (pos = f->holds.next; pos != &f->holds; pos = pos->next) {
		const struct td_lock *h = td_container_of(pos, struct td_lock,
							  link);
		*perm |= mode_perm[h->mode];
		*unshared |= mode_unshared[h->mode];
	}
}

static void hold_describe(const struct td_lock *h, const char *path,
			  char *err, size_t errlen)
{
	const char *who = h->name ? h->name : "another VBD";

	if (h->mode == TD_LOCK_WRITE)
		snprintf(err, errlen, "%s holds %s read-write", who, path);
	else if (h->mode == TD_LOCK_STANDBY)
		snprintf(err, errlen, "%s holds %s in standby", who, path);
	else if (h->role == TD_LOCK_ROLE_PARENT)
		snprintf(err, errlen, "%s uses %s as a read-only parent", who,
			 path);
	else
		snprintf(err, errlen, "%s holds %s read-only", who, path);
}

/* An in-process hold of another owner that mode may not join. */
static const struct td_lock *file_conflict(const struct lock_file *f,
					   enum td_lock_mode mode,
					   const void *owner)
{
	const struct td_list *pos;

	for (pos = f->holds.next; pos != &f->holds; pos = pos->next) {
		const struct td_lock *h = td_container_of(pos, struct td_lock,
							  link);
		/* A standby lets one writer in, and joins one. */
		if (h->owner == owner || h->mode == TD_LOCK_STANDBY ||
		    mode == TD_LOCK_STANDBY)
			continue;
		if (mode == TD_LOCK_WRITE || h->mode == TD_LOCK_WRITE)
			return h;
	}
	return NULL;
}

/* Move f's lock fd from the bytes it holds to exactly perm/unshared. */
static void file_set_bytes(struct lock_file *f, unsigned perm,
			   unsigned unshared)
{
	ofd_apply(f->fd, TD_LOCK_PERM_BASE, f->perm, perm);
	ofd_apply(f->fd, TD_LOCK_SHARED_BASE, f->unshared, unshared);
	f->perm = perm;
	f->unshared = unshared;
}

/*
 * Give f's lock fd exactly the bytes perm/unshared: lock first, then test
 * (as QEMU does, so that two processes racing for one image both see the
 * other).  On a conflict the bytes go back as they were and -EBUSY
 * explains.
 */
static int file_set_bits(struct lock_file *f, unsigned perm,
			 unsigned unshared, const char *path, char *err,
			 size_t errlen)
{
	unsigned byte = 0, old_perm, old_unshared;
	int rc;

	if (f->nolock || (f->perm == perm && f->unshared == unshared))
		return 0;
	/* Giving bytes back (the last writer left) needs no test. */
	if (!(perm & ~f->perm) && !(unshared & ~f->unshared)) {
		file_set_bytes(f, perm, unshared);
		return 0;
	}
	/* Take what is new, keep what we had until the test passed. */
	old_perm = f->perm;
	old_unshared = f->unshared;
	rc = ofd_apply(f->fd, TD_LOCK_PERM_BASE, f->perm, f->perm | perm);
	if (!rc)
		rc = ofd_apply(f->fd, TD_LOCK_SHARED_BASE, f->unshared,
			       f->unshared | unshared);
	f->perm |= perm;
	f->unshared |= unshared;
	if (!rc)
		rc = ofd_check(f->fd, perm, unshared, &byte);
	file_set_bytes(f, rc ? old_perm : perm, rc ? old_unshared : unshared);
	if (!rc)
		return 0;
	if (rc < 0 && ofd_unsupported(rc)) {
		td_log(TD_LOG_WARN, "%s: the file system has no byte-range "
		       "locks (%s): other processes and hosts are not kept "
		       "from writing it", path, strerror(-rc));
		f->nolock = true;
		f->perm = f->unshared = 0;
		return 0;
	}
	if (rc < 0) {
		snprintf(err, errlen, "%s: cannot lock: %s", path,
			 strerror(-rc));
		return rc;
	}
	{
		char who[256];

		/* A writer's bytes (1xx) in the way, or a reader's (2xx). */
		holders_describe(f->dev, f->ino, f->fd,
				 byte < TD_LOCK_SHARED_BASE, who, sizeof(who));
		snprintf(err, errlen, "%s is in use %s", path, who);
	}
	return -EBUSY;
}

static void file_free(struct lock_file *f)
{
	if (f->table)
		td_list_del(&f->link);
	if (f->fd >= 0)
		close(f->fd);	/* drops every OFD byte */
	free(f);
}

/* lock_acquire_fd with t's mutex held. */
static int lock_acquire_locked(struct td_lock_table *t, int fd,
			       const char *path, enum td_lock_mode mode,
			       enum td_lock_role role, const void *owner,
			       const char *name, struct td_lock **out,
			       char *err, size_t errlen)
{
	struct lock_file *f;
	struct td_lock *l;
	const struct td_lock *h;
	struct stat st;
	unsigned perm, unshared;
	bool fresh = false;
	int rc;

	if (fstat(fd, &st) < 0) {
		rc = -errno;
		close(fd);
		snprintf(err, errlen, "%s: %s", path, strerror(-rc));
		return rc;
	}
	/* A directory, FIFO or socket is no image, whatever the driver. */
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
		close(fd);
		snprintf(err, errlen, "%s: not a regular file or block device",
			 path);
		return -EINVAL;
	}
	f = table_find(t, st.st_dev, st.st_ino);
	if (f) {
		close(fd);
		if ((h = file_conflict(f, mode, owner))) {
			hold_describe(h, path, err, errlen);
			return -EBUSY;
		}
	} else {
		f = calloc(1, sizeof(*f));
		if (!f) {
			close(fd);
			return -ENOMEM;
		}
		f->table = t;
		f->dev = st.st_dev;
		f->ino = st.st_ino;
		f->fd = fd;
		td_list_init(&f->holds);
		if (t)
			td_list_add_tail(&f->link, &t->files);
		fresh = true;
	}
	l = calloc(1, sizeof(*l));
	if (!l) {
		rc = -ENOMEM;
		goto fail;
	}
	/* Only what the new hold adds is tested: a reader joining readers
	 * needs nothing new. */
	file_bits(f, mode, &perm, &unshared);
	if ((rc = file_set_bits(f, perm, unshared, path, err, errlen)))
		goto fail;
	l->file = f;
	l->mode = mode;
	l->role = role;
	l->owner = owner;
	l->name = name;
	td_list_add_tail(&l->link, &f->holds);
	*out = l;
	return 0;
fail:
	free(l);
	if (fresh)
		file_free(f);
	return rc;
}

/* td_lock_acquire on an fd of the image's own (closed on failure). */
static int lock_acquire_fd(struct td_lock_table *t, int fd, const char *path,
			   enum td_lock_mode mode, enum td_lock_role role,
			   const void *owner, const char *name,
			   struct td_lock **out, char *err, size_t errlen)
{
	int rc;

	table_lock(t);
	rc = lock_acquire_locked(t, fd, path, mode, role, owner, name, out,
				 err, errlen);
	table_unlock(t);
	return rc;
}

int td_lock_acquire(struct td_lock_table *t, const char *path,
		    enum td_lock_mode mode, enum td_lock_role role,
		    const void *owner, const char *name,
		    struct td_lock **out, char *err, size_t errlen)
{
	int fd, rc;

	*out = NULL;
	/* O_NONBLOCK: a FIFO named as an image must not hang the open. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(-rc));
		return rc;
	}
	return lock_acquire_fd(t, fd, path, mode, role, owner, name, out, err,
			       errlen);
}

int td_lock_acquire_fd(struct td_lock_table *t, int fd, const char *path,
		       enum td_lock_mode mode, enum td_lock_role role,
		       const void *owner, const char *name,
		       struct td_lock **out, char *err, size_t errlen)
{
	/* A dup shares the open file description, and so its OFD locks. */
	int dfd = fcntl(fd, F_DUPFD_CLOEXEC, 0), rc;

	*out = NULL;
	if (dfd < 0) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(-rc));
		return rc;
	}
	return lock_acquire_fd(t, dfd, path, mode, role, owner, name, out,
			       err, errlen);
}

void td_lock_release(struct td_lock *l)
{
	struct td_lock_table *t;
	struct lock_file *f;

	if (!l)
		return;
	f = l->file;
	t = f->table;
	table_lock(t);
	td_list_del(&l->link);
	free(l);
	if (td_list_empty(&f->holds)) {
		file_free(f);
	} else if (!f->nolock) {
		/* What the others need (a writer left: they let others in). */
		unsigned perm, unshared;

		file_bits(f, TD_LOCK_STANDBY, &perm, &unshared);
		file_set_bytes(f, perm, unshared);
	}
	table_unlock(t);
}


int td_lock_describe(struct td_lock_table *t, const char *path, char *buf,
		     size_t len)
{
	const struct lock_file *f;
	const struct td_list *pos;
	struct stat st;
	int fd, w, r, c;

	buf[0] = '\0';
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		c = -errno;
		close(fd);
		return c;
	}
	/* The table first: a name beats "this process" from the OFD test. */
	table_lock(t);
	f = table_find(t, st.st_dev, st.st_ino);
	if (f && !td_list_empty(&f->holds)) {
		enum td_lock_mode m = file_mode(f);
		const struct td_lock *h = NULL;

		close(fd);
		/* The writer, else the first reader. */
		for (pos = f->holds.next; pos != &f->holds; pos = pos->next) {
			h = td_container_of(pos, struct td_lock, link);
			if (h->mode == m)
				break;
		}
		snprintf(buf, len, "%s by %s", m == TD_LOCK_WRITE ?
			 "read-write" : m == TD_LOCK_READ ? "read-only" :
			 "in standby",
			 h && h->name ? h->name : "a VBD");
		table_unlock(t);
		return 0;
	}
	table_unlock(t);
	w = ofd_held(fd, TD_LOCK_PERM_BASE + PERM_WRITE);
	r = ofd_held(fd, TD_LOCK_SHARED_BASE + PERM_WRITE);
	c = ofd_held(fd, TD_LOCK_PERM_BASE + PERM_CONSISTENT_READ);
	close(fd);
	if (w < 0 || r < 0 || c < 0 || (!w && !r && !c))
		return 0;	/* free, or the file system cannot tell */
	holders_describe(st.st_dev, st.st_ino, -1, w > 0, buf, len);
	return 0;
}
