#!/bin/bash
# test-harness.sh - the tests run the programs they are given.
#
# make asan runs the suite with TAPFS and TAPFS_IMG in build-asan/; a
# test that names $TOP/build/... itself runs the plain build instead
# (or, in a fresh clone with no build/, fails: test-handover did, with
# "build/tapfs-img: No such file or directory").  A path under build/ is
# allowed only as the default of a variable the caller can set.
. "$(dirname "$0")/lib.sh"

# stray FILE...: the lines naming a program under build/ outside a
# ${VAR:-default}, leaving out comments and messages that only mention it.
stray() {
	grep -nHE '(\$TOP|\.\.)/build/(tapfs|fuse-null|libtapfs)' "$@" |
		grep -vE ':[0-9]+:[[:space:]]*#' |
		grep -vE '\$\{[A-Z_]+:-[^}]*/build/' |
		grep -vE '(fail|echo|printf) '
}

found=$(stray $(ls "$TEST_DIR"/*.sh | grep -v "/$TEST_NAME.sh$"))
if [ -z "$found" ]; then
	ok "no test runs a program under build/ past TAPFS or TAPFS_IMG"
else
	fail "a test runs a program under build/ past TAPFS or TAPFS_IMG" \
		"$found"
fi

# The check sees the line test-handover had, and lets the defaults be.
cat >"$T/sample.sh" <<'SAMPLE'
		check "$TOP/build/tapfs-img" check "$img"
IMG=${TAPFS_IMG:-$TOP/build/tapfs-img}
# run $TOP/build/tapfs by hand
	fail "tapfs-img" "$IMG is not built (make $TOP/build/tapfs-img)"
SAMPLE
found=$(stray "$T/sample.sh")
if [ "$(printf '%s\n' "$found" | grep -c .)" = 1 ] &&
   [ "${found#*:}" = '1:		check "$TOP/build/tapfs-img" check "$img"' ]; then
	ok "the check finds a hard-coded \$TOP/build/tapfs-img, not a default"
else
	fail "the check finds a hard-coded \$TOP/build/tapfs-img, not a default" \
		"found: $found"
fi
summary
