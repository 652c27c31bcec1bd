# loadctl.py GROUPDIR CYCLES SNAPS NAME...: the control schedule.
#
# CYCLES pause/resume cycles; every third is group-wide, the others go
# round the VBDs.  After every (CYCLES / SNAPS)th cycle a live snapshot;
# every third is group-wide.  Every command must succeed and leave
# "status: ok"; after a pause every VBD it names must be paused with
# nothing in flight.  Prints one line per failure and a summary line.
#
# (test-load)
import os
import signal
import sys
import time

from common import errname

g, cycles, snaps, names = (sys.argv[1], int(sys.argv[2]),
                           int(sys.argv[3]), sys.argv[4:])
CTL, STATS = os.path.join(g, ".ctl"), os.path.join(g, ".stats")
HOLD, GAP = 0.02, 0.03          # seconds paused, seconds running


class Timeout(Exception):
    pass


def on_alarm(*_):
    raise Timeout()


signal.signal(signal.SIGALRM, on_alarm)
failures = []


def command(cmd):
    """One write of CMD to .ctl; OK or why not."""
    signal.alarm(60)
    try:
        fd = os.open(CTL, os.O_WRONLY)
        try:
            os.write(fd, (cmd + "\n").encode())
        finally:
            os.close(fd)
        res = "OK"
    except OSError as e:
        res = errname(e)
    except Timeout:
        res = "TIMEOUT after 60 s"
    finally:
        signal.alarm(0)
    with open(CTL) as f:
        st = f.readline().strip()
    if res == "OK" and st != "status: ok":
        res = "write OK but " + st
    elif res != "OK":
        res += " (" + st + ")"
    if res != "OK":
        failures.append("%s -> %s" % (cmd, res))
    return res == "OK"


def stats():
    s = {}
    with open(STATS) as f:
        for line in f:
            k, v = line.split()
            s[k] = v
    return s


paused = dict.fromkeys(names, 0)
chain = dict.fromkeys(names, 1)
held = 0                        # requests seen waiting during pauses
n_group = n_snap = n_gsnap = 0
single = snap_single = 0
every = max(1, cycles // snaps)
start = time.monotonic()

for k in range(cycles):
    if k % 3 == 2:
        who, arg = names, ""
        n_group += 1
    else:
        who = [names[single % len(names)]]
        arg = " " + who[0]
        single += 1
    if command("pause" + arg):
        s = stats()
        for n in who:
            if s[n + ".state"] != "paused" or s[n + ".inflight"] != "0":
                failures.append("cycle %d: after 'pause%s' %s is %s with "
                                "%s in flight" % (k, arg, n,
                                                  s[n + ".state"],
                                                  s[n + ".inflight"]))
            paused[n] += 1
        time.sleep(HOLD)
        s = stats()
        held += sum(int(s[n + ".queued"]) for n in who)
    command("resume" + arg)
    time.sleep(GAP)
    if k % every == every - 1 and n_snap < snaps:
        if n_snap % 3 == 2:
            if command("snapshot"):
                for n in names:
                    chain[n] += 1
                n_gsnap += 1
        else:
            n = names[snap_single % len(names)]
            snap_single += 1
            if command("snapshot " + n):
                chain[n] += 1
        n_snap += 1

for f in failures:
    print("FAILED: " + f)
print("cycles %d group %d snapshots %d group %d failures %d held %d "
      "seconds %.1f" % (cycles, n_group, n_snap, n_gsnap, len(failures),
                        held, time.monotonic() - start))
print("paused " + " ".join("%s=%d" % (n, paused[n]) for n in names))
print("chain " + " ".join("%s=%d" % (n, chain[n]) for n in names))
sys.exit(1 if failures else 0)
