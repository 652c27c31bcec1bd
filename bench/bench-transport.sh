#!/usr/bin/env bash
# bench-transport.sh - the cost of one FUSE round trip over /dev/fuse and
# over FUSE-over-io_uring, with a daemon that only replies.
#
# Run by `make bench-transport` (as root: mount(2), loop devices, the
# fuse.enable_uring module parameter), or alone.  Three daemons serve one
# file of BENCH_SIZE that reads zeros and acknowledges writes:
#   null      bench/fuse-null: libfuse 3.14, read()/writev() on /dev/fuse,
#             one thread (the loop table's loop-null in bench.sh),
#   dev       bench/fuse-uring-null -o transport=dev: the protocol done by
#             hand, no libfuse, the same read()/writev() on /dev/fuse,
#   uring     bench/fuse-uring-null: the same code over FUSE-over-io_uring
#             (one queue per CPU, BENCH_URING_DEPTH entries each, one
#             thread serving them all, as tapfs's one-thread engine would),
#   uringq    the same with one thread per queue, pinned to the queue's
#             CPU (libfuse 3.18's model),
# so that dev - uring is the transport alone and null - dev is libfuse's
# request handling.  Each row runs fio (libaio, direct=1) on the FUSE file
# itself and on a loop device over it (losetup --direct-io=on: the path
# of a Xen guest's disk), every daemon in turn, BENCH_REPS times round
# (the machine is shared: alternating shows drift in all columns alike),
# and reports medians: IOPS, mean completion latency, the daemon's CPU
# per I/O (utime + stime of its process), fio's (its usr + sys: the
# submitting side, where the kernel queues the request and, on the file,
# completes it) and the host's (every CPU's busy time, niced jobs left
# out: fio, the loop worker and the daemon, and whatever else runs on a
# shared machine: compare it only at a low load average).
#
# fuse.enable_uring is set to Y by fuse-uring-null while it runs (no
# daemon uses it unless its INIT reply asks: libfuse 3.14 never does) and
# put back to its old value when it exits, and again by this script.
# Before the rows, each daemon must read zeros and take a write on its
# file and on its loop device; after them each must exit 0 on unmount,
# and the uring daemon must have served the rows on its ring.
#
# Environment (all optional):
#   BENCH_RUNTIME      seconds per run, after ramp          (default 6)
#   BENCH_RAMP         ramp seconds per run                 (default 1)
#   BENCH_REPS         runs per row and column, alternated  (default 3)
#   BENCH_SIZE         the file's size in bytes             (default 1 GiB)
#   BENCH_URING_DEPTH  ring entries per queue               (default 32)
#   URING_OPTS         more -o options for both uring daemons (taskrun=defer)
#   FUSE_NULL          default ROOT/build/fuse-null
#   FUSE_URING_NULL    default ROOT/build/fuse-uring-null
#
# Exit status: 0 if every run and check passed, 1 otherwise, 2 on usage.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNTIME=${BENCH_RUNTIME:-6}
RAMP=${BENCH_RAMP:-1}
REPS=${BENCH_REPS:-3}
SIZE=${BENCH_SIZE:-1073741824}
DEPTH=${BENCH_URING_DEPTH:-32}
FUSE_NULL=${FUSE_NULL:-$ROOT/build/fuse-null}
FUSE_URING_NULL=${FUSE_URING_NULL:-$ROOT/build/fuse-uring-null}
URING_PARAM=/sys/module/fuse/parameters/enable_uring

# row name | fio rw | bs | iodepth
ROWS=(
	"4k randread QD1|randread|4k|1"
	"4k randread QD32|randread|4k|32"
	"4k randwrite QD32|randwrite|4k|32"
)
DAEMONS=(null dev uring uringq)
PATHS=(file loop)

case "${1:-}" in
-h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
"") ;;
*) echo "usage: $0 [-h]   (configure with BENCH_* variables)" >&2; exit 2 ;;
esac
for v in RUNTIME:"$RUNTIME" REPS:"$REPS" SIZE:"$SIZE" DEPTH:"$DEPTH"; do
	[[ "${v#*:}" =~ ^[1-9][0-9]*$ ]] ||
		{ echo "bench-transport: ${v%%:*}: '${v#*:}' is not a positive integer" >&2; exit 2; }
done
[[ "$RAMP" =~ ^[0-9]+$ ]] || { echo "bench-transport: BENCH_RAMP: '$RAMP' is not an integer" >&2; exit 2; }

. "$ROOT/tests/functional/lib.sh"	# T, on_exit, wait_mounted, loop_attach

log() { printf 'bench-transport: [%4ds] %s\n' "$SECONDS" "$*" >&2; }
die() { echo "bench-transport: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (mount(2), losetup, $URING_PARAM)"
for c in fio losetup fusermount3 "$PYTHON"; do
	command -v "$c" >/dev/null ||
		die "$c not found (scripts/install-deps.sh bench)"
done
[ -x "$FUSE_NULL" ] || die "$FUSE_NULL not built (make fuse-null)"
[ -x "$FUSE_URING_NULL" ] || die "$FUSE_URING_NULL not built (make fuse-uring-null)"
[ -e "$URING_PARAM" ] ||
	die "$URING_PARAM is missing: this kernel has no FUSE-over-io_uring (CONFIG_FUSE_IO_URING, Linux 6.14+)"
URING_OLD=$(cat "$URING_PARAM")
# fuse-uring-null restores it; this covers a daemon that was killed.
on_exit "echo '$URING_OLD' >'$URING_PARAM'"

FAILED=0
declare -A PID FILE LOG

# ---- the daemons -----------------------------------------------------------

start_daemon() {
	local d=$1 mnt=$T/$1.mnt
	mkdir -p "$mnt"
	local cmd
	LOG[$d]=$T/$d.log
	case $d in
	null)	cmd=("$FUSE_NULL" -f -o "size=$SIZE") ;;
	dev)	cmd=("$FUSE_URING_NULL" -o "size=$SIZE,transport=dev") ;;
	uring)	cmd=("$FUSE_URING_NULL" -o "size=$SIZE,depth=$DEPTH${URING_OPTS:+,$URING_OPTS}") ;;
	uringq)	cmd=("$FUSE_URING_NULL" -o "size=$SIZE,depth=$DEPTH,threads=queue${URING_OPTS:+,$URING_OPTS}") ;;
	esac
	# The daemon itself in the background (its PID for the CPU time).
	"${cmd[@]}" "$mnt" </dev/null >"${LOG[$d]}" 2>&1 &
	PID[$d]=$!
	on_exit "_tapfs_reap ${PID[$d]} '$mnt'"
	wait_mounted "$mnt" 10 "${PID[$d]}" ||
		die "$d: not mounted: $(tail -n 3 "${LOG[$d]}")"
	FILE[$d]=$mnt/null
	loop_attach "${FILE[$d]}" >/dev/null || die "$d: losetup failed"
	FILE[$d.loop]=$LOOP_DEV
	log "$d: pid ${PID[$d]}, ${FILE[$d]}, $LOOP_DEV"
}

# check_io D PATH: zeros read back after a write, on the file or device.
check_io() {
	local f=$1
	dd if=/dev/urandom of="$T/block" bs=4096 count=1 status=none &&
	dd if="$T/block" of="$f" bs=4096 count=1 seek=7 oflag=direct \
		conv=notrunc status=none &&
	dd if="$f" of="$T/back" bs=4096 count=2 skip=6 iflag=direct \
		status=none &&
	cmp -s "$T/back" <(head -c 8192 /dev/zero)
}

# stop_daemon D: detach its loop device, unmount; it must exit 0.
stop_daemon() {
	local d=$1 mnt=$T/$1.mnt rc
	losetup -d "${FILE[$d.loop]}" || log "$d: losetup -d failed"
	wait_for 10 bash -c "! losetup '${FILE[$d.loop]}' >/dev/null 2>&1" ||
		log "$d: ${FILE[$d.loop]} still attached"
	_unmount "$mnt" || { log "$d: cannot unmount $mnt"; FAILED=1; return; }
	if ! wait_gone "${PID[$d]}" 10; then
		log "$d: still running 10 s after the unmount"
		FAILED=1
		return
	fi
	wait "${PID[$d]}"
	rc=$?
	[ "$rc" = 0 ] || { log "$d: exit status $rc: $(tail -n 3 "${LOG[$d]}")"; FAILED=1; }
}

# ---- fio ---------------------------------------------------------------------

RESULTS=$T/results.tsv	# daemon, path, row, rep, iops, clat, p99, µs per I/O: daemon, host, fio
: >"$RESULTS"

PARSE_PY='
import os, sys
from benchreport import (fio_result, fio_clat_us, fio_cpu_us,
                         host_busy_ticks, proc_cpu_ticks)
path, p0, p1, h0, h1, ns = sys.argv[1:]
r = fio_result(path, "iops")
if r is None:
    print("fail\t-\t-\t-\t-\t-"); sys.exit()
iops = r[1]
mean, p99 = fio_clat_us(path)
hz = os.sysconf("SC_CLK_TCK")
# CPU over fio whole life (ramp included), I/O at the measured rate.
ios = iops * int(ns) / 1e9
per = lambda t: "%.2f" % (t / hz / ios * 1e6) if ios else "-"
print("%.0f\t%.1f\t%.1f\t%s\t%s\t%.2f" % (iops, mean, p99,
      per(proc_cpu_ticks(p1) - proc_cpu_ticks(p0)),
      per(host_busy_ticks(h1) - host_busy_ticks(h0)), fio_cpu_us(path)))
'

# run D PATH ROW REP
run() {
	local d=$1 p=$2 i=$3 rep=$4 row rw bs qd f out p0 p1 h0 h1 t0 t1 val
	IFS='|' read -r row rw bs qd <<<"${ROWS[$i]}"
	f=${FILE[$d]}
	[ "$p" = loop ] && f=${FILE[$d.loop]}
	out=$T/$d.$p.$i.$rep.json
	log "$d $p: $row (run $rep of $REPS)"
	read -r p0 <"/proc/${PID[$d]}/stat"
	read -r h0 </proc/stat
	t0=$(date +%s%N)
	if fio --name=bench --filename="$f" --size="$SIZE" --ioengine=libaio \
		--direct=1 --rw="$rw" --bs="$bs" --iodepth="$qd" --numjobs=1 \
		--time_based --runtime="$RUNTIME" --ramp_time="$RAMP" \
		--norandommap --randrepeat=0 --output-format=json \
		--output="$out" >/dev/null 2>"$out.err"; then
		t1=$(date +%s%N)
		read -r h1 </proc/stat
		read -r p1 <"/proc/${PID[$d]}/stat"
		val=$(PYTHONPATH="$ROOT/bench" "$PYTHON" -c "$PARSE_PY" "$out" \
			"$p0" "$p1" "$h0" "$h1" "$((t1 - t0))") ||
			val=$'fail\t-\t-\t-\t-\t-'
	else
		log "$d $p: $row: fio failed: $(tail -n 2 "$out.err" | tr '\n' ' ')"
		val=$'fail\t-\t-\t-\t-\t-'
	fi
	[[ "$val" == fail* ]] && FAILED=1
	printf '%s\t%s\t%s\t%s\t%s\n' "$d" "$p" "$i" "$rep" "$val" >>"$RESULTS"
}

# ---- the run -------------------------------------------------------------------

read -r LOAD_START _ </proc/loadavg
log "load average $LOAD_START; kernel $(uname -r); $(nproc) CPUs; enable_uring=$URING_OLD"
for d in "${DAEMONS[@]}"; do
	start_daemon "$d"
	for p in file loop; do
		f=${FILE[$d]}
		[ "$p" = loop ] && f=${FILE[$d.loop]}
		check_io "$f" || die "$d: $p: a write then a read of zeros failed on $f"
	done
done
log "enable_uring is $(cat "$URING_PARAM") while the uring daemon runs"

for ((rep = 1; rep <= REPS; rep++)); do
	for i in "${!ROWS[@]}"; do
		for p in "${PATHS[@]}"; do
			for d in "${DAEMONS[@]}"; do
				run "$d" "$p" "$i" "$rep"
			done
		done
	done
done
read -r LOAD_END _ </proc/loadavg

for d in "${DAEMONS[@]}"; do
	stop_daemon "$d"
done
for d in uring uringq; do
	served=$(sed -n 's/.*served \([0-9]*\) requests on the ring.*/\1/p' "${LOG[$d]}")
	if [ "${served:-0}" -lt 1000 ]; then
		log "$d: served ${served:-no} requests on its ring: $(tail -n 2 "${LOG[$d]}")"
		FAILED=1
	else
		log "$d: $(grep served "${LOG[$d]}")"
	fi
done
[ "$(cat "$URING_PARAM")" = "$URING_OLD" ] ||
	{ log "$URING_PARAM is $(cat "$URING_PARAM"), was $URING_OLD"; FAILED=1; }

# ---- the table -------------------------------------------------------------------

REPORT_PY='
import statistics, sys
from benchreport import fmt, ratio, table
results, runtime, ramp, reps, load0, load1, commit, daemons = sys.argv[1:9]
daemons = daemons.split()
rows = [r.split("|")[0] for r in sys.argv[9:]]
runs = {}
with open(results) as f:
    for line in f:
        d, p, i, rep, *v = line.rstrip("\n").split("\t")
        runs.setdefault((d, p, int(i)), []).append(v)

def med(d, p, i, k):
    xs = [float(v[k]) for v in runs.get((d, p, i), [])
          if v[k] not in ("fail", "-")]
    return statistics.median(xs) if xs else None

def num(x, f="%.1f"):
    return "-" if x is None else f % x

urings = [d for d in daemons if d.startswith("uring")]
print()
print("FUSE round trip: fio libaio direct=1, %s s (+%s s ramp) per run, "
      "medians of %s alternated runs; commit %s" % (runtime, ramp, reps,
                                                     commit))
print("load average: %s at start, %s at end" % (load0, load1))
for p, what in (("file", "the FUSE file"),
                ("loop", "a loop device (--direct-io=on) over it")):
    print()
    print("On %s: IOPS, and mean completion latency in us:" % what)
    print()
    out = []
    for i, name in enumerate(rows):
        out.append([name] + [fmt(med(d, p, i, 0), "iops") for d in daemons] +
                   [ratio(med(u, p, i, 0), med("null", p, i, 0))
                    for u in urings] +
                   [num(med(d, p, i, 1)) for d in daemons])
    table(["row"] + daemons + [u + "/null" for u in urings] +
          ["clat " + d for d in daemons], out)
    print()
    print("On %s: CPU us per I/O of the daemon (utime+stime), of fio "
          "(usr+sys) and of the host (all CPUs busy, nice left out):" % what)
    print()
    out = []
    for i, name in enumerate(rows):
        out.append([name] + [num(med(d, p, i, k), "%.2f")
                             for k in (3, 5, 4) for d in daemons])
    table(["row"] + [w + " " + d for w in ("daemon", "fio", "host")
                     for d in daemons], out)
print()
print("null: fuse-null (libfuse 3.14, /dev/fuse); dev: fuse-uring-null "
      "transport=dev (no libfuse, /dev/fuse); uring: fuse-uring-null over "
      "io_uring, one thread; uringq: one thread per queue")
print("every run (daemon path row: IOPS/clat/p99/cpu-daemon/cpu-host/cpu-fio"
      " per run):")
for (d, p, i), vs in sorted(runs.items()):
    print("  %-6s %-4s %-18s %s" % (d, p, rows[i], "  ".join(
        "/".join(v) for v in vs)))
'
PYTHONPATH="$ROOT/bench" "$PYTHON" -c "$REPORT_PY" "$RESULTS" "$RUNTIME" \
	"$RAMP" "$REPS" "$LOAD_START" "$LOAD_END" \
	"$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
	"${DAEMONS[*]}" "${ROWS[@]}"

exit "$FAILED"
