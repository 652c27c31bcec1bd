#!/bin/bash
# test-handover.sh - handing a live VBD from one host to another over
# shared storage (docs/locking.md), for raw, qcow2 and vhd image files.
#
# Two daemons stand for two hosts, A and B, each with its own store and
# mount, B allowed to open the images in A's store (the shared
# directory).  For each format, handover-lib.sh's scenario: a writer
# through a loop device on A's VBD, B standby beside it (its write and
# resume time out naming A), A releases under the writer (EROFS after,
# reads go on), the writer goes on through B, every acknowledged byte is
# in the image, read by qemu-img (the outside oracle, which checks the
# qcow2 metadata too; tapfs-img checks the vhd's).  Then bad input and
# refusals (no release of a standby or ro VBD, no snapshot in standby),
# and the manifest: a standby or released VBD comes back in standby after
# a restart, and takes the image over at "resume".
. "$(dirname "$0")/lib.sh"
. "$TEST_DIR/handover-lib.sh"
requires python3 qemu-img losetup dd cmp
requires_root

handover_start

# out_file NAME: the image file of VBD NAME in A's store, checked, as raw.
out_file() {
	local img
	img=$(ls "$T/SA/g/$1".*)
	case $img in
	*.qcow2)
		check_out "$1: qemu-img check" 0 "No errors" \
			qemu-img check -f qcow2 "$img"
		check qemu-img convert -f qcow2 -O raw "$img" "$T/out.raw" ;;
	*.vhd)	# qemu-img checks no vpc
		check "$TAPFS_IMG" check "$img"
		check qemu-img convert -f vpc -O raw "$img" "$T/out.raw" ;;
	*)	check qemu-img convert -f raw -O raw "$img" "$T/out.raw" ;;
	esac
}

for fmt in raw qcow2 vhd; do
	handover "d$fmt" "create d$fmt $fmt 64M" "$fmt:$T/SA/g/d$fmt.$fmt" \
		out_file
done

# Bad input: what cannot be handed over says so.
ctl_ok "$GA" "create r raw 1M"
ctl_err "$GA" "open r2 raw:$T/SA/g/r.raw bogus" EINVAL
ctl_err "$GA" "release nosuch" ENOENT
ctl_ok "$GB" "open r raw:$T/SA/g/r.raw standby"
ctl_err "$GB" "release r" EINVAL
check_match "release of a standby VBD says why" "is in standby" \
	"$(ctl_status "$GB")"
r=$(ctl "$GB" "snapshot r")
check_eq "no snapshot of a standby VBD" EBUSY "$r"
check_match "the snapshot's refusal says why" "standby or released" \
	"$(ctl_status "$GB")"
check_eq "r still in standby" standby "$(ho_hold "$GB" r)"
check_eq "no child left in B's store" "" "$(ls "$T/SB/g" 2>/dev/null)"
check_eq "a flush of a standby VBD returns" OK "$(ctl "$GB" "flush r")"

# The manifest: standby, and released, come back in standby after a
# restart, never as a writer taking the image back.
ctl_ok "$GA" "release r"
check_match "A's manifest lists the released VBD as standby" \
	"^vbd g r raw standby " "$(grep '^vbd g r ' "$T/SA/manifest")"
tapfs_stop "$PID_B" "$T/B"
tapfs_start "$T/B" "$T/SB" \
	"deadline_ms=$HO_DEADLINE_MS,allow_path=$T/SA" || summary
PID_B=$TAPFS_PID
check_eq "B's r is back in standby" standby "$(ho_hold "$GB" r)"
ctl_ok "$GB" "resume r"
check_eq "and takes the released image over" active "$(ho_hold "$GB" r)"
check_match "B's manifest lists it rw now" "^vbd g r raw rw " \
	"$(grep '^vbd g r ' "$T/SB/manifest")"
ctl_close "$GB" r
ctl_close "$GA" r
ctl_ok "$GA" "open ro raw:$T/SA/g/r.raw ro"
ctl_err "$GA" "release ro" EROFS
ctl_close "$GA" ro

alive "at the end (B)"
tapfs_stop "$PID_B" "$T/B"
tapfs_stop "$PID_A" "$T/A"
summary
