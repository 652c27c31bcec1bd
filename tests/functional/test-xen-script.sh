#!/bin/bash
# test-xen-script.sh - xen/block-tapfs on this host, without Xen.
#
# The hotplug script runs as libxl runs it (XENBUS_PATH=backend/vbd/D/N,
# "add"/"remove", stdin /dev/null), with Xen's own block-common.sh and
# friends from the Debian package, against a real tapfs mount and real loop
# devices.  Only xenstore is faked: xenstore-read/-write/-exists/-list/-ls/
# -rm over a directory tree (there is no xenstored without a hypervisor).
# The quick complement of tests/xen (make xen-e2e), which runs the same
# script in a real dom0 with blkback; it does not replace it.
#
# Checks: add writes node, physical-device (the loop's hex major:minor),
# physical-device-path and hotplug-status=connected, with a direct-I/O
# loop (read-only for mode r); add is idempotent; remove detaches;
# FORMAT:IMAGE opens the VBD in a group named after the domain and remove
# closes it and removes the group once empty; and each refusal (missing
# target, no group, not in tapfs, state not 2, dead mount, rw on a ro VBD,
# a control file, attached read-write elsewhere, bad params, missing
# image, existing VBD name) writes hotplug-error and
# hotplug-status=error, exits 1 and leaves no loop device, VBD or group.
. "$(dirname "$0")/lib.sh"
requires_root
requires losetup flock stat timeout dpkg qemu-img dd cmp

SCRIPT=$TOP/xen/block-tapfs

# ---- Xen's hotplug helpers -----------------------------------------------

# From the package cache of make xen-e2e, an installed Xen, or a download.
find_xen_scripts() {
	local d
	for d in "${TAPFS_XEN_CACHE:-/nonexistent}/root/etc/xen/scripts" \
		 /var/cache/tapfs-xen/root/etc/xen/scripts \
		 "${XDG_CACHE_HOME:-$HOME/.cache}/tapfs-xen/root/etc/xen/scripts" \
		 /etc/xen/scripts; do
		[ -f "$d/block-common.sh" ] && { echo "$d"; return; }
	done
	(cd "$T" && apt-get download -q xen-utils-common >/dev/null 2>&1 &&
	 dpkg -x xen-utils-common_*.deb "$T/xu") || return 1
	echo "$T/xu/etc/xen/scripts"
}
XS_SRC=$(find_xen_scripts) || {
	echo "SKIP: $TEST_NAME: Xen's block-common.sh not available" \
		"(make xen-e2e fetches it, or apt-get download xen-utils-common)"
	exit 77
}

S=$T/scripts		# the script directory, as /etc/xen/scripts
FAKE=$T/fakebin		# the fake xenstore CLI
XS=$T/xs		# the fake store: node P is directory $XS/P, value in @
mkdir -p "$S" "$FAKE" "$XS" "$T/lock" "$T/state"
for f in block-common.sh xen-hotplug-common.sh xen-script-common.sh \
	 locking.sh logging.sh hotplugpath.sh; do
	cp "$XS_SRC/$f" "$S/"
done
cp "$SCRIPT" "$S/block-tapfs"
# Point Xen's helpers at this test's directories: the CLI (bindir is put
# first on PATH), the hotplug log, the lock directory.
sed -i "s#^bindir=.*#bindir=\"$FAKE\"#" "$S/hotplugpath.sh"
sed -i "s#/var/log/xen/xen-hotplug.log#$T/hotplug.log#" \
	"$S/xen-hotplug-common.sh"
sed -i "s#^LOCK_BASEDIR=.*#LOCK_BASEDIR=$T/lock#" "$S/locking.sh"

cat > "$FAKE/xenstore-fake" <<'EOF'
#!/bin/bash
# A stand-in for the xenstore CLI over the directory tree $XSDIR.
p() {
	case "$1" in
	/*) echo "$XSDIR$1" ;;
	*) echo "$XSDIR/local/domain/0/$1" ;;
	esac
}
case "$(basename "$0")" in
xenstore-read)
	for k in "$@"; do
		if [ ! -f "$(p "$k")/@" ]; then
			echo "xenstore-read: couldn't read path $k" >&2
			exit 1
		fi
		cat "$(p "$k")/@"; echo
	done ;;
xenstore-write)
	while [ $# -ge 2 ]; do
		mkdir -p "$(p "$1")" && printf '%s' "$2" > "$(p "$1")/@"
		shift 2
	done ;;
xenstore-exists) [ -d "$(p "$1")" ] ;;
xenstore-list) [ -d "$(p "$1")" ] && ls "$(p "$1")" | grep -vx @ ;;
xenstore-rm) rm -rf "$(p "$1")" ;;
xenstore-ls)
	[ "$1" = -f ] && shift
	d=$(p "$1")
	find "$d" -name @ | sort | while read -r f; do
		k=${f%/@}
		echo "${k#"$XSDIR"} = \"$(cat "$f")\""
	done ;;
esac
EOF
chmod +x "$FAKE/xenstore-fake"
for c in read write exists list rm ls; do
	ln -s xenstore-fake "$FAKE/xenstore-$c"
done
export XSDIR=$XS
export TAPFS_CONF=$T/block-tapfs.conf
echo "TAPFS_MOUNT=$T/mnt
TAPFS_STATE_DIR=$T/state
TAPFS_CLOSE_TIMEOUT=5" > "$TAPFS_CONF"

xsw() { XSDIR=$XS "$FAKE/xenstore-write" "$@"; }
xsr() { XSDIR=$XS "$FAKE/xenstore-read" "$@" 2>/dev/null; }

# Detach, at exit, any loop device left on a file of this test.
_loops_under_t() {
	local f
	for f in /sys/block/loop*/loop/backing_file; do
		[ -r "$f" ] || continue
		case "$(cat "$f")" in
		"$T"/*) f=${f#/sys/block/}; echo "/dev/${f%%/*}" ;;
		esac
	done
}
on_exit '_loops_under_t | while read -r l; do losetup -d "$l"; done'

# ---- driving the script --------------------------------------------------

DOM=7
BE=/local/domain/0/backend/vbd/$DOM
xsw /local/domain/$DOM/name "guest-x" /local/domain/$DOM/vm /vm/x

# backend DEVID VDEV PARAMS MODE: the nodes libxl writes before "add".
backend() {
	rm -rf "${XS:?}$BE/$1"
	xsw "$BE/$1/params" "$3" "$BE/$1/mode" "$4" "$BE/$1/frontend-id" $DOM \
		"$BE/$1/dev" "$2" "$BE/$1/state" 2 "$BE/$1/type" phy \
		"$BE/$1/script" /etc/xen/scripts/block-tapfs
}
# hp add|remove DEVID: run the script as libxl does; output in HP_OUT.
hp() {
	HP_OUT=$(XENBUS_PATH=backend/vbd/$DOM/$2 XENBUS_TYPE=vbd \
		XENBUS_BASE_PATH=backend timeout 60 bash "$S/block-tapfs" "$1" \
		</dev/null 2>&1)
	HP_RC=$?
}
node() { xsr "$BE/$1/$2"; }
n_loops() { _loops_under_t | wc -l; }

# attached NAME DEVID RO: add succeeded and its nodes describe the loop.
attached() {
	local l mm
	[ "$HP_RC" = 0 ] || msg "$1: ${HP_OUT:-}; $(tail -n 3 "$T/hotplug.log")"
	l=$(node "$2" node)
	mm=$(stat -L -c %t:%T "$l" 2>/dev/null)
	check_eq "$1: add exits 0" 0 "$HP_RC"
	check_eq "$1: hotplug-status" connected "$(node "$2" hotplug-status)"
	check_eq "$1: physical-device = $l's major:minor" "$mm" \
		"$(node "$2" physical-device)"
	check_eq "$1: physical-device-path" "$l" \
		"$(node "$2" physical-device-path)"
	check_eq "$1: loop backing file" "$(node "$2" tapfs-vbd)" \
		"$(cat "/sys/block/${l#/dev/}/loop/backing_file" 2>&1)"
	check_eq "$1: loop direct I/O" 1 \
		"$(cat "/sys/block/${l#/dev/}/loop/dio" 2>&1)"
	check_eq "$1: loop read-only flag" "$3" \
		"$(cat "/sys/block/${l#/dev/}/ro" 2>&1)"
}

# refused NAME DEVID ERE: add failed the Xen way with a reason matching ERE.
refused() {
	local loops_before=$4
	check_eq "$1: add exits 1" 1 "$HP_RC"
	check_eq "$1: hotplug-status" error "$(node "$2" hotplug-status)"
	check_match "$1: hotplug-error" "$3" "$(node "$2" hotplug-error)"
	check_match "$1: reason in the hotplug log" "block-tapfs: add .*$3" \
		"$(cat "$T/hotplug.log")"
	check_eq "$1: no loop device left" "$loops_before" "$(n_loops)"
	check_eq "$1: no physical-device" "" "$(node "$2" physical-device)"
}

# ---- the mount -----------------------------------------------------------

M=$T/mnt
# FORMAT:IMAGE targets are opened by the mount: images must be in its
# store or an allow_path directory (docs/xen.md).
tapfs_start "$M" "$T/store" "allow_path=$T" || summary
PID_M=$TAPFS_PID
check mkdir "$M/g"
ctl_ok "$M/g" "create d raw 16M"
ctl_ok "$M/g" "create e raw 16M"
dd if=/dev/zero of="$T/ro.raw" bs=1M count=4 2>/dev/null
ctl_ok "$M/g" "open r raw:$T/ro.raw ro"

# ---- add / remove, path form ------------------------------------------------

backend 51712 xvda "$M/g/d" w
hp add 51712
attached "path rw" 51712 0
l1=$(node 51712 node)
hp add 51712
check_eq "second add: exits 0" 0 "$HP_RC"
check_eq "second add: still one loop device" 1 "$(n_loops)"

backend 51728 xvdb "$M/g/d" w
hp add 51728
refused "rw on a VBD attached rw" 51728 \
	"attached read-write through $l1, used by domain $DOM \\(guest-x, xvda\\)" 1
backend 51728 xvdb "$M/g/d" r
hp add 51728
refused "ro on a VBD attached rw" 51728 "already attached read-write" 1

hp remove 51712
check_eq "remove: exits 0" 0 "$HP_RC"
check_eq "remove: loop device detached" 0 "$(n_loops)"
check_match "remove: the VBD stays open (path form)" '^d running' \
	"$(ctl_line "$M/g" d)"
hp remove 51712
check_eq "second remove: exits 0" 0 "$HP_RC"

backend 51712 xvda "$M/g/d" r
hp add 51712
attached "path ro" 51712 1
backend 51728 xvdb "$M/g/d" r
hp add 51728
attached "path ro, shared read-only" 51728 1
backend 51744 xvdc "$M/g/d" w
hp add 51744
refused "rw on a VBD attached ro" 51744 "already attached read-only" 2
hp remove 51712
hp remove 51728
hp remove 51744
check_eq "removes: no loop device left" 0 "$(n_loops)"

backend 51712 xvda "$M/g/r" r
hp add 51712
attached "ro VBD, mode r" 51712 1
hp remove 51712

# ---- FORMAT:IMAGE -----------------------------------------------------------

dd if=/dev/zero of="$T/img.raw" bs=1M count=8 2>/dev/null
echo "IMAGE-PATTERN" | dd of="$T/img.raw" conv=notrunc 2>/dev/null
"${TAPFS_IMG:-$TOP/build/tapfs-img}" create -q -f vhd "$T/img.vhd" 8M
backend 51712 xvda "raw:$T/img.raw" w
hp add 51712
attached "raw:IMAGE" 51712 0
check_eq "raw:IMAGE: VBD in the domain's group" "$M/guest-x/xvda" \
	"$(node 51712 tapfs-vbd)"
check_match "raw:IMAGE: .ctl line" "^xvda running raw .* rw .*$T/img.raw" \
	"$(ctl_line "$M/guest-x" xvda)"
check_eq "raw:IMAGE: the guest sees the image" IMAGE-PATTERN \
	"$(head -c 13 "$(node 51712 node)")"
backend 51728 xvdb "vhd:$T/img.vhd" r
hp add 51728
attached "vhd:IMAGE ro" 51728 1
check_match "vhd:IMAGE ro: .ctl line" "^xvdb running vhd .* ro " \
	"$(ctl_line "$M/guest-x" xvdb)"
hp remove 51712
check_eq "remove raw:IMAGE: closed" "" "$(ctl_line "$M/guest-x" xvda)"
check test -d "$M/guest-x"
hp remove 51728
check_not test -e "$M/guest-x"
check_eq "remove vhd:IMAGE: group mark gone" "" "$(ls "$T/state")"
check_eq "FORMAT:IMAGE: no loop device left" 0 "$(n_loops)"

# A snapshot of an opened image while attached: remove warns that the
# newest data is in the child, and still closes it.
backend 51712 xvda "vhd:$T/img.vhd" w
hp add 51712
attached "vhd:IMAGE rw" 51712 0
ctl_ok "$M/guest-x" "snapshot xvda"
hp remove 51712
check_eq "remove after a snapshot: exits 0" 0 "$HP_RC"
check_match "remove after a snapshot: warns" \
	"warning: .*xvda was snapshotted: its newest data is in .*xvda\.1\.vhd" \
	"$(cat "$T/hotplug.log")"
check_not test -e "$M/guest-x"

# An existing group (made by the administrator) is kept.
check mkdir "$M/guest-x"
backend 51712 xvda "raw:$T/img.raw" w
hp add 51712
attached "raw:IMAGE in an existing group" 51712 0
hp remove 51712
check test -d "$M/guest-x"
check rmdir "$M/guest-x"

# ---- refusals ------------------------------------------------------------

try_refused() {		# NAME PARAMS MODE ERE
	backend 51760 xvdd "$2" "$3"
	hp add 51760
	refused "$1" 51760 "$4" "$(n_loops)"
	hp remove 51760
	check_eq "$1: remove after the failed add exits 0" 0 "$HP_RC"
}
try_refused "missing VBD" "$M/g/nosuch" w \
	"target $M/g/nosuch does not exist: no VBD 'nosuch' in group 'g'"
try_refused "missing group" "$M/nog/x" w "no group 'nog' in the tapfs mount"
try_refused "missing path" /nonexistent/x w \
	"target /nonexistent/x does not exist"
try_refused "plain file" "$T/img.raw" w "is not in a tapfs mount"
try_refused "control file" "$M/g/.ctl" w "is not a VBD file"
try_refused "group directory" "$M/g" w "is not a VBD file"
try_refused "rw on a ro VBD" "$M/g/r" w "is read-only in tapfs"
try_refused "bad params" "foo" w "neither a VBD file in a tapfs mount"
OUTSIDE=$(mktemp /var/tmp/tapfs-xen-outside.XXXXXX) &&
	truncate -s 1M "$OUTSIDE" && on_exit "rm -f '$OUTSIDE'"
try_refused "image outside the allowed directories" "raw:$OUTSIDE" r \
	"tapfs refused 'open xvdd raw:$OUTSIDE ro' .*EACCES: image $OUTSIDE is outside the allowed directories"
try_refused "missing image" "raw:$T/nosuch.raw" w \
	"image $T/nosuch.raw does not exist"
check_not test -e "$M/guest-x"
check mkdir "$M/guest-x"
ctl_ok "$M/guest-x" "create xvdd raw 1M"
try_refused "VBD name taken" "raw:$T/img.raw" w \
	"a VBD 'xvdd' already exists in $M/guest-x"
check_match "VBD name taken: the VBD is left alone" '^xvdd running' \
	"$(ctl_line "$M/guest-x" xvdd)"
ctl_close "$M/guest-x" xvdd
check rmdir "$M/guest-x"

backend 51760 xvdd "$M/g/e" w
xsw "$BE/51760/state" 5
hp add 51760
refused "backend not in InitWait" 51760 "backend state is 5, not 2" 0

# A dead mount: its daemon killed.
D=$T/dead
mkdir -p "$D"
"$TAPFS" -o "store=$T/store2,pidfile=$T/dead.pid" "$D" </dev/null
on_exit "umount -l '$D' 2>/dev/null; true"
check mkdir "$D/g"
ctl_ok "$D/g" "create d raw 1M"
kill -KILL "$(cat "$T/dead.pid")"
sleep 0.3
try_refused "dead mount" "$D/g/d" w "the tapfs mount $D is not live"
umount -l "$D"

# ---- incoming live migration (xl migrate, shared storage) ---------------
#
# Two daemons stand for two hosts over one shared image directory: the
# source, mount $T/src with its own conf, and the destination, $M.  The
# source's guest (domain 8, guest-m) has the image attached read-write
# and has written to it; xl creates the destination's domain (9) as
# guest-m--incoming and runs "add" there while the source holds the
# image: the VBD opens in standby.  A write through the destination's
# loop device waits until the source's "remove" has closed its VBD, then
# takes the image over.  qemu-img reads the result.

SRC=$T/src
tapfs_start "$SRC" "$T/srcstore" "allow_path=$T/shared" || summary
PID_SRC=$TAPFS_PID
mkdir -p "$T/shared"
IMG=$T/shared/mig.qcow2
qemu-img create -q -f qcow2 "$IMG" 16M
head -c 1048576 /dev/urandom > "$T/p1"
head -c 1048576 /dev/urandom > "$T/p2"
SRC_CONF=$T/src.conf
echo "TAPFS_MOUNT=$SRC
TAPFS_STATE_DIR=$T/srcstate
TAPFS_CLOSE_TIMEOUT=5" > "$SRC_CONF"
xsw /local/domain/8/name guest-m /local/domain/9/name guest-m--incoming \
	/local/domain/10/name guest-m

# on_dom DOMID CMD...: CMD with the backend of domain DOMID.
on_dom() {
	local DOM=$1 BE=/local/domain/0/backend/vbd/$1
	shift
	"$@"
}

on_dom 8 backend 51712 xvda "qcow2:$IMG" w
TAPFS_CONF=$SRC_CONF on_dom 8 hp add 51712
on_dom 8 attached "source: qcow2:IMAGE" 51712 0
LSRC=$(on_dom 8 node 51712 node)
check dd if="$T/p1" of="$LSRC" bs=64k oflag=direct conv=notrunc status=none
check_eq "source: the writer" active "$(stat_val "$SRC/guest-m" xvda hold)"

# While the source holds the image, only an incoming migration waits.
echo "TAPFS_HANDOVER=off" >> "$TAPFS_CONF"
on_dom 9 backend 51712 xvda "qcow2:$IMG" w
on_dom 9 hp add 51712
on_dom 9 refused "TAPFS_HANDOVER=off" 51712 \
	"tapfs refused 'open xvda qcow2:$IMG' in $M/guest-m--incoming: error: EBUSY: $IMG is in use read-write by pid $PID_SRC \\(tapfs\\) \\(TAPFS_HANDOVER=off" 1
on_dom 9 hp remove 51712
sed -i 's/^TAPFS_HANDOVER=off$/TAPFS_HANDOVER=maybe/' "$TAPFS_CONF"
on_dom 9 backend 51712 xvda "qcow2:$IMG" w
on_dom 9 hp add 51712
on_dom 9 refused "TAPFS_HANDOVER=maybe" 51712 \
	"TAPFS_HANDOVER=maybe in $TAPFS_CONF: give on or off" 1
sed -i '/^TAPFS_HANDOVER=/d' "$TAPFS_CONF"
on_dom 10 backend 51712 xvda "qcow2:$IMG" w
on_dom 10 hp add 51712
on_dom 10 refused "not an incoming migration" 51712 \
	"EBUSY: $IMG is in use read-write by pid $PID_SRC .*domain guest-m is not an incoming migration" 1
on_dom 10 hp remove 51712
on_dom 9 backend 51728 xvdb "qcow2:$IMG" r
on_dom 9 hp add 51728
on_dom 9 refused "incoming, access=ro" 51728 \
	"tapfs refused 'open xvdb qcow2:$IMG ro' .*EBUSY" 1
on_dom 9 hp remove 51728
check_not test -e "$M/guest-m--incoming"
check_not test -e "$M/guest-m"

on_dom 9 backend 51712 xvda "qcow2:$IMG" w
on_dom 9 hp add 51712
on_dom 9 attached "incoming: qcow2:IMAGE in use" 51712 0
LDST=$(on_dom 9 node 51712 node)
G=$M/guest-m--incoming
check_match "incoming: .ctl says standby" "^xvda standby qcow2 .* rw .*$IMG" \
	"$(ctl_line "$G" xvda)"
check_eq "incoming: held in standby" standby "$(stat_val "$G" xvda hold)"
check_match "incoming: the hotplug log says standby and why" \
	"add backend/vbd/9/51712: qcow2:$IMG is in use read-write elsewhere \\($IMG is in use read-write by pid $PID_SRC \\(tapfs\\)\\): opened it as $G/xvda in standby for the incoming migration of guest-m--incoming" \
	"$(cat "$T/hotplug.log")"

# The guest runs here: its write waits for the image.
bg_start mig-write dd if="$T/p2" of="$LDST" bs=64k seek=64 oflag=direct \
	conv=notrunc status=none
WPID=$BG_PID
taking_over() { [[ "$(ctl_line "$G" xvda)" == *"take-over: waiting"* ]]; }
check wait_for 20 taking_over
check pid_alive "$WPID"
check_eq "incoming: the source is still the writer" active \
	"$(stat_val "$SRC/guest-m" xvda hold)"

# The source's domain is destroyed: its remove closes the VBD.
TAPFS_CONF=$SRC_CONF on_dom 8 hp remove 51712
check_eq "source remove: exits 0" 0 "$HP_RC"
check_not test -e "$SRC/guest-m"
bg_wait "$WPID" 60
check_eq "incoming: the waiting write completes" 0 "$BG_RC"
check_eq "incoming: the writer now" active "$(stat_val "$G" xvda hold)"
check_match "incoming: .ctl says running" "^xvda running qcow2 " \
	"$(ctl_line "$G" xvda)"
check cmp -n 1048576 "$T/p1" "$LDST"
check cmp -n 1048576 "$T/p2" "$LDST" 0 4194304

on_dom 9 hp remove 51712
check_eq "incoming remove: exits 0" 0 "$HP_RC"
check_not test -e "$G"
check_eq "incoming remove: no loop device left" 0 "$(n_loops)"
check_out "migrated image: qemu-img check" 0 "No errors" \
	qemu-img check -f qcow2 "$IMG"
check qemu-img convert -f qcow2 -O raw "$IMG" "$T/mig.raw"
check cmp -n 1048576 "$T/p1" "$T/mig.raw"
check cmp -n 1048576 "$T/p2" "$T/mig.raw" 0 4194304
tapfs_stop "$PID_SRC" "$SRC"

check_eq "no loop device left at the end" 0 "$(n_loops)"
check_eq "no group mark left at the end" "" "$(ls "$T/state")"
ctl_close "$M/g" d
tapfs_stop "$PID_M" "$M"
summary
