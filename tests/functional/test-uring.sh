#!/bin/bash
# test-uring.sh - -o uring: FUSE requests through io_uring ring entries.
#
# Skipped on a kernel without FUSE over io_uring (no
# /sys/module/fuse/parameters/enable_uring).  With enable_uring N the
# daemon refuses -o uring at start, saying how to turn it on; uring with
# workers=2 is refused too.  With it Y (set here, the old value put back
# at exit): the daemon registers its ring, and a raw and a qcow2 VBD take
# fio with crc32c verification on the file (4k random, 1 MiB sequential)
# and through a direct-I/O loop device (4k random at QD32, the Xen
# path), a pause and resume in the middle of a verified run, a pause
# holding 128 requests from one CPU while .stats and the resume are
# still served, writes at
# odd offsets and lengths read back byte for byte, the namespace and
# control files (mkdir, rmdir, .ctl, .stats); mkfs.ext4 and fsck -fn on
# the loop device; the daemon logs the requests served on the ring and
# exits 0 on unmount.  A WRITE held by the storage after its client was
# answered (a failed VBD) is answered before the storage gives it back,
# and reaches the image with its own data while many writes from the same
# CPU go through the queue its entry belongs to.  40 writes held at once
# by a storage that hangs are all answered EIO while it still holds them.
# SIGTERM with a write held by a pause answers that write before the
# daemon exits.
. "$(dirname "$0")/lib.sh"
if ! one_loop; then
	echo "SKIP: $TEST_NAME: -o uring takes one loop, not -o workers=N"
	exit 77
fi
requires_root
requires fio python3 losetup mkfs.ext4 fsck.ext4

PARAM=/sys/module/fuse/parameters/enable_uring
if [ ! -w "$PARAM" ]; then
	echo "SKIP: $TEST_NAME: no FUSE over io_uring in this kernel ($PARAM)"
	exit 77
fi
OLD=$(cat "$PARAM")
on_exit "echo '$OLD' >'$PARAM'"

M=$T/mnt
S=$T/store
G=$M/g

# ---- refusals --------------------------------------------------------------

mkdir -p "$T/m0"
echo N >"$PARAM"
check_out "uring refused while enable_uring is N" 1 \
	"uring: FUSE over io_uring is off in this kernel \(as root: echo Y > $PARAM\)" \
	timeout 10 "$TAPFS" -f -o "store=$T/s0,uring" "$T/m0"
echo Y >"$PARAM"
check_out "uring with workers=2 refused" 1 \
	"uring: not with workers=2 \(one loop serves the ring\)" \
	timeout 10 "$TAPFS" -f -o "store=$T/s0,uring,workers=2" "$T/m0"
check_not is_mounted "$T/m0"

# ---- the data path over the ring ----------------------------------------

tapfs_start "$M" "$S" uring || summary
check mkdir "$G"
ctl_ok "$G" "create a raw 64M"
ctl_ok "$G" "create b qcow2 64M"
check_out "the ring is registered" 0 \
	"uring: [0-9]+ queues of [0-9]+ entries registered" cat "$TAPFS_LOG"

fio_verify file-4k 120 --filename="$G/a" --ioengine=libaio --direct=1 \
	--rw=randwrite --bs=4k --iodepth=16 --size=32M --verify=crc32c
fio_verify file-1m 120 --filename="$G/b" --ioengine=libaio --direct=1 \
	--rw=write --bs=1M --iodepth=8 --size=48M --verify=crc32c

# Odd offsets and lengths: the read-modify-write path, and short replies.
check python3 - "$G/a" <<'EOF'
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
data = {}
for off, n in ((1, 7), (4095, 3), (65537, 10000), (3 * 2**20 - 5, 131072)):
    buf = os.urandom(n)
    assert os.pwrite(fd, buf, off) == n
    data[off] = buf
os.fsync(fd)
for off, buf in data.items():
    got = os.pread(fd, len(buf), off)
    assert got == buf, "mismatch at %d" % off
size = os.fstat(fd).st_size
assert os.pread(fd, 4096, size - 100) and len(os.pread(fd, 4096, size - 100)) == 100
os.close(fd)
EOF

# A pause and resume in the middle of a verified run.
bg_start pausefio fio --name=pausefio --output-format=json \
	--output="$T/pausefio.json" --filename="$G/a" --ioengine=libaio \
	--direct=1 --rw=randwrite --bs=4k --iodepth=32 --size=32M \
	--verify=crc32c
sleep 0.3
ctl_ok "$G" "pause a"
sleep 0.3
ctl_ok "$G" "resume a"
bg_wait "$BG_PID" 120
fio_check "verified across a pause" "$T/pausefio.json" "$BG_RC"

# The namespace and the control files.
check mkdir "$M/h"
check rmdir "$M/h"
check_out ".stats has a's reads" 0 "^a\.reads [1-9]" cat "$G/.stats"

# The Xen path: a direct-I/O loop device over each VBD.
loop_attach "$G/a" || summary
LOOP_A=$LOOP_DEV
fio_verify loop-4k 120 --filename="$LOOP_DEV" --ioengine=libaio \
	--direct=1 --rw=randwrite --bs=4k --iodepth=32 --size=32M \
	--verify=crc32c
# Requests held for a paused VBD keep their ring entries.  fio through
# the loop device keeps 128 in flight from CPU 0 (the loop device's queue
# depth); the resume, written from CPU 0 too, must still find an entry
# (with 32 entries a queue the daemon hung here: .ctl and .stats waited
# for ever behind the held requests).
bg_start holdfio fio --name=holdfio --filename="$LOOP_A" --ioengine=libaio \
	--direct=1 --rw=randwrite --bs=4k --iodepth=128 --time_based \
	--runtime=3 --cpus_allowed=0
sleep 0.5
ctl_ok "$G" "pause a"
sleep 0.5
check_out "a's requests are held while paused" 0 "^a\.queued [1-9]" \
	timeout 10 cat "$G/.stats"
check timeout 20 taskset -c 0 sh -c "echo 'resume a' >'$G/.ctl'" || summary
bg_wait "$BG_PID" 60
check_eq "fio through the loop device ends after the resume" 0 "$BG_RC"

loop_attach "$G/b" || summary
check mkfs.ext4 -q -F "$LOOP_DEV"
check fsck.ext4 -fn "$LOOP_DEV"

# ---- unmount -------------------------------------------------------------

check losetup -d "$LOOP_A"
check losetup -d "$LOOP_DEV"
tapfs_stop
served=$(sed -n 's/.*uring: \([0-9]*\) requests served on the ring.*/\1/p' \
	"$TAPFS_LOG")
check test "${served:-0}" -gt 10000

# ---- a WRITE answered early keeps its ring entry ---------------------------

# A WRITE goes to the disk from its ring entry.  Here the storage holds
# f's write for 5 s and the watchdog fails f after 1 s: its client gets
# EIO then, not when the storage answers, so the entry is committed with
# the write still out (its buffer moves to a spare slot, the entry gets a
# fresh one).  2000 writes of another pattern to h from the same CPU then
# go through that CPU's queue.  The held write must still reach f.raw
# with its own data.
M2=$T/mnt2
S2=$T/store2
G2=$M2/g
h_queued() { [ "$(stat_val "$G2" h queued)" -ge 1 ] 2>/dev/null; }
tapfs_start "$M2" "$S2" "uring,deadline_ms=1000" || summary
check mkdir "$G2"
ctl_ok "$G2" "create h raw 16M"
check truncate -s 16M "$S2/g/f.raw"
ctl_ok "$G2" "open f fault:delay_ms=5000,ops=w:raw:$S2/g/f.raw"
python3 -c 'import sys; sys.stdout.buffer.write(b"\xa5" * 4096)' >"$T/pat.f"
python3 -c 'import sys; sys.stdout.buffer.write(b"\x5a" * 2000 * 4096)' \
	>"$T/pat.h"
bg_start stuckw taskset -c 0 dd if="$T/pat.f" of="$G2/f" bs=4k count=1 \
	oflag=direct conv=notrunc
STUCKW=$BG_PID
check wait_for 10 vbd_failed "$G2" f
bg_wait "$STUCKW" 10
check_match "the held write's client got EIO" "Input/output error" \
	"$(cat "$T/stuckw.out")"
# Answered ahead of its I/O: f closes at once, and the held write keeps
# its image until the storage gives it back (were the answer waiting for
# the write, the image would be free by now).
ctl_close "$G2" f
check_match "f.raw still in use while its write is held" \
	"^in use: read-write by pid $TAPFS_PID" \
	"$("$TAPFS_IMG" info "$S2/g/f.raw" | grep '^in use')"
check timeout 20 taskset -c 0 dd if="$T/pat.h" of="$G2/h" bs=4k \
	count=2000 oflag=direct conv=notrunc status=none
check wait_for 15 image_free "$S2/g/f.raw"
check cmp -n 4096 "$T/pat.f" "$S2/g/f.raw"

# Many at once: a storage that hangs under a full queue holds as many
# writes as there are clients, and each must be answered when the VBD
# fails, not when the storage lets go.  40 writers (more than the 16
# spare buffers there once were): every one gets EIO while the image is
# still held by their writes.
NW=40
check truncate -s 16M "$S2/g/m.raw"
ctl_ok "$G2" "open m fault:delay_ms=8000,ops=w:raw:$S2/g/m.raw"
WPIDS=()
for i in $(seq 0 $((NW - 1))); do
	bg_start "mw.$i" dd if="$T/pat.f" of="$G2/m" bs=4k count=1 seek="$i" \
		oflag=direct conv=notrunc
	WPIDS+=("$BG_PID")
done
check wait_for 10 vbd_failed "$G2" m
nw_eio=0
for i in "${!WPIDS[@]}"; do
	bg_wait "${WPIDS[$i]}" 5
	grep -q "Input/output error" "$T/mw.$i.out" && nw_eio=$((nw_eio + 1))
done
check_eq "all $NW held writes answered EIO" "$NW" "$nw_eio"
ctl_close "$G2" m
check_match "m.raw still in use while its writes are held" \
	"^in use: read-write by pid $TAPFS_PID" \
	"$("$TAPFS_IMG" info "$S2/g/m.raw" | grep '^in use')"
check wait_for 20 image_free "$S2/g/m.raw"

# ---- SIGTERM answers what it drains ----------------------------------------

# SIGTERM with a write held by a pause: the daemon resumes it, completes
# it and answers it before it exits.  The answer goes out as a ring
# commit, which the exit must still hand to the kernel (it was lost once:
# the writer got ECONNABORTED for a write that had reached the image).
ctl_ok "$G2" "pause h"
# (The writer's close comes after the exit, and fails: not checked.)
bg_start heldw python3 -c '
import mmap, os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_DIRECT)
m = mmap.mmap(-1, 4096)		# page-aligned, for O_DIRECT
m.write(open(sys.argv[2], "rb").read())
print("written", os.pwritev(fd, [m], 100 * 4096), flush=True)
' "$G2/h" "$T/pat.f"
HELDW=$BG_PID
check wait_for 10 h_queued
kill -TERM "$TAPFS_PID"
check wait_gone "$TAPFS_PID" 20
wait "$TAPFS_PID"
check_eq "SIGTERM: the daemon exits with status 0" 0 "$?"
bg_wait "$HELDW" 10
check_match "the write held at SIGTERM is answered, and succeeded" \
	"^written 4096$" "$(cat "$T/heldw.out")"
check cmp -n 4096 -i 0:$((100 * 4096)) "$T/pat.f" "$S2/g/h.raw"
check_out "the log counts the answer ahead of its I/O" 0 \
	"uring: [0-9]+ requests served on the ring \(41 answered ahead of their I/O\)" \
	cat "$TAPFS_LOG"
summary
