#!/bin/bash
# run.sh - run the tapfs functional tests.
#
#	tests/functional/run.sh [test-NAME.sh ...]
#
# Runs every tests/functional/test-*.sh (or the ones named), each under a
# timeout, prints each script's result, and ends with the aggregate line
# "N passed, N failed[, N skipped]" counting the checks of all scripts.
# A script that exits 77 is skipped; a script that fails without reporting
# a failed check (crash, timeout), or ends without its summary line,
# counts as one more failure.  Exit 1 if anything failed.
#
# Environment: TAPFS (daemon, default build/tapfs), TEST_TIMEOUT (seconds
# per script, default 180), VERBOSE=1 (print every script's full output).

here=$(cd "$(dirname "$0")" && pwd)
timeout_s=${TEST_TIMEOUT:-180}
logdir=$(mktemp -d /tmp/tapfs-run.XXXXXX) || exit 1
child=
trap 'rm -rf "$logdir"' EXIT
trap '[ -n "$child" ] && kill -TERM $child && wait $child; exit 130' INT TERM

if [ $# -gt 0 ]; then
	tests=()
	for t in "$@"; do
		case "$t" in
		*/*) tests+=("$t") ;;
		*) tests+=("$here/$t") ;;
		esac
	done
else
	tests=("$here"/test-*.sh)
fi

total_pass=0
total_fail=0
total_skip=0

for t in "${tests[@]}"; do
	name=$(basename "$t" .sh)
	log=$logdir/$name.log
	start=$SECONDS
	# In the background so that an interrupt of run.sh reaches the test
	# (timeout(1) runs it in a process group of its own) and its cleanup.
	timeout -k 15 "$timeout_s" bash "$t" </dev/null >"$log" 2>&1 &
	child=$!
	wait $child
	rc=$?
	child=
	took=$((SECONDS - start))
	line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
	p=0
	f=0
	if [ -n "$line" ]; then
		p=$(echo "$line" | sed -E 's/^([0-9]+) passed.*/\1/')
		f=$(echo "$line" |
			sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/')
	fi
	if [ $rc -eq 77 ]; then
		total_skip=$((total_skip + 1))
		printf '%-22s SKIP  %s\n' "$name" \
			"$(grep -m1 '^SKIP' "$log" | sed 's/^SKIP: //')"
		continue
	fi
	if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then
		f=1		# crashed or timed out without a failed check
	elif [ -z "$line" ]; then
		f=1		# a test must end with its summary line
		rc=1
	fi
	total_pass=$((total_pass + p))
	total_fail=$((total_fail + f))
	if [ $rc -eq 0 ]; then
		status=PASS
	elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
		status="FAIL (timeout ${timeout_s}s)"
	else
		status="FAIL (exit $rc)"
	fi
	printf '%-22s %-6s %s  [%ss]\n' "$name" "$status" \
		"${line:-no summary line}" "$took"
	if [ "${VERBOSE:-0}" = 1 ]; then
		sed 's/^/    /' "$log"
	elif [ $rc -ne 0 ]; then
		grep -E '^FAIL' "$log" | cut -c1-400 | sed 's/^/    /'
		echo "    --- last lines of $name ---"
		grep -vE '^(ok|FAIL) ' "$log" | tail -n 15 | cut -c1-400 |
			sed 's/^/    /'
	fi
done

if [ $total_skip -gt 0 ]; then
	echo "$total_pass passed, $total_fail failed, $total_skip skipped"
else
	echo "$total_pass passed, $total_fail failed"
fi
[ $total_fail -eq 0 ]
