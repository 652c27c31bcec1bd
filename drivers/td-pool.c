/* SPDX-License-Identifier: MIT */
/*
 * Fixed-size object pools: one allocation at set-up, O(1) get/put, no
 * allocation afterwards.  Used for request contexts, tiocbs and the
 * O_DIRECT data buffers.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <tapfs/engine.h>

int td_pool_init(struct td_pool *p, unsigned count, size_t size, size_t align)
{
	size_t stride;
	void *mem;
	unsigned i;

	memset(p, 0, sizeof(*p));
	if (!count || !size || !align || (align & (align - 1)))
		return -EINVAL;
	if (size > SIZE_MAX - (align - 1))
		return -EOVERFLOW;
	stride = (size + align - 1) & ~(align - 1);
	if ((size_t)count > SIZE_MAX / stride)
		return -EOVERFLOW;
	if (align < sizeof(void *))
		align = sizeof(void *);
	if (posix_memalign(&mem, align, stride * count))
		return -ENOMEM;
	p->free = calloc(count, sizeof(*p->free));
	if (!p->free) {
		free(mem);
		return -ENOMEM;
	}
	memset(mem, 0, stride * count);
	p->mem = mem;
	p->size = stride;
	p->count = count;
	/* Hand out low addresses first: easier to read in a debugger. */
	for (i = 0; i < count; i++)
		p->free[i] = p->mem + (size_t)(count - 1 - i) * stride;
	p->nfree = count;
	return 0;
}

void td_pool_fini(struct td_pool *p)
{
	free(p->mem);
	free(p->free);
	memset(p, 0, sizeof(*p));
}

void *td_pool_get(struct td_pool *p)
{
	if (!p->nfree)
		return NULL;
	return p->free[--p->nfree];
}

bool td_pool_owns(const struct td_pool *p, const void *obj)
{
	const char *o = obj;

	if (!p->mem || o < p->mem || o >= p->mem + p->size * p->count)
		return false;
	return (size_t)(o - p->mem) % p->size == 0;
}

void td_pool_put(struct td_pool *p, void *obj)
{
	if (!obj)
		return;
	/* Returning a foreign or extra object is an engine bug. */
	if (!td_pool_owns(p, obj) || p->nfree >= p->count)
		abort();
	p->free[p->nfree++] = obj;
}
