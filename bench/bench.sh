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
# Environment (all optional):
#   BENCH_RUNTIME  seconds per row, after ramp        (default 12)
#   BENCH_RAMP     ramp seconds per row, not counted  (default 3)
#   BENCH_SIZE     image size, whole MiB: 2G, 512M    (default 2G)
#   BENCH_DIR      directory for the temporary files  (default: ROOT/build)
#   BENCH_ONLY     comma list of targets: raw,tapfs,qsd (default: all three)
#   BENCH_VERIFY   1: run the verify check, 0: skip    (default 1)
#   TAPFS          the daemon binary                   (default: ROOT/build/tapfs)
#
# Exit status: 0 if every requested target ran (a failed verify is reported
# in the table, not in the exit status), 1 on a setup failure, 2 on usage.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNTIME=${BENCH_RUNTIME:-12}
RAMP=${BENCH_RAMP:-3}
SIZE=${BENCH_SIZE:-2G}
ONLY=${BENCH_ONLY:-raw,tapfs,qsd}
VERIFY=${BENCH_VERIFY:-1}
TAPFS=${TAPFS:-$ROOT/build/tapfs}
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
MOUNT_TIMEOUT=20	# seconds to wait for a FUSE mount to go live
STOP_TIMEOUT=30		# seconds to wait for a daemon to exit

die() { echo "bench: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }

# ---- arguments and environment -------------------------------------------

case "${1:-}" in
-h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
"") ;;
*) echo "usage: $0 [-h]   (configure with BENCH_* variables)" >&2; exit 2 ;;
esac

for t in ${ONLY//,/ }; do
	case "$t" in
	raw|tapfs|qsd) ;;
	*) echo "bench: BENCH_ONLY: unknown target '$t' (raw,tapfs,qsd)" >&2
	   exit 2 ;;
	esac
done
want() { case ",$ONLY," in *",$1,"*) return 0 ;; esac; return 1; }

[[ "$RUNTIME" =~ ^[1-9][0-9]*$ ]] || { echo "bench: BENCH_RUNTIME: '$RUNTIME' is not a positive integer" >&2; exit 2; }
[[ "$RAMP" =~ ^[0-9]+$ ]] || { echo "bench: BENCH_RAMP: '$RAMP' is not an integer" >&2; exit 2; }

command -v fio >/dev/null || die "fio not found (scripts/install-deps.sh bench)"
"$PY" -c 'import json' 2>/dev/null || die "python3 not found"
if want qsd && ! command -v qemu-storage-daemon >/dev/null; then
	die "qemu-storage-daemon not found (Debian package qemu-system-common)"
fi
if want tapfs || want qsd; then
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
run_cleanup() {
	set +e
	if [ -n "$FIO_PID" ]; then	# interrupted during a run: fio first
		kill -TERM "$FIO_PID" 2>/dev/null
		wait "$FIO_PID" 2>/dev/null
		FIO_PID=
	fi
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
import json, sys
path, unit, ticks, hz, secs = sys.argv[1:]
with open(path) as f:
    text = f.read()
job = json.loads(text[text.index("{"):])["jobs"][0]
if job.get("error"):
    print("fail -")
    sys.exit()
d = job["read"] if job["read"]["io_bytes"] else job["write"]
val = d["iops"] if unit == "iops" else d["bw_bytes"] / 2**20
# CPU is sampled over ramp + runtime; I/O is assumed steady over both.
ios = d["iops"] * int(secs)
cpu = int(ticks) * 1e6 / int(hz) / ios if ios and int(ticks) > 0 else 0
print("%.1f %s" % (val, "%.1f" % cpu if cpu else "-"))
'

# CPU time (user + system) of a process in clock ticks, or 0.
cpu_ticks() {
	if [ -z "$1" ] || [ ! -r "/proc/$1/stat" ]; then
		echo 0
		return
	fi
	# utime and stime are fields 14 and 15; comm (field 2) may hold spaces.
	sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

# Per target: the file fio runs on, and the daemon's PID (none for raw).
declare -A FILE PID

# run_row TARGET ROW_INDEX: one fio row on one target, into $RESULTS.
run_row() {
	local t=$1 i=$2 row rw bs qd unit out c0 c1 val cpu
	IFS='|' read -r row rw bs qd unit <<<"${ROWS[$i]}"
	out=$WORK/$t.$i.json
	log "$t: $row"
	c0=$(cpu_ticks "${PID[$t]}")
	if ! run_wait fio --name=bench --filename="${FILE[$t]}" \
		--size="$size_bytes" \
		--ioengine=libaio --direct=1 --rw="$rw" --bs="$bs" \
		--iodepth="$qd" --numjobs=1 --time_based \
		--runtime="$RUNTIME" --ramp_time="$RAMP" \
		--norandommap --randrepeat=0 --fallocate=none \
		--output-format=json --output="$out" \
		>/dev/null 2>"$out.err"; then
		log "$t: $row: fio failed: $(tail -n 3 "$out.err" | tr '\n' ' ')"
		printf '%s\t%s\tfail\t-\n' "$t" "$i" >>"$RESULTS"
		return
	fi
	c1=$(cpu_ticks "${PID[$t]}")
	read -r val cpu <<<"$("$PY" -c "$PARSE_PY" "$out" "$unit" \
		"$((c1 - c0))" "$(getconf CLK_TCK)" "$((RUNTIME + RAMP))")" ||
		val=fail
	printf '%s\t%s\t%s\t%s\n' "$t" "$i" "${val:-fail}" "${cpu:--}" \
		>>"$RESULTS"
}

# run_verify TARGET: 4k random writes at QD16 with a crc32c header in every
# block, then a read-back check of every block written.
run_verify() {
	local t=$1
	log "$t: verify (4k randwrite QD16, crc32c)"
	if run_wait fio --name=verify --filename="${FILE[$t]}" --size=256M \
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

stop_tapfs() {
	if [ -w "$1/bench/.ctl" ] && ! echo "close img" >"$1/bench/.ctl"; then
		log "tapfs: close: $(head -n 1 "$1/bench/.ctl")"
	fi
	if ! stop_daemon "$1" "$2" unmount; then
		log "tapfs did not exit cleanly; daemon log:"
		sed 's/^/  /' "$WORK/tapfs.log" >&2
	fi
}

if want tapfs; then
	mnt=$WORK/tapfs.mnt
	mkdir -p "$mnt" "$WORK/store"
	log "tapfs: starting $TAPFS on $mnt"
	# In a session of its own: a Ctrl-C of the benchmark reaches fio and
	# this script, and the daemons are stopped in order by the cleanup.
	setsid "$TAPFS" -f -o "store=$WORK/store" "$mnt" 2>"$WORK/tapfs.log" &
	PID[tapfs]=$!
	push_cleanup "stop_tapfs '$mnt' ${PID[tapfs]}"
	if wait_mount "$mnt" "${PID[tapfs]}" tapfs &&
	   mkdir "$mnt/bench" &&
	   echo "open img raw:$IMG" >"$mnt/bench/.ctl"; then
		FILE[tapfs]=$mnt/bench/img
		ACTIVE+=(tapfs)
	else
		if [ -r "$mnt/bench/.ctl" ]; then
			log "tapfs: $(head -n 1 "$mnt/bench/.ctl")"
		fi
		log "tapfs: setup failed; daemon log:"
		sed 's/^/  /' "$WORK/tapfs.log" >&2
		target_failed tapfs
	fi
fi

# ---- (c) qemu-storage-daemon -------------------------------------------------

if want qsd; then
	qmnt=$WORK/qsd.export
	: >"$qmnt"	# the FUSE export mounts over an existing regular file
	log "qsd: exporting $IMG on $qmnt"
	setsid qemu-storage-daemon \
		--blockdev "driver=file,node-name=f,filename=$IMG,cache.direct=on,aio=native" \
		--blockdev driver=raw,node-name=r,file=f \
		--export "type=fuse,id=e,node-name=r,mountpoint=$qmnt,writable=on" \
		2>"$WORK/qsd.log" &
	PID[qsd]=$!
	push_cleanup "stop_daemon '$qmnt' ${PID[qsd]} term || true"
	if wait_mount "$qmnt" "${PID[qsd]}" qemu-storage-daemon; then
		FILE[qsd]=$qmnt
		ACTIVE+=(qsd)
	else
		log "qsd: setup failed; log:"
		sed 's/^/  /' "$WORK/qsd.log" >&2
		target_failed qsd
	fi
fi

# ---- the rows ----------------------------------------------------------------

# Row by row, every target in turn, so that a drift in the machine's speed
# during the run shifts all columns of a row alike and the ratios hold.
# Only one target does I/O at a time.
for i in "${!ROWS[@]}"; do
	for t in "${ACTIVE[@]}"; do
		run_row "$t" "$i"
	done
done
if [ "$VERIFY" = 1 ]; then
	for t in "${ACTIVE[@]}"; do
		run_verify "$t"
	done
fi
unwind_to "$WORK_DEPTH"	# stop the daemons now, so their failures show

# ---- the table -------------------------------------------------------------

REPORT_PY='
import sys
results, runtime, ramp, size, tapfs_missing = sys.argv[1:6]
rows = [r.split("|") for r in sys.argv[6:]]
res, cpu = {}, {}
with open(results) as f:
    for line in f:
        t, i, v, c = line.rstrip("\n").split("\t")
        res[t, i], cpu[t, i] = v, c

def fmt(v, unit):
    if v is None:
        return "n/a"
    if v == "fail":
        return "fail"
    v = float(v)
    if unit == "mibs":
        return "%.0f MiB/s" % v
    return "%.1fk" % (v / 1000) if v >= 1000 else "%.0f" % v

def ratio(v, r):
    try:
        return "%.2f" % (float(v) / float(r))
    except (TypeError, ValueError, ZeroDivisionError):
        return "-"

print()
print("fio libaio direct=1, %s s (+%s s ramp) per row, %g GiB fully "
      "allocated raw image" % (runtime, ramp, int(size) / 2**30))
print()
hdr = ["row", "raw", "tapfs", "tapfs/raw", "qsd", "qsd/raw"]
out = [hdr, ["---"] * len(hdr)]
for i, (name, rw, bs, qd, unit) in enumerate(rows):
    r, t, q = (res.get((x, str(i))) for x in ("raw", "tapfs", "qsd"))
    out.append([name, fmt(r, unit), fmt(t, unit), ratio(t, r),
                fmt(q, unit), ratio(q, r)])
if any(k[1] == "verify" for k in res):
    v = [res.get((x, "verify"), "n/a") for x in ("raw", "tapfs", "qsd")]
    out.append(["verify 4k randwrite QD16", v[0], v[1], "", v[2], ""])
w = [max(len(row[c]) for row in out) for c in range(len(hdr))]
for row in out:
    if row[0] == "---":
        row = ["-" * w[c] for c in range(len(hdr))]
    print("| " + " | ".join(s.ljust(w[c]) if c == 0 else s.rjust(w[c])
                            for c, s in enumerate(row)) + " |")
print()
print("daemon CPU per I/O, user+sys in microseconds (approximate):")
for i, (name, *_unused) in enumerate(rows):
    print("  %-18s tapfs %7s   qsd %7s" % (name,
          cpu.get(("tapfs", str(i)), "n/a"), cpu.get(("qsd", str(i)), "n/a")))
if tapfs_missing == "1":
    print("\ntapfs: build/tapfs is not built; column skipped (run make).")
if res.get(("qsd", "verify")) == "FAIL":
    print("\nqsd: fio --verify failed: its write figures are the throughput "
          "of an export that loses data (docs/performance.md).")
'
"$PY" -c "$REPORT_PY" "$RESULTS" "$RUNTIME" "$RAMP" "$size_bytes" \
	"${TAPFS_MISSING:-0}" "${ROWS[@]}"

# A target that was asked for and could not be measured fails the run.
if grep -q "$(printf '\tfail\t')" "$RESULTS"; then
	exit 1
fi
