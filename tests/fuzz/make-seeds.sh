#!/bin/bash
# make-seeds.sh - build the seed corpora of the libFuzzer targets.
#
#	tests/fuzz/make-seeds.sh TAPFS-IMG DIR
#
# Fills DIR/corpus-vhd, DIR/corpus-qcow2, DIR/corpus-qcow, DIR/corpus-vmdk and DIR/corpus-ctl with small
# valid inputs (a fuzzer mutates from them): images made by tapfs-img and,
# when it is installed, by qemu-img (an independent writer: compressed
# clusters, extended L2, other refcount widths, v2 images, QEMU's VHD
# footers), with data in them so that the data paths are reached, and one
# line of every .ctl command.  Images stay under 64 KiB, the fuzzers'
# -max_len.  Seeds that exist are kept, so a corpus grown by earlier runs
# is never thrown away.
set -eu

if [ $# -ne 2 ]; then
	echo "usage: $0 TAPFS-IMG DIR" >&2
	exit 2
fi
img=$(realpath "$1")
dir=$2
vhd=$dir/corpus-vhd
q2=$dir/corpus-qcow2
q1=$dir/corpus-qcow
vmdk=$dir/corpus-vmdk
ctl=$dir/corpus-ctl
mkdir -p "$vhd" "$q2" "$q1" "$vmdk" "$ctl"
tmp=$(mktemp -d /tmp/tapfs-seeds.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

have_qemu_img=0
command -v qemu-img >/dev/null 2>&1 && have_qemu_img=1

# seed DIR NAME CMD...: run CMD (which writes $tmp/out) unless DIR/NAME
# exists, then keep $tmp/out as DIR/NAME.
seed() {
	local d=$1 name=$2

	shift 2
	[ -e "$d/$name" ] && return 0
	rm -f "$tmp/out"
	"$@" >/dev/null
	mv "$tmp/out" "$d/$name"
}

# A 16 KiB raw file with text in some sectors and zeros in others.
printf 'tapfs%.0s' $(seq 900) >"$tmp/data.raw"
truncate -s 16K "$tmp/data.raw"

# VHD: dynamic, differencing (over a parent next to it), fixed, with data.
seed "$vhd" dynamic.vhd "$img" create -q -o block_size=4K "$tmp/out" 64K
if [ ! -e "$vhd/diff.vhd" ]; then
	"$img" create -q -o block_size=4K "$tmp/base.vhd" 64K
	"$img" snapshot -o block_size=4K "$tmp/base.vhd" "$tmp/out" >/dev/null
	mv "$tmp/out" "$vhd/diff.vhd"
fi
seed "$vhd" fixed.vhd "$img" create -q -o subformat=fixed "$tmp/out" 8K
seed "$vhd" data.vhd "$img" convert -O vhd -o block_size=4K \
	"$tmp/data.raw" "$tmp/out"
if [ $have_qemu_img = 1 ]; then
	# (QEMU's dynamic VHD has 2 MiB blocks: this one holds no data.)
	seed "$vhd" qemu-dynamic.vhd qemu-img create -f vpc \
		-o subformat=dynamic "$tmp/out" 64K
	seed "$vhd" qemu-fixed.vhd qemu-img create -f vpc \
		-o subformat=fixed "$tmp/out" 8K
fi

# qcow2: v3 and v2 (with a backing file name), with data.
seed "$q2" v3.qcow2 "$img" create -q -f qcow2 -o cluster_size=512 \
	"$tmp/out" 64K
if [ ! -e "$q2/v2.qcow2" ]; then
	"$img" create -q -f qcow2 -o cluster_size=512 "$tmp/v3.qcow2" 64K
	(cd "$tmp" && "$img" create -q -f qcow2 \
		-o cluster_size=512,compat=0.10 -b v3.qcow2 out)
	mv "$tmp/out" "$q2/v2.qcow2"
fi
seed "$q2" data.qcow2 "$img" convert -O qcow2 -o cluster_size=512 \
	"$tmp/data.raw" "$tmp/out"
if [ $have_qemu_img = 1 ]; then
	q() { qemu-img convert -O qcow2 -o "cluster_size=512,$1" \
		"$tmp/data.raw" "$tmp/out"; }
	seed "$q2" qemu-compressed.qcow2 qemu-img convert -c -O qcow2 \
		-o cluster_size=4096 "$tmp/data.raw" "$tmp/out"
	seed "$q2" qemu-v2.qcow2 q compat=0.10
	seed "$q2" qemu-refcount1.qcow2 q refcount_bits=1
	seed "$q2" qemu-refcount64.qcow2 q refcount_bits=64
	seed "$q2" qemu-lazy.qcow2 q lazy_refcounts=on
	# (extended L2 needs 16 KiB clusters: this one holds no data.)
	seed "$q2" qemu-extl2.qcow2 qemu-img create -f qcow2 \
		-o cluster_size=16384,extended_l2=on "$tmp/out" 16K
	seed "$q2" qemu-backing.qcow2 qemu-img create -f qcow2 \
		-o cluster_size=512 -b data.raw -F raw "$tmp/out" 16K
fi

# qcow (version 1): empty, with data, over a backing file, compressed.
seed "$q1" empty.qcow "$img" create -q -f qcow "$tmp/out" 64K
seed "$q1" data.qcow "$img" convert -O qcow "$tmp/data.raw" "$tmp/out"
if [ $have_qemu_img = 1 ]; then
	seed "$q1" qemu-data.qcow qemu-img convert -O qcow \
		"$tmp/data.raw" "$tmp/out"
	# (qemu-img 7.2 exits 1 after writing a compressed qcow: keep it.)
	if [ ! -e "$q1/qemu-compressed.qcow" ]; then
		rm -f "$tmp/out"
		qemu-img convert -c -O qcow "$tmp/data.raw" "$tmp/out" \
			>/dev/null 2>&1 || true
		if [ -s "$tmp/out" ]; then
			mv "$tmp/out" "$q1/qemu-compressed.qcow"
		fi
	fi
	seed "$q1" qemu-backing.qcow qemu-img create -f qcow \
		-b data.raw -F raw "$tmp/out" 16K
fi

# vmdk: monolithicSparse (empty, with data), streamOptimized, a descriptor.
seed "$vmdk" empty.vmdk "$img" create -q -f vmdk "$tmp/out" 1M
seed "$vmdk" data.vmdk "$img" convert -O vmdk "$tmp/data.raw" "$tmp/out"
if [ $have_qemu_img = 1 ]; then
	seed "$vmdk" qemu-sparse.vmdk qemu-img convert -O vmdk \
		-o subformat=monolithicSparse "$tmp/data.raw" "$tmp/out"
	seed "$vmdk" qemu-stream.vmdk qemu-img convert -O vmdk \
		-o subformat=streamOptimized "$tmp/data.raw" "$tmp/out"
	if [ ! -e "$vmdk/qemu-flat.vmdk" ]; then
		qemu-img create -q -f vmdk -o subformat=monolithicFlat \
			"$tmp/flat.vmdk" 64K
		mv "$tmp/flat.vmdk" "$vmdk/qemu-flat.vmdk"
	fi
fi

# .ctl: one line of each command, and a batch of several.
c() { printf '%s' "$2" >"$ctl/$1"; }
c create 'create d raw 1G'
c create-vhd 'create d 512M'
c create-qcow2 'create d qcow2 64K'
c open 'open d vhd:/x.vhd ro'
c open-fault 'open d fault:err=EIO,rate=50:qcow2:/a/b.qcow2'
c close 'close d'
c pause 'pause'
c resume 'resume d'
c flush 'flush'
c snapshot 'snapshot d'
c fault 'fault d err=EIO,every=3'
c fault-delay 'fault d delay_ms=20,ops=rw,burst=4'
c batch $'pause d\nresume d\nsnapshot\n'
