/* SPDX-License-Identifier: MIT */
/*
 * fuzz-main.c - the driver of every fuzz target built without libFuzzer
 * (make fuzz-replay): each argument, a file or a directory of files (a
 * corpus), is read whole and passed once to LLVMFuzzerTestOneInput.  A
 * crash or a sanitizer report is the failure the replay looks for; the
 * exit status is 1 when an input cannot be read or there was none.
 *
 *	build/fuzz/replay-vhd build/fuzz/corpus-vhd crash-1234
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Read all of path and run the target on it; 0 or -errno. */
static int fuzz_replay_file(const char *path)
{
	struct stat st;
	uint8_t *buf = NULL;
	size_t len, done = 0;
	ssize_t n;
	int fd, rc = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st)) {
		rc = -errno;
		goto out;
	}
	len = (size_t)st.st_size;
	/* One byte more, so that an empty input is a valid pointer. */
	buf = malloc(len + 1);
	if (!buf) {
		rc = -ENOMEM;
		goto out;
	}
	while (done < len) {
		n = read(fd, buf + done, len - done);
		if (n <= 0) {
			rc = n < 0 ? -errno : -EIO;
			goto out;
		}
		done += (size_t)n;
	}
	LLVMFuzzerTestOneInput(buf, len);
out:
	if (rc)
		fprintf(stderr, "fuzz-replay: %s: %s\n", path, strerror(-rc));
	free(buf);
	if (fd >= 0)
		close(fd);
	return rc;
}

/* Replay every regular file of dir, in name order; the number replayed
 * or -errno. */
static int fuzz_replay_dir(const char *dir)
{
	struct dirent **names;
	char path[4096];
	struct stat st;
	int i, n, count = 0, rc = 0;

	n = scandir(dir, &names, NULL, alphasort);
	if (n < 0) {
		fprintf(stderr, "fuzz-replay: %s: %s\n", dir, strerror(errno));
		return -errno;
	}
	for (i = 0; i < n; i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name);
		if (!rc && names[i]->d_name[0] != '.' &&
		    !stat(path, &st) && S_ISREG(st.st_mode)) {
			rc = fuzz_replay_file(path);
			count++;
		}
		free(names[i]);
	}
	free(names);
	return rc ? rc : count;
}

int main(int argc, char **argv)
{
	struct stat st;
	int i, n = 0, rc;

	if (argc < 2) {
		fprintf(stderr, "usage: %s FILE|CORPUS-DIR...\n", argv[0]);
		return 2;
	}
	for (i = 1; i < argc; i++) {
		if (!stat(argv[i], &st) && S_ISDIR(st.st_mode))
			rc = fuzz_replay_dir(argv[i]);
		else
			rc = fuzz_replay_file(argv[i]) ?: 1;
		if (rc < 0)
			return 1;
		n += rc;
	}
	printf("%s: %d inputs replayed\n", argv[0], n);
	return n ? 0 : 1;
}
