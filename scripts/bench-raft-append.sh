#!/usr/bin/env bash
# Throughput and latency of the local Raft group (conf/dledger-local on 127.0.0.1/.2/.3), once with
# flushDiskType=SYNC_FLUSH and once with ASYNC_FLUSH (copies of the sample files), fresh stores:
# appends through the raw-log API (`mqbench raft-append`), or with BENCH=produce RocketMQ sends
# through the nameservers' routes and the Swift producer (`mqbench produce`). 1 KiB, 64 in flight.
#   [BENCH=produce] scripts/bench-raft-append.sh [SECONDS] [CONCURRENCY] [SIZE]    defaults 10, 64, 1024
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
concurrency=${2:-64}
size=${3:-1024}
bin=${RAFTMQ_BIN:-.build/release}
work=$(mktemp -d /tmp/raftmq-bench.XXXXXX)
cluster=deploy/local/cluster.sh
cleanup() {
  RAFTMQ_HOME=$work/home $cluster stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
for mode in SYNC_FLUSH ASYNC_FLUSH; do
  mkdir -p "$work/conf-$mode"
  for n in 0 1 2; do
    sed "s/^flushDiskType=.*//" "conf/dledger-local/broker-n$n.conf" >"$work/conf-$mode/broker-n$n.conf"
    echo "flushDiskType=$mode" >>"$work/conf-$mode/broker-n$n.conf"
  done
  rm -rf "$work/home"
  RAFTMQ_HOME=$work/home RAFTMQ_CONF=$work/conf-$mode $cluster start >/dev/null
  echo "== ${BENCH:-raft-append}, $mode: $size-byte bodies, $concurrency in flight, $seconds s"
  if [ "${BENCH:-raft-append}" = produce ]; then
    "$bin/mqbench" produce -n "127.0.0.1:9876;127.0.0.2:9876;127.0.0.3:9876" -t BenchTopic \
      --size "$size" --concurrency "$concurrency" --duration "$seconds" --json
  else
    "$bin/mqbench" raft-append -b "127.0.0.1:30911;127.0.0.2:30911;127.0.0.3:30911" \
      --size "$size" --concurrency "$concurrency" --duration "$seconds" --json
  fi
  RAFTMQ_HOME=$work/home $cluster stop >/dev/null
done
