#!/bin/bash
# test-workers.sh - -o workers=N: several event loops, one VBD owner each.
#
# workers=0, workers=1000 and workers=x are refused at start with a message
# naming the value.  A second read-write open of an image that a VBD on
# the other loop holds is refused, naming this daemon; a create over it
# names the VBD.  With workers=2 the daemon runs two threads; three
# VBDs (raw, qcow2, vhd) spread over both loops take fio randwrite with
# crc32c verification at once while the control plane works on them:
# a group pause (every VBD paused, nothing in flight), resume, a flush,
# a live snapshot of the qcow2 VBD (a qcow2 child: qemu-img reads the
# chain; the VHD child a raw or vhd VBD gets is differencing, which it
# does not), .stats read and a group made meanwhile.  Every fio job
# verifies, the daemon exits 0 on unmount, and qemu-img compare finds
# each image chain holding what the VBD read through the mount.
. "$(dirname "$0")/lib.sh"
if over_uring; then
	echo "SKIP: $TEST_NAME: -o workers=N is not served over io_uring"
	exit 77
fi
requires fio qemu-img python3

M=$T/mnt
S=$T/store
G=$M/g

# ---- bad values ------------------------------------------------------------

mkdir -p "$T/m0"
check_out "workers=0 refused" 1 "workers=0: must be 1\.\.[0-9]+" \
	timeout 10 "$TAPFS" -f -o "store=$T/s0,workers=0" "$T/m0"
check_out "workers=1000 refused" 1 "workers=1000: must be 1\.\.[0-9]+" \
	timeout 10 "$TAPFS" -f -o "store=$T/s0,workers=1000" "$T/m0"
check_out "workers=x refused" 1 "option workers: 'x' is not a number" \
	timeout 10 "$TAPFS" -f -o "store=$T/s0,workers=x" "$T/m0"
check_not is_mounted "$T/m0"

# ---- two loops, three formats, fio and the control plane -------------------

tapfs_start "$M" "$S" workers=2 || summary
check_eq "the daemon runs two threads" 2 \
	"$(ls /proc/"$TAPFS_PID"/task | wc -l)"
check mkdir "$G"
ctl_ok "$G" "create a raw 48M"
ctl_ok "$G" "create b qcow2 48M"
ctl_ok "$G" "create c vhd 48M"

# A new VBD goes to the loop owning the fewest, loop 0 last on a tie:
# a on loop 1, b on 0, c on 1.
check_eq "a is served by loop 1" 1 "$(stat_val "$G" a loop)"
check_eq "b is served by loop 0" 0 "$(stat_val "$G" b loop)"
check_eq "c is served by loop 1" 1 "$(stat_val "$G" c loop)"

# A second read-write open of a's image lands on the other loop (0, which
# owns fewer); the loops share one lock table, so the refusal names the
# VBD, as on one loop.
ctl_err "$G" "open a2 raw:$S/g/a.raw" EBUSY
check_out "the refusal names the VBD on the other loop" 0 \
	"g/a holds $S/g/a\\.raw read-write" ctl_status "$G"
# The refused open took no turn: y goes to loop 0 as a2 would have
# (a round robin would put it on 1), and evens the loops.
check truncate -s 8M "$S/g/y.raw" "$S/g/d.raw"
ctl_ok "$G" "open y raw:$S/g/y.raw"
check_eq "a refused open takes no turn: y on loop 0" 0 \
	"$(stat_val "$G" y loop)"
# A create over an image that a VBD on loop 1 holds (z: the loops are
# even, so loop 1) names that VBD; the control plane runs on loop 0.
ctl_ok "$G" "open z raw:$S/g/d.raw"
check_eq "z on loop 1" 1 "$(stat_val "$G" z loop)"
ctl_err "$G" "create d raw 8M" EBUSY
check_out "create of a held image names the VBD on the other loop" 0 \
	"image $S/g/d\\.raw already exists and is in use read-write by g/z" \
	ctl_status "$G"
# A close leaves a hole that the next VBD fills: with y closed, loop 0
# owns b alone and loop 1 owns a, c and z, so x goes to loop 0 (a round
# robin would go on to loop 1).
ctl_ok "$G" "close y"
check truncate -s 8M "$S/g/x.raw"
ctl_ok "$G" "open x raw:$S/g/x.raw"
check_eq "after a close, the next VBD evens the loops: x on loop 0" 0 \
	"$(stat_val "$G" x loop)"
ctl_ok "$G" "close x"
ctl_ok "$G" "close z"

# wait_writes NAME MIN: NAME.writes reaches MIN within 20 s.
wait_writes() {
	local end=$((SECONDS + 20)) w
	while :; do
		w=$(stat_val "$G" "$1" writes)
		[ "${w:-0}" -ge "$2" ] && return 0
		[ $SECONDS -lt $end ] || return 1
		sleep 0.1
	done
}

# ~5 s of 4k random writes each at QD16, then the verify pass.
declare -A FIO FMT=([a]=raw [b]=qcow2 [c]=vhd)
for v in a b c; do
	bg_start "fio-$v" timeout -k 5 120 fio --name="$v" \
		--filename="$G/$v" --ioengine=libaio --direct=1 \
		--rw=randwrite --bs=4k --size=32M --iodepth=16 \
		--rate_iops=1600 --verify=crc32c --verify_fatal=1 \
		--verify_state_save=0 --do_verify=1 --randrepeat=0 \
		--output-format=json --output="$T/fio-$v.json"
	FIO[$v]=$BG_PID
done
for v in a b c; do
	check wait_writes $v 300
done

ctl_ok "$G" "pause"
for v in a b c; do
	check_eq "$v paused" paused "$(stat_val "$G" $v state)"
	check_eq "$v: nothing in flight while paused" 0 \
		"$(stat_val "$G" $v inflight)"
done
w1=$(stat_val "$G" a writes)
sleep 1
check_eq "a.writes stands still while paused" "$w1" \
	"$(stat_val "$G" a writes)"
ctl_ok "$G" "resume"
ctl_ok "$G" "flush"
check wait_writes a $((w1 + 300))
ctl_ok "$G" "snapshot b"
check mkdir "$M/g2"
check_eq "a.state running" running "$(stat_val "$G" a state)"
alive "after pause, flush and a snapshot under I/O"

for v in a b c; do
	bg_wait "${FIO[$v]}" 90
	fio_check "fio randwrite+verify on $v (${FMT[$v]})" \
		"$T/fio-$v.json" "$BG_RC"
done
for v in a b c; do
	check dd if="$G/$v" of="$T/$v.img" bs=1M iflag=direct status=none
done
check_eq "b's leaf is its snapshot child" qcow2 \
	"$(ctl_line "$G" b | cut -d' ' -f3)"
# leaf NAME: the VBD's leaf image ("driver:PATH" or "PATH -> parent...").
leaf() {
	local x
	x=$(ctl_line "$G" "$1" | cut -d' ' -f6)
	case "$x" in /*) echo "$x" ;; *) echo "${x#*:}" ;; esac
}
A=$(leaf a) B=$(leaf b) C=$(leaf c)
check_not test "$B" = "$S/g/b.qcow2"
tapfs_stop

check_out "qemu-img compare: a.raw holds what the VBD read" 0 \
	"Images are identical" qemu-img compare -f raw "$T/a.img" -F raw "$A"
check_out "qemu-img compare: b's chain holds what the VBD read" 0 \
	"Images are identical" qemu-img compare -f raw "$T/b.img" \
	-F qcow2 "$B"
check_out "qemu-img compare: c's chain holds what the VBD read" 0 \
	"Images are identical" qemu-img compare -f raw "$T/c.img" -F vpc "$C"

summary
