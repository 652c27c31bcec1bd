#!/bin/bash
# test-vhd-geometry.sh - the virtual size of a VHD by its footer's creator.
#
# Virtual PC ("vpc ") and QEMU ("qemu") size a disk by its CHS geometry
# (cylinders * heads * sectors per track * 512); everyone else by the
# footer's current size; the maximum geometry 65535/16/255 means "use the
# current size" for every creator (docs/vhd.md).  A 300 MiB Virtual PC
# disk is 609/16/63: 264 KiB less than its current size.
#
# Images of 300 MiB made by tapfs-img (dynamic and fixed) get each
# creator patched into their footers (checksums fixed), and qemu-img
# create makes its own ("qemu" with the size rounded up to the geometry;
# "qem2" with force_size).  For each:
#   - tapfs-img info --json and the VBD's size are the expected size, and
#     equal qemu-img info's, except for "vs  " (Virtual Server), which
#     QEMU sizes by geometry and tapfs by current size (documented);
#   - tapfs-img info shows the footer's current size when it differs;
#   - writes at and past the end through tapfs fail with ENOSPC (short
#     when straddling it); the last sector written through tapfs is the
#     last sector QEMU reads (where a GPT keeps its backup header), and
#     qemu-img compare finds tapfs's view of the disk identical;
#   - tapfs-img check stays clean.
. "$(dirname "$0")/lib.sh"
requires qemu-img qemu-io python3 cmp

M=$T/mnt
S=$T/store
G=$M/g
MiB=1048576
CUR=$((300 * MiB))		# what the footers say
CHS=$((609 * 16 * 63 * 512))	# what the geometry says: 314302464
if [ ! -x "$TAPFS_IMG" ]; then
	fail "tapfs-img" "$TAPFS_IMG is not built"
	summary
fi

# footer FILE [creator=APP] [geometry=C/H/S] [current=BYTES]: patch the
# footer at the end of FILE and its copy at offset 0 (if there is one),
# then fix their checksums.  APP is padded with NULs to 4 bytes.
footer() { pylib vhdfile footer "$@"; }

json() { json_field "$1"; }
img_json() { "$TAPFS_IMG" info --json "$2" | json "$1"; }
qemu_size() { qemu-img info -f vpc --output=json "$1" | json virtual-size; }

# sector_hex FILE OFF: the 512 bytes at OFF of a plain file, as hex.
sector_hex() { fsop pread "$1" "$2" 512; }

# one NAME CREATOR EXPECTED QEMU [fixed]: a 300 MiB image by tapfs-img
# with CREATOR patched in; tapfs must show EXPECTED bytes, qemu QEMU.
one() {
	local n=$1 app=$2 want=$3 qwant=$4 sub=${5:-dynamic} f=$S/g/$1.vhd
	local size last marker

	check "$TAPFS_IMG" create -f vhd -o subformat="$sub" "$f" $CUR
	check footer "$f" creator="$app"
	check_eq "$n: qemu-img virtual size" "$qwant" "$(qemu_size "$f")"
	check_eq "$n: tapfs-img virtual size" "$want" \
		"$(img_json virtual-size "$f")"
	check_eq "$n: tapfs-img current size" "$CUR" \
		"$(img_json current-size "$f")"
	if [ "$want" != "$CUR" ]; then
		check_match "$n: info shows the current size it does not use" \
			"^current size: 300 MiB \($CUR bytes\) in the footer; .*geometry 609/16/63 of creator \"$app\"$" \
			"$("$TAPFS_IMG" info "$f" | grep '^current size')"
	else
		check_eq "$n: info has no second size" "" \
			"$("$TAPFS_IMG" info "$f" | grep '^current size')"
	fi

	ctl_ok "$G" "open $n vhd:$f" || return
	size=$(file_size "$G/$n")
	check_eq "$n: VBD size" "$want" "$size"
	check_eq "$n: .ctl size" "$n running vhd $want rw vhd:$f" \
		"$(ctl_line "$G" "$n")"
	check_fsop "$n: pwrite at the end -> ENOSPC" ENOSPC -- \
		pwrite "$G/$n" "$size" 00
	check_fsop "$n: pwrite 264 KiB past the end -> ENOSPC" ENOSPC -- \
		pwrite "$G/$n" $((size + 264 * 1024)) 00
	check_fsop "$n: pwrite straddling the end -> short" 2 ENOSPC -- \
		pwrite "$G/$n" $((size - 2)) 41424344
	# The last sector, where a GPT keeps its backup header.
	last=$((size - 512))
	marker=$(printf 'EFI PART%s' "$n" | od -An -tx1 | tr -d ' \n')
	marker=$(printf '%-1024s' "$marker" | tr ' ' 0)
	check_eq "$n: write the last sector" 512 \
		"$(fsop pwrite "$G/$n" "$last" "$marker")"
	check_eq "$n: size unchanged" "$want" "$(file_size "$G/$n")"
	rm -f "$T/$n.raw"
	check cp "$G/$n" "$T/$n.raw"
	ctl_close "$G" "$n"

	if [ "$want" = "$qwant" ]; then
		check qemu-img compare -f raw -F vpc "$T/$n.raw" "$f"
		check qemu-io -f vpc -c "read -P 0x45 $last 1" \
			-c "read -P 0x00 $((last + 16)) 496" "$f"
	fi
	if [ "$sub" = fixed ]; then
		check_eq "$n: the last sector is at $last in the file" \
			"$marker" "$(sector_hex "$f" "$last")"
		check_eq "$n: the footer is where it was" "$(sector_hex \
			"$f" "$CUR" | cut -c1-16)" "636f6e6563746978"
	fi
	check "$TAPFS_IMG" check "$f"
	rm -f "$T/$n.raw"
}

tapfs_start "$M" "$S" || summary
check mkdir "$G"

# Sized by geometry: Virtual PC and QEMU.
one vpc "vpc " $CHS $CHS
one qemu qemu $CHS $CHS
one vpcfix "vpc " $CHS $CHS fixed
# Sized by current size, in QEMU too: tapfs's own (blktap's "tap\0"),
# Hyper-V, qemu-img's force_size, Disk2vhd, XenConverter.
one tap tap $CUR $CUR
one win "win " $CUR $CUR
one qem2 qem2 $CUR $CUR
one d2v "d2v " $CUR $CUR
one ctxs CTXS $CUR $CUR
one winfix "win " $CUR $CUR fixed
# Virtual Server: QEMU takes the geometry (it falls back to it for every
# creator it does not know), tapfs the current size.
one vs "vs  " $CUR $CHS

# The maximum geometry says "larger than CHS": current size, any creator.
f=$S/g/max.vhd
check "$TAPFS_IMG" create -f vhd "$f" $CUR
check footer "$f" creator="vpc " geometry=65535/16/255
check_eq "max geometry: qemu-img virtual size" $CUR "$(qemu_size "$f")"
check_eq "max geometry: tapfs-img virtual size" $CUR \
	"$(img_json virtual-size "$f")"
check_eq "max geometry: sized from" current-size \
	"$(img_json size-from "$f")"
ctl_ok "$G" "open max vhd:$f"
check_eq "max geometry: VBD size" $CUR "$(file_size "$G/max")"
ctl_close "$G" max

# What qemu-img itself writes: "qemu", the size rounded up to a geometry
# (both sizes agree); "qem2" with force_size (the maximum geometry).
for v in "qq:" "qf:-o force_size=on"; do
	n=${v%%:*}
	f=$S/g/$n.vhd
	# shellcheck disable=SC2086
	check qemu-img create -q -f vpc ${v#*:} "$f" 300M
	q=$(qemu_size "$f")
	check_eq "$n: tapfs-img virtual size is qemu-img's" "$q" \
		"$(img_json virtual-size "$f")"
	ctl_ok "$G" "open $n vhd:$f"
	check_eq "$n: VBD size is qemu-img's" "$q" "$(file_size "$G/$n")"
	check_eq "$n: write the last sector" 512 \
		"$(fsop pwrite "$G/$n" $((q - 512)) "$(printf '%01024d' 7)")"
	check_fsop "$n: pwrite at the end -> ENOSPC" ENOSPC -- \
		pwrite "$G/$n" "$q" 00
	ctl_close "$G" "$n"
	check qemu-io -f vpc -c "read -P 0x07 $((q - 1)) 1" "$f"
	check "$TAPFS_IMG" check "$f"
done
msg "qemu-img create 300M: $(img_json virtual-size "$S/g/qq.vhd")" \
	"bytes ($(img_json creator "$S/g/qq.vhd")), force_size:" \
	"$(img_json virtual-size "$S/g/qf.vhd") ($(img_json creator \
	"$S/g/qf.vhd"))"

tapfs_stop
summary
