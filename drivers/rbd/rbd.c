/* SPDX-License-Identifier: MIT */
/*
 * rbd: a Ceph RBD image through librbd's asynchronous C API.
 *
 * The argument is POOL/IMAGE or POOL/NAMESPACE/IMAGE (rbd-target.h).  The
 * cluster is named by the engine's options ceph_conf (a ceph.conf naming
 * mon_host and the keyring; default: $CEPH_CONF, then /etc/ceph/ceph.conf)
 * and ceph_id (the client id, default "admin"), or by the target's own
 * ":conf=FILE:id=NAME" (QEMU's syntax; FILE judged by the path policy).
 * One cluster handle per distinct (conf, id) serves its images, on every
 * loop of the daemon: made at the first open (so after any fork of the
 * daemon: a librados client must not cross a fork); the mount's is shut
 * down with the engine, another one with its last image.
 *
 * Data path: every read, write, flush and discard is one rbd_aio_* call
 * whose completion librbd queues for polling; librbd signals the image's
 * eventfd (rbd_set_image_notification), which the engine's loop watches,
 * and the loop collects them with rbd_poll_io_events.  No thread of ours
 * sits between the loop and librbd; per-request state comes from a pool
 * allocated at open (librbd allocates its completion itself).  A flush
 * reaches rbd_aio_flush: librbd's cache is writeback once the first flush
 * was seen.
 *
 * Snapshots: "snapshot NAME" of an rbd VBD makes an RBD snapshot
 * (tapfs.N) of the running image; POOL/IMAGE@SNAP opens one, read-only.
 *
 * One writer: a read-write open takes the image's exclusive lock with
 * rbd_lock_acquire(RBD_LOCK_MODE_EXCLUSIVE) only if nobody holds it
 * (rbd_lock_get_owners says -ENOENT); a holder is named in the refusal
 * (EBUSY).  The lock stays in manual mode until close, so that librbd
 * never hands it to another writer on request.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <rados/librados.h>
#include <rbd/librbd.h>

#include <tapfs/engine.h>
#include <tapfs/log.h>
#include <tapfs/tapdisk.h>

#include "rbd-target.h"

/* More than the VBD ever has in flight on one image. */
#define RBD_MAX_REQS		1024
/* Completions collected per rbd_poll_io_events call. */
#define RBD_POLL_BATCH		64
#define RBD_DEFAULT_ID		"admin"
#define RBD_DEFAULT_POOL	"rbd"
/*
 * Seconds a connection to the monitors may take: the open blocks the
 * daemon's loop meanwhile (librados' default is 300).
 */
#define RBD_MOUNT_TIMEOUT	"10"
/* Most lock owners listed in a refusal. */
#define RBD_MAX_OWNERS		4
/* The names tapfs gives the snapshots it makes: tapfs.1, tapfs.2, ... */
#define RBD_SNAP_PREFIX		"tapfs."
/* Snapshot names tried past the count of an image's snapshots. */
#define RBD_SNAP_TRIES		1000
/* Room for the snapshot names .ctl shows (a longer list is cut "..."). */
#define RBD_SNAPS_TEXT		512

extern const struct tap_disk tapdisk_rbd;

/*
 * One connection to a cluster, per distinct (conf, id) pair: the mount's
 * (ceph_conf, ceph_id), and any other a target's ":conf=FILE:id=NAME"
 * names.  Held by every image open on it (refs); the mount's is kept
 * until the engine ends, another one is shut down with its last image.
 */
struct rbd_cluster {
	struct td_list	 link;		/* in rbd_clusters.list */
	char		*conf;		/* the ceph.conf read */
	char		 id[RBD_NAME_MAX + 1];
	unsigned	 refs;
	bool		 mount;		/* the mount's: never shut down early */
	rados_t		 rados;
	char		 addr[128];	/* our client's address, "" if unknown */
};

/*
 * A family's connections (td_engine_driver_state of the engine that
 * made them).  Every use is under rbd_clusters_mu: the loops' opens and
 * closes come with the other loops parked, but a take-over (the first
 * write of a standby VBD, vbd_switch_leaf) opens and closes on its
 * owner's loop whenever it comes.
 */
struct rbd_clusters {
	struct td_list	 list;
};

static pthread_mutex_t rbd_clusters_mu = PTHREAD_MUTEX_INITIALIZER;

/* One request in librbd's hands: the completion's argument. */
struct rbd_req {
	td_request_t	 treq;
	td_driver_t	*drv;
};

struct rbd_state {
	struct rbd_target	 target;
	struct rbd_cluster	*cl;		/* held while open */
	rados_ioctx_t		 io;
	rbd_image_t		 image;
	int			 efd;
	struct td_event		 ev;
	bool			 ev_added;
	struct td_pool		 reqs;
	rbd_completion_t	 comps[RBD_POLL_BATCH];
	uint64_t		 completed;
	/* The image's snapshots, as .ctl shows them, and how many. */
	char			 snaps[RBD_SNAPS_TEXT];
	unsigned		 nsnaps;
};

/* ---- the clusters -------------------------------------------------------- */

static void rbd_cluster_free(struct rbd_cluster *cl)
{
	rados_shutdown(cl->rados);
	free(cl->conf);
	free(cl);
}

static void rbd_clusters_fini(void *state)
{
	struct rbd_clusters *all = state;

	pthread_mutex_lock(&rbd_clusters_mu);
	while (!td_list_empty(&all->list)) {
		struct rbd_cluster *cl = td_container_of(all->list.next,
						struct rbd_cluster, link);

		td_list_del(&cl->link);
		rbd_cluster_free(cl);
	}
	pthread_mutex_unlock(&rbd_clusters_mu);
	free(all);
}

/*
 * The connections of e's family (td_engine_join: the loops of -o
 * workers=N), or NULL before the first.  One list for the family, kept
 * by the engine that made it: a librados client is thread-safe, so the
 * loops share it, and the daemon connects once per (conf, id) however
 * many loops it has.  Under rbd_clusters_mu.  The engines of a family
 * end together, after every VBD closed, so the list outlives its users.
 */
static struct rbd_clusters *rbd_clusters_find(struct td_engine *e)
{
	struct td_engine *p = e;
	struct rbd_clusters *all;

	do {
		all = td_engine_driver_state(p, &tapdisk_rbd);
		if (all)
			return all;
		p = p->peer;
	} while (p != e);
	return NULL;
}

/* The family's connections, made at the first call (on e); under the mutex. */
static struct rbd_clusters *rbd_clusters(struct td_engine *e)
{
	struct rbd_clusters *all = rbd_clusters_find(e);

	if (all)
		return all;
	all = calloc(1, sizeof(*all));
	if (!all)
		return NULL;
	td_list_init(&all->list);
	if (td_engine_set_driver_state(e, &tapdisk_rbd, all,
				       rbd_clusters_fini)) {
		free(all);
		return NULL;
	}
	return all;
}

static const char *rbd_conf_name(struct td_engine *e)
{
	const char *conf = td_engine_option(e, "ceph_conf");

	if (conf)
		return conf;
	conf = getenv("CEPH_CONF");
	return conf ? conf : "/etc/ceph/ceph.conf";
}

static const char *rbd_mount_id(struct td_engine *e)
{
	const char *id = td_engine_option(e, "ceph_id");

	return id ? id : RBD_DEFAULT_ID;
}

/* Is owner (a lock holder's address) one of this daemon's clients? */
static bool rbd_owner_ours(struct td_engine *e, const char *owner)
{
	struct rbd_clusters *all;
	struct td_list *pos;
	bool ours = false;

	pthread_mutex_lock(&rbd_clusters_mu);
	all = rbd_clusters_find(e);
	for (pos = all ? all->list.next : NULL; pos && pos != &all->list;
	     pos = pos->next) {
		struct rbd_cluster *cl = td_container_of(pos,
						struct rbd_cluster, link);

		if (cl->addr[0] && strstr(owner, cl->addr)) {
			ours = true;
			break;
		}
	}
	pthread_mutex_unlock(&rbd_clusters_mu);
	return ours;
}

/* A new connection to the cluster of conf as client.id. */
static int rbd_connect(const char *conf, const char *id,
		       struct rbd_cluster **out, char *err, size_t errlen)
{
	struct rbd_cluster *cl = calloc(1, sizeof(*cl));
	char *addrs = NULL;
	int rc;

	if (!cl || !(cl->conf = strdup(conf))) {
		free(cl);
		return -ENOMEM;
	}
	snprintf(cl->id, sizeof(cl->id), "%s", id);
	rc = rados_create(&cl->rados, id);
	if (rc) {
		snprintf(err, errlen, "rbd: cannot make a Ceph client "
			 "'client.%s': %s", id, strerror(-rc));
		free(cl->conf);
		free(cl);
		return rc;
	}
	rc = rados_conf_read_file(cl->rados, conf);
	if (rc) {
		snprintf(err, errlen, "rbd: cannot read Ceph configuration "
			 "%s: %s", conf, strerror(-rc));
		goto fail;
	}
	rados_conf_set(cl->rados, "client_mount_timeout", RBD_MOUNT_TIMEOUT);
	rc = rados_connect(cl->rados);
	if (rc) {
		snprintf(err, errlen, "rbd: cannot connect to the Ceph cluster"
			 " of %s as client.%s: %s", conf, id, strerror(-rc));
		goto fail;
	}
	if (rados_getaddrs(cl->rados, &addrs) == 0 && addrs) {
		snprintf(cl->addr, sizeof(cl->addr), "%s", addrs);
		rados_buffer_free(addrs);
	}
	td_log(TD_LOG_INFO, "rbd: connected to the Ceph cluster of %s as "
	       "client.%s (%s)", conf, id, cl->addr);
	*out = cl;
	return 0;
fail:
	rbd_cluster_free(cl);
	return rc;
}

/*
 * The conf file a target names, judged by the engine's path policy like
 * an image file (a .ctl writer must not make the daemon read any file),
 * unless it is the mount's own ceph_conf.  0 and the file to read in
 * *conf (malloc'd), or -errno with the reason.
 */
static int rbd_target_conf(struct td_engine *e, const struct rbd_target *t,
			   char **conf, char *err, size_t errlen)
{
	const char *mount = rbd_conf_name(e);
	char why[512], *real = NULL;
	int rc;

	if (!t->conf[0] || !strcmp(t->conf, mount)) {
		*conf = strdup(mount);
		return *conf ? 0 : -ENOMEM;
	}
	rc = td_engine_check_path(e, t->conf, &real, why, sizeof(why));
	if (rc) {
		snprintf(err, errlen, "rbd: Ceph configuration %s", why);
		return rc;
	}
	*conf = real ? real : strdup(t->conf);
	return *conf ? 0 : -ENOMEM;
}

/*
 * A held connection to t's cluster (its conf= and id=, else the mount's
 * ceph_conf and ceph_id), connected at the first call for that pair.  A
 * failed connection is not kept: the next open tries again.  Release it
 * with rbd_cluster_put.  Under rbd_clusters_mu (rbd_cluster_get).
 */
static int rbd_cluster_find_or_connect(struct td_engine *e,
				       const struct rbd_target *t,
				       struct rbd_cluster **out, char *err,
				       size_t errlen)
{
	struct rbd_clusters *all = rbd_clusters(e);
	const char *id = t->id[0] ? t->id : rbd_mount_id(e);
	struct rbd_cluster *cl;
	struct td_list *pos;
	char *conf;
	int rc;

	if (!all)
		return -ENOMEM;
	rc = rbd_target_conf(e, t, &conf, err, errlen);
	if (rc)
		return rc;
	for (pos = all->list.next; pos != &all->list; pos = pos->next) {
		cl = td_container_of(pos, struct rbd_cluster, link);
		if (!strcmp(cl->conf, conf) && !strcmp(cl->id, id)) {
			free(conf);
			cl->refs++;
			*out = cl;
			return 0;
		}
	}
	rc = rbd_connect(conf, id, &cl, err, errlen);
	if (!rc) {
		cl->mount = !strcmp(conf, rbd_conf_name(e)) &&
			    !strcmp(id, rbd_mount_id(e));
		cl->refs = 1;
		td_list_add_tail(&cl->link, &all->list);
		*out = cl;
	}
	free(conf);
	return rc;
}

static int rbd_cluster_get(struct td_engine *e, const struct rbd_target *t,
			   struct rbd_cluster **out, char *err, size_t errlen)
{
	int rc;

	pthread_mutex_lock(&rbd_clusters_mu);
	rc = rbd_cluster_find_or_connect(e, t, out, err, errlen);
	pthread_mutex_unlock(&rbd_clusters_mu);
	return rc;
}

/* Drop a hold of rbd_cluster_get; NULL is fine. */
static void rbd_cluster_put(struct rbd_cluster *cl)
{
	if (!cl)
		return;
	pthread_mutex_lock(&rbd_clusters_mu);
	if (!--cl->refs && !cl->mount) {
		td_log(TD_LOG_INFO, "rbd: disconnecting from the Ceph cluster "
		       "of %s (client.%s): its last image closed", cl->conf,
		       cl->id);
		td_list_del(&cl->link);
		rbd_cluster_free(cl);
	}
	pthread_mutex_unlock(&rbd_clusters_mu);
}

/* An I/O context on t's pool and namespace, its errors in words. */
static int rbd_ioctx(struct rbd_cluster *cl, const struct rbd_target *t,
		     rados_ioctx_t *io, char *err, size_t errlen)
{
	int rc = rados_ioctx_create(cl->rados, t->pool, io);

	if (rc == -ENOENT) {
		snprintf(err, errlen, "rbd: no pool '%s' in the Ceph cluster",
			 t->pool);
		return rc;
	}
	if (rc) {
		snprintf(err, errlen, "rbd: pool '%s': %s", t->pool,
			 strerror(-rc));
		return rc;
	}
	rados_ioctx_set_namespace(*io, t->ns);
	return 0;
}

/* "rbd/ns/img" of t, for messages. */
static void rbd_target_name(const struct rbd_target *t, char *buf,
			    size_t len)
{
	snprintf(buf, len, "%s/%s%s%s", t->pool, t->ns, t->ns[0] ? "/" : "",
		 t->image);
}

/* Is there an image of this name (to tell a missing snapshot)? */
static bool rbd_image_exists(rados_ioctx_t io, const char *image)
{
	rbd_image_t img;

	if (rbd_open_read_only(io, image, &img, NULL))
		return false;
	rbd_close(img);
	return true;
}

/* ---- the exclusive lock --------------------------------------------------- */

/*
 * "open ... steal": break the dead holder's lock, which blocklists it in
 * the cluster (its I/O fails -ESHUTDOWN from then on).  Never one of
 * this daemon's own VBDs.  0, or -errno with the reason in drv->error.
 */
static int rbd_steal_lock(td_driver_t *drv, const char *name,
			  const char *owner, bool ours)
{
	struct rbd_state *s = drv->data;
	int rc;

	if (ours) {
		td_msgf(drv->error, sizeof(drv->error), "rbd: %s is in use by "
			"this tapfs daemon (another VBD): close that VBD; "
			"steal is for a holder that died", name);
		return -EBUSY;
	}
	rc = rbd_lock_break(s->image, RBD_LOCK_MODE_EXCLUSIVE, owner);
	if (rc && rc != -ENOENT) {	/* ENOENT: gone meanwhile */
		td_msgf(drv->error, sizeof(drv->error), "rbd: %s: cannot "
			"break the exclusive lock of %s: %s", name, owner,
			strerror(-rc));
		return rc;
	}
	td_log(TD_LOG_WARN, "rbd: %s: broke the exclusive lock of %s (open "
	       "... steal): that client is blocklisted", name, owner);
	return 0;
}

/*
 * Take the image's exclusive lock unless someone holds it: 0, or -EBUSY
 * naming the holder, or -errno, with the reason in drv->error.  With
 * steal, a holder (one, not this daemon) has its lock broken first.
 */
static int rbd_take_lock(td_driver_t *drv, const char *name, bool steal)
{
	struct rbd_state *s = drv->data;
	char *owners[RBD_MAX_OWNERS];
	size_t n = RBD_MAX_OWNERS;
	rbd_lock_mode_t mode;
	uint64_t features = 0;
	int rc;

	rc = rbd_get_features(s->image, &features);
	if (!rc && !(features & RBD_FEATURE_EXCLUSIVE_LOCK)) {
		td_msgf(drv->error, sizeof(drv->error), "rbd: %s has no "
			"exclusive-lock feature: tapfs cannot keep it to one "
			"writer (rbd feature enable %s exclusive-lock)", name,
			name);
		return -EINVAL;
	}
	rc = rbd_lock_get_owners(s->image, &mode, owners, &n);
	if (rc == 0 && steal && n == 1) {
		bool ours = rbd_owner_ours(drv->engine, owners[0]);

		rc = rbd_steal_lock(drv, name, owners[0], ours);
		rbd_lock_get_owners_cleanup(owners, n);
		if (rc)
			return rc;
		rc = -ENOENT;		/* nobody holds it now */
	}
	if (rc == 0) {
		bool ours = n && rbd_owner_ours(drv->engine, owners[0]);

		td_msgf(drv->error, sizeof(drv->error), "rbd: %s is in use: "
			"its exclusive lock is held by %s%s%s", name,
			n ? owners[0] : "another client",
			n > 1 ? " and others" : "",
			ours ? " (this tapfs daemon: another VBD)" : "");
		rbd_lock_get_owners_cleanup(owners, n);
		return -EBUSY;
	}
	if (rc != -ENOENT && rc != -ERANGE) {
		td_msgf(drv->error, sizeof(drv->error), "rbd: %s: cannot list "
			"the lock's owners: %s", name, strerror(-rc));
		return rc;
	}
	if (rc == -ERANGE) {
		td_msgf(drv->error, sizeof(drv->error), "rbd: %s is in use: "
			"its exclusive lock has %zu owners", name, n);
		return -EBUSY;
	}
	/* Between the two calls another client may have taken it. */
	rc = rbd_lock_acquire(s->image, RBD_LOCK_MODE_EXCLUSIVE);
	if (rc == -EROFS || rc == -EBUSY) {
		td_msgf(drv->error, sizeof(drv->error), "rbd: %s is in use: "
			"another client took its exclusive lock first", name);
		return -EBUSY;
	}
	if (rc) {
		td_msgf(drv->error, sizeof(drv->error), "rbd: %s: cannot take "
			"the exclusive lock: %s", name, strerror(-rc));
		return rc;
	}
	return 0;
}

/* ---- completions ---------------------------------------------------------- */

/* The result of a finished request: 0 or -errno. */
static int rbd_result(const td_request_t *treq, ssize_t ret)
{
	if (ret < 0)
		return (int)ret;
	if (treq->op == TD_OP_READ &&
	    (size_t)ret != (size_t)treq->secs << TD_SECTOR_SHIFT)
		return -EIO;		/* short: the image shrank under us */
	return 0;
}

/* The image's eventfd: collect every completion librbd has queued. */
static void rbd_event(struct td_event *ev, uint32_t events)
{
	td_driver_t *drv = ev->arg;
	struct rbd_state *s = drv->data;
	uint64_t count;
	int i, n;

	(void)events;
	/* Reset first: a completion after the last poll signals again. */
	if (read(s->efd, &count, sizeof(count)) < 0 && errno != EAGAIN)
		td_log(TD_LOG_ERR, "rbd: %s: eventfd: %m", drv->name);
	while ((n = rbd_poll_io_events(s->image, s->comps,
				       RBD_POLL_BATCH)) > 0) {
		for (i = 0; i < n; i++) {
			struct rbd_req *r = rbd_aio_get_arg(s->comps[i]);
			ssize_t ret = rbd_aio_get_return_value(s->comps[i]);
			td_request_t treq = r->treq;

			rbd_aio_release(s->comps[i]);
			td_pool_put(&s->reqs, r);
			s->completed++;
			td_complete_request(treq, rbd_result(&treq, ret));
		}
	}
	if (n < 0)
		td_log(TD_LOG_ERR, "rbd: %s: polling completions: %s",
		       drv->name, strerror(-n));
}

/* ---- requests --------------------------------------------------------------- */

static void rbd_queue(td_driver_t *drv, td_request_t treq)
{
	struct rbd_state *s = drv->data;
	struct rbd_req *r = td_pool_get(&s->reqs);
	uint64_t off = treq.sec << TD_SECTOR_SHIFT;
	size_t len = (size_t)treq.secs << TD_SECTOR_SHIFT;
	rbd_completion_t c;
	int rc;

	if (!r) {
		td_complete_request(treq, -EBUSY);	/* retried */
		return;
	}
	r->treq = treq;
	r->drv = drv;
	rc = rbd_aio_create_completion(r, NULL, &c);
	if (rc) {
		td_pool_put(&s->reqs, r);
		td_complete_request(treq, rc);
		return;
	}
	switch (treq.op) {
	case TD_OP_READ:
		rc = rbd_aio_read(s->image, off, len, treq.buf, c);
		break;
	case TD_OP_WRITE:
		rc = rbd_aio_write(s->image, off, len, treq.buf, c);
		break;
	case TD_OP_FLUSH:
		rc = rbd_aio_flush(s->image, c);
		break;
	case TD_OP_DISCARD:
		rc = rbd_aio_discard(s->image, off, len, c);
		break;
	default:
		rc = -EINVAL;
		break;
	}
	if (rc < 0) {
		rbd_aio_release(c);
		td_pool_put(&s->reqs, r);
		td_complete_request(treq, rc);
	}
}

/* ---- snapshots -------------------------------------------------------------- */

/*
 * Read the image's snapshots into s->snaps (names, blank-separated) and
 * s->nsnaps: at open, and after one was removed.  Open and control time
 * only (librbd may ask the cluster).
 */
static int rbd_snaps_load(struct rbd_state *s)
{
	rbd_snap_info_t *info = NULL;
	int max = 16, n, i;
	size_t used = 0;

	for (;;) {
		rbd_snap_info_t *more = realloc(info, (size_t)max *
						sizeof(*info));

		if (!more) {
			free(info);
			return -ENOMEM;
		}
		info = more;
		n = rbd_snap_list(s->image, info, &max);
		if (n != -ERANGE)
			break;
	}
	if (n < 0) {
		free(info);
		return n;
	}
	s->snaps[0] = '\0';
	for (i = 0; i < n; i++) {
		if (used < sizeof(s->snaps))
			td_msgf(s->snaps + used, sizeof(s->snaps) - used,
				"%s%s", i ? " " : "", info[i].name);
		used += strlen(s->snaps + used);
	}
	s->nsnaps = (unsigned)n;
	rbd_snap_list_end(info);
	free(info);
	return 0;
}

/* ---- open and close --------------------------------------------------------- */

static void rbd_teardown(td_driver_t *drv)
{
	struct rbd_state *s = drv->data;

	if (s->ev_added)
		td_loop_del_event(drv->engine->loop, &s->ev);
	s->ev_added = false;
	if (s->image)
		rbd_close(s->image);	/* releases the lock */
	s->image = NULL;
	if (s->io)
		rados_ioctx_destroy(s->io);
	s->io = NULL;
	rbd_cluster_put(s->cl);		/* after every use of it */
	s->cl = NULL;
	if (s->efd >= 0)
		close(s->efd);
	s->efd = -1;
	td_pool_fini(&s->reqs);
}

static int rbd_open_image(td_driver_t *drv, const char *path,
			  td_flag_t flags)
{
	struct rbd_state *s = drv->data;
	bool ro = flags & TD_OPEN_RDONLY;
	char name[3 * RBD_NAME_MAX + 3];
	uint64_t size;
	int rc;

	rc = rbd_parse_target(path, &s->target, drv->error,
			      sizeof(drv->error));
	if (rc)
		return rc;
	rbd_target_name(&s->target, name, sizeof(name));
	if (!drv->engine) {
		td_msgf(drv->error, sizeof(drv->error), "rbd: %s: opened "
			"outside an engine", name);
		return -EINVAL;
	}
	rc = rbd_cluster_get(drv->engine, &s->target, &s->cl, drv->error,
			     sizeof(drv->error));
	if (rc)
		return rc;
	rc = rbd_ioctx(s->cl, &s->target, &s->io, drv->error,
		       sizeof(drv->error));
	if (rc)
		return rc;
	if (s->target.snap[0] && !ro) {
		td_msgf(drv->error, sizeof(drv->error), "rbd: %s@%s is a "
			"snapshot: it opens read-only only (open NAME "
			"rbd:%s ro)", name, s->target.snap, path);
		return -EINVAL;
	}
	rc = ro ? rbd_open_read_only(s->io, s->target.image, &s->image,
				     s->target.snap[0] ? s->target.snap :
				     NULL) :
		  rbd_open(s->io, s->target.image, &s->image, NULL);
	if (rc) {
		s->image = NULL;
		if (rc == -ENOENT && s->target.snap[0] &&
		    rbd_image_exists(s->io, s->target.image))
			td_msgf(drv->error, sizeof(drv->error), "rbd: no "
				"snapshot '%s' of image %s", s->target.snap,
				name);
		else if (rc == -ENOENT)
			td_msgf(drv->error, sizeof(drv->error), "rbd: no image"
				" %s (pool %s%s%s)", name, s->target.pool,
				s->target.ns[0] ? ", namespace " : "",
				s->target.ns);
		else
			td_msgf(drv->error, sizeof(drv->error), "rbd: cannot "
				"open %s: %s", name, strerror(-rc));
		return rc;
	}
	rc = rbd_get_size(s->image, &size);
	if (rc) {
		td_msgf(drv->error, sizeof(drv->error), "rbd: %s: cannot read "
			"its size: %s", name, strerror(-rc));
		return rc;
	}
	if (size % TD_SECTOR_SIZE) {
		td_msgf(drv->error, sizeof(drv->error), "rbd: %s: size %llu "
			"is not a multiple of %u bytes", name,
			(unsigned long long)size, TD_SECTOR_SIZE);
		return -EINVAL;
	}
	if (!ro && !(flags & TD_OPEN_FORCE_SHARE)) {
		rc = rbd_take_lock(drv, name, flags & TD_OPEN_STEAL);
		if (rc)
			return rc;
	}
	rc = rbd_snaps_load(s);
	if (rc) {
		td_msgf(drv->error, sizeof(drv->error), "rbd: %s: cannot list "
			"its snapshots: %s", name, strerror(-rc));
		return rc;
	}
	drv->info.size = size >> TD_SECTOR_SHIFT;
	drv->info.sector_size = TD_SECTOR_SIZE;
	return 0;
}

static int rbd_open_events(td_driver_t *drv)
{
	struct rbd_state *s = drv->data;
	int rc;

	rc = td_pool_init(&s->reqs, RBD_MAX_REQS, sizeof(struct rbd_req),
			  sizeof(void *));
	if (rc)
		return rc;
	s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (s->efd < 0)
		return -errno;
	rc = rbd_set_image_notification(s->image, s->efd,
					EVENT_TYPE_EVENTFD);
	if (rc) {
		td_msgf(drv->error, sizeof(drv->error), "rbd: %s: cannot "
			"register the completion eventfd: %s", drv->name,
			strerror(-rc));
		return rc;
	}
	s->ev.fd = s->efd;
	s->ev.events = EPOLLIN;
	s->ev.cb = rbd_event;
	s->ev.arg = drv;
	rc = td_loop_add_event(drv->engine->loop, &s->ev);
	if (rc)
		return rc;
	s->ev_added = true;
	return 0;
}

static int rbd_open_td(td_driver_t *drv, const char *path, td_flag_t flags)
{
	struct rbd_state *s = drv->data;
	int rc;

	s->efd = -1;
	rc = rbd_open_image(drv, path, flags);
	if (!rc)
		rc = rbd_open_events(drv);
	if (rc)
		rbd_teardown(drv);
	return rc;
}

static int rbd_close_td(td_driver_t *drv)
{
	struct rbd_state *s = drv->data;
	int rc = 0;

	/* The engine drained every request; the cache may hold writes. */
	if (!(drv->flags & TD_OPEN_RDONLY)) {
		rc = rbd_flush(s->image);
		if (rc)
			td_log(TD_LOG_ERR, "rbd: %s: flush on close: %s",
			       drv->name, strerror(-rc));
	}
	rbd_teardown(drv);
	return rc;
}

static void rbd_debug(td_driver_t *drv, FILE *out)
{
	struct rbd_state *s = drv->data;

	fprintf(out, "rbd:%s %llu sectors, %u/%u requests free, %llu "
		"completed\n", drv->name, (unsigned long long)drv->info.size,
		s->reqs.nfree, s->reqs.count,
		(unsigned long long)s->completed);
}

/*
 * snapshot NAME of an rbd VBD: an RBD snapshot tapfs.N (the first N past
 * the image's count of snapshots that is free).  The VBD is drained;
 * what librbd's cache holds is flushed first, so the snapshot holds
 * every write completed before the pause.
 */
static int rbd_snapshot(td_driver_t *drv, char *target, size_t targetlen,
			char *err, size_t errlen)
{
	struct rbd_state *s = drv->data;
	char name[3 * RBD_NAME_MAX + 3], snap[32];
	unsigned n;
	size_t used;
	int rc;

	rbd_target_name(&s->target, name, sizeof(name));
	if (s->target.snap[0] || (drv->flags & TD_OPEN_RDONLY)) {
		snprintf(err, errlen, "rbd: %s%s%s is open read-only: nothing "
			 "to snapshot", name, s->target.snap[0] ? "@" : "",
			 s->target.snap);
		return -EINVAL;
	}
	rc = rbd_flush(s->image);
	if (rc) {
		snprintf(err, errlen, "rbd: %s: flush before the snapshot: %s",
			 name, strerror(-rc));
		return rc;
	}
	rc = -EEXIST;
	for (n = s->nsnaps + 1; rc == -EEXIST &&
	     n <= s->nsnaps + RBD_SNAP_TRIES; n++) {
		snprintf(snap, sizeof(snap), RBD_SNAP_PREFIX "%u", n);
		rc = rbd_snap_create(s->image, snap);
	}
	if (rc) {
		snprintf(err, errlen, "rbd: %s: cannot create snapshot %s: %s",
			 name, snap, strerror(-rc));
		return rc;
	}
	if (!td_msgf(target, targetlen, "%s@%s", name, snap)) {
		snprintf(err, errlen, "rbd: snapshot name %s@%s too long",
			 name, snap);
		rbd_snap_remove(s->image, snap);
		return -ENAMETOOLONG;
	}
	s->nsnaps++;
	used = strlen(s->snaps);
	if (used < sizeof(s->snaps) - 1)
		td_msgf(s->snaps + used, sizeof(s->snaps) - used, "%s%s",
			used ? " " : "", snap);
	td_log(TD_LOG_INFO, "rbd: %s: snapshot %s@%s", drv->name, name,
	       snap);
	return 0;
}

static int rbd_unsnapshot(td_driver_t *drv, const char *target, char *err,
			  size_t errlen)
{
	struct rbd_state *s = drv->data;
	struct rbd_target t;
	int rc;

	rc = rbd_parse_target(target, &t, err, errlen);
	if (rc)
		return rc;
	if (!t.snap[0] || strcmp(t.pool, s->target.pool) ||
	    strcmp(t.ns, s->target.ns) || strcmp(t.image, s->target.image)) {
		snprintf(err, errlen, "rbd: %s is no snapshot of %s", target,
			 drv->name);
		return -EINVAL;
	}
	rc = rbd_snap_remove(s->image, t.snap);
	if (rc) {
		snprintf(err, errlen, "rbd: cannot remove snapshot %s: %s",
			 target, strerror(-rc));
		return rc;
	}
	if (rbd_snaps_load(s))
		s->snaps[0] = '\0';
	return 0;
}

static void rbd_describe(td_driver_t *drv, char *buf, size_t len)
{
	struct rbd_state *s = drv->data;

	/* A snapshot's line names it; the image's lists them. */
	if (s->snaps[0] && !s->target.snap[0])
		td_msgf(buf, len, "(snapshots: %s)", s->snaps);
}

/* ---- create ----------------------------------------------------------------- */

/* The pool (POOL or POOL/NAMESPACE) and name: a parsed target. */
static int rbd_new_target(struct td_engine *e, const char *name,
			  struct rbd_target *t, char *target,
			  size_t targetlen, char *err, size_t errlen)
{
	const char *pool = td_engine_option(e, "ceph_pool");
	int n;

	if (!pool)
		pool = RBD_DEFAULT_POOL;
	n = snprintf(target, targetlen, "%s/%s", pool, name);
	if (n < 0 || (size_t)n >= targetlen) {
		snprintf(err, errlen, "rbd: image name %s/%s too long", pool,
			 name);
		return -ENAMETOOLONG;
	}
	return rbd_parse_target(target, t, err, errlen);
}

/*
 * An I/O context on t's pool through its cluster (create, remove), and
 * the hold on that cluster (*cl) to drop after rados_ioctx_destroy.
 */
static int rbd_engine_ioctx(struct td_engine *e, const struct rbd_target *t,
			    struct rbd_cluster **cl, rados_ioctx_t *io,
			    char *err, size_t errlen)
{
	int rc = rbd_cluster_get(e, t, cl, err, errlen);

	if (rc)
		return rc;
	rc = rbd_ioctx(*cl, t, io, err, errlen);
	if (rc)
		rbd_cluster_put(*cl);
	return rc;
}

static int rbd_create_remote(struct td_engine *e, const char *name,
			     uint64_t size, char *target, size_t targetlen,
			     char *err, size_t errlen)
{
	struct rbd_cluster *cl;
	struct rbd_target t;
	rados_ioctx_t io;
	int order = 0, rc;

	rc = rbd_new_target(e, name, &t, target, targetlen, err, errlen);
	if (!rc)
		rc = rbd_engine_ioctx(e, &t, &cl, &io, err, errlen);
	if (rc)
		return rc;
	rc = rbd_create(io, t.image, size, &order);
	if (rc == -EEXIST)
		snprintf(err, errlen, "rbd: image %s already exists (use: "
			 "open NAME rbd:%s)", target, target);
	else if (rc)
		snprintf(err, errlen, "rbd: cannot create %s: %s", target,
			 strerror(-rc));
	rados_ioctx_destroy(io);
	rbd_cluster_put(cl);
	return rc;
}

static int rbd_remove_remote(struct td_engine *e, const char *target,
			     char *err, size_t errlen)
{
	struct rbd_cluster *cl;
	struct rbd_target t;
	rados_ioctx_t io;
	int rc;

	rc = rbd_parse_target(target, &t, err, errlen);
	if (!rc)
		rc = rbd_engine_ioctx(e, &t, &cl, &io, err, errlen);
	if (rc)
		return rc;
	rc = rbd_remove(io, t.image);
	if (rc)
		snprintf(err, errlen, "rbd: cannot remove %s: %s", target,
			 strerror(-rc));
	rados_ioctx_destroy(io);
	rbd_cluster_put(cl);
	return rc;
}

const struct tap_disk tapdisk_rbd = {
	TD_DISK_VERSION,
	.name			= "rbd",
	.description		= "Ceph RBD image (POOL/IMAGE), librbd aio",
	.private_data_size	= sizeof(struct rbd_state),
	.td_open		= rbd_open_td,
	.td_close		= rbd_close_td,
	.td_queue_read		= rbd_queue,
	.td_queue_write		= rbd_queue,
	.td_debug		= rbd_debug,
	.td_queue_flush		= rbd_queue,
	.td_queue_discard	= rbd_queue,
	.disk_flags		= TD_DISK_NO_FILE | TD_DISK_REMOTE,
	.td_create_remote	= rbd_create_remote,
	.td_remove_remote	= rbd_remove_remote,
	.td_snapshot_remote	= rbd_snapshot,
	.td_unsnapshot_remote	= rbd_unsnapshot,
	.td_describe		= rbd_describe,
};
