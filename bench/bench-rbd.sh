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
#
# Environment (all optional):
#   BENCH_RUNTIME   seconds per row, after ramp        (default 10)
#   BENCH_RAMP      ramp seconds per row               (default 2)
#   BENCH_RBD_SIZE  image size for fio's --size        (default 1G)
#   TAPFS           the daemon binary                  (default ROOT/build/tapfs)
#
# Exit status: 0 if every target ran every row, 1 otherwise, 2 on usage.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNTIME=${BENCH_RUNTIME:-10}
RAMP=${BENCH_RAMP:-2}
SIZE=${BENCH_RBD_SIZE:-1G}
TAPFS=${TAPFS:-$ROOT/build/tapfs}
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
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
TARGETS=(fio-rbd tapfs qsd)

log() { printf 'bench-rbd: [%4ds] %s\n' "$SECONDS" "$*" >&2; }
die() { echo "bench-rbd: $*" >&2; exit 1; }

case "${1:-}" in
-h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
"") ;;
*) echo "usage: $0 [-h]   (configure with BENCH_* variables)" >&2; exit 2 ;;
esac
[[ "$RUNTIME" =~ ^[1-9][0-9]*$ ]] || { echo "bench-rbd: BENCH_RUNTIME: '$RUNTIME' is not a positive integer" >&2; exit 2; }
[[ "$RAMP" =~ ^[0-9]+$ ]] || { echo "bench-rbd: BENCH_RAMP: '$RAMP' is not an integer" >&2; exit 2; }
for c in fio rbd qemu-storage-daemon fusermount3; do
	command -v "$c" >/dev/null ||
		die "$c not found (scripts/install-deps.sh bench)"
done
[ -x "$TAPFS" ] || die "$TAPFS not built (run make)"
fio --enghelp=rbd >/dev/null 2>&1 || die "this fio has no rbd engine"

# ---- cleanup: LIFO, by PID and path ------------------------------------------

CLEANUP=()
push_cleanup() { CLEANUP+=("$1"); }
run_cleanup() {
	local i
	set +e
	for ((i = ${#CLEANUP[@]} - 1; i >= 0; i--)); do
		eval "${CLEANUP[$i]}"
	done
	CLEANUP=()
}
trap run_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_gone PID SECONDS: true once PID has exited.
wait_gone() {
	local i
	for ((i = 0; i < $2 * 10; i++)); do
		kill -0 "$1" 2>/dev/null || return 0
		sleep 0.1
	done
	! kill -0 "$1" 2>/dev/null
}
# stop_pid PID: wait for a daemon told to stop; SIGTERM, then SIGKILL.
stop_pid() {
	wait_gone "$1" 20 || kill -TERM "$1" 2>/dev/null
	wait_gone "$1" 5 || kill -KILL "$1" 2>/dev/null
	wait "$1" 2>/dev/null || true
}
is_mounted() {
	awk -v m="$1" '$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo
}
wait_mount() {
	local i
	for ((i = 0; i < 200; i++)); do
		is_mounted "$1" && return 0
		kill -0 "$2" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

WORK=$(mktemp -d /tmp/tapfs-bench-rbd.XXXXXX)
push_cleanup "rm -rf -- '$WORK'"
cd "$WORK"

# ---- the cluster and the image -------------------------------------------------

# Every client (fio, tapfs, qemu) reads this ceph.conf: librbd's cache in
# writeback from the first write for all three, as for a guest that has
# sent its first flush, instead of writethrough until a flush that a fio
# row never sends.
CLIENT_CONF=$'[client]\nrbd_cache_writethrough_until_flush = false'
CEPH_DIR=$(mktemp -d /dev/shm/tapfs-bench-ceph.XXXXXX)
push_cleanup "CEPH_MINI_STOP_GRACE=5 '$ROOT/tests/ceph/stop.sh' '$CEPH_DIR'"
log "starting a one-node Ceph cluster in $CEPH_DIR"
out=$(CEPH_MINI_OSD_SIZE=8G CEPH_MINI_CONF_EXTRA=$CLIENT_CONF \
	"$ROOT/tests/ceph/start.sh" "$CEPH_DIR" \
	2>"$WORK/ceph-start.err") ||
	die "the Ceph cluster did not start: $(tail -n 5 "$WORK/ceph-start.err")"
eval "$out"
rbd create --size "$SIZE" "rbd/$IMAGE" || die "rbd create rbd/$IMAGE failed"
log "filling rbd/$IMAGE ($SIZE) once"
fio --name=fill --ioengine=rbd --clientname=admin --pool=rbd \
	--rbdname="$IMAGE" --rw=write --bs=4M --iodepth=8 --size="$SIZE" \
	--output=/dev/null || die "filling rbd/$IMAGE failed"

read -r LOAD_START _ </proc/loadavg
RESULTS=$WORK/results.tsv
: >"$RESULTS"

# ---- the targets -----------------------------------------------------------------

PARSE_PY='
import json, sys
path, unit = sys.argv[1:]
with open(path) as f:
    text = f.read()
job = json.loads(text[text.index("{"):])["jobs"][0]
if job.get("error"):
    print("fail"); sys.exit()
d = job["read"] if job["read"]["io_bytes"] else job["write"]
print("%.1f" % (d["iops"] if unit == "iops" else d["bw_bytes"] / 2**20))
'

# run_rows TARGET FIO_ARGS...: every row on one target.
run_rows() {
	local t=$1 i row rw bs qd unit out val
	shift
	for i in "${!ROWS[@]}"; do
		IFS='|' read -r row rw bs qd unit <<<"${ROWS[$i]}"
		out=$WORK/$t.$i.json
		log "$t: $row (${RUNTIME}s, ramp ${RAMP}s)"
		if fio --name=bench "$@" --size="$SIZE" --rw="$rw" --bs="$bs" \
			--iodepth="$qd" --numjobs=1 --time_based \
			--runtime="$RUNTIME" --ramp_time="$RAMP" --norandommap \
			--randrepeat=0 --output-format=json --output="$out" \
			>/dev/null 2>"$out.err"; then
			val=$("$PY" -c "$PARSE_PY" "$out" "$unit") || val=fail
		else
			log "$t: $row: fio failed: $(tail -n 2 "$out.err" | tr '\n' ' ')"
			val=fail
		fi
		printf '%s\t%s\t%s\n' "$t" "$i" "$val" >>"$RESULTS"
	done
}

target_failed() {
	local i
	for i in "${!ROWS[@]}"; do
		printf '%s\t%s\tfail\n' "$1" "$i" >>"$RESULTS"
	done
}

bench_fio_rbd() {
	run_rows fio-rbd --ioengine=rbd --clientname=admin --pool=rbd \
		--rbdname="$IMAGE"
}

bench_tapfs() {
	local mnt=$WORK/tapfs pid
	mkdir -p "$mnt" "$WORK/store"
	"$TAPFS" -f -o "store=$WORK/store,ceph_conf=$CEPH_CONF,ceph_id=admin" \
		"$mnt" </dev/null >"$WORK/tapfs.log" 2>&1 &
	pid=$!
	push_cleanup "fusermount3 -u '$mnt' 2>/dev/null; stop_pid $pid"
	if ! wait_mount "$mnt" "$pid" || ! mkdir "$mnt/b" ||
	   ! echo "open v rbd:rbd/$IMAGE" >"$mnt/b/.ctl"; then
		log "tapfs: setup failed: $(head -n 1 "$mnt/b/.ctl" 2>/dev/null) $(tail -n 2 "$WORK/tapfs.log")"
		target_failed tapfs
	else
		run_rows tapfs --filename="$mnt/b/v" --ioengine=libaio --direct=1
		echo "close v" >"$mnt/b/.ctl" || log "tapfs: close failed"
	fi
	fusermount3 -u "$mnt" 2>/dev/null
	stop_pid "$pid"
}

bench_qsd() {
	local file=$WORK/qsd.img pid
	: >"$file"
	qemu-storage-daemon \
		--blockdev "driver=rbd,node-name=r,pool=rbd,image=$IMAGE,conf=$CEPH_CONF,user=admin" \
		--export "type=fuse,id=e,node-name=r,mountpoint=$file,writable=on" \
		</dev/null >"$WORK/qsd.log" 2>&1 &
	pid=$!
	push_cleanup "kill -TERM $pid 2>/dev/null; stop_pid $pid"
	if ! wait_mount "$file" "$pid"; then
		log "qsd: setup failed: $(tail -n 3 "$WORK/qsd.log")"
		target_failed qsd
	else
		run_rows qsd --filename="$file" --ioengine=libaio --direct=1
	fi
	kill -TERM "$pid" 2>/dev/null
	stop_pid "$pid"
}

bench_fio_rbd
bench_tapfs
bench_qsd
read -r LOAD_END _ </proc/loadavg

# ---- the table -----------------------------------------------------------------------

REPORT_PY='
import sys
results, runtime, ramp, size, load0, load1 = sys.argv[1:7]
rows = [r.split("|") for r in sys.argv[7:]]
res = {}
with open(results) as f:
    for line in f:
        t, i, v = line.rstrip("\n").split("\t")
        res[t, int(i)] = v

def fmt(v, unit):
    if v is None or v == "fail":
        return v or "n/a"
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
print("rbd: one image of %s on a one-node Ceph cluster (one bluestore OSD "
      "on tmpfs), %s s (+%s s ramp) per row" % (size, runtime, ramp))
print("load average: %s at start, %s at end" % (load0, load1))
print()
hdr = ["row", "fio-rbd", "tapfs", "tapfs/fio-rbd", "qsd", "qsd/fio-rbd"]
out = [hdr, None]
for i, (name, rw, bs, qd, unit) in enumerate(rows):
    f, t, q = (res.get((x, i)) for x in ("fio-rbd", "tapfs", "qsd"))
    out.append([name, fmt(f, unit), fmt(t, unit), ratio(t, f),
                fmt(q, unit), ratio(q, f)])
w = [max(len(r[c]) for r in out if r) for c in range(len(hdr))]
for r in out:
    if r is None:
        r = ["-" * w[c] for c in range(len(hdr))]
    print("| " + " | ".join(s.ljust(w[c]) if c == 0 else s.rjust(w[c])
                            for c, s in enumerate(r)) + " |")
'
"$PY" -c "$REPORT_PY" "$RESULTS" "$RUNTIME" "$RAMP" "$SIZE" "$LOAD_START" \
	"$LOAD_END" "${ROWS[@]}"

! grep -q "$(printf '\tfail$')" "$RESULTS"
