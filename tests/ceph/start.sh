#!/bin/bash
# start.sh DIR -- start a throw-away 1 mon / 1 mgr / 1 OSD (bluestore on a
# sparse file) Ceph cluster entirely under DIR, create pool "rbd", wait for
# HEALTH_OK, print the client env (shell "export" lines) on stdout.
# Usage:  eval "$(start.sh /tmp/ceph.XXXX)"   ...   stop.sh /tmp/ceph.XXXX
# (From shared/ceph-mini, whose README has the timings and the facts
# behind every setting; the functional tests use it through
# tests/functional/ceph-lib.sh.)
# Tunables (env): CEPH_MINI_OSD_SIZE (default 10G, sparse),
#                 CEPH_MINI_TIMEOUT (seconds, default 120),
#                 CEPH_MINI_AUTH=cephx|none (default cephx),
#                 CEPH_MINI_CONF_EXTRA (text appended to ceph.conf, may hold
#                   section headers, e.g. $'[client]\nrbd_cache = false').
set -euo pipefail

DIR=${1:?usage: start.sh DIR}
OSD_SIZE=${CEPH_MINI_OSD_SIZE:-10G}
TIMEOUT=${CEPH_MINI_TIMEOUT:-120}
AUTH=${CEPH_MINI_AUTH:-cephx}
log() { echo "ceph-mini: $*" >&2; }
phase() { [ -n "${DIR:-}" ] && echo "$(( ($(date +%s%N) - T0) / 1000000 )) ms $*" >> "$DIR/log/start.times"; }
die() { log "ERROR: $*"; exit 1; }

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
[ -e "$DIR/ceph.conf" ] && die "$DIR already holds a cluster"
mkdir -p "$DIR"/{mon/a,mgr/x,osd/0,log,run,crash}
CONF=$DIR/ceph.conf
unset CEPH_ARGS
T0=$(date +%s%N)

# If anything below fails, stop what was started (by PID) but keep DIR/log.
fail_cleanup() {
    local rc=$?
    if [ $rc -ne 0 ]; then
        log "start failed (rc=$rc); logs in $DIR/log"
        [ -n "${MKFS_PID:-}" ] && kill -9 "$MKFS_PID" 2>/dev/null
        for f in "$DIR"/run/*.pid; do
            [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null || true
        done
    fi
}
trap fail_cleanup EXIT

FSID=$(cat /proc/sys/kernel/random/uuid)
OSD_UUID=$(cat /proc/sys/kernel/random/uuid)
# free loopback port for the mon (msgr2 only)
PORT=$(/usr/bin/python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
MON_ADDR="[v2:127.0.0.1:$PORT]"

[ "$AUTH" = cephx ] || AUTH=none
K_MON=$(ceph-authtool --gen-print-key); K_ADM=$(ceph-authtool --gen-print-key)
K_MGR=$(ceph-authtool --gen-print-key); K_OSD=$(ceph-authtool --gen-print-key)

cat > "$CONF" <<EOF
[global]
fsid = $FSID
mon_host = $MON_ADDR
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
ms_bind_msgr1 = false
auth_cluster_required = $AUTH
auth_service_required = $AUTH
auth_client_required = $AUTH
auth_allow_insecure_global_id_reclaim = false
run_dir = $DIR/run
crash_dir = $DIR/crash
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
mon_max_pg_per_osd = 1000
mon_data_avail_warn = 2
mon_data_avail_crit = 1
mon_cluster_log_to_file = false
mon_cluster_log_file = default=$DIR/log/\$channel.log cluster=$DIR/log/cluster.log
mgr_stats_period = 1
mgr_initial_modules =
paxos_propose_interval = 0.1
mon_mgr_digest_period = 1
[client]
keyring = $DIR/keyring
[mon]
mon_data = $DIR/mon/\$id
keyring = $DIR/mon/\$id/keyring
log_file = $DIR/log/\$name.log
admin_socket = $DIR/run/\$name.asok
[mgr]
mgr_data = $DIR/mgr/\$id
keyring = $DIR/mgr/\$id/keyring
log_file = $DIR/log/\$name.log
admin_socket = $DIR/run/\$name.asok
# always-on modules (balancer crash devicehealth orchestrator pg_autoscaler
# progress rbd_support status telemetry volumes) must stay loadable, else
# HEALTH_ERR MGR_MODULE_ERROR; skip loading the rest.
mgr_disabled_modules = restful nfs iostat diskprediction_local insights alerts influx prometheus selftest snap_schedule stats telegraf test_orchestrator zabbix localpool mirroring osd_perf_query osd_support
[osd]
osd_data = $DIR/osd/\$id
keyring = $DIR/osd/\$id/keyring
log_file = $DIR/log/\$name.log
admin_socket = $DIR/run/\$name.asok
osd_objectstore = bluestore
bluestore_block_create = true
bluestore_block_size = $(numfmt --from=iec "$OSD_SIZE")
bluestore_fsck_on_mkfs = false
# the aio thread waits this long in io_getevents; every block-device close
# (several during mkfs and mount) waits for it (default 250 ms)
bdev_aio_poll_ms = 20
# fixed 128 MiB bluestore cache; osd_memory_target only steers autotune
osd_memory_target = 1073741824
bluestore_cache_autotune = false
bluestore_cache_size = 134217728
# smaller rocksdb memtables (default 4 x 256 MiB): OSD peak RSS ~540 MiB
# instead of ~680 MiB after 256 MiB of random 4K writes + 1 GiB of 4M writes
bluestore_rocksdb_options = compression=kNoCompression,max_write_buffer_number=2,min_write_buffer_number_to_merge=1,recycle_log_file_num=2,write_buffer_size=33554432,writable_file_max_buffer_size=0,compaction_readahead_size=2097152,max_background_compactions=1,max_total_wal_size=268435456
osd_op_num_shards = 2
osd_op_num_threads_per_shard = 1
EOF
[ -n "${CEPH_MINI_CONF_EXTRA:-}" ] && printf '%s\n' "$CEPH_MINI_CONF_EXTRA" >> "$CONF"

keyring_entry() { # name key caps...
    local n=$1 k=$2; shift 2
    printf '[%s]\n\tkey = %s\n' "$n" "$k"
    while [ $# -gt 0 ]; do printf '\tcaps %s = "%s"\n' "$1" "$2"; shift 2; done
}
keyring_entry client.admin "$K_ADM" mon 'allow *' osd 'allow *' mgr 'allow *' mds 'allow *' > "$DIR/keyring"
keyring_entry mgr.x "$K_MGR" mon 'allow profile mgr' osd 'allow *' mds 'allow *' > "$DIR/mgr/x/keyring"
keyring_entry osd.0 "$K_OSD" mon 'allow profile osd' mgr 'allow profile osd' osd 'allow *' > "$DIR/osd/0/keyring"
{ keyring_entry mon. "$K_MON" mon 'allow *'
  cat "$DIR/keyring" "$DIR/mgr/x/keyring" "$DIR/osd/0/keyring"; } > "$DIR/mkfs.keyring"
chmod 600 "$DIR"/keyring "$DIR"/*/*/keyring "$DIR/mkfs.keyring"

export CEPH_CONF=$CONF
# --- mon ---
monmaptool --create --fsid "$FSID" --addv a "$MON_ADDR" --enable-all-features \
    --set-min-mon-release 16 "$DIR/monmap" >/dev/null
ceph-mon --conf "$CONF" -i a --mkfs --monmap "$DIR/monmap" --keyring "$DIR/mkfs.keyring" \
    > "$DIR/log/mkfs-mon.out" 2>&1 || die "mon mkfs failed: $(cat "$DIR/log/mkfs-mon.out")"
rm -f "$DIR/mkfs.keyring" "$DIR/monmap"

start_daemon() { # type id
    "ceph-$1" --conf "$CONF" -i "$2" -f >> "$DIR/log/$1.$2.out" 2>&1 < /dev/null &
    echo $! > "$DIR/run/$1.$2.pid"
}
start_daemon mon a
phase mon started

# --- OSD mkfs (offline, in parallel with mon/mgr start) ---
ceph-osd --conf "$CONF" -i 0 --mkfs --osd-uuid "$OSD_UUID" --no-mon-config \
    > "$DIR/log/mkfs-osd.out" 2>&1 < /dev/null &
MKFS_PID=$!

start_daemon mgr x
phase mgr started

# --- register the OSD and the pool with the mon (one python process) ---
/usr/bin/python3 - "$OSD_UUID" "$TIMEOUT" <<'PY' >&2 || die "mon setup failed"
import json, os, sys, rados
uuid, timeout = sys.argv[1], int(sys.argv[2])
c = rados.Rados(conffile=os.environ['CEPH_CONF'], name='client.admin')
c.conf_set('client_mount_timeout', str(timeout))
c.connect(timeout=timeout)
def cmd(**kw):
    r, out, err = c.mon_command(json.dumps(kw), b'')
    if r != 0:
        raise SystemExit("mon command %r failed: %d %s" % (kw, r, err))
    return out
# mgr module options are read from the mon config store, not ceph.conf;
# this stops devicehealth creating pool device_health_metrics.
cmd(prefix='config set', who='mgr', name='mgr/devicehealth/enable_monitoring', value='false', force=True)
cmd(prefix='osd new', uuid=uuid, id=0)
cmd(prefix='osd pool create', pool='rbd', pg_num=8, pgp_num=8)
c.shutdown()
PY

phase mon setup done
wait "$MKFS_PID" || die "OSD mkfs failed: $(tail -20 "$DIR/log/mkfs-osd.out")"
phase osd mkfs done
start_daemon osd 0

# --- wait for the OSD, "rbd pool init rbd", wait for health ---
/usr/bin/python3 - "$TIMEOUT" <<'PY' >&2 || die "cluster did not become healthy"
import json, os, subprocess, sys, time, rados
timeout = int(sys.argv[1])
c = rados.Rados(conffile=os.environ['CEPH_CONF'], name='client.admin')
c.connect(timeout=timeout)
deadline = time.time() + timeout
def mon(**kw):
    kw['format'] = 'json'
    r, out, err = c.mon_command(json.dumps(kw), b'')
    if r != 0:
        raise SystemExit("mon command %r failed: %d %s" % (kw, r, err))
    return json.loads(out)
# Wait for the OSD to be up before "rbd pool init": a client op sent while
# the only OSD is down is retried only on the objecter tick (5 s).
while mon(prefix='status')['osdmap']['num_up_osds'] < 1:
    if time.time() > deadline:
        sys.exit("OSD did not come up")
    time.sleep(0.1)
subprocess.run(['timeout', str(timeout), 'rbd', 'pool', 'init', 'rbd'], check=True)
st = None
while time.time() < deadline:
    st = mon(prefix='status')
    om, pm = st['osdmap'], st['pgmap']
    want = sum(p['pg_num'] for p in mon(prefix='osd pool ls', detail='detail'))
    clean = sum(s['count'] for s in pm.get('pgs_by_state', [])
                if s['state_name'] == 'active+clean')
    if (om['num_up_osds'] == 1 and om['num_in_osds'] == 1 and
            pm['num_pgs'] >= want and clean == pm['num_pgs'] and
            st['health']['status'] in ('HEALTH_OK', 'HEALTH_WARN') and
            st['mgrmap']['available']):
        print("ceph-mini: %s, osd up/in, %d/%d pgs active+clean %s" % (
            st['health']['status'], clean, pm['num_pgs'],
            ' '.join(st['health'].get('checks', {}).keys())))
        sys.exit(0)
    time.sleep(0.2)
print(json.dumps(st, indent=1))
sys.exit(1)
PY

phase healthy
# everything started: disarm the failure cleanup
trap - EXIT
# CEPH_CONF is all a client needs (it names mon_host and, in [client], the
# keyring of client.admin); the CEPH_MINI_* lines are for information.
cat > "$DIR/env" <<EOF
export CEPH_CONF=$CONF
export CEPH_MINI_DIR=$DIR
export CEPH_MINI_KEYRING=$DIR/keyring
export CEPH_MINI_ID=admin
export CEPH_MINI_MON_HOST=$MON_ADDR
export CEPH_MINI_AUTH=$AUTH
EOF
cat "$DIR/env"
log "up in $(( ($(date +%s%N) - T0) / 1000000 )) ms"
