#!/usr/bin/env bash
# bench.sh - tapfs against the raw file and qemu-storage-daemon, side by side.
#
# Run by `make bench` (after scripts/install-deps.sh bench); installs nothing.
# One 2 GiB raw image, fully allocated, in a temporary directory on the same
# filesystem as the source tree.  The same fio rows run on
#   raw    the image file itself (the physical limit),
#   tapfs  a tapfs raw VBD opened on that image,
#   qsd    qemu-storage-daemon's FUSE export of that image,
# and one table of results and ratios is printed.  Both daemons serve the
# image for the whole run; the rows go row by row, each target in turn (one
# at a time), so a drift in the machine's speed moves a row's columns alike.
# After the performance rows
# a short fio --verify run checks that each target returns what was written
# (qemu-storage-daemon 7.2's FUSE export is known to fail it; see
# docs/performance.md).
#
# Then one table per image format, the same rows on images of the same
# virtual size, created empty (unallocated) for the run:
#   tapfs-FMT  a tapfs VBD "FMT" made by "create FMT FORMAT SIZE" in the store,
#   qsd-DRV    qemu-storage-daemon's FUSE export (driver=DRV) of an image
#              made by qemu-img create -f DRV,
# with the raw file's figures from the first table as the reference.  The
# formats (IMAGE_FORMATS below):
#   vhd    tapfs-vhd    qsd-vpc    dynamic, 2 MiB blocks
#   qcow2  tapfs-qcow2  qsd-qcow2  version 3, 64 KiB clusters, 16-bit refcounts
#   vmdk   tapfs-vmdk   qsd-vmdk   monolithicSparse, 64 KiB grains
#   qcow   tapfs-qcow   qsd-qcow   version 1, 4 KiB clusters
# Each image is created afresh (qemu-storage-daemon restarted on it):
#   1. 4k randwrite QD32 from the first write (no ramp: block allocation
#      is what is measured);
#   2. unallocated reads (reads of zeros; BENCH_ZERO_RUNTIME s each), then
#      1M seqwrite QD8, one pass over the fresh image (allocates every
#      block; stops after BENCH_RUNTIME s), then the read rows on the now
#      fully allocated image (if the pass did not finish: tapfs writes the
#      rest, qsd gets a qemu-img convert -S 0 copy of the raw image);
#   3. the verify check, on a fresh image, over 32 MiB.
# A format's images are deleted when its table is done.
#
# The loop table (last in the default run; BENCH_TABLES=loop alone: about
# 5 min with BENCH_RUNTIME=5 BENCH_RAMP=2, 10 min with the defaults) is the
# path a Xen guest takes: blkback -> /dev/loopN (losetup --direct-io=on) ->
# the FUSE file.  The five rows on a loop device over
#   loop-raw      the image file itself (the limit),
#   loop-tapfs    the tapfs VBD file,
#   loop-uring    the same over FUSE over io_uring: a second tapfs daemon
#                 with -o uring on the same image, the two handing it to
#                 each other (release, resume) before each row (same
#                 rounds, so the two transports compare in one run; only
#                 where the kernel has it: fuse.enable_uring is set to Y
#                 for the table and put back after),
#   loop-qsd      qemu-storage-daemon's FUSE export,
#   loop-nbdfuse  nbdfuse's file, over nbdkit's file plugin (cache=none),
#   loop-null     bench/fuse-null's file: a FUSE daemon that only replies
#                 (the kernel's loop + FUSE ceiling; FUSE_NULL),
#   loop-nullio   bench/fuse-null -o backing=IMAGE: the image served by the
#                 simplest one-thread libaio FUSE daemon (the floor cost of
#                 a daemon doing this I/O: the ceiling for tapfs),
#   loop-nullsync bench/fuse-null -o backing=IMAGE,sync: the same with a
#                 blocking pread/pwrite per request, one at a time (not
#                 in the default targets; at QD1 the shortest way from
#                 request to reply, what the asynchronous path costs),
# then ext4 on the loop devices of raw, tapfs and nbdfuse (mkfs.ext4,
# mount, 4k randread and randwrite QD32 over 4 files, fsck -fn), with the
# ratios tapfs/raw, tapfs/nullio, tapfs/null, tapfs/qsd and tapfs/nbdfuse,
# and each loop
# device's queue settings.
#
# Environment (all optional):
#   BENCH_RUNTIME  seconds per row, after ramp        (default 12)
#   BENCH_RAMP     ramp seconds per row, not counted  (default 3)
#   BENCH_REPS     rounds of the raw and loop tables' rows (default 1):
#                  every row on every target, then again; each figure is
#                  the median of its rounds, and the tapfs/raw ratios get
#                  the range of the rounds' ratios (the image tables and
#                  the ext4 rows run once)
#   BENCH_SIZE     image size, whole MiB: 2G, 512M    (default 2G)
#   BENCH_DIR      directory for the temporary files  (default: ROOT/build)
#   BENCH_ONLY     comma list of targets: raw,tapfs,qsd,nbdfuse,null,nullio,
#                  nullsync,uring (default: all but nullsync; tapfs and qsd
#                  stand for their image-format and loop columns too;
#                  nbdfuse, null, nullio, nullsync and uring are in the
#                  loop table only);
#                  rbd (or ONLY=rbd, "make bench ONLY=rbd"): the rbd table
#                  alone, bench/bench-rbd.sh, on a throw-away Ceph cluster
#   BENCH_TABLES   comma list of tables: raw,vhd,qcow2,vmdk,qcow,loop
#                  (default: all of them); raw is the raw-image table; the
#                  raw file's rows run whenever the raw target does (the
#                  reference); workers: the -o workers=N table alone,
#                  bench/bench-workers.sh (ram and tmpfs VBDs, workers=1
#                  vs 2.., alternated, medians; its BENCH_* in its header)
#   BENCH_ZERO_RUNTIME  seconds per unallocated-read row, 0 skips them
#                                                      (default 4)
#   BENCH_VERIFY   1: run the verify check, 0: skip    (default 1)
#   TAPFS          the daemon binary                   (default: ROOT/build/tapfs)
#   BENCH_TAPFS_OPTS  more -o options for the tapfs daemon, e.g. uring
#                  (FUSE over io_uring; needs fuse.enable_uring=Y)
#   FUSE_NULL      the reply-only daemon       (default: ROOT/build/fuse-null)
#
# Exit status: 0 if every requested target ran (a failed verify is reported
# in the table, not in the exit status), 1 on a setup failure, 2 on usage.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# ---- rbd: a run of its own, bench/bench-rbd.sh (BENCH_ONLY=rbd or ONLY=rbd)
case ",${BENCH_ONLY:-${ONLY:-}}," in
*,rbd,*) exec "$ROOT/bench/bench-rbd.sh" "$@" ;;
esac
# ---- workers: a run of its own, bench/bench-workers.sh (BENCH_TABLES=workers)
case ",${BENCH_TABLES:-}," in
*,workers,*) exec "$ROOT/bench/bench-workers.sh" "$@" ;;
esac
RUNTIME=${BENCH_RUNTIME:-12}
RAMP=${BENCH_RAMP:-3}
REPS=${BENCH_REPS:-1}
SIZE=${BENCH_SIZE:-2G}
ONLY=${BENCH_ONLY:-raw,tapfs,qsd,nbdfuse,null,nullio,uring}
VERIFY=${BENCH_VERIFY:-1}
ZERO_RUNTIME=${BENCH_ZERO_RUNTIME:-4}
TAPFS=${TAPFS:-$ROOT/build/tapfs}
TAPFS_OPTS=${BENCH_TAPFS_OPTS:-}
FUSE_NULL=${FUSE_NULL:-$ROOT/build/fuse-null}
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

# row name | fio rw | bs | iodepth | unit
ROWS=(
	"4k randread QD1|randread|4k|1|iops"
	"4k randread QD32|randread|4k|32|iops"
	"4k randwrite QD32|randwrite|4k|32|iops"
	"1M seqread QD8|read|1M|8|mibs"
	"1M seqwrite QD8|write|1M|8|mibs"
)
# The loop table's ext4 rows (indexes into ROWS), on 4 files filling half
# of a new ext4 on the loop device, laid out before the first row.
EXT4_ROWS=(1 2)
EXT4_FILES=4
# The image-format tables, in this order.  name (the table, and the tapfs
# VBD's name) | tapfs "create" format | qemu-storage-daemon driver (and
# qemu-img -f/-O) | qemu-img -o options | what the images are.
IMAGE_FORMATS=(
	"vhd|vhd|vpc|subformat=dynamic,force_size=on|dynamic, 2 MiB blocks"
	"qcow2|qcow2|qcow2||version 3, 64 KiB clusters, 16-bit refcounts"
	"vmdk|vmdk|vmdk|subformat=monolithicSparse|monolithicSparse, 64 KiB grains"
	"qcow|qcow|qcow||version 1, 4 KiB clusters"
)
declare -A FMT_CREATE FMT_DRIVER FMT_QOPTS FMT_WHAT
FMT_NAMES=()
for f in "${IMAGE_FORMATS[@]}"; do
	IFS='|' read -r n c d o w <<<"$f"
	FMT_NAMES+=("$n")
	FMT_CREATE[$n]=$c FMT_DRIVER[$n]=$d FMT_QOPTS[$n]=$o FMT_WHAT[$n]=$w
done
printf -v TABLE_LIST 'raw,%s' "$(IFS=,; echo "${FMT_NAMES[*]}")"
ALL_TABLES=$TABLE_LIST,loop
TABLES=${BENCH_TABLES:-$ALL_TABLES}
MOUNT_TIMEOUT=20	# seconds to wait for a FUSE mount to go live
STOP_TIMEOUT=30		# seconds to wait for a daemon to exit

die() { echo "bench: $*" >&2; exit 1; }
log() { printf 'bench: [%4ds] %s\n' "$SECONDS" "$*" >&2; }

# ---- arguments and environment -------------------------------------------

case "${1:-}" in
-h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
"") ;;
*) echo "usage: $0 [-h]   (configure with BENCH_* variables)" >&2; exit 2 ;;
esac

for t in ${ONLY//,/ }; do
	case "$t" in
	raw|tapfs|qsd|nbdfuse|null|nullio|nullsync|uring) ;;
	*) echo "bench: BENCH_ONLY: unknown target '$t' (raw,tapfs,qsd,nbdfuse,null,nullio,nullsync,uring)" >&2
	   exit 2 ;;
	esac
done
want() { case ",$ONLY," in *",$1,"*) return 0 ;; esac; return 1; }

[[ "$RUNTIME" =~ ^[1-9][0-9]*$ ]] || { echo "bench: BENCH_RUNTIME: '$RUNTIME' is not a positive integer" >&2; exit 2; }
[[ "$REPS" =~ ^[1-9][0-9]*$ ]] || { echo "bench: BENCH_REPS: '$REPS' is not a positive integer" >&2; exit 2; }
[[ "$RAMP" =~ ^[0-9]+$ ]] || { echo "bench: BENCH_RAMP: '$RAMP' is not an integer" >&2; exit 2; }
[[ "$ZERO_RUNTIME" =~ ^[0-9]+$ ]] || { echo "bench: BENCH_ZERO_RUNTIME: '$ZERO_RUNTIME' is not an integer" >&2; exit 2; }
for v in BENCH_VHD BENCH_QCOW2; do
	if [ -n "${!v+set}" ]; then
		echo "bench: $v is gone: choose the tables with BENCH_TABLES" \
			"($ALL_TABLES)" >&2
		exit 2
	fi
done
table_on() { case ",$TABLES," in *",$1,"*) return 0 ;; esac; return 1; }
for t in ${TABLES//,/ }; do
	case " raw ${FMT_NAMES[*]} loop " in
	*" $t "*) ;;
	*) echo "bench: BENCH_TABLES: unknown table '$t'" \
		"($ALL_TABLES)" >&2
	   exit 2 ;;
	esac
done
RAW_TABLE=0
table_on raw && RAW_TABLE=1
LOOP_TABLE=0
table_on loop && LOOP_TABLE=1
# The daemons serve the raw image for the raw table and the loop table.
IMG_SERVED=0
[ "$RAW_TABLE$LOOP_TABLE" = 00 ] || IMG_SERVED=1
IMG_TABLES=()	# the image formats whose tables run
for n in "${FMT_NAMES[@]}"; do
	table_on "$n" && IMG_TABLES+=("$n")
done

command -v fio >/dev/null || die "fio not found (scripts/install-deps.sh bench)"
"$PY" -c 'import json' 2>/dev/null || die "python3 not found"
if want qsd && ! command -v qemu-storage-daemon >/dev/null; then
	die "qemu-storage-daemon not found (Debian package qemu-system-common)"
fi
if want qsd && [ "${#IMG_TABLES[@]}" -gt 0 ] &&
   ! command -v qemu-img >/dev/null; then
	die "qemu-img not found (Debian package qemu-utils): needed for the qsd columns of the image tables"
fi
if [ "$LOOP_TABLE" = 1 ]; then
	for c in losetup mkfs.ext4 fsck.ext4 mount umount; do
		command -v "$c" >/dev/null ||
			die "$c not found (util-linux, e2fsprogs): needed for the loop table"
	done
	if want nbdfuse; then
		command -v nbdkit >/dev/null ||
			die "nbdkit not found (Debian package nbdkit): needed for the loop-nbdfuse column"
		command -v nbdfuse >/dev/null ||
			die "nbdfuse not found (Debian package libnbd-bin): needed for the loop-nbdfuse column"
	fi
	if { want null || want nullio || want nullsync; } &&
	   [ ! -x "$FUSE_NULL" ]; then
		log "$FUSE_NULL not built: the loop-null, loop-nullio and loop-nullsync columns are skipped (make fuse-null)"
		ONLY=$(echo ",$ONLY," |
			sed 's/,null,/,/; s/,nullio,/,/; s/,nullsync,/,/; s/^,//; s/,$//')
	fi
fi
URING_PARAM=/sys/module/fuse/parameters/enable_uring
if [ "$LOOP_TABLE" = 1 ] && want uring; then
	why=
	if [ ! -w "$URING_PARAM" ]; then
		why="no FUSE over io_uring here (Linux 6.14+, root)"
	elif [ ! -x "$TAPFS" ]; then
		why="$TAPFS not built"
	elif ! want tapfs; then
		why="it takes the image over from the tapfs target, not run"
	elif [[ ",$TAPFS_OPTS," == *,uring,* ]]; then
		why="BENCH_TAPFS_OPTS has uring: loop-tapfs is over io_uring already"
	fi
	if [ -n "$why" ]; then
		log "the loop-uring column is skipped: $why"
		ONLY=$(echo ",$ONLY," | sed 's/,uring,/,/; s/^,//; s/,$//')
	fi
fi
if want tapfs || want qsd || want nbdfuse || want null || want nullio ||
   want nullsync || want uring; then
	[ -e /dev/fuse ] || die "/dev/fuse is missing: FUSE is not available"
	command -v fusermount3 >/dev/null || die "fusermount3 not found (package fuse3)"
fi
if want tapfs && [ ! -x "$TAPFS" ]; then
	log "$TAPFS not built: the tapfs column is skipped (run make first)"
	ONLY=$(echo ",$ONLY," | sed 's/,tapfs,/,/; s/^,//; s/,$//')
	TAPFS_MISSING=1
fi

# ---- cleanup: LIFO, by PID and by path, never by process name ------------

CLEANUP=()
push_cleanup() { CLEANUP+=("$1"); }
# Run and drop the cleanup commands pushed after the first $1 (default 0).
unwind_to() {
	local keep=${1:-0} cmd
	while [ "${#CLEANUP[@]}" -gt "$keep" ]; do
		cmd=${CLEANUP[${#CLEANUP[@]}-1]}
		CLEANUP=("${CLEANUP[@]:0:${#CLEANUP[@]}-1}")
		eval "$cmd" || true
	done
}
FIO_PID=
TRASH_PIDS=()
# Delete a used image in the background: after the 4k randwrite row a
# fresh image's file has one ext4 extent per 4 KiB written (writes into
# holes), and unlinking it takes half a minute on a loaded machine.  The
# unallocated-read rows, which do no disk I/O, run meanwhile; wait_trash
# before the next row that writes.  run_cleanup waits too.
trash() {
	local dst
	[ -e "$1" ] || return 0
	dst=$(mktemp -u "$WORK/trash.XXXXXX")
	mv -- "$1" "$dst" || { rm -f -- "$1"; return; }
	rm -f -- "$dst" &
	TRASH_PIDS+=($!)
}
wait_trash() {
	local p
	for p in "${TRASH_PIDS[@]}"; do
		wait "$p" 2>/dev/null || true
	done
	TRASH_PIDS=()
}

run_cleanup() {
	set +e
	if [ -n "$FIO_PID" ]; then	# interrupted during a run: fio first
		kill -TERM "$FIO_PID" 2>/dev/null
		wait "$FIO_PID" 2>/dev/null
		FIO_PID=
	fi
	wait_trash	# background deletions of used images (by PID)
	unwind_to 0
}
trap run_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Run a command in the background and wait for it, so that a signal to this
# script is handled at once (bash runs traps only between foreground
# commands, and not at all when the child catches the signal itself).
run_wait() {
	local rc=0
	"$@" &
	FIO_PID=$!
	wait "$FIO_PID" || rc=$?
	FIO_PID=
	return "$rc"
}

is_mounted() {
	# Field 5 of mountinfo is the mount point (octal escapes for spaces).
	awk -v m="$1" '$5 == m { found = 1 } END { exit !found }' \
		/proc/self/mountinfo
}

# wait_gone PID SECONDS: true once PID has exited.
wait_gone() {
	local i
	for ((i = 0; i < $2 * 10; i++)); do
		kill -0 "$1" 2>/dev/null || return 0
		sleep 0.1
	done
	! kill -0 "$1" 2>/dev/null
}

# stop_daemon MNT PID HOW: stop a FUSE daemon we started, and reap it.
#   HOW=unmount  unmount MNT; the daemon must then exit by itself (tapfs)
#   HOW=term     SIGTERM; the daemon unmounts and exits (qemu-storage-daemon)
# Escalates to SIGTERM, then SIGKILL, after STOP_TIMEOUT.  Returns the
# daemon's exit status, or 1 if it had to be forced.
stop_daemon() {
	local mnt=$1 pid=$2 how=$3 rc forced=0
	if [ "$how" = term ]; then
		kill -TERM "$pid" 2>/dev/null
	elif is_mounted "$mnt"; then
		fusermount3 -u "$mnt" 2>/dev/null || umount "$mnt" 2>/dev/null ||
			log "cannot unmount $mnt"
	fi
	if ! wait_gone "$pid" "$STOP_TIMEOUT"; then
		forced=1
		log "PID $pid still running ${STOP_TIMEOUT}s after $how: SIGTERM"
		kill -TERM "$pid" 2>/dev/null
		if ! wait_gone "$pid" 5; then
			log "PID $pid ignores SIGTERM: SIGKILL"
			kill -KILL "$pid" 2>/dev/null
		fi
	fi
	wait "$pid" 2>/dev/null
	rc=$?
	if is_mounted "$mnt"; then
		log "$mnt still mounted: lazy unmount"
		fusermount3 -u -z "$mnt" 2>/dev/null || umount -l "$mnt"
	fi
	[ "$forced" = 0 ] || return 1
	return "$rc"
}

# Wait until mnt is a live mount served by pid.
wait_mount() {
	local mnt=$1 pid=$2 what=$3 i
	for ((i = 0; i < MOUNT_TIMEOUT * 10; i++)); do
		is_mounted "$mnt" && return 0
		kill -0 "$pid" 2>/dev/null || { log "$what exited before mounting"; return 1; }
		sleep 0.1
	done
	log "$what: $mnt not mounted after ${MOUNT_TIMEOUT}s"
	return 1
}

# ---- the image -----------------------------------------------------------

base=${BENCH_DIR:-$ROOT/build}
mkdir -p "$base"
WORK=$(mktemp -d "$base/bench.XXXXXX")
push_cleanup "rm -rf -- '$WORK'"
WORK_DEPTH=${#CLEANUP[@]}
cd "$WORK"	# fio may leave state files in its working directory

fstype=$(stat -f -c %T "$WORK")
case "$fstype" in
tmpfs|ramfs) die "$WORK is on $fstype: O_DIRECT needs a real filesystem (set BENCH_DIR)" ;;
fuse*) die "$WORK is on a FUSE filesystem (set BENCH_DIR)" ;;
esac

IMG=$WORK/img.raw
size_bytes=$("$PY" - "$SIZE" <<'EOF'
import re, sys
m = re.fullmatch(r'(\d+)([KMGT]?)(i?B)?', sys.argv[1].strip(), re.I)
if not m:
    sys.exit("bench: BENCH_SIZE: cannot parse '%s'" % sys.argv[1])
n = int(m.group(1)) << (10 * " KMGT".index((m.group(2) or " ").upper()))
if n <= 0 or n % (1 << 20):
    sys.exit("bench: BENCH_SIZE must be a positive multiple of 1 MiB")
print(n)
EOF
) || exit 2

read -r load _ </proc/loadavg
LOAD_START=$load
if awk -v l="$load" 'BEGIN { exit !(l > 0.5) }'; then
	log "warning: load average $load: the machine is not idle, figures will be noisy"
fi
log "image: $IMG ($size_bytes bytes, filesystem $fstype), prefilling"
fio --name=prefill --filename="$IMG" --size="$size_bytes" --rw=write \
	--bs=1M --iodepth=8 --ioengine=libaio --direct=1 --fallocate=none \
	--output=/dev/null ||
	die "prefill of $IMG failed"
alloc=$(( $(stat -c '%b * %B' "$IMG") ))
[ "$alloc" -ge "$size_bytes" ] ||
	die "$IMG is sparse after prefill ($alloc of $size_bytes bytes allocated)"

# ---- fio -----------------------------------------------------------------

RESULTS=$WORK/results.tsv	# target, row index, value, CPU µs per I/O
: >"$RESULTS"

# Print "VALUE CPU_US_PER_IO" from a fio JSON file (VALUE in IOPS or MiB/s).
PARSE_PY='
import sys
from benchreport import fio_result
path, unit, ticks, hz, secs = sys.argv[1:]
r = fio_result(path, unit)
if r is None:
    print("fail -")
    sys.exit()
val, iops = r
# CPU is sampled over the wall time of fio (ms), I/O assumed steady over it.
ios = iops * int(secs) / 1000
cpu = int(ticks) * 1e6 / int(hz) / ios if ios and int(ticks) > 0 else 0
print("%.1f %s" % (val, "%.1f" % cpu if cpu else "-"))
'

# CPU time (user + system) of the processes in the space-separated PID
# list $1 (nbdfuse and its nbdkit), in clock ticks, or 0.
cpu_ticks() {
	local p sum=0 n
	for p in $1; do
		[ -r "/proc/$p/stat" ] || continue
		# utime and stime are fields 14 and 15; comm (field 2) may hold
		# spaces.
		n=$(sed 's/^.*) //' "/proc/$p/stat" | awk '{ print $12 + $13 }')
		sum=$((sum + ${n:-0}))
	done
	echo "$sum"
}

# Per target: the file fio runs on, and the daemon's PID (none for raw).
# BROKEN[t]=1: the target's image could not be (re)made; its rows fail.
# IMGF[t]: the image file of an image-table target.
declare -A FILE PID BROKEN IMGF

# fio's options for the files of target $1: the file or device FILE[$1],
# or, when FILE[$1] is a directory (ext4 on a loop device), EXT4_FILES
# files filling half of the image's size in it.
fio_where() {
	if [ -d "${FILE[$1]}" ]; then
		printf '%s\n' "--directory=${FILE[$1]}" \
			"--nrfiles=$EXT4_FILES" "--size=$((size_bytes / 2))"
	else
		printf '%s\n' "--filename=${FILE[$1]}" "--size=$size_bytes"
	fi
}

# run_row TARGET ROW_INDEX [KEY [RUNTIME RAMP [once]]]: one fio row on one
# target, into $RESULTS under KEY (default ROW_INDEX).  "once": one pass
# over the image, stopped after RUNTIME, instead of time_based.
run_row() {
	local t=$1 i=$2 key=${3:-$2} rt=${4:-$RUNTIME} ramp=${5:-$RAMP}
	local mode=${6:-} row rw bs qd unit out c0 c1 t0 t1 val cpu where
	local tb=--time_based
	IFS='|' read -r row rw bs qd unit <<<"${ROWS[$i]}"
	[ "$mode" = once ] && tb=--loops=1
	out=$WORK/$t.$key.json
	if [ -n "${BROKEN[$t]:-}" ]; then
		printf '%s\t%s\tfail\t-\n' "$t" "$key" >>"$RESULTS"
		return
	fi
	log "$t: $row ($key: ${rt}s, ramp ${ramp}s${mode:+, $mode})"
	c0=$(cpu_ticks "${PID[$t]}")
	t0=$(date +%s%N)
	mapfile -t where < <(fio_where "$t")
	if ! run_wait fio --name=bench "${where[@]}" \
		--ioengine=libaio --direct=1 --rw="$rw" --bs="$bs" \
		--iodepth="$qd" --numjobs=1 "$tb" \
		--runtime="$rt" --ramp_time="$ramp" \
		--norandommap --randrepeat=0 --fallocate=none \
		--output-format=json --output="$out" \
		>/dev/null 2>"$out.err"; then
		log "$t: $row: fio failed: $(tail -n 3 "$out.err" | tr '\n' ' ')"
		printf '%s\t%s\tfail\t-\n' "$t" "$key" >>"$RESULTS"
		return
	fi
	t1=$(date +%s%N)
	c1=$(cpu_ticks "${PID[$t]}")
	if [ "$(((t1 - t0) / 1000000000))" -gt "$((rt + ramp + 5))" ]; then
		log "$t: $row: fio took $(((t1 - t0) / 1000000000)) s for" \
			"$((rt + ramp)) s of runtime (slow start or drain)"
	fi
	# CPU over fio's whole life (ramp included): spread over its wall time.
	read -r val cpu <<<"$(PYTHONPATH="$ROOT/bench" "$PY" -c "$PARSE_PY" \
		"$out" "$unit" "$((c1 - c0))" "$(getconf CLK_TCK)" \
		"$(((t1 - t0) / 1000000))")" ||
		val=fail
	printf '%s\t%s\t%s\t%s\n' "$t" "$key" "${val:-fail}" "${cpu:--}" \
		>>"$RESULTS"
}

# run_verify TARGET [SIZE]: 4k random writes at QD16 with a crc32c header
# in every block over SIZE (default 256M), then a read-back check of every
# block written.
run_verify() {
	local t=$1 vsize=${2:-256M}
	if [ -n "${BROKEN[$t]:-}" ]; then
		printf '%s\tverify\tfail\t-\n' "$t" >>"$RESULTS"
		return
	fi
	log "$t: verify (4k randwrite QD16 over $vsize, crc32c)"
	if run_wait fio --name=verify --filename="${FILE[$t]}" --size="$vsize" \
		--ioengine=libaio --direct=1 --rw=randwrite --bs=4k \
		--iodepth=16 --verify=crc32c --do_verify=1 --verify_fatal=1 \
		--verify_state_save=0 --fallocate=none >"$WORK/$t.verify" 2>&1
	then
		printf '%s\tverify\tok\t-\n' "$t" >>"$RESULTS"
	else
		log "$t: verify FAILED: $(grep -m1 -E 'bad|mismatch|error' \
			"$WORK/$t.verify")"
		printf '%s\tverify\tFAIL\t-\n' "$t" >>"$RESULTS"
	fi
}

# A target that could not be set up gets "fail" in every row.
target_failed() {
	local i
	for i in "${!ROWS[@]}"; do
		printf '%s\t%s\tfail\t-\n' "$1" "$i" >>"$RESULTS"
	done
}

# ---- (a) raw file ----------------------------------------------------------

ACTIVE=()
if want raw; then
	FILE[raw]=$IMG
	PID[raw]=
	ACTIVE+=(raw)
fi

# ---- (b) tapfs ---------------------------------------------------------------

# stop_tapfs MNT PID [LOG]: close every VBD of the group (img, vhd),
# then unmount.
stop_tapfs() {
	local v
	if [ -w "$1/bench/.ctl" ]; then
		awk 'NR > 1 { print $1 }' "$1/bench/.ctl" | while read -r v; do
			echo "close $v" >"$1/bench/.ctl" ||
				log "tapfs: close $v: $(head -n 1 "$1/bench/.ctl")"
		done
	fi
	if ! stop_daemon "$1" "$2" unmount; then
		log "tapfs did not exit cleanly; daemon log:"
		sed 's/^/  /' "${3:-$WORK/tapfs.log}" >&2
	fi
}

TAPFS_UP=0	# the daemon is mounted and has the group "bench"
mnt=$WORK/tapfs.mnt
if want tapfs; then
	mkdir -p "$mnt" "$WORK/store"
	log "tapfs: starting $TAPFS on $mnt${TAPFS_OPTS:+ (-o $TAPFS_OPTS)}"
	# allow_path: the raw image is in WORK, outside the store.
	# In a session of its own: a Ctrl-C of the benchmark reaches fio and
	# this script, and the daemons are stopped in order by the cleanup.
	setsid "$TAPFS" -f -o "store=$WORK/store,allow_path=$WORK${TAPFS_OPTS:+,$TAPFS_OPTS}" "$mnt" 2>"$WORK/tapfs.log" &
	PID[tapfs]=$!
	push_cleanup "stop_tapfs '$mnt' ${PID[tapfs]}"
	if wait_mount "$mnt" "${PID[tapfs]}" tapfs && mkdir "$mnt/bench"; then
		TAPFS_UP=1
	fi
	if [ "$IMG_SERVED" = 0 ]; then
		:
	elif [ "$TAPFS_UP" = 1 ] &&
	     echo "open img raw:$IMG" >"$mnt/bench/.ctl"; then
		FILE[tapfs]=$mnt/bench/img
		[ "$RAW_TABLE" = 0 ] || ACTIVE+=(tapfs)
	else
		if [ -r "$mnt/bench/.ctl" ]; then
			log "tapfs: $(head -n 1 "$mnt/bench/.ctl")"
		fi
		log "tapfs: setup failed; daemon log:"
		sed 's/^/  /' "$WORK/tapfs.log" >&2
		target_failed tapfs
	fi
	if [ "$TAPFS_UP" = 0 ] && [ "${#IMG_TABLES[@]}" -gt 0 ]; then
		[ "$RAW_TABLE" = 1 ] || sed 's/^/  /' "$WORK/tapfs.log" >&2
		TAPFS_IMG_FAILED=1
	fi
fi

# ---- (c) qemu-storage-daemon -------------------------------------------------

# start_qsd TARGET IMAGE DRIVER: qemu-storage-daemon's FUSE export of IMAGE
# through DRIVER onto the regular file WORK/TARGET.export (log:
# WORK/TARGET.log), in FILE[TARGET].  Its stop goes on the cleanup stack,
# QSD_DEPTH[TARGET] deep (stop_qsd).
declare -A QSD_DEPTH
start_qsd() {
	local t=$1 img=$2 drv=$3 qmnt=$WORK/$1.export qlog=$WORK/$1.log
	: >"$qmnt"	# the FUSE export mounts over an existing regular file
	# locking=off: the raw image is open in tapfs too, which holds its
	# write lock (one writer per image); the two never run at once.
	setsid qemu-storage-daemon \
		--blockdev "driver=file,node-name=f,filename=$img,cache.direct=on,aio=native,locking=off" \
		--blockdev "driver=$drv,node-name=d,file=f" \
		--export "type=fuse,id=e,node-name=d,mountpoint=$qmnt,writable=on" \
		2>>"$qlog" &
	PID[$t]=$!
	QSD_DEPTH[$t]=${#CLEANUP[@]}
	push_cleanup "stop_daemon '$qmnt' ${PID[$t]} term || true"
	if ! wait_mount "$qmnt" "${PID[$t]}" "qemu-storage-daemon ($drv)"; then
		log "$t: setup failed; log:"
		sed 's/^/  /' "$qlog" >&2
		return 1
	fi
	FILE[$t]=$qmnt
}

# stop_qsd TARGET: stop the daemon start_qsd started for TARGET, whose
# cleanup entry is the last one on the stack while it runs.
stop_qsd() {
	[ -n "${QSD_DEPTH[$1]:-}" ] || return 0
	unwind_to "${QSD_DEPTH[$1]}"
	QSD_DEPTH[$1]=
	PID[$1]=
}

if want qsd && [ "$IMG_SERVED" = 1 ]; then
	log "qsd: exporting $IMG"
	if start_qsd qsd "$IMG" raw; then
		[ "$RAW_TABLE" = 0 ] || ACTIVE+=(qsd)
	else
		target_failed qsd
	fi
fi

# ---- the rows ----------------------------------------------------------------

# Row by row, every target in turn, so that a drift in the machine's speed
# during the run shifts all columns of a row alike and the ratios hold.
# Only one target does I/O at a time.  Without the raw table, ACTIVE is
# just raw: the reference for the image tables.  BENCH_REPS rounds: each
# round's figure is one more line of the same key in RESULTS.
for ((rep = 1; rep <= REPS; rep++)); do
	[ "$REPS" = 1 ] || log "round $rep of $REPS: ${ACTIVE[*]}"
	for i in "${!ROWS[@]}"; do
		for t in "${ACTIVE[@]}"; do
			run_row "$t" "$i"
		done
	done
done
if [ "$VERIFY" = 1 ] && [ "$RAW_TABLE" = 1 ]; then
	for t in "${ACTIVE[@]}"; do
		run_verify "$t"
	done
fi

# ---- the loop table ------------------------------------------------------------

# The path a Xen guest takes: fio on a loop device (losetup --direct-io=on)
# over each target's file.  The loop devices, the mounts and the daemons
# started here (nbdkit, nbdfuse, fuse-null) go on the cleanup stack above
# LOOP_DEPTH and are undone when the table is done.
LOOP_INFO=$WORK/loops.txt	# a line per loop device: its settings
: >"$LOOP_INFO"
declare -A LOOPDEV

# detach_loop DEV: detach, and wait until the kernel has let go of the
# backing file (a FUSE mount under it cannot be unmounted before).
detach_loop() {
	local i
	losetup -d "$1" || log "losetup -d $1 failed"
	for ((i = 0; i < 100; i++)); do
		[ -e "/sys/block/${1#/dev/}/loop/backing_file" ] || return 0
		sleep 0.1
	done
	log "$1 still attached 10 s after losetup -d"
}

# attach_loop TARGET FILE: a loop device with direct I/O over FILE, as
# FILE[TARGET]; its settings go to LOOP_INFO.
attach_loop() {
	local t=$1 dev q
	if ! dev=$(losetup --direct-io=on --find --show "$2"); then
		log "$t: losetup --direct-io=on $2 failed"
		return 1
	fi
	push_cleanup "detach_loop $dev"
	LOOPDEV[$t]=$dev
	FILE[$t]=$dev
	q=/sys/block/${dev#/dev/}
	printf '%s %s dio=%s scheduler=%s nr_requests=%s max_sectors_kb=%s logical_block_size=%s nr_hw_queues=%s\n' \
		"$t" "$dev" "$(cat "$q/loop/dio")" \
		"$(sed 's/.*\[\(.*\)\].*/\1/' "$q/queue/scheduler")" \
		"$(cat "$q/queue/nr_requests")" \
		"$(cat "$q/queue/max_sectors_kb")" \
		"$(cat "$q/queue/logical_block_size")" \
		"$(ls "$q/mq" 2>/dev/null | wc -l)" >>"$LOOP_INFO"
	[ "$(cat "$q/loop/dio")" = 1 ] ||
		log "$t: warning: $dev is not in direct I/O mode"
}

# start_nbdfuse: nbdkit's file plugin on the raw image (cache=none: it
# cannot open O_DIRECT) on a Unix socket, and nbdfuse exporting it as
# WORK/nbdfuse.mnt/nbd.  Both stopped by PID (nbdfuse by unmounting).
start_nbdfuse() {
	local sock=$WORK/nbd.sock nmnt=$WORK/nbdfuse.mnt pk pf i
	setsid nbdkit -f -U "$sock" file file="$IMG" cache=none \
		2>>"$WORK/nbdkit.log" &
	pk=$!
	push_cleanup "stop_daemon /nonexistent $pk term || true"
	for ((i = 0; i < MOUNT_TIMEOUT * 10; i++)); do
		[ -S "$sock" ] && break
		kill -0 "$pk" 2>/dev/null || break
		sleep 0.1
	done
	[ -S "$sock" ] || { log "nbdkit: no socket"; sed 's/^/  /' "$WORK/nbdkit.log" >&2; return 1; }
	mkdir -p "$nmnt"
	setsid nbdfuse "$nmnt" --unix "$sock" 2>>"$WORK/nbdfuse.log" &
	pf=$!
	push_cleanup "stop_daemon '$nmnt' $pf unmount || true"
	wait_mount "$nmnt" "$pf" nbdfuse ||
		{ sed 's/^/  /' "$WORK/nbdfuse.log" >&2; return 1; }
	PID[nbdfuse]="$pf $pk"
	FILE[nbdfuse]=$nmnt/nbd
}

# start_null TARGET OPTION: bench/fuse-null -o OPTION, its file as
# FILE[TARGET] (null: size=, a file of the image's size that only
# replies; nullio: backing=, the image itself; nullsync: backing=,sync).
start_null() {
	local t=$1 nmnt=$WORK/$1.mnt
	mkdir -p "$nmnt"
	setsid "$FUSE_NULL" -f -o "$2" "$nmnt" 2>>"$WORK/$t.log" &
	PID[$t]=$!
	push_cleanup "stop_daemon '$nmnt' ${PID[$t]} unmount || true"
	wait_mount "$nmnt" "${PID[$t]}" "fuse-null ($t)" ||
		{ sed 's/^/  /' "$WORK/$t.log" >&2; return 1; }
	FILE[$t]=$nmnt/null
}

# start_uring: loop-uring's daemon, tapfs -o uring, its file as
# FILE[uring].  It serves the very image loop-tapfs does (a copy would be
# other blocks of the disk, measured 30 % slower here for 4k writes): its
# VBD opens in standby, and the two daemons hand the image to each other
# before each row (hand_to), as hosts do for a migration.
start_uring() {
	local umnt=$WORK/uring.mnt old
	[ -n "${FILE[tapfs]:-}" ] || { log "uring: the tapfs target failed"; return 1; }
	old=$(cat "$URING_PARAM") || return 1
	echo Y >"$URING_PARAM" || return 1
	push_cleanup "echo '$old' >'$URING_PARAM'"
	mkdir -p "$umnt" "$WORK/store-uring"
	setsid "$TAPFS" -f -o "store=$WORK/store-uring,allow_path=$WORK,uring${TAPFS_OPTS:+,$TAPFS_OPTS}" \
		"$umnt" 2>"$WORK/uring.log" &
	PID[uring]=$!
	push_cleanup "stop_tapfs '$umnt' ${PID[uring]} '$WORK/uring.log'"
	if ! wait_mount "$umnt" "${PID[uring]}" "tapfs -o uring" ||
	   ! mkdir "$umnt/bench" ||
	   ! echo "open img raw:$IMG standby" >"$umnt/bench/.ctl"; then
		[ ! -r "$umnt/bench/.ctl" ] || log "uring: $(head -n 1 "$umnt/bench/.ctl")"
		sed 's/^/  /' "$WORK/uring.log" >&2
		return 1
	fi
	FILE[uring]=$umnt/bench/img
	HOLDER=tapfs
	# Once round: a VBD in standby makes its reads wait (a new loop
	# device's probe among them); a released one reads.
	hand_to uring && hand_to tapfs
}

# hand_to tapfs|uring: that daemon's VBD becomes the image's writer (the
# other releases it: drained, flushed, its lock dropped), unless it is.
HOLDER=
hand_to() {
	local from
	[ -n "$HOLDER" ] && [ "$HOLDER" != "$1" ] || return 0
	from=$HOLDER
	if ! echo "release img" >"${FILE[$from]%/img}/.ctl" ||
	   ! echo "resume img" >"${FILE[$1]%/img}/.ctl"; then
		log "hand-over $from -> $1: $(head -n 1 "${FILE[$from]%/img}/.ctl") / $(head -n 1 "${FILE[$1]%/img}/.ctl")"
		return 1
	fi
	HOLDER=$1
}

# ext4_target SOURCE: mkfs.ext4 on SOURCE's loop device, mounted, with
# the files laid out; FILE[ext4-SOURCE] is the mount point.
ext4_target() {
	local t=ext4-${1#loop-} dev=${LOOPDEV[$1]} emnt=$WORK/ext4-${1#loop-}
	local where
	PID[$t]=${PID[$1]}
	log "$t: mkfs.ext4 on $dev"
	# nodiscard: the image stays allocated; no lazy init in the rows.
	mkfs.ext4 -q -F -E nodiscard,lazy_itable_init=0,lazy_journal_init=0 \
		"$dev" >>"$WORK/$t.log" 2>&1 || return 1
	mkdir -p "$emnt"
	mount -t ext4 "$dev" "$emnt" 2>>"$WORK/$t.log" || return 1
	push_cleanup "umount '$emnt'"
	FILE[$t]=$emnt
	log "$t: laying out $EXT4_FILES files"
	mapfile -t where < <(fio_where "$t")
	run_wait fio --name=bench "${where[@]}" --rw=write --bs=1M \
		--iodepth=8 --ioengine=libaio --direct=1 --fallocate=none \
		--output=/dev/null >>"$WORK/$t.log" 2>&1
}

# ext4_check SOURCE: unmount ext4-SOURCE and fsck -fn its device.
ext4_check() {
	local t=ext4-${1#loop-} v=ok
	if umount "${FILE[$t]}"; then
		# Drop its cleanup entry, the last one (ext4_target).
		CLEANUP=("${CLEANUP[@]:0:${#CLEANUP[@]}-1}")
	else
		v=FAIL
	fi
	if [ "$v" = ok ] &&
	   ! fsck.ext4 -fn "${LOOPDEV[$1]}" >>"$WORK/$t.log" 2>&1; then
		log "$t: fsck.ext4 -fn found errors (log: $t.log)"
		v=FAIL
	fi
	printf '%s\tfsck\t%s\t-\n' "$t" "$v" >>"$RESULTS"
}

LOOP_TARGETS=(raw tapfs uring qsd nbdfuse null nullio nullsync)
EXT4_SOURCES=(loop-raw loop-tapfs loop-nbdfuse)
if [ "$LOOP_TABLE" = 1 ]; then
	LOOP_DEPTH=${#CLEANUP[@]}
	LACTIVE=()
	FILE[raw]=$IMG
	for s in "${LOOP_TARGETS[@]}"; do
		want "$s" || continue
		t=loop-$s
		LACTIVE+=("$t")
		case "$s" in
		nbdfuse) log "nbdfuse: nbdkit file plugin on $IMG"
			 start_nbdfuse || BROKEN[$t]=1 ;;
		null) log "null: $FUSE_NULL"
		      start_null null "size=$size_bytes" || BROKEN[$t]=1 ;;
		nullio) log "nullio: $FUSE_NULL on $IMG"
			start_null nullio "backing=$IMG" || BROKEN[$t]=1 ;;
		nullsync) log "nullsync: $FUSE_NULL -o sync on $IMG"
			  start_null nullsync "backing=$IMG,sync" ||
				BROKEN[$t]=1 ;;
		uring) log "uring: $TAPFS -o uring on $IMG, handed over with tapfs"
		       start_uring || BROKEN[$t]=1 ;;
		esac
		PID[$t]=${PID[$s]:-}
		if [ -z "${BROKEN[$t]:-}" ] && [ -n "${FILE[$s]:-}" ]; then
			attach_loop "$t" "${FILE[$s]}" || BROKEN[$t]=1
		else
			BROKEN[$t]=1
		fi
	done
	for ((rep = 1; rep <= REPS; rep++)); do
		[ "$REPS" = 1 ] || log "loop round $rep of $REPS"
		for i in "${!ROWS[@]}"; do
			for t in "${LACTIVE[@]}"; do
				case $t in
				loop-tapfs|loop-uring)
					hand_to "${t#loop-}" || BROKEN[$t]=1 ;;
				esac
				run_row "$t" "$i" "l$i"
			done
		done
	done
	hand_to tapfs || BROKEN[loop-tapfs]=1
	for t in "${EXT4_SOURCES[@]}"; do
		case " ${LACTIVE[*]} " in *" $t "*) ;; *) continue ;; esac
		e=ext4-${t#loop-}
		if [ -n "${BROKEN[$t]:-}" ]; then
			BROKEN[$e]=1
		elif ! ext4_target "$t"; then
			log "$e: setup failed: $(tail -n 3 "$WORK/$e.log" | tr '\n' ' ')"
			BROKEN[$e]=1
		fi
		for i in "${EXT4_ROWS[@]}"; do
			run_row "$e" "$i" "e$i"
		done
		if [ -z "${BROKEN[$e]:-}" ]; then
			ext4_check "$t"
		else
			printf '%s\tfsck\tfail\t-\n' "$e" >>"$RESULTS"
		fi
	done
	unwind_to "$LOOP_DEPTH"
fi

# ---- the image-format tables --------------------------------------------------

# Targets tapfs-FMT and qsd-FMT for each format FMT of IMAGE_FORMATS.

# close_tapfs_img TARGET: close tapfs-FMT's VBD "FMT" if it is open.
close_tapfs_img() {
	local fmt=${1#tapfs-} ctl=$mnt/bench/.ctl
	awk -v n="$fmt" 'NR > 1 && $1 == n { f = 1 } END { exit !f }' \
		"$ctl" || return 0
	echo "close $fmt" >"$ctl" ||
		{ log "$1: close: $(head -n 1 "$ctl")"; return 1; }
}

# fresh_tapfs_img TARGET: a new, empty VBD "FMT" in the tapfs daemon's
# group, by "create FMT FORMAT SIZE" (image in its store).
fresh_tapfs_img() {
	local fmt=${1#tapfs-} ctl=$mnt/bench/.ctl
	close_tapfs_img "$1" || return 1
	trash "${IMGF[$1]}"
	echo "create $fmt ${FMT_CREATE[$fmt]} $size_bytes" >"$ctl" ||
		{ log "$1: create: $(head -n 1 "$ctl")"; return 1; }
}

# fresh_qsd_img TARGET [RAW]: a new empty image made by qemu-img create, or
# with RAW a fully allocated copy of the raw image RAW (qemu-img convert
# -S 0: every block written), and a qemu-storage-daemon of its own on it.
fresh_qsd_img() {
	local t=$1 fmt=${1#qsd-} how=create drv opts=()
	drv=${FMT_DRIVER[$fmt]}
	[ -z "${FMT_QOPTS[$fmt]}" ] || opts=(-o "${FMT_QOPTS[$fmt]}")
	stop_qsd "$t"
	trash "${IMGF[$t]}"
	[ -z "${2:-}" ] || how=convert
	if ! if [ "$how" = create ]; then
		qemu-img create -q -f "$drv" "${opts[@]}" "${IMGF[$t]}" \
			"$size_bytes"
	else
		# -U: the qsd column's daemon still has the raw image open.
		qemu-img convert -q -U -S 0 -f raw -O "$drv" "${opts[@]}" \
			"$2" "${IMGF[$t]}"
	fi >>"$WORK/$t.log" 2>&1; then
		log "$t: qemu-img $how failed:"
		sed 's/^/  /' "$WORK/$t.log" >&2
		return 1
	fi
	start_qsd "$t" "${IMGF[$t]}" "$drv"
}

# Every target of the table on a new, empty image.
fresh_all() {
	local t
	for t in "${VACTIVE[@]}"; do
		[ -z "${BROKEN[$t]:-}" ] || continue
		case "$t" in
		tapfs-*) fresh_tapfs_img "$t" ;;
		*) fresh_qsd_img "$t" ;;
		esac || BROKEN[$t]=1
	done
}

# After the one-pass seqwrite: every block must be allocated for the read
# rows.  An image holding all blocks is larger than the virtual size (its
# metadata: bitmaps, tables).  If fio stopped early: for tapfs, write the
# rest (from where the seqwrite row, which started at offset 0, stopped);
# for qsd, whose allocating writes run at tens of MiB/s, a copy of the raw
# image made by qemu-img convert.
ensure_allocated() {
	local t=$1 img=${IMGF[$1]} done_mib
	[ -z "${BROKEN[$t]:-}" ] || return 0
	[ "$(stat -c %s "$img")" -lt "$size_bytes" ] || return 0
	if [ "${t#qsd-}" != "$t" ]; then
		log "$t: image not fully allocated by the seqwrite row:" \
			"qemu-img convert of the raw image"
		fresh_qsd_img "$t" "$IMG" || BROKEN[$t]=1
		return 0
	fi
	done_mib=$("$PY" -c '
import json, sys
with open(sys.argv[1]) as f:
    text = f.read()
print(json.loads(text[text.index("{"):])["jobs"][0]["write"]["io_bytes"] >> 20)
' "$WORK/$t.v4.json" 2>/dev/null) || done_mib=0
	[ "$((done_mib << 20))" -lt "$size_bytes" ] || done_mib=0
	log "$t: seqwrite row stopped at $done_mib MiB: prefilling the rest"
	run_wait fio --name=prefill --filename="${FILE[$t]}" \
		--offset="$((done_mib << 20))" \
		--size="$((size_bytes - (done_mib << 20)))" \
		--rw=write --bs=1M --iodepth=8 \
		--ioengine=libaio --direct=1 --fallocate=none \
		--output=/dev/null || { log "$t: prefill failed"; BROKEN[$t]=1; }
	[ "$(stat -c %s "$img")" -ge "$size_bytes" ] ||
		log "$t: warning: $img still smaller than the virtual size"
}

VROWS_ZERO=(0 1 3)	# the read rows, on unallocated images

# The three phases on the targets in VACTIVE (one image format).
run_image_table() {
	local t i
	[ "${#VACTIVE[@]}" -gt 0 ] || return 0
	# 1. fresh: 4k randwrite (no ramp).
	fresh_all
	for t in "${VACTIVE[@]}"; do
		run_row "$t" 2 v2 "$RUNTIME" 0
	done
	# 2. fresh (the old images are deleted in the background, meanwhile):
	# reads of unallocated blocks, which touch no disk, then 1M seqwrite,
	# one pass, then the reads on the image it filled.
	fresh_all
	if [ "$ZERO_RUNTIME" -gt 0 ]; then
		for i in "${VROWS_ZERO[@]}"; do
			for t in "${VACTIVE[@]}"; do
				run_row "$t" "$i" "z$i" "$ZERO_RUNTIME" 1
			done
		done
	fi
	wait_trash
	for t in "${VACTIVE[@]}"; do
		run_row "$t" 4 v4 "$RUNTIME" 0 once
		ensure_allocated "$t"
	done
	for i in 0 1 3; do
		for t in "${VACTIVE[@]}"; do
			run_row "$t" "$i" "v$i"
		done
	done
	# 3. fresh: the data check, with concurrent block allocation.
	if [ "$VERIFY" = 1 ]; then
		fresh_all
		for t in "${VACTIVE[@]}"; do
			run_verify "$t" 32M
		done
	fi
}

for fmt in "${IMG_TABLES[@]}"; do
	VACTIVE=()
	if want tapfs && [ -z "${TAPFS_MISSING:-}" ]; then
		t=tapfs-$fmt
		FILE[$t]=$mnt/bench/$fmt
		PID[$t]=${PID[tapfs]}
		IMGF[$t]=$WORK/store/bench/$fmt.${FMT_CREATE[$fmt]}
		VACTIVE+=("$t")
		[ -z "${TAPFS_IMG_FAILED:-}" ] || BROKEN[$t]=1
	fi
	if want qsd; then
		t=qsd-$fmt
		FILE[$t]=$WORK/$t.export
		IMGF[$t]=$WORK/img.${FMT_DRIVER[$fmt]}
		VACTIVE+=("$t")
	fi
	log "table $fmt: ${VACTIVE[*]}"
	run_image_table
	# The next table's images need the room: this one's go.
	stop_qsd "qsd-$fmt"
	if [ -n "${IMGF[tapfs-$fmt]:-}" ] && [ "$TAPFS_UP" = 1 ]; then
		close_tapfs_img "tapfs-$fmt" || true
	fi
	for t in "${VACTIVE[@]}"; do
		trash "${IMGF[$t]}"
	done
done
read -r LOAD_END _ </proc/loadavg
unwind_to "$WORK_DEPTH"	# stop the daemons now, so their failures show

# ---- the table -------------------------------------------------------------

REPORT_PY='
import os, sys
from benchreport import fmt, merge_rounds, ratio, ratio_range, table
results, runtime, ramp, size, tapfs_missing = sys.argv[1:6]
raw_table, zero_rt, load0, load1 = sys.argv[6:10]
# The image tables run: "FORMAT|QSD DRIVER|WHAT" a line.
img_tables = [l.split("|") for l in sys.argv[10].splitlines() if l]
loop_table, loop_info, ext4_rows, EXT4_FILES = sys.argv[11:15]
ext4_rows = [int(x) for x in ext4_rows.split()]
rows = [r.split("|") for r in sys.argv[15:]]
# Every round of a figure is one line of RESULTS (BENCH_REPS): rounds[t, i]
# has them in the order they ran, res and cpu the merged figure.
rounds, cpu_rounds = {}, {}
with open(results) as f:
    for line in f:
        t, i, v, c = line.rstrip("\n").split("\t")
        rounds.setdefault((t, i), []).append(v)
        cpu_rounds.setdefault((t, i), []).append(c)
res = {k: merge_rounds(v) for k, v in rounds.items()}
cpu = {k: merge_rounds(v) for k, v in cpu_rounds.items()}
reps = max(len(v) for v in rounds.values()) if rounds else 1

def spread(t, r, key):
    """The range of t/r over the rounds of key: the last column of a table
    when BENCH_REPS > 1."""
    return ratio_range(rounds.get((t, key)), rounds.get((r, key)))

def verify_row(label, targets):
    if not any((x, "verify") in res for x in targets):
        return []
    v = [res.get((x, "verify"), "n/a") for x in targets]
    return [[label, v[0], v[1], "", v[2], ""]]

print()
print("fio libaio direct=1, %s s (+%s s ramp) per row, %g GiB fully "
      "allocated raw image" % (runtime, ramp, int(size) / 2**30))
print("load average: %s at start, %s at end" % (load0, load1))
if reps > 1:
    print("raw and loop tables: the median of %d alternated rounds; "
          "\"rounds\": the range of tapfs/raw over the rounds" % reps)
if raw_table == "1":
    print()
    out = []
    for i, (name, rw, bs, qd, unit) in enumerate(rows):
        r, t, q = (res.get((x, str(i))) for x in ("raw", "tapfs", "qsd"))
        out.append([name, fmt(r, unit), fmt(t, unit), ratio(t, r),
                    fmt(q, unit), ratio(q, r)] +
                   ([spread("tapfs", "raw", str(i))] if reps > 1 else []))
    out += [v + [""] * (reps > 1) for v in
            verify_row("verify 4k randwrite QD16", ("raw", "tapfs", "qsd"))]
    table(["row", "raw", "tapfs", "tapfs/raw", "qsd", "qsd/raw"] +
          ["rounds"] * (reps > 1), out)

# Image tables: key, label; the raw reference is the raw row of the same
# index.
vrows = [("v0", 0, ""), ("v1", 1, ""), ("v2", 2, ", fresh"),
         ("v3", 3, ""), ("v4", 4, ", fresh, 1 pass")]
if zero_rt != "0":
    vrows += [("z0", 0, ", unallocated"), ("z1", 1, ", unallocated"),
              ("z3", 3, ", unallocated")]
if img_tables:
    print()
    print("Image tables, %g GiB virtual: \"fresh\": a new, empty image, "
          "measured from the first write (no ramp);" % (int(size) / 2**30))
    print("reads on the image the seqwrite row filled; \"unallocated\": "
          "reads of a new image (zeros), %s s per row; raw: the raw "
          "file row above" % zero_rt)
for name_fmt, drv, what in img_tables:
    tt, qt = "tapfs-" + name_fmt, "qsd-" + name_fmt
    print()
    print("%s: %s" % (name_fmt, what))
    print()
    out = []
    for key, i, suffix in vrows:
        name, rw, bs, qd, unit = rows[i]
        r = res.get(("raw", str(i)))
        t, q = res.get((tt, key)), res.get((qt, key))
        out.append([name + suffix, fmt(r, unit), fmt(t, unit), ratio(t, r),
                    fmt(q, unit), ratio(q, r)])
    out += verify_row("verify 4k randwrite QD16, fresh 32M",
                      ("rawnone", tt, qt))
    for row in out:
        if row[0].startswith("verify"):
            row[1] = ""
    table(["row", "raw", tt, tt + "/raw", "qsd-" + drv,
           "qsd-" + drv + "/raw"], out)

if loop_table == "1":
    L = ("raw", "tapfs", "qsd", "nbdfuse", "null", "nullio")
    # nullsync (not in the default targets) and uring (where the kernel
    # has it): a column only when it ran.
    def ran(x):
        return any(res.get(("loop-" + x, "l%d" % i)) is not None
                   for i in range(len(rows)))
    has_sync, has_uring = ran("nullsync"), ran("uring")
    if has_sync:
        L += ("nullsync",)
    if has_uring:
        L = L[:2] + ("uring",) + L[2:]
    print()
    print("Loop table: fio on /dev/loopN (losetup --direct-io=on) over each "
          "target file; file: fio on the file itself (raw table)")
    print()
    out = []
    for i, (name, rw, bs, qd, unit) in enumerate(rows):
        v = [res.get(("loop-" + x, "l%d" % i)) for x in L]
        out.append([name, fmt(res.get(("raw", str(i))), unit),
                    fmt(res.get(("tapfs", str(i))), unit)] +
                   [fmt(x, unit) for x in v])
    table(["row", "raw file", "tapfs file"] + ["loop-" + x for x in L], out)
    print()
    print("Ratios through the loop device (tapfs/raw: the goal; "
          "tapfs/nullio: tapfs against the simplest daemon doing the same "
          "I/O; null/raw: the loop + FUSE ceiling of the kernel; "
          "tapfs/null: tapfs against that ceiling%s):" %
          ("; uring: tapfs -o uring, its own rounds column" if has_uring
           else ""))
    print()
    out = []
    for i, (name, *_unused) in enumerate(rows):
        v = {x: res.get(("loop-" + x, "l%d" % i)) for x in L}
        t = v["tapfs"]
        out.append([name, ratio(t, v["raw"]), ratio(t, v["nullio"]),
                    ratio(v["nullio"], v["raw"]), ratio(v["null"], v["raw"]),
                    ratio(t, v["null"]), ratio(t, v["qsd"]),
                    ratio(t, v["nbdfuse"])] +
                   [ratio(t, v.get("nullsync"))] * has_sync +
                   ([spread("loop-tapfs", "loop-raw", "l%d" % i)]
                    if reps > 1 else []) +
                   [ratio(v.get("uring"), v["raw"]),
                    ratio(v.get("uring"), v["nullio"])] * has_uring +
                   ([spread("loop-uring", "loop-raw", "l%d" % i)]
                    if reps > 1 and has_uring else []))
    table(["row", "tapfs/raw", "tapfs/nullio", "nullio/raw", "null/raw",
           "tapfs/null", "tapfs/qsd", "tapfs/nbdfuse"] +
          ["tapfs/nullsync"] * has_sync +
          ["rounds"] * (reps > 1) +
          ["uring/raw", "uring/nullio"] * has_uring +
          ["uring rounds"] * (reps > 1 and has_uring), out)
    E = ("raw", "tapfs", "nbdfuse")
    print()
    print("ext4 on the loop device (mkfs.ext4, %s files over half the "
          "image; fsck -fn after):" % EXT4_FILES)
    print()
    out = []
    for i in ext4_rows:
        name, rw, bs, qd, unit = rows[i]
        r, t, n = (res.get(("ext4-" + x, "e%d" % i)) for x in E)
        out.append(["ext4 " + name, fmt(r, unit), fmt(t, unit), ratio(t, r),
                    fmt(n, unit), ratio(t, n)])
    f = [res.get(("ext4-" + x, "fsck"), "n/a") for x in E]
    out.append(["fsck.ext4 -fn", f[0], f[1], "", f[2], ""])
    table(["row", "ext4-raw", "ext4-tapfs", "tapfs/raw", "ext4-nbdfuse",
           "tapfs/nbdfuse"], out)
    print()
    print("loop devices:")
    with open(loop_info) as f:
        for line in f:
            print("  " + line.rstrip())

print()
print("daemon CPU per I/O, user+sys in microseconds (approximate):")
if raw_table == "1":
    for i, (name, *_unused) in enumerate(rows):
        print("  %-33s %-11s %7s   %-9s %7s" % (name, "tapfs",
              cpu.get(("tapfs", str(i)), "n/a"), "qsd",
              cpu.get(("qsd", str(i)), "n/a")))
for name_fmt, drv, what in img_tables:
    for key, i, suffix in vrows:
        print("  %-33s %-11s %7s   %-9s %7s" % (rows[i][0] + suffix,
              "tapfs-" + name_fmt, cpu.get(("tapfs-" + name_fmt, key), "n/a"),
              "qsd-" + drv, cpu.get(("qsd-" + name_fmt, key), "n/a")))
if loop_table == "1":
    for i, (name, *_unused) in enumerate(rows):
        print("  %-33s " % ("loop " + name) + "   ".join(
            "%-12s %6s" % ("loop-" + x, cpu.get(("loop-" + x, "l%d" % i),
                                                "n/a"))
            for x in L[1:]))
    for i in ext4_rows:
        print("  %-33s " % ("ext4 " + rows[i][0]) + "   ".join(
            "%-12s %6s" % ("ext4-" + x, cpu.get(("ext4-" + x, "e%d" % i),
                                                "n/a"))
            for x in ("tapfs", "nbdfuse")))
    print("  (loop-nbdfuse: nbdfuse and nbdkit together)")
if tapfs_missing == "1":
    print("\ntapfs: build/tapfs is not built; column skipped (run make).")
if any(v == "FAIL" for (t, k), v in res.items()
       if k == "verify" and t.startswith("qsd")):
    print("\nqsd: fio --verify failed: its write figures are the throughput "
          "of an export that loses data (docs/performance.md).")
'
img_tables=
for fmt in "${IMG_TABLES[@]}"; do
	img_tables+="$fmt|${FMT_DRIVER[$fmt]}|${FMT_WHAT[$fmt]}"$'\n'
done
PYTHONPATH="$ROOT/bench" "$PY" -c "$REPORT_PY" "$RESULTS" "$RUNTIME" "$RAMP" "$size_bytes" \
	"${TAPFS_MISSING:-0}" "$RAW_TABLE" "$ZERO_RUNTIME" \
	"$LOAD_START" "${LOAD_END:-?}" "$img_tables" \
	"$LOOP_TABLE" "$LOOP_INFO" "${EXT4_ROWS[*]}" "$EXT4_FILES" "${ROWS[@]}"

# A target that was asked for and could not be measured fails the run.
if grep -q "$(printf '\tfail\t')" "$RESULTS"; then
	exit 1
fi
