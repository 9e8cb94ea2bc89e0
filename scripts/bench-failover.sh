#!/usr/bin/env bash
# Leader SIGKILL to the first append a new leader commits, over N kills (default 10), on the local
# Raft group of conf/dledger-local (deploy/local/cluster.sh). Prints each time, then the median and
# the maximum. Each killed node is started again and given time to catch up before the next kill.
#   scripts/bench-failover.sh [N]      data and logs in a fresh directory under /tmp (or $RAFTMQ_HOME)
set -euo pipefail
cd "$(dirname "$0")/.."
kills=${1:-10}
if [ -z "${RAFTMQ_HOME:-}" ]; then
  RAFTMQ_HOME=$(mktemp -d /tmp/raftmq-failover.XXXXXX)
  cleanup_home=$RAFTMQ_HOME
fi
export RAFTMQ_HOME
cluster=deploy/local/cluster.sh
trap '$cluster stop >/dev/null 2>&1 || true; [ -n "${cleanup_home:-}" ] && rm -rf "$cleanup_home"' EXIT
$cluster start >/dev/null
bin=${RAFTMQ_BIN:-.build/release}
"$bin/mqadmin" raftAppend -b "127.0.0.1:30911;127.0.0.2:30911;127.0.0.3:30911" --size 1024 -c 100 >/dev/null
times=()
for k in $(seq 1 "$kills"); do
  out=$($cluster kill-leader)
  ms=$(sed -n 's/.*accepted an append after \([0-9]*\) ms.*/\1/p' <<<"$out")
  [ -n "$ms" ] || { echo "kill $k: $out" >&2; exit 1; }
  times+=("$ms")
  echo "kill $k: $ms ms"
  $cluster start >/dev/null   # starts the killed node again (the others are running)
  sleep 1.5
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
median=$(awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2] + a[NR/2+1]) / 2}' <<<"$sorted")
echo "leader SIGKILL -> first committed append over $kills kills: median $median ms, max $(tail -n 1 <<<"$sorted") ms"
