#!/bin/bash
# test-pause.sh - pause, resume and flush, of one VBD and of a group.
#
# Under a running fio randwrite+verify job: "pause NAME" returns, the VBD
# is paused with nothing in flight and its writes counter stands still;
# clients wait rather than fail (fio and a reader stay blocked, no error);
# another VBD of the group keeps working; a second pause leaves it paused
# and one resume is enough; after resume fio finishes and verifies.  Then
# the same for the whole group, and flush.
. "$(dirname "$0")/lib.sh"
requires python3 fio dd cmp

M=$T/mnt
S=$T/store
G=$M/g
MiB=1048576

tapfs_start "$M" "$S" || summary
check mkdir "$G"
ctl_ok "$G" "create p raw 128M"
ctl_ok "$G" "create q raw 64M"

# wait_writes GROUP NAME MIN SECONDS: wait until NAME.writes >= MIN.
wait_writes() {
	local end=$((SECONDS + $4)) w
	while :; do
		w=$(stat_val "$1" "$2" writes)
		[ "${w:-0}" -ge "$3" ] && return 0
		[ $SECONDS -ge $end ] && return 1
		sleep 0.1
	done
}

# ---- pause one VBD under fio ---------------------------------------------

# ~8 s of 4k random writes at 2000 IOPS, queue depth 16, then verify.
bg_start fio-bg timeout -k 5 120 fio --name=bg --filename="$G/p" \
	--ioengine=libaio --direct=1 --rw=randwrite --bs=4k --size=64M \
	--iodepth=16 --rate_iops=2000 --verify=crc32c --verify_fatal=1 \
	--verify_state_save=0 \
	--do_verify=1 --randrepeat=0 --output-format=json \
	--output="$T/fio-bg.json"
FIO=$BG_PID
check wait_writes "$G" p 500 15

start=$SECONDS
check timeout 20 bash -c "echo pause p > '$G/.ctl'"
check test $((SECONDS - start)) -le 15
check_eq "status after pause" "status: ok" "$(ctl_status "$G")"
check_match ".ctl: p paused" "^p paused " "$(ctl_line "$G" p)"
check_eq "p.state paused" paused "$(stat_val "$G" p state)"
check_eq "p.inflight 0 while paused" 0 "$(stat_val "$G" p inflight)"
w1=$(stat_val "$G" p writes)
bg_start reader dd if="$G/p" of=/dev/null bs=4k count=1 skip=100 \
	iflag=direct
READER=$BG_PID
sleep 2
w2=$(stat_val "$G" p writes)
check_eq "p.writes does not move while paused" "$w1" "$w2"
check_eq "p.inflight still 0" 0 "$(stat_val "$G" p inflight)"
msg "while paused: p.queued=$(stat_val "$G" p queued)"
check pid_alive "$FIO"
check pid_alive "$READER"

# The other VBD of the group is not paused.
check_match ".ctl: q running" "^q running " "$(ctl_line "$G" q)"
check timeout 10 dd if=/dev/urandom of="$G/q" bs=64k count=16 \
	oflag=direct conv=notrunc status=none

# A second pause: the VBD stays paused (ok, or EBUSY "already paused").
r=$(ctl "$G" "pause p")
check_in "second pause -> ok or EBUSY" "$r" OK EBUSY
msg "second pause of a paused VBD: $r"
check_eq "p.state still paused" paused "$(stat_val "$G" p state)"
check_eq "p.writes still standing" "$w1" "$(stat_val "$G" p writes)"

# One resume is enough.
check timeout 20 bash -c "echo resume p > '$G/.ctl'"
check_eq "status after resume" "status: ok" "$(ctl_status "$G")"
check_match ".ctl: p running" "^p running " "$(ctl_line "$G" p)"
check_eq "p.state running" running "$(stat_val "$G" p state)"
bg_wait "$READER" 10
check_eq "reader finishes without error" 0 "$BG_RC"
bg_wait "$FIO" 60
check_eq "fio exits" 0 "$BG_RC"
fio_check "fio randwrite+verify across pause/resume" "$T/fio-bg.json" 0
check_eq "p.errors" 0 "$(stat_val "$G" p errors)"
check test "$(stat_val "$G" p writes)" -gt "$w1"

# ---- pause the whole group -----------------------------------------------

head -c $((8 * MiB)) /dev/urandom >"$T/pat"
check timeout 20 bash -c "echo pause > '$G/.ctl'"
check_eq "status after group pause" "status: ok" "$(ctl_status "$G")"
check_match ".ctl: p paused" "^p paused " "$(ctl_line "$G" p)"
check_match ".ctl: q paused" "^q paused " "$(ctl_line "$G" q)"
wp=$(stat_val "$G" p writes)
wq=$(stat_val "$G" q writes)
bg_start wp dd if="$T/pat" of="$G/p" bs=64k oflag=direct conv=notrunc
WP=$BG_PID
bg_start wq dd if="$T/pat" of="$G/q" bs=64k oflag=direct conv=notrunc
WQ=$BG_PID
sleep 1.5
check pid_alive "$WP"
check pid_alive "$WQ"
check_eq "p.writes stands while the group is paused" "$wp" \
	"$(stat_val "$G" p writes)"
check_eq "q.writes stands while the group is paused" "$wq" \
	"$(stat_val "$G" q writes)"
check_eq "q.inflight 0" 0 "$(stat_val "$G" q inflight)"
r=$(ctl "$G" "pause")
check_in "second group pause -> ok or EBUSY" "$r" OK EBUSY
check timeout 20 bash -c "echo resume > '$G/.ctl'"
check_eq "status after group resume" "status: ok" "$(ctl_status "$G")"
check_match ".ctl: p running" "^p running " "$(ctl_line "$G" p)"
check_match ".ctl: q running" "^q running " "$(ctl_line "$G" q)"
bg_wait "$WP" 30
check_eq "writer on p finishes" 0 "$BG_RC"
bg_wait "$WQ" 30
check_eq "writer on q finishes" 0 "$BG_RC"
check cmp "$T/pat" <(dd if="$G/p" bs=1M count=8 iflag=direct status=none)
check cmp "$T/pat" <(dd if="$G/q" bs=1M count=8 iflag=direct status=none)

# An idle pause returns promptly too.
start=$SECONDS
ctl_ok "$G" "pause q"
ctl_ok "$G" "resume q"
check test $((SECONDS - start)) -le 5

# ---- flush ---------------------------------------------------------------

head -c $MiB /dev/urandom >"$T/pat1"
check dd if="$T/pat1" of="$G/q" bs=4k seek=1000 conv=notrunc status=none
ctl_ok "$G" "flush q"
check cmp -n $MiB "$T/pat1" "$S/g/q.raw" 0 $((1000 * 4096))
check dd if="$T/pat1" of="$G/p" bs=4k seek=2000 conv=notrunc status=none
check timeout 20 bash -c "echo flush > '$G/.ctl'"
check_eq "status after group flush" "status: ok" "$(ctl_status "$G")"
check cmp -n $MiB "$T/pat1" "$S/g/p.raw" 0 $((2000 * 4096))

tapfs_stop
summary
