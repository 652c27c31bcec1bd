#!/bin/bash
# test-snapshot.sh - live snapshot through .ctl, and VHD parent chains.
#
# QEMU does not follow VHD parent chains, so the oracle for a chain is a
# model kept by this test: a raw file holding what every byte of the VBD
# should hold, written alongside the VBD by the same seeded writer.
#
# (a) A chain base + 4 snapshots with random writes between them (partial
#     sectors, partial blocks, block-crossing writes, overwrites of what
#     older images hold, a hot zone written at every step): after every
#     step the VBD reads as the model; each older image, opened read-only
#     with its own chain, reads as the model did when it was frozen; qemu
#     reads the base as it was at the first snapshot.  After unmount and
#     remount the chain and the data are the same, and the chain keeps
#     taking writes.  tapfs-img check is clean on every image; tapfs-img
#     coalesce of the leaf into its parent (VBD closed) leaves the leaf
#     reading the same and the parent reading the same on its own.
# (b) Two snapshots while fio --verify writes at QD16: fio sees no error
#     and verifies everything after, the chain has 3 images, and the old
#     leaves do not change after their snapshot.
# (c) "snapshot" without NAME gives every VBD of the group a child; a raw
#     VBD gets a VHD child whose parent is the raw image; a dynamic image
#     qemu made (CHS-rounded size) gets a child of its size.  A group snapshot
#     that fails on its second VBD rolls the first back: its chain, its
#     data and the store are as before, and the error names the VBD.
# (d) Errors: unknown VBD and an empty group ENOENT, a ram VBD and a
#     read-only VBD EINVAL, each with the reason on the status line.
# (e) A chain of 33 images (32 snapshots) reads as its model, before and
#     after a remount.
. "$(dirname "$0")/lib.sh"
requires qemu-img fio python3 cmp md5sum

M=$T/mnt
S=$T/store
I=$T/img
MiB=1048576
mkdir -p "$I"

# ---- helpers ------------------------------------------------------------

# chainio write VBD MODEL SEED N [HOT] | reads A B SEED N: N seeded
# random writes (with HOT, half of them small ones into the first HOT
# bytes) applied to a VBD and its model; reads comparing two files
# (pylib/randio.py).
chainio() {
	case $1 in
	write) shift; pylib randio write chain "$@" ;;
	*) pylib randio "$@" ;;
	esac
}

# chain_of GROUPDIR NAME: the chain field of the VBD's .ctl line.
chain_of() { ctl_line "$1" "$2" | cut -d' ' -f6-; }

# chain_len GROUPDIR NAME: how many images the chain has.
chain_len() { chain_of "$1" "$2" | awk -F' -> ' '{ print NF }'; }

have_img() { [ -x "$TAPFS_IMG" ]; }
if ! have_img; then
	msg "tapfs-img not built ($TAPFS_IMG): check, convert and" \
		"coalesce steps skipped"
fi

# img_check FILE: tapfs-img check is clean, when tapfs-img is built.
img_check() {
	if have_img; then
		check "$TAPFS_IMG" check "$1"
	else
		echo "skip - tapfs-img check $1 (tapfs-img not built)"
	fi
}

# img_raw IMAGE RAW: tapfs-img convert -O raw (through the chain).
img_raw() {
	rm -f "$2"
	"$TAPFS_IMG" convert -O raw "$1" "$2"
}

tapfs_start "$M" "$S" "allow_path=$T" || summary

# ---- (a) a chain base + 4 snapshots against a model -------------------------

G=$M/a
check mkdir "$G"
ctl_ok "$G" "create c vhd 32M"
truncate -s 32M "$T/c.model"
HOT=$((4 * MiB))

for k in 0 1 2 3 4; do
	check chainio write "$G/c" "$T/c.model" $((100 + k)) 60 $HOT
	same_bytes "c step $k: the VBD reads as the model" "$G/c" "$T/c.model"
	check chainio reads "$G/c" "$T/c.model" $((200 + k)) 40
	[ $k -eq 4 ] && break
	cp "$T/c.model" "$T/c.model.$k"		# what c.$k shows from now on
	ctl_ok "$G" "snapshot c"
	alive "after snapshot $((k + 1))"
	same_bytes "c step $k: the same data after the snapshot" \
		"$G/c" "$T/c.model"
done

chain_c="vhd:$S/a/c.4.vhd -> vhd:$S/a/c.3.vhd -> vhd:$S/a/c.2.vhd"
chain_c="$chain_c -> vhd:$S/a/c.1.vhd -> vhd:$S/a/c.vhd"
check_eq "c: .ctl shows the chain leaf first" \
	"c running vhd $((32 * MiB)) rw $chain_c" "$(ctl_line "$G" c)"

# Each frozen image, opened with its own chain, reads as it was frozen.
IMGS=("$S/a/c.vhd" "$S/a/c.1.vhd" "$S/a/c.2.vhd" "$S/a/c.3.vhd")
for k in 0 1 2 3; do
	ctl_ok "$G" "open old$k vhd:${IMGS[k]} ro"
	check_eq "old$k: chain of $((k + 1)) images" $((k + 1)) \
		"$(chain_len "$G" "old$k")"
	same_bytes "old$k: ${IMGS[k]##*/} reads as the model at snapshot" \
		"$G/old$k" "$T/c.model.$k"
	ctl_close "$G" "old$k"
done
rm -f "$T/c.q.raw"
check qemu-img convert -f vpc -O raw "$S/a/c.vhd" "$T/c.q.raw"
same_bytes "qemu-img reads the base as the model at the first snapshot" \
	"$T/c.q.raw" "$T/c.model.0"
rm -f "$T/c.q.raw" "$T"/c.model.?

# ---- (c) group snapshot; a raw VBD; a failed snapshot rolls back ------------

G2=$M/grp
check mkdir "$G2"
ctl_ok "$G2" "create a vhd 32M"
ctl_ok "$G2" "create b raw 32M"
truncate -s 32M "$T/a.model" "$T/b.model"
check chainio write "$G2/a" "$T/a.model" 301 40
check chainio write "$G2/b" "$T/b.model" 302 40
ctl_ok "$G2" "snapshot"
alive "after the group snapshot"
check_eq "a: a new VHD child of a.vhd" \
	"vhd:$S/grp/a.1.vhd -> vhd:$S/grp/a.vhd" "$(chain_of "$G2" a)"
check_eq "b: a VHD child whose parent is the raw image" \
	"vhd:$S/grp/b.1.vhd -> aio:$S/grp/b.raw" "$(chain_of "$G2" b)"
check_eq "b: format now vhd" vhd "$(ctl_line "$G2" b | cut -d' ' -f3)"
check grep -qxF "vbd grp a vhd rw vhd:$S/grp/a.1.vhd" "$S/manifest"
check grep -qxF "vbd grp b vhd rw vhd:$S/grp/b.1.vhd" "$S/manifest"
same_bytes "a: the same data after the group snapshot" "$G2/a" "$T/a.model"
same_bytes "b: the same data after the group snapshot" "$G2/b" "$T/b.model"
a_md5=$(md5sum <"$S/grp/a.vhd")
b_md5=$(md5sum <"$S/grp/b.raw")
check chainio write "$G2/a" "$T/a.model" 303 40
check chainio write "$G2/b" "$T/b.model" 304 40
same_bytes "a: reads the model after more writes" "$G2/a" "$T/a.model"
same_bytes "b: reads the model after more writes" "$G2/b" "$T/b.model"
check_eq "a.vhd unchanged by writes after the snapshot" "$a_md5" \
	"$(md5sum <"$S/grp/a.vhd")"
check_eq "b.raw unchanged by writes after the snapshot" "$b_md5" \
	"$(md5sum <"$S/grp/b.raw")"

# A snapshot of a dynamic image qemu made (size CHS-rounded, not a
# multiple of the block size): the child has the same size, reads the
# same, takes writes up to its last byte; the parent stays as qemu wrote.
check qemu-img create -q -f vpc -o subformat=dynamic "$I/q.vhd" 20M
check qemu-io -f vpc -c "write -P 0x5a 1M 3M" -c "write -P 0xa5 19M 512k" \
	"$I/q.vhd"
rm -f "$T/q.model"
check qemu-img convert -f vpc -O raw "$I/q.vhd" "$T/q.model"
qsize=$(file_size "$T/q.model")
ctl_ok "$G2" "open q vhd:$I/q.vhd"
ctl_ok "$G2" "snapshot q"
check_eq "q: a child of qemu's image, of its size" \
	"q running vhd $qsize rw vhd:$S/grp/q.1.vhd -> vhd:$I/q.vhd" \
	"$(ctl_line "$G2" q)"
same_bytes "q: reads what qemu wrote" "$G2/q" "$T/q.model"
cp "$T/q.model" "$T/q.parent"
check chainio write "$G2/q" "$T/q.model" 311 60
same_bytes "q: reads the model after writes" "$G2/q" "$T/q.model"
ctl_close "$G2" q
rm -f "$T/q.raw"
check qemu-img convert -f vpc -O raw "$I/q.vhd" "$T/q.raw"
same_bytes "q: qemu reads its image unchanged" "$T/q.raw" "$T/q.parent"
img_check "$S/grp/q.1.vhd"
rm -f "$T/q.raw" "$T/q.parent" "$T/q.model"

# A group snapshot that fails on its second VBD: a path with a backslash
# cannot be recorded in the child's Windows parent locators.
G3=$M/roll
check mkdir "$G3"
ctl_ok "$G3" "create good vhd 16M"
truncate -s 16M "$T/good.model"
check chainio write "$G3/good" "$T/good.model" 401 20
BADDIR="$I/back\\slash"
mkdir -p "$BADDIR"
check qemu-img create -q -f vpc -o subformat=dynamic "$BADDIR/bad.vhd" 16M
ctl_ok "$G3" "open bad vhd:$BADDIR/bad.vhd"
good_md5=$(md5sum <"$S/roll/good.vhd")
r=$(ctl "$G3" "snapshot")
alive "after the failed group snapshot"
check_in "snapshot of a group whose 2nd VBD cannot be snapshotted fails" \
	"$r" EINVAL ENAMETOOLONG
st=$(ctl_status "$G3")
msg "failed group snapshot: $st"
msg "log: $(grep -a "roll/good" "$TAPFS_LOG" | tail -n 2 | cat -v)"
check_match "... the status line names the VBD that failed" \
	"^status: error: E[A-Z]+: .*'bad'" "$st"
check_eq "good: back on its old chain" "vhd:$S/roll/good.vhd" \
	"$(chain_of "$G3" good)"
check_eq "bad: still on its old chain" "vhd:$BADDIR/bad.vhd" \
	"$(chain_of "$G3" bad)"
check_eq "good and bad: running" "running running" \
	"$(ctl_line "$G3" good | cut -d' ' -f2) $(ctl_line "$G3" bad |
	cut -d' ' -f2)"
check_eq "no half-made child left in the store" "good.vhd" \
	"$(cd "$S/roll" && echo *)"
check_eq "no child left beside bad.vhd" "bad.vhd" "$(cd "$BADDIR" && echo *)"
check_not grep -q "roll good.*good\.1\.vhd" "$S/manifest"
same_bytes "good: data intact after the rollback" "$G3/good" \
	"$T/good.model"
check chainio write "$G3/good" "$T/good.model" 402 20
same_bytes "good: writable after the rollback" "$G3/good" "$T/good.model"
check test "$(md5sum <"$S/roll/good.vhd")" != "$good_md5"
# A paused VBD snapshots and stays paused; a stray good.1.vhd in the
# store is left alone and the child takes the next number.
echo stray >"$S/roll/good.1.vhd"
ctl_ok "$G3" "pause good"
ctl_ok "$G3" "snapshot good"
check_eq "good: still paused after its snapshot" paused \
	"$(ctl_line "$G3" good | cut -d' ' -f2)"
ctl_ok "$G3" "resume good"
check_eq "good: snapshots alone after the failed group snapshot" \
	"vhd:$S/roll/good.2.vhd -> vhd:$S/roll/good.vhd" \
	"$(chain_of "$G3" good)"
check_eq "the stray good.1.vhd is untouched" stray "$(cat "$S/roll/good.1.vhd")"
same_bytes "good: its data after the snapshot" "$G3/good" "$T/good.model"
rm -f "$S/roll/good.1.vhd"
ctl_close "$G3" bad

# ---- (d) errors -----------------------------------------------------------

G4=$M/err
check mkdir "$G4"
ctl_err "$G4" "snapshot" ENOENT
ctl_err "$G4" "snapshot nosuch" ENOENT
check_match "unknown VBD: the status line names it" "'nosuch'" \
	"$(ctl_status "$G4")"
ctl_ok "$G4" "create m ram 16M"
ctl_err "$G4" "snapshot m" EINVAL
check_match "ram VBD: the status line says why" "'m'.*ram" \
	"$(ctl_status "$G4")"
ctl_ok "$G4" "create w vhd 16M"
ctl_err "$G4" "snapshot" EINVAL
check_eq "group snapshot refused for a ram member: w has no child" \
	"vhd:$S/err/w.vhd" "$(chain_of "$G4" w)"
ctl_close "$G4" w
ctl_ok "$G4" "open r vhd:$S/err/w.vhd ro"
ctl_err "$G4" "snapshot r" EINVAL
check_match "read-only VBD: the status line says why" "'r'.*read-only" \
	"$(ctl_status "$G4")"
check_eq "no child made by the refused snapshots" "w.vhd" \
	"$(cd "$S/err" && echo *)"
ctl_close "$G4" r
ctl_close "$G4" m
# The log names the image the child was made on top of.
check_match "log: 'snapshot: CHILD on top of OLD LEAF'" \
	"snapshot: $S/grp/a.1.vhd on top of $S/grp/a.vhd\$" \
	"$(grep -aF "snapshot: $S/grp/a.1.vhd" "$TAPFS_LOG" | cat -v)"

# ---- (e) a chain of 33 images ------------------------------------------------

G5=$M/long
check mkdir "$G5"
ctl_ok "$G5" "create v vhd 16M"
truncate -s 16M "$T/v.model"
bad=0
for n in $(seq 32); do
	chainio write "$G5/v" "$T/v.model" $((500 + n)) 4 $((2 * MiB)) ||
		bad=$((bad + 1))
	r=$(ctl "$G5" "snapshot v")
	[ "$r" = OK ] || { bad=$((bad + 1)); msg "snapshot $n: $r"; }
done
check_eq "32 snapshots with writes between them" 0 "$bad"
alive "after 32 snapshots"
check chainio write "$G5/v" "$T/v.model" 599 10 $((2 * MiB))
check_eq "v: chain of 33 images" 33 "$(chain_len "$G5" v)"
check_eq "v: leaf v.32.vhd, base v.vhd" \
	"vhd:$S/long/v.32.vhd vhd:$S/long/v.vhd" \
	"$(chain_of "$G5" v | awk -F' -> ' '{ print $1, $NF }')"
same_bytes "v: a chain of 33 reads as the model" "$G5/v" "$T/v.model"
check chainio reads "$G5/v" "$T/v.model" 600 100

# ---- (b) two snapshots under fio --verify load -------------------------------

G6=$M/load
check mkdir "$G6"
ctl_ok "$G6" "create f vhd 32M"
# 8192 4k writes at a bounded rate: the write phase lasts about 5 s.
timeout -k 5 90 fio --name=load --filename="$G6/f" --ioengine=libaio \
	--direct=1 --rw=randwrite --bs=4k --iodepth=16 --size=32M \
	--rate_iops=1600 --verify=crc32c --verify_fatal=1 --randseed=7 \
	--output-format=json --output="$T/load.json" >"$T/load.err" 2>&1 &
FIO=$!
on_exit "kill $FIO 2>/dev/null; wait $FIO 2>/dev/null"

# wait_writes N: until f has completed N writes (at most 20 s).
wait_writes() {
	local end=$((SECONDS + 20)) w
	while w=$(stat_val "$G6" f writes); [ "${w:-0}" -lt "$1" ]; do
		[ $SECONDS -ge $end ] && return 1
		sleep 0.1
	done
}
check wait_writes 1500
ctl_ok "$G6" "snapshot f"
w1=$(stat_val "$G6" f writes)
f0_md5=$(md5sum <"$S/load/f.vhd")
check wait_writes $((w1 + 2000))
ctl_ok "$G6" "snapshot f"
w2=$(stat_val "$G6" f writes)
f1_md5=$(md5sum <"$S/load/f.1.vhd")
msg "snapshots after $w1 and $w2 of 8192 writes"
check test "$w2" -lt 8000		# fio still writing at the 2nd snapshot
wait $FIO
fio_rc=$?
alive "after the snapshots under load"
fio_check "fio --verify across two snapshots" "$T/load.json" $fio_rc
check_eq "f: no client error" 0 "$(stat_val "$G6" f errors)"
check_eq "f: chain of 3 images" \
	"vhd:$S/load/f.2.vhd -> vhd:$S/load/f.1.vhd -> vhd:$S/load/f.vhd" \
	"$(chain_of "$G6" f)"
ctl_ok "$G6" "flush f"
check_eq "f.vhd not written after the first snapshot" "$f0_md5" \
	"$(md5sum <"$S/load/f.vhd")"
check_eq "f.1.vhd not written after the second snapshot" "$f1_md5" \
	"$(md5sum <"$S/load/f.1.vhd")"
ctl_close "$G6" f
for f in f.vhd f.1.vhd f.2.vhd; do
	img_check "$S/load/$f"
done

# ---- remount: chains and data persist ----------------------------------------

ctl_ok "$G" "flush"
tapfs_stop
for f in "$S"/a/*.vhd "$S"/grp/*.vhd "$S"/roll/*.vhd "$S"/long/v.vhd \
	"$S"/long/v.16.vhd "$S"/long/v.32.vhd; do
	img_check "$f"
done
tapfs_start "$M" "$S" "allow_path=$T" || summary
check_eq "c: the same chain after remount" \
	"c running vhd $((32 * MiB)) rw $chain_c" "$(ctl_line "$G" c)"
same_bytes "c: the same data after remount" "$G/c" "$T/c.model"
check_eq "a: the same chain after remount" \
	"vhd:$S/grp/a.1.vhd -> vhd:$S/grp/a.vhd" "$(chain_of "$G2" a)"
check_eq "b: the same chain after remount" \
	"vhd:$S/grp/b.1.vhd -> aio:$S/grp/b.raw" "$(chain_of "$G2" b)"
same_bytes "a: the same data after remount" "$G2/a" "$T/a.model"
same_bytes "b: the same data after remount" "$G2/b" "$T/b.model"
check_eq "v: chain of 33 after remount" 33 "$(chain_len "$G5" v)"
same_bytes "v: the same data after remount" "$G5/v" "$T/v.model"
check chainio write "$G/c" "$T/c.model" 110 60 $HOT
same_bytes "c: writes after remount" "$G/c" "$T/c.model"

# ---- coalesce the leaf into its parent (offline) -----------------------------

ctl_close "$G" c
img_check "$S/a/c.4.vhd"
if have_img; then
	check img_raw "$S/a/c.4.vhd" "$T/before.raw"
	same_bytes "tapfs-img convert of the leaf equals the model" \
		"$T/before.raw" "$T/c.model"
	check "$TAPFS_IMG" coalesce "$S/a/c.4.vhd"
	img_check "$S/a/c.3.vhd"
	img_check "$S/a/c.4.vhd"
	check img_raw "$S/a/c.4.vhd" "$T/after.raw"
	same_bytes "coalesce: the leaf reads the same" "$T/after.raw" \
		"$T/before.raw"
	check img_raw "$S/a/c.3.vhd" "$T/parent.raw"
	same_bytes "coalesce: the parent alone reads what the leaf did" \
		"$T/parent.raw" "$T/before.raw"
	rm -f "$T/before.raw" "$T/after.raw" "$T/parent.raw"
	ctl_ok "$G" "open c3 vhd:$S/a/c.3.vhd ro"
	same_bytes "coalesce: tapfs reads the parent as the model" \
		"$G/c3" "$T/c.model"
	ctl_close "$G" c3
	ctl_ok "$G" "open c vhd:$S/a/c.4.vhd"
	same_bytes "coalesce: tapfs reads the leaf as the model" \
		"$G/c" "$T/c.model"
	ctl_close "$G" c
else
	echo "skip - coalesce (tapfs-img not built)"
fi

tapfs_stop
summary
