"""filegen.py - test files made from a seed.

  filegen.py random FILE SEED BYTES      BYTES of Random(SEED).randbytes
  filegen.py compressible FILE SEED MIB  MIB MiB that compress: every
      fifth MiB zeros, the others a few runs and 300 random bytes, then
      text
  filegen.py punch FILE OFF LEN          fallocate(PUNCH_HOLE|KEEP_SIZE):
      prints OK, or the errno name and exits 1
"""
import os
import random
import sys

from common import MiB, PUNCH, errname, fallocate


def compressible(path, seed, mib):
    r = random.Random(seed)
    with open(path, "wb") as f:
        for i in range(mib):
            if i % 5 == 3:
                f.write(bytes(MiB))
            else:
                f.write(bytes(r.randrange(4)) * 1000 + r.randbytes(300) +
                        b"tapfs qcow2 " * 60000)


def punch(path, off, ln):
    fd = os.open(path, os.O_RDWR)
    try:
        fallocate(fd, PUNCH, off, ln)
    except OSError as e:
        print(errname(e))
        sys.exit(1)
    finally:
        os.close(fd)
    print("OK")


def main(a):
    if len(a) == 5 and a[1] == "random":
        with open(a[2], "wb") as f:
            f.write(random.Random(int(a[3])).randbytes(int(a[4])))
    elif len(a) == 5 and a[1] == "compressible":
        compressible(a[2], int(a[3]), int(a[4]))
    elif len(a) == 5 and a[1] == "punch":
        punch(a[2], int(a[3]), int(a[4]))
    else:
        sys.exit("usage: filegen.py random FILE SEED BYTES | compressible "
                 "FILE SEED MIB | punch FILE OFF LEN")


if __name__ == "__main__":
    main(sys.argv)
