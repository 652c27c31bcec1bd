"""symswap.py DIR OUTSIDE [SECONDS]: for SECONDS (60), again and again,
swap DIR/d for a symbolic link to OUTSIDE/d and back (test-security: an
open racing the swap must never reach the file outside)."""
import os
import sys
import time


def main(a):
    d, o = a[1], a[2]
    end = time.monotonic() + (float(a[3]) if len(a) > 3 else 60)
    while time.monotonic() < end:
        os.rename(d + "/d", d + "/d.real")
        os.symlink(o + "/d", d + "/d")
        os.unlink(d + "/d")
        os.rename(d + "/d.real", d + "/d")


if __name__ == "__main__":
    main(sys.argv)
