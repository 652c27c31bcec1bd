#!/bin/bash
# run.sh - block-tapfs end to end on a real Xen stack under QEMU emulation.
#
#	tests/xen/run.sh            (or: make xen-e2e)
#
# 1. fetch:  Debian 12's Xen 4.17, kernel and busybox packages into a cache
#            outside the tree (fetch.sh; downloads only the first time);
# 2. build:  the dom0 and guest initramfs, holding the freshly built tapfs
#            (build-initrd.sh);
# 3. boot:   Xen + dom0 under qemu-system-x86_64 (TCG: this machine has no
#            hypervisor); dom0 runs dom0-test.sh, which starts guests
#            through block-tapfs and prints one marker per step;
# 4. assert: every marker of tests/xen/markers is E2E-OK in the serial log.
#
# The serial log is kept: $W/serial.log (W = build/xen-e2e).  The last
# line is "N passed, N failed"; exit 1 if anything failed.  If QEMU is
# missing and cannot be installed (scripts/install-deps.sh xen), the test
# fails; it never passes without having run.  QEMU is stopped by its PID
# and the staging directories removed on any exit.
#
# Environment: BUILD (the build directory, default build),
# TAPFS_XEN_CACHE (package cache), XEN_E2E_TIMEOUT (seconds QEMU may run,
# default 300), XEN_E2E_DIR (default $BUILD/xen-e2e), XEN_E2E_XENARGS (the
# hypervisor's command line), XEN_E2E_TRACE=1 (trace block-tapfs),
# XEN_E2E_QEMU (the emulator, default qemu-system-x86_64).
set -u
export LC_ALL=C

HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
BUILD=${BUILD:-build}
W=${XEN_E2E_DIR:-$TOP/$BUILD/xen-e2e}
LOG=$W/serial.log
TMO=${XEN_E2E_TIMEOUT:-300}
MARKERS=$HERE/markers

n_pass=0
n_fail=0
qpid=

ok() { n_pass=$((n_pass + 1)); printf 'ok   - %s\n' "$1"; }
fail() { n_fail=$((n_fail + 1)); printf 'FAIL - %s\n' "$1"; }

finish() {
	echo "$n_pass passed, $n_fail failed"
	[ $n_fail -eq 0 ]
	exit
}

cleanup() {
	if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null; then
		kill -TERM "$qpid" 2>/dev/null
		sleep 1
		kill -KILL "$qpid" 2>/dev/null
		wait "$qpid" 2>/dev/null
	fi
	qpid=
	rm -rf "$W/rd0" "$W/rdg"
}
trap cleanup EXIT
trap 'echo "xen-e2e: interrupted"; cleanup; fail "interrupted"; finish' \
	INT TERM

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

t_start=$(now)

# ---- the emulator --------------------------------------------------------
QEMU=${XEN_E2E_QEMU:-qemu-system-x86_64}
need="$QEMU cpio gzip xz apt-get dpkg ldd"
missing() {
	local c m=''
	for c in $need; do
		command -v "$c" >/dev/null 2>&1 || m="$m $c"
	done
	echo "$m"
}
if [ -n "$(missing)" ]; then
	echo "xen-e2e: missing:$(missing); installing (scripts/install-deps.sh xen)"
	"$TOP/scripts/install-deps.sh" xen
fi
if [ -n "$(missing)" ]; then
	fail "emulator: missing:$(missing); as root: scripts/install-deps.sh xen"
	finish
fi
for f in "$TOP/$BUILD/tapfs" "$TOP/$BUILD/tapfs-img"; do
	[ -x "$f" ] || { fail "$f is not built (make)"; finish; }
done
ok "emulator: $("$QEMU" --version | head -n 1)"

mkdir -p "$W"
rm -f "$LOG"

# ---- fetch and build -----------------------------------------------------
t=$(now)
if ! C=$("$HERE/fetch.sh"); then
	fail "fetch: the Debian Xen packages could not be fetched"
	finish
fi
t_fetch=$(since "$t")
ok "fetch: $C (${t_fetch} s)"

t=$(now)
if ! BUILD=$BUILD "$HERE/build-initrd.sh" "$C" "$W"; then
	fail "build: the initramfs could not be built"
	finish
fi
t_build=$(since "$t")
ok "build: dom0 $(du -m "$W/dom0-initrd.cpio" | cut -f1) MiB, guest $(du -k \
	"$W/guest-initrd.gz" | cut -f1) KiB (${t_build} s)"

# ---- boot ------------------------------------------------------------------
# smap=0 smep=0: under TCG dom0 dies at its first exception otherwise.
# dom0_max_vcpus=1: a PV dom0 with two vCPUs pays cross-CPU TLB flushes on
# every fork and exec, which makes each program started 2-3 times slower
# under emulation; the guests get the other CPU.
XENARGS="console=com1 com1=115200,8n1 dom0_mem=768M,max:768M"
XENARGS="$XENARGS dom0_max_vcpus=1 loglvl=all guest_loglvl=all"
XENARGS=${XEN_E2E_XENARGS:-"$XENARGS smap=0 smep=0"}
DOM0ARGS=${XEN_E2E_DOM0ARGS:-"console=hvc0 earlyprintk=xen loglevel=4"}
t_boot0=$(now)
"$QEMU" -accel tcg -cpu "${XEN_E2E_CPU:-max}" -m 2048 -smp 2 \
	-display none -monitor none -serial "file:$LOG" -no-reboot -net none \
	-kernel "$C/xen" -append "$XENARGS" \
	-initrd "$C/vmlinux $DOM0ARGS,$W/dom0-initrd.cpio" \
	</dev/null >"$W/qemu.out" 2>&1 &
qpid=$!

t_up='' t_done=''
deadline=$(($(date +%s) + TMO))
while :; do
	if [ -z "$t_up" ] && grep -q 'E2E-DOM0-UP' "$LOG" 2>/dev/null; then
		t_up=$(since "$t_boot0")
	fi
	if grep -q 'E2E-DONE' "$LOG" 2>/dev/null; then
		t_done=$(since "$t_boot0")
		break
	fi
	kill -0 "$qpid" 2>/dev/null || break
	if [ "$(date +%s)" -ge "$deadline" ]; then
		echo "xen-e2e: QEMU still running after ${TMO}s; stopping it"
		break
	fi
	sleep 0.2
done
# dom0 reboots at the end, which ends QEMU (-no-reboot); give it a moment.
for _ in $(seq 50); do
	kill -0 "$qpid" 2>/dev/null || break
	sleep 0.1
done
cleanup
t_qemu=$(since "$t_boot0")

if [ -n "$t_up" ]; then
	ok "boot: Xen and dom0 up in ${t_up} s"
else
	fail "boot: dom0 never started (see $LOG, $W/qemu.out)"
fi
if [ -n "$t_done" ]; then
	ok "dom0 test finished (${t_done} s after QEMU started)"
else
	fail "dom0 test did not finish (see $LOG)"
fi

# ---- markers -----------------------------------------------------------------
S=$(tr -d '\r' < "$LOG" 2>/dev/null)
while read -r name _; do
	case "$name" in ''|'#'*) continue ;; esac
	okl=$(printf '%s\n' "$S" | grep -m 1 -o "E2E-OK $name: .*")
	badl=$(printf '%s\n' "$S" | grep -m 1 -o "E2E-FAIL $name: .*")
	if [ -n "$okl" ] && [ -z "$badl" ]; then
		ok "$(printf '%s' "$name: ${okl#E2E-OK "$name": }" | cut -c1-220)"
	elif [ -n "$badl" ]; then
		fail "$(printf '%s' "$name: ${badl#E2E-FAIL "$name": }" |
			cut -c1-600)"
	else
		fail "$name: no marker"
	fi
done < "$MARKERS"
# A failure the marker list does not name (e.g. the guest never booted).
extra=$(printf '%s\n' "$S" | grep -o 'E2E-FAIL [^:]*:.*' |
	while read -r _ name rest; do
		grep -q "^${name%:} " "$MARKERS" || echo "${name%:}: $rest"
	done)
while IFS= read -r line; do
	[ -n "$line" ] && fail "$line"
done <<< "$extra"

echo "xen-e2e: serial log $LOG"
echo "xen-e2e: timings: fetch ${t_fetch} s, build ${t_build} s," \
	"boot to dom0 init ${t_up:-?} s, dom0 test $(awk -v a="${t_up:-0}" \
	-v b="${t_done:-0}" 'BEGIN { printf "%.1f", b - a }') s," \
	"QEMU ${t_qemu} s, total $(since "$t_start") s"
finish
