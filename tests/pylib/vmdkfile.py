"""vmdkfile.py - read and change hosted sparse VMDK extents (the header
at offset 0: monolithicSparse, or one extent of twoGbMaxExtentSparse).

  vmdkfile.py field FILE OFFSET FMT VALUE
      overwrite one little-endian header field (struct FMT: I, Q)
  vmdkfile.py gd FILE [r]
      the grain directory's entries (r: the redundant one's), space
      separated
  vmdkfile.py dropgt FILE primary|both GTI...
      zero entries GTI of the grain directory (both: and of the
      redundant one), as in an image whose tables were never allocated,
      or (primary) one a crash left between the two directory writes;
      the tables must hold no grain
  vmdkfile.py cid FILE HEX
      the descriptor's CID= becomes HEX, 8 digits (embedded or not)
  vmdkfile.py hint FILE NAME
      the parentFileNameHint of an embedded descriptor becomes NAME (a
      parent of a format qemu-img create does not take)
"""
import re
import struct
import sys

SECTOR = 512
MAGIC = b"KDMV"


def header(f):
    f.seek(0)
    h = f.read(SECTOR)
    if h[:4] != MAGIC:
        sys.exit("%s: not a sparse extent" % f.name)
    capacity, grain = struct.unpack_from("<QQ", h, 12)
    gtes, = struct.unpack_from("<I", h, 44)
    rgd, gd = struct.unpack_from("<QQ", h, 48)
    n_gt = -(-(-(-capacity // grain)) // gtes)
    return {"gtes": gtes, "rgd": rgd, "gd": gd, "n": n_gt}


def entries(f, at, n):
    f.seek(at * SECTOR)
    return list(struct.unpack("<%dI" % n, f.read(4 * n)))


def cmd_gd(path, which):
    with open(path, "rb") as f:
        h = header(f)
        print(" ".join(str(e) for e in entries(f, h[which], h["n"])))


def cmd_dropgt(path, mode, gtis):
    with open(path, "r+b") as f:
        h = header(f)
        gd = entries(f, h["gd"], h["n"])
        for i in gtis:
            if not gd[i]:
                sys.exit("%s: grain table %d is not allocated" % (path, i))
            gt = entries(f, gd[i], h["gtes"])
            if any(gt):
                sys.exit("%s: grain table %d holds grains" % (path, i))
            for d in ("gd", "rgd") if mode == "both" else ("gd",):
                if h[d]:
                    f.seek(h[d] * SECTOR + 4 * i)
                    f.write(bytes(4))


def edit_desc(path, pattern, repl):
    """Replace the one match of pattern in the descriptor (embedded in a
    sparse extent, NUL-padded, or the text file itself)."""
    with open(path, "r+b") as f:
        h = f.read(SECTOR)
        if h[:4] == MAGIC:
            at, secs = struct.unpack_from("<QQ", h, 28)
            at, ln = at * SECTOR, secs * SECTOR
        else:
            at, ln = 0, None
        f.seek(at)
        area = f.read(ln) if ln else f.read()
        text = area.split(b"\0", 1)[0]
        new, n = re.subn(pattern, repl, text, flags=re.M)
        if n != 1 or (ln and len(new) > ln):
            sys.exit("%s: no %r in the descriptor (or no room)" %
                     (path, pattern))
        f.seek(at)
        f.write(new.ljust(ln, b"\0") if ln else new)
        if not ln:
            f.truncate()


def main(a):
    if len(a) == 6 and a[1] == "field":
        with open(a[2], "r+b") as f:
            f.seek(int(a[3]))
            f.write(struct.pack("<" + a[4], int(a[5])))
    elif len(a) in (3, 4) and a[1] == "gd":
        cmd_gd(a[2], "rgd" if a[3:] == ["r"] else "gd")
    elif len(a) > 4 and a[1] == "dropgt" and a[3] in ("primary", "both"):
        cmd_dropgt(a[2], a[3], [int(x) for x in a[4:]])
    elif len(a) == 4 and a[1] == "hint":
        edit_desc(a[2], rb'parentFileNameHint="[^"]*"',
                  b'parentFileNameHint="%s"' % a[3].encode())
    elif len(a) == 4 and a[1] == "cid" and len(a[3]) == 8:
        edit_desc(a[2], rb"^CID=[0-9a-fA-F]+$", b"CID=" + a[3].encode())
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
