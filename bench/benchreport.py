# SPDX-License-Identifier: MIT
"""benchreport - the figures and tables the bench scripts print.

Imported by the report code of bench/bench.sh and bench/bench-rbd.sh
(run with PYTHONPATH=bench/), so that every table reads the same way.
"""


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
