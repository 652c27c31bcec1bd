# crashio.py - the crash loop's writer and checker (tests/soak/crash-loop.sh).
# The log and the in-flight rule are crashlog.py's.
#
#   crashio.py write VBD LOG SEED FRESH LIMIT [THREADS [MAX_SECONDS]]
#       Random writes into bytes [0, LIMIT) of VBD from THREADS threads
#       (default 4), a third of them starting in [FRESH, LIMIT) (space no
#       earlier run wrote: on vhd and qcow2, allocating writes), each
#       thread calling fsync now and then, until a write or an fsync fails
#       (the daemon is gone) or MAX_SECONDS (default 120) have passed.
#   crashio.py verify FILE MODEL LOG REGION
#       Check bytes [0, REGION) of FILE against MODEL (what the region held
#       before this writer ran; zeros if MODEL does not exist) with the
#       writes LOG records applied; then replace MODEL with what FILE holds,
#       so that the next cycle starts from the state that was verified.
#
# Writes: 4 KiB-aligned 4 KiB..256 KiB (70%), 512-aligned 512 B..256 KiB
# (20%), any offset and length 1 B..256 KiB (10%: partial sectors, served
# by read-modify-write).  Later writes overwrite earlier ones, in this run
# and across runs, but two writes in flight at the same time never share
# a byte: a thread reserves its byte range before it writes and releases
# it only once the write is acknowledged, so the log orders any two
# overlapping writes.  A write that fails keeps its range reserved.
#
# The LOG (crashlog.py) starts with "S SEED": write i holds
# Random("SEED/i").randbytes(len).
#
# What verify expects of every byte of the region:
#   - the last acknowledged write covering it, else MODEL's byte.  A write
#     acknowledged before the last successful fsync is "durable"; one
#     acknowledged after it is "unsynced", and must be there all the same:
#     the daemon was killed, not the machine, so whatever it acknowledged
#     is in the image file (page cache or disk);
#   - under a write that was in flight (attempted, never acknowledged):
#     for each 512-byte sector, the write's part of it is either all old
#     or all new.
# It prints one line of figures, "key=value ...", then up to 10 "BAD:"
# lines, and exits 1 if anything was lost or torn.
import os
import random
import sys
import threading
import time

import crashlog
from common import KiB, SECTOR, errname, seeded_bytes

CHUNK = 4 << 20


def wdata(seed, i, ln):
    return seeded_bytes("%s/%d" % (seed, i), ln)


def pick(rng, fresh, limit):
    """A write inside [0, limit); a third of them start at or after fresh."""
    k = rng.random()
    if k < 0.7:
        align, ln = 4 * KiB, 4 * KiB * rng.randint(1, 64)
    elif k < 0.9:
        align, ln = SECTOR, SECTOR * rng.randint(1, 512)
    else:
        align, ln = 1, rng.randint(1, 256 * KiB)
    ln = min(ln, limit)
    lo = fresh if rng.random() < 1 / 3 and fresh <= limit - ln else 0
    off = rng.randrange(-(-lo // align), (limit - ln) // align + 1) * align
    return off, ln


def cmd_write(vbd, logpath, seed, fresh, limit, threads, max_s):
    log = crashlog.CrashLog(logpath)
    st = {"n": 0, "fsyncs": 0, "bytes": 0}
    busy = {}                   # thread -> (off, end) reserved
    why = set()                 # how the threads stopped
    stop = threading.Event()
    deadline = time.monotonic() + max_s

    def reserve(t, rng):
        while True:
            off, ln = pick(rng, fresh, limit)
            with log.lock:
                if all(off + ln <= a or b <= off for a, b in busy.values()):
                    i = st["n"]
                    st["n"] += 1
                    busy[t] = (off, off + ln)
                    log.emit("A %d %d %d" % (i, off, ln))
                    return i, off, ln

    def worker(t):
        rng = random.Random("%s/thread%d" % (seed, t))
        try:
            fd = os.open(vbd, os.O_WRONLY)
        except OSError as e:
            why.add("open: " + errname(e))
            stop.set()          # the daemon died before we started
            return
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                i, off, ln = reserve(t, rng)
                done = os.pwrite(fd, wdata(seed, i, ln), off)
                if done != ln:
                    why.add("short write")
                    break       # still "in flight"
                with log.lock:
                    log.emit("W %d" % i)
                    log.n_acked += 1
                    st["bytes"] += ln
                    del busy[t]
                if rng.random() < 0.125:
                    log.fsync(fd)
                    with log.lock:
                        st["fsyncs"] += 1
        except OSError as e:   # the daemon is gone
            why.add(errname(e))
        finally:
            stop.set()
            try:
                os.close(fd)
            except OSError:
                pass            # ENOTCONN: the flush on close failed

    with log.lock:
        log.emit("S %s" % seed)
    th = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for x in th:
        x.start()
    for x in th:
        x.join()
    if time.monotonic() >= deadline:
        why.add("ran out of time")
    print("%d writes attempted, %d acknowledged (%d bytes), %d fsyncs; "
          "stopped on %s" % (st["n"], log.n_acked, st["bytes"],
                             st["fsyncs"], ", ".join(sorted(why)) or
                             "nothing"))


def read_region(path, region):
    fd = os.open(path, os.O_RDONLY)
    try:
        buf = bytearray()
        while len(buf) < region:
            chunk = os.pread(fd, min(CHUNK, region - len(buf)), len(buf))
            if not chunk:
                break
            buf += chunk
    finally:
        os.close(fd)
    if len(buf) < region:
        sys.exit("verify: %s holds %d bytes, fewer than the region's %d" %
                 (path, len(buf), region))
    return buf


def cmd_verify(path, model_path, logpath, region):
    seed, att, wseq, durable = crashlog.parse(logpath)
    if os.path.exists(model_path):
        exp = bytearray(read_region(model_path, region))
    else:
        exp = bytearray(region)
    got = read_region(path, region)

    # The expected region: the acknowledged writes applied in the order
    # they were acknowledged.  by_sector[s] lists (rank, off, end) of the
    # writes covering sector s, for telling whose bytes were lost.
    by_sector = {}
    acked = set(wseq)
    n = dict(acked=len(wseq), durable=min(durable, len(wseq)), inflight=0,
             inflight_new=0, bytes_acked=0, bytes_durable=0, lost=0,
             unsynced_lost=0, torn=0)
    for rank, i in enumerate(wseq):
        off, ln = att[i]
        exp[off:off + ln] = wdata(seed, i, ln)
        n["bytes_acked"] += ln
        if rank < durable:
            n["bytes_durable"] += ln
        for s in range(off // SECTOR, (off + ln - 1) // SECTOR + 1):
            by_sector.setdefault(s, []).append((rank, off, off + ln))

    bad = []
    # Writes in flight: each sector's part old (exp) or new, never a mix
    # or anything else.  Those bytes are then taken as read, so that the
    # comparison below covers the rest of the region.
    for i, (off, ln) in sorted(att.items()):
        if i in acked:
            continue
        n["inflight"] += 1
        all_new, torn = crashlog.torn_sectors(off, got[off:off + ln],
                                              wdata(seed, i, ln),
                                              exp[off:off + ln])
        for s, e in torn:
            n["torn"] += e - s
            if len(bad) < 10:
                bad.append("write %d (in flight, %d bytes at %d): "
                           "bytes %d-%d are neither old nor new" %
                           (i, ln, off, s, e - 1))
        n["inflight_new"] += all_new
        exp[off:off + ln] = got[off:off + ln]

    # Everything else reads back exactly.  Lost bytes are counted by their
    # last writer and reported as runs of one writer's bytes.
    runs = []                   # [first, last + 1, owner rank or None]:
                                # gaps of a few bytes that happen to
                                # match are bridged

    def lost(x, owner):
        if owner is not None and owner >= durable:
            n["unsynced_lost"] += 1
        else:
            n["lost"] += 1
        if runs and x - runs[-1][1] < 64 and runs[-1][2] == owner:
            runs[-1][1] = x + 1
        elif len(runs) < 10:
            runs.append([x, x + 1, owner])

    for c in range(0, region, CHUNK):
        if exp[c:c + CHUNK] == got[c:c + CHUNK]:
            continue
        for s in range(c // SECTOR, min(c + CHUNK, region) // SECTOR):
            a, b = s * SECTOR, (s + 1) * SECTOR
            if exp[a:b] == got[a:b]:
                continue
            writers = by_sector.get(s, [])
            for x in range(a, b):
                if exp[x] != got[x]:
                    lost(x, next((r for r, wo, we in reversed(writers)
                                  if wo <= x < we), None))
    for a, b, owner in runs:
        if owner is None:
            what = "data from an earlier cycle"
        else:
            what = "write %d, %s" % (wseq[owner], "durable" if
                                     owner < durable else
                                     "acknowledged, not fsync'd")
        bad.append("bytes %d-%d (%s) do not read back" % (a, b - 1, what))

    tmp = model_path + ".new"
    with open(tmp, "wb") as f:
        f.write(got)
    os.replace(tmp, model_path)

    print(" ".join("%s=%d" % kv for kv in n.items()))
    for b in bad:
        print("BAD: " + b)
    sys.exit(1 if n["lost"] or n["unsynced_lost"] or n["torn"] else 0)


def main(argv):
    if len(argv) >= 7 and argv[1] == "write":
        cmd_write(argv[2], argv[3], argv[4], int(argv[5]), int(argv[6]),
                  int(argv[7]) if len(argv) > 7 else 4,
                  float(argv[8]) if len(argv) > 8 else 120.0)
    elif len(argv) == 6 and argv[1] == "verify":
        cmd_verify(argv[2], argv[3], argv[4], int(argv[5]))
    else:
        sys.exit("usage: crashio.py write VBD LOG SEED FRESH LIMIT [THREADS "
                 "[MAX_SECONDS]] | verify FILE MODEL LOG REGION")


if __name__ == "__main__":
    main(sys.argv)
