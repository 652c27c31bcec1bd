"""randio.py - seeded random writes applied to a VBD and to a model file,
and random reads comparing two files.  Every run is seeded: a failure
names its seed, and the same seed makes the same requests.

  randio.py write PROFILE VBD MODEL SEED N [EXTRA]
      N writes to both files, fsync'd on VBD.  PROFILE picks the mix:
        vhd     partial sectors, whole sectors, across 2 MiB blocks,
                up to 3 MiB, the end of the disk; 10% zeros
        qcow2   the same across 64 KiB or 2 MiB boundaries, and EXTRA
                punched holes (discards; the model gets zeros)
        vmdk    the same across 64 KiB grains and 32 MiB grain tables
        chain   more small writes; with EXTRA=HOT, half of them are
                small overwrites into the first HOT bytes; 5% zeros
  randio.py reads A B SEED N
      N random unaligned reads of A and B agree.
"""
import os
import random
import sys

from common import MiB, PUNCH, fallocate, first_diff

BLK = 2 * MiB
# Boundaries a write is made to cross, by profile.
UNITS = {"vhd": (BLK,), "qcow2": (65536, BLK),
         "vmdk": (65536, 32 * MiB)}


def one_write(rng, size, units):
    """(off, data) of a vhd or qcow2 profile write."""
    k = rng.random()
    if k < 0.25:                    # partial sectors, any alignment
        ln = rng.randint(1, 1600)
        off = rng.randrange(0, size - ln)
    elif k < 0.50:                  # whole sectors, 512- not 4k-aligned
        ln = 512 * rng.randint(1, 40)
        off = 512 * rng.randrange(0, (size - ln) // 512)
    elif k < 0.75:                  # across a block (cluster) boundary
        ln = rng.randint(2, 300 * 1024)
        unit = units[0] if len(units) == 1 else rng.choice(units)
        b = rng.randrange(1, (size - 1) // unit + 1) * unit
        off = max(0, min(b - rng.randint(1, ln - 1), size - ln))
    elif k < 0.95:                  # up to 3 MiB, unaligned
        ln = rng.randint(1, 3 * MiB)
        off = rng.randrange(0, size - ln)
    else:                           # the last bytes of the disk
        ln = rng.randint(1, 8192)
        off = size - ln
    data = bytes(ln) if rng.random() < 0.1 else rng.randbytes(ln)
    return off, data


def chain_write(rng, size, hot):
    """(off, data) of a chain profile write."""
    k = rng.random()
    if hot and k < 0.5:             # small overwrites in a hot zone
        ln = rng.choice((1, 100, 512, 513, 1024, 4096, 5000))
        off = rng.randrange(0, hot - ln)
        if rng.random() < 0.5:
            off &= ~511
    elif k < 0.6:                   # partial sectors
        ln = rng.randint(1, 1600)
        off = rng.randrange(0, size - ln)
    elif k < 0.75:                  # whole sectors, part of a block
        ln = 512 * rng.randint(1, 64)
        off = 512 * rng.randrange(0, (size - ln) // 512)
    elif k < 0.9:                   # across a block boundary
        ln = rng.randint(2, 300 * 1024)
        b = rng.randrange(1, (size - 1) // BLK + 1) * BLK
        off = max(0, min(b - rng.randint(1, ln - 1), size - ln))
    elif k < 0.95:                  # up to 3 MiB
        ln = rng.randint(1, 3 * MiB)
        off = rng.randrange(0, size - ln)
    else:                           # the last bytes of the disk
        ln = rng.randint(1, 8192)
        off = size - ln
    data = bytes(ln) if rng.random() < 0.05 else rng.randbytes(ln)
    return off, data


def pwrite_all(fd, data, off, what):
    n = os.pwrite(fd, data, off)
    if n != len(data):
        sys.exit("%s: short write at %d: %d of %d" % (what, off, n,
                                                      len(data)))


def cmd_write(profile, vbd, model, seed, n, extra):
    rng = random.Random(seed)
    size = os.path.getsize(model)
    discards = extra if profile == "qcow2" else 0
    ops = ["w"] * n + ["d"] * discards
    if profile == "qcow2":
        rng.shuffle(ops)
    fv = os.open(vbd, os.O_RDWR)
    fm = os.open(model, os.O_WRONLY)
    total = 0
    for i, op in enumerate(ops):
        if op == "d":
            ln = 512 * rng.choice((1, 7, 128, 129, 4096,
                                   rng.randint(1, 8192)))
            ln = min(ln, size)
            off = 512 * rng.randrange(0, (size - ln) // 512 + 1)
            try:
                fallocate(fv, PUNCH, off, ln)
            except OSError as e:
                sys.exit("seed %d op %d: punch %d at %d: %s" %
                         (seed, i, ln, off, e.strerror))
            pwrite_all(fm, bytes(ln), off, model)
            continue
        if profile == "chain":
            off, data = chain_write(rng, size, extra)
        else:
            off, data = one_write(rng, size, UNITS[profile])
        try:
            pwrite_all(fv, data, off, vbd)
        except OSError as e:
            sys.exit("seed %d op %d: pwrite(%s, %d bytes at %d): %s" %
                     (seed, i, vbd, len(data), off, e))
        pwrite_all(fm, data, off, model)
        total += len(data)
    os.fsync(fv)
    os.close(fv)
    os.close(fm)
    print("%d writes (%d bytes), %d discards" % (n, total, discards))


def cmd_reads(a, b, seed, n):
    rng = random.Random(seed)
    size = os.path.getsize(b)
    fa = os.open(a, os.O_RDONLY)
    fb = os.open(b, os.O_RDONLY)
    for i in range(n):
        ln = rng.choice((1, 511, 513, 4095, 65537, rng.randint(1, 3 * MiB)))
        ln = min(ln, size)
        off = rng.randrange(0, size - ln + 1)
        x = os.pread(fa, ln, off)
        y = os.pread(fb, ln, off)
        at = first_diff(x, y)
        if at is not None:
            sys.exit("seed %d read %d: %d bytes at %d differ from byte %d"
                     " (%d vs %d bytes read)" % (seed, i, ln, off,
                                                 off + at, len(x), len(y)))
    os.close(fa)
    os.close(fb)
    print("%d reads agree" % n)


def main(a):
    if len(a) in (7, 8) and a[1] == "write" and a[2] in ("vhd", "qcow2",
                                                         "vmdk", "chain"):
        cmd_write(a[2], a[3], a[4], int(a[5]), int(a[6]),
                  int(a[7]) if len(a) > 7 else 0)
    elif len(a) == 6 and a[1] == "reads":
        cmd_reads(a[2], a[3], int(a[4]), int(a[5]))
    else:
        sys.exit("usage: randio.py write vhd|qcow2|vmdk|chain VBD MODEL "
                 "SEED N [EXTRA] | reads A B SEED N")


if __name__ == "__main__":
    main(sys.argv)
