/* SPDX-License-Identifier: MIT */
/*
 * Fixed-size object pools: one allocation at set-up, O(1) get/put, no
 * allocation afterwards.  Used for request contexts, tiocbs and the
 * O_DIRECT data buffers.
 *
 * Objects start zeroed.  A pool of TD_POOL_MAP_MIN bytes or more is
 * mapped (anonymous memory, zeros without being touched), its objects and
 * its bookkeeping alike, rather than allocated and cleared: its pages
 * cost nothing until an object on them is first used, so a pool sized
 * for the worst case (an image's queue depth, its buffers) does not make
 * the daemon resident (and, under mlockall(MCL_ONFAULT), locked) in
 * memory it never uses.  Nothing is written at set-up either: objects
 * never handed out are taken in address order from the fresh end
 * (p->fresh), and only objects put back go on the free stack.  get takes
 * from the stack first, so a lightly loaded pool keeps using the same few
 * objects, and a pool touches as many as were ever out at once.
 */
#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <tapfs/engine.h>

static void td_pool_release(struct td_pool *p)
{
	if (p->mapped) {
		munmap(p->mem, p->map_len);
	} else {
		free(p->mem);
		free(p->free);
		free(p->out);
	}
	memset(p, 0, sizeof(*p));
}

/* Objects, free stack and out flags in one anonymous mapping. */
static int td_pool_map(struct td_pool *p, size_t objs)
{
	size_t stack = (size_t)p->count * sizeof(*p->free);
	size_t len = objs + stack + p->count;
	void *mem;

	if (len < objs)
		return -EOVERFLOW;
	mem = mmap(NULL, len, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		return -ENOMEM;
	p->mem = mem;
	p->free = (void **)(p->mem + objs);	/* objs: a page multiple */
	p->out = (bool *)(p->mem + objs + stack);
	p->map_len = len;
	p->mapped = true;
	return 0;
}

static int td_pool_alloc(struct td_pool *p, size_t objs, size_t align)
{
	void *mem;

	p->free = malloc((size_t)p->count * sizeof(*p->free));
	p->out = calloc(p->count, sizeof(*p->out));
	if (!p->free || !p->out || posix_memalign(&mem, align, objs))
		return -ENOMEM;
	memset(mem, 0, objs);
	p->mem = mem;
	return 0;
}

int td_pool_init(struct td_pool *p, unsigned count, size_t size, size_t align)
{
	size_t stride, page = (size_t)sysconf(_SC_PAGESIZE), objs;
	int rc;

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
	objs = stride * count;
	p->size = stride;
	p->count = count;
	if (objs >= TD_POOL_MAP_MIN && align <= page)
		rc = td_pool_map(p, (objs + page - 1) & ~(page - 1));
	else
		rc = td_pool_alloc(p, objs, align);
	if (rc) {
		td_pool_release(p);
		return rc;
	}
	p->nfree = count;
	return 0;
}

void td_pool_fini(struct td_pool *p)
{
	td_pool_release(p);
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
	if (p->nstack)
		obj = p->free[--p->nstack];
	else
		obj = p->mem + (size_t)p->fresh++ * p->size;
	p->nfree--;
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
	p->free[p->nstack++] = obj;
	p->nfree++;
}
