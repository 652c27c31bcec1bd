#!/bin/bash
# test-shared-parents.sh - a read-only parent is opened once for every
# chain that stands on it (issue 12, "shared read-only parents").
#
# One 1 GiB raw base, its first 64 MiB written; 64 children in 8 groups
# (qcow2 and vhd children alternately, both reading the base through the
# aio driver):
#   - the daemon holds the base through the same number of descriptors
#     with 64 chains as with 1 (/proc/PID/fd), and .ctl marks the base
#     "(shared by N)" in every chain line;
#   - every child reads as the base with its own writes on top (each
#     writes a MiB of its own; 64 concurrent readers compare);
#   - closing half of them and snapshotting one while the others run
#     leaves the rest reading correctly and the counts right; a rw open of
#     the base is refused naming a user; with all closed, no descriptor of
#     the base is left;
#   - on a fresh daemon, one more qcow2 child of a 1 GiB qcow2 base and
#     one more vhd child of a 1 GiB vhd base, both with all their tables,
#     cost the daemon (VmRSS) less than either base's metadata.
. "$(dirname "$0")/lib.sh"
requires qemu-img cmp dd

I=$T/img
M=$T/mnt
S=$T/store
MiB=1048576
mkdir -p "$I" "$S"

N=64		# children
NG=8		# groups
# base: 1 GiB, MiB i < 64 filled with byte 0x40 + i, the rest a hole.
python3 - "$I/base.raw" <<'PY' || fail "make the base"
import sys
with open(sys.argv[1], "wb") as f:
    for i in range(64):
        f.write(bytes([0x40 + i]) * (1 << 20))
    f.truncate(1 << 30)
PY
for k in $(seq 0 $((N - 1))); do
	if [ $((k % 2)) = 0 ]; then
		check qemu-img create -q -f qcow2 -b base.raw -F raw \
			"$I/c$k.qcow2"
	else
		check "$TAPFS_IMG" create -q -f vhd -b "$I/base.raw" \
			-F raw "$I/c$k.vhd"
	fi
done

tapfs_start "$M" "$S" "allow_path=$I" || summary

# Descriptors of the daemon on the base.
base_fds() {
	local n=0 f
	for f in /proc/"$TAPFS_PID"/fd/*; do
		[ "$(readlink "$f" 2>/dev/null)" = "$I/base.raw" ] && n=$((n + 1))
	done
	echo $n
}
spec() { if [ $(($1 % 2)) = 0 ]; then echo "qcow2:$I/c$1.qcow2"; \
	 else echo "vhd:$I/c$1.vhd"; fi; }
grp() { echo "$M/g$(($1 % NG))"; }

for g in $(seq 0 $((NG - 1))); do
	mkdir "$M/g$g" || fail "mkdir g$g"
done
check_eq "no descriptor of the base before any open" 0 "$(base_fds)"
ctl_ok "$(grp 0)" "open c0 $(spec 0)"
one=$(base_fds)
check_match "one chain: the base is open" "^[1-9]$" "$one"
for k in $(seq 1 $((N - 1))); do
	ctl_ok "$(grp $k)" "open c$k $(spec $k)"
done
# (With -o workers=N each loop opens the base once: one_loop.)
one_loop && check_eq "$N chains: as many descriptors of the base as with 1" \
	"$one" "$(base_fds)"
one_loop && check_match "the chain line marks the shared base" \
	"aio:$I/base\\.raw \\(shared by $N\\)" "$(ctl_line "$(grp 5)" c5)"

# Each child writes its own MiB (k) with its own byte, 0x80 + k.
for k in $(seq 0 $((N - 1))); do
	check_eq "c$k: write its MiB" 0 "$(python3 - "$(grp $k)/c$k" $k <<'PY'
import os, sys
k = int(sys.argv[2])
fd = os.open(sys.argv[1], os.O_WRONLY)
os.pwrite(fd, bytes([0x80 + k]) * (1 << 20), k << 20)
os.fsync(fd)
os.close(fd)
print(0)
PY
)"
done

# expected K: the base's first 64 MiB with MiB K replaced.
expect() {
	python3 - "$T/want$1" "$1" <<'PY'
import sys
k = int(sys.argv[2])
with open(sys.argv[1], "wb") as f:
    for i in range(64):
        f.write(bytes([(0x80 + k) if i == k else (0x40 + i)]) * (1 << 20))
PY
}
verify_all() {
	local k pids=() rc
	for k in "$@"; do
		[ -f "$T/want$k" ] || expect $k
		(cmp -n $((64 * MiB)) "$T/want$k" "$(grp $k)/c$k" \
			>"$T/cmp$k" 2>&1) &
		pids+=($!)
	done
	for k in "$@"; do
		wait "${pids[0]}"; rc=$?
		pids=("${pids[@]:1}")
		check_eq "$2 c$k reads the base with its own MiB on top" 0 $rc
	done
}
verify_all $(seq 0 $((N - 1)))

ctl_err "$M/g0" "open b aio:$I/base.raw" EBUSY
# (Each loop counts the users of its own open of the base: one_loop.)
others="\\(and $((N - 1)) other VBDs\\)"
one_loop || others="\\(and [0-9]+ other VBDs\\)"
check_match "rw over the shared base: refused, a user named" \
	"$others uses $I/base\\.raw as a read-only parent" \
	"$(ctl_status "$M/g0")"

# Close the odd ones; snapshot c2 while the others stay open.
for k in $(seq 1 2 $((N - 1))); do
	ctl_close "$(grp $k)" c$k
done
check_match "$((N / 2)) chains left: shared by $((N / 2))" \
	"\\(shared by $((N / 2))\\)" "$(ctl_line "$(grp 0)" c0)"
ctl_ok "$(grp 2)" "snapshot c2"
check_match "after the snapshot, c2's chain still shares the base" \
	"base\\.raw \\(shared by $((N / 2))\\)" "$(ctl_line "$(grp 2)" c2)"
check_eq "descriptors of the base unchanged" "$one" "$(base_fds)"
verify_all $(seq 0 2 $((N - 1)))

for k in $(seq 0 2 $((N - 1))); do
	ctl_close "$(grp $k)" c$k
done
check_eq "all closed: no descriptor of the base left" 0 "$(base_fds)"
ctl_ok "$M/g0" "open b aio:$I/base.raw"
ctl_close "$M/g0" b

# ---- what one more chain over a shared base costs -------------------------
# The base's tables are held once; each further chain costs its own leaf's
# state, which must stay below the metadata of the base it shares, or
# sharing would save little.  Bases of 1 GiB with every table there: a
# qcow2 made with preallocation=metadata (header, L1, L2 tables, refcount
# table and block: qemu-img measure's fully allocated size less the data)
# and a vhd with all 512 of its 2 MiB blocks allocated (BAT and bitmaps).
# A fresh daemon (one that freed the chains above would fill its free
# memory first) reads its VmRSS with one child of each base open and read,
# then with NM; the growth per extra pair of children, averaged over
# NM - 1, must be below each base's metadata.  Not under a sanitizer (make
# asan), whose shadow memory and quarantine are not the daemon's.
NM=16
GiB=1073741824
rss_kib() { sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\) kB$/\1/p' \
	/proc/"$TAPFS_PID"/status; }
check qemu-img create -q -f qcow2 -o preallocation=metadata \
	"$I/mbase.qcow2" 1G
q2_meta=$(($(qemu-img measure -O qcow2 --size 1G |
	sed -n 's/^fully allocated size: //p') - GiB))
check "$TAPFS_IMG" create -q -f vhd "$I/mbase.vhd" 1G
blocks=()
for b in $(seq 0 511); do
	blocks+=(-c "write -P 1 $((b * 2 * MiB)) 512")
done
check qemu-io -t unsafe -f vpc "${blocks[@]}" "$I/mbase.vhd"
check_match "the vhd base has all its blocks" "in 512 blocks" \
	"$("$TAPFS_IMG" info "$I/mbase.vhd")"
# BAT: 512 entries of 4 bytes; a bitmap of 4096 sectors per block.
vhd_meta=$((512 * 4 + 512 * 512))
for k in $(seq 0 $((NM - 1))); do
	check qemu-img create -q -f qcow2 -b mbase.qcow2 -F qcow2 \
		"$I/q$k.qcow2"
	check "$TAPFS_IMG" create -q -f vhd -b "$I/mbase.vhd" -F vhd \
		"$I/v$k.vhd"
done
# read_children FIRST LAST: 64 KiB at four places of each child.
read_children() {
	python3 - "$M" "$NG" "$1" "$2" <<'PY'
import os, sys
m, ng, first, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \
    int(sys.argv[4])
for k in range(first, last + 1):
    for n in ("q%d" % k, "v%d" % k):
        fd = os.open("%s/g%d/%s" % (m, k % ng, n), os.O_RDONLY)
        for off in (0, 256 << 20, 512 << 20, 1000 << 20):
            assert len(os.pread(fd, 65536, off)) == 65536
        os.close(fd)
PY
}
tapfs_stop
tapfs_start "$M" "$S" "allow_path=$I" || summary
for k in $(seq 0 $((NM - 1))); do
	ctl_ok "$(grp $k)" "open q$k qcow2:$I/q$k.qcow2"
	ctl_ok "$(grp $k)" "open v$k vhd:$I/v$k.vhd"
	if [ "$k" = 0 ]; then
		check read_children 0 0
		rss1=$(rss_kib)
	fi
done
check read_children 1 $((NM - 1))
rssn=$(rss_kib)
per=$(((rssn - rss1) * 1024 / (NM - 1)))
msg "daemon VmRSS: $rss1 KiB with a qcow2 and a vhd child, $rssn KiB" \
	"with $NM of each: $((per / 1024)) KiB per extra pair; base" \
	"metadata: qcow2 $((q2_meta / 1024)) KiB, vhd $((vhd_meta / 1024)) KiB"
case "${TEST_CFLAGS:-}" in
*-fsanitize*) msg "sanitizer build: the memory bound is not checked" ;;
*)
	what="an extra qcow2 child and an extra vhd child together cost"
	what="$what less than either base's metadata"
	if [ "$per" -lt "$q2_meta" ] && [ "$per" -lt "$vhd_meta" ]; then
		ok "$what ($((per / 1024)) KiB)"
	else
		fail "$what" "$per bytes per pair; qcow2 base $q2_meta, \
vhd base $vhd_meta"
	fi
	;;
esac
for k in $(seq 0 $((NM - 1))); do
	ctl_close "$(grp $k)" q$k
	ctl_close "$(grp $k)" v$k
done

tapfs_stop
summary
