#!/usr/bin/env bash
# What a cluster costs while it does nothing: each system of the side-by-side harness started as
# its three replicas on loopback (bench/raftmq.sh and ../shared/bench's etcd.sh, nats.sh, rabbit.sh:
# 127.0.0.1/.2/.3, RabbitMQ's three nodes on 127.0.0.1), left alone for a settling pause, then its
# servers' CPU (utime + stime from /proc/PID/stat) and context switches (every thread's, from
# /proc/PID/task/*/status) measured over SECONDS, and the cluster stopped. Prints one line per
# system: ms of CPU per second and context switches per second, summed over its servers (RaftMQ's
# three brokers and its three nameservers; the peers have no separate naming service).
#   [RAFTMQ_BIN=DIR] [SETTLE=10] scripts/bench-idle.sh [SECONDS] [SYSTEM...]
# SECONDS defaults to 20; SYSTEMs default to raftmq etcd nats rabbit (a peer that is not installed
# is skipped with a note).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-20}; shift || true
systems=("$@"); [ ${#systems[@]} -gt 0 ] || systems=(raftmq etcd nats rabbit)
settle=${SETTLE:-10}
peers=${PEERS_DIR:-$root/../shared/bench}
source "$peers/common.sh"
script() { if [ "$1" = raftmq ]; then echo "$root/bench/raftmq.sh"; else echo "$peers/$1.sh"; fi; }
pids() {
  case $1 in
    raftmq) awk 1 "$PEERS_TMP"/raftmq/home/n[012].pid "$PEERS_TMP"/raftmq/home/ns[123].pid ;;
    rabbit) awk 1 "$PEERS_TMP"/rabbit/n[012]/beam.pid ;;
    *) awk 1 "$PEERS_TMP/$1"/n[012].pid ;;
  esac
}
sample() {  # total clock ticks and context switches of the given pids
  local ticks=0 switches=0 p
  for p in "$@"; do
    ticks=$((ticks + $(awk '{print $14 + $15}' "/proc/$p/stat")))
    switches=$((switches + $(cat /proc/"$p"/task/*/status 2>/dev/null | awk '/^(non)?voluntary_ctxt_switches/ {s += $2} END {print s + 0}')))
  done
  echo "$ticks $switches"
}
hz=$(getconf CLK_TCK)
# A cluster this script started is stopped whatever ends the script (a server that died, ^C).
run=""
trap '[ -z "$run" ] || "$run" stop >/dev/null 2>&1 || true' EXIT
for system in "${systems[@]}"; do
  case $system in
    etcd) command -v etcd >/dev/null || { echo "$system: not installed, skipped"; continue; } ;;
    nats) command -v nats-server >/dev/null || { echo "$system: not installed, skipped"; continue; } ;;
    rabbit) { command -v rabbitmq-server || ls /usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin/rabbitmq-server; } >/dev/null 2>&1 \
              || { echo "$system: not installed, skipped"; continue; } ;;
    raftmq) ;;
    *) echo "unknown system $system (raftmq, etcd, nats, rabbit)" >&2; exit 2 ;;
  esac
  run=$(script "$system")
  "$run" start >/dev/null 2>&1 || { echo "$system: did not start" >&2; "$run" stop >/dev/null 2>&1 || true; exit 1; }
  sleep "$settle"
  mapfile -t list < <(pids "$system")
  read -r t0 s0 < <(sample "${list[@]}")
  sleep "$seconds"
  read -r t1 s1 < <(sample "${list[@]}")
  "$run" stop >/dev/null 2>&1 || true
  run=""
  awk -v n="$system" -v t=$((t1 - t0)) -v s=$((s1 - s0)) -v d="$seconds" -v hz="$hz" \
    'BEGIN { printf "%-7s idle: %6.1f ms CPU/s, %6.0f context switches/s (its servers)\n", n, t * 1000 / hz / d, s / d }'
done
