#!/bin/bash
# test-driver-guide.sh - the example driver of docs/driver-guide.md and its
# unit test, taken from the guide as they are printed there, build with
# the project's warnings against the engine and pass: the guide cannot rot.
. "$(dirname "$0")/lib.sh"
requires gcc awk

GUIDE=$TOP/docs/driver-guide.md
LIB=${LIBTAPFS:-$(dirname "$TAPFS")/libtapfs.a}
WARN="-Wall -Wextra -Werror -Wshadow -Wformat=2 -Wmissing-prototypes
	-Wstrict-prototypes -Wno-format-nonliteral"

# block N OUT: the first ```c block after the heading that starts with N.
block() {
	awk -v h="$1" '
		index($0, h) == 1 { seen = 1; next }
		seen && /^```c$/ { inb = 1; next }
		inb && /^```$/ { exit }
		inb { print }' "$GUIDE" >"$2"
}

check test -r "$LIB"
block "## A complete driver" "$T/block-example.c"
block "## Testing" "$T/test-example.c"
check_match "the guide's driver was found" "tapdisk_example" \
	"$(cat "$T/block-example.c")"
check_match "the guide's test was found" "cmocka_run_group_tests" \
	"$(cat "$T/test-example.c")"
# TEST_CFLAGS: the build's sanitizer flags (make asan), to link its library.
# shellcheck disable=SC2086
check gcc -std=gnu11 $WARN ${TEST_CFLAGS:-} -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 \
	-I"$TOP/include" -o "$T/test-example" "$T/test-example.c" \
	"$T/block-example.c" "$LIB" -lcmocka -lrbd -lrados -laio -luuid -lz -lpthread
if [ -x "$T/test-example" ]; then
	out=$(cd "$T" && ./test-example 2>&1)
	rc=$?
	check_eq "the guide's unit test passes (exit 0)" 0 $rc
	check_match "and ran its tests" "PASSED" "$out"
fi
summary
