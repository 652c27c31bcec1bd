#!/bin/bash
# test-vhd-bad.sh - damaged VHD images are refused at open, clearly.
#
# Each image is a copy of a good one with one thing wrong, made with python
# struct at the VHD field offsets (footer: cookie 0, data offset 16, disk
# type 60, checksum 64; dynamic header at the footer's data offset: cookie
# 0, table offset 16, max table entries 28, block size 32, checksum 36;
# checksums recomputed, so that only the field under test is wrong):
# a file too small for a footer, a dynamic image truncated inside its last
# block, a fixed image truncated, bad footer cookie, bad footer checksum
# (dynamic: both copies; fixed), unknown disk type, bad header cookie, bad
# header checksum, block size 0 and not a power of two, too few BAT
# entries for the size, a BAT entry past the end of the file, two BAT
# entries on the same block, a differencing image whose parent is missing,
# and one whose parent has another UUID.  For each: "open" fails with an
# errno, the VBD does not appear, the .ctl status line names the file and
# the problem, so does the daemon's log; the daemon is alive and a later
# good "open" works; tapfs-img check (when built) reports the image.
#
# A dynamic image whose trailing footer alone is damaged opens from the
# backup footer at offset 0 (with a warning naming the file) and reads
# its data: that is recovery, not refusal.  A store image damaged while
# unmounted comes back as a "failed" VBD whose line says why, beside a
# VBD that runs.
. "$(dirname "$0")/lib.sh"
requires qemu-img qemu-io python3 cmp md5sum

M=$T/mnt
S=$T/store
G=$M/g
I=$T/img
MiB=1048576
mkdir -p "$I"
if [ ! -x "$TAPFS_IMG" ]; then
	msg "tapfs-img not built ($TAPFS_IMG): 'tapfs-img check' skipped"
fi

# vhdedit FILE EDIT [ARGS]: change one thing in a VHD image, keeping
# every checksum right unless the checksum is what is being broken
# (tests/pylib/vhdfile.py lists the edits).
vhdedit() { pylib vhdfile edit "$@"; }

tapfs_start "$M" "$S" "allow_path=$T" || summary
check mkdir "$G"

# ---- good images to damage ----------------------------------------------

# A dynamic image with four allocated blocks, and a fixed one; their raw
# contents as qemu reads them.
check qemu-img create -q -f vpc -o subformat=dynamic "$I/dyn.vhd" 64M
check qemu-io -f vpc -c "write -P 0x11 0 64k" -c "write -P 0x22 10M 64k" \
	-c "write -P 0x33 $((2 * MiB - 4096)) 8k" -c "write -P 0x44 60M 64k" \
	"$I/dyn.vhd"
check qemu-img create -q -f vpc -o subformat=fixed "$I/fix.vhd" 16M
check qemu-io -f vpc -c "write -P 0x55 1M 64k" "$I/fix.vhd"
rm -f "$T/dyn.raw"
check qemu-img convert -f vpc -O raw "$I/dyn.vhd" "$T/dyn.raw"

# A parent and its differencing child, made by tapfs; then the parent is
# moved away (missing parent), or replaced by another VHD (another UUID).
check mkdir "$M/mk"
for p in gone swap other; do
	ctl_ok "$M/mk" "create $p vhd 32M"
	check dd if=/dev/urandom of="$M/mk/$p" bs=64k count=8 conv=notrunc \
		status=none
done
ctl_ok "$M/mk" "snapshot gone"
ctl_ok "$M/mk" "snapshot swap"
for p in gone swap other; do
	ctl_close "$M/mk" "$p"
done
check mv "$S/mk/gone.vhd" "$I/gone-moved-away.vhd"
check cp "$S/mk/other.vhd" "$S/mk/swap.vhd"

# A later good command: a good image opens, reads right, closes.
good_cmd() {
	local r
	r=$(ctl "$G" "open good vhd:$I/dyn.vhd ro")
	if [ "$r" = OK ] && cmp -s "$G/good" "$T/dyn.raw" &&
		[ "$(ctl "$G" "close good")" = OK ]; then
		ok "$1: the daemon runs on: a good image opens and reads"
	else
		fail "$1: the daemon runs on: a good image opens and reads" \
			"open: $r; $(ctl_status "$G")"
		ctl "$G" "close good" >/dev/null
	fi
}

# unpath [TEXT]: TEXT (or stdin) with every path under $T made "PATH".
unpath() {
	if [ $# -gt 0 ]; then
		printf '%s\n' "$1" | unpath
	else
		sed -E "s|$T/[^ :,;()'\"]*|PATH|g"
	fi
}

# [ALSO=NAME] refused NAME FILE PROBLEM_ERE ERRNO...: "open NAME vhd:FILE"
# fails with one of ERRNO; no VBD NAME appears; the status line and the
# log name the file (and ALSO) and match PROBLEM_ERE, the log on one line
# (the driver does not log a refusal, the status line is logged once); the
# daemon is alive and a good open works; tapfs-img check reports the image.
refused() {
	local name=$1 file=$2 ere=$3 r st lines log base n
	shift 3
	base=${file##*/}
	fuzz_seed vhd "$file"
	lines=$(wc -l <"$TAPFS_LOG")
	r=$(ctl "$G" "open $name vhd:$file")
	check_in "$name: open refused" "$r" "$@"
	st=$(ctl_status "$G")
	log=$(tail -n +$((lines + 1)) "$TAPFS_LOG" | cat -v)
	check_eq "$name: no VBD made" "" "$(ctl_line "$G" "$name")$(
		ls "$G")"
	check_match "$name: the status line names the file" \
		"^status: error: E[A-Z]+: .*$base" "$st"
	# The problem is matched with the paths taken out: the file names
	# here spell some of the problems.
	check_match "$name: the status line names the problem /$ere/" \
		"$ere" "$(unpath "$st")"
	[ -z "${ALSO:-}" ] || check_match "$name: the status line names $ALSO" \
		"$(printf '%s' "$ALSO" | sed 's/[.]/\\./g')" "$st"
	n=$(printf '%s\n' "$log" | grep -F "$base" | grep -F "${ALSO:-}" |
		unpath | grep -Ec -- "$ere")
	if [ "$n" = 1 ]; then
		ok "$name: the log names the file${ALSO:+, $ALSO} and the" \
			"problem, once"
	else
		fail "$name: the log names the file${ALSO:+, $ALSO} and the" \
			"problem, once: $n lines with '$base'${ALSO:+ and \
'$ALSO'} and /$ere/ in: $log"
	fi
	if pid_alive "$TAPFS_PID"; then
		ok "$name: the daemon is alive"
	else
		fail "$name: the daemon is alive" "$(tail -n 5 "$TAPFS_LOG")"
		summary
	fi
	good_cmd "$name"
	[ -x "$TAPFS_IMG" ] && img_finds "$name" "$file"
}

# img_finds NAME FILE: tapfs-img check fails on FILE, or (where no VHD
# footer is left) at least does not call it a clean VHD.
img_finds() {
	local out rc
	out=$("$TAPFS_IMG" check "$2" 2>&1)
	rc=$?
	if [ $rc -ne 0 ] || printf '%s\n' "$out" |
		grep -Eq "raw image|no VHD footer|not a VHD"; then
		ok "$1: tapfs-img check reports it (exit $rc)"
	else
		fail "$1: tapfs-img check reports it" "exit 0: $out"
	fi
}

# damaged NAME SRC EDIT...: copy SRC to $I/NAME.vhd, apply the edit.
damaged() {
	local name=$1 src=$2
	shift 2
	cp "$src" "$I/$name.vhd" && vhdedit "$I/$name.vhd" "$@" >/dev/null
}

# ---- truncated -----------------------------------------------------------

head -c 300 "$I/dyn.vhd" >"$I/tiny.vhd"
refused tiny "$I/tiny.vhd" "too small|truncat|300" EINVAL

# The last block cut in half: the trailing footer is gone, the backup at
# offset 0 is found, and the block's BAT entry points past the end.
cp "$I/dyn.vhd" "$I/cut.vhd"
truncate -s $(($(file_size "$I/dyn.vhd") - MiB)) "$I/cut.vhd"
refused cut "$I/cut.vhd" "past the end|truncat|BAT" EINVAL

cp "$I/fix.vhd" "$I/fixcut.vhd"
truncate -s $((8 * MiB)) "$I/fixcut.vhd"
refused fixcut "$I/fixcut.vhd" "not a VHD|footer|cookie|conectix|truncat" \
	EINVAL

# ---- footer ---------------------------------------------------------------

damaged fcookie "$I/dyn.vhd" footer-cookie
refused fcookie "$I/fcookie.vhd" "cookie|conectix|not a VHD" EINVAL

damaged fcsum "$I/dyn.vhd" footer-checksum
refused fcsum "$I/fcsum.vhd" "checksum" EINVAL

damaged fixcsum "$I/fix.vhd" footer-checksum
refused fixcsum "$I/fixcsum.vhd" "checksum" EINVAL

damaged ftype "$I/dyn.vhd" disk-type 7
refused ftype "$I/ftype.vhd" "type" EINVAL ENOTSUP EOPNOTSUPP

# ---- dynamic header ---------------------------------------------------------

damaged hcookie "$I/dyn.vhd" header-cookie
refused hcookie "$I/hcookie.vhd" "cookie|cxsparse|header" EINVAL

damaged hcsum "$I/dyn.vhd" header-checksum
refused hcsum "$I/hcsum.vhd" "checksum" EINVAL

damaged bs0 "$I/dyn.vhd" block-size 0
refused bs0 "$I/bs0.vhd" "block size" EINVAL

damaged bs3 "$I/dyn.vhd" block-size 0x180000
refused bs3 "$I/bs3.vhd" "block size.*(power|1572864|0x180000)|(power).*block" \
	EINVAL

damaged fewbat "$I/dyn.vhd" max-entries 16
refused fewbat "$I/fewbat.vhd" "entries|BAT|16" EINVAL EFBIG

# ---- BAT -----------------------------------------------------------------

damaged batpast "$I/dyn.vhd" bat-past-eof
refused batpast "$I/batpast.vhd" "BAT|past the end" EINVAL

damaged batdup "$I/dyn.vhd" bat-same-block
refused batdup "$I/batdup.vhd" "BAT|overlap|same|twice" EINVAL

# ---- parents ---------------------------------------------------------------

# The message must name the parent that is missing or wrong, too.
ALSO=gone.vhd refused orphan "$S/mk/gone.1.vhd" \
	"parent.*(not found|missing|[Nn]o such)" ENOENT EINVAL
ALSO=swap.vhd refused swapped "$S/mk/swap.1.vhd" "UUID|not the parent" \
	EINVAL

# ---- recovery: only the trailing footer is damaged ---------------------------

damaged ftail "$I/dyn.vhd" footer-checksum-tail
lines=$(wc -l <"$TAPFS_LOG")
ctl_ok "$G" "open ftail vhd:$I/ftail.vhd ro"
check_match "ftail: the log warns, naming the file" "ftail\\.vhd.*backup" \
	"$(tail -n +$((lines + 1)) "$TAPFS_LOG")"
check cmp "$G/ftail" "$T/dyn.raw"
ctl_close "$G" ftail

check_eq "group g is empty" "" "$(ls "$G")"
good_cmd final

# ---- damaged while unmounted: the VBD comes back "failed", with why --------

check mkdir "$M/vm"
ctl_ok "$M/vm" "create fine vhd 16M"
check dd if=/dev/urandom of="$M/vm/fine" bs=64k count=4 status=none
fine_md5=$(md5sum <"$M/vm/fine")

# back_failed NAME ERE [ALSO]: after a remount NAME is listed failed,
# naming its image, with a reason matching ERE (and naming the file ALSO);
# "fine" runs beside it with its data; NAME's file cannot be opened; close
# forgets it; a good open works.
back_failed() {
	local name=$1 ere=$2 also=${3:-} line
	line=$(ctl_line "$M/vm" "$name")
	check_match "$name: listed as failed, naming the image" \
		"^$name failed vhd 0 rw vhd:$S/vm/${name}[.0-9]*vhd \\(" "$line"
	check_match "$name: the reason names the problem /$ere/" "$ere" \
		"$(unpath "${line#*(}")"
	[ -z "$also" ] || check_match "$name: the reason names $also" \
		"$(printf '%s' "$also" | sed 's/[.]/\\./g')" "${line#*(}"
	check_eq "fine: running beside $name" "running" \
		"$(ctl_line "$M/vm" fine | cut -d' ' -f2)"
	check_eq "fine: its data beside $name" "$fine_md5" \
		"$(md5sum <"$M/vm/fine")"
	check_fsop "$name: its file cannot be opened" ENOENT -- \
		open "$M/vm/$name" r
	ctl_close "$M/vm" "$name"
	good_cmd "after the failed VBD $name"
}

# A snapshot child whose parent went away.
ctl_ok "$M/vm" "create kid vhd 16M"
ctl_ok "$M/vm" "snapshot kid"
tapfs_stop
check mv "$S/vm/kid.vhd" "$I/kid-parent-moved.vhd"
tapfs_start "$M" "$S" "allow_path=$T" || summary
back_failed kid "parent.*(not found|[Nn]o such|missing)" kid.vhd

# An image whose header went bad (block size 3 MiB: not a power of two).
ctl_ok "$M/vm" "create victim vhd 16M"
tapfs_stop
check vhdedit "$S/vm/victim.vhd" block-size 0x300000
tapfs_start "$M" "$S" "allow_path=$T" || summary
back_failed victim "block size"
tapfs_stop
summary
