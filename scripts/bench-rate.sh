#!/usr/bin/env bash
# Latency at a fixed rate: the three-broker group of bench/raftmq.sh (conf/dledger-local, fresh
# stores, FLUSH=SYNC_FLUSH by default) under `mqbench produce --rate RATE` (open loop, 1 KiB, at
# most 512 in flight, 10 s after 2 s of warm-up; each latency counts from the send's scheduled start,
# so a stall is not hidden), and the brokers' CPU over the whole run. With several builds
# (BINS="dirA dirB", each holding mqbroker, mqnamesrv, mqadmin, mqbench, mqshutdown) they take
# turns, in rotating order, ROUNDS times; the default is the release build of this checkout.
# Loopback only; every run is bounded (10 s of load, 2 s of warm-up).
#   [BINS="/tmp/binOld /tmp/binNew"] [FLUSH=ASYNC_FLUSH] scripts/bench-rate.sh RATE [ROUNDS]
set -uo pipefail
cd "$(dirname "$0")/.."
rate=${1:?usage: bench-rate.sh RATE [ROUNDS]}; rounds=${2:-1}
export FLUSH=${FLUSH:-SYNC_FLUSH} PEERS_DIR=${PEERS_DIR:-$PWD/../shared/bench}
source "$PEERS_DIR/common.sh"
if [ -z "${BINS:-}" ]; then
  for p in mqnamesrv mqbroker mqadmin mqbench mqshutdown; do swift build -c release --product "$p" >/dev/null || exit 1; done
  BINS=$PWD/.build/release
fi
read -r -a bins <<<"$BINS"
n=${#bins[@]}
ticks=$(getconf CLK_TCK)
for r in $(seq 1 "$rounds"); do
  for k in $(seq 0 $((n - 1))); do
    b=${bins[$(((k + r) % n))]}
    RAFTMQ_BIN=$b bench/raftmq.sh start >/dev/null 2>&1 || { echo "$b: the group did not start" >&2; exit 1; }
    sleep 1
    pids=$(cat "$PEERS_TMP"/raftmq/home/n*.pid)
    cpu() { local t=0 p; for p in $pids; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
    c0=$(cpu)
    out=$("$b/mqbench" produce -n 127.0.0.1:9876 --rate "$rate" --concurrency 512 --duration 10 --warmup 2 --json 2>/dev/null | tail -n 1)
    c1=$(cpu)
    RAFTMQ_BIN=$b bench/raftmq.sh stop >/dev/null 2>&1
    python3 -c 'import json, sys
j = json.loads(sys.argv[1]); cpu = (int(sys.argv[4]) - int(sys.argv[3])) / int(sys.argv[5])
print("round %s %s: %.0f msgs/s p50 %s p99 %s p99.9 %s ms, failed %s, brokers CPU %.1f s in the run"
      % (sys.argv[6], sys.argv[2], j["msgsPerSec"], j["p50Ms"], j["p99Ms"], j["p999Ms"], j["failed"], cpu))' \
      "$out" "$b" "$c0" "$c1" "$ticks" "$r"
  done
done
