"""crashrounds.py - test-vhd-crash's writer and checker.

  crashrounds.py write VBD LOG ROUND ROUNDS  write until done or the
                                             daemon dies
  crashrounds.py verify FILE LOG...          check FILE against the
                                             writers' logs (LOG.ROUND)

The disk is cut into 2 MiB blocks of 16 slots of 128 KiB.  Round r
writes into the blocks b with b % ROUNDS == r % 2 (rounds 0 and 1 into
blocks nobody wrote yet; rounds 2 and 3, on a differencing child, into
the blocks rounds 0 and 1 filled in the parent), 3 writes per block,
each in a slot s with s % ROUNDS == r (no two writes overlap), at a
random offset and length inside the slot.
Write i of round r holds the bytes of random.Random(r * 1000003 + i).
The logs are crashlog.py's (without the S line).
"""
import os
import random
import sys
import threading
import time

import crashlog
from common import MiB, first_diff, seeded_bytes

BLK = 2 * MiB
SLOT = 128 * 1024
THREADS = 6


def plan(size, rnd, rounds):
    rng = random.Random(rnd)
    ws = []
    slots = [s for s in range(BLK // SLOT) if s % rounds == rnd]
    for b in range(rnd % 2, size // BLK, rounds):
        for s in rng.sample(slots, 3):
            start = b * BLK + s * SLOT
            off = rng.randrange(0, SLOT // 2)
            if rng.random() < 0.5:
                off &= ~511
            ln = rng.randint(1, SLOT - off)
            ws.append((start + off, ln))
    rng.shuffle(ws)
    return ws


def data(rnd, i, ln):
    return seeded_bytes(rnd * 1000003 + i, ln)


def cmd_write(vbd, logpath, rnd, rounds):
    size = os.path.getsize(vbd)
    ws = plan(size, rnd, rounds)
    log = crashlog.CrashLog(logpath)
    stop = threading.Event()

    def worker(t):
        rng = random.Random(rnd * 7 + t)
        fd = os.open(vbd, os.O_WRONLY)
        try:
            for n, i in enumerate(range(t, len(ws), THREADS)):
                if stop.is_set():
                    return
                off, ln = ws[i]
                log.attempt(i, off, ln)
                if os.pwrite(fd, data(rnd, i, ln), off) != ln:
                    stop.set()
                    return
                log.acked(i)
                if n % 3 == 2:
                    log.fsync(fd)
                time.sleep(rng.random() * 0.01)
        except OSError:
            stop.set()          # the daemon is gone
        finally:
            os.close(fd)

    th = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for x in th:
        x.start()
    for x in th:
        x.join()
    print("round %d: %d writes planned, %d acknowledged" %
          (rnd, len(ws), log.n_acked))


def cmd_verify(path, logs):
    f = os.open(path, os.O_RDONLY)
    spans = []
    bad = []
    n = {"durable": 0, "acked": 0, "inflight": 0, "inflight_new": 0}
    for lp in logs:
        rnd = int(lp.rsplit(".", 1)[1])
        _, att, wseq, durable = crashlog.parse(lp)
        dset = set(wseq[:durable])
        aset = set(wseq)
        for i, (off, ln) in att.items():
            spans.append((off, off + ln))
            want = data(rnd, i, ln)
            got = os.pread(f, ln, off)
            kind = ("durable" if i in dset else
                    "acked" if i in aset else "inflight")
            n[kind] += 1
            if kind != "inflight":
                at = first_diff(got, want)
                if at is not None:
                    bad.append("round %d write %d (%s, %d bytes at %d): "
                               "differs at byte %d" %
                               (rnd, i, kind, ln, off, off + at))
                continue
            # In flight: every sector's part either old (zeros) or new.
            new, torn = crashlog.torn_sectors(off, got, want, bytes(ln))
            if torn:
                s, e = torn[0]
                bad.append("round %d write %d (in flight, %d bytes "
                           "at %d): bytes %d-%d neither old nor "
                           "new" % (rnd, i, ln, off, s, e))
            n["inflight_new"] += new
    # Nothing anywhere else.
    spans.sort()
    pos, size = 0, os.fstat(f).st_size
    spans.append((size, size))
    for a, b in spans:
        while pos < a:
            ln = min(a - pos, 4 * MiB)
            chunk = os.pread(f, ln, pos)
            if chunk != bytes(ln):
                j = next(j for j in range(ln) if chunk[j])
                bad.append("byte %d is not zero, but nothing was written "
                           "there" % (pos + j))
                break
            pos += ln
        pos = max(pos, b)
    print("%d durable, %d acknowledged, %d in flight (%d of them fully "
          "present)" % (n["durable"], n["acked"], n["inflight"],
                        n["inflight_new"]))
    for b in bad[:10]:
        print("BAD: " + b)
    sys.exit(1 if bad else 0)


def main(a):
    if len(a) == 6 and a[1] == "write":
        cmd_write(a[2], a[3], int(a[4]), int(a[5]))
    elif len(a) >= 4 and a[1] == "verify":
        cmd_verify(a[2], a[3:])
    else:
        sys.exit("usage: crashrounds.py write VBD LOG ROUND ROUNDS | "
                 "verify FILE LOG...")


if __name__ == "__main__":
    main(sys.argv)
