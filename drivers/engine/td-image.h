/* SPDX-License-Identifier: MIT */
/*
 * Engine-private: one image of a VBD's chain.  td-vbd.c builds and walks
 * chains; td-driver.c, which implements what drivers call, follows a
 * request's image to its parent (td_forward_request).  Drivers never see
 * this: they get the td_driver_t inside.
 */
#ifndef TD_IMAGE_H
#define TD_IMAGE_H

#include <tapfs/engine.h>

struct td_lock;

struct td_image {
	td_driver_t	 drv;
	td_image_t	*parent;	/* towards the base, NULL at the base */
	td_vbd_t	*vbd;
	struct td_lock	*lock;		/* NULL: not a file */
};

#endif
