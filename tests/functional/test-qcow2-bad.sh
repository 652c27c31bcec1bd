#!/bin/bash
# test-qcow2-bad.sh - qcow2 images the driver must refuse, and how.
#
# Every refused feature and every malformed header field, made by
# patching images qemu-img created: the open fails with the expected
# errno, no VBD is made, the daemon's log names the file and the problem
# (the field and its value, or the feature by name), and the daemon stays
# up.  Features that can be read but not written (corrupt bit, extended
# L2 entries, internal snapshots, a dirty image with damage that fixing
# refcounts does not repair) are refused read-write and open read-only,
# reading what qemu reads.  (A dirty image whose only damage is leaked or
# undercounted refcounts is repaired at open: test-qcow2-repair.sh.)  Malformed table entries met while reading fail that read
# with EIO, naming the entry, and nothing else.  tapfs-img check and info
# refuse the same headers with a message and exit status 1 or 2.
. "$(dirname "$0")/lib.sh"
requires qemu-img qemu-io python3 cmp

M=$T/mnt
S=$T/store
G=$M/g
I=$T/img
MiB=1048576
mkdir -p "$I"

# q2edit IMG FIELD|OP ARGS: damage the image (tests/pylib/qcow2file.py).
q2edit() {
	pylib qcow2file edit "$@" || fail "q2edit $*" "edit failed"
}

# mk NAME [qemu-img create options...]: a 16 MiB v3 image with data.
mk() {
	local n=$1
	shift
	rm -f "$I/$n.qcow2"
	qemu-img create -q -f qcow2 "$@" "$I/$n.qcow2" 16M &&
		qemu-io -f qcow2 -c "write -P 0x6b 0 3M" \
			-c "write -P 0x6c 9M 70000" "$I/$n.qcow2" >/dev/null
}

# refused NAME ERE ERRNO... [-- MODE]: opening $I/NAME.qcow2 (read-write,
# or with " ro" as MODE) fails with one of the ERRNOs, makes no VBD, the
# .ctl status line and the log name the file and match ERE, the log on
# one line (the driver does not log a refusal, the status line is logged
# once), and the daemon lives on.
refused() {
	local name=$1 ere=$2 mode="" r st lines log n want=()
	shift 2
	while [ $# -gt 0 ]; do
		if [ "$1" = -- ]; then
			mode=$2
			break
		fi
		want+=("$1")
		shift
	done
	fuzz_seed qcow2 "$I/$name.qcow2"
	lines=$(wc -l <"$TAPFS_LOG")
	r=$(ctl "$G" "open $name qcow2:$I/$name.qcow2$mode")
	check_in "$name${mode}: open refused" "$r" "${want[@]}"
	st=$(ctl_status "$G")
	check_eq "$name${mode}: no VBD made" "" "$(ctl_line "$G" "$name")"
	check_match "$name${mode}: the status line names the file and /$ere/" \
		"^status: error: E[A-Z]+: .*$name\.qcow2.*$ere" "$st"
	log=$(tail -n +$((lines + 1)) "$TAPFS_LOG")
	n=$(printf '%s\n' "$log" | grep -F "$name.qcow2" | grep -Ec -- "$ere")
	if [ "$n" = 1 ]; then
		ok "$name${mode}: the log names the file and /$ere/, once"
	else
		fail "$name${mode}: the log names the file and /$ere/, once" \
			"$n lines in: $log"
	fi
	if pid_alive "$TAPFS_PID"; then
		ok "$name${mode}: the daemon is alive"
	else
		fail "$name${mode}: the daemon is alive"
	fi
}

# readable NAME: opens read-only and reads what qemu reads.
readable() {
	local n=$1
	rm -f "$T/$n.raw"
	check qemu-img convert -O raw "$I/$n.qcow2" "$T/$n.raw"
	ctl_ok "$G" "open $n qcow2:$I/$n.qcow2 ro"
	if cmp -s "$G/$n" "$T/$n.raw"; then
		ok "$n ro: reads what qemu-img convert reads"
	else
		fail "$n ro: reads what qemu-img convert reads"
	fi
	ctl_close "$G" "$n"
}

tapfs_start "$M" "$S" "allow_path=$T" || summary
check mkdir "$G"

# ---- malformed header fields ---------------------------------------------

EINV=(EINVAL)
mk magic && q2edit "$I/magic.qcow2" magic 0x514649fa
refused magic "bad magic 0x514649fa" "${EINV[@]}"
mk v1 && q2edit "$I/v1.qcow2" version 1
refused v1 "version 1 \(qcow, not qcow2\)" ENOTSUP EOPNOTSUPP
mk v4 && q2edit "$I/v4.qcow2" version 4
refused v4 "unsupported version 4" ENOTSUP EOPNOTSUPP
mk cb8 && q2edit "$I/cb8.qcow2" cluster_bits 8
refused cb8 "cluster_bits 8 is not in 9..21" "${EINV[@]}"
mk cb22 && q2edit "$I/cb22.qcow2" cluster_bits 22
refused cb22 "cluster_bits 22 is not in 9..21" "${EINV[@]}"
mk hl100 && q2edit "$I/hl100.qcow2" header_length 100
refused hl100 "header_length 100" "${EINV[@]}"
mk hl108 && q2edit "$I/hl108.qcow2" header_length 108
refused hl108 "header_length 108 is not a multiple of 8" "${EINV[@]}"
mk big && q2edit "$I/big.qcow2" size $((1 << 40))
refused big "l1_size 1 is too small for the virtual size 1099511627776" \
	"${EINV[@]}"
mk huge && q2edit "$I/huge.qcow2" size $(((1 << 61) + 512))
refused huge "virtual size .* is larger than 2\^61" "${EINV[@]}"
mk l1u && q2edit "$I/l1u.qcow2" l1_offset $((3 * 65536 + 512))
refused l1u "L1 table offset 197120 is not aligned" "${EINV[@]}"
mk l1e && q2edit "$I/l1e.qcow2" l1_offset $((4096 * 65536))
refused l1e "L1 table at 268435456 .* passes the end of the file" \
	"${EINV[@]}"
mk l1big && q2edit "$I/l1big.qcow2" l1_size $((5 << 20))
refused l1big "l1_size 5242880 is larger than" "${EINV[@]}"
mk rtu && q2edit "$I/rtu.qcow2" reft_offset $((65536 + 4096))
refused rtu "refcount table offset 69632 is not aligned" "${EINV[@]}"
mk rtz && q2edit "$I/rtz.qcow2" reft_offset 0
refused rtz "refcount table at offset 0 overlaps the header" "${EINV[@]}"
mk rtc && q2edit "$I/rtc.qcow2" reft_clusters 4096
refused rtc "refcount_table_clusters 4096 is larger than" "${EINV[@]}"
mk ro7 && q2edit "$I/ro7.qcow2" refcount_order 7
refused ro7 "refcount_order 7 is larger than 6" "${EINV[@]}"
mk nsn && q2edit "$I/nsn.qcow2" nb_snapshots 70000
refused nsn "nb_snapshots 70000 is larger than 65536" "${EINV[@]}"
mk crypt3 && q2edit "$I/crypt3.qcow2" crypt 3
refused crypt3 "unknown crypt_method 3" "${EINV[@]}"
mk bko && q2edit "$I/bko.qcow2" backing_offset 65530 &&
	q2edit "$I/bko.qcow2" backing_size 10
refused bko "backing file name at 65530 \(10 bytes\) is not inside the" \
	"${EINV[@]}"
mk bks && q2edit "$I/bks.qcow2" backing_offset 1024 &&
	q2edit "$I/bks.qcow2" backing_size 1024
refused bks "backing_file_size 1024 is not in 1..1023" "${EINV[@]}"
mk ext && q2edit "$I/ext.qcow2" bytes 112 e2792aca0000ffff
refused ext "header extension 0xe2792aca at 112: length 65535 passes" \
	"${EINV[@]}"
mk ctz && q2edit "$I/ctz.qcow2" compression_type 1
refused ctz "compression_type 1 without the compression type bit" \
	"${EINV[@]}"
printf 'QFI\373\0\0\0\3' >"$I/trunc.qcow2"
refused trunc "header truncated: 8 bytes" "${EINV[@]}"

# ---- refused features ------------------------------------------------------

NOTSUP=(ENOTSUP EOPNOTSUPP)
mk aes && q2edit "$I/aes.qcow2" crypt 1
refused aes "encrypted image \(AES, crypt_method 1\)" "${NOTSUP[@]}"
refused aes "encrypted image \(AES" "${NOTSUP[@]}" -- " ro"
mk luks && q2edit "$I/luks.qcow2" crypt 2
refused luks "encrypted image \(LUKS, crypt_method 2\)" "${NOTSUP[@]}"
mk ib5 && q2edit "$I/ib5.qcow2" incompat "|0x20"
refused ib5 "unsupported incompatible feature: bit 5 \(bit 5\)" \
	"${NOTSUP[@]}"
refused ib5 "unsupported incompatible feature" "${NOTSUP[@]}" -- " ro"
mk ib9 && q2edit "$I/ib9.qcow2" incompat "|0x200" &&
	q2edit "$I/ib9.qcow2" feature 9 "frobnication"
refused ib9 "unsupported incompatible feature: frobnication \(bit 9\)" \
	"${NOTSUP[@]}"
mk zstd && q2edit "$I/zstd.qcow2" incompat "|0x8" &&
	q2edit "$I/zstd.qcow2" compression_type 1
refused zstd "unsupported compression type: zstd" "${NOTSUP[@]}"
if qemu-img create -q -f qcow2 -o data_file="$I/df.data" "$I/df.qcow2" 16M \
	2>/dev/null; then
	refused df "external data file $I/df.data: not supported" \
		"${NOTSUP[@]}"
	refused df "external data file" "${NOTSUP[@]}" -- " ro"
fi
mk bkfmt && qemu-img rebase -q -u -b "$I/magic.qcow2" -F vdi \
	"$I/bkfmt.qcow2" 2>/dev/null &&
	refused bkfmt "backing format 'vdi' is not supported" \
		"${NOTSUP[@]}"

# Readable, not writable.
mk corrupt && q2edit "$I/corrupt.qcow2" incompat "|0x2"
refused corrupt "marked corrupt \(corrupt bit\)" EROFS
readable corrupt
if qemu-img create -q -f qcow2 -o extended_l2=on "$I/xl2.qcow2" 16M \
	2>/dev/null; then
	check qemu-io -f qcow2 -c "write -P 0x31 8192 20000" "$I/xl2.qcow2"
	refused xl2 "extended L2 entries: writing is not supported" \
		"${NOTSUP[@]}"
	readable xl2
fi
mk snap && check qemu-img snapshot -c s1 "$I/snap.qcow2" &&
	check qemu-io -f qcow2 -c "write -P 0x7e 1M 2M" "$I/snap.qcow2"
refused snap "internal snapshots \(1\): writing is not supported" \
	"${NOTSUP[@]}"
readable snap

# A dirty image where two L2 entries share a data cluster counted once:
# no crash leaves that, and raising the refcount would keep two guest
# clusters on one host cluster.  Read-only only.
mk dirty && q2edit "$I/dirty.qcow2" l2copy 0 1 &&
	q2edit "$I/dirty.qcow2" incompat "|0x1"
refused dirty "dirty image with damage a repair of refcounts does not \
fix: cluster [0-9]+ .*refcount 1 but 2 references \(one data cluster \
referenced 2 times\)" EUCLEAN
readable dirty

# ---- malformed table entries: the read fails, nothing else -------------------

mk l1r && q2edit "$I/l1r.qcow2" l1entry 0 0x0100000000030000
refused l1r "L1 entry 0: .*reserved bits set" "${EINV[@]}"
mk l2u && q2edit "$I/l2u.qcow2" l2entry 1 0x8000000000050200
ctl_ok "$G" "open l2u qcow2:$I/l2u.qcow2 ro"
check_eq "l2u: reading the bad entry's cluster fails" EIO \
	"$(fsop pread "$G/l2u" 65536 512)"
check_eq "l2u: reading another cluster works" \
	"$(printf '6b%.0s' $(seq 16))" "$(fsop pread "$G/l2u" 0 16)"
check_match "l2u: the log names the entry" \
	"guest cluster 1: L2 entry 0x8000000000050200: host offset 328192 is not cluster-aligned" \
	"$(cat "$TAPFS_LOG")"
ctl_close "$G" l2u
# A compressed cluster that does not inflate.
check qemu-img convert -c -O qcow2 "$I/corrupt.qcow2" "$I/zbad.qcow2" 2>/dev/null ||
	check qemu-img convert -c -O qcow2 "$I/magic.qcow2" "$I/zbad.qcow2"
# (Its first L2 entry: compressed, the host offset in the low 54 bits.)
ZOFF=$(( $(pylib qcow2file get "$I/zbad.qcow2" l2entry 0) & ((1 << 54) - 1) ))
q2edit "$I/zbad.qcow2" bytes "$ZOFF" ffffffffffffffffffffffff
ctl_ok "$G" "open zbad qcow2:$I/zbad.qcow2 ro"
check_eq "zbad: reading the bad compressed cluster fails" EIO \
	"$(fsop pread "$G/zbad" 0 512)"
check_match "zbad: the log says it does not inflate" \
	"compressed cluster at $ZOFF .* does not inflate" "$(cat "$TAPFS_LOG")"
ctl_close "$G" zbad

# ---- tapfs-img refuses the same headers --------------------------------------

if [ -x "$TAPFS_IMG" ]; then
	check_not "$TAPFS_IMG" info "$I/cb22.qcow2"
	check_match "tapfs-img info names the problem" "cluster_bits 22" \
		"$("$TAPFS_IMG" info "$I/cb22.qcow2" 2>&1)"
	check_not "$TAPFS_IMG" check "$I/aes.qcow2"
	check_match "tapfs-img check names the feature" "AES" \
		"$("$TAPFS_IMG" check "$I/aes.qcow2" 2>&1)"
	mk low && q2edit "$I/low.qcow2" refcount 5 0
	check_not "$TAPFS_IMG" check "$I/low.qcow2"
	check_match "tapfs-img check finds the undercounted cluster" \
		"cluster 5 .*refcount 0 but 1 references" \
		"$("$TAPFS_IMG" check "$I/low.qcow2" 2>&1)"
	check_not "$TAPFS_IMG" check "$I/dirty.qcow2"
	check_match "tapfs-img check says open refuses the dirty image" \
		"a read-write open refuses this dirty image" \
		"$("$TAPFS_IMG" check "$I/dirty.qcow2" 2>&1)"
fi

tapfs_stop
summary
