/* SPDX-License-Identifier: MIT */
/*
 * Fixed-size object pools: one allocation at set-up, O(1) get/put, no
 * allocation afterwards.  Used for request contexts, tiocbs and the
 * O_DIRECT data buffers.
 *
 * Objects start zeroed.  A large pool is mapped (anonymous memory, zeros
 * without being touched) rather than allocated and cleared: its pages
 * cost nothing until an object on them is first used, so an image's
 * worst-case buffer pools do not make the daemon resident (and, under
 * mlockall(MCL_ONFAULT), locked) in memory it never uses.  get/put are a
 * stack, so a lightly loaded pool keeps using the same few objects.
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

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
	p->free = calloc(count, sizeof(*p->free));
	p->out = calloc(count, sizeof(*p->out));
	if (!p->free || !p->out) {
		free(p->free);
		free(p->out);
		p->free = NULL;
		p->out = NULL;
		return -ENOMEM;
	}
	if (stride * count >= TD_POOL_MAP_MIN &&
	    align <= (size_t)sysconf(_SC_PAGESIZE)) {
		mem = mmap(NULL, stride * count, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (mem == MAP_FAILED) {
			free(p->free);
			free(p->out);
			p->free = NULL;
			p->out = NULL;
			return -ENOMEM;
		}
		p->mapped = true;
	} else {
		if (posix_memalign(&mem, align, stride * count)) {
			free(p->free);
			free(p->out);
			p->free = NULL;
			p->out = NULL;
			return -ENOMEM;
		}
		memset(mem, 0, stride * count);
	}
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
	if (p->mapped)
		munmap(p->mem, p->size * p->count);
	else
		free(p->mem);
	free(p->free);
	free(p->out);
	memset(p, 0, sizeof(*p));
}

/* The index of obj, which the pool owns. */
static size_t td_pool_index(const struct td_pool *p, const void *obj)
{
	return (size_t)((const char *)obj - p->mem) / p->size;
}

void *td_pool_get(struct td_pool *p)
{
	void *obj;

	if (!p->nfree)
		return NULL;
	obj = p->free[--p->nfree];
	assert(!p->out[td_pool_index(p, obj)]);
	p->out[td_pool_index(p, obj)] = true;
	return obj;
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
	/* Returning a foreign object, or one twice, is an engine bug. */
	assert(td_pool_owns(p, obj));
	assert(p->out[td_pool_index(p, obj)]);
	assert(p->nfree < p->count);
	p->out[td_pool_index(p, obj)] = false;
	p->free[p->nfree++] = obj;
}
