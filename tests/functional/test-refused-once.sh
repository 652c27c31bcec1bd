#!/bin/bash
# test-refused-once.sh - a refused image is reported once.
#
# A driver that refuses an image (at open, naming its parent, or checking
# it) puts the reason in drv->error and does not log it; the engine hands
# it to the caller, which reports it once.  One refusal of each kind and
# driver: ram (a bad size), fault (a bad setting), vhd (a bad header, a
# parent gone, a parent that is another image), qcow2 (a bad header, a
# backing file gone).  For each, ".ctl open" is refused, the status line
# says why, and the daemon's log has one line saying it; tapfs-img info
# and convert of the file fail and say it once on stderr.  A store image
# damaged while unmounted: one line in the log at the next mount.
. "$(dirname "$0")/lib.sh"
requires qemu-img python3

M=$T/mnt
S=$T/store
G=$M/g
I=$T/img
mkdir -p "$I"

# nlines FILE TEXT: how many lines of FILE hold TEXT.
nlines() { grep -cF -- "$2" "$1"; }

# hcookie FILE: break the dynamic header cookie of the VHD at FILE.
hcookie() {
	printf 'XXXXXXXX' | dd of="$1" bs=1 seek=512 conv=notrunc status=none
}

# ctl_once NAME SPEC TEXT: ".ctl open NAME SPEC" is refused, the status
# line says TEXT, and so does one line of the daemon's log.
ctl_once() {
	local name=$1 spec=$2 text=$3 lines r st
	lines=$(wc -l <"$TAPFS_LOG")
	r=$(ctl "$G" "open $name $spec")
	if [ "$r" != OK ]; then
		ok "$name: open refused ($r)"
	else
		fail "$name: open refused" "it opened"
		ctl_close "$G" "$name"
	fi
	st=$(ctl_status "$G")
	case "$st" in
	"status: error: E"*"$text"*) ok "$name: the status line says why" ;;
	*) fail "$name: the status line says why" "$st" ;;
	esac
	tail -n +$((lines + 1)) "$TAPFS_LOG" >"$T/log.new"
	check_eq "$name: the log says why once" 1 "$(nlines "$T/log.new" \
		"$text")" || cat "$T/log.new" >&2
}

# img_once NAME TEXT VERB ARGS...: tapfs-img VERB ARGS fails (exit 1) and
# says TEXT on one line of its stderr.
img_once() {
	local name=$1 text=$2 rc
	shift 2
	"$TAPFS_IMG" "$@" >/dev/null 2>"$T/img.err"
	rc=$?
	check_eq "$name: tapfs-img $1 fails" 1 $rc
	check_eq "$name: tapfs-img $1 says why once on stderr" 1 \
		"$(nlines "$T/img.err" "$text")" || cat "$T/img.err" >&2
}

# ---- the images ----------------------------------------------------------

check truncate -s 16M "$I/raw.img"
check "$TAPFS_IMG" create -q "$I/hcookie.vhd" 16M
hcookie "$I/hcookie.vhd"
# A child whose parent is moved away, and one whose parent is replaced.
check "$TAPFS_IMG" create -q "$I/gp.vhd" 16M
check "$TAPFS_IMG" snapshot "$I/gp.vhd" "$I/orphan.vhd"
check mv "$I/gp.vhd" "$I/gp-moved-away.vhd"
check "$TAPFS_IMG" create -q "$I/sp.vhd" 16M
check "$TAPFS_IMG" snapshot "$I/sp.vhd" "$I/swapped.vhd"
check rm "$I/sp.vhd"
check "$TAPFS_IMG" create -q "$I/sp.vhd" 16M
check qemu-img create -q -f qcow2 "$I/cb22.qcow2" 16M
check pylib qcow2file edit "$I/cb22.qcow2" cluster_bits 22
check qemu-img create -q -f qcow2 -u -b "$I/nope.raw" -F raw \
	"$I/nobacking.qcow2" 16M

HCOOKIE='bad dynamic header cookie "XXXXXXXX"'
ORPHAN='orphan.vhd: parent not found'
SWAPPED='parent UUID mismatch: '
CB22='cluster_bits 22 is not in 9..21'
NOBACK='nope.raw'

# ---- the daemon ----------------------------------------------------------

tapfs_start "$M" "$S" "allow_path=$T" || summary
check mkdir "$G"

ctl_once ram ram:12Q "'12Q' is not a size in whole sectors"
ctl_once fault "fault:bogus:aio:$I/raw.img" "bad fault setting 'bogus'"
ctl_once hcookie "vhd:$I/hcookie.vhd" "$HCOOKIE"
ctl_once orphan "vhd:$I/orphan.vhd" "$ORPHAN"
ctl_once swapped "vhd:$I/swapped.vhd" "$SWAPPED"
ctl_once cb22 "qcow2:$I/cb22.qcow2" "$CB22"
ctl_once nobacking "qcow2:$I/nobacking.qcow2" "$NOBACK"

# A store image damaged while unmounted: at the next mount its VBD is
# failed, and the log says why once.
check mkdir "$M/st"
ctl_ok "$M/st" "create d vhd 16M"
tapfs_stop
hcookie "$S/st/d.vhd"
tapfs_start "$M" "$S" "allow_path=$T" || summary
check_match "a damaged store image: its VBD is failed" "$HCOOKIE" \
	"$(ctl_line "$M/st" d)"
check_eq "a damaged store image: the log says why once" 1 \
	"$(nlines "$TAPFS_LOG" "$HCOOKIE")" || cat "$TAPFS_LOG" >&2
ctl_ok "$M/st" "close d"
tapfs_stop

# ---- tapfs-img -----------------------------------------------------------

for verb in info convert; do
	if [ $verb = convert ]; then
		args=(convert -O raw)
		out=$T/out.raw
	else
		args=(info)
		out=
	fi
	img_once hcookie "$HCOOKIE" "${args[@]}" "$I/hcookie.vhd" ${out:+"$out"}
	img_once orphan "$ORPHAN" "${args[@]}" "$I/orphan.vhd" ${out:+"$out"}
	img_once swapped "$SWAPPED" "${args[@]}" "$I/swapped.vhd" ${out:+"$out"}
	img_once cb22 "$CB22" "${args[@]}" "$I/cb22.qcow2" ${out:+"$out"}
	img_once nobacking "$NOBACK" "${args[@]}" "$I/nobacking.qcow2" \
		${out:+"$out"}
	rm -f "$T/out.raw"
done

summary
