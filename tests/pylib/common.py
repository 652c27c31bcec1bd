"""common.py - small routines the test programs in tests/pylib share.

Standard library only: the programs run as "python3 -B -E -S FILE.py",
their folder on sys.path (lib.sh: pylib).
"""
import ctypes
import errno
import os
import random

KiB = 1 << 10
MiB = 1 << 20
SECTOR = 512

# fallocate(2) modes (linux/falloc.h).
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_COLLAPSE_RANGE = 0x08
FALLOC_FL_ZERO_RANGE = 0x10
FALLOC_FL_INSERT_RANGE = 0x20
PUNCH = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE

_libc = None


def errname(e):
    """The errno name of an OSError (or an errno), "E<n>" if unknown."""
    n = e.errno if isinstance(e, OSError) else e
    return errno.errorcode.get(n, "E%d" % n)


def fallocate(fd, mode, off, ln):
    """fallocate(2); raises OSError on failure (os has no such call)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.fallocate.argtypes = (ctypes.c_int, ctypes.c_int,
                                    ctypes.c_int64, ctypes.c_int64)
    if _libc.fallocate(fd, mode, off, ln):
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def first_diff(x, y):
    """The index of the first byte where x and y differ (the shorter
    one's length if one is a prefix of the other), None if equal."""
    if x == y:
        return None
    return next((j for j in range(min(len(x), len(y))) if x[j] != y[j]),
                min(len(x), len(y)))


def seeded_bytes(seed, ln):
    """ln bytes that depend only on seed (an int or a string)."""
    return random.Random(seed).randbytes(ln)
