/* SPDX-License-Identifier: MIT */
/*
 * INTERRUPTs that came before their request.
 *
 * The kernel sends a FUSE_INTERRUPT only for a request it has already
 * handed to the daemon, and on one /dev/fuse fd read by one loop the
 * request is read first.  Two ways break that order:
 *
 *  - -o workers=N: another loop read the request and hands it to its
 *    owner through a queue, while the owner (or a third loop) reads the
 *    INTERRUPT from /dev/fuse and looks for the request at once;
 *  - -o uring: the request waits in the ring's completions while the
 *    INTERRUPT, which still comes through /dev/fuse, is read first.
 *
 * An INTERRUPT that finds no request is remembered here for a while,
 * and every request received afterwards asks whether it was meant
 * (fs/fuse-data.c: data_interrupt, data_received).  Without it the
 * request would run as if never interrupted: a killed reader of a
 * paused VBD would stay in D state until the resume.
 *
 * Most INTERRUPTs that find nothing came after their request was
 * answered (the client's signal raced the reply); their uniques never
 * come again (the kernel counts them up), so they only expire.  The
 * memo is small and bounded: when full, the oldest entry goes.
 * Pure: unit-tested without a mount (tests/unit/test-intr-memo.c).
 */
#ifndef TAPFS_INTR_MEMO_H
#define TAPFS_INTR_MEMO_H

#include <stdbool.h>
#include <stdint.h>

/* Entries kept at most; an overtaken request comes microseconds later. */
#define INTR_MEMO_MAX		16
/* How long an INTERRUPT waits for its request (ns). */
#define INTR_MEMO_TTL_NS	1000000000ull

struct intr_memo {
	unsigned	n;
	struct {
		uint64_t	unique;
		uint64_t	at_ns;
	} e[INTR_MEMO_MAX];
};

/* An INTERRUPT for unique found no request at now_ns: remember it. */
void intr_memo_add(struct intr_memo *m, uint64_t unique, uint64_t now_ns);

/*
 * A request with this unique arrived at now_ns: true (and forgotten) if
 * an INTERRUPT for it came first.  Forgets the expired entries too.
 */
bool intr_memo_take(struct intr_memo *m, uint64_t unique, uint64_t now_ns);

/* The data path's test before each request: nothing remembered. */
static inline bool intr_memo_empty(const struct intr_memo *m)
{
	return !m->n;
}

#endif
