#!/bin/bash
# test-rmw.sh - partial-sector writes from many writers at once.
#
# Regression: a write that does not cover whole 512-byte sectors is done
# as read-modify-write, which copies the payload only after the old
# sectors are read; the payload lived in the FUSE receive buffer, which
# the next request overwrote (8 writers: 3192 of 3200 writes wrong).
# Every writer owns its own region, so every read-back must match, and
# bytes no writer touched must still be zero.
. "$(dirname "$0")/lib.sh"
requires python3

M=$T/mnt
G=$M/g

tapfs_start "$M" "$T/store" || summary
check mkdir "$G"
ctl_ok "$G" "create d raw 16M"

cat >"$T/rmw.py" <<'PY'
import os, random, sys, threading

path, nthreads = sys.argv[1], int(sys.argv[2])
REGION = 65536
errors = []
model = bytearray(REGION * nthreads)


def worker(k):
    fd = os.open(path, os.O_RDWR)
    rnd = random.Random(k)
    for i in range(300):
        off = k * REGION + rnd.randrange(0, REGION - 700)
        data = bytes([(k * 31 + i) % 251 + 1]) * rnd.randrange(1, 700)
        os.pwrite(fd, data, off)
        model[off:off + len(data)] = data
        if os.pread(fd, len(data), off) != data:
            errors.append("writer %d write %d at %d" % (k, i, off))
    os.close(fd)


threads = [threading.Thread(target=worker, args=(k,))
           for k in range(nthreads)]
for t in threads:
    t.start()
for t in threads:
    t.join()
with open(path, "rb") as f:
    whole = f.read(len(model))
if whole != bytes(model):
    bad = next(i for i in range(len(model)) if whole[i] != model[i])
    errors.append("final contents differ first at byte %d" % bad)
print("%d errors %s" % (len(errors), errors[:3]))
sys.exit(1 if errors else 0)
PY

check python3 "$T/rmw.py" "$G/d" 8
check python3 "$T/rmw.py" "$G/d" 1
ctl_close "$G" d
tapfs_stop
summary
