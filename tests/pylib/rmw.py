# rmw.py VBD THREADS: THREADS writers, each in its own 64 KiB region of
# VBD, 300 small unaligned writes each (read-modify-write in the daemon),
# each read back at once; then the whole range against the model
# (test-rmw).  Prints the error count; exits 1 on any.
import os
import random
import sys
import threading

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
