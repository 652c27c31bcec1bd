"""fsop.py - one system call; prints the result (lib.sh: fsop).

  write PATH TEXT            one write() of TEXT (O_WRONLY) -> OK | ENAME
  open PATH MODE             MODE r, w, rw, plus t (O_TRUNC), c (O_CREAT),
                             x (O_EXCL), d (O_DIRECT) -> OK | ENAME
  pwrite PATH OFF HEX        -> bytes written | ENAME
  pread PATH OFF LEN         -> hex of the bytes read ("" at EOF) | ENAME
  read PATH                  read the whole file -> OK | ENAME
  fsync PATH                 open rw, fsync -> OK | ENAME
  truncate PATH SIZE         -> OK | ENAME
  stat PATH, list DIR, unlink|rmdir PATH, mkdir PATH, rename A B,
  symlink TARGET PATH, mknod PATH (a FIFO), link A B -> OK | ENAME
Text arguments are written as given (bash $'..' makes control chars).

Self-contained (no imports from its folder): test-security feeds it to a
python run as another user on stdin.
"""
import errno
import os
import sys


def errname(e):
    return errno.errorcode.get(e.errno, "E%d" % e.errno)


def flags(mode):
    f = os.O_RDWR if "rw" in mode else (os.O_WRONLY if "w" in mode
                                         else os.O_RDONLY)
    for ch, fl in (("t", os.O_TRUNC), ("c", os.O_CREAT), ("x", os.O_EXCL),
                   ("d", os.O_DIRECT)):
        if ch in mode:
            f |= fl
    return f


def with_fd(path, fl, fn):
    fd = os.open(path, fl)
    try:
        return fn(fd)
    finally:
        os.close(fd)


def op_write(a):
    text = a[1].encode("utf-8", "surrogateescape")
    n = with_fd(a[0], os.O_WRONLY, lambda fd: os.write(fd, text))
    return "OK" if n == len(text) else "SHORT %d" % n


def op_read(a):
    with open(a[0], "rb") as f:
        f.read()
    return "OK"


def op_fsync(a):
    with_fd(a[0], os.O_RDWR, os.fsync)
    return "OK"


def ok(fn):
    """An op that prints OK when fn(args) returns."""
    def run(a):
        fn(a)
        return "OK"
    return run


OPS = {
    "write": op_write,
    "open": ok(lambda a: os.close(os.open(a[0], flags(a[1]), 0o600))),
    "pwrite": lambda a: with_fd(a[0], os.O_WRONLY, lambda fd: os.pwrite(
        fd, bytes.fromhex(a[2]), int(a[1]))),
    "pread": lambda a: with_fd(a[0], os.O_RDONLY, lambda fd: os.pread(
        fd, int(a[2]), int(a[1])).hex()),
    "read": op_read,
    "fsync": op_fsync,
    "truncate": ok(lambda a: os.truncate(a[0], int(a[1]))),
    "stat": ok(lambda a: os.stat(a[0])),
    "list": ok(lambda a: os.listdir(a[0])),
    "unlink": ok(lambda a: os.unlink(a[0])),
    "rmdir": ok(lambda a: os.rmdir(a[0])),
    "mkdir": ok(lambda a: os.mkdir(a[0])),
    "rename": ok(lambda a: os.rename(a[0], a[1])),
    "link": ok(lambda a: os.link(a[0], a[1])),
    "symlink": ok(lambda a: os.symlink(a[0], a[1])),
    "mknod": ok(lambda a: os.mknod(a[0], 0o600 | 0o010000)),   # a FIFO
}


def main(argv):
    if len(argv) < 3 or argv[1] not in OPS:
        print("usage: fsop.py OP PATH [ARGS]: unknown op %s" %
              (argv[1:2] or ["(none)"])[0], file=sys.stderr)
        sys.exit(2)
    try:
        print(OPS[argv[1]](argv[2:]))
    except OSError as e:
        print(errname(e))


if __name__ == "__main__":
    main(sys.argv)
