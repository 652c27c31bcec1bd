/* SPDX-License-Identifier: MIT */
/*
 * Engine-private: one image of a VBD's chain.  td-vbd.c builds and walks
 * chains; td-driver.c, which implements what drivers call, follows a
 * request's image to its parent (td_forward_request).  Drivers never see
 * this: they get the td_driver_t inside.
 */
#ifndef TD_IMAGE_H
#define TD_IMAGE_H

#include <sys/types.h>

#include <tapfs/engine.h>

struct td_lock;

/*
 * A read-only parent is shared: every chain of the engine that stands on
 * the same file (device and inode), opened by the same driver with the
 * same flags, holds the one td_image_t (one fd, one metadata cache), and
 * its own parents with it.  users counts the holds; owners[] says whose
 * they are (a VBD's owner, once per hold), for the lock's name.  An image
 * that cannot be shared (a leaf, a filter's, one this VBD also holds
 * read-write: a snapshot's old leaf) is private: shared false.
 */
struct td_image {
	td_driver_t	 drv;
	td_image_t	*parent;	/* towards the base, NULL at the base */
	struct td_lock	*lock;		/* NULL: not a file */

	bool		 shared;
	unsigned	 users;
	const td_vbd_t	**owners;	/* users of them */
	unsigned	 owners_cap;
	dev_t		 dev;
	ino_t		 ino;
	struct td_list	 link;		/* in the engine's shared list */
	char		 lock_name[TD_VBD_NAME_MAX + 32];
};

/*
 * td_engine_free: every driver's shared state finished (td-driver.c), and
 * the options freed.
 */
void td_engine_drivers_fini(struct td_engine *e);

#endif
