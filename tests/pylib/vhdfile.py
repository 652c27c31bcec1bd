"""vhdfile.py - change VHD images, keeping every checksum right unless
the checksum is what is being broken.

  vhdfile.py edit FILE EDIT [ARGS]
    footer-cookie            both footer copies: a bad cookie
    footer-checksum          both copies: a wrong checksum
    footer-checksum-tail     the trailing copy only: a wrong checksum
    disk-type N              both copies
    header-cookie | header-checksum
    block-size N | max-entries N     header fields
    bat-past-eof             first used BAT entry -> past EOF (prints it)
    bat-same-block           2nd used entry = the 1st one (prints it)
  vhdfile.py footer FILE [creator=APP] [geometry=C/H/S] [current=BYTES]
      patch the footer at the end of FILE and its copy at offset 0 (if
      there is one); APP is padded with NULs to 4 bytes
  vhdfile.py header FILE OFFSET HEX
      overwrite bytes of the dynamic header
  vhdfile.py leak FILE
      what a block allocation interrupted before its BAT write leaves
      (2 MiB blocks): the old footer stays; past it, the bitmap and
      64 KiB of data at the 4 KiB-aligned place, and a footer after the
      block; prints the bytes added
"""
import os
import struct
import sys

FOOTER = 512
HEADER = 1024
F_CSUM, H_CSUM = 64, 36
COOKIE = b"conectix"
UNUSED = 0xffffffff             # a BAT entry of no block


def csum(buf, at):
    """The VHD checksum of buf, its checksum field at `at` taken as 0."""
    b = bytearray(buf)
    b[at:at + 4] = bytes(4)
    return (~sum(b)) & 0xffffffff


def rd(f, off, n):
    f.seek(off)
    return bytearray(f.read(n))


def wr(f, off, b):
    f.seek(off)
    f.write(b)


def footers(f, size, both):
    """Offsets of the footer copies to edit: the trailing one (and the
    backup at 0 of a dynamic or differencing image, if both)."""
    offs = [size - FOOTER]
    if both and rd(f, 0, 8) == COOKIE:
        offs.append(0)
    return offs


def edit_footer(f, size, both, change, fix=True):
    for off in footers(f, size, both):
        b = rd(f, off, FOOTER)
        change(b)
        if fix:
            struct.pack_into(">I", b, F_CSUM, csum(b, F_CSUM))
        wr(f, off, b)


def header_off(f, size):
    return struct.unpack(">Q", rd(f, size - FOOTER + 16, 8))[0]


def edit_header(f, size, change, fix=True):
    off = header_off(f, size)
    b = rd(f, off, HEADER)
    change(b)
    if fix:
        struct.pack_into(">I", b, H_CSUM, csum(b, H_CSUM))
    wr(f, off, b)


def bat(f, size):
    h = rd(f, header_off(f, size), HEADER)
    toff, = struct.unpack_from(">Q", h, 16)
    n, = struct.unpack_from(">I", h, 28)
    return toff, [struct.unpack(">I", rd(f, toff + 4 * i, 4))[0]
                  for i in range(n)]


def bumper(at):
    """A change that makes the checksum at `at` wrong."""
    def bump(b):
        v, = struct.unpack_from(">I", b, at)
        struct.pack_into(">I", b, at, (v + 1) & 0xffffffff)
    return bump


def cmd_edit(f, size, what, args):
    if what == "footer-cookie":
        edit_footer(f, size, True, lambda b: b.__setitem__(
            slice(0, 8), b"cXnectiX"), fix=False)
    elif what == "footer-checksum":
        edit_footer(f, size, True, bumper(F_CSUM), fix=False)
    elif what == "footer-checksum-tail":
        edit_footer(f, size, False, bumper(F_CSUM), fix=False)
    elif what == "disk-type":
        edit_footer(f, size, True, lambda b: struct.pack_into(
            ">I", b, 60, int(args[0])))
    elif what == "header-cookie":
        edit_header(f, size, lambda b: b.__setitem__(slice(0, 8),
                                                     b"cxsparsX"))
    elif what == "header-checksum":
        edit_header(f, size, bumper(H_CSUM), fix=False)
    elif what == "block-size":
        edit_header(f, size, lambda b: struct.pack_into(
            ">I", b, 32, int(args[0], 0)))
    elif what == "max-entries":
        edit_header(f, size, lambda b: struct.pack_into(
            ">I", b, 28, int(args[0], 0)))
    elif what == "bat-past-eof":
        toff, e = bat(f, size)
        i = next(i for i, v in enumerate(e) if v != UNUSED)
        wr(f, toff + 4 * i, struct.pack(">I", size // 512 + 8192))
        print(i)
    elif what == "bat-same-block":
        toff, e = bat(f, size)
        used = [i for i, v in enumerate(e) if v != UNUSED]
        wr(f, toff + 4 * used[1], struct.pack(">I", e[used[0]]))
        print(used[1])
    else:
        sys.exit("vhdfile.py: unknown edit " + what)


def cmd_footer(f, size, edits):
    def patch(b):
        if "creator" in edits:
            b[28:32] = edits["creator"].encode().ljust(4, b"\0")[:4]
        if "geometry" in edits:
            c, h, s = (int(x) for x in edits["geometry"].split("/"))
            b[56:60] = struct.pack(">HBB", c, h, s)
        if "current" in edits:
            b[48:56] = struct.pack(">Q", int(edits["current"]))
        struct.pack_into(">I", b, F_CSUM, csum(b, F_CSUM))

    for off in sorted({0, size - FOOTER}):
        b = rd(f, off, FOOTER)
        if b[:8] != COOKIE:
            continue
        patch(b)
        wr(f, off, b)


def cmd_header(f, size, off, val):
    def patch(b):
        b[off:off + len(val)] = val
    edit_header(f, size, patch)


def cmd_leak(f, size):
    block, bitmap, align = 2 << 20, 512, 4096
    footer = rd(f, size - FOOTER, FOOTER)
    assert footer[:8] == COOKIE
    data = (size + bitmap + align - 1) // align * align
    wr(f, data - bitmap, b"\xff" * bitmap)
    f.write(bytes(range(256)) * 256)
    wr(f, data + block, footer)
    print(data + block + FOOTER - size)


def main(a):
    if len(a) < 3:
        sys.exit("usage: vhdfile.py edit|footer|header|leak FILE ...")
    cmd, path = a[1], a[2]
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        if cmd == "edit" and len(a) >= 4:
            cmd_edit(f, size, a[3], a[4:])
        elif cmd == "footer":
            cmd_footer(f, size, dict(x.split("=", 1) for x in a[3:]))
        elif cmd == "header" and len(a) == 5:
            cmd_header(f, size, int(a[3]), bytes.fromhex(a[4]))
        elif cmd == "leak" and len(a) == 3:
            cmd_leak(f, size)
        else:
            sys.exit("usage: vhdfile.py edit|footer|header|leak FILE ...")


if __name__ == "__main__":
    main(sys.argv)
