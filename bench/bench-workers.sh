#!/usr/bin/env bash
# bench-workers.sh - tapfs -o workers=N: does a second event loop help?
#
# Run by "make bench BENCH_TABLES=workers" (bench.sh hands over), or
# directly.  Storage that costs no time of its own, so that only the
# daemon's CPU and the FUSE hop are measured:
#   ram  VBDs of the ram driver ("open vN ram:SIZE"),
#   shm  raw images on /dev/shm (tmpfs, O_DIRECT), through the aio driver
#        and its libaio context, filled once so reads find data,
# with 1 VBD (alone in the mount) and with BENCH_NVBD VBDs (one fio job
# per VBD, one fio process, group_reporting), 4k randread and randwrite at
# QD32 (libaio, direct=1), for each of BENCH_WORKERS (default: 1, 2, ...
# the CPUs).  VBDs go round the loops from loop 1, so with workers=2 the
# first VBD is loop 1's and the second loop 0's.
#
# The machine may be shared: the worker counts alternate, BENCH_REPS
# rounds of "mount with workers=1, every row, unmount; workers=2, ...",
# and the medians are reported, with the load average seen before each
# row (its range) and the daemon's CPU per I/O ((utime + stime) of the
# daemon over the run, divided by the I/Os fio did).
#
# Environment (all optional):
#   BENCH_WORKERS  worker counts              (default: 1 .. nproc)
#   BENCH_REPS     rounds                     (default 3)
#   BENCH_RUNTIME  seconds per row after ramp (default 8)
#   BENCH_RAMP     ramp seconds               (default 2)
#   BENCH_NVBD     the multi-VBD count        (default 2)
#   BENCH_VSIZE    each VBD's size            (default 512M)
#   BENCH_BACKING  ram,shm                    (default both)
#   TAPFS          the daemon     (default: ROOT/build/tapfs)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TAPFS=${TAPFS:-$ROOT/build/tapfs}
NCPU=$(nproc)
WORKERS=${BENCH_WORKERS:-$(seq -s ' ' 1 "$NCPU")}
REPEAT=${BENCH_REPS:-3}
RUNTIME=${BENCH_RUNTIME:-8}
RAMP=${BENCH_RAMP:-2}
NVBD=${BENCH_NVBD:-2}
VSIZE=${BENCH_VSIZE:-512M}
BACKING=${BENCH_BACKING:-ram,shm}
PY=${PYTHON:-python3}

die() { echo "bench-workers: $*" >&2; exit 1; }
[ -z "${BENCH_REPEAT+set}" ] ||
	{ echo "bench-workers: BENCH_REPEAT is now BENCH_REPS" >&2; exit 2; }
log() { printf 'bench-workers: [%4ds] %s\n' "$SECONDS" "$*" >&2; }

[ -x "$TAPFS" ] || die "no daemon at $TAPFS (make first)"
command -v fio >/dev/null || die "fio is missing (scripts/install-deps.sh bench)"
[ "$(id -u)" = 0 ] || die "FUSE mounts need root here"

WORK=$(mktemp -d /dev/shm/tapfs-bench-workers.XXXXXX)
MNT=$WORK/mnt
RESULTS=$WORK/results.tsv
DPID=
cleanup() {
	if [ -n "$DPID" ]; then
		fusermount3 -u "$MNT" 2>/dev/null || true
		wait "$DPID" 2>/dev/null || true
	fi
	rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$MNT"

# ticks PID: utime + stime of PID in clock ticks (comm may hold spaces).
ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }

# mount_tapfs W: a daemon with W loops, a store on /dev/shm.
mount_tapfs() {
	"$TAPFS" -f -o "store=$WORK/store,workers=$1" "$MNT" \
		>"$WORK/tapfs.log" 2>&1 &
	DPID=$!
	for _ in $(seq 100); do
		grep -qs " $MNT fuse" /proc/mounts && return 0
		sleep 0.1
	done
	die "tapfs did not mount: $(tail -n 3 "$WORK/tapfs.log")"
}

umount_tapfs() {
	fusermount3 -u "$MNT"
	wait "$DPID" || die "tapfs exited with $?"
	DPID=
	rm -rf "$WORK/store"
}

# make_vbds BACKING FROM TO: VBDs vFROM..vTO in group BACKING.
make_vbds() {
	local b=$1 i
	mkdir -p "$MNT/$b"
	for i in $(seq "$2" "$3"); do
		if [ "$b" = ram ]; then
			echo "open v$i ram:$VSIZE" >"$MNT/$b/.ctl"
		else
			echo "create v$i raw $VSIZE" >"$MNT/$b/.ctl"
		fi
		# Written once: reads find data (a ram disk's unwritten
		# sectors and a hole in tmpfs are cheaper than data).
		dd if=/dev/urandom of="$MNT/$b/v$i" bs=1M oflag=direct \
			count=$(( $(stat -c %s "$MNT/$b/v$i") >> 20 )) \
			status=none
	done
}

# close_vbds BACKING N: close v0..v(N-1) (a ram VBD's memory goes).
close_vbds() {
	local i
	for i in $(seq 0 $(($2 - 1))); do
		echo "close v$i" >"$MNT/$1/.ctl"
	done
}

# row W ROUND BACKING NVBD RW: one fio run, one line in RESULTS.
row() {
	local w=$1 r=$2 b=$3 n=$4 rw=$5 i out c0 c1 t0 t1 load jobs=()
	for i in $(seq 0 $((n - 1))); do
		jobs+=(--name="v$i" --filename="$MNT/$b/v$i")
	done
	out=$WORK/$w.$r.$b.$n.$rw.json
	read -r load _ </proc/loadavg
	c0=$(ticks "$DPID")
	t0=$(date +%s%N)
	fio --ioengine=libaio --direct=1 --rw="$rw" --bs=4k --iodepth=32 \
		--time_based --runtime="$RUNTIME" --ramp_time="$RAMP" \
		--norandommap --randrepeat=0 --group_reporting \
		--output-format=json --output="$out" "${jobs[@]}" \
		>/dev/null 2>"$out.err" || die "fio: $(tail -n 3 "$out.err")"
	t1=$(date +%s%N)
	c1=$(ticks "$DPID")
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$w" "$r" "$b" \
		"$n" "$rw" "$out" "$((c1 - c0))" "$(((t1 - t0) / 1000000))" \
		"$load" "$(getconf CLK_TCK)" >>"$RESULTS"
	log "workers=$w round $r $b x$n $rw done (load $load)"
}

log "$NCPU CPUs; workers $WORKERS; $REPEAT rounds of ${RUNTIME}+${RAMP} s rows"
for r in $(seq 1 "$REPEAT"); do
	for w in $WORKERS; do
		mount_tapfs "$w"
		# The 1-VBD rows with that VBD alone in the mount (loops that
		# own no VBD do not read /dev/fuse), then the others join.
		for b in ${BACKING//,/ }; do
			make_vbds "$b" 0 0
			for rw in randread randwrite; do
				row "$w" "$r" "$b" 1 "$rw"
			done
			make_vbds "$b" 1 $((NVBD - 1))
			for rw in randread randwrite; do
				row "$w" "$r" "$b" "$NVBD" "$rw"
			done
			close_vbds "$b" "$NVBD"
		done
		umount_tapfs
	done
done

PYTHONPATH="$ROOT/bench" "$PY" - "$RESULTS" "$WORKERS" <<'EOF'
import statistics, sys
from benchreport import fio_result, fmt, ratio, table

rows = {}
loads = []
for line in open(sys.argv[1]):
    w, r, b, n, rw, out, ticks, ms, load, hz = line.rstrip("\n").split("\t")
    res = fio_result(out, "iops")
    iops = res[0] if res else None
    # CPU over fio's whole life (ramp included), I/O assumed steady.
    ios = iops * int(ms) / 1000 if iops else 0
    cpu = int(ticks) * 1e6 / int(hz) / ios if ios else None
    rows.setdefault((b, int(n), rw), {}).setdefault(int(w), []).append(
        (iops, cpu))
    loads.append(float(load))

workers = [int(w) for w in sys.argv[2].split()]
hdr = ["row"]
for w in workers:
    hdr += ["w=%d IOPS" % w, "min-max", "µs CPU/IO"]
for w in workers[1:]:
    hdr.append("w=%d/w=%d" % (w, workers[0]))
out = []
for (b, n, rw), by_w in sorted(rows.items()):
    cells = ["%s x%d 4k %s QD32" % (b, n, rw)]
    med = {}
    for w in workers:
        runs = by_w.get(w, [])
        i = [x for x, _ in runs if x is not None]
        c = [y for _, y in runs if y is not None]
        med[w] = statistics.median(i) if i else None
        cells += [fmt(med[w], "iops"),
                  "%.0f-%.0fk" % (min(i) / 1000, max(i) / 1000) if i else "-",
                  "%.1f" % statistics.median(c) if c else "-"]
    for w in workers[1:]:
        cells.append(ratio(med[w], med[workers[0]]))
    out.append(cells)
print()
print("Medians of %d runs each; load average before the rows: %.2f .. %.2f"
      % (max(len(v) for d in rows.values() for v in d.values()),
         min(loads), max(loads)))
print()
table(hdr, out)
EOF
