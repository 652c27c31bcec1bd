/* SPDX-License-Identifier: MIT */
/* What the image fuzz targets share (tests/fuzz/fuzz-engine.c). */
#ifndef TAPFS_FUZZ_ENGINE_H
#define TAPFS_FUZZ_ENGINE_H

#include <stdint.h>

/*
 * Read the image at path through driver, as the daemon and tapfs-img
 * read: a VBD on an engine (one for the run), its chain opened by the
 * engine (a backing file the input names does not exist, or is
 * refused), 64 sectors at a time, at most max_secs sectors.
 */
void fuzz_read_engine(const char *driver, const char *path,
		      uint64_t max_secs);

#endif
