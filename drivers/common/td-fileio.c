/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <linux/fs.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <tapfs/tapdisk.h>

#include <tapfs/log.h>

#include "td-fileio.h"

/*
 * pread or pwrite until len bytes are done or a call returns 0 (the end
 * of the file, for a read): 0 with the count in *done, or -errno.
 */
static int full_io(int fd, void *buf, size_t len, uint64_t off, bool write,
		   size_t *done)
{
	*done = 0;
	while (*done < len) {
		char *p = (char *)buf + *done;
		size_t left = len - *done;
		off_t at = (off_t)(off + *done);
		ssize_t n = write ? pwrite(fd, p, left, at) :
				    pread(fd, p, left, at);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		*done += (size_t)n;
	}
	return 0;
}

int td_pread_full(int fd, void *buf, size_t len, uint64_t off)
{
	size_t done;
	int ret = full_io(fd, buf, len, off, false, &done);

	return ret ? ret : done < len ? -EIO : 0;
}

int td_pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
	size_t done;
	int ret = full_io(fd, (void *)buf, len, off, true, &done);

	return ret ? ret : done < len ? -EIO : 0;
}

int td_pread_zero(int fd, void *buf, size_t len, uint64_t off)
{
	size_t done;
	int ret = full_io(fd, buf, len, off, false, &done);

	if (!ret)
		memset((char *)buf + done, 0, len - done);
	return ret;
}

/*
 * The image the engine is opening on this thread (td_open_redirect):
 * thread-local, set and cleared around one td_open, so no driver state.
 */
static __thread const char *redirect_path;
static __thread int redirect_fd = -1;

void td_open_redirect(const char *path, int fd)
{
	redirect_path = path;
	redirect_fd = path ? fd : -1;
}

int td_open_file(const char *path, int flags)
{
	char proc[40];
	struct stat st;
	int fd, e;

	/* O_NONBLOCK: opening a FIFO must not wait for a writer. */
	if (!redirect_path || strcmp(path, redirect_path)) {
		fd = open(path, flags | O_NONBLOCK);
	} else {
		snprintf(proc, sizeof(proc), "/proc/self/fd/%d", redirect_fd);
		fd = open(proc, (flags | O_NONBLOCK) &
			 ~(O_CREAT | O_EXCL | O_NOFOLLOW));
	}
	if (fd < 0)
		return -1;
	/* A FIFO, socket, terminal or directory is no image: its reads
	 * would block the loop (io_submit reads such files synchronously). */
	if (fstat(fd, &st) < 0)
		goto fail;
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
		errno = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
		goto fail;
	}
	if (!(flags & O_NONBLOCK) &&
	    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0)
		goto fail;
	return fd;
fail:
	e = errno;
	close(fd);
	errno = e;
	return -1;
}

static uint32_t td_dio_align(int fd)
{
	struct statx sx;
	struct stat st;
	int lbs;

	if (!statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) &&
	    (sx.stx_mask & STATX_DIOALIGN) && sx.stx_dio_offset_align)
		return sx.stx_dio_offset_align > sx.stx_dio_mem_align ?
		       sx.stx_dio_offset_align : sx.stx_dio_mem_align;
	if (!fstat(fd, &st) && S_ISBLK(st.st_mode) &&
	    !ioctl(fd, BLKSSZGET, &lbs) && lbs > 0)
		return (uint32_t)lbs;
	return TD_SECTOR_SIZE;
}

int td_open_direct(const char *path, int flags, td_flag_t tdflags,
		   uint32_t max_align, bool *direct, uint32_t *align)
{
	int fd;

	*direct = false;
	*align = 0;
	if (tdflags & TD_OPEN_UNSAFE) {
		fd = td_open_file(path, flags);
		return fd < 0 ? -errno : fd;
	}
	fd = td_open_file(path, flags | O_DIRECT);
	if (fd >= 0) {
		*align = td_dio_align(fd);
		if (*align <= max_align && !(*align & (*align - 1))) {
			*direct = true;
			return fd;
		}
		close(fd);
	} else if (errno != EINVAL) {
		return -errno;
	}
	fd = td_open_file(path, flags);
	return fd < 0 ? -errno : fd;
}

int td_errf(char *err, size_t errlen, int ret, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		td_vmsgf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return ret;
}

int td_read_head(const char *path, void *buf, size_t len, size_t *got)
{
	int fd = td_open_file(path, O_RDONLY | O_CLOEXEC), rc;

	*got = 0;
	if (fd < 0)
		return -errno;
	rc = full_io(fd, buf, len, 0, false, got);
	close(fd);
	return rc;
}

char *td_path_resolve(const char *base, const char *path)
{
	char *copy, *dir, *out;

	if (path[0] == '/')
		return strdup(path);
	copy = strdup(base);
	if (!copy)
		return NULL;
	dir = dirname(copy);
	if (asprintf(&out, "%s/%s", dir, path) < 0)
		out = NULL;
	free(copy);
	return out;
}

const char *td_path_backing_name(const char *path, const char *parent,
				 char *buf, size_t len)
{
	char *a = strdup(path), *b = strdup(parent);
	const char *name = parent;

	if (a && b && !strcmp(dirname(a), dirname(b))) {
		const char *slash = strrchr(parent, '/');

		snprintf(buf, len, "%s", slash ? slash + 1 : parent);
		name = buf;
	}
	free(a);
	free(b);
	return name;
}
