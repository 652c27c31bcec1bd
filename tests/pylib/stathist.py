"""stathist.py VBD OP COUNT: the latency histogram of OP for VBD in the
.stats text on stdin is well-formed and counts COUNT completions:
power-of-two buckets, cumulative, the last one and le_inf holding
COUNT, quantiles ordered below the last bound.  Prints "ok" or exits
with what is wrong (test-stats)."""
import sys


def main(a):
    v, op, want = a[1], a[2], int(a[3])
    pre = "%s.%s_lat_us." % (v, op)
    kv = {}
    for line in sys.stdin:
        k, _, val = line.rstrip("\n").partition(" ")
        if k.startswith(pre):
            kv[k[len(pre):]] = int(val)
    les = sorted((int(k[3:]), n) for k, n in kv.items()
                 if k.startswith("le_") and k != "le_inf")
    if kv.get("le_inf") != want:
        sys.exit("le_inf %s, expected %d" % (kv.get("le_inf"), want))
    prev = 0
    for bound, n in les:
        if bound & (bound - 1):
            sys.exit("bucket le_%d is not a power of two" % bound)
        if n < prev:
            sys.exit("le_%d = %d after %d: not cumulative" % (bound, n,
                                                               prev))
        prev = n
    if not les or les[-1][1] != want:
        sys.exit("the last bucket does not hold all %d" % want)
    p = [kv.get(q) for q in ("p50", "p99", "p999")]
    if None in p or not (p[0] <= p[1] <= p[2] <= les[-1][0]):
        sys.exit("quantiles %s not ordered below %d" % (p, les[-1][0]))
    print("ok")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: stathist.py VBD OP COUNT")
    main(sys.argv)
