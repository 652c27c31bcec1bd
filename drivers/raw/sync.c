/* SPDX-License-Identifier: MIT */
/*
 * sync: a raw image through pread/pwrite, completed before returning.
 * Blocks the loop by design: for file systems without O_DIRECT or aio,
 * and as the simplest reference driver.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <tapfs/log.h>

#include "rawfile.h"

struct sync_state {
	struct td_rawfile rf;
};

static int sync_open(td_driver_t *drv, const char *path, td_flag_t flags)
{
	struct sync_state *s = drv->data;

	return td_rawfile_open(&s->rf, drv, path, flags, false);
}

static int sync_close(td_driver_t *drv)
{
	struct sync_state *s = drv->data;
	int err = 0;

	if (!(drv->flags & TD_OPEN_RDONLY) && fsync(s->rf.fd) < 0) {
		err = -errno;
		td_log(TD_LOG_ERR, "%s: fsync on close: %m", drv->name);
	}
	td_rawfile_close(&s->rf);
	return err;
}

static void sync_queue_rw(td_driver_t *drv, td_request_t treq)
{
	struct sync_state *s = drv->data;
	size_t len = (size_t)treq.secs << TD_SECTOR_SHIFT, done = 0;
	off_t off = (off_t)(treq.sec << TD_SECTOR_SHIFT);
	ssize_t n;

	while (done < len) {
		if (treq.op == TD_OP_READ)
			n = pread(s->rf.fd, treq.buf + done, len - done,
				  off + (off_t)done);
		else
			n = pwrite(s->rf.fd, treq.buf + done, len - done,
				   off + (off_t)done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			td_complete_request(treq, -errno);
			return;
		}
		if (n == 0) {
			if (treq.op != TD_OP_READ) {
				td_complete_request(treq, -EIO);
				return;
			}
			memset(treq.buf + done, 0, len - done);
			break;
		}
		done += (size_t)n;
	}
	td_complete_request(treq, 0);
}

static void sync_queue_flush(td_driver_t *drv, td_request_t treq)
{
	struct sync_state *s = drv->data;

	td_complete_request(treq, fsync(s->rf.fd) < 0 ? -errno : 0);
}

static void sync_queue_discard(td_driver_t *drv, td_request_t treq)
{
	struct sync_state *s = drv->data;

	td_complete_request(treq, td_rawfile_discard(&s->rf,
		treq.sec << TD_SECTOR_SHIFT,
		(uint64_t)treq.secs << TD_SECTOR_SHIFT));
}

const struct tap_disk tapdisk_sync = {
	TD_DISK_VERSION,
	.name			= "sync",
	.description		= "raw image or device, pread/pwrite",
	.private_data_size	= sizeof(struct sync_state),
	.td_open		= sync_open,
	.td_close		= sync_close,
	.td_queue_read		= sync_queue_rw,
	.td_queue_write		= sync_queue_rw,
	.td_queue_flush		= sync_queue_flush,
	.td_queue_discard	= sync_queue_discard,
	.td_create		= td_rawfile_create,
};
