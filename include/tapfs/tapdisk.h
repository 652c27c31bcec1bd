/* SPDX-License-Identifier: MIT */
/*
 * tapfs driver interface.
 *
 * An image driver (raw file, VHD, qcow2, ...) is a table of callbacks,
 * struct tap_disk, registered by name in drivers/engine/td-registry.c.  One open
 * image is a td_driver_t; the images of a VBD form a chain from the leaf
 * (the writable image the client sees) to the base.
 *
 * Requests are asynchronous.  The engine hands a driver a td_request_t
 * through td_queue_read/td_queue_write (and the optional flush/discard
 * callbacks).  For every request it receives a driver does exactly ONE of:
 *
 *   1. td_complete_request(treq, err)  - finish it now (0 or -errno);
 *   2. td_forward_request(treq)        - pass it to the parent image
 *                                        (zeros for reads past the base);
 *   3. td_prep_read/td_prep_write/td_prep_fsync on a struct tiocb, then
 *      td_queue_tiocb()                - asynchronous I/O through libaio;
 *      the tiocb's callback later does 1. or 2. for the request.
 *
 * A driver may split a request into several sub-requests (copies of the
 * td_request_t with a narrower buf/sec/secs) and do one of the three with
 * each: the engine counts completion by sectors, so every sector handed to
 * a driver must be completed exactly once.
 *
 * The caller owns a request's buffer until its completion callback runs.
 * Callbacks run on the engine's loop thread; drivers never block except
 * the "sync" driver, whose purpose is synchronous I/O.
 */
#ifndef TAPFS_TAPDISK_H
#define TAPFS_TAPDISK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include <libaio.h>

#define TD_API_VERSION		1

#define TD_SECTOR_SHIFT		9
#define TD_SECTOR_SIZE		(1u << TD_SECTOR_SHIFT)

/* Alignment of every data buffer handed to a driver (O_DIRECT safe). */
#define TD_BUF_ALIGN		4096u

/* td_get_parent_id(): no parent. */
#define TD_NO_PARENT		1

/* Open flags (td_flag_t). */
#define TD_OPEN_RDONLY		(1u << 0)
/* (1u << 1) was TD_OPEN_QUIET, before drivers stopped logging refusals. */
/*
 * Engine-level flags (vbd_open), passed down to drivers untouched:
 * TD_OPEN_LEAF_ONLY opens the leaf without its parents, so that what it
 * does not hold itself reads as zeros (a tool copying an image's own
 * data); TD_OPEN_FORCE_SHARE takes no image locks (reading an idle image
 * someone else holds, as qemu-img -U; implies nothing about TD_OPEN_RDONLY,
 * which the caller sets).
 */
#define TD_OPEN_LEAF_ONLY	(1u << 2)
#define TD_OPEN_FORCE_SHARE	(1u << 3)
/*
 * QEMU's cache=unsafe: the image is opened buffered (td_open_direct) and
 * the fsyncs a driver queues for it complete at once without reaching
 * the disk.  For an image thrown away if its writer dies (a new convert
 * destination), synced by the caller when it is complete: the drivers'
 * ordering barriers and metadata round trips cost nothing then.
 */
#define TD_OPEN_UNSAFE		(1u << 4)
/*
 * Engine-level (vbd_open), never passed to drivers: a VBD that waits to
 * take its image over from another host (docs/locking.md, handing a VBD
 * over).  Its leaf opens read-only with a standby lock, which lets one
 * writer in; vbd_activate() takes the image read-write.
 */
#define TD_OPEN_STANDBY		(1u << 5)
/*
 * .ctl's "open ... steal": a read-write leaf whose one-writer lock is held
 * by a holder known to be dead (its host crashed) takes it over: rbd
 * breaks the holder's exclusive lock, which blocklists the holder in the
 * cluster.  Never for a live holder: its writes would fail from then on.
 * Drivers without such a lock ignore it.
 */
#define TD_OPEN_STEAL		(1u << 6)

typedef uint64_t td_sector_t;
typedef uint32_t td_flag_t;

typedef struct td_request td_request_t;
typedef struct td_driver td_driver_t;
typedef struct td_image td_image_t;	/* engine-private chain link */
struct td_engine;

enum td_op {
	TD_OP_READ,
	TD_OP_WRITE,
	TD_OP_FLUSH,		/* make completed writes durable */
	TD_OP_DISCARD,		/* sectors may read back as zeros */
};

/*
 * Completion callback: err is 0 or -errno.  treq is the (sub-)request as
 * it was queued.
 */
typedef void (*td_callback_t)(td_request_t treq, int err);

struct td_request {
	enum td_op	 op;
	char		*buf;		/* secs * TD_SECTOR_SIZE bytes */
	td_sector_t	 sec;		/* first sector */
	uint32_t	 secs;		/* number of sectors (0 for flush) */

	td_image_t	*image;		/* image currently handling it */
	td_callback_t	 cb;
	void		*cb_data;
};

/* Identity of a parent image, filled by td_get_parent_id(). */
struct td_disk_id {
	char		*name;		/* path, malloc'd; caller frees */
	char		*drivertype;	/* driver name, malloc'd, or NULL */
};
typedef struct td_disk_id td_disk_id_t;

/* The largest I/O alignment an image may ask for (td_disk_info.io_align). */
#define TD_MAX_IO_ALIGN		4096u

struct td_disk_info {
	td_sector_t	size;		/* virtual size in sectors */
	uint32_t	sector_size;	/* TD_SECTOR_SIZE */
	/*
	 * Bytes that the offset and length of every read and write must be
	 * multiples of (O_DIRECT on a device with 4096-byte sectors): a
	 * power of two up to TD_MAX_IO_ALIGN.  0 (or TD_SECTOR_SIZE): any
	 * sector.  The VBD aligns client requests to the largest of its
	 * chain's, read-modify-writing what is smaller.
	 */
	uint32_t	io_align;
};

/*
 * Bytes of td_driver.error: room for a reason that names two paths, so
 * that only the caller's edge (the .ctl status line) ever cuts one.
 */
#define TD_ERROR_MAX		1024

/* One open image, as a driver sees it. */
struct td_driver {
	const struct tap_disk	*ops;
	void			*data;	/* private_data_size bytes, zeroed */
	char			*name;	/* path (or argument) it was opened on */
	td_flag_t		 flags;
	struct td_disk_info	 info;	/* filled by td_open */
	struct td_engine	*engine;
	/*
	 * Why td_open, td_get_parent_id or td_validate_parent refused the
	 * image, in words naming the file and the value ("block size 3 is
	 * not a power of two"; td_msgf marks a cut).  Empty if the errno
	 * says it all: the engine then says "PATH: cannot open as DRIVER:
	 * ERRNO".  This is the one channel of a refusal: the driver does
	 * not log it; the engine hands it to its caller (vbd_open's err),
	 * which logs or prints it once (the daemon's .ctl status line,
	 * tapfs-img's message).  Warnings about an image that still opens
	 * are the driver's to log.  The engine empties it once the VBD is
	 * open; from then on a driver sets it to say why it refuses I/O
	 * (an image found corrupt), and .ctl shows it after the VBD's chain.
	 */
	char			 error[TD_ERROR_MAX];
};

/*
 * The driver table entry.  Fields are only ever added at the end; the
 * engine refuses a table whose api_version it does not know or whose
 * struct_size does not reach the end of td_create (version 1 as first
 * shipped).  Fields after td_create are read only if struct_size holds
 * them (TD_DISK_HAS); a table without one gets its default.
 *
 * Required: td_open, td_close, td_queue_read, td_queue_write.
 * Optional: a NULL (or missing) field gets its default, all of them in
 * drivers/engine/td-driver.c, and the engine and fs/ only ever call a driver
 * through those functions (td_drv_*, td_disk_*):
 *   td_get_parent_id    default: TD_NO_PARENT
 *   td_validate_parent  default: -EINVAL (a driver without parents)
 *   td_debug            default: prints name and size
 *   td_queue_flush      default: complete with 0 (nothing volatile)
 *   td_queue_discard    default: complete with -EOPNOTSUPP
 *   td_create           default: -ENOTSUP ("cannot create")
 *   td_create_child     default: -ENOTSUP (no snapshots onto it)
 *   disk_flags          default: 0
 *   td_control          default: -ENOTSUP (takes no settings)
 *   td_probe            default: not mine (the raw driver "aio" takes
 *                       what no driver claims)
 *   td_create_remote    default: -ENOTSUP ("cannot create")
 *   td_remove_remote    default: -ENOTSUP
 *   td_snapshot_remote  default: -ENOTSUP (no snapshot in place)
 *   td_unsnapshot_remote default: -ENOTSUP
 *   td_describe         default: "" (nothing more to say)
 */
struct tap_disk {
	uint32_t	 api_version;	/* TD_API_VERSION */
	uint32_t	 struct_size;	/* sizeof(struct tap_disk) */
	/* (TD_DISK_VERSION in a designated initializer fills these two.) */
	const char	*name;		/* lookup key: "aio", "vhd", ... */
	const char	*description;
	size_t		 private_data_size;

	/*
	 * Open the image at path; fill drv->info.  Returns 0, or -errno
	 * with the reason (naming the file and the value) in drv->error,
	 * which the engine hands to its caller; the driver does not log it.
	 */
	int  (*td_open)(td_driver_t *drv, const char *path, td_flag_t flags);
	/* Release everything; the engine has drained all requests. */
	int  (*td_close)(td_driver_t *drv);
	/*
	 * 0 and *id filled, TD_NO_PARENT, or -errno with the reason in
	 * drv->error, as td_open.
	 */
	int  (*td_get_parent_id)(td_driver_t *drv, td_disk_id_t *id);
	/*
	 * 0 if parent is the image this one was made on, else -errno with
	 * the reason in drv->error, as td_open.
	 */
	int  (*td_validate_parent)(td_driver_t *drv, td_driver_t *parent,
				   td_flag_t flags);
	void (*td_queue_read)(td_driver_t *drv, td_request_t treq);
	void (*td_queue_write)(td_driver_t *drv, td_request_t treq);
	void (*td_debug)(td_driver_t *drv, FILE *out);

	void (*td_queue_flush)(td_driver_t *drv, td_request_t treq);
	void (*td_queue_discard)(td_driver_t *drv, td_request_t treq);
	/* Create a new image of size bytes at path (must not exist). */
	int  (*td_create)(const char *path, uint64_t size, td_flag_t flags);
	/*
	 * Create a new, empty image at path whose parent is the image at
	 * parent (opened by driver parent_driver): the child of a snapshot.
	 * Returns 0 or -errno, with the reason in err.
	 */
	int  (*td_create_child)(const char *path, const char *parent,
				const char *parent_driver, char *err,
				size_t errlen);
	td_flag_t	 disk_flags;	/* TD_DISK_* */
	/*
	 * Settings at run time: args is the text of .ctl's "fault NAME
	 * SETTINGS", untouched; the driver parses it (as td_open parses its
	 * own argument).  fs/ hands it to the images of the chain from the
	 * leaf down, to the first that does not answer -ENOTSUP.  0, or
	 * -errno with the reason in err.
	 */
	int  (*td_control)(td_driver_t *drv, const char *args, char *err,
			   size_t errlen);
	/*
	 * Is the file at path an image of this driver's format (its magic,
	 * read without opening it as an image)?  0 with *is_mine set, or
	 * -errno when the file cannot be read.  For a format named by
	 * nobody (a backing file without a format): td_probe_driver.
	 */
	int  (*td_probe)(const char *path, bool *is_mine);
	/*
	 * A TD_DISK_REMOTE driver's create: make a new, zeroed image of
	 * size bytes called name in the place the engine's settings say
	 * (rbd: the pool of option ceph_pool), and write the argument
	 * td_open takes for it into target ("rbd/NAME").  0, or -errno with
	 * the reason in err (-EEXIST: an image of that name exists).
	 */
	int  (*td_create_remote)(struct td_engine *e, const char *name,
				 uint64_t size, char *target,
				 size_t targetlen, char *err, size_t errlen);
	/*
	 * Undo td_create_remote: remove the image at target (never opened
	 * since).  0, or -errno with the reason in err.
	 */
	int  (*td_remove_remote)(struct td_engine *e, const char *target,
				 char *err, size_t errlen);
	/*
	 * A TD_DISK_REMOTE driver's snapshot (.ctl "snapshot NAME"): keep
	 * the image's data as it is now as a read-only snapshot in its own
	 * store, the image staying open and writable (rbd: an RBD
	 * snapshot).  The engine has paused and drained the VBD; the driver
	 * makes what it caches durable first.  Writes the argument td_open
	 * takes for the snapshot into target ("rbd/IMAGE@SNAP").  0, or
	 * -errno with the reason in err.
	 */
	int  (*td_snapshot_remote)(td_driver_t *drv, char *target,
				   size_t targetlen, char *err,
				   size_t errlen);
	/*
	 * Undo td_snapshot_remote of this image: remove the snapshot at
	 * target (a snapshot of several VBDs that failed half-way).  0, or
	 * -errno with the reason in err.
	 */
	int  (*td_unsnapshot_remote)(td_driver_t *drv, const char *target,
				     char *err, size_t errlen);
	/*
	 * What .ctl's chain line says about the image after its name (rbd:
	 * its snapshots), at most len bytes NUL-terminated; "" for nothing.
	 * Runs on the loop when .ctl is read: it must not block.
	 */
	void (*td_describe)(td_driver_t *drv, char *buf, size_t len);
};

/*
 * The version fields of a driver table, for its designated initializer:
 *	static const struct tap_disk foo_disk = { TD_DISK_VERSION, ... };
 */
#define TD_DISK_VERSION \
	.api_version = TD_API_VERSION, .struct_size = sizeof(struct tap_disk)

/* Does table d reach field (its struct_size holds all of it)? */
#define TD_DISK_HAS(d, field) \
	((d)->struct_size >= offsetof(struct tap_disk, field) + \
			     sizeof(((const struct tap_disk *)0)->field))

/*
 * disk_flags: a filter sits on top of the image it filters (its
 * "parent"), which is opened with the filter's own access rather than
 * read-only; the filter's size is the parent's (td_open may leave 0).
 * Its td_open argument is its own syntax, parsed by the filter alone
 * (fault: SETTINGS:DRIVER:PATH); what it filters is named by
 * td_get_parent_id and checked by the engine like any parent.  A chain
 * with a filter on top cannot be snapshotted.
 */
#define TD_DISK_FILTER		(1u << 0)
/*
 * The argument of td_open is not a file (ram: a size), so the engine's
 * path policy does not apply to it.  A filter's argument is not either;
 * what it filters is checked when it is opened as its parent.
 */
#define TD_DISK_NO_FILE		(1u << 1)
/*
 * With TD_DISK_NO_FILE: the argument names a lasting image outside the
 * local file system (rbd: POOL/IMAGE in a Ceph cluster).  It is kept
 * across remounts like an image file, made by td_create_remote, and the
 * driver itself keeps it to one writer (the engine's file locks do not
 * apply).
 */
#define TD_DISK_REMOTE		(1u << 2)

/* ---- the three things a driver does with a request ---------------- */

void td_complete_request(td_request_t treq, int err);
void td_forward_request(td_request_t treq);

/*
 * Asynchronous I/O control block.  The driver owns the storage (usually a
 * preallocated array, see td_pool in engine.h); the engine owns the
 * contents between td_queue_tiocb() and the callback.
 */
struct tiocb;
typedef void (*td_tiocb_cb_t)(struct tiocb *tiocb, long res);

struct tiocb {
	struct iocb	 iocb;		/* libaio control block */
	td_tiocb_cb_t	 cb;		/* res: bytes done, or -errno */
	void		*arg;		/* the driver's, untouched */
	td_request_t	 treq;		/* the driver's, untouched */
	struct tiocb	*next;		/* engine queue link */
	/* engine-private: merge state */
	struct tiocb	*merged;	/* chain merged behind this one */
	unsigned int	 merge_count;	/* pieces in the chain, head only */
	bool		 nomerge;	/* resubmitted alone after an error */
	/* engine-private: when queued, then when submitted (td_aio_stats) */
	uint64_t	 stamp_ns;
};

void td_prep_read(struct tiocb *t, int fd, char *buf, size_t len,
		  off_t off, td_tiocb_cb_t cb, void *arg);
void td_prep_write(struct tiocb *t, int fd, char *buf, size_t len,
		   off_t off, td_tiocb_cb_t cb, void *arg);
void td_prep_fsync(struct tiocb *t, int fd, td_tiocb_cb_t cb, void *arg);
void td_queue_tiocb(td_driver_t *drv, struct tiocb *t);

/* ---- helpers for drivers ------------------------------------------ */

/*
 * Parse a size: decimal bytes, or with one suffix K, M, G, T (powers of
 * 1024, case-insensitive, an optional trailing "B" or "iB").  Returns 0,
 * or -EINVAL (syntax) / -ERANGE (overflow).
 */
int td_parse_size(const char *s, uint64_t *out);

/* ---- registry ------------------------------------------------------ */

/* The driver table entry for name, or NULL. */
const struct tap_disk *td_driver_find(const char *name);
/* NULL-terminated list of all registered drivers (validated). */
const struct tap_disk *const *td_driver_list(void);
/*
 * Check one table entry: version, size, required callbacks.  Returns 0,
 * or -EINVAL after writing the reason to err.
 */
int td_driver_validate(const struct tap_disk *d, char *err, size_t errlen);
/* Validate the whole built-in table once; -EINVAL names the culprit. */
int td_drivers_init(void);

/*
 * Call a callback, or its default; read a field, or its default (for a
 * table whose struct_size does not hold it).  The one place defaults live.
 */
int  td_drv_get_parent_id(td_driver_t *drv, td_disk_id_t *id);
int  td_drv_validate_parent(td_driver_t *drv, td_driver_t *parent,
			    td_flag_t flags);
void td_drv_debug(td_driver_t *drv, FILE *out);
void td_drv_queue(td_driver_t *drv, td_request_t treq);
int  td_drv_create(const struct tap_disk *d, const char *path,
		   uint64_t size, td_flag_t flags);
/* -ENOTSUP, with err saying so, for a driver that cannot. */
int  td_drv_create_child(const struct tap_disk *d, const char *path,
			 const char *parent, const char *parent_driver,
			 char *err, size_t errlen);
/* -ENOTSUP, with err saying so, for an image that takes no settings. */
int  td_drv_control(td_driver_t *drv, const char *args, char *err,
		    size_t errlen);
/* 0 and *is_mine false for a driver without a td_probe. */
int  td_drv_probe(const struct tap_disk *d, const char *path, bool *is_mine);
/* -ENOTSUP, with err saying so, for a driver without. */
int  td_drv_create_remote(const struct tap_disk *d, struct td_engine *e,
			  const char *name, uint64_t size, char *target,
			  size_t targetlen, char *err, size_t errlen);
int  td_drv_remove_remote(const struct tap_disk *d, struct td_engine *e,
			  const char *target, char *err, size_t errlen);
bool td_disk_can_create_remote(const struct tap_disk *d);
/* -ENOTSUP, with err saying so, for a driver without. */
int  td_drv_snapshot_remote(td_driver_t *drv, char *target,
			    size_t targetlen, char *err, size_t errlen);
int  td_drv_unsnapshot_remote(td_driver_t *drv, const char *target,
			      char *err, size_t errlen);
bool td_disk_can_snapshot_remote(const struct tap_disk *d);
void td_drv_describe(td_driver_t *drv, char *buf, size_t len);
td_flag_t td_disk_flags(const struct tap_disk *d);
bool td_disk_can_create(const struct tap_disk *d);
bool td_disk_can_create_child(const struct tap_disk *d);

/*
 * May this driver's engine open the file at path?  For a driver that must
 * read a parent's file before td_get_parent_id returns (to probe its
 * format): 0, or -errno with the reason in drv->error.  The engine checks
 * every image it opens itself.
 */
int  td_check_path(td_driver_t *drv, const char *path);

/*
 * For td_get_parent_id and td_validate_parent; what names the parent in
 * a refusal ("backing file", "parent"), which goes to drv->error as
 * "DRIVER: WHAT REASON".
 *
 * td_parent_check_path: td_check_path for a parent's file.
 * td_parent_probe: a parent recorded by its file alone (qcow's backing
 * file, vmdk's parent): the path policy asked, its format probed
 * (td_probe_driver), *id filled.
 * td_parent_id_set: *id names path, opened by driver.
 * path is malloc'd and passes to *id; it is freed on failure.  0, or
 * -errno (with the reason in drv->error).
 *
 * td_parent_any: the td_validate_parent of a driver whose images record
 * their parent by name only, so that any image there is the right one.
 */
int  td_parent_check_path(td_driver_t *drv, const char *path,
			  const char *what);
int  td_parent_probe(td_driver_t *drv, char *path, const char *what,
		     td_disk_id_t *id);
int  td_parent_id_set(td_disk_id_t *id, char *path, const char *driver);
int  td_parent_any(td_driver_t *drv, td_driver_t *parent, td_flag_t flags);

/*
 * Services any driver may use on another image (a backing file of
 * another format) without knowing its format's code.  Both block: for
 * open and create, never on the data path.
 *
 * td_probe_driver: the name of the driver whose td_probe claims the file
 * at path, asking the registry in its order; "aio" (raw) when none does.
 * 0, or -errno when the file cannot be read.
 *
 * td_image_size: the virtual size in bytes of the image at path, opened
 * read-only through driver's own td_open (TD_OPEN_RDONLY, no
 * engine) and closed again.  0, or -errno with the reason in err.
 */
int  td_probe_driver(const char *path, const char **driver);
/*
 * A parent named the way QEMU names an image of a block protocol,
 * "DRIVER:ARG" with DRIVER a TD_DISK_REMOTE driver ("rbd:POOL/IMAGE@SNAP",
 * the backing file name qemu-img create -b writes): that driver, and in
 * *arg (a pointer into name) the argument its td_open takes.  NULL for
 * anything else (a file name, relative or absolute).
 */
const struct tap_disk *td_remote_parent(const char *name, const char **arg);
int  td_image_size(const char *driver, const char *path, uint64_t *size,
		   char *err, size_t errlen);

#endif
