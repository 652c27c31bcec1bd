#!/bin/bash
# dom0-test.sh - the end-to-end test of block-tapfs, run in the emulated
# dom0 by dom0-init.  Prints one marker per step (tests/xen/markers):
#
#	E2E-OK NAME: detail (t=DOM0_UPTIME)
#	E2E-FAIL NAME: why (t=DOM0_UPTIME)
#
# and at the end the hotplug log, syslog (tapfs and block-tapfs), xl's
# logs and the guests' consoles between E2E-LOG lines.  Every wait is
# bounded; a failed step does not stop the later ones unless they cannot
# run at all.
# shellcheck disable=SC2016,SC2034,SC2317  # eval strings, indirect calls
set -u
export LC_ALL=C

MNT=/srv/vbds
STORE=/var/lib/tapfs
VM1=$MNT/vm1
HLOG=/var/log/xen/xen-hotplug.log
CONS=/var/log/xen/console
read -r token < /proc/sys/kernel/random/uuid
token=${token//-/}
token=${token:0:12}

# Under emulation every program started in dom0 costs 30-200 ms, so the
# helpers that run often are bash builtins.
up() { local u _; read -r u _ < /proc/uptime; echo "$u"; }
# since T: seconds (one decimal) since the uptime T
since() {
	local a=${1/./} b
	b=$(up)
	b=${b/./}
	a=$((10#$b - 10#$a))
	echo "$((a / 100)).$(((a % 100) / 10))"
}
ok() { echo "E2E-OK $1: ${2:-} (t=$(up))"; }
bad() { echo "E2E-FAIL $1: ${2:-} (t=$(up))"; }
info() { echo "E2E-INFO $* (t=$(up))"; }
# verdict NAME DETAIL COND...: ok if the command COND succeeds
verdict() {
	local name=$1 detail=$2
	shift 2
	if "$@"; then ok "$name" "$detail"; else bad "$name" "$detail"; fi
}

# zzz SECONDS: sleep without starting a program (read on an idle FIFO).
mkfifo /run/e2e-zzz
exec 9<> /run/e2e-zzz
zzz() { read -r -t "$1" -u 9 _ || true; }

# wait_for SECONDS CMD...: poll CMD every 0.25 s; 1 on timeout.
wait_for() {
	local end=$((SECONDS + $1))
	shift
	until "$@"; do
		[ $SECONDS -ge $end ] && return 1
		zzz 0.25
	done
}

# ctl GROUPDIR CMD: one .ctl command; prints the status line on failure.
ctl() {
	local st
	if { printf '%s\n' "$2" > "$1/.ctl"; } 2>/dev/null; then
		return 0
	fi
	IFS= read -r st < "$1/.ctl"
	echo "$st"
	return 1
}

# ctl_close GROUPDIR NAME: close, retried while busy (RELEASE is async).
ctl_close() {
	local end=$((SECONDS + 10))
	until ctl "$1" "close $2" >/dev/null; do
		[ $SECONDS -ge $end ] && { ctl "$1" "close $2"; return; }
		zzz 0.2
	done
}

# ctl_line GROUPDIR NAME: the VBD's line in .ctl.
ctl_line() {
	local line
	{
		IFS= read -r line
		while IFS= read -r line; do
			[ "${line%% *}" = "$2" ] && { echo "$line"; return; }
		done
	} < "$1/.ctl"
}
# stat_val GROUPDIR NAME KEY: one counter of .stats.
stat_val() {
	local k v
	while read -r k v; do
		[ "$k" = "$2.$3" ] && { echo "$v"; return; }
	done < "$1/.stats"
}
# sector FILE N: the text of 512-byte sector N (NULs dropped, first line)
sector() {
	dd if="$1" bs=512 skip="$2" count=1 2>/dev/null | tr -d '\000' |
		head -n 1
}
# put FILE N TEXT: TEXT as sector N
put() { echo "$3" | dd of="$1" bs=512 seek="$2" conv=sync,notrunc 2>&1; }

# The guests' consoles are read with bash alone: busybox grep has been
# seen to crash on them.
con() { local t; t=$(< "$CONS/guest-$1.log") 2>/dev/null; echo "${t//$'\r'/}"; }
con_has() { [[ "$(con "$1")" == *"$2"* ]]; }
con_line() {
	local line last=''
	while IFS= read -r line; do
		[[ "$line" == *"$2"* ]] && last=$line
	done <<< "$(con "$1")"
	printf '%s\n' "$last"
}
con_all() {
	local line all=''
	while IFS= read -r line; do
		[[ "$line" == *"$2"* ]] && all="$all$line; "
	done <<< "$(con "$1")"
	printf '%s\n' "$all"
}

# loops: "loopN:BACKING_FILE" for every attached loop device.
loops() {
	local f b
	for f in /sys/block/loop*/loop/backing_file; do
		[ -r "$f" ] || continue
		IFS= read -r b < "$f"
		f=${f#/sys/block/}
		echo "${f%%/*}:$b"
	done
}
no_loops() { [ -z "$(loops)" ]; }
be_gone() { ! xenstore-exists "/local/domain/0/backend/vbd/$1" 2>/dev/null; }

dump_logs() {
	local f
	for f in "$HLOG" /var/log/tapfs-san.* /var/log/messages /var/log/xen/xl-*.log \
		 "$CONS"/guest-*.log; do
		[ -f "$f" ] || continue
		echo "E2E-LOG begin $f"
		tr -d '\r' < "$f"
		echo "E2E-LOG end $f"
	done
}
trap dump_logs EXIT

# A step that hangs (a stuck daemon, a guest that never ends) must not
# leave QEMU running until the host gives up: after WATCHDOG seconds of
# dom0 uptime, say what was running and power off.
WATCHDOG=${WATCHDOG:-240}
watchdog() {
	local p
	sleep $((WATCHDOG - ${1%.*}))
	bad watchdog "dom0 test still running after ${WATCHDOG} s of uptime"
	ps -o pid,stat,args 2>/dev/null || ps
	for p in /proc/[0-9]*; do
		[ "$(cat "$p/wchan" 2>/dev/null)" = 0 ] && continue
		echo "$(cat "$p/comm" 2>/dev/null) ${p#/proc/}:" \
			"$(tr '\0' ' ' < "$p/cmdline" 2>/dev/null | cut -c1-80)" \
			"wchan=$(cat "$p/wchan" 2>/dev/null)"
	done
	dump_logs
	echo "E2E-DONE"
	sync
	reboot -f
}
watchdog "$(up)" &

# ---- Xen -------------------------------------------------------------------

start_xen() {
	local m
	for m in xen-evtchn xen-privcmd xenfs xen-gntdev xen-gntalloc loop \
		 fuse xen-blkback; do
		insmod "/lib/modules/$m.ko" || { echo "insmod $m failed"; return 1; }
	done
	mount -t xenfs xenfs /proc/xen || return 1
	syslogd -O /var/log/messages || return 1
	xenstored --pid-file /run/xen/xenstored.pid || return 1
	xen-init-dom0 >/dev/null || return 1
	xenconsoled --pid-file=/run/xen/xenconsoled.pid --log=guest \
		--log-dir="$CONS" || return 1
	xl list | grep -q '^Domain-0' && [ -d /sys/bus/xen-backend/drivers/vbd ]
}
if ! start_xen; then
	bad xen-up "the Xen stack did not come up"
	exit 1
fi
ok xen-up "$(xl info | awk '/^xen_version/ { print "Xen " $3 }'), dom0 $(
	uname -r)"

# ---- tapfs -----------------------------------------------------------------

mkdir -p "$MNT" /images
# A sanitizer build (make asan) reports into a file, not to the detached
# daemon's stderr.
export ASAN_OPTIONS=log_path=/var/log/tapfs-san
export UBSAN_OPTIONS=log_path=/var/log/tapfs-san
# The FORMAT:IMAGE disks' images are in /images, outside the store.
if mount.tapfs -o pidfile=/run/tapfs.pid,allow_path=/images "$MNT" &&
   awk -v m="$MNT" '$2 == m && $3 == "fuse.tapfs" { f = 1 } END { exit !f }' \
	/proc/mounts; then
	ok tapfs-mount "mount.tapfs $MNT, daemon pid $(cat /run/tapfs.pid)"
else
	bad tapfs-mount "mount.tapfs $MNT failed"
	exit 1
fi

if mkdir "$VM1" && r=$(ctl "$VM1" 'create xvda vhd 64M') &&
   [ "$(stat -c %s "$VM1/xvda")" = 67108864 ]; then
	ok vbd-create "$(ctl_line "$VM1" xvda)"
else
	bad vbd-create "${r:-mkdir failed}"
	exit 1
fi

put "$VM1/xvda" 0 "TAPFS-E2E-DOM0 $token" >/dev/null
got=$(sector "$VM1/xvda" 0)
verdict dom0-pattern "sector 0 = '$got'" [ "$got" = "TAPFS-E2E-DOM0 $token" ]

# Images outside the mount, for target=FORMAT:IMAGE: a raw one with a
# pattern, and a VHD one whose pattern is written through a temporary VBD.
images() {
	dd if=/dev/zero of=/images/data.raw bs=1M seek=32 count=0 2>/dev/null &&
	put /images/data.raw 0 "TAPFS-E2E-IMAGE $token" >/dev/null &&
	tapfs-img create -q -f vhd /images/base.vhd 16M &&
	mkdir "$MNT/seed" &&
	ctl "$MNT/seed" 'open b vhd:/images/base.vhd' &&
	put "$MNT/seed/b" 0 "TAPFS-E2E-RO $token" >/dev/null &&
	ctl_close "$MNT/seed" b &&
	rmdir "$MNT/seed" &&
	tapfs-img check /images/base.vhd >/dev/null
}
verdict images "/images/data.raw (raw), /images/base.vhd (vhd)" images

# ---- guest1: three tapfs disks ---------------------------------------------

t=$(up)
out=$(timeout 120 xl create /e2e/guest1.cfg \
	"extra=\"console=hvc0 loglevel=4 e2e_token=$token\"" 2>&1)
rc=$?
dom1=$(xl domid guest1 2>/dev/null)
if [ $rc -eq 0 ] && [ -n "$dom1" ]; then
	ok guest1-create "domain $dom1, xl create took $(since "$t") s"
else
	bad guest1-create "xl create exit $rc: $(echo "$out" | grep -i error |
		tail -n 3 | tr '\n' ' ')"
	echo "$out"
fi

# All backend nodes of guest1 with one xenstore-ls.
BE1=/local/domain/0/backend/vbd/$dom1
declare -A xs=()
devids=()
while IFS= read -r line; do
	k=${line%% = *}
	v=${line#* = \"}
	xs[${k#"$BE1"/}]=${v%\"}
	k=${k#"$BE1"/}
	[ "${k#*/}" = dev ] && devids+=("${k%%/*}")
done < <(xenstore-ls -f "$BE1" 2>/dev/null)
nodes_ok=1 dio_ok=1 ro_ok=1
detail='' dio_detail='' ro_detail=''
for devid in "${devids[@]}"; do
	dev=${xs[$devid/dev]}
	node=${xs[$devid/node]:-}
	pd=${xs[$devid/physical-device]:-}
	pdp=${xs[$devid/physical-device-path]:-}
	hs=${xs[$devid/hotplug-status]:-}
	mode=${xs[$devid/mode]:-}
	l=${node#/dev/}
	mm='' d='' ro=''
	read -r mm < "/sys/block/$l/dev" && mm=$(printf '%x:%x' "${mm%:*}" "${mm#*:}")
	read -r d < "/sys/block/$l/loop/dio"
	read -r ro < "/sys/block/$l/ro"
	detail="$detail $dev=$node($pd,$hs)"
	if [ -z "$node" ] || [ "$pd" != "$mm" ] || [ "$pdp" != "$node" ] ||
	   [ "$hs" != connected ]; then
		nodes_ok=
	fi
	dio_detail="$dio_detail $l:dio=$d"
	[ "$d" = 1 ] || dio_ok=
	ro_detail="$ro_detail $dev:mode=$mode,ro=$ro"
	if { [ "$mode" = r ] && [ "$ro" != 1 ]; } ||
	   { [ "$mode" = w ] && [ "$ro" != 0 ]; }; then
		ro_ok=
	fi
done
[ ${#devids[@]} -eq 3 ] || nodes_ok=
verdict hotplug-nodes "${detail# }" [ -n "$nodes_ok" ]
verdict loop-dio "${dio_detail# }" [ -n "$dio_ok" ]
verdict loop-ro "${ro_detail# }" [ -n "$ro_ok" ]
info "loops: $(loops | tr '\n' ' ')"

lb=$(ctl_line "$MNT/guest1" xvdb)
lc=$(ctl_line "$MNT/guest1" xvdc)
verdict format-image-open "xvdb: $lb | xvdc: $lc" eval \
	'[[ "$lb" == *" rw "*/images/data.raw* ]] &&
	 [[ "$lc" == *" ro "*/images/base.vhd* ]]'

out=$(dd if=/dev/zero of="$MNT/guest1/xvdc" bs=512 count=1 conv=notrunc 2>&1)
rc=$?
verdict tapfs-ro-refused "dd to guest1/xvdc: exit $rc: $out" eval \
	'[ $rc -ne 0 ] && [[ "$out" == *"Read-only file system"* ]]'

# ---- while guest1 boots: guest2, a missing target --------------------------

# The refusals run while guest1 boots (on its own CPU); they must leave
# the loop devices as they are, guest1's three.
base_loops=$(loops)
loops_as_before() { [ "$(loops)" = "$base_loops" ]; }

out=$(timeout 120 xl create /e2e/guest2.cfg 2>&1)
rc=$?
l=$(echo "$out" | grep -m 1 'does not exist')
verdict missing-target-refused "xl create exit $rc: $l" eval \
	'[ $rc -ne 0 ] && [ -n "$l" ]'
l=$(grep 'block-tapfs: add .*error: target /srv/vbds/vm1/nosuch does not' \
	"$HLOG" | tail -n 1)
verdict missing-target-logged "$HLOG: $l" [ -n "$l" ]
clean2() {
	! xl domid guest2 >/dev/null 2>&1 && loops_as_before &&
	[ "$(xenstore-list /local/domain/0/backend/vbd 2>/dev/null)" = "$dom1" ] &&
	[ ! -e "$MNT/guest2" ]
}
verdict missing-target-clean "domains: $(xl list | awk 'NR > 1 { print $1 }' |
	tr '\n' ' ')backends: $(xenstore-list /local/domain/0/backend/vbd |
	tr '\n' ' ')loops: $(loops | tr '\n' ' ')" wait_for 10 clean2

# ---- refusals, tried on a paused guest3 ------------------------------------

out=$(timeout 60 xl create -p /e2e/guest3.cfg 2>&1) || info "guest3: $out"
dom3=$(xl domid guest3 2>/dev/null)
info "guest3 is domain ${dom3:-none} (paused)"
# attach VDEV TARGET: a block-attach that must fail; prints xl's output
attach() {
	timeout 60 xl block-attach guest3 \
		"script=block-tapfs,vdev=$1,target=$2" 2>&1 && echo ATTACHED
}

# refused: the attach failed ($out) with the expected reason ($l).
refused() { [ -n "$l" ] && [[ "$out" != *ATTACHED* ]]; }

out=$(attach xvdd /images/data.raw)
l=$(echo "$out" | grep -m 1 'not in a tapfs mount')
verdict refuse-not-tapfs "${l:-$out}" refused

ctl "$VM1" 'create other raw 8M' >/dev/null
lo=$(losetup --direct-io=on -f --show "$VM1/other")
out=$(attach xvde "$VM1/other")
l=$(echo "$out" | grep -m 1 "already attached read-write through $lo")
verdict refuse-attached-rw "${l:-$out}" refused
losetup -d "$lo"

mkdir -p /srv/stale
mount.tapfs -o store=/var/lib/tapfs-stale,pidfile=/run/stale.pid /srv/stale &&
	mkdir /srv/stale/g && ctl /srv/stale/g 'create d raw 8M'
kill -KILL "$(cat /run/stale.pid)"
zzz 0.5
out=$(attach xvdf /srv/stale/g/d)
l=$(echo "$out" | grep -m 1 'is not live')
verdict refuse-not-live "${l:-$out}" refused
umount -l /srv/stale

# libxl keeps a refused block-attach's backend directory until the
# domain goes; what the script must not leave is a loop device or any of
# the nodes of a successful attach.
be3=/local/domain/0/backend/vbd/$dom3
clean3() {
	loops_as_before &&
	! xenstore-ls -f "$be3" 2>/dev/null |
		grep -qE '/(physical-device|node|tapfs-vbd) = |"connected"'
}
wait_for 10 clean3 && c3=1 || c3=''
d3="loops: $(loops | tr '\n' ' '); guest3 backends: $(xenstore-ls -f \
	"$be3" 2>/dev/null | grep -E '/(hotplug-status|physical-device|node) = ' |
	sed "s#$be3/##" | tr '\n' ' ')"
xl destroy guest3 2>/dev/null
verdict refusals-clean "$d3; after xl destroy: $(be_gone "$dom3" &&
	echo gone)" \
	eval '[ -n "$c3" ] && wait_for 10 be_gone "$dom3"'
ctl_close "$VM1" other >/dev/null

# ---- the guest runs ------------------------------------------------------

if ! wait_for 120 con_has guest1 'GUEST-WAITING'; then
	bad guest-boot "no GUEST-WAITING from guest1 within 120 s"
fi
put "$VM1/xvda" 2048 "GO $token" >/dev/null
for d in "xvda guest-read-pattern" "xvdb guest-read-image" \
	 "xvdc guest-read-ro"; do
	disk=${d% *}
	l=$(con_line guest1 "GUEST-READ $disk ")
	verdict "${d#* }" "$l" eval '[[ "$l" == *"$disk OK"* ]]'
done
l=$(con_line guest1 GUEST-RO-WRITE)
verdict guest-ro-write-fails "$l" eval '[[ "$l" == *refused* ]]'
l=$(con_line guest1 'GUEST-DISCARD xvda')
verdict discard-off "$l" eval '[[ "$l" == *"max=0" ]]'
l=$(con_line guest1 'GUEST-DISCARD xvdb')
disc=$(stat_val "$MNT/guest1" xvdb discards)
verdict discard-on "$l; tapfs guest1/xvdb.discards=$disc" eval \
	'[[ "$l" == *"nonzero=0" && "$l" != *"max=0 "* ]] && [ "${disc:-0}" -gt 0 ]'

# Live control of xvda while the guest's write+verify loop runs.
writes() { stat_val "$VM1" xvda writes; }
writes_above() { [ "$(writes)" -gt "$1" ]; }
wait_for 30 con_has guest1 'GUEST-LOOP-START' ||
	bad guest-loop "no GUEST-LOOP-START from guest1 within 30 s"
w=$(writes)
wait_for 30 writes_above $((w + 8)) || info "guest writes slow to start"

if r=$(ctl "$VM1" 'pause xvda'); then
	zzz 2
	st=$(stat_val "$VM1" xvda state)
	q=$(stat_val "$VM1" xvda queued)
	w1=$(writes)
	zzz 1
	w2=$(writes)
	verdict pause-holds-io "state=$st queued=$q writes $w1 -> $w2 in 1 s" \
		eval '[ "$st" = paused ] && [ "${q:-0}" -gt 0 ] && [ "$w1" = "$w2" ]'
else
	bad pause-holds-io "pause xvda: $r"
	w2=$(writes)
fi
if r=$(ctl "$VM1" 'resume xvda') && wait_for 20 writes_above "$w2"; then
	ok resume "writes $w2 -> $(writes), state $(stat_val "$VM1" xvda state)"
else
	bad resume "resume xvda: ${r:-no writes after resume}"
fi

zzz 1
w=$(writes)
if r=$(ctl "$VM1" 'snapshot xvda'); then
	l=$(ctl_line "$VM1" xvda)
	verdict snapshot-live "$l" eval \
		'[[ "$l" == *"vhd:$STORE/vm1/xvda.1.vhd -> vhd:$STORE/vm1/xvda.vhd"* ]] &&
		 wait_for 20 writes_above "$w"'
else
	bad snapshot-live "snapshot xvda: $r"
fi
zzz 1
put "$VM1/xvda" 2048 "STOP $token" >/dev/null

# ---- the guest ends ------------------------------------------------------

wait_for 60 con_has guest1 'GUEST-DONE' ||
	bad guest-done "no GUEST-DONE from guest1 within 60 s"
l=$(con_line guest1 GUEST-LOOP-END)
verdict guest-io-clean "$l" eval \
	'[[ "$l" == *" errors=0 "* ]] && ! con_has guest1 GUEST-IOERR &&
	 ! con_has guest1 GUEST-MISMATCH'
ms=$(echo "$l" | sed -n 's/.*max_ms=\([0-9]*\).*/\1/p')
verdict guest-saw-stall "slowest round ${ms:-?} ms; $(con_all guest1 \
	GUEST-STALL)" [ "${ms:-0}" -ge 1500 ]

# gone DOMID: the domain and its backend directory are gone from xenstore.
gone() {
	[[ " $(xenstore-list /local/domain | tr '\n' ' ') " != *" $1 "* ]] &&
	[[ " $(xenstore-list /local/domain/0/backend/vbd 2>/dev/null |
	      tr '\n' ' ') " != *" $1 "* ]]
}
gone1() { gone "$dom1"; }
t=$(up)
verdict guest-poweroff "domain $dom1 gone and its devices removed" \
	wait_for 60 gone1
verdict no-loop-left "losetup -a: '$(loops)'" wait_for 10 no_loops
verdict xenstore-clean "$BE1 and /local/domain/$dom1" eval \
	'be_gone "$dom1" && ! xenstore-exists "/local/domain/$dom1" 2>/dev/null'
verdict format-image-closed "$(ls "$MNT" | tr '\n' ' ')" eval \
	'[ ! -e "$MNT/guest1" ] && [ -n "$(ctl_line "$VM1" xvda)" ]'
fl=$(stat_val "$VM1" xvda flushes)
verdict flush-passthrough "vm1/xvda.flushes=$fl" [ "${fl:-0}" -gt 0 ]

fin=$(sector "$VM1/xvda" 2049)
gsum=$(con_line guest1 GUEST-SUM)
gsum=${gsum#*GUEST-SUM }
dsum=$(dd if="$VM1/xvda" bs=64k skip=32 count=128 2>/dev/null | md5sum |
	awk '{ print $1 }')
verdict readback "sector 2049 '$fin'; md5 2-10 MiB guest $gsum dom0 $dsum" \
	eval '[ "$fin" = "GUEST-FINAL $token" ] && [ -n "$gsum" ] &&
	      [ "$gsum" = "$dsum" ]'
rep=$(sector /images/data.raw 1)
verdict image-readback "/images/data.raw sector 1 '$rep'" \
	[ "$rep" = "GUEST-REPLY $token" ]

l=$(ctl_line "$VM1" xvda)
ch=$(tapfs-img info "$STORE/vm1/xvda.1.vhd" 2>&1 | grep '^chain')
verdict chain "$l; $ch" eval \
	'[[ "$l" == *"xvda.1.vhd -> vhd:$STORE/vm1/xvda.vhd"* ]] &&
	 [[ "$ch" == *"xvda.1.vhd -> $STORE/vm1/xvda.vhd"* ]]'
r=$(ctl_close "$VM1" xvda)
c1=$(tapfs-img check "$STORE/vm1/xvda.1.vhd" 2>&1)
r1=$?
c0=$(tapfs-img check "$STORE/vm1/xvda.vhd" 2>&1)
r0=$?
verdict img-check "close: ${r:-ok}; $c1; $c0" eval \
	'[ -z "$r" ] && [ $r1 -eq 0 ] && [ $r0 -eq 0 ]'


# ---- unmount ---------------------------------------------------------------

pid=$(cat /run/tapfs.pid)
tapfs_gone() { [ ! -d "/proc/$pid" ]; }
if r=$(umount "$MNT" 2>&1) && wait_for 15 tapfs_gone; then
	ok tapfs-umount "daemon $pid exited"
else
	bad tapfs-umount "umount $MNT: $r; loops: $(loops | tr '\n' ' ')"
fi
exit 0
