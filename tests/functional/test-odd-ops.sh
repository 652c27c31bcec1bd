#!/bin/bash
# test-odd-ops.sh - odd requests on VBD and control files get a clear
# error, change nothing, and never take the daemon down.
#
# On a raw, a vhd and a qcow2 VBD holding a known pattern, every request
# a disk file does not support, or that is unusual for it, is tried
# (fallocate modes, xattrs, chmod/chown, mmap, ioctls, O_APPEND, renames,
# links, locks, zero-length and whole-disk I/O, copy_file_range, reads
# past the end, O_DIRECT with a misaligned buffer, .ctl and .stats
# opened and truncated in odd ways); each must give the documented
# result (an errno, or success for what a disk file does support), the
# pattern must read back unchanged (except where the request was a write
# of the same bytes), and the daemon must still be serving.
. "$(dirname "$0")/lib.sh"
requires python3 sha256sum

M=$T/mnt
S=$T/store
G=$M/g
MiB=1048576
SIZE=$((8 * MiB))

tapfs_start "$M" "$S" || summary
check mkdir "$G"

cat >"$T/odd.py" <<'PYEOF'
# odd.py VBD: try odd requests on VBD (and its group's control files);
# print "NAME RESULT" per request, RESULT being OK or the errno name.
import ctypes, errno, fcntl, mmap, os, sys

V = sys.argv[1]
G = os.path.dirname(V)
libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64,
                           ctypes.c_int64)


def tr(name, f):
    try:
        f()
        print(name, "OK")
    except OSError as e:
        print(name, errno.errorcode.get(e.errno, "E%d" % e.errno))
    sys.stdout.flush()


def with_fd(path, flags, f):
    fd = os.open(path, flags)
    try:
        return f(fd)
    finally:
        os.close(fd)


def falloc(mode, off, ln):
    def go(fd):
        if libc.fallocate(fd, mode, off, ln):
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
    with_fd(V, os.O_RDWR, go)


KEEP, PUNCH, COLLAPSE, ZERO, INSERT = 0x01, 0x02, 0x08, 0x10, 0x20
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
PYEOF

# The documented answers.  "A|B": either is right.
declare -A want=(
	[fallocate-allocate]=ENOTSUP
	[fallocate-keep-size]=ENOTSUP
	[fallocate-punch-no-keep]=ENOTSUP
	[fallocate-zero-range]=ENOTSUP
	[fallocate-collapse]=ENOTSUP
	[fallocate-insert]=ENOTSUP
	[fallocate-punch-unaligned]=EINVAL
	[fallocate-punch-past-end]=OK
	[setxattr]=ENOTSUP
	[getxattr]=ENOTSUP
	[listxattr]=ENOTSUP
	[removexattr]=ENOTSUP
	[chmod]=EPERM
	[chown]=EPERM
	[chmod-ctl]=EPERM
	[utime]=OK
	[append-write]=ENOSPC
	[seek-data-hole]=OK
	[mmap-shared]=ENODEV
	[mmap-private-read]=OK
	[ioctl-fiemap]="ENOTSUP|ENOTTY"
	[ioctl-blkgetsize64]=ENOTTY
	[ioctl-fs-flags]="ENOTTY|ENOTSUP"
	[locks]=OK
	[zero-length-write]=OK
	[zero-length-read]=OK
	[read-past-end]=OK
	[direct-read-misaligned-buffer]="OK|EINVAL"
	[direct-read-misaligned-offset]="OK|EINVAL"
	[write-whole-disk-same-bytes]=OK
	[copy-file-range-onto-itself]="OK|EINVAL|EXDEV|ENOTSUP"
	[link]=EPERM
	[rename]=EPERM
	[rename-group]=EPERM
	[mkdir-in-group]=EPERM
	[readdir-vbd]=ENOTDIR
	[create-excl-existing]=EEXIST
	[truncate-shrink]=EINVAL
	[truncate-grow]=EINVAL
	[stats-open-write]=EACCES
	[stats-truncate]="EACCES|EPERM"
	[ctl-truncate]=OK
	[ctl-read-huge-offset]=OK
	[ctl-write-huge-offset]=OK
	[ctl-resume-after]=OK
	[ctl-write-empty]=OK
	[ctl-write-nul]=EINVAL
	[ctl-write-64k]="EINVAL|EFBIG|E2BIG|ENAMETOOLONG"
)

# (Python names errno 95 ENOTSUP; EOPNOTSUPP is the same number.)
for fmt in raw vhd qcow2; do
	V=$G/$fmt
	ctl_ok "$G" "create $fmt $fmt $SIZE"
	# A pattern: random bytes in the first MiB, a text marker at 5 MiB,
	# the rest as created (zeros).
	head -c $MiB /dev/urandom >"$T/model"
	truncate -s $SIZE "$T/model"
	printf 'tapfs odd-ops marker' |
		dd of="$T/model" bs=1 seek=$((5 * MiB)) conv=notrunc 2>/dev/null
	check dd if="$T/model" of="$V" bs=1M oflag=direct conv=notrunc,fsync \
		status=none
	want_sum=$(sha256sum <"$T/model")

	"$PYTHON" "$T/odd.py" "$V" "$T/model" >"$T/odd.$fmt.out" 2>&1
	for k in "${!want[@]}"; do
		got=$(awk -v k="$k" '$1 == k { print $2 }' "$T/odd.$fmt.out")
		case "|${want[$k]}|" in
		*"|$got|"*) ok "$fmt: $k -> $got" ;;
		*) fail "$fmt: $k" "got '${got:-nothing}', want ${want[$k]}" ;;
		esac
	done
	check_eq "$fmt: every request answered" "${#want[@]}" \
		"$(wc -l <"$T/odd.$fmt.out")"
	check pid_alive "$TAPFS_PID"
	check_eq "$fmt: size unchanged" $SIZE "$(file_size "$V")"
	check_eq "$fmt: data unchanged" "$want_sum" \
		"$(dd if="$V" bs=1M iflag=direct status=none | sha256sum)"
	check_match "$fmt: VBD still running" "^$fmt running " \
		"$(ctl_line "$G" "$fmt")"
done

# The daemon took all of it and still closes and unmounts cleanly.
for fmt in raw vhd qcow2; do
	ctl_ok "$G" "close $fmt"
done
tapfs_stop
summary
