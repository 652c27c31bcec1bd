/* SPDX-License-Identifier: MIT */
/* Raw image files and block devices: open, size, discard, create. */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <tapfs/log.h>

#include "common/td-fileio.h"
#include "rawfile.h"

int td_rawfile_open(struct td_rawfile *rf, td_driver_t *drv,
		    const char *path, td_flag_t flags, bool want_direct)
{
	int oflags = (flags & TD_OPEN_RDONLY ? O_RDONLY : O_RDWR) | O_CLOEXEC;
	uint32_t align = 0;
	uint64_t bytes;
	struct stat st;
	int fd, err;

	rf->fd = -1;
	rf->direct = false;
	if (want_direct)
		fd = td_open_direct(path, oflags, flags, TD_MAX_IO_ALIGN,
				    &rf->direct, &align);
	else if ((fd = td_open_file(path, oflags)) < 0)
		fd = -errno;
	if (fd < 0)
		return fd;	/* the errno says it all (tapdisk.h) */
	rf->fd = fd;
	/* A note for the daemon's log, below a one-shot tool's level. */
	if (want_direct && !rf->direct && !align)
		td_log(TD_LOG_INFO, "%s: file system refuses O_DIRECT; using "
		       "buffered I/O (data is cached twice)", path);
	else if (want_direct && !rf->direct)
		td_log(TD_LOG_INFO, "%s: O_DIRECT needs %u-byte alignment; "
		       "using buffered I/O", path, align);
	if (fstat(rf->fd, &st) < 0)
		goto fail_errno;
	if (S_ISBLK(st.st_mode)) {
		rf->blockdev = true;
		if (ioctl(rf->fd, BLKGETSIZE64, &bytes) < 0)
			goto fail_errno;
	} else if (S_ISREG(st.st_mode)) {
		rf->blockdev = false;
		bytes = (uint64_t)st.st_size;
	} else {
		err = td_errf(drv->error, sizeof(drv->error), -EINVAL, "%s: "
			      "not a regular file or block device", path);
		goto fail;
	}
	if (bytes & (TD_SECTOR_SIZE - 1))
		td_log(TD_LOG_WARN, "%s: size %llu is not a multiple of %u; "
		       "the last %llu bytes are not visible", path,
		       (unsigned long long)bytes, TD_SECTOR_SIZE,
		       (unsigned long long)(bytes & (TD_SECTOR_SIZE - 1)));
	drv->info.size = bytes >> TD_SECTOR_SHIFT;
	drv->info.sector_size = TD_SECTOR_SIZE;
	/* A 4Kn device: the VBD aligns requests to 4 KiB. */
	drv->info.io_align = rf->direct && align > TD_SECTOR_SIZE ? align : 0;
	return 0;

fail_errno:
	err = -errno;
fail:
	close(rf->fd);
	rf->fd = -1;
	return err;
}

void td_rawfile_close(struct td_rawfile *rf)
{
	if (rf->fd >= 0)
		close(rf->fd);
	rf->fd = -1;
}

int td_rawfile_discard(struct td_rawfile *rf, uint64_t off, uint64_t len)
{
	if (rf->blockdev) {
		uint64_t range[2] = { off, len };

		if (ioctl(rf->fd, BLKDISCARD, range) < 0)
			return -errno;
		return 0;
	}
	if (fallocate(rf->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		      (off_t)off, (off_t)len) < 0)
		return -errno;
	return 0;
}

int td_rawfile_create(const char *path, uint64_t size, td_flag_t flags)
{
	int fd, err = 0;

	(void)flags;
	if (!size || size & (TD_SECTOR_SIZE - 1))
		return -EINVAL;
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)size) < 0 || fsync(fd) < 0)
		err = -errno;
	close(fd);
	if (err)
		unlink(path);
	return err;
}
