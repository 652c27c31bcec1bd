/* SPDX-License-Identifier: MIT */
/* Helpers shared by the raw drivers (aio, sync). */
#ifndef TD_RAWFILE_H
#define TD_RAWFILE_H

#include <stdbool.h>
#include <stdint.h>

#include <tapfs/tapdisk.h>

struct td_rawfile {
	int	 fd;
	bool	 blockdev;
	bool	 direct;	/* opened with O_DIRECT */
};

/*
 * Open a raw image (regular file or block device), with O_DIRECT when
 * want_direct and the file system allows it.  Fills drv->info.  Logs the
 * reason and returns -errno on failure.
 */
int  td_rawfile_open(struct td_rawfile *rf, td_driver_t *drv,
		     const char *path, td_flag_t flags, bool want_direct);
void td_rawfile_close(struct td_rawfile *rf);
/* Punch a hole (file) or BLKDISCARD (device); 0 or -errno. */
int  td_rawfile_discard(struct td_rawfile *rf, uint64_t off, uint64_t len);
/* Create a sparse raw image; fails with -EEXIST if path exists. */
int  td_rawfile_create(const char *path, uint64_t size, td_flag_t flags);

#endif
