#!/bin/bash
# test-qcow2-crash.sh - kill -9 during allocating writes to qcow2 VBDs.
#
# Each round starts a daemon on a store holding qcow2 VBDs (a fresh v3
# image with 64k clusters, a v3 image with 4k clusters and 2-bit
# refcounts, a v2 image on a backing file), runs on each an fsync-logging
# writer (distinct slots: data, fsync, then a log line) and fio random
# writes at QD32 into unallocated space, and kills the daemon with SIGKILL
# after a different delay.  Then, for every image:
#   - qemu-img check reports no corruption (leaked clusters are allowed:
#     exit status 0 or 3, no "ERROR");
#   - tapfs-img check reports no errors;
#   - every slot the writer logged as fsync'd reads back as written
#     through qemu-img convert;
# and a new daemon reopens the store (the dirty images are repaired: their
# leaks freed), reads the same, takes more writes, and closes them clean
# (dirty bit cleared); then qemu-img check finds no leak in the version 3
# images (the version 2 one has no dirty bit: its leaks stay).
. "$(dirname "$0")/lib.sh"
requires qemu-img qemu-io fio python3 fusermount3

M=$T/mnt
S=$T/store
G=$M/g
I=$T/img
MiB=1048576
mkdir -p "$I"

# slots write VBD LOG SLOT_BYTES FIRST END | verify IMAGE LOG SLOT_BYTES:
# fsync'd writes into numbered slots, and their check (pylib/slotio.py).
slots() { pylib slotio "$@"; }

SLOT=$((96 * 1024))
# Each round's slots, disjoint and below fio's half of the smallest image
# (128 MiB): a fast round must not reach the next one's or fio's.
ROUND_SLOTS=$((64 * MiB / SLOT / 3))

# qemu_check_ok IMG: no corruption (leaks allowed).
qemu_check_ok() {
	local out rc
	out=$(qemu-img check "$1" 2>&1)
	rc=$?
	if { [ $rc -eq 0 ] || [ $rc -eq 3 ]; } &&
		! printf '%s\n' "$out" | grep -q '^ERROR'; then
		ok "qemu-img check $(basename "$1"): no corruption (exit $rc)"
	else
		fail "qemu-img check $(basename "$1")" \
			"exit $rc: $(printf '%s' "$out" | grep -m3 -i error)"
	fi
}

dirty_bit() { pylib qcow2file dirty "$1"; }

# The images, made once; each round opens them all.
check qemu-img create -q -f qcow2 -o cluster_size=64k "$I/k64.qcow2" 256M
check qemu-img create -q -f qcow2 -o cluster_size=4k,refcount_bits=2 \
	"$I/k4.qcow2" 128M
check qemu-img create -q -f qcow2 -o cluster_size=64k "$I/base.qcow2" 128M
check qemu-io -c "write -P 0x3c 0 128M" "$I/base.qcow2"
check qemu-img create -q -f qcow2 -o compat=0.10 -b base.qcow2 -F qcow2 \
	"$I/kb.qcow2"
VBDS="k64 k4 kb"

tapfs_start "$M" "$S" "allow_path=$T" || summary
check mkdir "$G"
for v in $VBDS; do
	ctl_ok "$G" "open $v qcow2:$I/$v.qcow2"
done
tapfs_stop

# wait_vbds: the store's VBDs are back (opened after the mount is live).
wait_vbds() {
	local v end=$((SECONDS + 20))
	for v in $VBDS; do
		while [ ! -e "$G/$v" ] && [ $SECONDS -lt $end ]; do
			sleep 0.1
		done
		check test -e "$G/$v"
	done
}

for round in 1 2 3; do
	tapfs_start "$M" "$S" "allow_path=$T" || break
	wait_vbds
	pids=()
	for v in $VBDS; do
		size=$(file_size "$G/$v")
		# Slots in the first half, fio in the second.
		"$PYTHON" -B -E -S "$PYLIB/slotio.py" write "$G/$v" \
			"$T/$v.log" $SLOT \
			$(( (round - 1) * ROUND_SLOTS )) \
			$(( round * ROUND_SLOTS )) >/dev/null 2>&1 &
		pids+=($!)
		fio --name="$v$round" --filename="$G/$v" --ioengine=libaio \
			--direct=1 --rw=randwrite --bsrange=512-128k \
			--iodepth=32 --offset=$((size / 2)) \
			--size=$((size / 2)) --time_based --runtime=30 \
			--randseed=$round >/dev/null 2>&1 &
		pids+=($!)
	done
	sleep $((round))
	kill -KILL "$TAPFS_PID"
	ok "round $round: daemon $TAPFS_PID killed during writes"
	wait "$TAPFS_PID" 2>/dev/null
	fusermount3 -uz "$M" 2>/dev/null
	for p in "${pids[@]}"; do
		wait "$p" 2>/dev/null
	done
	for v in $VBDS; do
		qemu_check_ok "$I/$v.qcow2"
		[ -x "$TAPFS_IMG" ] && check "$TAPFS_IMG" check "$I/$v.qcow2"
		rm -f "$T/$v.raw"
		check qemu-img convert -O raw "$I/$v.qcow2" "$T/$v.raw"
		check slots verify "$T/$v.raw" "$T/$v.log" $SLOT
		rm -f "$T/$v.raw"
	done
done

# Reopened: the dirty images are accepted, read the same, take writes,
# and close clean.
tapfs_start "$M" "$S" "allow_path=$T" || summary
wait_vbds
for v in $VBDS; do
	check_match "$v: reopened after the crashes" " running qcow2 " \
		"$(ctl_line "$G" "$v")"
	check slots verify "$G/$v" "$T/$v.log" $SLOT
	check dd if=/dev/urandom of="$G/$v" bs=64k count=64 \
		seek=$((60 * 1024 * 1024 / 65536)) oflag=direct status=none
done
for v in k64 k4; do
	check_match "$v: the dirty image was repaired at open" \
		"$I/$v.qcow2: the dirty bit was set \(not closed cleanly\); \
(repaired: [0-9]+ leaked clusters? freed|refcounts checked: nothing to \
repair)" "$(cat "$TAPFS_LOG")"
done
tapfs_stop
for v in $VBDS; do
	qemu_check_ok "$I/$v.qcow2"
	check_eq "$v: dirty bit clear after a clean close" 0 \
		"$(dirty_bit "$I/$v.qcow2")"
done
for v in k64 k4; do
	check_eq "$v: no leaked cluster after the repair and a clean close" \
		0 "$(qemu-img check --output=json "$I/$v.qcow2" 2>/dev/null |
		json_field -d 0 leaks)"
done

summary
