"""allocwriter.py VBD LOG FIRST: 8 threads, each pwrite of 64 KiB at the
start of a 2 MiB block nobody wrote (so that every write allocates),
blocks FIRST, FIRST+1, ...; "W" appended to LOG per acknowledged write;
runs until the daemon dies or the disk's last block (test-vhd-reclaim).
"""
import os
import sys
import threading

BLK, THREADS = 2 << 20, 8


def main(a):
    if len(a) != 4:
        sys.exit("usage: allocwriter.py VBD LOG FIRST")
    vbd, log = a[1], a[2]
    nblocks = os.path.getsize(vbd) // BLK
    lk = threading.Lock()
    nxt = [int(a[3])]

    def worker():
        fd = os.open(vbd, os.O_WRONLY)
        lfd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            while True:
                with lk:
                    b = nxt[0]
                    nxt[0] += 1
                if b >= nblocks:
                    return
                os.pwrite(fd, bytes([b & 0xff]) * 65536, b * BLK)
                os.write(lfd, b"W\n")
        except OSError:
            return
        finally:
            os.close(fd)
            os.close(lfd)

    th = [threading.Thread(target=worker) for _ in range(THREADS)]
    for t in th:
        t.start()
    for t in th:
        t.join()


if __name__ == "__main__":
    main(sys.argv)
