#!/bin/bash
# test-vhd-reclaim.sh - leaked space at the end of a VHD goes at the next
# read-write open.
#
# A crash during a block allocation (before its BAT entry is written)
# leaves the new block and a footer after it past the old end of the file:
# space no BAT entry references, which tapfs-img check reports as a
# warning.  tapfs gives it back when it opens the image read-write: a
# footer at the end of the last referenced block, a barrier, a truncate
# (docs/vhd.md "Crash safety").
#
#   (a) crafted, so that it always happens: the exact bytes an allocation
#       interrupted before its BAT write leaves (bitmap and data at the
#       4 KiB-aligned place the allocator picks, a footer after them),
#       added to a dynamic image written through tapfs; then to a
#       differencing child after a snapshot, and to its parent too, which
#       tapfs opens read-only and must not touch;
#   (b) for real: kill -9 of the daemon during allocating writes (8
#       threads, each write into a new 2 MiB block), repeated until check
#       reports leaked space.
# Each time the VBD comes back from the manifest on the next mount, and:
#   - the daemon logs what it reclaimed, naming the file and the bytes,
#     as many as check reported leaked;
#   - the file shrank by exactly that; tapfs-img check has no warning;
#   - the data is intact: tapfs reads what qemu-img (or, for a chain,
#     tapfs-img convert) read before the reopen, and qemu-img compare
#     finds the reclaimed image identical to a copy of the leaky one;
#   - writing goes on (new blocks after the reclaimed end) and checks clean.
. "$(dirname "$0")/lib.sh"
requires qemu-img python3 cmp md5sum

M=$T/mnt
S=$T/store
G=$M/g
MiB=1048576
SIZE=$((256 * MiB))
if [ ! -x "$TAPFS_IMG" ]; then
	fail "tapfs-img" "$TAPFS_IMG is not built"
	summary
fi

# leak FILE: what a block allocation interrupted before its BAT write
# leaves (2 MiB blocks): the old footer stays; past it, the bitmap and
# 64 KiB of data at the 4 KiB-aligned place, and a footer after the block.
leak() { pylib vhdfile leak "$1"; }

# leaked FILE: the bytes check reports as not used by any block (0: none).
leaked() {
	"$TAPFS_IMG" check "$1" 2>&1 | sed -nE \
		's/.*warning: ([0-9]+) bytes at .* not used by any block.*/\1/p' |
		head -n 1 | grep . || echo 0
}

# leak_warnings FILE: check's warnings about unreferenced space.
leak_warnings() {
	"$TAPFS_IMG" check "$1" 2>&1 | grep -c 'warning: .*not used by any block'
}

# oracle FILE RAW: an outside reading of FILE's virtual disk.
oracle() {
	rm -f "$2"
	if [ "$(img_json_diff "$1")" = differencing ]; then
		"$TAPFS_IMG" convert -O raw "$1" "$2"
	else
		qemu-img convert -f vpc -O raw "$1" "$2"
	fi
}

img_json_diff() {
	"$TAPFS_IMG" info --json "$1" | json_field subformat
}

# reclaimed_log: the bytes the last daemon's log says it reclaimed from
# FILE ("" if it said nothing).
reclaimed_log() {
	sed -nE "s|.*$1: reclaimed ([0-9]+) bytes .*|\\1|p" "$TAPFS_LOG" |
		tail -n 1
}

# reopen NAME FILE LEAK: restart tapfs on a leaky FILE (LEAK bytes per
# check) behind VBD NAME, and verify the reclaim.
reopen() {
	local n=$1 f=$2 leak=$3 before after got
	before=$(file_size "$f")
	rm -f "$T/copy.vhd" "$T/before.raw"
	check cp --sparse=always "$f" "$T/copy.vhd"
	check oracle "$f" "$T/before.raw"
	tapfs_start "$M" "$S" || summary
	check_match "$n: the VBD is back" "^$n running vhd $SIZE rw " \
		"$(ctl_line "$G" "$n")"
	got=$(reclaimed_log "$f")
	check_eq "$n: the daemon logs reclaiming the $leak leaked bytes" \
		"$leak" "$got"
	check cmp "$G/$n" "$T/before.raw"
	ctl_close "$G" "$n"
	after=$(file_size "$f")
	check_eq "$n: the file shrank by the leaked bytes" \
		$((before - leak)) "$after"
	msg "$n: $before -> $after bytes, $leak reclaimed"
	check_eq "$n: check has no leak warning left" 0 "$(leak_warnings "$f")"
	check "$TAPFS_IMG" check "$f"
	if [ "$(img_json_diff "$f")" != differencing ]; then
		check qemu-img compare -f vpc -F vpc "$T/copy.vhd" "$f"
	else
		rm -f "$T/after.raw"
		check "$TAPFS_IMG" convert -O raw "$f" "$T/after.raw"
		check cmp "$T/before.raw" "$T/after.raw"
	fi
	# Writing goes on past the reclaimed end, and checks clean.
	ctl_ok "$G" "open $n vhd:$f"
	check_eq "$n: an allocating write after the reclaim" 4 \
		"$(fsop pwrite "$G/$n" $((SIZE - 3 * MiB)) 0badcafe)"
	check_fsop "$n: fsync" OK -- fsync "$G/$n"
	ctl_close "$G" "$n"
	check_eq "$n: no leak warning after writing" 0 "$(leak_warnings "$f")"
	check "$TAPFS_IMG" check "$f"
	ctl_ok "$G" "open $n vhd:$f"
	tapfs_stop
	rm -f "$T/copy.vhd" "$T/before.raw" "$T/after.raw"
}

# ---- (a) crafted ---------------------------------------------------------

tapfs_start "$M" "$S" || summary
check mkdir "$G"
ctl_ok "$G" "create d vhd $SIZE"
F=$S/g/d.vhd
for b in 0 1 5 40; do
	check_eq "d: write block $b" 4096 "$(fsop pwrite "$G/d" \
		$((b * 2 * MiB + 512)) "$(printf '%08x' "$b")$(printf \
		'%08184d' 0)")"
done
tapfs_stop
check_eq "d: clean after an unmount" 0 "$(leak_warnings "$F")"
clean=$(file_size "$F")
leak=$(leak "$F")
check_eq "d: the crafted leak is what check reports" "$leak" \
	"$(leaked "$F")"
check_eq "d: check says so in a warning, not an error" 1 \
	"$(leak_warnings "$F")"
check "$TAPFS_IMG" check "$F"
reopen d "$F" "$leak"
check_eq "d: back to its size before the leak, plus the new block" \
	$((clean + 2 * MiB + 4096)) "$(file_size "$F")"

# A differencing child, and its parent: both leak; only the child, open
# read-write, is reclaimed.
tapfs_start "$M" "$S" || summary
ctl_ok "$G" "snapshot d"
C=$S/g/d.1.vhd
check_eq "d.1: write into the child" 4096 "$(fsop pwrite "$G/d" \
	$((7 * 2 * MiB)) "$(printf '%08192d' 1)")"
tapfs_stop
# The child records its parent's mtime (seconds): keep it, so that the
# child checks clean whatever second the leak is crafted in.
pmtime=$(stat -c %Y "$F")
pleak=$(leak "$F")
check touch -d "@$pmtime" "$F"
psize=$(file_size "$F")
pmd5=$(md5sum <"$F")
leak=$(leak "$C")
check_eq "d.1: the crafted leak is what check reports" "$leak" \
	"$(leaked "$C")"
reopen d "$C" "$leak"
check_eq "parent: not reclaimed (read-only)" "$psize" "$(file_size "$F")"
check_eq "parent: unchanged" "$pmd5" "$(md5sum <"$F")"
check_eq "parent: still reports its leak" "$pleak" "$(leaked "$F")"

# ---- (b) kill -9 during allocating writes ------------------------------

tapfs_start "$M" "$S" || summary
ctl_ok "$G" "create k vhd $SIZE"
K=$S/g/k.vhd
leak=0
start=0
for round in 1 2 3 4 5 6; do
	log=$T/w.$round
	: >"$log"
	"$PYTHON" -B -E -S "$PYLIB/allocwriter.py" "$G/k" "$log" "$start" \
		>"$T/writer.out" 2>&1 &
	wpid=$!
	on_exit "kill -KILL $wpid 2>/dev/null; wait $wpid 2>/dev/null; true"
	end=$((SECONDS + 20))
	until [ "$(grep -c W "$log")" -ge 12 ] || [ $SECONDS -ge $end ]; do
		sleep 0.01
	done
	kill -KILL "$TAPFS_PID"
	wait_gone "$TAPFS_PID" 10
	wait "$TAPFS_PID" 2>/dev/null
	fusermount3 -u "$M" 2>/dev/null || umount -l "$M" 2>/dev/null
	wait_gone "$wpid" 20 || kill -KILL "$wpid"
	wait "$wpid" 2>/dev/null
	start=$((start + $(grep -c W "$log") + 8))
	leak=$(leaked "$K")
	msg "round $round: $(grep -c W "$log") writes acknowledged at the" \
		"kill; $leak bytes leaked"
	[ "$leak" -gt 0 ] && break
	tapfs_start "$M" "$S" || summary
done
if [ "$leak" -gt 0 ]; then
	ok "kill -9 left $leak leaked bytes (round $round)"
	check "$TAPFS_IMG" check "$K"
	reopen k "$K" "$leak"
else
	fail "kill -9 left leaked space" "none in $round rounds"
	tapfs_stop
fi

summary
