#!/bin/bash
# stop.sh DIR -- stop the daemons that start.sh DIR started, by the PIDs in
# DIR/run/*.pid (only a PID whose command line names DIR/ceph.conf), then
# remove DIR.  Order: OSD, then mgr + mon (an OSD that gets SIGTERM while
# the mon is gone waits osd_mon_shutdown_timeout = 5 s for the mon).
# SIGTERM, SIGKILL after CEPH_MINI_STOP_GRACE seconds (default 5; 0 = SIGKILL
# at once, fine since the data is thrown away).
# CEPH_MINI_KEEP=1 keeps DIR (logs) after stopping.
# (From shared/ceph-mini, with start.sh.)
set -uo pipefail
DIR=${1:?usage: stop.sh DIR}
[ -d "$DIR" ] || exit 0
DIR=$(cd "$DIR" && pwd)
GRACE=${CEPH_MINI_STOP_GRACE:-5}
now() { date +%s%N; }

alive() { # pid -> 0 if running (a zombie counts as gone)
    local st
    st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}
ours() { # pid -> 0 if it is a daemon started with DIR/ceph.conf
    tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null | grep -qF -- "--conf $DIR/ceph.conf "
}
stop_pids() { # pid...
    local p sig=TERM deadline killed=0 rc=0
    [ "$GRACE" = 0 ] && sig=KILL
    for p in "$@"; do kill -s "$sig" "$p" 2>/dev/null; done
    deadline=$(( $(now) + GRACE * 1000000000 ))
    for p in "$@"; do
        while alive "$p"; do
            if [ "$(now)" -gt "$deadline" ]; then
                if [ $killed = 1 ]; then
                    echo "ceph-mini: pid $p does not die" >&2; rc=1; break
                fi
                kill -s KILL "$@" 2>/dev/null; killed=1
                deadline=$(( $(now) + 5000000000 ))
            fi
            sleep 0.02
        done
    done
    return $rc
}
pid_of() { # daemon -> pid if alive and ours
    local p
    p=$(cat "$DIR/run/$1.pid" 2>/dev/null) || return 0
    if alive "$p" && ours "$p"; then echo "$p"; fi
}

rc=0
p=$(pid_of osd.0); [ -n "$p" ] && { stop_pids $p || rc=1; }
ps=$(pid_of mgr.x; pid_of mon.a); [ -n "$ps" ] && { stop_pids $ps || rc=1; }

if [ $rc = 0 ] && [ "${CEPH_MINI_KEEP:-0}" != 1 ]; then
    rm -rf "$DIR"
fi
exit $rc
