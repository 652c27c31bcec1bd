#!/bin/bash
# test-lock.sh - one writer per image: refused a second read-write open in
# the same daemon, in another daemon, and by QEMU; and QEMU refused by
# tapfs's locks (docs/locking.md).
#
#   (a) one daemon: every combination of rw/ro opens, parents, snapshot,
#       create over a held image, close/remount, and the reproduction of
#       the lost-data bug (two rw opens of one qcow2 image);
#   (b) tapfs-img: writing and checking verbs on an image a mount holds;
#   (c) two daemons, two stores, one shared image directory: refused with
#       the holder's PID, ro shared, free at once after kill -9;
#   (d) QEMU both ways: qemu-storage-daemon's rw export refuses tapfs;
#       tapfs's VBD refuses qemu-io writes and qemu-img info.
. "$(dirname "$0")/lib.sh"
requires qemu-img qemu-io qemu-storage-daemon fio python3 fusermount3

I=$T/img
M=$T/mnt
S=$T/store
M2=$T/mnt2
S2=$T/store2
MiB=1048576
mkdir -p "$I" "$S" "$S2"

# status_says NAME GROUPDIR ERE: the .ctl status line matches.
status_says() { check_match "$1" "$3" "$(ctl_status "$2")"; }

# qemu_refused NAME ERE CMD...: QEMU fails and says why.
qemu_refused() {
	local name=$1 ere=$2 out rc
	shift 2
	out=$("$@" 2>&1)
	rc=$?
	if [ $rc -ne 0 ] && printf '%s\n' "$out" | grep -Eq -- "$ere"; then
		ok "$name"
	else
		fail "$name" "exit $rc: $(printf '%s' "$out" | head -n 2)"
	fi
}

# allocated IMG: qemu-img's count of allocated clusters.
allocated() {
	qemu-img check --output=json "$1" 2>/dev/null |
		json_field allocated-clusters
}

check qemu-img create -q -f qcow2 "$I/x.qcow2" 64M
check ln "$I/x.qcow2" "$I/x-hardlink.qcow2"
check qemu-img create -q -f qcow2 "$I/base.qcow2" 64M
check qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$I/ch1.qcow2"
check qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$I/ch2.qcow2"
check qemu-img create -q -f qcow2 "$I/q.qcow2" 64M
check qemu-img create -q -f qcow2 "$I/qq.qcow2" 64M
check truncate -s 16M "$I/r.raw"
check "$TAPFS_IMG" create -q -f vhd "$I/vbase.vhd" 16M
check "$TAPFS_IMG" snapshot "$I/vbase.vhd" "$I/vchild.vhd"

# ---- (a) one daemon ---------------------------------------------------------

tapfs_start "$M" "$S" "allow_path=$I" || summary
G1=$M/g1
G2=$M/g2
check mkdir "$G1" "$G2"

# The reproduction: a second rw open of one qcow2 image is refused, and
# 32 MiB written through the first land whole.
ctl_ok "$G1" "open a qcow2:$I/x.qcow2"
ctl_err "$G1" "open c qcow2:$I/x.qcow2" EBUSY
status_says "same group: the holder is named" "$G1" \
	"^status: error: EBUSY: g1/a holds $I/x\\.qcow2 read-write$"
ctl_err "$G2" "open d qcow2:$I/x.qcow2" EBUSY
status_says "another group: the holder is named" "$G2" "g1/a holds"
ctl_err "$G2" "open e qcow2:$I/x.qcow2 ro" EBUSY
status_says "read-only over a writer: refused" "$G2" \
	"g1/a holds $I/x\\.qcow2 read-write"
ctl_err "$G2" "open h qcow2:$I/x-hardlink.qcow2" EBUSY
status_says "another name (a hard link) of the same file: refused" "$G2" \
	"g1/a holds $I/x-hardlink\\.qcow2 read-write"
fio_verify repro 120 --filename="$G1/a" --ioengine=libaio --direct=1 \
	--rw=randwrite --bs=64k --size=32M --iodepth=16 --verify=crc32c \
	--do_verify=1 --randrepeat=0
ctl_close "$G1" a
check_eq "the second open left nothing behind" "" \
	"$(ctl_line "$G1" c)$(ctl_line "$G2" d)"
check_eq "x.qcow2: 32 MiB of 64k writes = 512 clusters allocated" 512 \
	"$(allocated "$I/x.qcow2")"
check qemu-img check -q "$I/x.qcow2"
# Closed: free again, for a writer in another group.
ctl_ok "$G2" "open d qcow2:$I/x.qcow2"
ctl_close "$G2" d

# Parents: two chains share a read-only base; the base cannot be written.
ctl_ok "$G1" "open ch1 qcow2:$I/ch1.qcow2"
ctl_ok "$G2" "open ch2 qcow2:$I/ch2.qcow2"
ctl_err "$G2" "open b qcow2:$I/base.qcow2" EBUSY
# The base is open once, shared by both chains (docs/locking.md); with
# -o workers=N, once per loop (one_loop).
if one_loop; then
	status_says "rw over a parent of another chain: refused" "$G2" \
		"g1/ch1 \\(and 1 other VBD\\) uses $I/base\\.qcow2 as a read-only parent"
	check_match "the chain line says the base is shared by 2" \
		"base\\.qcow2 \\(shared by 2\\)" "$(ctl_line "$G2" ch2)"
else
	status_says "rw over a parent of another chain: refused" "$G2" \
		"g1/ch1 .*uses $I/base\\.qcow2 as a read-only parent"
fi
ctl_ok "$G2" "open bro qcow2:$I/base.qcow2 ro"
check_match "ro + ro (a parent and a read-only VBD) share" \
	"^bro running " "$(ctl_line "$G2" bro)"
# An image open rw cannot become a parent.
ctl_ok "$G1" "open q qcow2:$I/q.qcow2"
check qemu-img create -q -f qcow2 -b q.qcow2 -F qcow2 "$I/qc.qcow2"
ctl_err "$G2" "open qc qcow2:$I/qc.qcow2" EBUSY
status_says "a written image as a parent: refused" "$G2" \
	"qc\\.qcow2: parent g1/q holds $I/q\\.qcow2 read-write"
ctl_close "$G1" q
ctl_ok "$G2" "open qc qcow2:$I/qc.qcow2"
ctl_close "$G2" qc
for v in ch1; do ctl_close "$G1" $v; done
for v in ch2 bro; do ctl_close "$G2" $v; done

# Snapshot: the old leaf becomes a read-only parent in the same step.
ctl_ok "$G1" "open s qcow2:$I/q.qcow2"
check dd if=/dev/urandom of="$G1/s" bs=64k count=16 oflag=direct \
	status=none
ctl_ok "$G1" "snapshot s"
ctl_err "$G2" "open s2 qcow2:$I/q.qcow2" EBUSY
status_says "snapshot, then the old leaf rw: refused" "$G2" \
	"g1/s uses $I/q\\.qcow2 as a read-only parent"
# The old leaf's lock went down to a reader's: QEMU may read it now.
check qemu-img info "$I/q.qcow2"
child=$(ctl_line "$G1" s | awk '{ print $6 }' | cut -d: -f2)
qemu_refused "the new leaf is locked for writing" \
	'Failed to get shared "write" lock' qemu-img info "$child"
ctl_ok "$G2" "open s2 qcow2:$I/q.qcow2 ro"
ctl_close "$G2" s2
# The leaf's data went on through the chain.
check dd if=/dev/urandom of="$G1/s" bs=64k count=16 seek=16 oflag=direct \
	status=none
ctl_close "$G1" s
check qemu-img check -q "$child"

# Locks do not leak across pause, snapshot and close: after ten paused
# snapshots every old leaf is a reader's (QEMU may read it), the leaf a
# writer's; once closed, every image of the chain is free, and the daemon
# holds no more descriptors than before.
nfd() { ls /proc/"$TAPFS_PID"/fd | wc -l; }
fds0=$(nfd)
ctl_ok "$G1" "create lk qcow2 16M"
for i in $(seq 10); do
	ctl_ok "$G1" "pause lk"
	ctl_ok "$G1" "snapshot lk"
	ctl_ok "$G1" "resume lk"
done
leaf=$(ctl_line "$G1" lk | awk '{ print $6 }' | cut -d: -f2)
n=0 bad=
for f in "$S"/g1/lk*.qcow2; do
	n=$((n + 1))
	if [ "$f" = "$leaf" ]; then
		qemu-img info "$f" >/dev/null 2>&1 && bad="$bad $f(leaf)"
	else
		qemu-img info "$f" >/dev/null 2>&1 || bad="$bad $f"
	fi
done
check_eq "11 images: parents readable by QEMU, the leaf not" "11:" "$n:$bad"
ctl_close "$G1" lk
bad=
for f in "$S"/g1/lk*.qcow2; do
	qemu-io -c "write 0 512" "$f" >/dev/null 2>&1 || bad="$bad $f"
done
check_eq "closed: every image of the chain free for a writer" "" "$bad"
check_eq "no descriptor left behind" "$fds0" "$(nfd)"

# ro + ro of a raw image; then rw is refused naming a reader.
ctl_ok "$G1" "open r1 raw:$I/r.raw ro"
ctl_ok "$G2" "open r2 raw:$I/r.raw ro"
ctl_err "$G2" "open r3 raw:$I/r.raw" EBUSY
status_says "rw over two readers: refused" "$G2" \
	"g1/r1 holds $I/r\\.raw read-only"
ctl_close "$G1" r1
ctl_close "$G2" r2

# create over an existing image that a VBD holds: EBUSY naming it.
ctl_ok "$G1" "create n raw 16M"
ctl_close "$G1" n
ctl_ok "$G2" "open n raw:$S/g1/n.raw ro"
ctl_err "$G1" "create n raw 16M" EBUSY
status_says "create over a held image names the holder" "$G1" \
	"image $S/g1/n\\.raw already exists and is in use read-only by g2/n"
ctl_close "$G2" n
ctl_err "$G1" "create n raw 16M" EEXIST

# Not an image at all: a directory or a FIFO (opened without blocking).
check mkdir "$I/adir"
check mkfifo "$I/afifo"
ctl_err "$G1" "open dir raw:$I/adir" EINVAL
status_says "a directory: not a regular file" "$G1" \
	"adir: not a regular file or block device"
ctl_err "$G1" "open fifo qcow2:$I/afifo ro" EINVAL
status_says "a FIFO: not a regular file" "$G1" \
	"afifo: not a regular file or block device"

# ---- (b) tapfs-img on images a mount holds ---------------------------------

ctl_ok "$G1" "open v vhd:$I/vchild.vhd"
# name_pid ERE: tapfs-img names this daemon.
TP="pid $TAPFS_PID \\(tapfs\\)"
out=$("$TAPFS_IMG" coalesce "$I/vchild.vhd" 2>&1)
check_eq "tapfs-img coalesce of a VBD's leaf: refused (exit 1)" 1 $?
check_match "coalesce names the holder" "vchild\\.vhd is in use read-write by $TP" \
	"$out"
out=$("$TAPFS_IMG" check "$I/vchild.vhd" 2>&1)
check_eq "tapfs-img check of an image in use: exit 2" 2 $?
check_match "check names the holder" "in use read-write by $TP" "$out"
check "$TAPFS_IMG" check -U "$I/vchild.vhd"
out=$("$TAPFS_IMG" snapshot "$I/vchild.vhd" "$I/vgrand.vhd" 2>&1)
check_eq "tapfs-img snapshot of a written image: refused" 1 $?
check_not test -e "$I/vgrand.vhd"
out=$("$TAPFS_IMG" convert -O raw "$I/vchild.vhd" "$T/v.raw" 2>&1)
check_eq "tapfs-img convert of a written image: refused" 1 $?
check "$TAPFS_IMG" convert -U -O raw "$I/vchild.vhd" "$T/v.raw"
check_match "tapfs-img info: in use read-write by the daemon" \
	"^in use: read-write by $TP$" "$("$TAPFS_IMG" info "$I/vchild.vhd")"
check_match "tapfs-img info: the parent is in use read-only" \
	"^in use: read-only by $TP$" "$("$TAPFS_IMG" info "$I/vbase.vhd")"
check_match "tapfs-img info --json: in-use" \
	"\"in-use\": \"read-write by pid $TAPFS_PID \\(tapfs\\)\"" \
	"$("$TAPFS_IMG" info --json "$I/vchild.vhd")"
ctl_close "$G1" v
check_match "tapfs-img info: closed, not in use" "^in use: no$" \
	"$("$TAPFS_IMG" info "$I/vchild.vhd")"
check "$TAPFS_IMG" coalesce "$I/vchild.vhd"

# Remount: the VBD comes back, and so does its lock.
ctl_ok "$G1" "open keep qcow2:$I/x.qcow2"
tapfs_stop
check qemu-io -c "write 0 512" "$I/x.qcow2"	# free while unmounted
tapfs_start "$M" "$S" "allow_path=$I" || summary
check_match "remount: the VBD is back" "^keep running " \
	"$(ctl_line "$G1" keep)"
qemu_refused "remount: its lock is back (qemu-io write refused)" \
	'Failed to get "write" lock' qemu-io -c "write 0 512" "$I/x.qcow2"

# ---- (c) two daemons, one image directory ---------------------------------

P1=$TAPFS_PID
tapfs_start "$M2" "$S2" "allow_path=$I" || summary
P2=$TAPFS_PID
H=$M2/h
check mkdir "$H"
ctl_err "$H" "open x qcow2:$I/x.qcow2" EBUSY
status_says "second daemon: refused, naming the first's PID" "$H" \
	"x\\.qcow2 is in use read-write by pid $P1 \\(tapfs\\)$"
ctl_err "$H" "open x qcow2:$I/x.qcow2 ro" EBUSY
ctl_ok "$G1" "open shared raw:$I/r.raw ro"
ctl_ok "$H" "open shared raw:$I/r.raw ro"
check_match "ro in both daemons: shared" "^shared running " \
	"$(ctl_line "$H" shared)"
ctl_close "$H" shared
ctl_err "$H" "open w raw:$I/r.raw" EBUSY
status_says "rw over another daemon's reader: refused" "$H" \
	"r\\.raw is in use read-only by pid $P1 \\(tapfs\\)"
# kill -9 of the holder frees its images at once (OFD locks die with it).
kill -KILL "$P1"
wait "$P1" 2>/dev/null
fusermount3 -uz "$M" 2>/dev/null
ok "first daemon killed (kill -9)"
ctl_ok "$H" "open x qcow2:$I/x.qcow2"
check dd if=/dev/urandom of="$H/x" bs=64k count=16 oflag=direct status=none
ctl_close "$H" x
tapfs_stop "$P2" "$M2"

# ---- (d) QEMU ----------------------------------------------------------------

# qemu-storage-daemon exports an image read-write: tapfs is refused.
QSD_SOCK=$T/qsd.sock
qemu-storage-daemon \
	--blockdev driver=file,filename="$I/qq.qcow2",node-name=f \
	--blockdev driver=qcow2,file=f,node-name=n \
	--nbd-server addr.type=unix,addr.path="$QSD_SOCK" \
	--export type=nbd,id=e,node-name=n,writable=on \
	</dev/null >"$T/qsd.log" 2>&1 &
QSD=$!
on_exit "! pid_alive $QSD || kill $QSD; wait $QSD 2>/dev/null; true"
for _ in $(seq 100); do
	[ -S "$QSD_SOCK" ] && break
	sleep 0.1
done
check test -S "$QSD_SOCK"
tapfs_start "$M" "$S" "allow_path=$I" || summary
ctl_err "$G1" "open qs qcow2:$I/qq.qcow2" EBUSY
status_says "qemu-storage-daemon's image: refused, naming it" "$G1" \
	"qq\\.qcow2 is in use read-write by pid $QSD \\(qemu-storage-daemon\\)"
ctl_err "$G1" "open qs qcow2:$I/qq.qcow2 ro" EBUSY
kill "$QSD"
wait "$QSD" 2>/dev/null
ctl_ok "$G1" "open qs qcow2:$I/qq.qcow2"
ctl_close "$G1" qs

# tapfs holds an image: QEMU is refused with its lock error.
check_match "keep is still open" "^keep running " "$(ctl_line "$G1" keep)"
qemu_refused "qemu-io write on tapfs's image: QEMU's lock error" \
	'Failed to get "write" lock' qemu-io -c "write 0 512" "$I/x.qcow2"
qemu_refused "qemu-img info on tapfs's image: QEMU's lock error" \
	'Failed to get shared "write" lock' qemu-img info "$I/x.qcow2"
check qemu-img info -U "$I/x.qcow2"
ctl_close "$G1" keep
check qemu-io -c "write 0 512" "$I/x.qcow2"
alive "at the end"
tapfs_stop
check qemu-img check -q "$I/x.qcow2"

summary
