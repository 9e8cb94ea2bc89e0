#!/usr/bin/env bash
# RocketMQ sends through a classic group beside the Raft group, one run, same client (`mqbench
# produce`, the Swift producer through the nameservers' routes): a Raft group of conf/dledger-local,
# then broker-a and its slave of conf/2m-2s-async-local as ASYNC_MASTER and as SYNC_MASTER. All
# ASYNC_FLUSH, as the guide's samples; fresh stores for each; 1 KiB bodies, 64 in flight.
#   scripts/bench-classic.sh [SECONDS] [CONCURRENCY] [SIZE]    defaults 10, 64, 1024
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
concurrency=${2:-64}
size=${3:-1024}
bin=${RAFTMQ_BIN:-.build/release}
work=$(mktemp -d /tmp/raftmq-bench-classic.XXXXXX)
namesrv_addr='127.0.0.1:9876;127.0.0.2:9876;127.0.0.3:9876'
pids=()
stop_all() {
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$p" 2>/dev/null || true
  done
  pids=()
}
cleanup() { stop_all; rm -rf "$work"; }
trap cleanup EXIT
start() {  # NAME ARGS...
  local name=$1; shift
  nohup "$@" >>"$work/$name.log" 2>&1 </dev/null &
  pids+=($!)
}
# A copy of a sample with flushDiskType=ASYNC_FLUSH and brokerRole replaced when given.
variant() {  # FILE OUT [ROLE]
  sed -e "s/^flushDiskType=.*//" -e "${3:+s/^brokerRole=.*//}" "$1" >"$2"
  echo "flushDiskType=ASYNC_FLUSH" >>"$2"
  if [ -n "${3:-}" ]; then echo "brokerRole=$3" >>"$2"; fi
}
wait_master() {  # BROKER_NAME
  for _ in $(seq 1 300); do
    if "$bin/mqadmin" clusterList -n 127.0.0.1:9876 2>/dev/null | awk -v b="$1" '$2 == b && $3 == "0"' | grep -q .; then return; fi
    sleep 0.1
  done
  echo "no master of $1 registered; logs in $work" >&2; exit 1
}
run() {  # LABEL
  echo "== produce, $1: $size-byte bodies, $concurrency in flight, $seconds s"
  "$bin/mqbench" produce -n "$namesrv_addr" -t BenchTopic --size "$size" --concurrency "$concurrency" --duration "$seconds" --json
}
for mode in raft ASYNC_MASTER SYNC_MASTER; do
  export RAFTMQ_HOME=$work/home-$mode
  mkdir -p "$RAFTMQ_HOME" "$work/conf-$mode"
  for k in 1 2 3; do HOME=$RAFTMQ_HOME/ns$k start "ns$k-$mode" "$bin/mqnamesrv" -c "conf/namesrv-local/namesrv-$k.conf"; done
  sleep 0.5
  if [ "$mode" = raft ]; then
    for n in 0 1 2; do
      variant "conf/dledger-local/broker-n$n.conf" "$work/conf-$mode/broker-n$n.conf"
      start "n$n-$mode" "$bin/mqbroker" -c "$work/conf-$mode/broker-n$n.conf"
    done
    wait_master RaftNode00
  else
    variant conf/2m-2s-async-local/broker-a.properties "$work/conf-$mode/broker-a.properties" "$mode"
    variant conf/2m-2s-async-local/broker-a-s.properties "$work/conf-$mode/broker-a-s.properties"
    start "a-$mode" "$bin/mqbroker" -c "$work/conf-$mode/broker-a.properties"
    start "a-s-$mode" "$bin/mqbroker" -c "$work/conf-$mode/broker-a-s.properties"
    wait_master broker-a
    # The slave must be streaming before SYNC_MASTER counts it.
    for _ in $(seq 1 100); do curl -s --max-time 1 http://127.0.0.2:11013/raft/state | grep -q '"connected":true' && break; sleep 0.1; done
  fi
  run "$mode"
  stop_all
done
