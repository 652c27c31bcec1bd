#!/bin/bash
# test-stats.sh - .stats latency histograms and quantiles, the stages of
# a request's time, reset-stats.
#
# After known numbers of reads, writes, flushes and discards, each
# operation's cumulative buckets NAME.OP_lat_us.le_N never decrease, end
# (le_inf) at the operation's count, and p50 <= p99 <= p999 <= the
# bucket bound that holds everything; so do the stage histograms
# (queue, io, reply, total: every request), and the stage means add up
# to the total mean.  A read held by a pause spends the pause in the
# queue stage.  reset-stats zeroes the counters of one VBD or of the
# group, and refuses an unknown name.  The daemon's aio queue lines
# (.aio.*) follow the VBDs', count the I/O the raw VBDs did, and survive
# reset-stats.
. "$(dirname "$0")/lib.sh"
requires dd fallocate

M=$T/mnt
S=$T/store
G=$M/g

# hist_ok VBD OP COUNT: the histogram of OP is well-formed and counts COUNT.
hist_ok() {
	local out
	out=$(timeout 10 cat "$G/.stats" | pylib stathist "$1" "$2" "$3" 2>&1)
	check_eq "$1: $2 histogram of $3 completions" ok "$out"
}

# stages_ok VBD: its stage means and histograms are consistent.
stages_ok() {
	local out
	out=$(timeout 10 cat "$G/.stats" | pylib statstages "$1" 2>&1)
	check_eq "$1: stages add up" ok "$out"
}

# stage_hists_ok VBD COUNT: the four stage histograms, each of COUNT requests.
stage_hists_ok() {
	local s

	for s in queue io reply total; do
		hist_ok "$1" "$s" "$2"
	done
}

# aio_ok: the .aio. lines are all there, last, and consistent at rest:
# every piece submitted was reaped, pieces >= iocbs >= io_submit calls,
# and the means are the sums over the counts.
aio_ok() {
	local k v sub iocbs merged waited reaped
	local -A a

	while read -r k v; do
		a[$k]=$v
	done < <(timeout 10 cat "$G/.stats" | grep '^\.aio\.')
	for k in submits iocbs batch merged reaps waited wait_total_us \
		 wait_us reaped disk_total_us disk_us; do
		check_eq ".aio.$k is a number" yes \
			"$([[ ${a[.aio.$k]} =~ ^[0-9]+(\.[0-9])?$ ]] && echo yes)"
	done
	check_eq ".aio. lines come last" ".aio.disk_us" \
		"$(timeout 10 cat "$G/.stats" | tail -1 | cut -d' ' -f1)"
	sub=${a[.aio.submits]} iocbs=${a[.aio.iocbs]} merged=${a[.aio.merged]}
	waited=${a[.aio.waited]} reaped=${a[.aio.reaped]}
	check test "$sub" -gt 0
	check test "$iocbs" -ge "$sub"
	check_eq "every piece submitted was reaped" "$waited" "$reaped"
	check_eq "pieces: iocbs + merged" "$waited" $((iocbs + merged))
	check test "${a[.aio.reaps]}" -gt 0 -a "${a[.aio.reaps]}" -le "$reaped"
	check_eq "wait_us is the mean" $((${a[.aio.wait_total_us]} / waited)) \
		"${a[.aio.wait_us]}"
	check_eq "disk_us is the mean" $((${a[.aio.disk_total_us]} / reaped)) \
		"${a[.aio.disk_us]}"
}

# stat_is VBD KEY VALUE: .stats says so now.
stat_is() { test "$(stat_val "$G" "$1" "$2")" = "$3"; }

tapfs_start "$M" "$S" || summary
check mkdir "$G"
ctl_ok "$G" "create d raw 16M"
ctl_ok "$G" "create e raw 16M"
check dd if=/dev/urandom of="$G/d" bs=4k count=40 oflag=direct \
	conv=notrunc status=none
check dd if="$G/d" of=/dev/null bs=4k count=25 iflag=direct status=none
check dd if="$G/e" of=/dev/null bs=4k count=3 iflag=direct status=none
ctl_ok "$G" "flush d"
check fallocate --punch-hole -o 0 -l 64k "$G/d"
check_eq "d: 40 writes counted" 40 "$(stat_val "$G" d writes)"
check_eq "d: 25 reads counted" 25 "$(stat_val "$G" d reads)"
hist_ok d write 40
hist_ok d read 25
hist_ok d flush "$(stat_val "$G" d flushes)"
hist_ok d discard 1
hist_ok e read 3
n=$(( $(stat_val "$G" d reads) + $(stat_val "$G" d writes) +
      $(stat_val "$G" d flushes) + $(stat_val "$G" d discards) ))
stage_hists_ok d "$n"
stages_ok d
stage_hists_ok e 3
stages_ok e
aio_ok
aio_before=$(stat_val "$G" .aio waited)
check test "$aio_before" -ge 68	# d's 40 writes and 25 reads, e's 3
check_eq "no histogram for an operation that never ran" "" \
	"$(timeout 10 cat "$G/.stats" | grep '^e\.write_lat_us\.')"

ctl_ok "$G" "reset-stats d"
check_eq "reset: d's reads are 0" 0 "$(stat_val "$G" d reads)"
check_eq "reset: d's histograms are gone" "" \
	"$(timeout 10 cat "$G/.stats" | grep '^d\.[a-z]*_lat_us\.')"
check_eq "reset: d's mean queue time is 0" 0 \
	"$(stat_val "$G" d queue_lat_us)"
check_eq "reset of d leaves e" 3 "$(stat_val "$G" e reads)"
check_eq "the size is no counter" 16777216 "$(stat_val "$G" d size)"
ctl_ok "$G" "reset-stats"
check_eq "reset of the group: e's reads are 0" 0 \
	"$(stat_val "$G" e reads)"
ctl_err "$G" "reset-stats nosuch" ENOENT
check_eq "reset-stats leaves the aio queue's counters" "$aio_before" \
	"$(stat_val "$G" .aio waited)"
check dd if="$G/d" of=/dev/null bs=4k count=2 iflag=direct status=none
hist_ok d read 2

# A read that waits for a resume: at least the pause in its queue stage.
ctl_ok "$G" "reset-stats d"
ctl_ok "$G" "pause d"
bg_start held dd if="$G/d" of=/dev/null bs=4k count=1 iflag=direct \
	status=none
held=$BG_PID
check wait_for 10 stat_is d queued 1
sleep 0.5
ctl_ok "$G" "resume d"
bg_wait "$held" 10
check_eq "the held read completes" 0 "$BG_RC"
check_eq "one read counted" 1 "$(stat_val "$G" d reads)"
q=$(stat_val "$G" d queue_lat_us)
check test "$q" -ge 500000
msg "held read: queue_lat_us $q, io_lat_us $(stat_val "$G" d io_lat_us)"
stage_hists_ok d 1
stages_ok d
alive "at the end"
tapfs_stop
summary
