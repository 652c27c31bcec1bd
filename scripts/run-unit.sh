#!/bin/bash
# run-unit.sh - run the tapfs cmocka unit tests.
#
#	scripts/run-unit.sh build/tests/test-pool build/tests/test-loop ...
#
# Runs each unit test binary given, under a timeout, prints one result
# line per binary (with the failing tests and their messages), and ends
# with the line "N passed, N failed" counting individual cmocka tests.
# A binary that crashes, times out or fails outside any test (group
# set-up) counts its tests that did not pass as failed, at least one.
# Skipped tests are reported, not counted.  Exit 1 if anything failed.
#
# Environment: UNIT_TIMEOUT (seconds per binary, default 60), VERBOSE=1
# (print every binary's full output), UNIT_TMPDIR (scratch directory for
# tests that need a disk file system, default /var/tmp), UNIT_WRAPPER (a
# command each binary runs under, e.g. "valgrind --error-exitcode=99 ...":
# a non-zero exit of the wrapper fails the binary).

timeout_s=${UNIT_TIMEOUT:-60}

if [ $# -eq 0 ]; then
	echo "usage: $0 TEST-BINARY..." >&2
	exit 2
fi

logdir=$(mktemp -d /tmp/tapfs-unit.XXXXXX) || exit 1
trap 'rm -rf "$logdir"' EXIT

total_pass=0
total_fail=0
total_skip=0
failed_bins=()

# count REGEX FILE: lines of FILE matching REGEX.
count() {
	grep -cE "$1" "$2"
}

# summary_number REGEX FILE: the N of the first line "REGEX N test(s)".
summary_number() {
	sed -nE "s/^$1 ([0-9]+) test\\(s\\).*/\\1/p" "$2" | head -n 1
}

for bin in "$@"; do
	name=$(basename "$bin")
	log=$logdir/$name.log
	start=$(date +%s.%N)
	if [ ! -x "$bin" ]; then
		echo "missing or not executable: $bin" >"$log"
		rc=127
	else
		# The braces keep bash's own "Segmentation fault" off the
		# terminal: the log and the result line say it.
		{
			# shellcheck disable=SC2086
			CMOCKA_MESSAGE_OUTPUT=stdout timeout -k 5 "$timeout_s" \
				${UNIT_WRAPPER:-} "$bin" </dev/null >"$log" 2>&1
			rc=$?
		} 2>/dev/null
	fi
	took=$(echo "$start $(date +%s.%N)" | awk '{ printf "%.1f", $2 - $1 }')

	total=$(summary_number '\[==========\] Running' "$log")
	pass=$(count '^\[       OK \] ' "$log")
	skip=$(summary_number '\[  SKIPPED \]' "$log")
	total=${total:-0}
	skip=${skip:-0}
	fail=$((total - pass - skip))
	[ "$fail" -lt 0 ] && fail=0
	# Died before, between or after the tests: never silently green.
	if [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; then
		fail=1
	fi

	case $rc in
	0) why="" ;;
	124 | 137) why=" (timed out after ${timeout_s}s)" ;;
	127) why=" (not run)" ;;
	*)
		if [ "$rc" -gt 128 ]; then
			why=" (killed by signal $((rc - 128)))"
		else
			why=""
		fi
		;;
	esac

	status=PASS
	[ "$fail" -gt 0 ] && status=FAIL
	extra=""
	[ "$skip" -gt 0 ] && extra=", $skip skipped"
	printf '%-4s %-16s %3d passed, %d failed%s  %5ss%s\n' \
		"$status" "$name" "$pass" "$fail" "$extra" "$took" "$why"

	if [ "${VERBOSE:-0}" = 1 ]; then
		sed 's/^/    /' "$log"
	elif [ "$fail" -gt 0 ]; then
		# The failing tests with their messages.
		pat='^\[  (FAILED  |ERROR   )\] |^\[   LINE   \]|^ERROR:'
		if grep -qE "$pat" "$log"; then
			grep -E "$pat|^Could not run" "$log" |
				grep -vE 'test\(s\)' | awk '!seen[$0]++' |
				sed 's/^/    /'
		fi
		# Died before cmocka's summary (crash, sanitizer, timeout).
		if ! grep -qE '^\[==========\] [0-9]+ test\(s\) run\.' "$log"
		then
			echo "    (no summary; last lines of the output:)"
			tail -n 10 "$log" | sed 's/^/    | /'
		fi
		failed_bins+=("$name")
	fi

	total_pass=$((total_pass + pass))
	total_fail=$((total_fail + fail))
	total_skip=$((total_skip + skip))
done

if [ ${#failed_bins[@]} -gt 0 ]; then
	echo "failed: ${failed_bins[*]}"
fi
if [ "$total_skip" -gt 0 ]; then
	echo "$total_skip skipped"
fi
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
