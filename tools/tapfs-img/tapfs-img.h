/* SPDX-License-Identifier: MIT */
/*
 * tapfs-img: create, inspect, check, snapshot, coalesce and convert tapfs
 * disk images, in the style of qemu-img and vhd-util.
 *
 * One verb per file (create.c, info.c, ...), each with its struct verb
 * (name, help text, run); what they share is here: messages and usage
 * errors (common.c), the table of image formats (formats.c) and the
 * engine (engine.c): every verb that reads or writes image data opens the
 * images through the daemon's own drivers and VBD code, on an
 * in-process engine loop, with requests in flight.  What is offline by
 * nature (headers, check, creating an empty image) calls the format's
 * synchronous metadata code (drivers/vhd/vhd-image.h, qcow2-image.h).
 *
 * Exit status: 0 success; 1 the operation failed (check: problems
 * found); 2 usage error (check: an image that cannot be read at all).
 */
#ifndef TAPFS_IMG_H
#define TAPFS_IMG_H

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <tapfs/engine.h>
#include <tapfs/lock.h>
#include <tapfs/tapdisk.h>

#include "qcow/qcow-image.h"
#include "qcow2/qcow2-image.h"
#include "vhd/vhd-image.h"

#define EXIT_FAIL	1
#define EXIT_USAGE	2

#define PROG		"tapfs-img"

/* ---- verbs (main.c) -------------------------------------------------- */

struct verb {
	const char	*name;
	int		(*run)(int argc, char **argv);
	const char	*summary;
	const char	*usage;		/* --help */
};

extern const struct verb verb_create, verb_info, verb_check, verb_snapshot,
			 verb_coalesce, verb_convert;

/* ---- messages and options (common.c) -------------------------------- */

void msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A verb's usage error: the message, then where help is; EXIT_USAGE. */
int  usage_error(const struct verb *v, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/*
 * getopt_long for verb v: shortopts and longopts (NULL-terminated, may be
 * NULL) are the verb's own; -h/--help is added.  Returns the next option
 * of the verb's, or -1 when they are done: *ret is then -1 (go on) or the
 * exit status (--help was shown: 0; a bad option: EXIT_USAGE).
 */
int  verb_getopt(const struct verb *v, int argc, char **argv,
		 const char *shortopts, const struct option *longopts,
		 int *ret);

/* Parse a size argument, rounded up to a whole sector (usage error). */
int  parse_size(const struct verb *v, const char *what, const char *s,
		uint64_t *out);
/* "100 MiB" */
const char *human_size(uint64_t b, char *buf, size_t len);
void json_str(FILE *f, const char *s);

/*
 * The image locks a verb takes itself for offline work (the engine locks
 * what it opens): held until the verb returns.  -U: reads take none.
 */
extern bool img_force_share;
int  img_lock(const char *path, enum td_lock_mode mode);
void img_unlock_all(void);

struct progress {
	bool	 on;
	bool	 tty;
	int	 last;		/* per mille (tty) or per cent (lines) shown */
};

void progress_init(struct progress *p, bool wanted);
void progress_show(struct progress *p, uint64_t done, uint64_t total);

/* ---- image formats (formats.c) -------------------------------------- */

/* What create (and convert's DST, snapshot's child) is asked to make. */
struct img_create {
	const char		*path;
	uint64_t		 size;		/* bytes; 0: the parent's */
	const char		*parent;	/* -b, as given */
	const struct img_format	*parent_fmt;	/* -F, or NULL: probed */
	bool			 quiet;		/* no "Formatting" line */
	/* -o of vhd */
	enum vhd_disk_type	 vhd_type;
	bool			 vhd_type_set;
	uint32_t		 vhd_block_size;
	/* -o of qcow2 */
	struct qcow2_create_params qcow2;
};

struct check_out {
	const char	*path;
	unsigned	 lines;
};

/* Problem lines check prints before it only counts. */
#define CHECK_MAX_LINES	1000u

struct img_format {
	const char	*name;		/* "vhd" */
	const char	*alias;		/* another name accepted, or NULL */
	const char	*driver;	/* the engine's driver: "vhd" */
	const char	*qemu_name;	/* QEMU's name of it: "vpc" */
	/* Parse -o into c (a usage error) */
	int  (*parse_options)(const struct verb *v, char *opts,
			      struct img_create *c);
	/* Make the empty image c says (its parent checked and locked). */
	int  (*create)(const struct img_create *c);
	bool		 can_have_parent;
	/* info of path (disk_size: bytes the file uses) */
	int  (*info)(const char *path, uint64_t disk_size, bool json);
	/* check: the exit status, problems printed on out */
	int  (*check)(struct check_out *out);
	/*
	 * The next run of sectors from sec on (below end) that the image at
	 * path holds itself (not its parent's): coalesce.  NULL: the format
	 * has no parents.
	 */
	struct img_runs *(*runs_open)(const char *path);
};

/*
 * Create the empty image c says as format f (create.c): checks what c
 * asks (usage errors), parses opts (-o, or NULL) and locks the parent.
 */
int  img_create(const struct verb *v, const struct img_format *f,
		struct img_create *c, char *opts);

/* The built-in formats. */
extern const struct img_format *const img_formats[];
extern const struct img_format img_format_raw, img_format_vhd,
			       img_format_qcow2, img_format_qcow,
			       img_format_vmdk;

/* The format named s (or its alias), or NULL after a usage error. */
const struct img_format *parse_format(const struct verb *v, const char *s);
/*
 * The format of the file at path: *f if set already, else the format of
 * the driver that claims it (td_probe_driver).
 */
int  probe_format(const char *path, const struct img_format **f);
/* The format an engine driver reads ("aio" -> raw), or NULL. */
const struct img_format *format_of_driver(const char *driver);

/* The runs of one image's own sectors (coalesce), read offline. */
struct img_runs {
	/* Next run in [sec, end): 1 and [*start, *start + *n), 0: none. */
	int  (*next)(struct img_runs *r, uint64_t sec, uint64_t end,
		     uint64_t *start, uint64_t *n);
	void (*close)(struct img_runs *r);
};

/* ---- the engine (engine.c) ------------------------------------------ */

/* Start this run's engine (once) and log through msg's prefix. */
int  img_engine_start(void);
void img_engine_stop(void);

/*
 * Open the image at path as format f through the engine (its chain of
 * parents too unless TD_OPEN_LEAF_ONLY): 0, or EXIT_FAIL after saying
 * why (a holder named).  Locks as the daemon's VBDs do.
 */
int  img_open(const struct img_format *f, const char *path, td_flag_t flags,
	      td_vbd_t **out);
/* Close; EXIT_FAIL after saying why if the last writes failed. */
int  img_close(td_vbd_t *vbd, const char *path);
/*
 * The size in bytes of the image of spec, "DRIVER:ARG" of a remote image
 * ("rbd:POOL/IMAGE@SNAP"), opened read-only through the engine, unlocked,
 * and closed again.  0, or EXIT_FAIL with the reason printed.
 */
int  img_remote_size(const char *spec, uint64_t *size);
/* Make what was written to the file at path durable (TD_OPEN_UNSAFE). */
int  img_sync_file(const char *path);

/* Print the chain of path, leaf to base ("chain (leaf -> base): ..."). */
int  img_print_chain(const struct img_format *f, const char *path,
		     bool json);

/* Requests a copy keeps in flight unless -m says (as qemu-img's -m). */
#define IMG_COPY_DEPTH		8
#define IMG_COPY_MAX_DEPTH	64

struct img_copy {
	td_vbd_t	*src, *dst;
	const char	*src_name, *dst_name;
	uint64_t	 secs;		/* the sectors to go through */
	/* NULL: every sector; else the runs of src to copy */
	struct img_runs	*runs;
	/* A run that reads as zeros is not written (DST reads zeros). */
	bool		 skip_zero;
	unsigned	 depth;		/* requests in flight; 0: default */
	struct progress	*pg;
};

/* Copy, then flush DST: 0, or EXIT_FAIL after saying what failed. */
int  img_copy(const struct img_copy *c);

#endif
