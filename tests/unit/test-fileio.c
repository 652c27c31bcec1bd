/* SPDX-License-Identifier: MIT */
/*
 * The synchronous file helpers (drivers/common/td-fileio.c): a full read
 * refuses to end early, a zero-filling read reads what the file holds and
 * zeros past its end.
 */
#include <sys/stat.h>

#include "unit.h"
#include "common/td-fileio.h"

#define FILE_LEN	1000u

/* A scratch file of FILE_LEN bytes, byte i holding (i % 251) + 1. */
static int pattern_file(char *path, size_t pathlen)
{
	uint8_t data[FILE_LEN];
	unsigned i;
	int fd;

	fd = unit_tmpfile(path, pathlen, "fileio", 0);
	for (i = 0; i < FILE_LEN; i++)
		data[i] = (uint8_t)(i % 251 + 1);
	assert_int_equal(td_pwrite_full(fd, data, sizeof(data), 0), 0);
	return fd;
}

static void test_pread_full(void **state)
{
	uint8_t buf[64];
	char path[256];
	int fd;

	(void)state;
	fd = pattern_file(path, sizeof(path));
	assert_int_equal(td_pread_full(fd, buf, sizeof(buf), 100), 0);
	assert_int_equal(buf[0], 101);
	assert_int_equal(td_pread_full(fd, buf, 0, FILE_LEN + 10), 0);
	/* ends inside the buffer, or starts past the end */
	assert_int_equal(td_pread_full(fd, buf, sizeof(buf), FILE_LEN - 8),
			 -EIO);
	assert_int_equal(td_pread_full(fd, buf, sizeof(buf), FILE_LEN), -EIO);
	assert_int_equal(td_pread_full(-1, buf, sizeof(buf), 0), -EBADF);
	unlink(path);
	close(fd);
}

static void test_pread_zero(void **state)
{
	uint8_t buf[4096];
	char path[256];
	unsigned i;
	int fd;

	(void)state;
	fd = pattern_file(path, sizeof(path));

	/* inside the file: the data */
	memset(buf, 0xaa, sizeof(buf));
	assert_int_equal(td_pread_zero(fd, buf, 10, 20), 0);
	for (i = 0; i < 10; i++)
		assert_int_equal(buf[i], (20 + i) % 251 + 1);
	assert_int_equal(buf[10], 0xaa);	/* nothing past len */

	/* across the end: the data, then zeros */
	memset(buf, 0xaa, sizeof(buf));
	assert_int_equal(td_pread_zero(fd, buf, sizeof(buf), 0), 0);
	for (i = 0; i < FILE_LEN; i++)
		assert_int_equal(buf[i], i % 251 + 1);
	for (; i < sizeof(buf); i++)
		assert_int_equal(buf[i], 0);

	/* past the end: all zeros */
	memset(buf, 0xaa, sizeof(buf));
	assert_int_equal(td_pread_zero(fd, buf, 512, 1ull << 20), 0);
	for (i = 0; i < 512; i++)
		assert_int_equal(buf[i], 0);
	assert_int_equal(buf[512], 0xaa);

	assert_int_equal(td_pread_zero(fd, buf, 0, 0), 0);
	assert_int_equal(td_pread_zero(-1, buf, 512, 0), -EBADF);
	unlink(path);
	close(fd);
}

/*
 * td_open_direct: O_DIRECT where the scratch file system takes it, and
 * never for TD_OPEN_UNSAFE (QEMU's cache=unsafe: the page cache).
 */
static void test_open_direct_unsafe(void **state)
{
	char path[256];
	uint32_t align;
	bool direct;
	int fd, fl;

	(void)state;
	close(unit_tmpfile(path, sizeof(path), "fileio", 1 << 20));
	fd = td_open_direct(path, O_RDWR, 0, TD_MAX_IO_ALIGN, &direct, &align);
	assert_true(fd >= 0);
	fl = fcntl(fd, F_GETFL);
	assert_int_equal(!!(fl & O_DIRECT), direct);
	close(fd);
	fd = td_open_direct(path, O_RDWR, TD_OPEN_UNSAFE, TD_MAX_IO_ALIGN,
			    &direct, &align);
	assert_true(fd >= 0);
	assert_false(direct);
	assert_int_equal(fcntl(fd, F_GETFL) & O_DIRECT, 0);
	close(fd);
	unlink(path);
}

/*
 * td_open_file opens regular files only: a FIFO (with no writer: the
 * open must not wait for one), a directory or a character device is
 * refused, and the fd it returns is blocking unless asked otherwise.
 */
static void test_open_file_kinds(void **state)
{
	char path[256], fifo[280];
	int fd;

	(void)state;
	close(unit_tmpfile(path, sizeof(path), "fileio", 4096));
	fd = td_open_file(path, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(fcntl(fd, F_GETFL) & O_NONBLOCK, 0);
	close(fd);
	fd = td_open_file(path, O_RDONLY | O_NONBLOCK);
	assert_true(fd >= 0);
	assert_int_not_equal(fcntl(fd, F_GETFL) & O_NONBLOCK, 0);
	close(fd);

	snprintf(fifo, sizeof(fifo), "%s.fifo", path);
	assert_int_equal(mkfifo(fifo, 0600), 0);
	errno = 0;
	assert_int_equal(td_open_file(fifo, O_RDONLY), -1);
	assert_int_equal(errno, EINVAL);
	unlink(fifo);

	errno = 0;
	assert_int_equal(td_open_file("/tmp", O_RDONLY), -1);
	assert_int_equal(errno, EISDIR);
	errno = 0;
	assert_int_equal(td_open_file("/dev/null", O_RDONLY), -1);
	assert_int_equal(errno, EINVAL);
	unlink(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pread_full),
		cmocka_unit_test(test_pread_zero),
		cmocka_unit_test(test_open_direct_unsafe),
		cmocka_unit_test(test_open_file_kinds),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
