/* SPDX-License-Identifier: MIT */
/*
 * aio: a raw image file or block device through libaio with O_DIRECT.
 * Every read and write becomes one tiocb from a pool preallocated at
 * open; flush is an asynchronous fsync (falling back to fsync(2) on file
 * systems that refuse it); discard punches a hole.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <tapfs/engine.h>
#include <tapfs/log.h>

#include "rawfile.h"

/* More than the VBD ever has in flight on one image. */
#define AIO_MAX_IOCBS	1024

struct aio_state {
	struct td_rawfile rf;
	bool		  sync_flush;	/* aio fsync refused: use fsync(2) */
	struct td_pool	  tiocbs;
};

static int aio_open(td_driver_t *drv, const char *path, td_flag_t flags)
{
	struct aio_state *s = drv->data;
	int err;

	err = td_rawfile_open(&s->rf, drv, path, flags, true);
	if (err)
		return err;
	err = td_pool_init(&s->tiocbs, AIO_MAX_IOCBS, sizeof(struct tiocb),
			   sizeof(void *));
	if (err) {
		td_rawfile_close(&s->rf);
		return err;
	}
	return 0;
}

static int aio_close(td_driver_t *drv)
{
	struct aio_state *s = drv->data;
	int err = 0;

	if (!(drv->flags & TD_OPEN_RDONLY) && fsync(s->rf.fd) < 0) {
		err = -errno;
		td_log(TD_LOG_ERR, "%s: fsync on close: %m", drv->name);
	}
	td_rawfile_close(&s->rf);
	td_pool_fini(&s->tiocbs);
	return err;
}

static void aio_done(struct tiocb *t, long res)
{
	td_driver_t *drv = t->arg;
	struct aio_state *s = drv->data;
	td_request_t treq = t->treq;
	size_t len = (size_t)treq.secs << TD_SECTOR_SHIFT;
	int err = 0;

	td_pool_put(&s->tiocbs, t);
	if (res < 0) {
		err = (int)res;
	} else if ((size_t)res < len) {
		if (treq.op == TD_OP_READ)	/* past the end of the file */
			memset(treq.buf + res, 0, len - (size_t)res);
		else
			err = -EIO;
	}
	td_complete_request(treq, err);
}

static void aio_queue_rw(td_driver_t *drv, td_request_t treq)
{
	struct aio_state *s = drv->data;
	struct tiocb *t = td_pool_get(&s->tiocbs);
	size_t len = (size_t)treq.secs << TD_SECTOR_SHIFT;
	off_t off = (off_t)(treq.sec << TD_SECTOR_SHIFT);

	if (!t) {
		td_complete_request(treq, -EBUSY);	/* retried */
		return;
	}
	if (treq.op == TD_OP_READ)
		td_prep_read(t, s->rf.fd, treq.buf, len, off, aio_done, drv);
	else
		td_prep_write(t, s->rf.fd, treq.buf, len, off, aio_done, drv);
	t->treq = treq;
	td_queue_tiocb(drv, t);
}

static void aio_flush_done(struct tiocb *t, long res)
{
	td_driver_t *drv = t->arg;
	struct aio_state *s = drv->data;
	td_request_t treq = t->treq;

	td_pool_put(&s->tiocbs, t);
	if (res == -EINVAL) {
		td_log(TD_LOG_INFO, "%s: no asynchronous fsync here; using "
		       "fsync(2)", drv->name);
		s->sync_flush = true;
		res = fsync(s->rf.fd) < 0 ? -errno : 0;
	}
	td_complete_request(treq, res < 0 ? (int)res : 0);
}

static void aio_queue_flush(td_driver_t *drv, td_request_t treq)
{
	struct aio_state *s = drv->data;
	struct tiocb *t;

	if (s->sync_flush || !(t = td_pool_get(&s->tiocbs))) {
		td_complete_request(treq, fsync(s->rf.fd) < 0 ? -errno : 0);
		return;
	}
	td_prep_fsync(t, s->rf.fd, aio_flush_done, drv);
	t->treq = treq;
	td_queue_tiocb(drv, t);
}

static void aio_queue_discard(td_driver_t *drv, td_request_t treq)
{
	struct aio_state *s = drv->data;

	td_complete_request(treq, td_rawfile_discard(&s->rf,
		treq.sec << TD_SECTOR_SHIFT,
		(uint64_t)treq.secs << TD_SECTOR_SHIFT));
}

static void aio_debug(td_driver_t *drv, FILE *out)
{
	struct aio_state *s = drv->data;

	fprintf(out, "aio:%s fd %d%s%s, %u/%u iocbs free\n", drv->name,
		s->rf.fd, s->rf.direct ? " O_DIRECT" : "",
		s->rf.blockdev ? " blockdev" : "", s->tiocbs.nfree,
		s->tiocbs.count);
}

const struct tap_disk tapdisk_aio = {
	TD_DISK_VERSION,
	.name			= "aio",
	.description		= "raw image or device, libaio + O_DIRECT",
	.private_data_size	= sizeof(struct aio_state),
	.td_open		= aio_open,
	.td_close		= aio_close,
	.td_queue_read		= aio_queue_rw,
	.td_queue_write		= aio_queue_rw,
	.td_debug		= aio_debug,
	.td_queue_flush		= aio_queue_flush,
	.td_queue_discard	= aio_queue_discard,
	.td_create		= td_rawfile_create,
};
