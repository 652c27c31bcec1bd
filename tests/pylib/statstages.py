"""statstages.py VBD: the per-stage latency keys of VBD in the .stats text
on stdin are consistent: queue_lat_us, io_lat_us, reply_lat_us and
total_lat_us are there, the three stage means add up to the total mean
within the truncation of each to whole microseconds (total - sum in
[0, 2]), and every stage histogram counts every completed request
(reads + writes + flushes + discards).  Prints "ok" or exits with what
is wrong (test-stats)."""
import sys

STAGES = ("queue", "io", "reply", "total")
OPS = ("reads", "writes", "flushes", "discards")


def main(a):
    v = a[1]
    kv = {}
    for line in sys.stdin:
        k, _, val = line.rstrip("\n").partition(" ")
        if k.startswith(v + "."):
            kv[k[len(v) + 1:]] = val
    try:
        mean = {s: int(kv["%s_lat_us" % s]) for s in STAGES}
        done = sum(int(kv[o]) for o in OPS)
    except (KeyError, ValueError) as e:
        sys.exit("missing or not a number: %s" % e)
    gap = mean["total"] - mean["queue"] - mean["io"] - mean["reply"]
    if not 0 <= gap <= 2:
        sys.exit("queue %(queue)d + io %(io)d + reply %(reply)d µs "
                 "against total %(total)d µs" % mean)
    for s in STAGES:
        n = int(kv.get("%s_lat_us.le_inf" % s, 0))
        if n != done:
            sys.exit("%s_lat_us.le_inf %d, %d requests completed" %
                     (s, n, done))
    print("ok")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: statstages.py VBD")
    main(sys.argv)
