#!/bin/bash
# test-watchdog.sh - a VBD whose storage stops answering is failed.
#
# The fault filter holds reads of f for 6 s; with -o deadline_ms=1000 the
# watchdog fails f about 2 s after the read went in: its client gets EIO
# (the buffer stays reserved until the filter lets the read go), .ctl
# says 'failed' and why, new I/O gets EIO at once, pause skips it, and
# close works; the image stays locked until the stuck read returns, then
# the VBD is freed.  A healthy VBD of the same daemon keeps serving.
. "$(dirname "$0")/lib.sh"
requires dd timeout

M=$T/mnt
S=$T/store
G=$M/g

tapfs_start "$M" "$S" "deadline_ms=1000" || summary
check mkdir "$G"
ctl_ok "$G" "create h raw 16M"
check truncate -s 16M "$S/g/f.raw"
ctl_ok "$G" "open f fault:delay_ms=6000,ops=r:raw:$S/g/f.raw"

bg_start stuck dd if="$G/f" of=/dev/null bs=4k count=1 iflag=direct
STUCK=$BG_PID
# The other VBD serves while f's read hangs.
check timeout 10 dd if=/dev/urandom of="$G/h" bs=4k count=500 \
	oflag=direct conv=notrunc status=none
check timeout 10 dd if="$G/h" of=/dev/null bs=4k count=500 iflag=direct \
	status=none
check wait_for 10 vbd_failed "$G" f
check_match "f: failed, saying why" \
	"^f failed .*a read of 8 sectors at 0 has been in the image for [0-9]+ ms \\(deadline_ms 1000\\): the storage does not answer\\)$" \
	"$(ctl_line "$G" f)"
check_match "the log says it" "the VBD is failed" "$(cat "$TAPFS_LOG")"
bg_wait $STUCK 10
check_in "the stuck reader was answered (EIO), not left hanging" \
	"$BG_RC" 1
check_match "its error" "Input/output error" "$(cat "$T/stuck.out")"

check_fsop "new reads of f: EIO at once" EIO -- pread "$G/f" 0 512
check_fsop "new writes of f: EIO at once" EIO -- pwrite "$G/f" 0 00
ctl_err "$G" "pause f" EIO
ctl_ok "$G" "pause"			# the group: f is skipped
ctl_ok "$G" "resume"
check_match "h still running" "^h running " "$(ctl_line "$G" h)"
check_match ".stats: f failed" "failed" "$(stat_val "$G" f state)"

# Close works; the stuck read still holds f's image until it returns.
ctl_close "$G" f
check_eq "f is gone from .ctl" "" "$(ctl_line "$G" f)"
check_match "f.raw still in use while its read is stuck" \
	"^in use: read-write by pid $TAPFS_PID" \
	"$("$TAPFS_IMG" info "$S/g/f.raw" | grep '^in use')"
check wait_for 15 image_free "$S/g/f.raw"
check timeout 10 dd if="$G/h" of=/dev/null bs=4k count=100 iflag=direct \
	status=none
alive "at the end"
tapfs_stop
summary
