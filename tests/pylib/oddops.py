# oddops.py VBD MODEL: try odd requests on VBD (and its group's control
# files); print "NAME RESULT" per request, RESULT being OK or the errno
# name.  MODEL holds what VBD holds (test-odd-ops).
import errno
import fcntl
import mmap
import os
import sys

from common import (FALLOC_FL_COLLAPSE_RANGE as COLLAPSE,
                    FALLOC_FL_INSERT_RANGE as INSERT,
                    FALLOC_FL_KEEP_SIZE as KEEP,
                    FALLOC_FL_PUNCH_HOLE as PUNCH,
                    FALLOC_FL_ZERO_RANGE as ZERO, errname, fallocate)

V = sys.argv[1]
G = os.path.dirname(V)


def tr(name, f):
    try:
        f()
        print(name, "OK")
    except OSError as e:
        print(name, errname(e))
    sys.stdout.flush()


def with_fd(path, flags, f):
    fd = os.open(path, flags)
    try:
        return f(fd)
    finally:
        os.close(fd)


def falloc(mode, off, ln):
    with_fd(V, os.O_RDWR, lambda fd: fallocate(fd, mode, off, ln))


size = os.stat(V).st_size
tr("fallocate-allocate", lambda: falloc(0, 0, 4096))
tr("fallocate-keep-size", lambda: falloc(KEEP, 0, 4096))
tr("fallocate-punch-no-keep", lambda: falloc(PUNCH, 0, 4096))
tr("fallocate-zero-range", lambda: falloc(ZERO, 0, 4096))
tr("fallocate-collapse", lambda: falloc(COLLAPSE, 0, 65536))
tr("fallocate-insert", lambda: falloc(INSERT, 0, 65536))
tr("fallocate-punch-unaligned", lambda: falloc(PUNCH | KEEP, 100, 1000))
tr("fallocate-punch-past-end", lambda: falloc(PUNCH | KEEP, size, 4096))
tr("setxattr", lambda: os.setxattr(V, "user.x", b"1"))
tr("getxattr", lambda: os.getxattr(V, "user.x"))
tr("listxattr", lambda: os.listxattr(V))
tr("removexattr", lambda: os.removexattr(V, "user.x"))
tr("chmod", lambda: os.chmod(V, 0o644))
tr("chown", lambda: os.chown(V, 1, 1))
tr("chmod-ctl", lambda: os.chmod(G + "/.ctl", 0o666))
tr("utime", lambda: os.utime(V, (1, 1)))
tr("append-write",
   lambda: with_fd(V, os.O_WRONLY | os.O_APPEND,
                   lambda fd: os.write(fd, b"x")))
tr("seek-data-hole",
   lambda: with_fd(V, os.O_RDONLY,
                   lambda fd: (os.lseek(fd, 0, os.SEEK_DATA),
                               os.lseek(fd, 0, os.SEEK_HOLE))))


def mmap_shared(fd):
    m = mmap.mmap(fd, 4096, mmap.MAP_SHARED)
    m.close()


tr("mmap-shared", lambda: with_fd(V, os.O_RDWR, mmap_shared))


def mmap_private(fd):
    m = mmap.mmap(fd, 4096, mmap.MAP_PRIVATE, mmap.PROT_READ)
    first = m[0:4]
    m.close()
    if first != open(sys.argv[2], "rb").read(4):
        raise OSError(errno.EIO, "mmap shows other bytes")


tr("mmap-private-read", lambda: with_fd(V, os.O_RDONLY, mmap_private))


def ioctl(req, n):
    def go(fd):
        fcntl.ioctl(fd, req, bytearray(n))
    with_fd(V, os.O_RDONLY, go)


tr("ioctl-fiemap", lambda: ioctl(0xC020660B, 32 + 56))
tr("ioctl-blkgetsize64", lambda: ioctl(0x80081272, 8))
tr("ioctl-fs-flags", lambda: ioctl(0x80086601, 8))


def locks(fd):
    fcntl.flock(fd, fcntl.LOCK_EX)
    fcntl.lockf(fd, fcntl.LOCK_EX)
    fcntl.lockf(fd, fcntl.LOCK_UN)
    fcntl.flock(fd, fcntl.LOCK_UN)


tr("locks", lambda: with_fd(V, os.O_RDWR, locks))
tr("zero-length-write",
   lambda: with_fd(V, os.O_WRONLY, lambda fd: os.pwrite(fd, b"", 100)))
tr("zero-length-read",
   lambda: with_fd(V, os.O_RDONLY, lambda fd: os.pread(fd, 0, 100)))


def read_past_end(fd):
    if os.pread(fd, 4096, size) != b"" or len(os.pread(fd, 8192,
                                                         size - 100)) != 100:
        raise OSError(errno.EIO, "read past the end returned data")


tr("read-past-end", lambda: with_fd(V, os.O_RDONLY, read_past_end))


def direct_misaligned(fd):
    buf = mmap.mmap(-1, 8192)
    view = memoryview(buf)[1:4097]      # not aligned in memory
    os.preadv(fd, [view], 0)


tr("direct-read-misaligned-buffer",
   lambda: with_fd(V, os.O_RDONLY | os.O_DIRECT, direct_misaligned))
tr("direct-read-misaligned-offset",
   lambda: with_fd(V, os.O_RDONLY | os.O_DIRECT,
                   lambda fd: os.preadv(fd, [mmap.mmap(-1, 4096)], 100)))


def rewrite_whole(fd):
    data = open(sys.argv[2], "rb").read()
    if os.pwrite(fd, data, 0) != len(data):
        raise OSError(errno.EIO, "short write")


tr("write-whole-disk-same-bytes", lambda: with_fd(V, os.O_WRONLY,
                                                  rewrite_whole))


def copy_range(_):
    a = os.open(V, os.O_RDONLY)
    b = os.open(V, os.O_WRONLY)
    try:
        # Copies the first MiB onto itself: the bytes do not change.
        n = os.copy_file_range(a, b, 1 << 20, 0, 0)
        if n <= 0:
            raise OSError(errno.EIO, "copy_file_range copied %d" % n)
    finally:
        os.close(a)
        os.close(b)


tr("copy-file-range-onto-itself", lambda: copy_range(None))
tr("link", lambda: os.link(V, G + "/lnk"))
tr("rename", lambda: os.rename(V, V + ".new"))
tr("rename-group", lambda: os.rename(G, G + ".new"))
tr("mkdir-in-group", lambda: os.mkdir(G + "/sub"))
tr("readdir-vbd", lambda: os.listdir(V))
tr("create-excl-existing",
   lambda: os.close(os.open(V, os.O_RDWR | os.O_CREAT | os.O_EXCL)))
tr("truncate-shrink", lambda: os.truncate(V, size - 4096))
tr("truncate-grow", lambda: os.truncate(V, size + 4096))
tr("stats-open-write", lambda: os.close(os.open(G + "/.stats",
                                                os.O_WRONLY)))
tr("stats-truncate", lambda: os.truncate(G + "/.stats", 0))
tr("ctl-truncate", lambda: os.truncate(G + "/.ctl", 0))
tr("ctl-read-huge-offset",
   lambda: with_fd(G + "/.ctl", os.O_RDONLY,
                   lambda fd: os.pread(fd, 4096, 1 << 40)))
tr("ctl-write-huge-offset",
   lambda: with_fd(G + "/.ctl", os.O_WRONLY,
                   lambda fd: os.pwrite(fd, b"pause\n", 1 << 40)))
tr("ctl-resume-after", lambda: with_fd(G + "/.ctl", os.O_WRONLY,
                                       lambda fd: os.write(fd, b"resume\n")))
tr("ctl-write-empty",
   lambda: with_fd(G + "/.ctl", os.O_WRONLY, lambda fd: os.write(fd, b"")))
tr("ctl-write-nul", lambda: with_fd(G + "/.ctl", os.O_WRONLY,
                                    lambda fd: os.write(fd, b"pa\0use\n")))
tr("ctl-write-64k", lambda: with_fd(G + "/.ctl", os.O_WRONLY,
                                    lambda fd: os.write(fd, b"x" * 65536)))
