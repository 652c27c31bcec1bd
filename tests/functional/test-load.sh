#!/bin/bash
# test-load.sh - control commands under load, and unmount while busy.
#
# One mount, one group with three VBDs: a (vhd) and b (qcow2) written by
# back-to-back fio --verify jobs (random writes, mixed block sizes, QD16
# and QD8, libaio, O_DIRECT, crc32c), c (raw) behind a direct-I/O loop
# device holding an ext4 file system that a writer fills with files
# (fsync, rename over the old copy).  While all three run, one controller
# process issues 100 pause/resume cycles (a third of them group-wide) and
# 20 live snapshots (a third group-wide), checking every command's result,
# the status line, and that each paused VBD has nothing in flight.
# Afterwards: every fio job verified, no client error, the expected chain
# lengths, ext4 fsck -fn clean; after a remount the chains still read as
# the last fio jobs wrote (fio --verify_only) and the ext4 files match.
#
# Unmount while busy: with the loop device attached, and with fio holding
# a VBD open (its I/O held by a pause), umount and fusermount3 -u are
# refused (EBUSY) and fio finishes and verifies; then unmount succeeds.
# Lazy unmount (umount -l) while a writer (its I/O held by a pause) and a
# read-only loop device hold VBDs open: the mount is detached at once, a
# .ctl opened before still takes commands, the writer completes, fsck
# reads through the loop device, and the daemon exits with status 0 once
# the loop device is detached; after a remount every byte is there.
# SIGTERM while busy (fio on a qcow2 VBD, a writer on a paused raw VBD,
# .ctl and .stats held open): the daemon resumes and drains what it
# holds, flushes, frees everything and exits with status 0; the write
# queued by the pause is completed and acknowledged, later client I/O
# fails (the mount is gone); after a remount every acknowledged write is
# there and the qcow2 image is clean.
#
# Prints its figures (cycles, snapshots, bytes verified, time) at the end.
. "$(dirname "$0")/lib.sh"
requires_root
requires python3 fio losetup mkfs.ext4 fsck.ext4 sha256sum mount umount \
	fusermount3 cmp qemu-img

M=$T/mnt
S=$T/store
G=$M/g
FS=$T/ext4
MiB=1048576
CYCLES=100
SNAPS=20
# Each qcow2 image of a chain costs the daemon some 28 MiB and a few
# hundred ms to open: a remount with 12-deep chains on a loaded machine
# can take more than the default 10 s.
# shellcheck disable=SC2034	# read by tapfs_start in lib.sh
TAPFS_START_TIMEOUT=60
t0=$SECONDS

# ---- helpers -------------------------------------------------------------

# The programs (tests/pylib): loadctl.py, the control schedule; seqw.py, a
# paced sequential writer; fiojson.py, the fio verify results.

# The fio job on a and b; the seed varies per run.
FIO_MIB=16
FIO_JOB=(--ioengine=libaio --direct=1 --rw=randwrite
	--bssplit=4k/40:16k/30:64k/20:256k/10 "--size=${FIO_MIB}M"
	--verify=crc32c --verify_fatal=1 --verify_state_save=0)

# fio_loop NAME FILE QD: back-to-back fio verify jobs until $T/stop
# exists (at least one); run NAME.i's JSON in $T/NAME.i.json, its exit
# status in $T/NAME.i.rc, the seed of the last run in $T/NAME.seed.
# Stops at the first failed run.
fio_loop() {
	local name=$1 file=$2 qd=$3 i=0 rc
	while [ $i -eq 0 ] || [ ! -e "$T/stop" ]; do
		i=$((i + 1))
		timeout -k 5 120 fio --name="$name" --filename="$file" \
			--iodepth="$qd" --randseed=$((1000 * i + qd)) \
			"${FIO_JOB[@]}" --output-format=json \
			--output="$T/$name.$i.json" >"$T/$name.$i.err" 2>&1 &
		echo $! >"$T/$name.cur"
		wait $!
		rc=$?
		echo $rc >"$T/$name.$i.rc"
		echo $((1000 * i + qd)) >"$T/$name.seed"
		[ $rc -eq 0 ] || break
	done
}

# ext4_loop DIR: write files into DIR until $T/stop exists (at least 8):
# each a slice of $T/src written with fsync to a temporary name and
# renamed over the old file; "N SKIP COUNT" of each file that completed
# is logged to $T/ext4.log (in 64 KiB units of $T/src).
ext4_loop() {
	local dir=$1 i=0 n skip cnt
	while [ $i -lt 8 ] || [ ! -e "$T/stop" ]; do
		i=$((i + 1))
		n=$((i % 24))
		skip=$(((i * 37) % 192))
		cnt=$((1 + (i * 7) % 32))
		if ! dd if="$T/src" of="$dir/f$n.tmp" bs=64k skip=$skip \
			count=$cnt conv=fsync status=none ||
			! mv "$dir/f$n.tmp" "$dir/f$n"; then
			echo "write $i (f$n) failed" >>"$T/ext4.err"
			break
		fi
		echo "$n $skip $cnt" >>"$T/ext4.log"
	done
}

# wait_stat NAME KEY MIN SECONDS: until NAME.KEY >= MIN in $G/.stats.
wait_stat() {
	local end=$((SECONDS + $4)) v
	while :; do
		v=$(stat_val "$G" "$1" "$2")
		[ "${v:-0}" -ge "$3" ] && return 0
		[ $SECONDS -ge $end ] && return 1
		sleep 0.05
	done
}

# daemon_exit WHAT: the daemon (TAPFS_PID) exits by itself, status 0,
# and leaves no mount behind.
daemon_exit() {
	local rc
	if ! wait_gone "$TAPFS_PID" "$TAPFS_STOP_TIMEOUT"; then
		fail "$1: the daemon exits" "pid $TAPFS_PID still there after \
${TAPFS_STOP_TIMEOUT}s"
		return 1
	fi
	wait "$TAPFS_PID"
	rc=$?
	check_eq "$1: the daemon exits with status 0" 0 "$rc" ||
		msg "log: $(tail -n 5 "$TAPFS_LOG")"
	check_not is_mounted "$M"
}

# verify_only NAME FILE SEED QD: replay NAME's last fio job in verify-only
# mode; every byte it wrote must read back.
verify_only() {
	local rc
	timeout -k 5 60 fio --name="$1" --filename="$2" --verify_only \
		--randseed="$3" --iodepth="$4" "${FIO_JOB[@]}" \
		--output-format=json --output="$T/$1.vo.json" \
		>"$T/$1.vo.err" 2>&1
	rc=$?
	if [ $rc -eq 0 ] && grep -q '"error" : 0' "$T/$1.vo.json" &&
		[ "$(read_bytes "$T/$1.vo.json")" -eq $((FIO_MIB * MiB)) ]; then
		ok "$1: fio --verify_only after remount ($FIO_MIB MiB verified)"
	else
		fail "$1: fio --verify_only after remount" "exit $rc; \
$(grep -h -m2 -iE 'verify|bad|err' "$T/$1.vo.err" 2>/dev/null)"
	fi
}

read_bytes() { pylib fiojson get "$1" read.io_bytes 2>/dev/null || echo 0; }

# ---- set up: two fio VBDs, ext4 on a loop device on the third --------------

tapfs_start "$M" "$S" || summary
check mkdir "$G"
ctl_ok "$G" "create a vhd 64M"
ctl_ok "$G" "create b qcow2 64M"
ctl_ok "$G" "create c raw 256M"
loop_attach "$G/c" || summary
LOOP=$LOOP_DEV
check mkfs.ext4 -q -F "$LOOP"
mkdir -p "$FS"
on_exit "! is_mounted '$FS' || umount '$FS'"
check mount -t ext4 "$LOOP" "$FS" || summary
head -c $((16 * MiB)) /dev/urandom >"$T/src"

# ---- load: fio on a and b, ext4 on c; 100 pause/resume, 20 snapshots ------

msg "at $((SECONDS - t0))s: load"

rm -f "$T/stop"
on_exit "touch '$T/stop'"
bg_start fio-a fio_loop a "$G/a" 16
FIO_A=$BG_PID
on_exit "kill \$(cat '$T/a.cur' 2>/dev/null) 2>/dev/null; true"
bg_start fio-b fio_loop b "$G/b" 8
FIO_B=$BG_PID
on_exit "kill \$(cat '$T/b.cur' 2>/dev/null) 2>/dev/null; true"
bg_start ext4 ext4_loop "$FS"
EXT4=$BG_PID
check wait_stat a writes 100 30
check wait_stat b writes 100 30
check wait_stat c writes 10 30

load_t0=$SECONDS
pylib loadctl "$G" $CYCLES $SNAPS a b c >"$T/ctl.out" 2>&1
ctl_rc=$?
load_secs=$((SECONDS - load_t0))
touch "$T/stop"
sed 's/^/    /' "$T/ctl.out"
check_eq "controller: every command succeeded" 0 "$ctl_rc" ||
	grep FAILED "$T/ctl.out" | head -n 5
summ=$(grep '^cycles ' "$T/ctl.out")
read -r _ n_cycles _ n_gcycles _ n_snaps _ n_gsnaps _ _ _ n_held _ \
	<<<"$summ"
check_eq "pause/resume cycles done" $CYCLES "${n_cycles:-0}"
check_eq "live snapshots done" $SNAPS "${n_snaps:-0}"
check test "${n_gcycles:-0}" -gt 0 -a "${n_gsnaps:-0}" -gt 0
alive "after the control load"

bg_wait "$FIO_A" 120
check_eq "fio loop on a ends" 0 "$BG_RC"
bg_wait "$FIO_B" 120
check_eq "fio loop on b ends" 0 "$BG_RC"
bg_wait "$EXT4" 120
check_eq "ext4 writer ends" 0 "$BG_RC"
check_not test -s "$T/ext4.err"

fio_total=0
for v in a b; do
	res=$(pylib fiojson sum "$T/$v".*.json)
	last=${res##*$'\n'}
	read -r _ runs _ nbad _ bytes <<<"$last"
	if [ "${nbad:-1}" -eq 0 ] && [ "${runs:-0}" -gt 0 ]; then
		ok "$v: $runs fio jobs, every one verified ($bytes bytes)"
	else
		fail "$v: fio jobs under load" \
			"$(printf '%s' "$res" | head -n 3)"
	fi
	check_eq "$v: every fio job exited 0" "" \
		"$(grep -Lx 0 "$T/$v".*.rc 2>&1)"
	fio_total=$((fio_total + ${bytes:-0}))
	fio_runs="${fio_runs:+$fio_runs, }$v ${runs:-0}"
done
n_files=$(wc -l <"$T/ext4.log" 2>/dev/null || echo 0)

for v in a b c; do
	check_eq "$v.errors: no client error" 0 "$(stat_val "$G" $v errors)"
	check_eq "$v.state running" running "$(stat_val "$G" $v state)"
	check_eq "$v: nothing in flight or queued" "0 0" \
		"$(stat_val "$G" $v inflight) $(stat_val "$G" $v queued)"
done
for v in a b c; do
	want=$(sed -n 's/^chain .*\b'$v'=\([0-9]*\).*/\1/p' "$T/ctl.out")
	got=$(ctl_line "$G" $v | cut -d' ' -f6- | awk -F' -> ' '{print NF}')
	check_eq "$v: a chain of ${want:-?} images after the snapshots" \
		"${want:-?}" "$got"
done
check_match "b: qcow2 children" "^b running qcow2 .* qcow2:$S/g/b\.[0-9]+\
\.qcow2 -> " "$(ctl_line "$G" b)"
check_match "c: vhd children on the raw image" "^c running vhd .* -> \
aio:$S/g/c\.raw$" "$(ctl_line "$G" c)"

# ---- unmount while busy ----------------------------------------------------

msg "at $((SECONDS - t0))s: unmount while busy"

# The loop device holds c open (ext4 still mounted on it).
r=$(umount "$M" 2>&1)
check_match "umount with a loop device attached: target is busy" "busy" \
	"$r"
r=$(fusermount3 -u "$M" 2>&1)
check_match "fusermount3 -u with a loop device attached: busy" "busy" "$r"
check is_fuse_mounted "$M"
alive "after a refused unmount"
check umount "$FS"
check fsck.ext4 -fn "$LOOP"
check losetup -d "$LOOP"

# fio holds a open, its I/O held by a pause (so that it cannot finish
# first): unmount is refused, and fio carries on and verifies once resumed.
ctl_ok "$G" "pause a"
timeout -k 5 120 fio --name=busy --filename="$G/a" --iodepth=16 \
	--randseed=77 "${FIO_JOB[@]}" --output-format=json \
	--output="$T/busy.json" >"$T/busy.err" 2>&1 &
BUSY=$!
on_exit "! pid_alive $BUSY || kill $BUSY; wait $BUSY 2>/dev/null; true"
check wait_stat a queued 1 30
r=$(umount "$M" 2>&1)
check_match "umount while fio holds a VBD: target is busy" "busy" "$r"
r=$(fusermount3 -u "$M" 2>&1)
check_match "fusermount3 -u while fio holds a VBD: busy" "busy" "$r"
check is_fuse_mounted "$M"
check pid_alive "$BUSY"
ctl_ok "$G" "resume a"
bg_wait "$BUSY" 120
fio_check "fio on a across the refused unmounts" "$T/busy.json" "$BG_RC" &&
	fio_total=$((fio_total + FIO_MIB * MiB))
save_a=$(ctl_line "$G" a)
save_b=$(ctl_line "$G" b)
save_c=$(ctl_line "$G" c)
tapfs_stop

# ---- remount: the chains read as written ---------------------------------

msg "at $((SECONDS - t0))s: remount"

tapfs_start "$M" "$S" || summary
check_eq "a: the same chain after remount" "$save_a" "$(ctl_line "$G" a)"
check_eq "b: the same chain after remount" "$save_b" "$(ctl_line "$G" b)"
check_eq "c: the same chain after remount" "$save_c" "$(ctl_line "$G" c)"
verify_only busy "$G/a" 77 16
verify_only b "$G/b" "$(cat "$T/b.seed")" 8
fio_total=$((fio_total + 2 * FIO_MIB * MiB))

# The ext4 files: the last complete copy of each, read through the chain.
: >"$T/sums"
declare -A last_skip last_cnt
while read -r n skip cnt; do
	last_skip[$n]=$skip
	last_cnt[$n]=$cnt
done <"$T/ext4.log"
for n in "${!last_skip[@]}"; do
	sum=$(dd if="$T/src" bs=64k skip="${last_skip[$n]}" \
		count="${last_cnt[$n]}" status=none | sha256sum)
	echo "${sum%% *}  f$n" >>"$T/sums"
done
LOOP_DEV=$(losetup -r --direct-io=on -f --show "$G/c") || LOOP_DEV=
if [ -n "$LOOP_DEV" ]; then
	on_exit "_loop_detach '$LOOP_DEV' '$G/c'"
	check fsck.ext4 -fn "$LOOP_DEV"
	check mount -t ext4 -o ro "$LOOP_DEV" "$FS"
	check bash -c "cd '$FS' && sha256sum --quiet -c '$T/sums'"
	check_eq "no stray temporary file" "" \
		"$(find "$FS" -name '*.tmp' 2>&1)"
	check umount "$FS"
	check losetup -d "$LOOP_DEV"
else
	fail "losetup -r --direct-io=on $G/c"
fi
# The base and the leaf of b's chain (idle: the leaf is open, so -U reads
# it beside tapfs's write lock; the base is a parent, free to read).
check qemu-img check -q "$S/g/b.qcow2"
check qemu-img check -U -q "$(ctl_line "$G" b | cut -d' ' -f6 | cut -d: -f2)"
if [ -x "$TAPFS_IMG" ]; then
	check "$TAPFS_IMG" check -U "$(ctl_line "$G" a | cut -d' ' -f6 |
		cut -d: -f2)"
fi
# b's 12 qcow2 images would slow down the remounts below.
ctl_close "$G" b

# ---- lazy unmount while a writer and a loop device hold VBDs ---------------

msg "at $((SECONDS - t0))s: lazy unmount"

ctl_ok "$G" "create d raw 32M"
head -c $((8 * MiB)) /dev/urandom >"$T/pat1"
# A .ctl kept open: the only way to reach the group once detached.
exec {ctlfd}>"$G/.ctl"
on_exit "exec $ctlfd>&- 2>/dev/null; true"
ctl_ok "$G" "pause d"
bg_start seqw1 "$PYTHON" -B -E -S "$PYLIB/seqw.py" "$G/d" "$T/pat1" 65536 0.002
W1=$BG_PID
check wait_stat d queued 1 30
LOOP_DEV=$(losetup -r --direct-io=on -f --show "$G/c") || LOOP_DEV=
check test -n "$LOOP_DEV"
on_exit "_loop_detach '$LOOP_DEV' '$G/c'"
check umount -l "$M"
check_not is_mounted "$M"
check pid_alive "$TAPFS_PID"
check pid_alive "$W1"
# The detached mount still serves its open files: resume through the fd.
check bash -c "echo 'resume d' >&$ctlfd"
exec {ctlfd}>&-
bg_wait "$W1" 60
check_eq "writer on the detached mount completes" \
	"0 acked $((8 * MiB)) err none" "$BG_RC $(cat "$T/seqw1.out")"
# The loop device still reads c through the detached mount, and keeps
# the daemon up until it is detached.
check fsck.ext4 -fn "$LOOP_DEV"
check pid_alive "$TAPFS_PID"
check losetup -d "$LOOP_DEV"
daemon_exit "lazy unmount"

tapfs_start "$M" "$S" || summary
check cmp -n $((8 * MiB)) "$T/pat1" "$G/d"

# ---- SIGTERM while busy -----------------------------------------------------

msg "at $((SECONDS - t0))s: SIGTERM while busy"

ctl_ok "$G" "create e qcow2 64M"
head -c $((24 * MiB)) /dev/urandom >"$T/pat2"
timeout -k 5 120 fio --name=term --filename="$G/e" --iodepth=8 \
	--randseed=99 "${FIO_JOB[@]}" --size=64M --output-format=json \
	--output="$T/term.json" >"$T/term.err" 2>&1 &
TERMFIO=$!
on_exit "! pid_alive $TERMFIO || kill $TERMFIO; wait $TERMFIO 2>/dev/null;
	true"
check wait_stat e writes 200 30
# 384 writes: the writer is still going when it is paused.
bg_start seqw2 "$PYTHON" -B -E -S "$PYLIB/seqw.py" "$G/d" "$T/pat2" 65536 0.002
W2=$BG_PID
check wait_stat d writes 20 30
ctl_ok "$G" "pause d"
check wait_stat d queued 1 30
wd=$(stat_val "$G" d writes)
# A monitor holding .stats and .ctl open: no RELEASE will come for them.
exec {statsfd}<"$G/.stats" {ctlfd}>>"$G/.ctl"
on_exit "exec $statsfd<&- $ctlfd>&- 2>/dev/null; true"
kill -TERM "$TAPFS_PID"
daemon_exit "SIGTERM while busy"
exec {statsfd}<&- {ctlfd}>&-
bg_wait "$W2" 30
read -r _ acked _ werr <"$T/seqw2.out"
check_in "writer: later writes fail, the mount being gone" "${werr:-?}" \
	ECONNABORTED ENOTCONN
# The write held by the pause was resumed, completed and acknowledged.
check_eq "writer: the write queued at SIGTERM was acknowledged" \
	$(((wd + 1) * 65536)) "${acked:-0}"
bg_wait "$TERMFIO" 30
check_in "fio on e: stopped by the unmount, not hung" "$BG_RC" 0 1
msg "SIGTERM: the writer had ${acked:-?} bytes acknowledged, then" \
	"'${werr:-?}'; fio on e exited $BG_RC:" \
	"$(grep -m1 -i 'error' "$T/term.err" | cut -c1-100)"

tapfs_start "$M" "$S" || summary
check cmp -n "${acked:-0}" "$T/pat2" "$G/d"
check_match "e: running again" "^e running qcow2 " "$(ctl_line "$G" e)"
check qemu-img check -U -q "$S/g/e.qcow2"	# open, idle
check dd if="$G/e" of=/dev/null bs=1M iflag=direct status=none
alive "at the end"
tapfs_stop

msg "figures: $n_cycles pause/resume cycles ($n_gcycles group-wide)," \
	"$n_snaps snapshots ($n_gsnaps group-wide) in ${load_secs}s of" \
	"load; ${n_held:-0} requests seen held by pauses; fio jobs $fio_runs," \
	"$((fio_total / MiB)) MiB written and verified;" \
	"$n_files ext4 files written; elapsed $((SECONDS - t0))s"
summary
