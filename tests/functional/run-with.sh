#!/bin/bash
# run-with.sh - the functional tests again with one more option on every
# daemon ("make check-uring", "make check-workers").
#
#	BUILD=DIR tests/functional/run-with.sh uring|workers [test-NAME.sh ...]
#
# Each test's tapfs runs as DIR/tapfs-MODE, written here: DIR/tapfs with
# the mode's option added after whatever options the test gives.
#
#   uring    -o uring: FUSE over io_uring.  TAPFS_URING=1 tells the tests;
#            the -o workers=N checks skip themselves (one loop serves the
#            ring).  fuse.enable_uring is set to Y for the run and put
#            back at exit.  Needs root and Linux 6.14+ with
#            CONFIG_FUSE_IO_URING; exits 77 without them.
#   workers  -o workers=2: two loops, each VBD owned by one of them.
#            TAPFS_WORKERS=2 tells the tests; what holds only on one loop
#            (a read-only parent open once for every chain) is not
#            checked (one_loop, lib.sh), and the -o uring test skips
#            itself.
#
# Otherwise as tests/functional/run.sh, whose exit status and last line
# ("N passed, N failed") it passes on.
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${BUILD:-$here/../../build}" && pwd) || exit 1
mode=${1:-}
shift

case $mode in
uring)
	opt=uring
	param=/sys/module/fuse/parameters/enable_uring
	if [ ! -w "$param" ]; then
		echo "run-with: no FUSE over io_uring here ($param is missing" \
			"or not writable): needs root and Linux 6.14+ with" \
			"CONFIG_FUSE_IO_URING" >&2
		exit 77
	fi
	old=$(cat "$param")
	trap 'echo "$old" >"$param"' EXIT
	echo Y >"$param" || exit 1
	export TAPFS_URING=1
	;;
workers)
	opt=workers=2
	export TAPFS_WORKERS=2
	;;
*)
	echo "usage: run-with.sh uring|workers [test-NAME.sh ...]" >&2
	exit 2
	;;
esac
[ -x "$build/tapfs" ] || { echo "run-with: $build/tapfs is not built" >&2; exit 1; }

# In the build directory: tests find libtapfs.a and tapfs-img beside it.
printf '#!/bin/sh\n# run-with.sh %s: tapfs -o %s\nexec "%s/tapfs" "$@" -o %s\n' \
	"$mode" "$opt" "$build" "$opt" >"$build/tapfs-$mode" &&
	chmod +x "$build/tapfs-$mode" || exit 1

TAPFS=$build/tapfs-$mode TAPFS_IMG=$build/tapfs-img "$here/run.sh" "$@"
