#!/bin/bash
# test-bench-report.sh - the figures make bench prints (bench/benchreport.py).
#
# BENCH_REPS rounds become one figure: the median of the rounds (odd and
# even counts), "fail" if any round failed, a word (a verify's ok) kept;
# the range of tapfs/raw pairs round k with round k, and says "-" for a
# single round, a failed round or rounds that do not pair up.
. "$(dirname "$0")/lib.sh"
requires python3

BENCH=$TOP/bench

# expect NAME PYTHON-EXPRESSION VALUE: the expression prints VALUE.
expect() {
	local got
	got=$(PYTHONPATH=$BENCH python3 -c \
		"from benchreport import *; print($2)" 2>&1)
	if [ "$got" = "$3" ]; then
		ok "$1"
	else
		fail "$1" "got '$got', want '$3'"
	fi
}

expect "median of 3 rounds" "merge_rounds(['70.0', '90.5', '80.0'])" 80.0
expect "median of 2 rounds" "merge_rounds(['70.0', '80.0'])" 75.0
expect "one round as it is" "merge_rounds(['12.5'])" 12.5
expect "a failed round fails the figure" \
	"merge_rounds(['70.0', 'fail', '80.0'])" fail
expect "a verify's word kept" "merge_rounds(['ok'])" ok
expect "rounds paired in order" \
	"ratio_range(['50', '90', '60'], ['100', '100', '50'])" "0.50-1.20"
expect "one round: no range" "ratio_range(['50'], ['100'])" -
expect "a failed round: no range" \
	"ratio_range(['50', 'fail'], ['100', '90'])" -
expect "unpaired rounds: no range" \
	"ratio_range(['50', '60', '70'], ['100', '100'])" -
expect "a missing side: no range" "ratio_range(None, ['100', '90'])" -
summary
