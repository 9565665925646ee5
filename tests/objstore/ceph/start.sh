#!/usr/bin/env bash
# The test suite's object store: a throw-away single-node Ceph (1 mon, 1 OSD on memstore, no
# mgr by default) plus radosgw (beast, S3 API) on 127.0.0.1 only, from Debian's packages
# (installed with apt when missing). Adapted from the shared tools/objstore/ceph/start.sh.
# Invariants: binds only loopback; everything lives under $OBJSTORE_CEPH_DIR; each daemon's
# pid goes to $OBJSTORE_CEPH_DIR/run/NAME.pid and stop.sh signals only those pids; a failed
# start stops what it launched. On success it prints the S3 endpoint and writes env.sh.
#
# Env knobs (all optional):
#   OBJSTORE_CEPH_DIR  base dir                       (/tmp/objstore/ceph)
#   CEPH_RGW_PORT      radosgw S3 endpoint port       (7480)
#   CEPH_MON_PORT      mon msgr2 port; msgr1 = +1     (3300 -> v1 on 3301)
#   CEPH_OBJECTSTORE   memstore | bluestore           (memstore)
#   CEPH_STORE_GIB     memstore RAM cap / bluestore file size, GiB (4)
#   CEPH_WITH_MGR      1 = start a mgr (0 skips it: RGW works without one) (0)
#   CEPH_INSTALL_ONLY  1 = install the packages if missing, start nothing     (0)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
READY=0
T0=${EPOCHREALTIME/./}
elapsed() { local d=$(( ${EPOCHREALTIME/./} - T0 )); printf '%d.%01d' $((d / 1000000)) $((d % 1000000 / 100000)); }
log() { printf '[ceph-start %5ss] %s\n' "$(elapsed)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

BASE=${OBJSTORE_CEPH_DIR:-/tmp/objstore/ceph}
RGW_PORT=${CEPH_RGW_PORT:-7480}
MON_PORT=${CEPH_MON_PORT:-3300}
MON_PORT1=$((MON_PORT + 1))
STORE=${CEPH_OBJECTSTORE:-memstore}
GIB=${CEPH_STORE_GIB:-4}
WITH_MGR=${CEPH_WITH_MGR:-0}
HOST=127.0.0.1
RUN=$BASE/run
LOG=$BASE/log
CONF=$BASE/ceph.conf
S3_ACCESS=${CEPH_S3_ACCESS_KEY:-objstore-access}
S3_SECRET=${CEPH_S3_SECRET_KEY:-objstore-secret}

# ---------------------------------------------------------------- packages
APTLOG=/tmp/tessera-ceph-apt.log
need_pkgs=()
pkgs=(ceph-mon ceph-osd radosgw ceph-common uuid-runtime python3)
[ "$WITH_MGR" = 1 ] && pkgs+=(ceph-mgr)
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need_pkgs+=("$p")
done
if ((${#need_pkgs[@]})); then
  log "installing Debian packages: ${need_pkgs[*]}"
  if ! env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q \
        --no-install-recommends "${need_pkgs[@]}" >"$APTLOG" 2>&1; then
    apt-get -o DPkg::Lock::Timeout=300 update -q >>"$APTLOG" 2>&1
    env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q \
        --no-install-recommends "${need_pkgs[@]}" >>"$APTLOG" 2>&1 \
      || { tail -20 "$APTLOG" >&2; die "apt-get install failed"; }
  fi
  log "packages installed"
fi
# CI pre-installs the packages with CEPH_INSTALL_ONLY=1 (.ci/run) so no test pays for apt
[ "${CEPH_INSTALL_ONLY:-0}" = 1 ] && exit 0

# ---------------------------------------------------------------- already running?
for f in "$RUN"/*.pid; do
  [ -e "$f" ] || continue
  kill -0 "$(cat "$f")" 2>/dev/null && die "$(basename "$f" .pid) already running (pid $(cat "$f")); run stop.sh first"
done
for port in $RGW_PORT $MON_PORT $MON_PORT1; do
  (exec 3<>"/dev/tcp/$HOST/$port") 2>/dev/null && die "port $HOST:$port already in use"
done

# ---------------------------------------------------------------- layout + config
case "$BASE" in /*/*) ;; *) die "OBJSTORE_CEPH_DIR must be an absolute path at least two levels deep";; esac
rm -rf "$BASE"
mkdir -p "$RUN" "$LOG" "$BASE/mon.a" "$BASE/mgr.x" "$BASE/osd.0" "$BASE/rgw"
FSID=$(uuidgen)
cat >"$CONF" <<EOF
[global]
fsid = $FSID
mon host = [v2:$HOST:$MON_PORT,v1:$HOST:$MON_PORT1]
public addr = $HOST
cluster addr = $HOST
public network = 127.0.0.0/8
ms bind ipv6 = false
# loopback-only CI cluster: no cephx
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = false
# with auth none there is no session key, so "secure" msgr2 mode is impossible;
# radosgw defaults ms_mon_client_mode to secure-only -> EACCES (-13) forever
ms cluster mode = crc
ms service mode = crc
ms client mode = crc
ms mon cluster mode = crc
ms mon service mode = crc
ms mon client mode = crc
run dir = $RUN
admin socket = $RUN/\$name.asok
log file = $LOG/\$name.log
pid file =
crash dir = $BASE/crash
log to stderr = false
err to stderr = true
mon cluster log file = $LOG/cluster.log
# single OSD: replica 1, place by OSD not host
osd pool default size = 1
osd pool default min size = 1
osd crush chooseleaf type = 0
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
mon data avail warn = 1
mon data avail crit = 0
mgr initial modules =
debug ms = 0

[mon]
mon data = $BASE/mon.\$id
# commit map changes quickly (default 1 s per proposal: each RGW pool
# creation / osd boot step waits for one) -> ready in ~2 s instead of ~18 s
paxos propose interval = 0.05
paxos min wait = 0.01

[mgr]
mgr data = $BASE/mgr.\$id

[osd]
osd data = $BASE/osd.\$id
osd objectstore = $STORE
memstore device bytes = $((GIB << 30))
bluestore block path = $BASE/osd.\$id.block
bluestore block create = true
bluestore block size = $((GIB << 30))
bluestore fsck on mkfs = false
osd memory target = 939524096
osd op num shards = 1
osd op num threads per shard = 2

[client.rgw.objstore]
rgw frontends = beast endpoint=$HOST:$RGW_PORT tcp_nodelay=1
rgw data = $BASE/rgw
rgw dns name =
rgw enable usage log = false
rgw dynamic resharding = false
rgw thread pool size = 64
rgw init timeout = 120
# on SIGTERM radosgw otherwise waits up to 120 s for its frontend to drain
rgw exit timeout secs = 2
# deleted objects' data is reclaimed by RGW garbage collection, by default only
# after 2 h; with memstore that is RAM -> reclaim after ~1 min instead
rgw gc obj min wait = 30
rgw gc processor period = 30
# without its metadata cache radosgw keeps no watches on its control objects: after a test
# SIGKILLs and restarts it, bucket create/delete would otherwise wait ~30 s for the dead
# instance's watch to time out (osd client watch timeout)
rgw cache enabled = false
log file = $LOG/rgw.log
EOF
export CEPH_CONF=$CONF
log "config written ($STORE)"

# ---------------------------------------------------------------- helpers
start_bg() { # name cmd...
  local name=$1; shift
  setsid "$@" >"$LOG/$name.out" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
}
alive_or_die() {
  local f
  for f in "$RUN"/*.pid; do
    kill -0 "$(cat "$f")" 2>/dev/null || { tail -20 "$LOG/$(basename "$f" .pid).out" "$LOG"/*.log 2>/dev/null | tail -40 >&2 || true; die "$(basename "$f" .pid) died (logs: $LOG)"; }
  done
}
wait_for() { # timeout_s description cmd...
  local t=$1 what=$2; shift 2
  local end=$(( ${EPOCHREALTIME/./} + t * 1000000 ))
  until "$@" >/dev/null 2>&1; do
    alive_or_die
    (( ${EPOCHREALTIME/./} < end )) || die "timeout ($t s) waiting for $what"
    sleep 0.25
  done
}
trap '[ "$READY" = 1 ] || { log "start failed; stopping what was launched"; bash "$HERE/stop.sh"; }' EXIT

# ---------------------------------------------------------------- mon
monmaptool --create --clobber --fsid "$FSID" --addv a "[v2:$HOST:$MON_PORT,v1:$HOST:$MON_PORT1]" "$BASE/monmap" >/dev/null
ceph-mon -c "$CONF" --mkfs -i a --monmap "$BASE/monmap" >"$LOG/mon-mkfs.out" 2>&1 || { cat "$LOG/mon-mkfs.out" >&2; die "mon mkfs failed"; }
start_bg mon.a ceph-mon -c "$CONF" -i a -f
wait_for 30 "mon quorum" ceph -c "$CONF" --connect-timeout 2 mon stat
log "mon up"

# ---------------------------------------------------------------- mgr (optional, parallel)
if [ "$WITH_MGR" = 1 ]; then
  start_bg mgr.x ceph-mgr -c "$CONF" -i x -f
fi

# ---------------------------------------------------------------- osd
OSD_UUID=$(uuidgen)
OSD_ID=$(ceph -c "$CONF" osd new "$OSD_UUID")
[ "$OSD_ID" = 0 ] || die "unexpected osd id '$OSD_ID'"
ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$OSD_UUID" >"$LOG/osd-mkfs.out" 2>&1 || { tail -20 "$LOG/osd-mkfs.out" >&2; die "osd mkfs failed"; }
start_bg osd.0 ceph-osd -c "$CONF" -i 0 -f
osd_up() { ceph -c "$CONF" osd dump -f json | /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if d["osds"] and d["osds"][0]["up"] == 1 else 1)'; }
wait_for 60 "osd.0 up" osd_up
log "osd.0 up"

# ---------------------------------------------------------------- radosgw
start_bg rgw radosgw -c "$CONF" -n client.rgw.objstore -f
rgw_up() { /usr/bin/python3 -c "import urllib.request,sys; urllib.request.urlopen('http://$HOST:$RGW_PORT/', timeout=2)"; }
wait_for 120 "radosgw http" rgw_up
log "radosgw answering"
radosgw-admin -c "$CONF" user create --uid=objstore --display-name="objstore CI" \
  --access-key="$S3_ACCESS" --secret-key="$S3_SECRET" >"$LOG/user-create.out" 2>&1 \
  || { cat "$LOG/user-create.out" >&2; die "radosgw-admin user create failed"; }

# ---------------------------------------------------------------- S3 smoke test (SigV2, stdlib only)
/usr/bin/python3 - "$HOST" "$RGW_PORT" "$S3_ACCESS" "$S3_SECRET" <<'EOF' || die "S3 smoke test failed"
import base64, hashlib, hmac, http.client, sys, time
from email.utils import formatdate
host, port, ak, sk = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def req(method, path, body=b""):
    date = formatdate(usegmt=True)
    sig = base64.b64encode(hmac.new(sk.encode(), f"{method}\n\n\n{date}\n{path}".encode(), hashlib.sha1).digest()).decode()
    for attempt in range(40):
        c = http.client.HTTPConnection(host, port, timeout=10)
        c.request(method, path, body=body, headers={"Date": date, "Authorization": f"AWS {ak}:{sig}"})
        r = c.getresponse(); data = r.read(); c.close()
        if r.status < 500: return r.status, data
        time.sleep(0.25)   # e.g. 503 while pools/PGs are still being created
    return r.status, data
for m, p, b, ok in [("PUT", "/objstore-smoke", b"", (200,)), ("PUT", "/objstore-smoke/o", b"hello", (200,)),
                    ("GET", "/objstore-smoke/o", b"", (200,)), ("DELETE", "/objstore-smoke/o", b"", (204,)),
                    ("DELETE", "/objstore-smoke", b"", (204,))]:
    st, data = req(m, p, b)
    assert st in ok, (m, p, st, data[:300])
    if m == "GET": assert data == b"hello", data
EOF

READY=1
DT=$(elapsed)
cat >"$BASE/env.sh" <<EOF
# source me: S3 credentials for the test radosgw
export OBJSTORE_S3_ENDPOINT=http://$HOST:$RGW_PORT
export AWS_ACCESS_KEY_ID=$S3_ACCESS
export AWS_SECRET_ACCESS_KEY=$S3_SECRET
export AWS_DEFAULT_REGION=us-east-1
export AWS_REQUEST_CHECKSUM_CALCULATION=when_required
export AWS_RESPONSE_CHECKSUM_VALIDATION=when_required
export CEPH_CONF=$CONF
export OBJSTORE_CEPH_DIR=$BASE
EOF
log "ready in ${DT}s"
cat <<EOF
CEPH RGW READY (${DT}s, objectstore=$STORE, mgr=$WITH_MGR)
  S3 endpoint   : http://$HOST:$RGW_PORT   (path-style, any region name, SigV4 or V2)
  S3 access key : $S3_ACCESS
  S3 secret key : $S3_SECRET
  env file      : $BASE/env.sh
  logs          : $LOG/
EOF
