# shellcheck shell=bash
# lib.sh - shared helpers for the tapfs functional tests.
#
# Source it first thing from a test script:
#
#	. "$(dirname "$0")/lib.sh"
#	requires fio
#	tapfs_start "$T/mnt" "$T/store"
#	check test -d "$T/mnt"
#	...
#	tapfs_stop
#	summary
#
# What it provides:
#   T              a fresh temp dir (mktemp -d under /tmp), removed at exit;
#                  the test runs in it (fio's verify state files land there)
#   TOP, TAPFS     repo root; the daemon (default $TOP/build/tapfs)
#   TEST_DIR       the directory of the test script (absolute)
#   requires CMD.. skip the test (exit 77) when a command is missing
#   ok / fail      record one passed / failed check
#   check CMD..    run CMD, record pass/fail by its exit status
#   check_out NAME RC ERE CMD..  CMD exits RC and prints a line matching ERE
#   same_bytes NAME A B  the files A and B hold the same bytes (cmp)
#   qemu_io, qemu_raw  qemu-io commands on an image; qemu-img convert -O raw
#   on_exit "cmd"  push a cleanup command; run LIFO on EXIT/INT/TERM
#   tapfs_start    start a foreground daemon, wait until the mount is live
#   tapfs_stop     unmount; fail unless the daemon exits with status 0
#   loop_attach    losetup --direct-io=on, detached at exit
#   fsop           single system calls (write/open/pwrite/...) from python,
#                  printing OK, a byte count or data, or the errno name
#   bg_start/bg_wait  a background job stopped by its PID at exit; its status
#   wait_for S CMD.. poll CMD until it succeeds, at most S seconds
#   alive WHERE    the daemon still runs (else its sanitizer report, stop)
#   fuzz_seed      keep a damaged image as a fuzzing seed (FUZZ_SEEDS=DIR)
#   pylib MOD ARGS run the program tests/pylib/MOD.py ($PYLIB)
#   json_field K.. a field of the JSON document on stdin
#   summary        print "N passed, N failed" and exit accordingly
#
# A skipped test exits 77; run.sh counts it as skipped.

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TAPFS=${TAPFS:-$TOP/build/tapfs}
TAPFS_IMG=${TAPFS_IMG:-$TOP/build/tapfs-img}
MOUNT_TAPFS=${MOUNT_TAPFS:-$TOP/mount-helpers/mount.tapfs}
TEST_NAME=$(basename "$0" .sh)
TEST_DIR=$(cd "$(dirname "$0")" && pwd)
export LC_ALL=C

# The system python starts in 35 ms; a version-manager shim may take 0.5 s.
if [ -z "${PYTHON:-}" ]; then
	if [ -x /usr/bin/python3 ]; then
		PYTHON=/usr/bin/python3
	else
		PYTHON=python3
	fi
fi
# The tests' python programs (standard library only), one module each.
PYLIB=$TOP/tests/pylib

# How long the daemon may take to mount, and to exit after an unmount.
TAPFS_START_TIMEOUT=${TAPFS_START_TIMEOUT:-10}
TAPFS_STOP_TIMEOUT=${TAPFS_STOP_TIMEOUT:-30}

_n_pass=0
_n_fail=0
_cleanup=()
_tapfs_n=0

# ---- reporting -----------------------------------------------------------

msg() { printf '%s: %s\n' "$TEST_NAME" "$*" >&2; }

ok() {
	_n_pass=$((_n_pass + 1))
	printf 'ok   - %s\n' "$1"
}

# fail NAME [MSG]
fail() {
	_n_fail=$((_n_fail + 1))
	if [ -n "${2:-}" ]; then
		printf 'FAIL - %s: %s\n' "$1" "$2"
	else
		printf 'FAIL - %s\n' "$1"
	fi
}

# check CMD...: run CMD; pass if it exits 0.
check() {
	local out rc
	out=$("$@" 2>&1)
	rc=$?
	if [ $rc -eq 0 ]; then
		ok "$*"
	else
		fail "$*" "exit $rc${out:+: $(printf '%s' "$out" | tail -n 3)}"
	fi
	return $rc
}

# check_not CMD...: run CMD; pass if it exits non-zero.
check_not() {
	if "$@" >/dev/null 2>&1; then
		fail "! $*" "succeeded, expected failure"
		return 1
	fi
	ok "! $*"
}

# check_eq NAME EXPECTED GOT
check_eq() {
	if [ "$2" = "$3" ]; then
		ok "$1"
	else
		fail "$1" "expected '$2', got '$3'"
		return 1
	fi
}

# same_bytes NAME A B: A and B hold the same bytes (cmp names the first
# difference).
same_bytes() {
	local out
	if out=$(cmp "$2" "$3" 2>&1); then
		ok "$1"
	else
		fail "$1" "$out"
	fi
}

# check_match NAME ERE STRING: STRING matches the extended regex ERE.
check_match() {
	if printf '%s\n' "$3" | grep -Eq -- "$2"; then
		ok "$1"
	else
		fail "$1" "'$3' does not match /$2/"
		return 1
	fi
}

# check_out NAME WANT_RC ERE CMD...: CMD exits WANT_RC and a line of its
# output (stdout and stderr) matches ERE.
check_out() {
	local name=$1 want=$2 re=$3 out rc
	shift 3
	out=$("$@" 2>&1)
	rc=$?
	if [ $rc -ne "$want" ]; then
		fail "$name" "exit $rc, expected $want: $(printf '%s' "$out" |
			tail -n 3)"
	elif ! printf '%s\n' "$out" | grep -Eq -- "$re"; then
		fail "$name" "no line matches /$re/ in: $(printf '%s' "$out" |
			tail -n 3)"
	else
		ok "$name"
	fi
}

# qemu_io FMT FILE CMD...: one qemu-io run on FILE as FMT, each CMD a -c
# (output discarded; the exit status is qemu-io's).
qemu_io() {
	local fmt=$1 file=$2 args=() c
	shift 2
	for c in "$@"; do
		args+=(-c "$c")
	done
	qemu-io -f "$fmt" "${args[@]}" "$file" >/dev/null
}

# qemu_raw IMG RAW: qemu-img's reading of IMG through its chain, into the
# raw file RAW (replaced).
qemu_raw() {
	rm -f "$2"
	qemu-img convert -O raw "$1" "$2"
}

# check_in NAME GOT ALT...: GOT is one of the alternatives.
check_in() {
	local name=$1 got=$2 a
	shift 2
	for a in "$@"; do
		if [ "$got" = "$a" ]; then
			ok "$name"
			return 0
		fi
	done
	fail "$name" "expected one of '$*', got '$got'"
	return 1
}

# summary: run the cleanup stack, then print the closing line; exit 1 if
# anything failed.
summary() {
	if [ $((_n_pass + _n_fail)) -eq 0 ]; then
		fail "$TEST_NAME" "no check was run"
	fi
	_run_cleanup
	echo "$_n_pass passed, $_n_fail failed"
	[ $_n_fail -eq 0 ] && exit 0
	exit 1
}

# requires CMD...: skip the whole test if a command is missing.
requires() {
	local c
	for c in "$@"; do
		if ! command -v "$c" >/dev/null 2>&1 && [ ! -x "$c" ]; then
			echo "SKIP: $TEST_NAME: requires $c"
			exit 77
		fi
	done
}

# requires_root: loop devices, mount(2).
requires_root() {
	if [ "$(id -u)" -ne 0 ]; then
		echo "SKIP: $TEST_NAME: requires root"
		exit 77
	fi
}

# over_uring: true when every daemon of this run takes -o uring (TAPFS_URING=1,
# set by tests/functional/run-with.sh, "make check-uring").  -o workers=N
# is refused there: its checks are skipped.
over_uring() { [ "${TAPFS_URING:-0}" = 1 ]; }

# one_loop: false when every daemon of this run takes -o workers=N
# (TAPFS_WORKERS=N, "make check-workers").  What holds only on one loop
# (a read-only parent open once for every chain) is checked only then:
# "one_loop && check ...".
one_loop() { [ -z "${TAPFS_WORKERS:-}" ]; }

# ---- cleanup stack -------------------------------------------------------

# on_exit "cmd": run cmd (with eval) at exit, last registered first.
on_exit() { _cleanup+=("$*"); }

_run_cleanup() {
	local i
	trap '' INT TERM
	for ((i = ${#_cleanup[@]} - 1; i >= 0; i--)); do
		eval "${_cleanup[i]}" || msg "cleanup failed: ${_cleanup[i]}"
	done
	_cleanup=()
}

_on_exit_trap() {
	local rc=$?
	_run_cleanup
	exit $rc
}

_on_signal() {
	msg "caught SIG$1, cleaning up"
	fail "$TEST_NAME" "interrupted by SIG$1"
	_run_cleanup
	echo "$_n_pass passed, $_n_fail failed"
	trap - EXIT
	exit $((128 + $2))
}

trap _on_exit_trap EXIT
trap '_on_signal INT 2' INT
trap '_on_signal TERM 15' TERM

# Any mount at or below DIR (e.g. a FUSE mount the daemon failed to drop)
# is detached lazily before the temp dir is removed, and rm stays on its
# own file system, so cleanup never deletes through a live mount.
_rm_tmpdir() {
	local dir=$1 m
	for m in $(awk -v d="$dir" 'index($2, d "/") == 1 { print $2 }' \
			/proc/mounts | sort -r); do
		msg "cleanup: $m still mounted, detaching lazily"
		umount -l "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null
	done
	rm -rf --one-file-system "$dir"
}

T=$(mktemp -d /tmp/tapfs-"$TEST_NAME".XXXXXX) || exit 1
on_exit "_rm_tmpdir '$T'"
# Files a tool leaves in its working directory (fio's
# local-*-verify.state) go with the temp dir, not into the checkout.
cd "$T" || exit 1

# ---- processes and mounts ------------------------------------------------

# pid_alive PID: a process exists and is not a zombie.
pid_alive() {
	local st
	[ -n "$1" ] || return 1
	st=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
	[ -n "$st" ] && [ "$st" != Z ]
}

# wait_gone PID SECONDS: wait until PID has exited; 1 on timeout.
wait_gone() {
	local pid=$1 end=$((SECONDS + $2))
	while pid_alive "$pid"; do
		[ $SECONDS -ge $end ] && return 1
		sleep 0.05
	done
	return 0
}

# is_fuse_mounted DIR: a FUSE file system is mounted exactly at DIR.
is_fuse_mounted() {
	awk -v m="$1" '$2 == m && $3 ~ /^fuse/ { f = 1 } END { exit !f }' \
		/proc/mounts
}

# is_mounted DIR: anything is mounted at DIR.
is_mounted() {
	awk -v m="$1" '$2 == m { f = 1 } END { exit !f }' /proc/mounts
}

# wait_mounted DIR SECONDS [PID]: wait for a FUSE mount at DIR; give up
# early if PID (the daemon) has exited.
wait_mounted() {
	local dir=$1 end=$((SECONDS + $2)) pid=${3:-}
	while ! is_fuse_mounted "$dir"; do
		[ $SECONDS -ge $end ] && return 1
		if [ -n "$pid" ] && ! pid_alive "$pid"; then
			is_fuse_mounted "$dir"
			return
		fi
		sleep 0.05
	done
	return 0
}

# _unmount DIR: unmount a FUSE mount (fusermount3, then umount(8)).
_unmount() {
	fusermount3 -u "$1" 2>/dev/null || umount "$1" 2>/dev/null
}

# _tapfs_reap PID MNT: cleanup for a daemon, whether or not tapfs_stop
# already ran.  Unmounts, gives the daemon time to exit, and only then
# signals that one PID.
_tapfs_reap() {
	local pid=$1 mnt=$2
	if is_fuse_mounted "$mnt"; then
		_unmount "$mnt" || sleep 1
		_unmount "$mnt" 2>/dev/null
	fi
	if ! wait_gone "$pid" "$TAPFS_STOP_TIMEOUT"; then
		msg "cleanup: daemon $pid did not exit, sending SIGTERM"
		kill -TERM "$pid" 2>/dev/null
		if ! wait_gone "$pid" 5; then
			msg "cleanup: daemon $pid still there, sending SIGKILL"
			kill -KILL "$pid" 2>/dev/null
			wait_gone "$pid" 5
		fi
	fi
	wait "$pid" 2>/dev/null
	if is_fuse_mounted "$mnt"; then
		msg "cleanup: $mnt still mounted, detaching lazily"
		fusermount3 -uz "$mnt" 2>/dev/null || umount -l "$mnt"
	fi
	return 0
}

# tapfs_start MNT STORE [EXTRA_OPTS]
#
# Start "$TAPFS -f -o store=STORE,pidfile=...[,EXTRA_OPTS] MNT" in the
# background and wait (bounded) until the FUSE mount is live.  Sets
# TAPFS_PID, TAPFS_MNT, TAPFS_STORE, TAPFS_LOG, TAPFS_PIDFILE.  Records a
# failed check and returns 1 if the daemon does not come up.  Must not be
# called in a subshell (the cleanup is registered here).
tapfs_start() {
	local mnt=$1 store=$2 extra=${3:-} opts
	_tapfs_n=$((_tapfs_n + 1))
	mkdir -p "$mnt"
	TAPFS_MNT=$mnt
	TAPFS_STORE=$store
	TAPFS_LOG=$T/tapfs.$_tapfs_n.log
	TAPFS_PIDFILE=$T/tapfs.$_tapfs_n.pid
	opts="store=$store,pidfile=$TAPFS_PIDFILE${extra:+,$extra}"
	"$TAPFS" -f -o "$opts" "$mnt" </dev/null >"$TAPFS_LOG" 2>&1 &
	TAPFS_PID=$!
	on_exit "_tapfs_reap $TAPFS_PID '$mnt'"
	if ! wait_mounted "$mnt" "$TAPFS_START_TIMEOUT" "$TAPFS_PID"; then
		local why="not mounted after ${TAPFS_START_TIMEOUT}s"
		if ! pid_alive "$TAPFS_PID"; then
			wait "$TAPFS_PID"
			why="daemon exited with status $?"
		fi
		fail "tapfs_start $mnt" "$why; log: $(tail -n 5 "$TAPFS_LOG")"
		return 1
	fi
	ok "tapfs_start $mnt (pid $TAPFS_PID)"
}

# tapfs_stop [PID MNT]: unmount, then the daemon must exit with status 0
# within TAPFS_STOP_TIMEOUT.  Defaults to the last tapfs_start.
tapfs_stop() {
	local pid=${1:-$TAPFS_PID} mnt=${2:-$TAPFS_MNT} rc
	if ! _unmount "$mnt"; then
		fail "tapfs_stop: unmount $mnt" "$(fusermount3 -u "$mnt" 2>&1)"
		return 1
	fi
	if ! wait_gone "$pid" "$TAPFS_STOP_TIMEOUT"; then
		fail "tapfs_stop: daemon exits after unmount" \
			"pid $pid still running after ${TAPFS_STOP_TIMEOUT}s"
		return 1
	fi
	wait "$pid"
	rc=$?
	if [ $rc -eq 0 ]; then
		ok "tapfs_stop: daemon $pid exited with status 0"
		# The loops drained before exit (a bogus warning once).
		if [ "$pid" = "$TAPFS_PID" ] &&
		   grep -q "loops still busy" "$TAPFS_LOG"; then
			fail "tapfs_stop: loops drained at exit" \
				"$(grep "loops still busy" "$TAPFS_LOG")"
		fi
	else
		fail "tapfs_stop: daemon exit status" \
			"pid $pid exited with $rc; log: $(tail -n 5 \
			"$TAPFS_LOG")"
	fi
	if is_mounted "$mnt"; then
		fail "tapfs_stop: $mnt unmounted" "still in /proc/mounts"
		return 1
	fi
	[ $rc -eq 0 ]
}

# loop_attach FILE: attach FILE with direct I/O; sets LOOP_DEV; the device
# is detached at exit.  Must not be called in a subshell.
loop_attach() {
	LOOP_DEV=$(losetup --direct-io=on -f --show "$1") || {
		fail "losetup --direct-io=on -f --show $1"
		LOOP_DEV=
		return 1
	}
	# The kernel shows the absolute path: match that.
	on_exit "_loop_detach '$LOOP_DEV' '$(realpath -- "$1")'"
	ok "losetup --direct-io=on $1 -> $LOOP_DEV"
}

_loop_detach() {
	local dev=$1 file=$2 back i
	# Only detach if the device is still bound to our file.  Once the
	# file's mount is gone the kernel shows only its path inside that
	# mount (e.g. "/g/disk"), so a matching tail is enough.
	back=$(cat "/sys/block/${dev#/dev/}/loop/backing_file" 2>/dev/null)
	back=${back% (deleted)}
	[ -n "$back" ] || return 0
	case "$file" in
	*"$back") ;;
	*) return 0 ;;
	esac
	for i in 1 2 3 4 5; do
		losetup -d "$dev" 2>/dev/null && return 0
		sleep 0.5
	done
	msg "cleanup: could not detach $dev"
}

# ---- python programs -------------------------------------------------------

# pylib MODULE ARGS...: run the test program tests/pylib/MODULE.py.
# -B -E -S: no bytecode written into the tree, no PYTHON* variables, no
# site packages (the programs use the standard library only: a fast
# start); the module's folder is on its path for the modules it shares.
# Background jobs and timeouts run "$PYTHON" -B -E -S "$PYLIB/MODULE.py"
# themselves, so that their PID is python's.
pylib() {
	local mod=$1
	shift
	"$PYTHON" -B -E -S "$PYLIB/$mod.py" "$@"
}

# json_field KEY...: the field KEY (KEY... a path into nested objects) of
# the JSON document on stdin.
json_field() { pylib jsonget "$@"; }

# ---- single system calls -------------------------------------------------

# fsop OP ARGS...: one system call from python3 (tests/pylib/fsop.py lists
# the ops); prints OK, a byte count or data, or the errno name; TIMEOUT
# after FSOP_TIMEOUT seconds (30), EXITn if python failed silently.
fsop() {
	local out rc
	out=$(timeout "${FSOP_TIMEOUT:-30}" "$PYTHON" -B -E -S "$PYLIB/fsop.py" \
		"$@")
	rc=$?
	[ $rc -eq 124 ] && out="TIMEOUT"
	[ $rc -ne 0 ] && [ -z "$out" ] && out="EXIT$rc"
	printf '%s\n' "$out"
}

# check_fsop NAME EXPECTED... -- OP ARGS...: run fsop, the result must be
# one of the EXPECTED alternatives.
check_fsop() {
	local name=$1 want=() got
	shift
	while [ $# -gt 0 ] && [ "$1" != -- ]; do
		want+=("$1")
		shift
	done
	shift
	got=$(fsop "$@")
	check_in "$name" "$got" "${want[@]}"
}

# ---- .ctl and .stats -----------------------------------------------------

# ctl GROUPDIR CMD: write CMD (plus newline) to GROUPDIR/.ctl in one
# write(); prints OK or the errno name.
ctl() {
	FSOP_TIMEOUT=60 fsop write "$1/.ctl" "$2"$'\n'
}

# ctl_status GROUPDIR: the first line of .ctl.
ctl_status() { timeout 10 head -n 1 "$1/.ctl" 2>&1; }

# ctl_ok GROUPDIR CMD: the write succeeds and .ctl says "status: ok".
ctl_ok() {
	local r st
	r=$(ctl "$1" "$2")
	if [ "$r" != OK ]; then
		fail "ctl '$2'" "write failed with $r ($(ctl_status "$1"))"
		return 1
	fi
	st=$(ctl_status "$1")
	if [ "$st" != "status: ok" ]; then
		fail "ctl '$2'" "write OK but .ctl says '$st'"
		return 1
	fi
	ok "ctl '$2'"
}

# ctl_err GROUPDIR CMD ERRNAME: the write fails with ERRNAME and .ctl says
# "status: error: ERRNAME: <message>".
ctl_err() {
	local r st name
	name="ctl '$(printf '%s' "$2" | cat -v | cut -c1-60)' -> $3"
	r=$(ctl "$1" "$2")
	if [ "$r" != "$3" ]; then
		fail "$name" "write returned $r"
		return 1
	fi
	st=$(ctl_status "$1")
	if ! printf '%s\n' "$st" | grep -Eq "^status: error: $3: .*[^ ]"; then
		fail "$name" ".ctl status line is '$st'"
		return 1
	fi
	ok "$name"
}

# ctl_close GROUPDIR NAME: "close NAME" must succeed; retried for up to
# 2 s while it fails with EBUSY, because the kernel sends RELEASE
# asynchronously after the last close(2) of the VBD file.
ctl_close() {
	local i r st
	for i in $(seq 20); do
		r=$(ctl "$1" "close $2")
		[ "$r" = EBUSY ] || break
		sleep 0.1
	done
	st=$(ctl_status "$1")
	if [ "$r" = OK ] && [ "$st" = "status: ok" ]; then
		ok "ctl 'close $2'"
	else
		fail "ctl 'close $2'" "write returned $r, .ctl says '$st'"
		return 1
	fi
}

# ctl_line GROUPDIR NAME: the VBD's line in .ctl (empty if none).
ctl_line() {
	timeout 10 tail -n +2 "$1/.ctl" | awk -v n="$2" '$1 == n'
}

# vbd_failed GROUPDIR NAME: .ctl lists the VBD as failed.
vbd_failed() { ctl_line "$1" "$2" | grep -q "^$2 failed "; }

# image_free IMAGE: tapfs-img info says no process holds the image.
image_free() { "$TAPFS_IMG" info "$1" | grep -q '^in use: no$'; }

# stat_val GROUPDIR NAME KEY: one counter from .stats.
stat_val() {
	timeout 10 cat "$1/.stats" | awk -v k="$2.$3" '$1 == k { print $2 }'
}

# file_mode PATH: octal permission bits.
file_mode() { stat -c %a "$1" 2>&1; }
file_size() { stat -c %s "$1" 2>&1; }

# ---- background jobs -------------------------------------------------

# bg_start NAME CMD...: run CMD in the background (output in
# $T/NAME.out), PID in BG_PID; stopped (that PID only) at exit if still
# running.
bg_start() {
	local name=$1
	shift
	"$@" </dev/null >"$T/$name.out" 2>&1 &
	BG_PID=$!
	on_exit "! pid_alive $BG_PID || kill $BG_PID; wait $BG_PID 2>/dev/null;
		true"
}

# wait_for SECONDS CMD...: until CMD succeeds (polled every 0.1 s), or 1
# when SECONDS have passed.
wait_for() {
	local end=$((SECONDS + $1))
	shift
	until "$@"; do
		[ $SECONDS -lt $end ] || return 1
		sleep 0.1
	done
}

# bg_wait PID SECONDS: wait for a background job; its exit status (or
# "timeout") in BG_RC.  Not in a subshell: only the parent can reap it.
bg_wait() {
	if ! wait_gone "$1" "$2"; then
		BG_RC=timeout
		return
	fi
	wait "$1"
	BG_RC=$?
}

# alive WHERE: the daemon of the last tapfs_start still runs; if not,
# show why (a sanitizer report, or the end of its log) and stop here.
alive() {
	if pid_alive "$TAPFS_PID"; then
		ok "daemon alive $1"
		return 0
	fi
	fail "daemon alive $1" "$(grep -a -m1 -A8 'ERROR: AddressSanitizer' \
		"$TAPFS_LOG" || tail -n 5 "$TAPFS_LOG")"
	summary
}

# ---- fuzzing seeds -----------------------------------------------------

# fuzz_seed FORMAT FILE: with FUZZ_SEEDS=DIR in the environment, keep the
# first 64 KiB of FILE (a damaged image a test made; the fuzzers' input
# size) as a seed in DIR/corpus-FORMAT, the corpus make fuzz runs on:
# "FUZZ_SEEDS=$PWD/build/fuzz make functional".
fuzz_seed() {
	[ -n "${FUZZ_SEEDS:-}" ] || return 0
	mkdir -p "$FUZZ_SEEDS/corpus-$1" &&
		head -c 65536 "$2" >"$FUZZ_SEEDS/corpus-$1/$TEST_NAME-${2##*/}"
}

# ---- fio -----------------------------------------------------------------

# fio_check NAME JSONFILE RC: a finished fio verify job passed: exit status
# 0, error 0, something written, and every written byte read back by the
# verify pass (a runtime cut-off would silently skip verification).
fio_check() {
	local name=$1 json=$2 rc=$3 res
	if [ "$rc" -ne 0 ]; then
		fail "$name" "fio exit $rc: $(grep -iE 'verify|err' "$json" \
			2>/dev/null | head -n 3)"
		return 1
	fi
	res=$(pylib fiojson check "$json")
	case "$res" in
	OK*) ok "$name (${res#OK } bytes written and verified)" ;;
	*) fail "$name" "$res"; return 1 ;;
	esac
}

# fio_verify NAME TIMEOUT FIO_ARGS...: run one fio job with JSON output in
# $T/NAME.json under a timeout, then fio_check it.
fio_verify() {
	local name=$1 tmo=$2 rc
	shift 2
	timeout -k 5 "$tmo" fio --name="$name" --output-format=json \
		--output="$T/$name.json" "$@" >"$T/$name.err" 2>&1
	rc=$?
	if [ $rc -eq 124 ]; then
		fail "$name" "fio timed out after ${tmo}s"
		return 1
	fi
	fio_check "$name" "$T/$name.json" $rc
}
