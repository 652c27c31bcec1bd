#!/usr/bin/env bash
# bench-rbd.sh - tapfs's rbd VBD against fio's own rbd engine and
# qemu-storage-daemon, on one image of a throw-away one-node Ceph cluster.
#
# Run by `BENCH_ONLY=rbd make bench` (bench.sh hands over to it), or alone.
# Starts tests/ceph/start.sh (mon, mgr, one bluestore OSD in /dev/shm),
# makes a BENCH_RBD_SIZE image, fills it once, and runs the same fio rows on
#   fio-rbd  fio --ioengine=rbd on the image (librbd in fio itself: the
#            limit, no FUSE and no daemon),
#   tapfs    a tapfs rbd VBD (open NAME rbd:rbd/bench), fio libaio
#            direct=1 on the VBD file,
#   qsd      qemu-storage-daemon's FUSE export of the image (driver=rbd),
#            fio libaio direct=1 on the export.
# The image's exclusive lock allows one writer at a time, so the targets
# run one after the other (each with all its rows), not interleaved: a
# drift in the machine's speed shows between columns.  librbd's cache is
# on, writeback from the first write, for all three (one ceph.conf).
# One OSD on tmpfs
# on a shared machine: compare the ratios, not the absolute figures.
# A second table gives the host's CPU time per I/O on each path (all
# CPUs, the OSD and librbd included; niced jobs left out): with the OSD
# on the same two vCPUs as the clients, a path that costs more CPU per
# I/O leaves the OSD less, and its ratio follows.
#
# Built on the functional tests' helpers (tests/functional/lib.sh and
# ceph-lib.sh): their cleanup stack stops every daemon by PID and removes
# the cluster and the temp directory, even on failure.
#
# Environment (all optional):
#   BENCH_RUNTIME   seconds per row, after ramp        (default 10)
#   BENCH_RAMP      ramp seconds per row               (default 2)
#   BENCH_RBD_SIZE  image size for fio's --size        (default 1G)
#   TAPFS           the daemon binary                  (default ROOT/build/tapfs)
#
# Exit status: 0 if every target ran every row, 1 otherwise, 2 on usage.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNTIME=${BENCH_RUNTIME:-10}
RAMP=${BENCH_RAMP:-2}
SIZE=${BENCH_RBD_SIZE:-1G}
IMAGE=bench

# row name | fio rw | bs | iodepth | unit
ROWS=(
	"4k randread QD1|randread|4k|1|iops"
	"4k randread QD32|randread|4k|32|iops"
	"4k randwrite QD1|randwrite|4k|1|iops"
	"4k randwrite QD32|randwrite|4k|32|iops"
	"1M seqread QD8|read|1M|8|mibs"
	"1M seqwrite QD8|write|1M|8|mibs"
)

case "${1:-}" in
-h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
"") ;;
*) echo "usage: $0 [-h]   (configure with BENCH_* variables)" >&2; exit 2 ;;
esac
[[ "$RUNTIME" =~ ^[1-9][0-9]*$ ]] || { echo "bench-rbd: BENCH_RUNTIME: '$RUNTIME' is not a positive integer" >&2; exit 2; }
[[ "$RAMP" =~ ^[0-9]+$ ]] || { echo "bench-rbd: BENCH_RAMP: '$RAMP' is not an integer" >&2; exit 2; }

. "$ROOT/tests/functional/lib.sh"	# T (the working directory), cleanup
. "$ROOT/tests/functional/ceph-lib.sh"

log() { printf 'bench-rbd: [%4ds] %s\n' "$SECONDS" "$*" >&2; }
die() { echo "bench-rbd: $*" >&2; exit 1; }

for c in fio rbd qemu-storage-daemon fusermount3 "$PYTHON"; do
	command -v "$c" >/dev/null ||
		die "$c not found (scripts/install-deps.sh bench)"
done
[ -x "$TAPFS" ] || die "$TAPFS not built (run make)"
fio --enghelp=rbd >/dev/null 2>&1 || die "this fio has no rbd engine"

# ---- the cluster and the image -------------------------------------------------

# Every client (fio, tapfs, qemu) reads this ceph.conf: librbd's cache in
# writeback from the first write for all three, as for a guest that has
# sent its first flush, instead of writethrough until a flush that a fio
# row never sends.  (CEPH_TEST_CONF ends in its [client] section.)
CEPH_TEST_CONF+=$'\nrbd_cache_writethrough_until_flush = false'
log "starting a one-node Ceph cluster"
CEPH_MINI_OSD_SIZE=8G ceph_start >&2
rbd create --size "$SIZE" "rbd/$IMAGE" || die "rbd create rbd/$IMAGE failed"
log "filling rbd/$IMAGE ($SIZE) once"
fio --name=fill --ioengine=rbd --clientname=admin --pool=rbd \
	--rbdname="$IMAGE" --rw=write --bs=4M --iodepth=8 --size="$SIZE" \
	--output=/dev/null || die "filling rbd/$IMAGE failed"

read -r LOAD_START _ </proc/loadavg
RESULTS=$T/results.tsv
: >"$RESULTS"

# ---- the targets -----------------------------------------------------------------

# The row's result, then the host's CPU time per I/O in microseconds:
# every CPU's busy time (user, system, irq, softirq, steal: not nice, so
# niced background jobs stay out) over the fio run, ramp included, per
# I/O at the measured rate.  The OSD, librbd, the daemon and fio all
# count: it says what one I/O costs the machine on each path.
PARSE_PY='
import os, sys
from benchreport import fio_result, host_busy_ticks as busy
path, unit, cpu0, cpu1, secs = sys.argv[1:]
r = fio_result(path, unit)
if r is None:
    print("fail\t-"); sys.exit()
val, iops = r
hz = os.sysconf("SC_CLK_TCK")
cpu_s = (busy(cpu1) - busy(cpu0)) / hz
ios = iops * float(secs)
print("%.1f\t%s" % (val, "%.0f" % (cpu_s / ios * 1e6) if ios else "-"))
'

# run_rows TARGET FIO_ARGS...: every row on one target.
run_rows() {
	local t=$1 i row rw bs qd unit out val cpu0 cpu1
	shift
	for i in "${!ROWS[@]}"; do
		IFS='|' read -r row rw bs qd unit <<<"${ROWS[$i]}"
		out=$T/$t.$i.json
		log "$t: $row (${RUNTIME}s, ramp ${RAMP}s)"
		read -r cpu0 </proc/stat
		if fio --name=bench "$@" --size="$SIZE" --rw="$rw" --bs="$bs" \
			--iodepth="$qd" --numjobs=1 --time_based \
			--runtime="$RUNTIME" --ramp_time="$RAMP" --norandommap \
			--randrepeat=0 --output-format=json --output="$out" \
			>/dev/null 2>"$out.err"; then
			read -r cpu1 </proc/stat
			val=$(PYTHONPATH="$ROOT/bench" "$PYTHON" -c "$PARSE_PY" \
			      "$out" "$unit" "$cpu0" \
			      "$cpu1" "$((RUNTIME + RAMP))") ||
				val=$'fail\t-'
		else
			log "$t: $row: fio failed: $(tail -n 2 "$out.err" | tr '\n' ' ')"
			val=$'fail\t-'
		fi
		printf '%s\t%s\t%s\n' "$t" "$i" "$val" >>"$RESULTS"
	done
}

target_failed() {
	local i
	for i in "${!ROWS[@]}"; do
		printf '%s\t%s\tfail\t-\n' "$1" "$i" >>"$RESULTS"
	done
}

bench_fio_rbd() {
	run_rows fio-rbd --ioengine=rbd --clientname=admin --pool=rbd \
		--rbdname="$IMAGE"
}

bench_tapfs() {
	if ! tapfs_start "$T/tapfs" "$T/store" "$CEPH_OPTS" >&2 ||
	   ! mkdir "$T/tapfs/b" ||
	   [ "$(ctl "$T/tapfs/b" "open v rbd:rbd/$IMAGE")" != OK ]; then
		log "tapfs: setup failed: $(ctl_status "$T/tapfs/b") $(tail -n 2 "$TAPFS_LOG")"
		target_failed tapfs
		return
	fi
	run_rows tapfs --filename="$T/tapfs/b/v" --ioengine=libaio --direct=1
	ctl_close "$T/tapfs/b" v >&2
	tapfs_stop >&2 || log "tapfs: did not stop cleanly"
}

bench_qsd() {
	local file=$T/qsd.img
	if ! qsd_export "rbd/$IMAGE" "$file" >&2; then
		log "qsd: setup failed"
		target_failed qsd
	else
		run_rows qsd --filename="$file" --ioengine=libaio --direct=1
	fi
	qsd_stop "$QSD_PID" "$file" >&2 || log "qsd: did not stop cleanly"
}

bench_fio_rbd
bench_tapfs
bench_qsd
read -r LOAD_END _ </proc/loadavg

# ---- the table -----------------------------------------------------------------------

REPORT_PY='
import sys
from benchreport import fmt, ratio, table
results, runtime, ramp, size, load0, load1 = sys.argv[1:7]
rows = [r.split("|") for r in sys.argv[7:]]
res, cpu = {}, {}
with open(results) as f:
    for line in f:
        t, i, v, c = line.rstrip("\n").split("\t")
        res[t, int(i)], cpu[t, int(i)] = v, c

print()
print("rbd: one image of %s on a one-node Ceph cluster (one bluestore OSD "
      "on tmpfs), %s s (+%s s ramp) per row" % (size, runtime, ramp))
print("load average: %s at start, %s at end" % (load0, load1))
print()
hdr = ["row", "fio-rbd", "tapfs", "tapfs/fio-rbd", "qsd", "qsd/fio-rbd"]
out = []
for i, (name, rw, bs, qd, unit) in enumerate(rows):
    f, t, q = (res.get((x, i)) for x in ("fio-rbd", "tapfs", "qsd"))
    out.append([name, fmt(f, unit), fmt(t, unit), ratio(t, f),
                fmt(q, unit), ratio(q, f)])
table(hdr, out)
print()
print("host CPU per I/O, microseconds (every CPU busy, niced jobs left out;"
      " OSD, librbd, daemon and fio together):")
print()
hdr = ["row", "fio-rbd", "tapfs", "tapfs/fio-rbd", "qsd", "qsd/fio-rbd"]
out = []
for i, (name, rw, bs, qd, unit) in enumerate(rows):
    f, t, q = (cpu.get((x, i)) for x in ("fio-rbd", "tapfs", "qsd"))
    out.append([name, f or "-", t or "-", ratio(t, f), q or "-",
                ratio(q, f)])
table(hdr, out)
'
PYTHONPATH="$ROOT/bench" "$PYTHON" -c "$REPORT_PY" "$RESULTS" "$RUNTIME" "$RAMP" "$SIZE" \
	"$LOAD_START" "$LOAD_END" "${ROWS[@]}"

# lib.sh's exit trap removes T and stops the cluster; fail if a row failed.
if grep -q "$(printf '\tfail\t')" "$RESULTS"; then
	exit 1
fi
exit 0
