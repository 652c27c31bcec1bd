#!/usr/bin/env bash
# img-convert.sh - tapfs-img convert against qemu-img convert.
#
# Run by `make bench-img`; installs nothing.  One image of BENCH_SIZE
# (default 2G) of incompressible data, as raw, VHD (qemu-img -O vpc) and
# qcow2, in a temporary directory under BENCH_DIR (default ROOT/build).
# Each row converts one source into one destination format, timed from
# start to a durable file (tapfs-img syncs DST; qemu-img's run is followed
# by sync), page cache dropped before each run:
#   tapfs-img -m 1   one request at a time,
#   tapfs-img        the default queue depth (8),
#   qemu-img         qemu-img convert (its defaults: 8 coroutines,
#                    cache=unsafe on the destination),
# with the ratio qemu-img / tapfs-img (above 1: tapfs-img is faster).
# Rows alternate the three, BENCH_REPS times (default 2); the best
# time of each is shown.  tapfs-img's output is checked equal to the
# source with qemu-img compare.
#
# Environment: BENCH_SIZE (e.g. 2G, 512M), BENCH_DIR, BENCH_REPS,
# TAPFS_IMG (default ROOT/build/tapfs-img).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMG=${TAPFS_IMG:-$ROOT/build/tapfs-img}
SIZE=${BENCH_SIZE:-2G}
ROUNDS=${BENCH_REPS:-2}
[ -z "${BENCH_ROUNDS+set}" ] ||
	{ echo "img-convert.sh: BENCH_ROUNDS is now BENCH_REPS" >&2; exit 2; }
mkdir -p "${BENCH_DIR:-$ROOT/build}"
D=$(mktemp -d "${BENCH_DIR:-$ROOT/build}/bench-img.XXXXXX")
trap 'rm -rf "$D"' EXIT

for t in qemu-img bc; do
	command -v $t >/dev/null || { echo "img-convert.sh: needs $t" >&2; exit 1; }
done
[ -x "$IMG" ] || { echo "img-convert.sh: $IMG is not built" >&2; exit 1; }

mib=$(numfmt --from=iec "$SIZE")
mib=$((mib >> 20))
echo "img-convert: $SIZE of random data in $D"
head -c $((mib << 20)) /dev/urandom > "$D/src.raw"
qemu-img convert -f raw -O vpc "$D/src.raw" "$D/src.vhd"
qemu-img convert -f raw -O qcow2 "$D/src.raw" "$D/src.qcow2"

drop() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }

# secs CMD...: run CMD (then sync), print the seconds it took.
secs() {
	local t0 t1
	drop
	t0=$(date +%s.%N)
	"$@" >/dev/null
	sync
	t1=$(date +%s.%N)
	echo "$t1 - $t0" | bc
}

min() { if [ -z "$1" ] || [ "$(echo "$2 < $1" | bc)" = 1 ]; then echo "$2"; else echo "$1"; fi; }

qfmt() { case $1 in vhd) echo vpc ;; *) echo "$1" ;; esac; }

printf '\n%-8s %-6s %12s %12s %12s %8s\n' source dest "tapfs -m 1" "tapfs -m 8" qemu-img ratio
fail=0
for src in raw vhd qcow2; do
	for dst in raw vhd qcow2; do
		best1= best8= bestq=
		for _ in $(seq "$ROUNDS"); do
			rm -f "$D/out"
			best1=$(min "$best1" "$(secs "$IMG" convert -m 1 -O $dst "$D/src.$src" "$D/out")")
			rm -f "$D/out"
			best8=$(min "$best8" "$(secs "$IMG" convert -O $dst "$D/src.$src" "$D/out")")
			if ! qemu-img compare -q -f raw -F "$(qfmt $dst)" "$D/src.raw" "$D/out"; then
				echo "img-convert: $src -> $dst: output differs" >&2
				fail=1
			fi
			rm -f "$D/out"
			bestq=$(min "$bestq" "$(secs qemu-img convert -f "$(qfmt $src)" -O "$(qfmt $dst)" "$D/src.$src" "$D/out")")
		done
		printf '%-8s %-6s %11.2fs %11.2fs %11.2fs %8.2f\n' $src $dst \
			"$best1" "$best8" "$bestq" "$(echo "scale=2; $bestq / $best8" | bc)"
	done
done
rm -f "$D/out"
exit $fail
