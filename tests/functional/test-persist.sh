#!/bin/bash
# test-persist.sh - the store outlives the daemon; start-up and shut-down.
#
# Groups and VBDs (created and opened, rw and ro) with data; unmount (exit
# status 0); the store images hold the data; remount on the same store:
# same tree, modes, sizes, .ctl lines and data.  A second daemon on a
# store in use refuses to start with a clear message.  SIGTERM flushes,
# unmounts and exits 0.  The daemonising form returns only once the mount
# is live; so does mount.tapfs, in both its own and mount(8)'s argument
# order, with generic mount options ignored.  After each unmount: no
# process, no mount, no loop device left.
. "$(dirname "$0")/lib.sh"
requires python3 md5sum dd find
requires_root

M=$T/mnt
S=$T/store
MiB=1048576

# tree: what a listing of the mount must show across restarts.
tree() {
	(cd "$M" && find . -mindepth 1 ! -name .ctl ! -name .stats \
		-printf '%p %y %m %s\n' | sort)
	for g in "$M"/*/; do
		echo "== $(basename "$g")"
		timeout 10 tail -n +2 "$g/.ctl" | sort
	done
}

# sums: md5 of every VBD through the mount.
sums() { (cd "$M" && md5sum */* | sort -k 2); }

# nothing_left PID: after an unmount, no process, no mount, no loop.
nothing_left() {
	check_not pid_alive "$1"
	check_eq "no mount left under $T" "" \
		"$(awk -v d="$T" 'index($2, d) == 1' /proc/mounts)"
	check_eq "no loop device on $T" "" \
		"$(losetup -n -l -O BACK-FILE 2>/dev/null | grep -F "$T")"
}

# _daemon_reap MNT PIDFILE: cleanup for a daemonised tapfs (not our child).
_daemon_reap() {
	local pid
	pid=$(cat "$2" 2>/dev/null)
	! is_fuse_mounted "$1" || _unmount "$1"
	[ -n "$pid" ] || return 0
	if ! wait_gone "$pid" "$TAPFS_STOP_TIMEOUT"; then
		msg "cleanup: daemon $pid did not exit, sending SIGTERM"
		kill -TERM "$pid" 2>/dev/null
		wait_gone "$pid" 5 || kill -KILL "$pid" 2>/dev/null
	fi
	! is_fuse_mounted "$1" || fusermount3 -uz "$1"
}

# stop_daemonised NAME MNT PIDFILE: umount(8), then the PID must go.
stop_daemonised() {
	local pid
	pid=$(cat "$3" 2>/dev/null)
	check umount "$2"
	if wait_gone "$pid" "$TAPFS_STOP_TIMEOUT"; then
		ok "$1: daemon $pid exits after umount"
	else
		fail "$1: daemon $pid exits after umount" "still running"
	fi
	nothing_left "$pid"
}

# ---- command line -----------------------------------------------------

out=$("$TAPFS" --help 2>&1)
check_eq "tapfs --help exits 0" 0 "$?"
check_match "tapfs --help shows usage" "[Uu]sage" "$out"
out=$("$TAPFS" -V 2>&1)
check_eq "tapfs -V exits 0" 0 "$?"
check_match "tapfs -V prints a version" "[0-9]" "$out"
out=$(timeout 10 "$TAPFS" -f -o store="$T/cli-store" 2>&1)
check_eq "tapfs without a mount point exits 1" 1 "$?"
check_match "... and says so" "[Uu]sage|[Mm]ount ?point|MOUNTPOINT" "$out"
out=$(timeout 10 "$TAPFS" -o store="$T/cli-store" "$T/no/such/dir" 2>&1)
check_eq "tapfs on a missing mount point exits 1" 1 "$?"
check_match "... and names it" "$T/no/such/dir" "$out"

# ---- first life: build a tree --------------------------------------------

tapfs_start "$M" "$S" "allow_path=$T" || summary
check test -d "$S"		# created if missing
check mkdir "$M/g1" "$M/g2" "$M/empty"
ctl_ok "$M/g1" "create a raw 16M"
ctl_ok "$M/g1" "create b raw 8M"
ctl_ok "$M/g2" "create c raw 4M"
head -c $((2 * MiB)) /dev/urandom >"$T/ext.raw"
ctl_ok "$M/g2" "open ext raw:$T/ext.raw ro"
check dd if=/dev/urandom of="$M/g1/a" bs=1M count=16 oflag=direct \
	conv=notrunc status=none
check dd if=/dev/urandom of="$M/g1/b" bs=4k count=1000 seek=7 \
	conv=notrunc status=none
check dd if=/dev/urandom of="$M/g2/c" bs=1M count=4 conv=notrunc \
	status=none
tree >"$T/tree.1"
sums >"$T/sums.1"
check_eq "tree has 3 groups and 4 VBDs" 7 \
	"$(grep -c '^\./' "$T/tree.1")"
check_eq "pidfile holds the daemon's PID" "$TAPFS_PID" \
	"$(tr -d ' \n' <"$TAPFS_PIDFILE" 2>&1)"

# A second daemon on the same store refuses, in both modes.
why="[Ll]ock|[Ii]n use|[Aa]lready|[Rr]unning|[Bb]usy|$S"
mkdir -p "$T/mnt2"
on_exit "! is_fuse_mounted '$T/mnt2' || fusermount3 -u '$T/mnt2'"
timeout 15 "$TAPFS" -f -o store="$S" "$T/mnt2" </dev/null \
	>"$T/second.out" 2>&1
rc=$?
check test "$rc" -ne 0 -a "$rc" -ne 124	# refused, and did not hang
check_match "second daemon says why" "$why" "$(cat "$T/second.out")"
check_not is_fuse_mounted "$T/mnt2"
timeout 15 "$TAPFS" -o store="$S" "$T/mnt2" </dev/null \
	>"$T/second.out" 2>&1
rc=$?
check_in "second daemon (daemonising) on a store in use exits 1" "$rc" 1
check_match "second daemon says why" "$why" "$(cat "$T/second.out")"
check_not is_fuse_mounted "$T/mnt2"
check_eq "first daemon unaffected" "$(cat "$T/sums.1")" "$(sums)"

PID1=$TAPFS_PID
tapfs_stop
nothing_left "$PID1"
check test -f "$S/manifest"
for n in g1 g2 empty a b c ext; do
	check grep -qw -- "$n" "$S/manifest"
done
# The data is in the images once the daemon is gone.
check_eq "store images hold the data" "$(cat "$T/sums.1")" \
	"$( (cd "$S" && md5sum g1/a.raw g1/b.raw g2/c.raw "$T/ext.raw") |
		sed -e 's|\.raw$||' -e "s|$T/ext|g2/ext|" | sort -k 2)"

# ---- second life: the same tree ------------------------------------------

tapfs_start "$M" "$S" "allow_path=$T" || summary
tree >"$T/tree.2"
check_eq "same tree after remount" "$(cat "$T/tree.1")" "$(cat "$T/tree.2")"
check_eq "same data after remount" "$(cat "$T/sums.1")" "$(sums)"
check_fsop "ro VBD still refuses writes" EACCES EROFS EPERM -- \
	open "$M/g2/ext" w
check dd if=/dev/urandom of="$M/g1/b" bs=64k count=16 conv=notrunc \
	status=none
sums >"$T/sums.2"

# SIGTERM: flush, unmount, exit 0.
PID2=$TAPFS_PID
check kill -TERM "$PID2"
if wait_gone "$PID2" "$TAPFS_STOP_TIMEOUT"; then
	wait "$PID2"
	check_eq "exit status after SIGTERM" 0 "$?"
else
	fail "daemon exits after SIGTERM" "pid $PID2 still running"
fi
check_not is_mounted "$M"
nothing_left "$PID2"
check_eq "store holds writes made before SIGTERM" \
	"$(grep ' g1/b$' "$T/sums.2" | cut -d' ' -f1)" \
	"$(md5sum <"$S/g1/b.raw" | cut -d' ' -f1)"

# ---- daemonising start ---------------------------------------------------

P=$T/daemon.pid
on_exit "_daemon_reap '$M' '$P'"
timeout 30 "$TAPFS" -o store="$S",pidfile="$P",allow_path="$T" "$M" \
	</dev/null >"$T/daemon.out" 2>&1
check_eq "tapfs (daemonising) exits 0 once mounted" 0 "$?"
check is_fuse_mounted "$M"
check_eq "live at once: groups listed" "empty g1 g2" \
	"$(ls "$M" 2>&1 | tr '\n' ' ' | sed 's/ $//')"
check pid_alive "$(cat "$P" 2>/dev/null)"
check_eq "same data (daemonised)" "$(cat "$T/sums.2")" "$(sums)"
stop_daemonised "tapfs daemonised" "$M" "$P"

# A relative mount point is the one below the working directory, even
# though the daemon works from / ("mnt" must not become /mnt).
P=$T/rel.pid
on_exit "_daemon_reap '$M' '$P'"
(cd "$T" && timeout 30 "$TAPFS" -o store="$S",pidfile="$P",allow_path="$T" \
	"$(basename "$M")" </dev/null >"$T/rel.out" 2>&1)
check_eq "tapfs with a relative mount point exits 0" 0 "$?"
check is_fuse_mounted "$M"
check_eq "relative mount point: the store's groups" "empty g1 g2" \
	"$(ls "$M" 2>&1 | tr '\n' ' ' | sed 's/ $//')"
stop_daemonised "tapfs (relative mount point)" "$M" "$P"
out=$(cd "$T" && timeout 10 "$TAPFS" -o store="$S" no-such-dir 2>&1)
check_match "a relative mount point that does not exist: said" \
	"mount point no-such-dir: No such file or directory" "$out"

# ---- mount.tapfs ---------------------------------------------------------

if check test -x "$MOUNT_TAPFS"; then
	export TAPFS_DAEMON=$TAPFS PATH="$(dirname "$TAPFS"):$PATH"

	P=$T/helper1.pid
	on_exit "_daemon_reap '$M' '$P'"
	timeout 30 "$MOUNT_TAPFS" -o store="$S",pidfile="$P",allow_path="$T" "$M" \
		</dev/null >"$T/helper1.out" 2>&1
	check_eq "mount.tapfs -o ... MNT exits 0" 0 "$?"
	check is_fuse_mounted "$M"
	check_eq "mount.tapfs: live at once" "empty g1 g2" \
		"$(ls "$M" 2>&1 | tr '\n' ' ' | sed 's/ $//')"
	check_eq "mount.tapfs: same data" "$(cat "$T/sums.2")" "$(sums)"
	stop_daemonised "mount.tapfs" "$M" "$P"

	P=$T/helper2.pid
	on_exit "_daemon_reap '$M' '$P'"
	timeout 30 "$MOUNT_TAPFS" tapfs "$M" \
		-o rw,store="$S",pidfile="$P",allow_path="$T",nofail,noauto,_netdev,x-test.opt \
		</dev/null >"$T/helper2.out" 2>&1
	check_eq "mount.tapfs SPEC MNT -o (mount(8) form) exits 0" 0 "$?"
	check is_fuse_mounted "$M"
	check_eq "mount(8) form: live at once" "empty g1 g2" \
		"$(ls "$M" 2>&1 | tr '\n' ' ' | sed 's/ $//')"
	check_eq "mount(8) form: same data" "$(cat "$T/sums.2")" "$(sums)"
	stop_daemonised "mount.tapfs (mount(8) form)" "$M" "$P"
fi

summary
