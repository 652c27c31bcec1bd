/* SPDX-License-Identifier: MIT */
/*
 * ram: a volatile in-memory disk.  The "path" is its size ("512M").
 * Memory is reserved lazily (MAP_NORESERVE): untouched sectors cost
 * nothing; discard gives whole pages back.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <tapfs/log.h>
#include <tapfs/tapdisk.h>

struct ram_state {
	char	*mem;
	size_t	 bytes;
};

static int ram_open(td_driver_t *drv, const char *path, td_flag_t flags)
{
	struct ram_state *s = drv->data;
	uint64_t bytes;
	void *mem;

	(void)flags;
	if (td_parse_size(path, &bytes) || !bytes ||
	    bytes & (TD_SECTOR_SIZE - 1) || bytes > SIZE_MAX) {
		td_msgf(drv->error, sizeof(drv->error), "ram: '%s' is not a "
			"size in whole sectors (e.g. 512M)", path);
		return -EINVAL;
	}
	mem = mmap(NULL, (size_t)bytes, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (mem == MAP_FAILED) {
		int err = -errno;

		td_msgf(drv->error, sizeof(drv->error), "ram: cannot map "
			"%s: %s", path, strerror(-err));
		return err;
	}
	s->mem = mem;
	s->bytes = (size_t)bytes;
	drv->info.size = bytes >> TD_SECTOR_SHIFT;
	drv->info.sector_size = TD_SECTOR_SIZE;
	return 0;
}

static int ram_close(td_driver_t *drv)
{
	struct ram_state *s = drv->data;

	munmap(s->mem, s->bytes);
	s->mem = NULL;
	return 0;
}

static void ram_queue_read(td_driver_t *drv, td_request_t treq)
{
	struct ram_state *s = drv->data;

	memcpy(treq.buf, s->mem + (treq.sec << TD_SECTOR_SHIFT),
	       (size_t)treq.secs << TD_SECTOR_SHIFT);
	td_complete_request(treq, 0);
}

static void ram_queue_write(td_driver_t *drv, td_request_t treq)
{
	struct ram_state *s = drv->data;

	memcpy(s->mem + (treq.sec << TD_SECTOR_SHIFT), treq.buf,
	       (size_t)treq.secs << TD_SECTOR_SHIFT);
	td_complete_request(treq, 0);
}

static void ram_queue_discard(td_driver_t *drv, td_request_t treq)
{
	struct ram_state *s = drv->data;
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	size_t off = treq.sec << TD_SECTOR_SHIFT;
	size_t end = off + ((size_t)treq.secs << TD_SECTOR_SHIFT);
	size_t a = (off + page - 1) & ~(page - 1), b = end & ~(page - 1);

	/*
	 * Whole pages go back to the kernel - unless they are locked
	 * (mlockall), where madvise refuses: then they are zeroed.
	 */
	if (a < b && !madvise(s->mem + a, b - a, MADV_DONTNEED)) {
		memset(s->mem + off, 0, a - off);
		memset(s->mem + b, 0, end - b);
	} else {
		memset(s->mem + off, 0, end - off);
	}
	td_complete_request(treq, 0);
}

const struct tap_disk tapdisk_ram = {
	TD_DISK_VERSION,
	.name			= "ram",
	.description		= "volatile memory disk; path is the size",
	.private_data_size	= sizeof(struct ram_state),
	.td_open		= ram_open,
	.td_close		= ram_close,
	.td_queue_read		= ram_queue_read,
	.td_queue_write		= ram_queue_write,
	.td_queue_discard	= ram_queue_discard,
	.disk_flags		= TD_DISK_NO_FILE,
};
