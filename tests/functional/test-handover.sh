#!/bin/bash
# test-handover.sh - handing a live VBD from one host to another over
# shared storage (docs/locking.md), for raw, qcow2 and vhd images.
#
# Two daemons stand for two hosts: A and B, each with its own store and
# mount, B allowed to open the images in A's store (the shared
# directory).  For each format:
#
#   - A creates the image; a writer (tests/pylib/seqw.py, O_DIRECT,
#     sequential, every write acknowledged before the next) writes a
#     random pattern through a loop device (losetup --direct-io=on) on
#     A's VBD;
#   - meanwhile B opens the image "standby" (beside A's writer: no
#     refusal), a direct write on B waits and, since A does not release,
#     fails with EIO after the deadline (deadline_ms=2000 here), and B's
#     "resume" fails with ETIMEDOUT naming A as the holder: never two
#     writers;
#   - A releases the image under the running writer: the writer's next
#     write fails, A refuses writes (EROFS) and still reads;
#   - the writer goes on from where A stopped through a loop device on
#     B's VBD: the first write takes the image over, and it runs to the
#     end;
#   - every acknowledged byte is in the image: B's VBD and, after closing,
#     the file through qemu-img (the outside oracle), which also checks
#     the qcow2/vhd metadata; B's write that timed out is not in it.
. "$(dirname "$0")/lib.sh"
requires python3 qemu-img losetup dd cmp
requires_root

MiB=1048576
SIZE=$((64 * MiB))
PAT=$((24 * MiB))	# the writer's bytes: 384 writes of 64 KiB
BS=65536
DEADLINE_MS=2000

tapfs_start "$T/A" "$T/SA" "deadline_ms=$DEADLINE_MS" || summary
PID_A=$TAPFS_PID
tapfs_start "$T/B" "$T/SB" "deadline_ms=$DEADLINE_MS,allow_path=$T/SA" ||
	summary
PID_B=$TAPFS_PID
GA=$T/A/g
GB=$T/B/g
check mkdir "$GA" "$GB"
head -c $PAT /dev/urandom >"$T/pat"

# hold GROUP NAME: what the VBD holds its image for (.stats NAME.hold).
hold() { stat_val "$1" "$2" hold; }

# seqw_start DEV START: the writer, in the background (BG_PID).
seqw_start() {
	bg_start "seqw-$fmt-$2" "$PYTHON" -B -E -S "$PYLIB/seqw.py" "$1" \
		"$T/pat" $BS 0.01 "$2"
}

# acked OUTFILE: the bytes the writer saw acknowledged.
acked() { awk '$1 == "acked" { print $2 }' "$1"; }

handover() {
	local fmt=$1 qfmt=$2 img d="d$1" la lb w1 a1 w2 a2 st junk
	img=$T/SA/g/$d.$fmt
	msg "---- $fmt ----"
	ctl_ok "$GA" "create $d $fmt 64M" || return
	check_eq "$fmt: A holds it (active)" active "$(hold "$GA" "$d")"
	loop_attach "$GA/$d" || return
	la=$LOOP_DEV

	seqw_start "$la" 0
	w1=$BG_PID

	# B beside the writer: standby is no second writer.
	ctl_ok "$GB" "open $d $fmt:$img standby"
	check_match "$fmt: B's .ctl line says standby" "^$d standby $fmt " \
		"$(ctl_line "$GB" "$d")"
	check_eq "$fmt: B holds it in standby" standby "$(hold "$GB" "$d")"

	# A write on B waits for the image, then gives up: A never released.
	head -c 4096 /dev/urandom >"$T/junk"
	bg_start "junk-$fmt" dd if="$T/junk" of="$GB/$d" bs=4096 \
		seek=$(((SIZE - 4096) / 4096)) oflag=direct conv=notrunc \
		status=none
	junk=$BG_PID
	r=$(ctl "$GB" "resume $d")
	check_eq "$fmt: B's resume while A writes -> ETIMEDOUT" ETIMEDOUT "$r"
	st=$(ctl_status "$GB")
	check_match "$fmt: the status names the deadline and A" \
		"^status: error: ETIMEDOUT: resume: not taken over within deadline_ms $DEADLINE_MS: $img is in use read-write by pid $PID_A \(tapfs\)" \
		"$st"
	check_match "$fmt: B's .ctl line shows the take-over's failure" \
		"^$d standby .*\(take-over: not taken over within deadline_ms" \
		"$(ctl_line "$GB" "$d")"
	bg_wait "$junk" 20
	check_in "$fmt: B's write while A writes fails (dd exit 1)" \
		"$BG_RC" 1
	check_eq "$fmt: B still in standby" standby "$(hold "$GB" "$d")"
	check_eq "$fmt: A still the writer" active "$(hold "$GA" "$d")"

	# A releases under the writer.
	if pid_alive "$w1"; then
		msg "$fmt: releasing while the writer runs"
	else
		msg "$fmt: the writer ended before the release"
	fi
	ctl_ok "$GA" "release $d"
	check_match "$fmt: A's .ctl line says released" "^$d released " \
		"$(ctl_line "$GA" "$d")"
	check_eq "$fmt: A holds it released" released "$(hold "$GA" "$d")"
	bg_wait "$w1" 60
	check_eq "$fmt: the writer on A stopped" 0 "$BG_RC"
	a1=$(acked "$T/seqw-$fmt-0.out")
	msg "$fmt: writer on A: $(cat "$T/seqw-$fmt-0.out")"
	check test "${a1:-0}" -gt 0
	check_fsop "$fmt: A refuses a write after release" EROFS -- \
		pwrite "$GA/$d" 0 00
	check_eq "$fmt: A still reads" "$(head -c 8 "$T/pat" | od -An -tx1 |
		tr -d ' \n')" "$(fsop pread "$GA/$d" 0 8)"
	check_eq "$fmt: B not active yet (no write, no resume)" standby \
		"$(hold "$GB" "$d")"

	# The writer goes on at B: its first write takes the image over.
	loop_attach "$GB/$d" || return
	lb=$LOOP_DEV
	seqw_start "$lb" "$a1"
	w2=$BG_PID
	bg_wait "$w2" 120
	a2=$(acked "$T/seqw-$fmt-$a1.out")
	check_eq "$fmt: the writer on B ran to the end" \
		"0 acked $PAT err none" "$BG_RC $(cat "$T/seqw-$fmt-$a1.out")"
	check_eq "$fmt: B is the writer now" active "$(hold "$GB" "$d")"
	check_match "$fmt: B's .ctl line says running" "^$d running " \
		"$(ctl_line "$GB" "$d")"
	check_eq "$fmt: A still refuses writes" EROFS \
		"$(fsop pwrite "$GA/$d" 0 00)"

	# Every acknowledged byte is there, through B's VBD.
	check cmp -n "$a2" "$T/pat" "$lb"
	losetup -d "$la" "$lb"
	ctl_close "$GA" "$d"
	ctl_close "$GB" "$d"

	# And in the file, by qemu-img: the data, and nothing of B's
	# timed-out write (the image's last 4 KiB read as zeros).
	# qemu-img checks no vpc: the metadata of a vhd by tapfs-img.
	case $qfmt in
	qcow2) check_out "$fmt: qemu-img check" 0 "No errors" \
		qemu-img check -f qcow2 "$img" ;;
	vpc) check "$TOP/build/tapfs-img" check "$img" ;;
	esac
	check qemu-img convert -f "$qfmt" -O raw "$img" "$T/out.raw"
	check cmp -n "$a2" "$T/pat" "$T/out.raw"
	check_eq "$fmt: B's timed-out write is not in the image" \
		"$(head -c 4096 /dev/zero | md5sum)" \
		"$(tail -c 4096 "$T/out.raw" | md5sum)"
	rm -f "$T/out.raw" "$img"
}

handover raw raw
handover qcow2 qcow2
handover vhd vpc

# Bad input: what cannot be handed over says so.
ctl_ok "$GA" "create r raw 1M"
ctl_err "$GA" "open r2 raw:$T/SA/g/r.raw bogus" EINVAL
ctl_err "$GA" "release nosuch" ENOENT
ctl_ok "$GB" "open r raw:$T/SA/g/r.raw standby"
ctl_err "$GB" "release r" EINVAL
check_match "release of a standby VBD says why" "is in standby" \
	"$(ctl_status "$GB")"
ctl_close "$GB" r
ctl_close "$GA" r
ctl_ok "$GA" "open ro raw:$T/SA/g/r.raw ro"
ctl_err "$GA" "release ro" EROFS
ctl_close "$GA" ro

alive "at the end (B)"
tapfs_stop "$PID_B" "$T/B"
tapfs_stop "$PID_A" "$T/A"
summary
