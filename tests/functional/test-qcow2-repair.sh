#!/bin/bash
# test-qcow2-repair.sh - dirty qcow2 images repaired at open, damaged ones
# refused, and writes onto an image's own metadata refused.
#
#   1. leaks: the daemon killed with SIGKILL during allocating writes
#      until a crash leaves leaked clusters; tapfs-img check says what a
#      read-write open repairs; the reopened VBD logs the repair, reads
#      what qemu read after the crash, and once closed qemu-img check
#      (--output=json) finds no leak and no error, qemu-img compare the
#      same data.  The same with a crafted overcounted cluster.
#   2. lazy refcounts: a qemu-io with lazy_refcounts=on aborted before
#      close (undercounted clusters: qemu-img check finds errors) opens,
#      is rebuilt, takes writes, and closes clean; QEMU writes it after.
#   3. a crash in the middle of the repair (strace kills the daemon at
#      its first, second, ... write of the repair): each leaves an image
#      the next open repairs, never damage, never other data.
#   4. damage that fixing refcounts does not mend (two L2 entries on one
#      cluster counted once, data in the refcount table) still refuses a
#      dirty image, naming it, leaving the file untouched; and tables
#      sharing a cluster refuse any read-write open.
#   5. the overlap reproduction: an L2 entry with the copied flag
#      crafted onto the refcount table of a clean image; a 4 KiB write
#      there through the mount fails with EIO, the refcount table is
#      byte for byte intact, the image has the corrupt bit (QEMU and
#      tapfs refuse it read-write), qemu-img check finds what it found
#      before the write and nothing more; later writes fail, reads work.
#   6. version 2 (no dirty bit): leaks stay, and tapfs-img check says so.
. "$(dirname "$0")/lib.sh"
requires qemu-img qemu-io fio python3 cmp fusermount3

M=$T/mnt
S=$T/store
G=$M/g
I=$T/img
MiB=1048576
requires "$TAPFS_IMG"
mkdir -p "$I"

# q2edit IMG FIELD|OP ARGS: damage the image (tests/pylib/qcow2file.py).
q2edit() {
	pylib qcow2file edit "$@" || fail "q2edit $*" "edit failed"
}

# qj IMG: qemu-img check --output=json as "corruptions=N leaks=N
# check-errors=N" (absent fields are 0).
qj() {
	local v
	v=$(qemu-img check -U --output=json "$1" 2>/dev/null |
		json_field -d 0 corruptions leaks check-errors 2>/dev/null) || {
		echo unreadable
		return
	}
	set -- $v
	echo "corruptions=$1 leaks=$2 check-errors=$3"
}

# qj_field IMG NAME: one number of qj.
qj_field() { qj "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }

# q_clean NAME IMG: qemu-img finds neither errors nor leaks.
q_clean() {
	check_eq "$1: qemu-img check --output=json" \
		"corruptions=0 leaks=0 check-errors=0" "$(qj "$2")"
}

# header_bits IMG: the incompatible features (decimal).
header_bits() { pylib qcow2file get "$1" incompat; }

# reftable_off IMG: the refcount table's offset.
reftable_off() { pylib qcow2file get "$1" reft_offset; }

# img_last IMG: the last line tapfs-img check prints.
img_last() { "$TAPFS_IMG" check "$1" 2>&1 | tail -n 1; }

# log_since N: the daemon's log after its first N lines.
log_since() { tail -n +$(($1 + 1)) "$TAPFS_LOG"; }

# mk NAME [create options]: 16 MiB v3 image with data (0x6b at 0-3M,
# 0x6c at 9M), made by qemu.
mk() {
	local n=$1
	shift
	rm -f "$I/$n.qcow2"
	qemu-img create -q -f qcow2 "$@" "$I/$n.qcow2" 16M &&
		qemu-io -f qcow2 -c "write -P 0x6b 0 3M" \
			-c "write -P 0x6c 9M 70000" "$I/$n.qcow2" >/dev/null
}

# wait_vbd NAME: the VBD is back from the manifest (opened after mount).
wait_vbd() {
	local end=$((SECONDS + 20))
	while [ ! -e "$G/$1" ] && [ $SECONDS -lt $end ]; do
		sleep 0.1
	done
	check test -e "$G/$1"
}

# crash: SIGKILL the daemon, reap it, drop the dead mount.
crash() {
	kill -KILL "$TAPFS_PID"
	wait "$TAPFS_PID" 2>/dev/null
	fusermount3 -uz "$M" 2>/dev/null
}

tapfs_start "$M" "$S" "allow_path=$T" || summary
check mkdir "$G"

# ---- 1. leaks left by kill -9, repaired at open ---------------------------

check qemu-img create -q -f qcow2 -o cluster_size=64k "$I/k.qcow2" 256M
ctl_ok "$G" "open k qcow2:$I/k.qcow2"
leaks=0
# About one crash in two leaves leaks: up to ten.
for round in $(seq 10); do
	[ $round -gt 1 ] && { tapfs_start "$M" "$S" "allow_path=$T" || break
		wait_vbd k; }
	fio --name=alloc --filename="$G/k" --ioengine=libaio --direct=1 \
		--rw=randwrite --bsrange=4k-128k --iodepth=32 --size=256M \
		--fsync=4 --time_based --runtime=30 --randseed=$round \
		>/dev/null 2>&1 &
	fpid=$!
	sleep "0.$((round * 7 % 10 + 1))"
	crash
	wait $fpid 2>/dev/null
	leaks=$(qj_field "$I/k.qcow2" leaks)
	msg "round $round: the crash left ${leaks:-?} leaked clusters"
	[ "${leaks:-0}" -gt 0 ] && break
done
# Whether a crash leaks is up to timing (the soak sees a few in 50): the
# repair of a leak is also shown on a crafted image below, so a run whose
# crashes left none still checks the reopen of the crashed image.
leaks=${leaks:-0}
msg "the crashes left $leaks leaked clusters"
check_eq "k after the crash: no corruption" 0 \
	"$(qj_field "$I/k.qcow2" corruptions)"
if [ "$leaks" -gt 0 ]; then
	check_match "k: tapfs-img check says what open repairs" \
		"a read-write open repairs this dirty image: $leaks leaked \
clusters? freed, 0 clusters in use counted" "$(img_last "$I/k.qcow2")"
fi
rm -f "$T/k.raw"
check qemu-img convert -U -O raw "$I/k.qcow2" "$T/k.raw"
tapfs_start "$M" "$S" "allow_path=$T" || summary
wait_vbd k
if [ "$leaks" -gt 0 ]; then
	check_match "k: the reopen logs what it repaired" \
		"qcow2: $I/k.qcow2: the dirty bit was set .*repaired: $leaks \
leaked clusters? freed, 0 clusters in use counted" "$(cat "$TAPFS_LOG")"
fi
check_eq "k: after the reopen, no leak on disk (qemu-img check -U)" 0 \
	"$(qj_field "$I/k.qcow2" leaks)"
check cmp "$G/k" "$T/k.raw"
ctl_close "$G" k
q_clean k "$I/k.qcow2"
check qemu-img compare -q -F raw "$I/k.qcow2" "$T/k.raw"
check_eq "k: dirty bit clear after close" 0 \
	"$(($(header_bits "$I/k.qcow2") & 1))"
rm -f "$T/k.raw"

# The same, crafted: a cluster counted, nothing uses it.
mk over && q2edit "$I/over.qcow2" leak &&
	q2edit "$I/over.qcow2" incompat "|1"
check_eq "over: qemu-img finds the leak" 1 "$(qj_field "$I/over.qcow2" leaks)"
check_eq "over: tapfs-img check says what open repairs" \
	"$I/over.qcow2: a read-write open repairs this dirty image: 1 leaked \
cluster freed, 0 clusters in use counted" "$(img_last "$I/over.qcow2")"
rm -f "$T/over.raw"
check qemu-img convert -O raw "$I/over.qcow2" "$T/over.raw"
lines=$(wc -l <"$TAPFS_LOG")
ctl_ok "$G" "open over qcow2:$I/over.qcow2"
check_match "over: the open logs what it repaired" \
	"qcow2: $I/over.qcow2: .*repaired: 1 leaked cluster freed" \
	"$(log_since "$lines")"
check cmp "$G/over" "$T/over.raw"
ctl_close "$G" over
q_clean over "$I/over.qcow2"
check qemu-img compare -q -F raw "$I/over.qcow2" "$T/over.raw"

# ---- 2. lazy refcounts: a QEMU killed before close ---------------------------

rm -f "$I/lazy.qcow2"
check qemu-img create -q -f qcow2 -o lazy_refcounts=on "$I/lazy.qcow2" 64M
# abort: no close, no refcount written back (SIGABRT, as a kill would).
qemu-io -f qcow2 -c "write -P 0x11 0 3M" -c "write -P 0x22 40M 192k" \
	-c "discard 1M 128k" -c "write -P 0x33 60M 4k" -c abort \
	"$I/lazy.qcow2" >/dev/null 2>&1
check_eq "lazy: qemu-io left the dirty bit" 1 \
	"$(($(header_bits "$I/lazy.qcow2") & 1))"
n=$(qj_field "$I/lazy.qcow2" corruptions)
if [ "${n:-0}" -gt 0 ]; then
	ok "lazy: qemu-img check finds $n undercounted refcounts"
else
	fail "lazy: qemu-img check finds undercounted refcounts" "$(qj \
		"$I/lazy.qcow2")"
fi
check_match "lazy: tapfs-img check says open rebuilds the refcounts" \
	"a read-write open repairs this dirty image: [0-9]+ leaked clusters? \
freed, [1-9][0-9]* clusters in use counted" "$(img_last "$I/lazy.qcow2")"
rm -f "$T/lazy.raw"
check qemu-img convert -U -O raw "$I/lazy.qcow2" "$T/lazy.raw"
lines=$(wc -l <"$TAPFS_LOG")
ctl_ok "$G" "open lazy qcow2:$I/lazy.qcow2"
check_match "lazy: the open logs the rebuild" \
	"qcow2: $I/lazy.qcow2: .*repaired: [0-9]+ leaked clusters? freed, \
[1-9][0-9]* clusters in use counted \(refcount raised: lazy refcounts\)" \
	"$(log_since "$lines")"
check cmp "$G/lazy" "$T/lazy.raw"
# Writes after the rebuild: new clusters, the rebuilt counts hold.
check dd if=/dev/urandom of="$T/new" bs=64k count=24 status=none
check dd if="$T/new" of="$G/lazy" bs=64k seek=160 oflag=direct \
	conv=notrunc status=none
check dd if="$T/new" of="$T/lazy.raw" bs=64k seek=160 conv=notrunc \
	status=none
check cmp "$G/lazy" "$T/lazy.raw"
ctl_close "$G" lazy
q_clean lazy "$I/lazy.qcow2"
check qemu-img compare -q -F raw "$I/lazy.qcow2" "$T/lazy.raw"
check qemu-io -f qcow2 -c "write -P 0x44 20M 64k" "$I/lazy.qcow2"
q_clean "lazy, written by QEMU after" "$I/lazy.qcow2"

# ---- 3. a crash in the middle of the repair ---------------------------------

if command -v strace >/dev/null 2>&1; then
	# 512-byte clusters and 64-bit refcounts: 64 clusters per refcount
	# block.  A lazy-refcounts crash that left six blocks uncounted
	# (qemu-io's own leaves a few clusters, in one block): the repair
	# writes six blocks, and each kill lands inside it.
	rm -f "$I/mid.qcow2"
	check qemu-img create -q -f qcow2 -o \
		lazy_refcounts=on,cluster_size=512,refcount_bits=64 \
		"$I/mid.qcow2" 16M
	check qemu-io -f qcow2 -c "write -P 0x5c 0 2M" \
		-c "write -P 0x5d 8M 1M" "$I/mid.qcow2"
	q2edit "$I/mid.qcow2" zeroblocks 2 7
	q2edit "$I/mid.qcow2" incompat "|1"
	rm -f "$T/mid.raw"
	check qemu-img convert -U -O raw "$I/mid.qcow2" "$T/mid.raw"
	check_eq "mid: the repair has six refcount blocks to write" \
		"$I/mid.qcow2: a read-write open repairs this dirty image: 0 \
leaked clusters freed, 384 clusters in use counted" "$(img_last "$I/mid.qcow2")"
	cp "$I/mid.qcow2" "$T/mid.damaged"
	for when in 1 2 4 6; do
		cp "$T/mid.damaged" "$I/mid.qcow2"
		# The next write of the open (pwrite64, the repair's first)
		# kills the daemon: the kernel keeps what it wrote before.
		strace -f -p "$TAPFS_PID" -o "$T/strace.$when" \
			-e trace=pwrite64,fdatasync \
			-e inject=pwrite64:signal=SIGKILL:when=$when \
			2>"$T/strace.$when.err" &
		spid=$!
		on_exit "! pid_alive $spid || kill $spid; wait $spid 2>/dev/null;
			true"
		for _ in $(seq 50); do
			grep -q attached "$T/strace.$when.err" && break
			sleep 0.1
		done
		sleep 0.3
		r=$(ctl "$G" "open mid qcow2:$I/mid.qcow2")
		wait "$TAPFS_PID" 2>/dev/null
		wait $spid 2>/dev/null
		fusermount3 -uz "$M" 2>/dev/null
		if pid_alive "$TAPFS_PID"; then
			fail "mid: killed at write $when of the repair" "alive"
		else
			ok "mid: killed at write $when of the repair ($r)"
		fi
		check_match "mid after kill $when: tapfs-img check finds only \
what the repair fixes" "repairs this dirty image|no errors found" \
			"$(img_last "$I/mid.qcow2")"
		rm -f "$T/mid.now"
		check qemu-img convert -U -O raw "$I/mid.qcow2" "$T/mid.now"
		check cmp "$T/mid.now" "$T/mid.raw"
		tapfs_start "$M" "$S" "allow_path=$T" || summary
	done
	lines=$(wc -l <"$TAPFS_LOG")
	ctl_ok "$G" "open mid qcow2:$I/mid.qcow2"
	check_match "mid: the last open finishes the repair" "repaired: 0 \
leaked clusters freed, [1-9][0-9]* clusters in use counted" \
		"$(log_since "$lines")"
	check cmp "$G/mid" "$T/mid.raw"
	ctl_close "$G" mid
	q_clean mid "$I/mid.qcow2"
	check qemu-img compare -q -F raw "$I/mid.qcow2" "$T/mid.raw"
	rm -f "$T/mid.now" "$T/mid.raw"
else
	echo "skip - a crash during the repair (no strace)"
fi

# ---- 4. damage the repair does not mend: refused, untouched ----------------

# refused NAME ERRNO ERE: open read-write fails, the log names the file
# and ERE, the file is unchanged, it opens read-only.
refused() {
	local n=$1 want=$2 ere=$3 sum lines
	fuzz_seed qcow2 "$I/$n.qcow2"
	sum=$(md5sum <"$I/$n.qcow2")
	lines=$(wc -l <"$TAPFS_LOG")
	ctl_err "$G" "open $n qcow2:$I/$n.qcow2" "$want"
	if log_since "$lines" | grep -F "$I/$n.qcow2" | grep -Eq -- "$ere"
	then
		ok "$n: the log names the file and /$ere/"
	else
		fail "$n: the log names the file and /$ere/" \
			"$(log_since "$lines")"
	fi
	check_eq "$n: the image is untouched" "$sum" \
		"$(md5sum <"$I/$n.qcow2")"
	ctl_ok "$G" "open $n qcow2:$I/$n.qcow2 ro"
	ctl_close "$G" "$n"
}

mk shared && q2edit "$I/shared.qcow2" l2copy 0 1 &&
	q2edit "$I/shared.qcow2" incompat "|1"
refused shared EUCLEAN "dirty image with damage a repair of refcounts \
does not fix: cluster [0-9]+ .*refcount 1 but 2 references \(one data \
cluster referenced 2 times\).*qemu-img check -r all"
check_match "shared: tapfs-img check says open refuses it" \
	"a read-write open refuses this dirty image" \
	"$(img_last "$I/shared.qcow2")"
mk inrt && q2edit "$I/inrt.qcow2" l2reftable 5 &&
	q2edit "$I/inrt.qcow2" incompat "|1"
refused inrt EUCLEAN "cluster 1 \(offset 65536\): used as refcount table \
and data cluster at once"
# Placement, dirty or not: two tables in one cluster.
mk l2rt && q2edit "$I/l2rt.qcow2" l1reftable 0
refused l2rt EINVAL "the L2 table of L1 entry 0 at 65536 overlaps the \
refcount table"
mk l1rt && q2edit "$I/l1rt.qcow2" l1offset 65536
sum=$(md5sum <"$I/l1rt.qcow2")
lines=$(wc -l <"$TAPFS_LOG")
ctl_err "$G" "open l1rt qcow2:$I/l1rt.qcow2" EINVAL
check_match "l1rt: the log names both tables" "$I/l1rt.qcow2: L1 table at \
65536 \(8 bytes\) overlaps the refcount table at 65536" "$(log_since "$lines")"
check_eq "l1rt: the image is untouched" "$sum" "$(md5sum <"$I/l1rt.qcow2")"

# ---- 5. a write onto the refcount table: refused, image marked corrupt -----

mk ovl && q2edit "$I/ovl.qcow2" l2reftable 5
RT=$(reftable_off "$I/ovl.qcow2")
rt_sum() {
	dd if="$I/ovl.qcow2" bs=65536 skip=$((RT / 65536)) count=1 \
		status=none | md5sum
}
before=$(rt_sum)
q_before=$(qj "$I/ovl.qcow2")
check_eq "ovl: clean image (no dirty bit)" 0 "$(header_bits "$I/ovl.qcow2")"
lines=$(wc -l <"$TAPFS_LOG")
ctl_ok "$G" "open ovl qcow2:$I/ovl.qcow2"
data=$(head -c 4096 /dev/urandom | od -An -tx1 -v | tr -d ' \n')
check_eq "ovl: 4 KiB written to guest cluster 5 fail with EIO" EIO \
	"$(fsop pwrite "$G/ovl" $((5 * 65536)) "$data")"
check_eq "ovl: the refcount table is intact" "$before" "$(rt_sum)"
check_eq "ovl: the corrupt bit is set" 2 \
	"$(($(header_bits "$I/ovl.qcow2") & 2))"
check_match "ovl: the log says why" "qcow2: $I/ovl.qcow2: guest cluster 5: \
its host cluster at $RT is the refcount table: write refused, image \
marked corrupt" "$(log_since "$lines")"
check_eq "ovl: a later write elsewhere fails too" EIO \
	"$(fsop pwrite "$G/ovl" $((100 * 65536)) 00ff00ff)"
check_eq "ovl: reads still work" "$(printf '6b%.0s' $(seq 8))" \
	"$(fsop pread "$G/ovl" 0 8)"
check_match "ovl: failed writes counted in .stats" "^[1-9]" \
	"$(stat_val "$G" ovl errors)"
check_eq "ovl: the reason is logged once" 1 \
	"$(log_since "$lines" | grep -c 'image marked corrupt')"
check_match "ovl: .ctl says why writes fail" \
	"^ovl running qcow2 .*\\($I/ovl\\.qcow2: image marked corrupt, writes fail: guest cluster 5: " \
	"$(ctl_line "$G" ovl)"
ctl_close "$G" ovl
check_eq "ovl: the refcount table is intact after close" "$before" "$(rt_sum)"
check_eq "ovl: qemu-img check finds what it found before the write" \
	"$q_before" "$(qj "$I/ovl.qcow2")"
ctl_err "$G" "open ovl qcow2:$I/ovl.qcow2" EROFS
check_match "ovl: QEMU refuses it read-write" "corrupt" \
	"$(qemu-io -f qcow2 -c 'write 0 512' "$I/ovl.qcow2" 2>&1)"
ctl_ok "$G" "open ovl qcow2:$I/ovl.qcow2 ro"
check_eq "ovl: opens read-only, reads work" "$(printf '6b%.0s' $(seq 8))" \
	"$(fsop pread "$G/ovl" 0 8)"
ctl_close "$G" ovl

# A version 2 image has no corrupt bit: writes fail until closed.
mk ovl2 -o compat=0.10 && q2edit "$I/ovl2.qcow2" l2reftable 5
RT=$(reftable_off "$I/ovl2.qcow2")
before=$(dd if="$I/ovl2.qcow2" bs=65536 skip=$((RT / 65536)) count=1 \
	status=none | md5sum)
ctl_ok "$G" "open ovl2 qcow2:$I/ovl2.qcow2"
check_eq "ovl2: the write fails with EIO" EIO \
	"$(fsop pwrite "$G/ovl2" $((5 * 65536)) 00ff00ff)"
check_eq "ovl2: a later write fails too" EIO \
	"$(fsop pwrite "$G/ovl2" 0 00ff00ff)"
ctl_close "$G" ovl2
check_eq "ovl2: the refcount table is intact" "$before" \
	"$(dd if="$I/ovl2.qcow2" bs=65536 skip=$((RT / 65536)) count=1 \
	status=none | md5sum)"
check_match "ovl2: the log says version 2 has no corrupt bit" \
	"$I/ovl2.qcow2: .*until closed \(version 2 has no corrupt bit\)" \
	"$(cat "$TAPFS_LOG")"

# ---- 6. version 2: no dirty bit, no repair ----------------------------------

mk v2 -o compat=0.10 && q2edit "$I/v2.qcow2" leak
check_eq "v2: the leak is there" 1 "$(qj_field "$I/v2.qcow2" leaks)"
check_match "v2: tapfs-img check says the leaks stay" \
	"not dirty: a read-write open does not scan it, and the leaks stay" \
	"$(img_last "$I/v2.qcow2")"
ctl_ok "$G" "open v2 qcow2:$I/v2.qcow2"
ctl_close "$G" v2
check_eq "v2: the leak stays after an open" 1 \
	"$(qj_field "$I/v2.qcow2" leaks)"

tapfs_stop
summary
