/* SPDX-License-Identifier: MIT */
/*
 * Image locks: at most one writer per image file - across the VBDs of one
 * daemon, across processes, and across hosts that share a file system.
 *
 * Two layers, one call:
 *
 *  - in one process, a lock table (one for all its engines: a loop's
 *    engine each with -o workers=N, td_engine_join) knows every image
 *    file held, by device and inode, with the name of each holder
 *    ("g1/a"), so that a refusal names the VBD that holds the image;
 *  - between processes and hosts, each image file held is open once more
 *    (read-only, a "lock fd") and carries open-file-description byte-range
 *    locks (F_OFD_SETLK) laid out as QEMU's file-posix driver lays them,
 *    so that QEMU and tapfs see each other's locks.  The kernel (or the
 *    NFSv4 server) frees them when the holder dies.
 *
 * The QEMU layout: byte 100 + i held (a shared lock) means "I use
 * permission i"; byte 200 + i held means "I do not let others use
 * permission i".  Permissions: 0 consistent read, 1 write, 2 write
 * unchanged, 3 resize.  A writer holds 100, 101, 103 and 201, 203 (as
 * QEMU's writer does); a reader holds 100 and 201, 203; a standby (a VBD
 * handing an image over, or waiting to take it) holds 100 only.  An image
 * file's bytes are those of all its holds in this process together.  Before using a
 * permission one tests that nobody holds its "not shared" byte, and
 * before refusing one, that nobody holds its "in use" byte.
 *
 * Everything here runs at open and close time, never on the data path.
 */
#ifndef TAPFS_LOCK_H
#define TAPFS_LOCK_H

#include <stdbool.h>
#include <stddef.h>

enum td_lock_mode {
	TD_LOCK_READ,		/* read-only: others may read, not write */
	TD_LOCK_WRITE,		/* read-write: nobody else but readers that
				 * do not mind (QEMU's force-share) */
	TD_LOCK_STANDBY,	/* reads, and lets one writer in: the leaf
				 * of a VBD waiting to take an image over,
				 * or one that handed it over (QEMU's
				 * force-share reader) */
};

/* What a holder does with the image, for messages. */
enum td_lock_role {
	TD_LOCK_ROLE_IMAGE,	/* the image a VBD (or a tool) opened */
	TD_LOCK_ROLE_PARENT,	/* a read-only parent in someone's chain */
};

/* The first bytes of QEMU's layout (RAW_LOCK_PERM_BASE and _SHARED_BASE) */
#define TD_LOCK_PERM_BASE	100
#define TD_LOCK_SHARED_BASE	200

struct td_lock_table;
struct td_lock;

/*
 * A table, one reference held.  Any thread may call what follows; a
 * table's mutex keeps its engines' threads apart.
 */
struct td_lock_table *td_lock_table_new(void);
/* One more reference (an engine joining another's family): t. */
struct td_lock_table *td_lock_table_get(struct td_lock_table *t);
/* Drop a reference; the last frees the table, empty by then. */
void td_lock_table_free(struct td_lock_table *t);

/*
 * Lock the image file at path for owner.  owner is an identity (a VBD):
 * holds of one owner never refuse each other (a snapshot holds the old
 * leaf read-write and, in its new chain, read-only for a moment).  name
 * names the owner in other holders' refusals ("g1/a"); it must stay valid,
 * and may change, while the lock is held.  t may be NULL (a tool with one
 * owner): the OFD locks only.
 *
 * Fails at once, never waits: -EINVAL for anything but a regular file or
 * a block device; -EBUSY with a reason naming the holder
 * ("g1/a holds /imgs/x.qcow2 read-write", or the PID and program of
 * another process where this host can see it), or another -errno with
 * the reason in err.  A file system without byte-range locks (NFSv3
 * without lockd) is logged once and the image is locked in this process
 * only.
 */
int  td_lock_acquire(struct td_lock_table *t, const char *path,
		     enum td_lock_mode mode, enum td_lock_role role,
		     const void *owner, const char *name,
		     struct td_lock **out, char *err, size_t errlen);
/*
 * The same on an open fd of the image (any mode; the lock takes its own
 * reference): the image locked is the one the caller opened, whatever
 * happens to the path meanwhile.
 */
int  td_lock_acquire_fd(struct td_lock_table *t, int fd, const char *path,
			enum td_lock_mode mode, enum td_lock_role role,
			const void *owner, const char *name,
			struct td_lock **out, char *err, size_t errlen);
/* Release a lock (NULL is fine); the bytes go when the last hold goes. */
void td_lock_release(struct td_lock *l);

/*
 * Who holds the image at path, in words: "" (nobody), or for example
 * "read-write by g1/a" (t's holders) / "read-write by pid 4242
 * (qemu-storage-daemon)" / "read-only by another process (another host?)".
 * Returns 0, or -errno when path cannot be opened.
 */
int  td_lock_describe(struct td_lock_table *t, const char *path, char *buf,
		      size_t len);

#endif
