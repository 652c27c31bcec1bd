#!/bin/bash
# test-vhd-crash.sh - kill -9 the daemon in the middle of allocating writes.
#
# A python writer (6 threads) writes into a fresh dynamic VHD VBD: each
# round into blocks the image does not hold yet, so a third of the writes
# allocate a block and the others land beside an allocation, often in
# flight; offsets and lengths are random, partial sectors included, and
# every write goes to its own slot (no two writes overlap).  It logs each
# write it attempts, each write acknowledged (pwrite returned), and after
# each fsync which acknowledged writes that fsync made durable.  The
# daemon is killed with SIGKILL at a different moment each round (at the
# first write, after 8, 48 and 120 acknowledged writes).  Then:
#   - the dead mount is unmounted (fusermount3 -u, umount -l);
#   - tapfs-img check is clean (warnings, e.g. leaked space, allowed);
#   - qemu-img convert of the image, and a fresh tapfs mount reading the
#     VBD (which comes back from the manifest), both show: every fsync'd
#     write; every acknowledged write (the daemon died, not the machine:
#     an acknowledged write is in the file); for a write in flight, each
#     sector either old (zeros) or new; zeros everywhere nothing was
#     written, so no stale or misplaced data;
#   - the next round writes through the recovered image; after round 1
#     the VBD is snapshotted, and rounds 2 and 3 write into a
#     differencing child (block allocations in the child over blocks the
#     parent holds, whose other sectors must still read from the parent,
#     and bitmap updates), checked through the chain by tapfs and
#     tapfs-img convert (QEMU does not follow parents); the base must not
#     change.
. "$(dirname "$0")/lib.sh"
requires qemu-img python3 cmp

M=$T/mnt
S=$T/store
G=$M/g
MiB=1048576
SIZE=$((512 * MiB))
ROUNDS=4
TAPFS_IMG=${TAPFS_IMG:-$TOP/build/tapfs-img}
if [ ! -x "$TAPFS_IMG" ]; then
	msg "tapfs-img not built ($TAPFS_IMG): 'tapfs-img check' skipped"
fi

cat >"$T/crashio.py" <<'PYEOF'
# crashio.py: the crash test's writer and checker.
#
#   write VBD LOG ROUND ROUNDS  write until done or the daemon dies
#   verify FILE LOG...          check FILE against the writers' logs
#
# The disk is cut into 2 MiB blocks of 16 slots of 128 KiB.  Round r
# writes into the blocks b with b % ROUNDS == r % 2 (rounds 0 and 1 into
# blocks nobody wrote yet; rounds 2 and 3, on a differencing child, into
# the blocks rounds 0 and 1 filled in the parent), 3 writes per block,
# each in a slot s with s % ROUNDS == r (no two writes overlap), at a
# random offset and length inside the slot.
# Write i of round r holds the bytes of random.Random(r * 1000003 + i).
#
# Log lines: "A i off len" before pwrite; "W i" once it returned the full
# length (acknowledged); "F n": the first n "W" lines of this log were
# acknowledged before an fsync that then succeeded (durable).
import os, random, sys, threading, time

MiB = 1 << 20
BLK = 2 * MiB
SLOT = 128 * 1024
THREADS = 6


def plan(size, rnd, rounds):
    rng = random.Random(rnd)
    ws = []
    slots = [s for s in range(BLK // SLOT) if s % rounds == rnd]
    for b in range(rnd % 2, size // BLK, rounds):
        for s in rng.sample(slots, 3):
            start = b * BLK + s * SLOT
            off = rng.randrange(0, SLOT // 2)
            if rng.random() < 0.5:
                off &= ~511
            ln = rng.randint(1, SLOT - off)
            ws.append((start + off, ln))
    rng.shuffle(ws)
    return ws


def data(rnd, i, ln):
    return random.Random(rnd * 1000003 + i).randbytes(ln)


def cmd_write(vbd, logpath, rnd, rounds):
    size = os.path.getsize(vbd)
    ws = plan(size, rnd, rounds)
    log = os.open(logpath, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    lock = threading.Lock()
    acked = [0]
    stop = threading.Event()

    def emit(line):
        os.write(log, (line + "\n").encode())

    def worker(t):
        rng = random.Random(rnd * 7 + t)
        fd = os.open(vbd, os.O_WRONLY)
        try:
            for n, i in enumerate(range(t, len(ws), THREADS)):
                if stop.is_set():
                    return
                off, ln = ws[i]
                with lock:
                    emit("A %d %d %d" % (i, off, ln))
                if os.pwrite(fd, data(rnd, i, ln), off) != ln:
                    stop.set()
                    return
                with lock:
                    emit("W %d" % i)
                    acked[0] += 1
                if n % 3 == 2:
                    with lock:
                        upto = acked[0]
                    os.fsync(fd)
                    with lock:
                        emit("F %d" % upto)
                time.sleep(rng.random() * 0.01)
        except OSError:
            stop.set()          # the daemon is gone
        finally:
            os.close(fd)

    th = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for x in th:
        x.start()
    for x in th:
        x.join()
    print("round %d: %d writes planned, %d acknowledged" %
          (rnd, len(ws), acked[0]))


def cmd_verify(path, logs):
    f = os.open(path, os.O_RDONLY)
    spans = []
    bad = []
    n = {"durable": 0, "acked": 0, "inflight": 0, "inflight_new": 0}
    for lp in logs:
        rnd = int(lp.rsplit(".", 1)[1])
        att, wseq, durable = {}, [], 0
        for line in open(lp):
            p = line.split()
            if p[0] == "A":
                att[int(p[1])] = (int(p[2]), int(p[3]))
            elif p[0] == "W":
                wseq.append(int(p[1]))
            elif p[0] == "F":
                durable = max(durable, int(p[1]))
        dset = set(wseq[:durable])
        aset = set(wseq)
        for i, (off, ln) in att.items():
            spans.append((off, off + ln))
            want = data(rnd, i, ln)
            got = os.pread(f, ln, off)
            kind = ("durable" if i in dset else
                    "acked" if i in aset else "inflight")
            n[kind] += 1
            if kind != "inflight":
                if got != want:
                    at = next(j for j in range(ln) if got[j] != want[j])
                    bad.append("round %d write %d (%s, %d bytes at %d): "
                               "differs at byte %d" %
                               (rnd, i, kind, ln, off, off + at))
                continue
            # In flight: every sector's part either old (zeros) or new.
            s = off
            new = True
            while s < off + ln:
                e = min((s // 512 + 1) * 512, off + ln)
                g, w = got[s - off:e - off], want[s - off:e - off]
                if g != w:
                    new = False
                    if g != bytes(len(g)):
                        bad.append("round %d write %d (in flight, %d bytes "
                                   "at %d): bytes %d-%d neither old nor "
                                   "new" % (rnd, i, ln, off, s, e))
                        break
                s = e
            n["inflight_new"] += new
    # Nothing anywhere else.
    spans.sort()
    pos, size = 0, os.fstat(f).st_size
    spans.append((size, size))
    for a, b in spans:
        while pos < a:
            ln = min(a - pos, 4 * MiB)
            chunk = os.pread(f, ln, pos)
            if chunk != bytes(ln):
                j = next(j for j in range(ln) if chunk[j])
                bad.append("byte %d is not zero, but nothing was written "
                           "there" % (pos + j))
                break
            pos += ln
        pos = max(pos, b)
    print("%d durable, %d acknowledged, %d in flight (%d of them fully "
          "present)" % (n["durable"], n["acked"], n["inflight"],
                        n["inflight_new"]))
    for b in bad[:10]:
        print("BAD: " + b)
    sys.exit(1 if bad else 0)


if sys.argv[1] == "write":
    cmd_write(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
elif sys.argv[1] == "verify":
    cmd_verify(sys.argv[2], sys.argv[3:])
else:
    sys.exit("crashio.py: unknown command " + sys.argv[1])
PYEOF

crashio() { "$PYTHON" -I "$T/crashio.py" "$@"; }

# verify NAME FILE LOGS...: FILE holds what the logs say.
verify() {
	local name=$1 out
	shift
	if out=$(crashio verify "$@" 2>&1); then
		ok "$name: $out"
	else
		fail "$name" "$(printf '%s' "$out" | head -n 6)"
	fi
}

# img_check NAME FILE: tapfs-img check exits 0 (warnings allowed).
img_check() {
	local out rc
	[ -x "$TAPFS_IMG" ] || return 0
	out=$("$TAPFS_IMG" check "$2" 2>&1)
	rc=$?
	if [ $rc -eq 0 ]; then
		ok "$1: tapfs-img check clean ($(printf '%s\n' "$out" |
			grep -c 'warning:') warnings)"
		printf '%s\n' "$out" | grep 'warning:' | head -n 3 >&2
	else
		fail "$1: tapfs-img check clean" "exit $rc: $(printf '%s' \
			"$out" | head -n 5)"
	fi
}

# acked LOG: how many writes the log says were acknowledged.
acked() { grep -c '^W' "$1" 2>/dev/null; }

# oracle_raw RAW: the leaf's contents read by an outside reader: qemu-img
# for a single image; for a chain (which QEMU does not follow) tapfs-img
# convert, if built.  Sets ORACLE; 1 if there is none.
oracle_raw() {
	if [ "$CHAIN" = "vhd:$IMG" ]; then
		ORACLE=qemu-img
		check qemu-img convert -f vpc -O raw "$IMG" "$1"
	elif [ -x "$TAPFS_IMG" ]; then
		ORACLE=tapfs-img
		check "$TAPFS_IMG" convert -O raw "$IMG" "$1"
	else
		echo "skip - no outside reader for the chain (tapfs-img not built)"
		return 1
	fi
}

tapfs_start "$M" "$S" || summary
check mkdir "$G"
ctl_ok "$G" "create d vhd $SIZE"
IMG=$S/g/d.vhd
CHAIN="vhd:$IMG"
BASE_MD5=
LOGS=()

for r in $(seq 0 $((ROUNDS - 1))); do
	log=$T/log.$r
	LOGS+=("$log")
	: >"$log"
	crashio write "$G/d" "$log" "$r" "$ROUNDS" >"$T/writer.$r" 2>&1 &
	wpid=$!
	on_exit "kill -KILL $wpid 2>/dev/null; wait $wpid 2>/dev/null"
	# Four moments, by the writer's progress (of 384 writes): at its
	# first write (the first allocations), after 8, 48 and 120 acked.
	case $r in
	0) kill_at=0 ;;
	1) kill_at=8 ;;
	2) kill_at=48 ;;
	*) kill_at=120 ;;
	esac
	end=$((SECONDS + 20))
	until [ -s "$log" ] && [ "$(acked "$log")" -ge $kill_at ]; do
		[ $SECONDS -ge $end ] && break
		sleep 0.01
	done
	if pid_alive "$wpid"; then
		ok "round $r: the writer is still writing at the kill" \
"($(acked "$log") writes acknowledged)"
	else
		fail "round $r: the writer is still writing at the kill" \
			"it had finished: $(cat "$T/writer.$r")"
	fi
	kill -KILL "$TAPFS_PID"
	wait_gone "$TAPFS_PID" 10
	wait "$TAPFS_PID" 2>/dev/null
	fusermount3 -u "$M" 2>/dev/null || umount -l "$M" 2>/dev/null
	check_not is_mounted "$M"
	if wait_gone "$wpid" 20; then
		ok "round $r: the writer stops once the daemon is gone"
	else
		fail "round $r: the writer stops once the daemon is gone"
		kill -KILL "$wpid"
	fi
	wait "$wpid" 2>/dev/null
	msg "round $r: $(grep -c '^A' "$log") attempted, $(acked "$log")" \
		"acknowledged, $(grep '^F' "$log" | tail -n 1 | cut -c3-)" \
		"fsync'd at the kill"

	img_check "round $r" "$IMG"
	rm -f "$T/d.raw"
	if oracle_raw "$T/d.raw"; then
		verify "round $r: $ORACLE reads the image" "$T/d.raw" \
			"${LOGS[@]}"
	fi

	tapfs_start "$M" "$S" || summary
	check_eq "round $r: the VBD is back" \
		"d running vhd $SIZE rw $CHAIN" "$(ctl_line "$G" d)"
	verify "round $r: tapfs reads the VBD" "$G/d" "${LOGS[@]}"
	if [ -f "$T/d.raw" ]; then
		check cmp "$G/d" "$T/d.raw"
	fi
	rm -f "$T/d.raw"
	if [ -n "$BASE_MD5" ]; then
		img_check "round $r, base" "$S/g/d.vhd"
		check_eq "round $r: the base is unchanged" "$BASE_MD5" \
			"$(md5sum <"$S/g/d.vhd")"
	fi
	# Rounds 2 and up write into a differencing child: allocations in
	# it over blocks the parent holds, and bitmap updates.
	if [ $r -eq 1 ]; then
		ctl_ok "$G" "snapshot d"
		IMG=$S/g/d.1.vhd
		CHAIN="vhd:$IMG -> vhd:$S/g/d.vhd"
		check_eq "the VBD runs on a differencing child" \
			"d running vhd $SIZE rw $CHAIN" "$(ctl_line "$G" d)"
		BASE_MD5=$(md5sum <"$S/g/d.vhd")
	fi
done

# A clean end: unmount, the image checks clean, holds everything.
tapfs_stop
img_check "after a clean unmount" "$IMG"
rm -f "$T/d.raw"
if oracle_raw "$T/d.raw"; then
	verify "after a clean unmount: $ORACLE reads the image" "$T/d.raw" \
		"${LOGS[@]}"
fi
rm -f "$T/d.raw"
summary
