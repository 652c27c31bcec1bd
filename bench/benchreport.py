# SPDX-License-Identifier: MIT
"""benchreport - the figures and tables the bench scripts print.

Imported by the report code of bench/bench.sh and bench/bench-rbd.sh
(run with PYTHONPATH=bench/), so that every table reads the same way.
"""

import json


def fio_result(path, unit):
    """A fio --output-format=json file's first job: (value, iops), the
    value in IOPS or, for "mibs" rows, MiB/s, of whichever direction
    moved data; None when the job reports an error.  (fio may print
    warnings before the JSON: they are skipped.)"""
    with open(path) as f:
        text = f.read()
    job = json.loads(text[text.index("{"):])["jobs"][0]
    if job.get("error"):
        return None
    d = job["read"] if job["read"]["io_bytes"] else job["write"]
    return (d["iops"] if unit == "iops" else d["bw_bytes"] / 2**20,
            d["iops"])


def fmt(v, unit):
    """A result as printed: IOPS as 12.3k, "mibs" rows as 456 MiB/s;
    None (not run) as n/a, and a failed run as fail."""
    if v is None:
        return "n/a"
    if v == "fail":
        return "fail"
    v = float(v)
    if unit == "mibs":
        return "%.0f MiB/s" % v
    return "%.1fk" % (v / 1000) if v >= 1000 else "%.0f" % v


def ratio(v, r):
    """v / r to two places, or - when either is missing or failed."""
    try:
        return "%.2f" % (float(v) / float(r))
    except (TypeError, ValueError, ZeroDivisionError):
        return "-"


def merge_rounds(values):
    """The rounds of one figure (strings as the bench wrote them) as one
    string: the median of numbers; "fail" if any round failed; any other
    word (a verify's ok or FAIL, a CPU's -) as the last round gave it."""
    if "fail" in values:
        return "fail"
    try:
        xs = sorted(float(v) for v in values)
    except ValueError:
        return values[-1]
    n = len(xs)
    m = xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2
    return "%.1f" % m


def ratio_range(vs, rs):
    """The range, lowest-highest, of round k's ratio vs[k] / rs[k] over
    the rounds (lists of strings, in the order the rounds ran); "-" with
    fewer than two rounds on both sides or a round that failed."""
    try:
        q = sorted(float(v) / float(r) for v, r in zip(vs, rs, strict=True))
    except (TypeError, ValueError, ZeroDivisionError):
        return "-"
    return "%.2f-%.2f" % (q[0], q[-1]) if len(q) > 1 else "-"


def table(hdr, out):
    """Print a Markdown table: hdr, then the rows of out (lists of
    strings; a row whose first cell is --- is a rule); the first column
    left-aligned, the others right-aligned."""
    out = [hdr, ["---"] * len(hdr)] + out
    w = [max(len(row[c]) for row in out) for c in range(len(hdr))]
    for row in out:
        if row[0] == "---":
            row = ["-" * w[c] for c in range(len(hdr))]
        print("| " + " | ".join(s.ljust(w[c]) if c == 0 else s.rjust(w[c])
                                for c, s in enumerate(row)) + " |")


def fio_clat_us(path):
    """A fio JSON file's first job: (mean, p99) completion latency in
    microseconds, of whichever direction moved data."""
    with open(path) as f:
        text = f.read()
    job = json.loads(text[text.index("{"):])["jobs"][0]
    d = job["read"] if job["read"]["io_bytes"] else job["write"]
    clat = d["clat_ns"]
    p99 = clat.get("percentile", {}).get("99.000000", 0)
    return clat["mean"] / 1000, p99 / 1000


def host_busy_ticks(cpu_line):
    """The busy clock ticks of /proc/stat's "cpu" line: user, system,
    irq, softirq and steal; not nice (niced background jobs stay out),
    idle or iowait."""
    return sum(int(x) for i, x in enumerate(cpu_line.split()[1:9])
               if i not in (1, 3, 4))


def proc_cpu_ticks(stat_line):
    """utime + stime of a /proc/PID/stat line, in clock ticks (every
    thread of the process; comm may hold spaces)."""
    f = stat_line[stat_line.rindex(")") + 2:].split()
    return int(f[11]) + int(f[12])


def fio_cpu_us(path):
    """A fio JSON file's first job: fio's own CPU time (usr + sys) per
    I/O in microseconds, at its measured rate."""
    with open(path) as f:
        text = f.read()
    job = json.loads(text[text.index("{"):])["jobs"][0]
    d = job["read"] if job["read"]["io_bytes"] else job["write"]
    if not d["iops"]:
        return 0.0
    return (job["usr_cpu"] + job["sys_cpu"]) / 100 * 1e6 / d["iops"]
