/* SPDX-License-Identifier: MIT */
/*
 * Small helpers shared by the image drivers and the pure on-disk format
 * code (vhd-format.c, qcow2-format.c, vmdk-format.c): big- and
 * little-endian fields, rounding, problem reports, aligned buffers.
 * No I/O and no state, so the format code stays unit-testable and
 * fuzzable with td-util.c linked in.
 */
#ifndef TAPFS_TD_UTIL_H
#define TAPFS_TD_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- big-endian fields -------------------------------------------- */

static inline uint16_t td_get_be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t td_get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t td_get_be64(const uint8_t *p)
{
	return (uint64_t)td_get_be32(p) << 32 | td_get_be32(p + 4);
}

static inline void td_put_be16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static inline void td_put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static inline void td_put_be64(uint8_t *p, uint64_t v)
{
	td_put_be32(p, (uint32_t)(v >> 32));
	td_put_be32(p + 4, (uint32_t)v);
}

/* ---- little-endian fields (vmdk) ------------------------------------ */

static inline uint16_t td_get_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static inline uint32_t td_get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 |
	       (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t td_get_le64(const uint8_t *p)
{
	return (uint64_t)td_get_le32(p + 4) << 32 | td_get_le32(p);
}

static inline void td_put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static inline void td_put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static inline void td_put_le64(uint8_t *p, uint64_t v)
{
	td_put_le32(p, (uint32_t)v);
	td_put_le32(p + 4, (uint32_t)(v >> 32));
}

/* ---- rounding (a > 0, not necessarily a power of two) -------------- */

static inline uint64_t td_round_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

static inline uint64_t td_round_down(uint64_t v, uint64_t a)
{
	return v / a * a;
}

/* Units of a needed to hold v: v / a rounded up. */
static inline uint64_t td_div_round_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a;
}

/* ---- problem reports ------------------------------------------------ */

/*
 * Validators that go on checking after a problem describe each one
 * through a report: the first message goes to err[errlen], every message
 * to fn when it is set (tapfs-img check lists them all).  Messages name
 * the field and the value ("block size 3 is not a power of two").
 */
typedef void td_report_fn(void *arg, const char *msg);

struct td_report {
	char		*err;		/* first problem; may be NULL */
	size_t		 errlen;
	td_report_fn	*fn;		/* every problem; may be NULL */
	void		*arg;
	unsigned	 count;		/* problems reported so far */
};

/* A report that only keeps the first message, in err[errlen]. */
static inline struct td_report td_report_err(char *err, size_t errlen)
{
	struct td_report r = { .err = err, .errlen = errlen };

	if (err && errlen)
		err[0] = '\0';
	return r;
}

/*
 * Record one problem (printf format); returns err, for "return ...".  A
 * NULL report records nothing.
 */
int td_report(struct td_report *r, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* The first error of a validator that goes on checking: ret, else err. */
static inline int td_first_err(int ret, int err)
{
	return ret ? ret : err;
}

/* ---- memory ----------------------------------------------------------- */

/*
 * len zeroed bytes aligned to TD_BUF_ALIGN (O_DIRECT safe; len 0 gives a
 * valid pointer), or NULL.  free() releases it.
 */
void *td_zalloc_aligned(size_t len);

/*
 * A table sized for a format's capacity of which an image uses a few
 * entries: len zeroed bytes, TD_BUF_ALIGN-aligned, whose pages cost
 * memory only once written (an anonymous mapping from a page up).
 * Reading an entry never written costs nothing either.  NULL on failure.
 * td_free_sparse(p, len) with the same len releases it; NULL is a no-op.
 */
void *td_zalloc_sparse(size_t len);
void  td_free_sparse(void *p, size_t len);
/*
 * Copy into dst, zeroed memory of len bytes (td_zalloc_sparse), the
 * TD_BUF_ALIGN-sized pieces of src that are not all zeros: a sparse
 * table loaded from disk keeps its unused pages untouched.
 */
void  td_copy_sparse(void *dst, const void *src, size_t len);

/* Whether the len bytes at p are all zeros. */
bool td_all_zero(const void *p, size_t len);

#endif /* TAPFS_TD_UTIL_H */
