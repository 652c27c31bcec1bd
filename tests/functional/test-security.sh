#!/bin/bash
# test-security.sh - what the daemon refuses to do, and to whom.
#
# (a) Image confinement: "open" of an image outside the store is refused
#     with EACCES and a reason naming the file, and allowed once its
#     directory is given with -o allow_path; a symbolic link in the store
#     pointing out of it, a "../" escape, a prefix look-alike of the store
#     (STORE2) and a link into the mount itself are refused too, by where
#     the path really leads.
# (b) Crafted images: a VHD whose parent locator, or a qcow2 whose backing
#     file (absolute, relative, with or without a backing format), names a
#     file outside the allowed directories is refused at open, at every
#     depth of the chain, and the daemon goes on serving its other VBDs;
#     the same chain opens once its directories are allowed.  A parent
#     locator pointing into the mount itself is refused without the
#     daemon looking there (it would wait for itself).
# (c) Remount: a chain the new mount no longer allows comes back as a
#     "failed" VBD with the reason, not a crash; allowed again, it runs.
# (d) A VBD opened "ro": opening it for writing, truncate and fallocate
#     fail with EROFS, and its image (raw, vhd, qcow2) is byte-for-byte
#     unchanged, across a remount too.
# (e) Permissions: .ctl is 0600 and owned by the mount owner; without
#     allow_other another user cannot even stat the mount; with it, that
#     user may read .stats but not read or write .ctl (EACCES), open a VBD
#     or make a group.
# (f) Bad command input: NUL bytes in names and paths, over-long paths.
#     (Names "..", "a/b", control characters and 256-byte names are
#     covered by test-ctl.sh.)
# (g) No fd leak: 1000 create/close cycles (raw and vhd in turn, some
#     qcow2) and 1000 refused opens leave the daemon with the fds it had
#     (on a second mount whose store is a tmpfs, for speed).
. "$(dirname "$0")/lib.sh"
requires_root
requires python3 qemu-img setpriv sha256sum truncate fallocate dd cmp

requires "$TAPFS_IMG"

M=$T/mnt
S=$T/store
A=$T/allowed		# given with allow_path
O=$T/outside		# never allowed
G=$M/g
MiB=1048576
NOBODY=65534

# Another user must be able to reach the mount points below $T.
chmod 0711 "$T"
mkdir -p "$A" "$O" "$T/store2"

# as_nobody OP PATH [TEXT]: one system call as uid/gid 65534, no groups;
# prints OK, or the errno name.
#   stat PATH | list DIR | read FILE | write FILE TEXT (a line) | openw
#   FILE (read-write) | mkdir DIR
# fsop.py is fed on stdin: nobody need not be able to read the tree.
as_nobody() {
	local op=$1 path=$2
	case $op in
	openw) set -- open "$path" rw ;;
	write) set -- write "$path" "$3"$'\n' ;;
	esac
	timeout 20 setpriv --reuid=$NOBODY --regid=$NOBODY --clear-groups \
		"$PYTHON" -B -E -S - "$@" <"$PYLIB/fsop.py"
}

# status_says NAME ERE: the group's status line matches ERE.
status_says() { check_match "$1" "$2" "$(ctl_status "$G")"; }

# sha FILE: its sha256.
sha() { sha256sum "$1" | cut -d' ' -f1; }

# ---- images, made before the mount -----------------------------------------

truncate -s 4M "$O/base.raw" "$A/a.raw" "$T/store2/y.raw"
"$TAPFS_IMG" create -q -f vhd "$O/base.vhd" 4M
"$TAPFS_IMG" create -q -f vhd "$A/abase.vhd" 4M
# allowed -> outside
"$TAPFS_IMG" snapshot "$O/base.vhd" "$A/mid.vhd" >/dev/null

# A VHD whose parent locators point into the mount point (the parent was
# made there before the mount): the daemon must not look there.
mkdir -p "$M" "$S/g"
"$TAPFS_IMG" create -q -f vhd "$M/under.vhd" 4M
"$TAPFS_IMG" snapshot "$M/under.vhd" "$S/g/inmnt.vhd" >/dev/null
rm -f "$M/under.vhd"

tapfs_start "$M" "$S" "allow_path=$A" || summary
check mkdir "$G"
ctl_ok "$G" "create d raw 8M"
head -c $MiB /dev/urandom >"$T/pat"
check dd if="$T/pat" of="$G/d" bs=64k conv=notrunc,fsync status=none

# ---- (a) open: the store and allow_path only --------------------------------

ctl_err "$G" "open o raw:$O/base.raw" EACCES
status_says "refusal names the image" "$O/base\\.raw"
status_says "refusal says why and what to do" \
	"outside the allowed directories \\(store $S, allow_path $A; see -o allow_path\\)"
ctl_ok "$G" "open a raw:$A/a.raw"
ctl_close "$G" a

ln -s /etc/shadow "$S/g/shadow"
ctl_err "$G" "open sh raw:$S/g/shadow ro" EACCES
status_says "a link out of the store is judged by its target" \
	"$S/g/shadow \\(really /etc/shadow\\) is outside"
ln -s "$O/base.raw" "$S/g/out"
ctl_err "$G" "open lo raw:$S/g/out" EACCES
ln -s ../../outside "$S/g/outdir"
ctl_err "$G" "open ld raw:$S/g/outdir/base.raw" EACCES
ctl_err "$G" "open dd raw:$S/g/../../outside/base.raw" EACCES
status_says "'..' is followed" "\\(really $O/base\\.raw\\)"
ctl_err "$G" "open da raw:$A/../outside/base.raw" EACCES
ctl_err "$G" "open s2 raw:$T/store2/y.raw" EACCES	# not below "store"
ctl_err "$G" "open f fault:none:raw:$O/base.raw" EACCES
truncate -s 4M "$S/g/target.raw"
ln -s target.raw "$S/g/alias"
ctl_ok "$G" "open al raw:$S/g/alias ro"		# a link within the store
ctl_close "$G" al
# A link to d's image is d's image: refused while d writes it.
ln -s d.raw "$S/g/alias-d"
ctl_err "$G" "open ad raw:$S/g/alias-d ro" EBUSY
status_says "the image is known by its inode" \
	"g/d holds $S/g/d\\.raw read-write"
# A link into the mount is refused without looking into it (the daemon
# would wait for itself).
ln -s "$M/g" "$S/g/intomnt"
ctl_err "$G" "open im raw:$S/g/intomnt/d" EINVAL
status_says "inside the mount" "inside this tapfs mount"
ctl_err "$G" "open ab raw:$A/absent.raw" ENOENT

# ---- (b) crafted chains ------------------------------------------------------

"$TAPFS_IMG" snapshot -F raw "$O/base.raw" "$S/g/v.vhd" >/dev/null
ctl_err "$G" "open v vhd:$S/g/v.vhd" EACCES
status_says "VHD parent locator outside: named" \
	"$S/g/v\\.vhd: parent .*$O/base\\.raw\\)? is outside the allowed"
"$TAPFS_IMG" snapshot "$O/base.vhd" "$S/g/v2.vhd" >/dev/null
ctl_err "$G" "open v2 vhd:$S/g/v2.vhd ro" EACCES
# store -> allowed -> outside
"$TAPFS_IMG" snapshot "$A/mid.vhd" "$S/g/v3.vhd" >/dev/null
ctl_err "$G" "open v3 vhd:$S/g/v3.vhd" EACCES
status_says "refused at depth 2, naming the image that names it" \
	"$A/mid\\.vhd: parent .*$O/base\\.vhd\\)? is outside"
r=$(FSOP_TIMEOUT=20 ctl "$G" "open inm vhd:$S/g/inmnt.vhd")
check_eq "VHD parent locator into the mount: refused, no deadlock" EINVAL "$r"
status_says "... saying so" "inmnt\\.vhd: parent .* lies inside this tapfs mount"
"$TAPFS_IMG" snapshot "$A/abase.vhd" "$S/g/v4.vhd" >/dev/null
ctl_ok "$G" "open v4 vhd:$S/g/v4.vhd"
check_match "an allowed chain opens" \
	"^v4 running vhd .* vhd:$S/g/v4\\.vhd -> vhd:$A/abase\\.vhd\$" \
	"$(ctl_line "$G" v4)"

qemu-img create -q -f qcow2 -b "$O/base.raw" -F raw "$S/g/q.qcow2" 4M
ctl_err "$G" "open q qcow2:$S/g/q.qcow2" EACCES
status_says "qcow2 backing file outside: named" "parent $O/base\\.raw is outside"
qemu-img create -q -f qcow2 -b ../../outside/base.raw -F raw \
	"$S/g/qrel.qcow2" 4M
ctl_err "$G" "open qr qcow2:$S/g/qrel.qcow2" EACCES
# Without a backing format the driver would probe (open) the file: it
# must ask first.  Drop the format extension qemu-img wrote (its type
# 0xe2792aca becomes 0, the end of the extensions).
cp "$S/g/q.qcow2" "$S/g/qprobe.qcow2"
pylib qcow2file edit "$S/g/qprobe.qcow2" drop-ext e2792aca ||
	fail "qprobe.qcow2: drop the backing format extension"
ctl_err "$G" "open qp qcow2:$S/g/qprobe.qcow2" EACCES
status_says "qcow2 probe refused before opening the file" \
	"backing file $O/base\\.raw is outside"
qemu-img create -q -f qcow2 -b "$A/a.raw" -F raw "$S/g/qa.qcow2" 4M
ctl_ok "$G" "open qa qcow2:$S/g/qa.qcow2"

# The daemon still serves the VBD it had.
check_eq "VBDs listed after the refusals" "d qa v4" \
	"$(timeout 10 tail -n +2 "$G/.ctl" | awk '{ print $1 }' | sort |
	tr '\n' ' ' | sed 's/ $//')"
check cmp "$T/pat" <(dd if="$G/d" bs=64k count=16 status=none)
check dd if="$T/pat" of="$G/d" bs=64k seek=32 conv=notrunc,fsync status=none
check pid_alive "$TAPFS_PID"

# ---- (d) read-only VBDs -----------------------------------------------------

head -c $((4 * MiB)) /dev/urandom >"$S/g/ro.raw"
"$TAPFS_IMG" create -q -f vhd "$S/g/rov.vhd" 4M
ctl_ok "$G" "open rov vhd:$S/g/rov.vhd"
check dd if="$T/pat" of="$G/rov" bs=64k conv=notrunc,fsync status=none
ctl_close "$G" rov
qemu-img create -q -f qcow2 "$S/g/roq.qcow2" 4M
sum_raw=$(sha "$S/g/ro.raw")
sum_vhd=$(sha "$S/g/rov.vhd")
sum_q=$(sha "$S/g/roq.qcow2")
for v in ro:raw:ro.raw rov:vhd:rov.vhd roq:qcow2:roq.qcow2; do
	IFS=: read -r n f img <<<"$v"
	ctl_ok "$G" "open $n $f:$S/g/$img ro"
	check_fsop "$n: open for writing -> EROFS" EROFS -- open "$G/$n" w
	check_fsop "$n: open read-write -> EROFS" EROFS -- open "$G/$n" rw
	check_fsop "$n: truncate -> EROFS" EROFS -- truncate "$G/$n" 0
	check_fsop "$n: truncate to its size -> EROFS" EROFS -- \
		truncate "$G/$n" $((4 * MiB))
	check_not fallocate -p -o 0 -l 4096 "$G/$n"
	check_not dd if="$T/pat" of="$G/$n" bs=4k count=1 conv=notrunc \
		status=none
	check dd if="$G/$n" of=/dev/null bs=1M status=none
done
check cmp "$S/g/ro.raw" "$G/ro"
check cmp -n $MiB "$T/pat" "$G/rov"
check_eq "ro raw image unchanged" "$sum_raw" "$(sha "$S/g/ro.raw")"
check_eq "ro vhd image unchanged" "$sum_vhd" "$(sha "$S/g/rov.vhd")"
check_eq "ro qcow2 image unchanged" "$sum_q" "$(sha "$S/g/roq.qcow2")"

# ---- (e) permissions, no allow_other ----------------------------------------

check_eq ".ctl mode 0600" 600 "$(file_mode "$G/.ctl")"
check_eq ".ctl owned by the mount owner" "$(id -u):$(id -g)" \
	"$(stat -c %u:%g "$G/.ctl")"
check_eq "another user cannot stat the mount" EACCES \
	"$(as_nobody stat "$M")"
check_eq "another user cannot stat a group's .ctl" EACCES \
	"$(as_nobody stat "$G/.ctl")"
check_eq "another user cannot write .ctl" EACCES \
	"$(as_nobody write "$G/.ctl" "create evil raw 1M")"

# ---- (f) bad command input ---------------------------------------------------

for cmd in 'create a\0b raw 1M\n' 'open a\0b raw:%s/d.raw\n' \
	'open n raw:%s/d.raw\0/etc/passwd\n'; do
	# shellcheck disable=SC2059
	r=$( { printf "$cmd" "$S/g" > "$G/.ctl"; } 2>&1 )
	check_match "NUL in '$(printf '%s' "$cmd" | cut -c1-20)' refused" \
		"Invalid argument" "$r"
	status_says "... as a control character" "EINVAL: .*0x00"
done
long=$(printf 'x%.0s' $(seq 4200))
ctl_err "$G" "open n raw:$S/$long" EINVAL
check_eq "no VBD made by bad input" "" "$(ctl_line "$G" n)$(ctl_line "$G" a)"

# ---- (c) remount without the allow_path --------------------------------------

ctl_ok "$G" "open a raw:$A/a.raw ro"	# qa's parent: read-only only
tapfs_stop
check_eq "ro raw image unchanged by unmount" "$sum_raw" "$(sha "$S/g/ro.raw")"
check_eq "ro vhd image unchanged by unmount" "$sum_vhd" "$(sha "$S/g/rov.vhd")"
check_eq "ro qcow2 image unchanged by unmount" "$sum_q" \
	"$(sha "$S/g/roq.qcow2")"

tapfs_start "$M" "$S" "allow_other" || summary
for v in a v4 qa; do
	check_match "$v: back as failed, saying why" \
		"^$v failed .*outside the allowed directories" \
		"$(ctl_line "$G" $v)"
	check_fsop "$v: its file cannot be opened" ENOENT -- open "$G/$v" r
done
check_match "the store's VBDs run" "^d running " "$(ctl_line "$G" d)"
check cmp "$T/pat" <(dd if="$G/d" bs=64k skip=32 count=16 status=none)
check_eq "ro raw image unchanged by remount" "$sum_raw" "$(sha "$S/g/ro.raw")"
check_eq "ro vhd image unchanged by remount" "$sum_vhd" "$(sha "$S/g/rov.vhd")"
check_eq "ro qcow2 image unchanged by remount" "$sum_q" \
	"$(sha "$S/g/roq.qcow2")"
check_fsop "ro VBD still refuses writes after remount" EROFS -- \
	open "$G/ro" w

# ---- (e) permissions, allow_other -------------------------------------------

check_eq "allow_other: another user can stat the mount" OK \
	"$(as_nobody stat "$M")"
check_eq "allow_other: and list a group" OK "$(as_nobody list "$G")"
check_eq "allow_other: and read .stats" OK "$(as_nobody read "$G/.stats")"
check_eq "allow_other: but not write .ctl" EACCES \
	"$(as_nobody write "$G/.ctl" "close d")"
check_eq "allow_other: nor read .ctl" EACCES "$(as_nobody read "$G/.ctl")"
check_eq "allow_other: nor open a VBD" EACCES "$(as_nobody openw "$G/d")"
check_eq "allow_other: nor read a ro VBD" EACCES "$(as_nobody read "$G/ro")"
check_eq "allow_other: nor make a group" EACCES \
	"$(as_nobody mkdir "$M/evil")"
check_match "d still running" "^d running " "$(ctl_line "$G" d)"
ctl_close "$G" a
tapfs_stop

tapfs_start "$M" "$S" "allow_path=$A:$T/unused,allow_path=$T/store2" ||
	summary
check_match "allowed again: v4 runs" "^v4 running " "$(ctl_line "$G" v4)"
check_match "allowed again: qa runs" "^qa running " "$(ctl_line "$G" qa)"
check_eq "a was closed: forgotten" "" "$(ctl_line "$G" a)"
ctl_ok "$G" "open s2 raw:$T/store2/y.raw"	# the second allow_path
tapfs_stop

# ---- (f) a path component swapped for a symbolic link while opens run -------

# The check and the open are one step: whatever the swapper does between
# them, an open either refuses or gets the image inside.
mkdir -p "$A/sw/d" "$O/d"
printf 'INSIDE!!' | dd of="$A/sw/d/img.raw" bs=1M seek=0 conv=notrunc \
	status=none && truncate -s 1M "$A/sw/d/img.raw"
printf 'OUTSIDE!' | dd of="$O/d/img.raw" bs=1M seek=0 conv=notrunc \
	status=none && truncate -s 1M "$O/d/img.raw"
bg_start swapper "$PYTHON" -B -E -S "$PYLIB/symswap.py" "$A/sw" "$O"
SWAP=$BG_PID
tapfs_start "$M" "$S" "allow_path=$A" || summary
inside=0 outside=0 refused=0
for i in $(seq 300); do
	if [ "$(ctl "$G" "open race raw:$A/sw/d/img.raw ro")" = OK ]; then
		case "$(fsop pread "$G/race" 0 8)" in
		494e5349444521*) inside=$((inside + 1)) ;;
		*) outside=$((outside + 1)) ;;
		esac
		ctl "$G" "close race" >/dev/null
	else
		refused=$((refused + 1))
	fi
done
kill "$SWAP" 2>/dev/null
wait "$SWAP" 2>/dev/null
[ -d "$A/sw/d.real" ] && { rm -f "$A/sw/d"; mv "$A/sw/d.real" "$A/sw/d"; }
msg "swap race: $inside opens inside, $refused refused, $outside outside"
check_eq "swap race: no open reached the file outside" 0 $outside
# The race refuses most opens (how many is up to the scheduler); without
# the swapper the same open works and reads the image inside.
ctl_ok "$G" "open race raw:$A/sw/d/img.raw ro"
check_eq "swap race over: the open reads the image inside" \
	494e5349444521 "$(fsop pread "$G/race" 0 7)"
ctl_close "$G" race
alive "after the swap race"
tapfs_stop

# ---- bad allow_path options ------------------------------------------------

for o in "allow_path=relative/dir" "allow_path=$M/g" "allow_path="; do
	out=$(timeout 10 "$TAPFS" -f -o "store=$S,$o" "$M" 2>&1 </dev/null)
	rc=$?
	check_eq "-o $o: refused (exit 1)" 1 $rc
	check_match "-o $o: says why" "allow_path|unknown option" "$out"
done
check_not is_mounted "$M"

# ---- (g) fds: 1000 create/close cycles, 1000 refused opens ------------------

# On a store in memory: 4000 manifest rewrites with fsync on a disk
# would take most of a minute, and the fds are the same.
F=$T/fdmnt
FS=$T/fdstore
mkdir -p "$FS"
if ! mount -t tmpfs -o size=256m tmpfs "$FS"; then
	fail "mount a tmpfs store on $FS"
	summary
fi
on_exit "umount -l '$FS'"
mkdir -p "$FS/g"
cp "$S/g/v3.vhd" "$FS/g/v3.vhd"		# -> $A/mid.vhd -> $O/base.vhd
tapfs_start "$F" "$FS" "allow_path=$A" || summary
check mkdir "$F/g"
ctl_ok "$F/g" "create d raw 1M"
fds() { ls "/proc/$TAPFS_PID/fd" | wc -l; }
before=$(fds)
t0=$SECONDS
res=$(pylib ctlcycles "$F/g" "$FS/g" 1000)
check_eq "1000 create/close cycles and refused opens" OK "$res"
check_eq "daemon fds after them (took $((SECONDS - t0)) s)" "$before" "$(fds)"
ctl_close "$F/g" d
tapfs_stop

summary
