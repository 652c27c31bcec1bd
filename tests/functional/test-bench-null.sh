#!/bin/bash
# test-bench-null.sh - the bench's reference daemons serve what they say.
#
# make bench measures tapfs against bench/fuse-null in three modes: null
# (replies only: zeros, writes dropped), nullio (-o backing=IMAGE: the
# image through libaio) and nullsync (-o backing=IMAGE,sync: a blocking
# pread/pwrite per request).  A reference that answered wrongly would
# make every ratio of the loop table a lie, so each mode is read and
# written here, on its file and through a loop device in direct I/O mode
# (the way the bench uses it), against the image itself.
. "$(dirname "$0")/lib.sh"
requires_root
requires losetup cmp dd
FUSE_NULL=${FUSE_NULL:-$TOP/build/fuse-null}
requires "$FUSE_NULL"

IMG=$T/image
# Known contents: 8 MiB of random bytes.
head -c $((8 << 20)) /dev/urandom >"$IMG"
cp "$IMG" "$T/expect"

# null_start NAME OPTIONS: fuse-null -f -o OPTIONS on $T/NAME.mnt, stopped
# at exit as a tapfs daemon is (lib.sh's _tapfs_reap: unmount, then by its
# PID); NULL_FILE is its file.
null_start() {
	local mnt=$T/$1.mnt pid
	mkdir -p "$mnt"
	"$FUSE_NULL" -f -o "$2" "$mnt" </dev/null >"$T/$1.log" 2>&1 &
	pid=$!
	on_exit "_tapfs_reap $pid '$mnt'"
	if wait_mounted "$mnt" 10 "$pid"; then
		ok "$1: mounted"
	else
		fail "$1: mounted" "$(tail -n 3 "$T/$1.log")"
		return 1
	fi
	NULL_FILE=$mnt/null
	NULL_PID=$pid
}

# A direct read of COUNT 4 KiB blocks at block SKIP of FILE, to stdout.
dread() { dd if="$1" bs=4k skip="$2" count="$3" iflag=direct status=none; }
# A direct write of COUNT 4 KiB blocks from FROM at block SEEK of FILE.
dwrite() {
	dd if="$1" of="$2" bs=4k seek="$3" count="$4" oflag=direct \
		conv=notrunc status=none
}

# ---- usage ----------------------------------------------------------------

check_out "-o sync without backing is refused" 1 "needs -o backing" \
	"$FUSE_NULL" -f -o sync "$T"

# ---- null: zeros, writes acknowledged and dropped ------------------------

if null_start null "size=$((8 << 20))"; then
	check_eq "null: the file has the size asked for" $((8 << 20)) \
		"$(stat -c %s "$NULL_FILE")"
	head -c $((64 << 10)) /dev/zero >"$T/zeros"
	dread "$NULL_FILE" 100 16 >"$T/got"
	same_bytes "null: a read is zeros" "$T/zeros" "$T/got"
	check dwrite "$T/expect" "$NULL_FILE" 100 16
	dread "$NULL_FILE" 100 16 >"$T/got"
	same_bytes "null: and not stored" "$T/zeros" "$T/got"
	check pid_alive "$NULL_PID"
fi

# ---- nullio and nullsync: the image's bytes, both ways -------------------

for mode in nullio nullsync; do
	opts="backing=$IMG"
	[ "$mode" = nullsync ] && opts+=",sync"
	null_start "$mode" "$opts" || continue
	check_eq "$mode: the file has the image's size" \
		"$(stat -c %s "$IMG")" "$(stat -c %s "$NULL_FILE")"
	dread "$NULL_FILE" 0 2048 >"$T/got"
	same_bytes "$mode: the whole file reads as the image" \
		"$T/expect" "$T/got"

	# A 1 MiB write on the file lands in the image.
	head -c $((1 << 20)) /dev/urandom >"$T/new"
	check dwrite "$T/new" "$NULL_FILE" 512 256
	dd if="$T/new" of="$T/expect" bs=4k seek=512 count=256 conv=notrunc \
		status=none
	same_bytes "$mode: the image holds it" "$T/expect" "$IMG"

	# An unaligned read is refused (O_DIRECT underneath), not served.
	check_fsop "$mode: an unaligned read gets EINVAL" EINVAL -- \
		pread "$NULL_FILE" 100 7

	# The bench's way: a loop device in direct I/O mode over the file.
	if loop_attach "$NULL_FILE"; then
		dread "$LOOP_DEV" 0 2048 >"$T/got"
		same_bytes "$mode: through the loop device, the image" \
			"$T/expect" "$T/got"
		head -c $((64 << 10)) /dev/urandom >"$T/new"
		check dwrite "$T/new" "$LOOP_DEV" 1000 16
		dd if="$T/new" of="$T/expect" bs=4k seek=1000 count=16 \
			conv=notrunc status=none
		same_bytes "$mode: the image holds it" "$T/expect" "$IMG"
		check losetup -d "$LOOP_DEV"
	fi
	check pid_alive "$NULL_PID"
done

summary
