/* SPDX-License-Identifier: MIT */
/* What the image fuzz targets share (tests/fuzz/fuzz-engine.c). */
#ifndef TAPFS_FUZZ_ENGINE_H
#define TAPFS_FUZZ_ENGINE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

/*
 * The input as an image file: a memfd named name holding data, or -1
 * (close it after use).  Inline, so that targets built without the
 * engine (fuzz-vhd) share it too.
 */
static inline int fuzz_memfd(const char *name, const uint8_t *data,
			     size_t size)
{
	int fd = memfd_create(name, MFD_CLOEXEC);

	if (fd >= 0 && write(fd, data, size) != (ssize_t)size) {
		close(fd);
		fd = -1;
	}
	return fd;
}

/*
 * Read the image at path through driver, as the daemon and tapfs-img
 * read: a VBD on an engine (one for the run), its chain opened by the
 * engine (a backing file the input names does not exist, or is
 * refused), 64 sectors at a time, at most max_secs sectors.
 */
void fuzz_read_engine(const char *driver, const char *path,
		      uint64_t max_secs);

#endif
