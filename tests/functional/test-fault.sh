#!/bin/bash
# test-fault.sh - storage errors injected through the fault filter.
#
# A fault:SETTINGS:DRIVER:PATH VBD forwards everything to the image below
# until "fault NAME SETTINGS" in .ctl makes it fail or delay requests.
# Transient errors (EAGAIN bursts shorter than the retry budget) must be
# invisible to a verifying client and counted as retries; persistent EIO
# must reach the client as EIO, within the deadline; a failing flush must
# reach fsync; nothing may hang.
. "$(dirname "$0")/lib.sh"
requires fio python3

M=$T/mnt
G=$M/g
# Retry fast, give up after 2 s: the bounds this test measures against.
tapfs_start "$M" "$T/store" "allow_path=$T,retry_max=6,retry_delay_ms=5,deadline_ms=2000" ||
	summary
check mkdir "$G"
check truncate -s 128M "$T/img"
ctl_ok "$G" "open d fault:none:raw:$T/img"
check_match "chain shows the filter" "fault:none:raw:$T/img -> aio:$T/img" \
	"$(ctl_line "$G" d)"

# Transient: every 7th read or write fails with EAGAIN once;
# the retries hide them from a verifying client.
ctl_ok "$G" "fault d err=EAGAIN,ops=rw,every=7"
fio_verify transient 120 --filename="$G/d" --ioengine=libaio --direct=1 \
	--rw=randwrite --bs=4k --iodepth=16 --size=32M --verify=crc32c \
	--do_verify=1
r=$(stat_val "$G" d retries)
check_eq "transient errors were retried (retries > 0)" 1 \
	"$( [ "${r:-0}" -gt 0 ] && echo 1 || echo 0)"
check_eq "and none reached a client" 0 "$(stat_val "$G" d errors)"

# A burst shorter than the budget: invisible too.
ctl_ok "$G" "fault d err=EBUSY,ops=w,burst=4"
check_fsop "write through an EBUSY burst" 512 -- pwrite "$G/d" 0 \
	"$(printf 'ab%.0s' $(seq 512))"

# Persistent EIO: the client gets EIO at once (EIO is not transient by
# default), and the counters say so.
ctl_ok "$G" "fault d err=EIO,ops=w"
e0=$(stat_val "$G" d errors)
check_fsop "persistent EIO reaches the writer" EIO -- pwrite "$G/d" 4096 00
check_eq "errors counted" $((e0 + 1)) "$(stat_val "$G" d errors)"
check_fsop "reads still work" abab -- pread "$G/d" 0 2

# Persistent EAGAIN: retried until the budget runs out, then EIO, well
# within the 2 s deadline (the retries take 5+10+...+160 ms).
ctl_ok "$G" "fault d err=EAGAIN,ops=r"
t0=$(date +%s%N)
check_fsop "persistent EAGAIN becomes EIO" EIO -- pread "$G/d" 0 512
ms=$((($(date +%s%N) - t0) / 1000000))
check_eq "gave up within the deadline (${ms} ms)" 1 \
	"$( [ "$ms" -lt 2500 ] && echo 1 || echo 0)"

# A failing flush is reported to fsync, never swallowed.
ctl_ok "$G" "fault d err=EIO,ops=f,burst=1"
check_fsop "fsync sees the flush error" EIO -- fsync "$G/d"
check_fsop "the next fsync works" OK -- fsync "$G/d"

# Delays stall, they do not fail.
ctl_ok "$G" "fault d ops=rw,delay_ms=200"
t0=$(date +%s%N)
check_fsop "a delayed read completes" abab -- pread "$G/d" 0 2
ms=$((($(date +%s%N) - t0) / 1000000))
check_eq "and was held (${ms} ms >= 200)" 1 \
	"$( [ "$ms" -ge 200 ] && echo 1 || echo 0)"

# Bad settings are refused with the reason; the old one stays.
ctl_err "$G" "fault d frob" EINVAL "bad fault setting 'frob'"
ctl_err "$G" "fault d rate=101" EINVAL "bad fault setting"
ctl_ok "$G" "create plain raw 1M"
ctl_err "$G" "fault plain none" EINVAL "has no fault filter"
ctl_err "$G" "snapshot d" EINVAL "filter"

# The filter parses its own argument, at open as at run time; what it
# stands on is judged by the path policy like any image.  fs/ passes the
# text through, and the filter's reason reaches the status line.
ctl_err "$G" "open b1 fault:frob:raw:$T/img" EINVAL \
	"bad fault setting 'frob'"
ctl_err "$G" "open b2 fault:none" EINVAL "'none' is not SETTINGS:DRIVER:PATH"
ctl_err "$G" "open b3 fault:none:raw:img" EINVAL "path 'img' is not absolute"
ctl_err "$G" "open b4 fault:none:raw:$G/d" EINVAL "inside this tapfs mount"
ctl_err "$G" "open b5 fault:none:raw:/etc/passwd" EACCES "outside the allowed"
check truncate -s 1M "$T/img2"
ctl_ok "$G" "open b6 fault:err=EIO,ops=r:raw:$T/img2"
check_fsop "settings given at open apply" EIO -- pread "$G/b6" 0 512
ctl_close "$G" b6

ctl_ok "$G" "fault d none"
ctl_close "$G" d
ctl_close "$G" plain
tapfs_stop
summary
