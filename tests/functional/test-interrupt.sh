#!/bin/bash
# test-interrupt.sh - clients of a paused VBD can be killed.
#
# A request still waiting inside tapfs (on a pause) is answered EINTR
# when the kernel forwards its client's signal (FUSE INTERRUPT), so a
# reader or writer killed with SIGKILL, or stopped by timeout(1), exits
# at once, and a killed writer's data never reaches the image.  A request
# already handed to the image completes normally.  All of it with one
# event loop, then with -o workers=2.
. "$(dirname "$0")/lib.sh"
requires dd cmp timeout

M=$T/mnt
S=$T/store
G=$M/g
KiB=1024

# gone_within NAME PID SECONDS: the process has exited by then.
gone_within() {
	if wait_gone "$2" "$3"; then
		ok "$1"
	else
		fail "$1" "pid $2 still running after $3 s"
	fi
}

# queued_at_least N: .stats shows N requests of d waiting (bounded wait).
queued_at_least() {
	local i
	for i in $(seq 100); do
		[ "$(stat_val "$G" d queued)" -ge "$1" ] 2>/dev/null && return 0
		sleep 0.05
	done
	return 1
}

# scenario [OPTS]: the whole test on a fresh daemon started with OPTS.
scenario() {
	S=$T/store${1:+-$1}
	tapfs_start "$M" "$S" "$1" || summary
	check mkdir "$G"
	ctl_ok "$G" "create d raw 16M"
	head -c $((1024 * KiB)) /dev/urandom >"$T/p1"
	head -c $((64 * KiB)) /dev/urandom >"$T/p2"
	check dd if="$T/p1" of="$G/d" bs=64k oflag=direct conv=notrunc \
		status=none
	ctl_ok "$G" "pause d"

	# A reader stopped by timeout(1) (SIGTERM).
	timeout 1 dd if="$G/d" of=/dev/null bs=4k count=1 iflag=direct \
		status=none &
	p=$!
	gone_within "reader under 'timeout 1' on a paused VBD exits" $p 5
	wait $p
	check_eq "timeout's status: the reader was stopped" 124 $?

	# A reader and a writer killed with SIGKILL while queued.
	bg_start r dd if="$G/d" of=/dev/null bs=64k count=1 iflag=direct
	R=$BG_PID
	bg_start w dd if="$T/p2" of="$G/d" bs=64k count=1 oflag=direct \
		conv=notrunc
	W=$BG_PID
	check queued_at_least 2
	kill -KILL $R $W
	gone_within "reader killed with SIGKILL exits" $R 5
	gone_within "writer killed with SIGKILL exits" $W 5
	# A writer stopped by timeout(1).
	timeout 1 dd if="$T/p2" of="$G/d" bs=64k count=1 seek=2 oflag=direct \
		conv=notrunc status=none &
	p=$!
	gone_within "writer under 'timeout 1' exits" $p 5
	check_eq "nothing left waiting" 0 "$(stat_val "$G" d queued)"
	check_eq "four requests withdrawn" 4 "$(stat_val "$G" d interrupted)"
	check_match "still paused" "^d paused " "$(ctl_line "$G" d)"

	# Readers killed at once, many times: before, while and after their
	# request reaches tapfs, each exits.  (The kill rarely lands in the
	# microseconds where an INTERRUPT overtakes its request, which
	# fs/intr-memo.h mends: test-intr-memo checks that logic.)
	stuck=0
	for i in $(seq 60); do
		dd if="$G/d" of=/dev/null bs=4k count=1 skip=$i iflag=direct \
			status=none 2>/dev/null &
		p=$!
		sleep "0.000$((RANDOM % 10))"
		kill -KILL $p
		wait_gone $p 5 || stuck=$((stuck + 1))
		wait $p 2>/dev/null
	done
	check_eq "60 readers killed at once: none left in D state" 0 $stuck
	check_eq "and none left waiting" 0 "$(stat_val "$G" d queued)"

	# More INTERRUPTs at once than a loop has receive buffers (24,
	# fs/fuse-data.c): with two loops each one's buffer goes round the
	# loops and home (fs/fuse-workers.c); one lost would stop a loop.
	n0=$(stat_val "$G" d interrupted)
	pids=()
	for i in $(seq 64); do
		dd if="$G/d" of=/dev/null bs=4k count=1 skip=$i iflag=direct \
			status=none 2>/dev/null &
		pids+=($!)
	done
	check queued_at_least 64
	kill -KILL "${pids[@]}"
	stuck=0
	for p in "${pids[@]}"; do
		wait_gone $p 5 || stuck=$((stuck + 1))
		wait $p 2>/dev/null
	done
	check_eq "64 queued readers killed together: all exit" 0 $stuck
	check_eq "64 more requests withdrawn" $((n0 + 64)) \
		"$(stat_val "$G" d interrupted)"

	ctl_ok "$G" "resume d"
	# The killed writers changed nothing (and every loop still reads).
	check cmp "$T/p1" <(timeout 10 dd if="$G/d" bs=64k count=16 \
		iflag=direct status=none)
	check dd if="$T/p2" of="$G/d" bs=64k count=1 seek=4 oflag=direct \
		conv=notrunc status=none
	check cmp "$T/p2" <(dd if="$G/d" bs=64k skip=4 count=1 iflag=direct \
		status=none)

	# In flight (held 4 s by the fault filter below the VBD): not withdrawn.
	check truncate -s 16M "$S/g/f.raw"
	ctl_ok "$G" "open f fault:delay_ms=4000,ops=w:raw:$S/g/f.raw"
	bg_start fw dd if="$T/p2" of="$G/f" bs=64k count=1 oflag=direct \
		conv=notrunc
	FW=$BG_PID
	f_inflight() { [ "$(stat_val "$G" f inflight)" -ge 1 ] 2>/dev/null; }
	for _ in $(seq 100); do f_inflight && break; sleep 0.05; done
	check f_inflight
	kill -KILL $FW
	sleep 0.5
	# A writer killed while its write is in the image waits for it.
	check pid_alive $FW
	gone_within "and exits when it completes" $FW 15
	check_eq "in flight: not counted as withdrawn" 0 \
		"$(stat_val "$G" f interrupted)"
	# The in-flight write completed.
	check cmp "$T/p2" <(dd if="$S/g/f.raw" bs=64k count=1 status=none)
	ctl_close "$G" f
	alive "at the end"
	tapfs_stop
}

scenario
# With two loops the INTERRUPT goes to every loop (fuse-workers.c), and
# the one owning the request answers it; d is loop 1's, f loop 0's.
# (Not over io_uring, which takes one loop.)
over_uring || scenario workers=2
summary
