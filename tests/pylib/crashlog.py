"""crashlog.py - the write log of the crash tests' writers, and what a
crash may do to a write that was in flight.

A writer appends one line per event, under one lock, so the log's order
is the order of events:
  S SEED        (optional) the seed the writes' data derive from
  A i off len   write i is about to pwrite len bytes at off
  W i           write i returned the full length: acknowledged
  F n           the first n "W" lines were acknowledged before an fsync
                that then succeeded: durable
A checker reads it back (parse) and decides, for each write, what the
image must hold: an acknowledged write reads back; a write in flight
(A without W) left each 512-byte sector's part of it all old or all new
(torn_sectors).
"""
import os
import threading

SECTOR = 512


class CrashLog:
    """The writer's side of a log; emit() with self.lock held."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                          0o600)
        self.lock = threading.Lock()
        self.n_acked = 0

    def emit(self, line):
        os.write(self.fd, (line + "\n").encode())

    def attempt(self, i, off, ln):
        with self.lock:
            self.emit("A %d %d %d" % (i, off, ln))

    def acked(self, i):
        with self.lock:
            self.emit("W %d" % i)
            self.n_acked += 1

    def fsync(self, fd):
        """fsync fd, then log the writes it made durable (raises the
        fsync's OSError)."""
        with self.lock:
            upto = self.n_acked
        os.fsync(fd)
        with self.lock:
            self.emit("F %d" % upto)


def parse(path):
    """(seed or None, {i: (off, len)} attempted, [i] in acknowledgement
    order, number of durable acknowledgements).  A torn last line (the
    writer was killed) is ignored."""
    seed, att, wseq, durable = None, {}, [], 0
    with open(path) as f:
        for line in f:
            p = line.split()
            if not p or (p[0] != "S" and len(p) < 2):
                continue
            if p[0] == "S":
                seed = p[1]
            elif p[0] == "A" and len(p) == 4:
                att[int(p[1])] = (int(p[2]), int(p[3]))
            elif p[0] == "W":
                wseq.append(int(p[1]))
            elif p[0] == "F":
                durable = max(durable, int(p[1]))
    return seed, att, wseq, durable


def torn_sectors(off, got, new, old):
    """A write of new at off was in flight: got is what [off, off +
    len(new)) reads, old what it held before.  Returns (all_new, torn):
    whether every byte is new, and the (first, end) byte ranges (absolute)
    of the sector parts that are neither all old nor all new."""
    end = off + len(new)
    all_new, torn = True, []
    s = off
    while s < end:
        e = min((s // SECTOR + 1) * SECTOR, end)
        g = got[s - off:e - off]
        if g != new[s - off:e - off]:
            all_new = False
            if g != old[s - off:e - off]:
                torn.append((s, e))
        s = e
    return all_new, torn
