#!/bin/bash
# test-vhd-crash.sh - kill -9 the daemon in the middle of allocating writes.
#
# A python writer (6 threads) writes into a fresh dynamic VHD VBD: each
# round into blocks the image does not hold yet, so a third of the writes
# allocate a block and the others land beside an allocation, often in
# flight; offsets and lengths are random, partial sectors included, and
# every write goes to its own slot (no two writes overlap).  It logs each
# write it attempts, each write acknowledged (pwrite returned), and after
# each fsync which acknowledged writes that fsync made durable.  The
# daemon is killed with SIGKILL at a different moment each round (at the
# first write, after 8, 48 and 120 acknowledged writes).  Then:
#   - the dead mount is unmounted (fusermount3 -u, umount -l);
#   - tapfs-img check is clean (warnings, e.g. leaked space, allowed);
#   - qemu-img convert of the image, and a fresh tapfs mount reading the
#     VBD (which comes back from the manifest), both show: every fsync'd
#     write; every acknowledged write (the daemon died, not the machine:
#     an acknowledged write is in the file); for a write in flight, each
#     sector either old (zeros) or new; zeros everywhere nothing was
#     written, so no stale or misplaced data;
#   - the next round writes through the recovered image; after round 1
#     the VBD is snapshotted, and rounds 2 and 3 write into a
#     differencing child (block allocations in the child over blocks the
#     parent holds, whose other sectors must still read from the parent,
#     and bitmap updates), checked through the chain by tapfs and
#     tapfs-img convert (QEMU does not follow parents); the base must not
#     change.
. "$(dirname "$0")/lib.sh"
requires qemu-img python3 cmp

M=$T/mnt
S=$T/store
G=$M/g
MiB=1048576
SIZE=$((512 * MiB))
ROUNDS=4
if [ ! -x "$TAPFS_IMG" ]; then
	msg "tapfs-img not built ($TAPFS_IMG): 'tapfs-img check' skipped"
fi

# crashio write VBD LOG ROUND ROUNDS | verify FILE LOG...: the writer of
# one round and the checker of all (tests/pylib/crashrounds.py).
crashio() { pylib crashrounds "$@"; }

# verify NAME FILE LOGS...: FILE holds what the logs say.
verify() {
	local name=$1 out
	shift
	if out=$(crashio verify "$@" 2>&1); then
		ok "$name: $out"
	else
		fail "$name" "$(printf '%s' "$out" | head -n 6)"
	fi
}

# img_check NAME FILE: tapfs-img check exits 0 (warnings allowed).
img_check() {
	local out rc
	[ -x "$TAPFS_IMG" ] || return 0
	out=$("$TAPFS_IMG" check "$2" 2>&1)
	rc=$?
	if [ $rc -eq 0 ]; then
		ok "$1: tapfs-img check clean ($(printf '%s\n' "$out" |
			grep -c 'warning:') warnings)"
		printf '%s\n' "$out" | grep 'warning:' | head -n 3 >&2
	else
		fail "$1: tapfs-img check clean" "exit $rc: $(printf '%s' \
			"$out" | head -n 5)"
	fi
}

# acked LOG: how many writes the log says were acknowledged.
acked() { grep -c '^W' "$1" 2>/dev/null; }

# oracle_raw RAW: the leaf's contents read by an outside reader: qemu-img
# for a single image; for a chain (which QEMU does not follow) tapfs-img
# convert, if built.  Sets ORACLE; 1 if there is none.
oracle_raw() {
	if [ "$CHAIN" = "vhd:$IMG" ]; then
		ORACLE=qemu-img
		check qemu-img convert -f vpc -O raw "$IMG" "$1"
	elif [ -x "$TAPFS_IMG" ]; then
		ORACLE=tapfs-img
		check "$TAPFS_IMG" convert -O raw "$IMG" "$1"
	else
		echo "skip - no outside reader for the chain (tapfs-img not built)"
		return 1
	fi
}

tapfs_start "$M" "$S" || summary
check mkdir "$G"
ctl_ok "$G" "create d vhd $SIZE"
IMG=$S/g/d.vhd
CHAIN="vhd:$IMG"
BASE_MD5=
LOGS=()

for r in $(seq 0 $((ROUNDS - 1))); do
	log=$T/log.$r
	LOGS+=("$log")
	: >"$log"
	"$PYTHON" -B -E -S "$PYLIB/crashrounds.py" write "$G/d" "$log" "$r" \
		"$ROUNDS" >"$T/writer.$r" 2>&1 &
	wpid=$!
	on_exit "kill -KILL $wpid 2>/dev/null; wait $wpid 2>/dev/null"
	# Four moments, by the writer's progress (of 384 writes): at its
	# first write (the first allocations), after 8, 48 and 120 acked.
	case $r in
	0) kill_at=0 ;;
	1) kill_at=8 ;;
	2) kill_at=48 ;;
	*) kill_at=120 ;;
	esac
	end=$((SECONDS + 20))
	until [ -s "$log" ] && [ "$(acked "$log")" -ge $kill_at ]; do
		[ $SECONDS -ge $end ] && break
		sleep 0.01
	done
	if pid_alive "$wpid"; then
		ok "round $r: the writer is still writing at the kill" \
"($(acked "$log") writes acknowledged)"
	else
		fail "round $r: the writer is still writing at the kill" \
			"it had finished: $(cat "$T/writer.$r")"
	fi
	kill -KILL "$TAPFS_PID"
	wait_gone "$TAPFS_PID" 10
	wait "$TAPFS_PID" 2>/dev/null
	fusermount3 -u "$M" 2>/dev/null || umount -l "$M" 2>/dev/null
	check_not is_mounted "$M"
	if wait_gone "$wpid" 20; then
		ok "round $r: the writer stops once the daemon is gone"
	else
		fail "round $r: the writer stops once the daemon is gone"
		kill -KILL "$wpid"
	fi
	wait "$wpid" 2>/dev/null
	msg "round $r: $(grep -c '^A' "$log") attempted, $(acked "$log")" \
		"acknowledged, $(grep '^F' "$log" | tail -n 1 | cut -c3-)" \
		"fsync'd at the kill"

	img_check "round $r" "$IMG"
	rm -f "$T/d.raw"
	if oracle_raw "$T/d.raw"; then
		verify "round $r: $ORACLE reads the image" "$T/d.raw" \
			"${LOGS[@]}"
	fi

	tapfs_start "$M" "$S" || summary
	check_eq "round $r: the VBD is back" \
		"d running vhd $SIZE rw $CHAIN" "$(ctl_line "$G" d)"
	verify "round $r: tapfs reads the VBD" "$G/d" "${LOGS[@]}"
	if [ -f "$T/d.raw" ]; then
		check cmp "$G/d" "$T/d.raw"
	fi
	rm -f "$T/d.raw"
	if [ -n "$BASE_MD5" ]; then
		img_check "round $r, base" "$S/g/d.vhd"
		check_eq "round $r: the base is unchanged" "$BASE_MD5" \
			"$(md5sum <"$S/g/d.vhd")"
	fi
	# Rounds 2 and up write into a differencing child: allocations in
	# it over blocks the parent holds, and bitmap updates.
	if [ $r -eq 1 ]; then
		ctl_ok "$G" "snapshot d"
		IMG=$S/g/d.1.vhd
		CHAIN="vhd:$IMG -> vhd:$S/g/d.vhd"
		check_eq "the VBD runs on a differencing child" \
			"d running vhd $SIZE rw $CHAIN" "$(ctl_line "$G" d)"
		BASE_MD5=$(md5sum <"$S/g/d.vhd")
	fi
done

# A clean end: unmount, the image checks clean, holds everything.
tapfs_stop
img_check "after a clean unmount" "$IMG"
rm -f "$T/d.raw"
if oracle_raw "$T/d.raw"; then
	verify "after a clean unmount: $ORACLE reads the image" "$T/d.raw" \
		"${LOGS[@]}"
fi
rm -f "$T/d.raw"
summary
