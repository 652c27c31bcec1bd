/* SPDX-License-Identifier: MIT */
/*
 * td-grace: a grace period for freed space of an image file.
 *
 * A driver that frees space while I/O is in flight (a qcow2 cluster
 * discarded, or replaced by copy on write, while a read or an in-place
 * write of it has not completed) must not hand that space to a new user
 * before the old I/O is done, or the old I/O meets the new user's data.
 * The driver brackets each data I/O with td_grace_begin/td_grace_end and
 * gives freed space to td_grace_defer instead of freeing it; the space
 * is released (the release callback called) once every I/O that began
 * before it was deferred has ended.
 *
 * Two epochs: I/Os count in the current epoch; space deferred in epoch E
 * waits for E's I/Os.  When the other epoch has no I/O left and space is
 * waiting, the epochs switch, so a steady stream of new I/O never holds
 * space back for longer than the I/Os already in flight.  No allocation
 * on the I/O path; td_grace_defer grows an array.
 */
#ifndef TAPFS_TD_GRACE_H
#define TAPFS_TD_GRACE_H

#include <stdint.h>
#include <stddef.h>

struct td_grace;

/*
 * Release [off, off + len) for real; flags as given to td_grace_defer.
 * It must not call td_grace_defer.
 */
typedef void (*td_grace_release_t)(void *ctx, uint64_t off, uint64_t len,
				   unsigned flags);

struct td_grace_extent {
	uint64_t	 off;
	uint64_t	 len;
	unsigned	 flags;
};

struct td_grace_epoch {
	struct td_grace		*g;
	unsigned		 inflight;
	struct td_grace_extent	*ext;		/* deferred in this epoch */
	size_t			 n, cap;
};

struct td_grace {
	struct td_grace_epoch	 ep[2];
	unsigned		 cur;
	td_grace_release_t	 release;
	void			*ctx;
};

void td_grace_init(struct td_grace *g, td_grace_release_t release,
		   void *ctx);
/* Free the memory; what still waits is dropped (leaked: not released). */
void td_grace_fini(struct td_grace *g);

/* A data I/O begins: keep the returned epoch for td_grace_end. */
struct td_grace_epoch *td_grace_begin(struct td_grace *g);
/* It ended (completed or failed): may release deferred space. */
void td_grace_end(struct td_grace_epoch *ep);

/*
 * Free [off, off + len) once the I/Os in flight now have ended (at once
 * if there are none).  -ENOMEM: nothing deferred; the caller must not
 * free the space (leaking it is safe).
 */
int td_grace_defer(struct td_grace *g, uint64_t off, uint64_t len,
		   unsigned flags);

/* Release everything deferred; for close, when no I/O is in flight. */
void td_grace_release_all(struct td_grace *g);

/* Extents waiting for a release. */
size_t td_grace_pending(const struct td_grace *g);

#endif /* TAPFS_TD_GRACE_H */
