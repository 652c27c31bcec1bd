#!/bin/bash
# test-odd-ops.sh - odd requests on VBD and control files get a clear
# error, change nothing, and never take the daemon down.
#
# On a raw, a vhd and a qcow2 VBD holding a known pattern, every request
# a disk file does not support, or that is unusual for it, is tried
# (fallocate modes, xattrs, chmod/chown, mmap, ioctls, O_APPEND, renames,
# links, locks, zero-length and whole-disk I/O, copy_file_range, reads
# past the end, O_DIRECT with a misaligned buffer, .ctl and .stats
# opened and truncated in odd ways); each must give the documented
# result (an errno, or success for what a disk file does support), the
# pattern must read back unchanged (except where the request was a write
# of the same bytes), and the daemon must still be serving.
. "$(dirname "$0")/lib.sh"
requires python3 sha256sum

M=$T/mnt
S=$T/store
G=$M/g
MiB=1048576
SIZE=$((8 * MiB))

tapfs_start "$M" "$S" || summary
check mkdir "$G"


# The documented answers.  "A|B": either is right.
declare -A want=(
	[fallocate-allocate]=ENOTSUP
	[fallocate-keep-size]=ENOTSUP
	[fallocate-punch-no-keep]=ENOTSUP
	[fallocate-zero-range]=ENOTSUP
	[fallocate-collapse]=ENOTSUP
	[fallocate-insert]=ENOTSUP
	[fallocate-punch-unaligned]=EINVAL
	[fallocate-punch-past-end]=OK
	[setxattr]=ENOTSUP
	[getxattr]=ENOTSUP
	[listxattr]=ENOTSUP
	[removexattr]=ENOTSUP
	[chmod]=EPERM
	[chown]=EPERM
	[chmod-ctl]=EPERM
	[utime]=OK
	[append-write]=ENOSPC
	[seek-data-hole]=OK
	[mmap-shared]=ENODEV
	[mmap-private-read]=OK
	[ioctl-fiemap]="ENOTSUP|ENOTTY"
	[ioctl-blkgetsize64]=ENOTTY
	[ioctl-fs-flags]="ENOTTY|ENOTSUP"
	[locks]=OK
	[zero-length-write]=OK
	[zero-length-read]=OK
	[read-past-end]=OK
	[direct-read-misaligned-buffer]="OK|EINVAL"
	[direct-read-misaligned-offset]="OK|EINVAL"
	[write-whole-disk-same-bytes]=OK
	[copy-file-range-onto-itself]="OK|EINVAL|EXDEV|ENOTSUP"
	[link]=EPERM
	[rename]=EPERM
	[rename-group]=EPERM
	[mkdir-in-group]=EPERM
	[readdir-vbd]=ENOTDIR
	[create-excl-existing]=EEXIST
	[truncate-shrink]=EINVAL
	[truncate-grow]=EINVAL
	[stats-open-write]=EACCES
	[stats-truncate]="EACCES|EPERM"
	[ctl-truncate]=OK
	[ctl-read-huge-offset]=OK
	[ctl-write-huge-offset]=OK
	[ctl-resume-after]=OK
	[ctl-write-empty]=OK
	[ctl-write-nul]=EINVAL
	[ctl-write-64k]="EINVAL|EFBIG|E2BIG|ENAMETOOLONG"
)

# (Python names errno 95 ENOTSUP; EOPNOTSUPP is the same number.)
for fmt in raw vhd qcow2; do
	V=$G/$fmt
	ctl_ok "$G" "create $fmt $fmt $SIZE"
	# A pattern: random bytes in the first MiB, a text marker at 5 MiB,
	# the rest as created (zeros).
	head -c $MiB /dev/urandom >"$T/model"
	truncate -s $SIZE "$T/model"
	printf 'tapfs odd-ops marker' |
		dd of="$T/model" bs=1 seek=$((5 * MiB)) conv=notrunc 2>/dev/null
	check dd if="$T/model" of="$V" bs=1M oflag=direct conv=notrunc,fsync \
		status=none
	want_sum=$(sha256sum <"$T/model")

	pylib oddops "$V" "$T/model" >"$T/odd.$fmt.out" 2>&1
	for k in "${!want[@]}"; do
		got=$(awk -v k="$k" '$1 == k { print $2 }' "$T/odd.$fmt.out")
		case "|${want[$k]}|" in
		*"|$got|"*) ok "$fmt: $k -> $got" ;;
		*) fail "$fmt: $k" "got '${got:-nothing}', want ${want[$k]}" ;;
		esac
	done
	check_eq "$fmt: every request answered" "${#want[@]}" \
		"$(wc -l <"$T/odd.$fmt.out")"
	check pid_alive "$TAPFS_PID"
	check_eq "$fmt: size unchanged" $SIZE "$(file_size "$V")"
	check_eq "$fmt: data unchanged" "$want_sum" \
		"$(dd if="$V" bs=1M iflag=direct status=none | sha256sum)"
	check_match "$fmt: VBD still running" "^$fmt running " \
		"$(ctl_line "$G" "$fmt")"
done

# The daemon took all of it and still closes and unmounts cleanly.
for fmt in raw vhd qcow2; do
	ctl_ok "$G" "close $fmt"
done
tapfs_stop
summary
