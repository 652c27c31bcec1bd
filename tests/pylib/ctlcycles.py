# ctlcycles.py GROUPDIR STORE N: N create/close cycles of a VBD through
# one open .ctl (raw and vhd; qcow2 one cycle in 100), each followed by an
# open refused with EACCES; prints OK or the first bad command
# (test-security: the daemon's fds do not grow).
import errno
import os
import sys

g, store, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
fd = os.open(g + "/.ctl", os.O_WRONLY)
bad = []
def cmd(c, want=None):
    try:
        os.write(fd, c.encode() + b"\n")
        got = None
    except OSError as e:
        got = e.errno
    if got != want:
        bad.append("%s: %s" % (c, errno.errorcode.get(got, got)))
for i in range(n):
    # qcow2 takes 0.2 s to create and open: one cycle in 100.
    f = "qcow2" if i % 100 == 99 else ("raw", "vhd")[i % 2]
    cmd("create x %s 1M" % f)
    cmd("close x")
    os.unlink("%s/x.%s" % (store, f))
    cmd("open y vhd:%s/v3.vhd" % store, errno.EACCES)
os.close(fd)
print("OK" if not bad else "%d bad: %s" % (len(bad), bad[0]))
