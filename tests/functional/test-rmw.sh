#!/bin/bash
# test-rmw.sh - partial-sector writes from many writers at once.
#
# Regression: a write that does not cover whole 512-byte sectors is done
# as read-modify-write, which copies the payload only after the old
# sectors are read; the payload lived in the FUSE receive buffer, which
# the next request overwrote (8 writers: 3192 of 3200 writes wrong).
# Every writer owns its own region, so every read-back must match, and
# bytes no writer touched must still be zero.
. "$(dirname "$0")/lib.sh"
requires python3

M=$T/mnt
G=$M/g

tapfs_start "$M" "$T/store" || summary
check mkdir "$G"
ctl_ok "$G" "create d raw 16M"

# rmw VBD THREADS: concurrent small writes, each read back (pylib/rmw.py).
rmw() { pylib rmw "$@"; }

check rmw "$G/d" 8
check rmw "$G/d" 1
ctl_close "$G" d
tapfs_stop
summary
