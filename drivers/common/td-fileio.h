/* SPDX-License-Identifier: MIT */
/*
 * Synchronous file helpers shared by the image code that runs at open
 * time and in tapfs-img (vhd-image.c, qcow2-image.c): never on the data
 * path.
 */
#ifndef TD_FILEIO_H
#define TD_FILEIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <tapfs/tapdisk.h>

/* pread exactly len bytes: 0, -errno, or -EIO at the end of the file. */
int td_pread_full(int fd, void *buf, size_t len, uint64_t off);
/* pwrite exactly len bytes: 0, -errno, or -EIO if nothing is written. */
int td_pwrite_full(int fd, const void *buf, size_t len, uint64_t off);
/*
 * pread len bytes, zero-filling what lies past the end of the file (a
 * header or table that a short file ends inside): 0 or -errno.
 */
int td_pread_zero(int fd, void *buf, size_t len, uint64_t off);
/*
 * Open an image's own file (td_open_file) with O_DIRECT if the file
 * system takes it and the alignment it then needs (statx STATX_DIOALIGN,
 * else a block device's logical block size: 4096 on a 4Kn device) is a
 * power of two of at most max_align bytes; else buffered.  Returns the
 * fd or -errno; *direct says which, *align is the alignment O_DIRECT
 * needs here (0 if the file system refuses O_DIRECT).  TD_OPEN_UNSAFE in
 * tdflags: buffered always (QEMU's cache=unsafe: the page cache takes
 * the writes, the caller syncs the file when it is complete).
 */
int td_open_direct(const char *path, int flags, td_flag_t tdflags,
		   uint32_t max_align,
		   bool *direct, uint32_t *align);
/*
 * open(2) for an image's own file.  While the engine opens an image it
 * has already opened race-free (td_open_redirect), every open of that
 * path by the driver reopens that very file (/proc/self/fd/N): a path
 * component swapped for a symbolic link in between changes nothing.
 * Otherwise a plain open(2).  Only a regular file or a block device is
 * opened: anything else fails, errno EISDIR for a directory and EINVAL
 * for a FIFO, socket or character device (opened without waiting for a
 * FIFO's writer), whose reads would block the engine's loop.
 */
int td_open_file(const char *path, int flags);
/*
 * Route td_open_file(path) to fd on this thread until called again with
 * NULL.  For the engine, around a driver's td_open.
 */
void td_open_redirect(const char *path, int fd);
/* Format the reason into err (if given) and return ret. */
int td_errf(char *err, size_t errlen, int ret, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/*
 * Read up to len bytes from the start of the file at path (a format's
 * probe): 0 with the count in *got, or -errno.
 */
int td_read_head(const char *path, void *buf, size_t len, size_t *got);
/*
 * path (a backing or parent file's name) resolved against the directory
 * of base, the image that names it (absolute: unchanged); malloc'd, NULL
 * when out of memory.
 */
char *td_path_resolve(const char *base, const char *path);

/*
 * The name a child image at path records for its parent at parent: the
 * parent's base name when both share a directory (the pair can move
 * together), else parent as given.  buf[len] holds a base name; the
 * result is buf or parent.
 */
const char *td_path_backing_name(const char *path, const char *parent,
				 char *buf, size_t len);

#endif
