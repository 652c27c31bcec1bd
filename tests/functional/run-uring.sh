#!/bin/bash
# run-uring.sh - the functional tests with every daemon on FUSE over
# io_uring ("make check-uring").
#
#	BUILD=DIR tests/functional/run-uring.sh [test-NAME.sh ...]
#
# Each test's tapfs runs as DIR/tapfs-uring, written here: DIR/tapfs with
# "-o uring" added to whatever options the test gives.  TAPFS_URING=1
# tells the tests; the -o workers=N checks skip themselves (one loop
# serves the ring).  fuse.enable_uring is set to Y for the run and put
# back at exit.  Needs root and Linux 6.14+ with CONFIG_FUSE_IO_URING;
# exits 77 without them.  Otherwise as tests/functional/run.sh, whose
# exit status and last line ("N passed, N failed") it passes on.
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${BUILD:-$here/../../build}" && pwd) || exit 1
param=/sys/module/fuse/parameters/enable_uring

if [ ! -w "$param" ]; then
	echo "run-uring: no FUSE over io_uring here ($param is missing or" \
		"not writable): needs root and Linux 6.14+ with" \
		"CONFIG_FUSE_IO_URING" >&2
	exit 77
fi
[ -x "$build/tapfs" ] || { echo "run-uring: $build/tapfs is not built" >&2; exit 1; }

old=$(cat "$param")
trap 'echo "$old" >"$param"' EXIT
echo Y >"$param" || exit 1

# In the build directory: tests find libtapfs.a and tapfs-img beside it.
printf '#!/bin/sh\n# run-uring.sh: tapfs over io_uring\nexec "%s/tapfs" "$@" -o uring\n' \
	"$build" >"$build/tapfs-uring" && chmod +x "$build/tapfs-uring" || exit 1

TAPFS=$build/tapfs-uring TAPFS_IMG=$build/tapfs-img TAPFS_URING=1 \
	"$here/run.sh" "$@"
