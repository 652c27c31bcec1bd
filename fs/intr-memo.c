/* SPDX-License-Identifier: MIT */
/* INTERRUPTs that came before their request (see intr-memo.h). */
#include "intr-memo.h"

/* Drop entries older than the TTL; the order of the rest is kept. */
static void intr_memo_expire(struct intr_memo *m, uint64_t now_ns)
{
	unsigned i, k = 0;

	for (i = 0; i < m->n; i++)
		if (now_ns - m->e[i].at_ns <= INTR_MEMO_TTL_NS)
			m->e[k++] = m->e[i];
	m->n = k;
}

static void intr_memo_remove(struct intr_memo *m, unsigned i)
{
	for (; i + 1 < m->n; i++)
		m->e[i] = m->e[i + 1];
	m->n--;
}

void intr_memo_add(struct intr_memo *m, uint64_t unique, uint64_t now_ns)
{
	intr_memo_expire(m, now_ns);
	/* Oldest first: when full, the first one goes. */
	if (m->n == INTR_MEMO_MAX)
		intr_memo_remove(m, 0);
	m->e[m->n].unique = unique;
	m->e[m->n].at_ns = now_ns;
	m->n++;
}

bool intr_memo_take(struct intr_memo *m, uint64_t unique, uint64_t now_ns)
{
	unsigned i;

	intr_memo_expire(m, now_ns);
	for (i = 0; i < m->n; i++)
		if (m->e[i].unique == unique) {
			intr_memo_remove(m, i);
			return true;
		}
	return false;
}
