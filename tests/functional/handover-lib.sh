# shellcheck shell=bash
# handover-lib.sh - handing a live VBD from daemon A to daemon B (two
# hosts over shared storage; docs/locking.md), for test-handover.sh (image
# files) and test-rbd-handover.sh (rbd images).
#
# Source it after lib.sh, then:
#
#	handover_start [EXTRA_OPTS]   two daemons, A and B (B's EXTRA_OPTS)
#	handover NAME A_CMD B_SPEC CHECK_FN
#
# handover: A runs A_CMD (create or open VBD NAME, read-write); a writer
# (tests/pylib/seqw.py, O_DIRECT, sequential, every write acknowledged
# before the next) writes a random pattern through a loop device
# (losetup --direct-io=on) on A's VBD.  Meanwhile B opens B_SPEC
# "standby" (beside A's writer: no refusal), a direct write on B waits
# and, A not releasing, fails after deadline_ms, and B's "resume" fails
# with ETIMEDOUT naming A's lock: never two writers.  A releases under
# the running writer: its next write fails, A refuses writes (EROFS) and
# still reads.  The writer goes on where it stopped through a loop device
# on B's VBD, whose first write takes the image over, to the end.  Every
# acknowledged byte is in B's VBD; after both close, CHECK_FN (called
# with NAME) checks the image's metadata its own way and leaves its data
# in $T/out.raw, where every acknowledged byte must be too, and B's
# timed-out write (the last 4 KiB) must not.

MiB=1048576
HO_SIZE=$((64 * MiB))		# the images' size
HO_PAT=$((24 * MiB))		# the writer's bytes: 384 writes of 64 KiB
HO_BS=65536
HO_DEADLINE_MS=2000

# handover_start [B_OPTS] [A_OPTS]: daemons A ($GA) and B ($GB), with
# deadline_ms=$HO_DEADLINE_MS; B may open what is in A's store.
handover_start() {
	local a=${2:+,$2}
	tapfs_start "$T/A" "$T/SA" "deadline_ms=$HO_DEADLINE_MS$a" || summary
	PID_A=$TAPFS_PID
	tapfs_start "$T/B" "$T/SB" \
		"deadline_ms=$HO_DEADLINE_MS,allow_path=$T/SA${1:+,$1}" ||
		summary
	PID_B=$TAPFS_PID
	GA=$T/A/g
	GB=$T/B/g
	check mkdir "$GA" "$GB"
	head -c $HO_PAT /dev/urandom >"$T/pat"
}

# ho_hold GROUP NAME: what the VBD holds its image for (.stats NAME.hold).
ho_hold() { stat_val "$1" "$2" hold; }

# ho_seqw NAME DEV START: the writer, in the background (BG_PID).
ho_seqw() {
	bg_start "seqw-$1-$3" "$PYTHON" -B -E -S "$PYLIB/seqw.py" "$2" \
		"$T/pat" $HO_BS 0.01 "$3"
}

# ho_acked OUTFILE: the bytes the writer saw acknowledged.
ho_acked() { awk '$1 == "acked" { print $2 }' "$1"; }

handover() {
	local d=$1 acmd=$2 bspec=$3 checkfn=$4 la lb w1 a1 w2 r junk
	local fmt=${bspec%%:*}
	msg "---- $d ($bspec) ----"
	ctl_ok "$GA" "$acmd" || return
	check_eq "$d: A holds it (active)" active "$(ho_hold "$GA" "$d")"
	loop_attach "$GA/$d" || return
	la=$LOOP_DEV

	ho_seqw "$d" "$la" 0
	w1=$BG_PID

	# B beside the writer: standby is no second writer.
	ctl_ok "$GB" "open $d $bspec standby"
	check_match "$d: B's .ctl line says standby" "^$d standby $fmt " \
		"$(ctl_line "$GB" "$d")"
	check_eq "$d: B holds it in standby" standby "$(ho_hold "$GB" "$d")"

	# A write on B waits for the image, then gives up: A never released.
	head -c 4096 /dev/urandom >"$T/junk"
	bg_start "junk-$d" dd if="$T/junk" of="$GB/$d" bs=4096 \
		seek=$(((HO_SIZE - 4096) / 4096)) oflag=direct conv=notrunc \
		status=none
	junk=$BG_PID
	r=$(ctl "$GB" "resume $d")
	check_eq "$d: B's resume while A writes -> ETIMEDOUT" ETIMEDOUT "$r"
	check_match "$d: the status names the deadline and A's lock" \
		"^status: error: ETIMEDOUT: resume: not taken over within deadline_ms $HO_DEADLINE_MS: .*(in use read-write by pid $PID_A \(tapfs\)|its exclusive lock is held by)" \
		"$(ctl_status "$GB")"
	check_match "$d: B's .ctl line shows the take-over's failure" \
		"^$d standby .*\(take-over: not taken over within deadline_ms" \
		"$(ctl_line "$GB" "$d")"
	bg_wait "$junk" 20
	check_eq "$d: B's write while A writes fails (dd exit 1)" 1 "$BG_RC"
	check_eq "$d: B still in standby" standby "$(ho_hold "$GB" "$d")"
	check_eq "$d: A still the writer" active "$(ho_hold "$GA" "$d")"

	# A releases under the writer.
	if pid_alive "$w1"; then
		msg "$d: releasing while the writer runs"
	else
		msg "$d: the writer ended before the release"
	fi
	ctl_ok "$GA" "release $d"
	check_match "$d: A's .ctl line says released" "^$d released " \
		"$(ctl_line "$GA" "$d")"
	check_eq "$d: A holds it released" released "$(ho_hold "$GA" "$d")"
	bg_wait "$w1" 60
	check_eq "$d: the writer on A stopped" 0 "$BG_RC"
	a1=$(ho_acked "$T/seqw-$d-0.out")
	msg "$d: writer on A: $(cat "$T/seqw-$d-0.out")"
	check test "${a1:-0}" -gt 0
	check_fsop "$d: A refuses a write after release" EROFS -- \
		pwrite "$GA/$d" 0 00
	check_eq "$d: A still reads" "$(head -c 8 "$T/pat" | od -An -tx1 |
		tr -d ' \n')" "$(fsop pread "$GA/$d" 0 8)"
	check_eq "$d: B not active yet (no write, no resume)" standby \
		"$(ho_hold "$GB" "$d")"

	# The writer goes on at B: its first write takes the image over.
	loop_attach "$GB/$d" || return
	lb=$LOOP_DEV
	ho_seqw "$d" "$lb" "$a1"
	w2=$BG_PID
	bg_wait "$w2" 120
	check_eq "$d: the writer on B ran to the end" \
		"0 acked $HO_PAT err none" "$BG_RC $(cat "$T/seqw-$d-$a1.out")"
	check_eq "$d: B is the writer now" active "$(ho_hold "$GB" "$d")"
	check_match "$d: B's .ctl line says running" "^$d running " \
		"$(ctl_line "$GB" "$d")"
	check_eq "$d: A still refuses writes" EROFS \
		"$(fsop pwrite "$GA/$d" 0 00)"

	# Every acknowledged byte is there, through B's VBD, and in the
	# image as the oracle reads it; B's timed-out write is not.
	check cmp -n $HO_PAT "$T/pat" "$lb"
	losetup -d "$la" "$lb"
	ctl_close "$GA" "$d"
	ctl_close "$GB" "$d"
	rm -f "$T/out.raw"
	"$checkfn" "$d"
	check cmp -n $HO_PAT "$T/pat" "$T/out.raw"
	check_eq "$d: B's timed-out write is not in the image" \
		"$(head -c 4096 /dev/zero | md5sum)" \
		"$(tail -c 4096 "$T/out.raw" | md5sum)"
	rm -f "$T/out.raw"
}
