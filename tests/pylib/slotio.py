"""slotio.py - fsync'd writes into numbered slots, and their verification
(test-qcow2-crash).

  slotio.py write VBD LOG SLOT_BYTES FIRST END   writes slot after slot
      from FIRST (data of a random length up to SLOT_BYTES, fsync),
      appending "slot seed len" to LOG after each fsync, until killed, an
      error, or slot END (not written)
  slotio.py verify IMAGE_RAW LOG SLOT_BYTES       every logged slot reads
      back
"""
import os
import random
import sys

from common import seeded_bytes


def data(slot, seed, ln):
    return seeded_bytes(slot * 7919 + seed, ln)


def cmd_write(vbd, log, sb, first, end):
    fd = os.open(vbd, os.O_RDWR)
    lf = open(log, "a")
    rng = random.Random(first)
    slot = first
    while slot < end:
        seed = rng.randrange(1 << 30)
        ln = rng.randint(1, sb)
        try:
            os.pwrite(fd, data(slot, seed, ln), slot * sb)
            os.fsync(fd)
        except OSError:
            return
        lf.write("%d %d %d\n" % (slot, seed, ln))
        lf.flush()
        os.fsync(lf.fileno())
        slot += 1


def cmd_verify(raw, log, sb):
    fd = os.open(raw, os.O_RDONLY)
    last = {}
    for line in open(log):
        p = line.split()
        if len(p) != 3:
            continue        # a torn last line: not confirmed
        slot, seed, ln = map(int, p)
        # A later round may reach a slot an earlier one wrote: the
        # last fsync'd write of a slot is what it must hold.
        last[slot] = (seed, ln)
    n = 0
    for slot, (seed, ln) in sorted(last.items()):
        if os.pread(fd, ln, slot * sb) != data(slot, seed, ln):
            sys.exit("slot %d (%d bytes) lost after the crash" % (slot, ln))
        n += 1
    if n == 0:
        sys.exit("no slot was fsync'd before the crash: nothing tested")
    print("%d fsync'd slots present" % n)


def main(a):
    if len(a) == 7 and a[1] == "write":
        cmd_write(a[2], a[3], int(a[4]), int(a[5]), int(a[6]))
    elif len(a) == 5 and a[1] == "verify":
        cmd_verify(a[2], a[3], int(a[4]))
    else:
        sys.exit("usage: slotio.py write VBD LOG SLOT_BYTES FIRST END | "
                 "verify IMAGE_RAW LOG SLOT_BYTES")


if __name__ == "__main__":
    main(sys.argv)
