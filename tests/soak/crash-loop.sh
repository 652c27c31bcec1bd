#!/bin/bash
# crash-loop.sh - kill -9 the daemon at random moments under random writes,
# cycle after cycle, and check that nothing acknowledged is lost.
#
#	tests/soak/crash-loop.sh [CYCLES=N] [FORMATS="qcow vmdk"] ...
#	make soak CYCLES=50
#
# Settings, from the environment or as NAME=VALUE arguments:
#   CYCLES       cycles per format (default 50)
#   FORMATS      image formats, made with "create d FORMAT SIZE" (default
#                "raw vhd qcow2 qcow vmdk"; vmdk is monolithicSparse)
#   SIZE         the VBD's size, a multiple of 2M, at least 16M (default
#                256M)
#   SEED         the run's seed (default random; printed, so that a run can
#                be replayed: the writes, offsets and kill moments follow
#                from it, though what is in flight at the kill depends on
#                timing)
#   KILL_MAX_MS  latest kill, in ms after the writers start (default 2500)
#   THREADS      writer threads (default 4)
#   OPTS         more mount options for every daemon, e.g. "workers=2", or
#                "uring" (root first sets fuse.enable_uring=Y); default none
#
# Each format gets its own store (store=$T/store-FORMAT, which holds the
# image) and a VBD "d" of SIZE bytes, created empty.  Each cycle:
#   1. mount tapfs on the store (the VBD comes back from the manifest);
#   2. start tests/pylib/crashio.py writing into the first half of the VBD
#      (random writes of 1 B to 256 KiB from THREADS threads, partial
#      sectors included, each thread calling fsync now and then, every
#      write and fsync logged) and fio random writes (libaio, QD 8, 4k to
#      256k, an fsync every 16 writes) into the second half.  The writer's
#      window grows with each cycle (cycle c writes below c/CYCLES of the
#      half, a third of its writes in the part no earlier cycle wrote) and
#      fio moves to a new window each cycle (up to 16), so that vhd
#      blocks, qcow2 and qcow clusters and vmdk grains are allocated in
#      every cycle, not only the first;
#   3. SIGKILL the daemon: early (within 100 ms: often before the first
#      write), at a random time up to KILL_MAX_MS, or once the writer has
#      logged a random number (1-40) of fsyncs;
#   4. wait for the clients to fail, unmount the dead mount;
#   5. check the image: tapfs-img check (warnings, e.g. leaked space,
#      allowed) and, for qcow2 and vmdk, qemu-img check (corruption not
#      allowed; for qcow2 leaks are, and are counted: the next mount
#      repairs them, so they never add up; qemu-img check has no qcow
#      (v1) support, and finds no leaks in vmdk); read the first half
#      with an outside reader (the raw file itself, or qemu-img dd);
#   6. mount again and verify the first half through the VBD against the
#      model (crashio.py verify): every acknowledged write is there,
#      whether fsync'd or not (the daemon died, not the machine); a write
#      in flight at the kill left each sector either old or new; nothing
#      else changed.  The outside reader must have read the same bytes.
# The region's contents carry over: each cycle overwrites what the earlier
# ones wrote, and its model is what the previous cycle verified.
#
# Prints one figures line per format and a total: cycles, images checked,
# corruptions (failed image checks), lost bytes (acknowledged before the
# last fsync, or from earlier cycles, and not read back), acknowledged but
# unsynced bytes lost, torn bytes (in flight, neither old nor new), and for
# qcow2 the most leaked clusters a crash left and those left after the
# final clean unmount (must be 0: each mount repairs the last crash's);
# then "N passed, N failed".
. "$(dirname "$0")/../functional/lib.sh"

usage() {
	echo "usage: $0 [CYCLES=N] [FORMATS=\"raw vhd qcow2 qcow vmdk\"]" \
		"[SIZE=256M] [SEED=N] [KILL_MAX_MS=N] [THREADS=N]" \
		"[OPTS=OPTION,...]" >&2
	exit 2
}
for a in "$@"; do
	case "$a" in
	CYCLES=* | FORMATS=* | SIZE=* | SEED=* | KILL_MAX_MS=* | THREADS=* | \
	OPTS=*)
		export "${a?}" ;;
	*) usage ;;
	esac
done

requires "$PYTHON" fio qemu-img fusermount3 numfmt

CYCLES=${CYCLES:-50}
FORMATS=${FORMATS:-raw vhd qcow2 qcow vmdk}
SIZE=${SIZE:-256M}
KILL_MAX_MS=${KILL_MAX_MS:-2500}
THREADS=${THREADS:-4}
SEED=${SEED:-$(((RANDOM << 15 | RANDOM) % 1000000000))}
TAPFS_IMG=${TAPFS_IMG:-$TOP/build/tapfs-img}
CRASHIO=$PYLIB/crashio.py
MiB=1048576

SIZE_B=$(numfmt --from=iec "${SIZE%B}" 2>/dev/null) || usage
case "$CYCLES$KILL_MAX_MS$THREADS$SEED" in
*[!0-9]*) usage ;;
esac
if [ $((SIZE_B % (2 * MiB))) -ne 0 ] || [ "$SIZE_B" -lt $((16 * MiB)) ] ||
	[ "$KILL_MAX_MS" -lt 200 ] || [ "$CYCLES" -lt 1 ]; then
	usage
fi
REGION=$((SIZE_B / 2))
NWIN=$((CYCLES < 16 ? CYCLES : 16))
WIN=$(((SIZE_B - REGION) / NWIN / 65536 * 65536))
requires "$TAPFS" "$TAPFS_IMG"
RANDOM=$SEED
OPTS=${OPTS:-}
echo "crash-loop: SEED=$SEED CYCLES=$CYCLES FORMATS=\"$FORMATS\"" \
	"SIZE=$SIZE KILL_MAX_MS=$KILL_MAX_MS THREADS=$THREADS" \
	"OPTS=\"$OPTS\""

# ---- the clients ----------------------------------------------------------

WPID=
FPID=
# stop_clients: the writer and fio of this cycle are gone (SIGKILL by PID
# after 20 s: they should fail at once when the daemon dies).
stop_clients() {
	local p
	for p in $WPID $FPID; do
		if ! wait_gone "$p" 20; then
			msg "client $p still running, killing it"
			kill -KILL "$p" 2>/dev/null
			wait_gone "$p" 5
		fi
		wait "$p" 2>/dev/null
	done
	WPID=
	FPID=
}
on_exit stop_clients

# ms_sleep MS
ms_sleep() { sleep "$(printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)))"; }

# kill_moment LOG: wait for this cycle's moment to kill; sets KILL_HOW.
kill_moment() {
	local r=$((RANDOM % 100)) ms k end
	if [ $r -lt 20 ]; then
		ms=$((RANDOM % 100))
		KILL_HOW="early, ${ms} ms"
		ms_sleep $ms
	elif [ $r -lt 70 ]; then
		ms=$((100 + RANDOM % (KILL_MAX_MS - 100)))
		KILL_HOW="after ${ms} ms"
		ms_sleep $ms
	else
		k=$((1 + RANDOM % 40))
		end=$((SECONDS + 1 + 3 * KILL_MAX_MS / 1000))
		while [ "$(grep -c '^F' "$1" 2>/dev/null)" -lt $k ] &&
			[ $SECONDS -lt $end ] && pid_alive "$WPID"; do
			sleep 0.02
		done
		KILL_HOW="after $(grep -c '^F' "$1") of $k fsyncs"
	fi
}

# ---- checks ---------------------------------------------------------------

# image_check FMT IMG: tapfs-img check, and qemu-img check for qcow2 and
# vmdk; bumps n_checked, and n_corrupt per failure.
image_check() {
	local fmt=$1 img=$2 out rc leaks
	n_checked=$((n_checked + 1))
	out=$("$TAPFS_IMG" check "$img" 2>&1)
	rc=$?
	if [ $rc -eq 0 ]; then
		ok "$fmt cycle $c: tapfs-img check: $(printf '%s\n' "$out" |
			tail -n 1 | sed "s|^$img: ||" | cut -c1-60)"
	else
		n_corrupt=$((n_corrupt + 1))
		fail "$fmt cycle $c: tapfs-img check" "exit $rc: $(printf \
			'%s' "$out" | grep -vE ': (warning|leak): ' | head -n 5)"
	fi
	case "$fmt" in
	qcow2 | vmdk) ;;
	*) return 0 ;;
	esac
	n_checked=$((n_checked + 1))
	out=$(qemu-img check -f "$fmt" "$img" 2>&1)
	rc=$?
	# 0 clean, 3 leaked clusters only; 2 corruption, 1 check failed.
	if { [ $rc -eq 0 ] || [ $rc -eq 3 ]; } &&
		! printf '%s\n' "$out" | grep -q '^ERROR'; then
		leaks=$(printf '%s\n' "$out" |
			sed -n 's/^\([0-9]*\) leaked clusters.*/\1/p')
		leaks=${leaks:-0}
		ok "$fmt cycle $c: qemu-img check (exit $rc, $leaks leaked)"
		[ "$leaks" -gt "$n_leak_max" ] && n_leak_max=$leaks
		if [ "$fmt" = qcow2 ] && [ "$c" = end ]; then
			n_leak_end=$leaks
			check_eq "$fmt: no leaked cluster after the clean \
unmount (each mount repaired the crash before it)" 0 "$leaks"
		fi
	else
		n_corrupt=$((n_corrupt + 1))
		fail "$fmt cycle $c: qemu-img check" "exit $rc: $(printf \
			'%s' "$out" | grep -m 5 -iE 'error|corrupt')"
	fi
}

# outside_read FMT IMG OUT: the region as a reader other than tapfs sees
# it (the raw image file itself; qemu-img for the others).
outside_read() {
	case "$1" in
	raw) ln -sf "$2" "$3" ;;
	vhd) rm -f "$3"; qemu-img dd -f vpc -O raw bs=$MiB \
		count=$((REGION / MiB)) if="$2" of="$3" ;;
	*) rm -f "$3"; qemu-img dd -f "$1" -O raw bs=$MiB \
		count=$((REGION / MiB)) if="$2" of="$3" ;;
	esac
}

# fig KEY LINE: the value of KEY=N in a "key=value ..." line (0 if none).
fig() {
	local v
	v=$(printf '%s\n' "$2" | tr ' ' '\n' | sed -n "s/^$1=//p")
	echo "${v:-0}"
}

# wait_vbd G LINE_PREFIX: the VBD is back and running (the daemon opens
# the manifest's VBDs once the mount is live).
wait_vbd() {
	local end=$((SECONDS + 30)) line
	while :; do
		line=$(ctl_line "$1" d 2>/dev/null)
		case "$line" in
		"d running "*) return 0 ;;
		esac
		[ $SECONDS -ge $end ] && break
		sleep 0.1
	done
	echo "${line:-no line for d in $1/.ctl}"
	return 1
}

# ---- the loop -------------------------------------------------------------

T_CYCLES=0 T_CHECKED=0 T_CORRUPT=0 T_LOST=0 T_UNSYNCED=0 T_TORN=0
T_ACKED=0 T_DURABLE=0 T_INFLIGHT=0 T_BAD=0 T_LEAK_END=0
FIGS=()

# run_format FMT: CYCLES crash cycles on a fresh VBD of format FMT.
run_format() {
	local fmt=$1 S=$T/store-$1 M=$T/mnt-$1 G img model log out why alive
	local fresh limit
	local n_cycles=0 n_lost=0 n_unsynced=0 n_torn=0 n_acked=0
	local n_durable=0 n_inflight=0 n_bad=0 t0=$SECONDS broken=0
	n_checked=0
	n_corrupt=0
	n_leak_max=0
	n_leak_end=0
	G=$M/g
	img=$S/g/d.$fmt
	model=$T/$fmt.model

	tapfs_start "$M" "$S" "$OPTS" || return 1
	check mkdir "$G" || return 1
	ctl_ok "$G" "create d $fmt $SIZE_B" || return 1
	check test -f "$img" || return 1

	limit=0
	for c in $(seq 1 "$CYCLES"); do
		log=$T/$fmt.log
		: >"$log"
		# The writer's window grows by REGION/CYCLES each cycle, and
		# the fio job moves to the next of NWIN windows: so that every
		# cycle, not only the first few, allocates in vhd and qcow2.
		fresh=$limit
		limit=$((REGION * c / CYCLES / 4096 * 4096))
		[ $limit -ge $MiB ] || limit=$MiB
		"$PYTHON" -B -E -S "$CRASHIO" write "$G/d" "$log" "$SEED/$fmt/$c" \
			$fresh $limit "$THREADS" \
			$((KILL_MAX_MS * 3 / 1000 + 60)) >"$T/$fmt.writer" 2>&1 &
		WPID=$!
		fio --name=load --filename="$G/d" --ioengine=libaio --direct=1 \
			--rw=randwrite --bsrange=4k-256k --iodepth=8 \
			--offset=$((REGION + (c - 1) % NWIN * WIN)) --size=$WIN \
			--norandommap --fsync=16 --time_based --runtime=300 \
			--randseed=$((RANDOM + 1)) --output=/dev/null \
			>/dev/null 2>&1 &
		FPID=$!
		kill_moment "$log"
		alive=0
		pid_alive "$WPID" && alive=1
		kill -KILL "$TAPFS_PID"
		# wait(1) returns once every thread has exited, so the AIO
		# the daemon had in flight has finished too.
		{ wait "$TAPFS_PID"; } 2>/dev/null
		stop_clients
		if is_mounted "$M"; then
			fusermount3 -u "$M" 2>/dev/null || umount -l "$M"
		fi
		n_cycles=$((n_cycles + 1))
		msg "$fmt cycle $c: killed $KILL_HOW: $(cat "$T/$fmt.writer")"
		# Until the kill the writer must have met no error.
		[ $alive = 1 ] || fail "$fmt cycle $c: the writer runs until" \
			"the kill" "it had stopped: $(cat "$T/$fmt.writer")"

		image_check "$fmt" "$img"
		outside_read "$fmt" "$img" "$T/$fmt.outside" ||
			fail "$fmt cycle $c: outside read of $img"

		if ! tapfs_start "$M" "$S" "$OPTS"; then
			broken=1
			break
		fi
		if ! why=$(wait_vbd "$G"); then
			fail "$fmt cycle $c: the VBD is back after the crash" "$why"
			broken=1
			break
		fi
		out=$("$PYTHON" -B -E -S "$CRASHIO" verify "$G/d" "$model" "$log" \
			$REGION 2>&1)
		case "$out" in
		acked=*) ;;
		*) fail "$fmt cycle $c: verify" "$(printf '%s' "$out" |
			tail -n 3)"; n_bad=$((n_bad + 1)); continue ;;
		esac
		n_acked=$((n_acked + $(fig bytes_acked "$out")))
		n_durable=$((n_durable + $(fig bytes_durable "$out")))
		n_inflight=$((n_inflight + $(fig inflight "$out")))
		n_lost=$((n_lost + $(fig lost "$out")))
		n_unsynced=$((n_unsynced + $(fig unsynced_lost "$out")))
		n_torn=$((n_torn + $(fig torn "$out")))
		if printf '%s\n' "$out" | grep -q '^BAD'; then
			n_bad=$((n_bad + 1))
			fail "$fmt cycle $c: every acknowledged write reads back" \
				"killed $KILL_HOW, seed $SEED/$fmt/$c: $(printf \
				'%s' "$out" | head -n 6)"
		else
			ok "$fmt cycle $c: every acknowledged write reads back" \
"($(printf '%s' "$out" | head -n 1))"
		fi
		check cmp -n $REGION "$T/$fmt.outside" "$model"
	done

	# A clean end: unmount, and the image is whole and holds the model.
	if [ $broken = 0 ]; then
		tapfs_stop
		c=end
		image_check "$fmt" "$img"
		outside_read "$fmt" "$img" "$T/$fmt.outside" &&
			check cmp -n $REGION "$T/$fmt.outside" "$model"
	fi
	rm -f "$T/$fmt.outside" "$model"

	if [ "$fmt" = qcow2 ]; then
		leakfig=$(printf '%9d %9d' $n_leak_max $n_leak_end)
		T_LEAK_END=$((T_LEAK_END + n_leak_end))
	else
		leakfig=$(printf '%9s %9s' - -)
	fi
	FIGS+=("$(printf '%-6s %6d %7d %11d %10d %14d %5d %14d %8d %s  %ds' \
		"$fmt" $n_cycles $n_checked $n_corrupt $n_lost $n_unsynced \
		$n_torn $n_durable $n_inflight "$leakfig" $((SECONDS - t0)))")
	T_CYCLES=$((T_CYCLES + n_cycles))
	T_CHECKED=$((T_CHECKED + n_checked))
	T_CORRUPT=$((T_CORRUPT + n_corrupt))
	T_LOST=$((T_LOST + n_lost))
	T_UNSYNCED=$((T_UNSYNCED + n_unsynced))
	T_TORN=$((T_TORN + n_torn))
	T_ACKED=$((T_ACKED + n_acked))
	T_DURABLE=$((T_DURABLE + n_durable))
	T_INFLIGHT=$((T_INFLIGHT + n_inflight))
	T_BAD=$((T_BAD + n_bad))
	[ $broken = 0 ]
}

START=$SECONDS
for f in $FORMATS; do
	case "$f" in
	raw | vhd | qcow2 | qcow | vmdk) ;;
	*) fail "format $f" "not raw, vhd, qcow2, qcow or vmdk"; continue ;;
	esac
	run_format "$f" || fail "$f: crash loop stopped early"
done

echo "crash-loop figures (SEED=$SEED):"
printf '%-6s %6s %7s %11s %10s %14s %5s %14s %8s %9s %9s  %s\n' format \
	cycles checked corruptions lost_bytes unsynced_lost torn \
	durable_bytes inflight leaks_max leaks_end time
for l in "${FIGS[@]}"; do
	echo "$l"
done
printf '%-6s %6d %7d %11d %10d %14d %5d %14d %8d %9s %9d  %ds\n' total \
	$T_CYCLES $T_CHECKED $T_CORRUPT $T_LOST $T_UNSYNCED $T_TORN \
	$T_DURABLE $T_INFLIGHT - $T_LEAK_END $((SECONDS - START))
echo "crash-loop: $T_CYCLES cycles, $T_CHECKED images checked," \
	"$T_CORRUPT corruptions, $T_LOST lost bytes ($T_DURABLE bytes" \
	"fsync'd and $T_ACKED acknowledged in all), $T_UNSYNCED" \
	"acknowledged-but-unsynced bytes lost, $T_TORN torn bytes;" \
	"$T_BAD cycles failed verification"
summary
