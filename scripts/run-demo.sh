#!/bin/sh
# run-demo.sh MNT STORE - the "make run" job: mount tapfs on MNT (store
# STORE) in the foreground, make the demo group and disk if absent, say
# what to try, and unmount cleanly on Ctrl-C.
set -u

MNT=${1:-/srv/vbds}
STORE=${2:-/var/lib/tapfs}
TOP=$(cd "$(dirname "$0")/.." && pwd)
TAPFS=${TAPFS:-$TOP/build/tapfs}

is_mounted() {
	awk -v m="$1" '$2 == m { f = 1 } END { exit !f }' /proc/mounts
}

mkdir -p "$MNT" || exit 1
MNT=$(cd "$MNT" && pwd)
if is_mounted "$MNT"; then
	echo "run-demo: $MNT is already mounted (umount $MNT first)" >&2
	exit 1
fi

"$TAPFS" -f -o "store=$STORE" "$MNT" &
pid=$!

cleanup() {
	trap - INT TERM EXIT
	if is_mounted "$MNT"; then
		fusermount3 -u "$MNT" 2>/dev/null || umount "$MNT"
	fi
	wait "$pid"
	rc=$?
	echo "run-demo: tapfs exited with status $rc; $MNT unmounted"
	exit "$rc"
}
trap cleanup INT TERM EXIT

i=0
until is_mounted "$MNT"; do
	if ! kill -0 "$pid" 2>/dev/null || [ $i -ge 100 ]; then
		echo "run-demo: tapfs did not mount $MNT" >&2
		exit 1
	fi
	sleep 0.1
	i=$((i + 1))
done

[ -d "$MNT/demo" ] || mkdir "$MNT/demo" || exit 1
if [ ! -e "$MNT/demo/disk0" ]; then
	echo "create disk0 raw 1G" > "$MNT/demo/.ctl" || {
		cat "$MNT/demo/.ctl" >&2
		exit 1
	}
fi

cat <<TIPS

tapfs is mounted on $MNT (store $STORE), daemon pid $pid.
The demo VBD is $MNT/demo/disk0.  In another terminal, try:

  cat $MNT/demo/.ctl                      # VBDs, state, chain
  dev=\$(losetup --direct-io=on -f --show $MNT/demo/disk0)
  mkfs.ext4 -q \$dev && mkdir -p /mnt/demo && mount \$dev /mnt/demo
  echo pause > $MNT/demo/.ctl; cat $MNT/demo/.stats; echo resume > $MNT/demo/.ctl
  umount /mnt/demo; losetup -d \$dev
  echo 'create disk1 raw 512M' > $MNT/demo/.ctl

Press Ctrl-C here to unmount (VBDs come back on the next mount).
TIPS

wait "$pid"
