#!/usr/bin/env bash
# Stop the Ceph cluster started by start.sh (adapted from the shared tools/objstore/ceph).
# Invariants: signals only the pids recorded in $OBJSTORE_CEPH_DIR/run/*.pid, and only while
# their cmdline is still ceph's (never pkill/killall); returns once they are gone.
# CEPH_STOP_FAST=1 sends SIGKILL at once (the memstore cluster is throw-away: nothing to
# flush), which takes well under a second instead of ~5 s.
# OBJSTORE_WIPE=1 also deletes the data/config dir (start.sh wipes it anyway).
set -uo pipefail
BASE=${OBJSTORE_CEPH_DIR:-/tmp/objstore/ceph}
RUN=$BASE/run
shopt -s nullglob
SIG=TERM
[ "${CEPH_STOP_FAST:-0}" = 1 ] && SIG=KILL
# a pid is gone once it no longer exists or is a zombie (our parent may not reap it)
running() { [ -e "/proc/$1" ] && ! grep -q '^[0-9]* ([^)]*) Z' "/proc/$1/stat" 2>/dev/null; }

# term_wait SECONDS NAME... : SIGTERM the recorded pids, wait, SIGKILL leftovers
term_wait() {
  local secs=$1; shift
  local name f pid pids=() alive=()
  for name in "$@"; do
    f=$RUN/$name.pid
    [ -e "$f" ] || continue
    pid=$(cat "$f")
    # only signal it if it still is the process we started
    if kill -0 "$pid" 2>/dev/null && grep -qaE 'ceph|radosgw' "/proc/$pid/cmdline" 2>/dev/null; then
      kill -"$SIG" "$pid" 2>/dev/null && pids+=("$pid") && echo "[ceph-stop] $SIG $name pid $pid" >&2
    fi
    rm -f "$f"
  done
  for _ in $(seq $((secs * 20))); do
    alive=()
    for pid in "${pids[@]}"; do running "$pid" && alive+=("$pid"); done
    ((${#alive[@]})) || return 0
    sleep 0.05
  done
  for pid in "${alive[@]}"; do
    echo "[ceph-stop] KILL pid $pid" >&2; kill -KILL "$pid" 2>/dev/null
  done
}
if [ "$SIG" = KILL ]; then
  term_wait 8 rgw mgr.x osd.0 mon.a
else   # clients of the mon first (in parallel), the mon last
  term_wait 8 rgw mgr.x osd.0
  term_wait 8 mon.a
fi
# anything else we recorded (nothing today)
for f in "$RUN"/*.pid; do term_wait 5 "$(basename "$f" .pid)"; done
if [ "${OBJSTORE_WIPE:-0}" = 1 ]; then rm -rf "$BASE"; fi
echo "[ceph-stop] stopped" >&2
