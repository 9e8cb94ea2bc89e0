#!/usr/bin/env bash
# How long a member takes from exec to serving, on a log of a given size (BENCHMARKS.md "Replica
# start on a large log"). Fills the local Raft group of conf/dledger-local (deploy/local/cluster.sh)
# with 1 KiB messages until each replica holds about GIB GiB, then measures, REPEATS times each:
#   clean    SIGTERM a follower, start it again: exec to /healthz 200 (replica up, leader known)
#   crash    SIGKILL a follower, start it again: exec to /healthz 200 (crash recovery included)
#   kill-all SIGKILL all three, start all three: exec to a leader in /raft/state, and to the
#            first append the group commits
# and prints every time, then the medians and maxima.
#   scripts/bench-start.sh [GIB] [REPEATS]     default 1 GiB, 3 repeats; data under a fresh /tmp directory
#   RAFTMQ_KEEP=1 scripts/bench-start.sh       keeps that directory (stores and logs) for a closer look
set -euo pipefail
cd "$(dirname "$0")/.."
gib=${1:-1}
repeats=${2:-3}
home=$(mktemp -d /tmp/raftmq-start.XXXXXX)
export RAFTMQ_HOME=$home
cluster=deploy/local/cluster.sh
bin=${RAFTMQ_BIN:-.build/release}
trap '$cluster stop >/dev/null 2>&1 || true; if [ -n "${RAFTMQ_KEEP:-}" ]; then echo "kept $home"; else rm -rf "$home"; fi' EXIT
$cluster start >/dev/null
namesrv='127.0.0.1:9876;127.0.0.2:9876;127.0.0.3:9876'
brokers='127.0.0.1:30911;127.0.0.2:30911;127.0.0.3:30911'

ip_of() { echo "127.0.0.$(( ${1#n} + 1 ))"; }
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
field() { sed -n "s/.*\"$2\":\"\{0,1\}\([^\",}]*\)\"\{0,1\}[,}].*/\1/p" <<<"$1" | head -n 1; }
state() { curl -s --max-time 1 "http://$(ip_of "$1"):30913/raft/state" 2>/dev/null || true; }
pid_of() { cat "$home/$1.pid"; }
start() { (nohup "$bin/mqbroker" -c "conf/dledger-local/broker-$1.conf" >>"$home/logs/$1.log" 2>&1 </dev/null & echo $! >"$home/$1.pid"); }
healthy() { [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://$(ip_of "$1"):30913/healthz" 2>/dev/null)" = 200 ]; }
until_true() {  # until_true SECONDS COMMAND...: polls every 5 ms, fails after SECONDS
  local deadline=$(( $(date +%s) + $1 )); shift
  until "$@"; do [ "$(date +%s)" -lt "$deadline" ] || return 1; sleep 0.005; done
}
leader() { local n; for n in n0 n1 n2; do [ "$(field "$(state "$n")" role)" = leader ] && { echo "$n"; return 0; }; done; return 1; }
follower() { local l n; l=$(leader) || return 1; for n in n0 n1 n2; do [ "$n" != "$l" ] && { echo "$n"; return 0; }; done; }
caught_up() {  # every member shows the same lastIndex and commitIndex
  local a b c
  a=$(state n0); b=$(state n1); c=$(state n2)
  [ -n "$(field "$a" lastIndex)" ] && [ "$(field "$a" lastIndex)" = "$(field "$b" lastIndex)" ] && [ "$(field "$b" lastIndex)" = "$(field "$c" lastIndex)" ] &&
    [ "$(field "$a" commitIndex)" = "$(field "$a" lastIndex)" ]
}

# Fill: about 1,130 bytes per 1 KiB message in the log (entry header, record, properties).
count=$(( gib * 1024 * 1024 * 1024 / 1130 ))
"$bin/mqbench" produce -n "$namesrv" -t StartBench --size 1024 --concurrency 64 --duration 600 --max-count "$count" --warmup 0 --json | tail -n 1
until_true 120 caught_up || { echo "the replicas did not catch up" >&2; exit 1; }
echo "log per replica: $(du -sh "$home/dledger/n0/commitlog" | cut -f1), $(find "$home/dledger/n0/commitlog" -name '[0-9]*' -size +1M | wc -l) segments; entries: $(field "$(state n0)" lastIndex)"

declare -a clean crash elect append
for k in $(seq 1 "$repeats"); do
  n=$(follower)
  kill -TERM "$(pid_of "$n")"; while kill -0 "$(pid_of "$n")" 2>/dev/null; do sleep 0.01; done
  t0=$(date +%s%N); start "$n"; until_true 30 healthy "$n" || { echo "$n did not serve within 30 s" >&2; exit 1; }
  clean+=("$(ms_since "$t0")"); echo "clean restart of $n: ${clean[-1]} ms"
  until_true 60 caught_up

  n=$(follower)
  kill -KILL "$(pid_of "$n")"; while kill -0 "$(pid_of "$n")" 2>/dev/null; do sleep 0.01; done
  t0=$(date +%s%N); start "$n"; until_true 30 healthy "$n" || { echo "$n did not serve within 30 s" >&2; exit 1; }
  crash+=("$(ms_since "$t0")"); echo "crash restart of $n: ${crash[-1]} ms"
  until_true 60 caught_up

  for n in n0 n1 n2; do kill -KILL "$(pid_of "$n")"; done
  for n in n0 n1 n2; do while kill -0 "$(pid_of "$n")" 2>/dev/null; do sleep 0.01; done; done
  t0=$(date +%s%N); for n in n0 n1 n2; do start "$n"; done
  until_true 30 leader >/dev/null || { echo "no leader within 30 s of restarting all three" >&2; exit 1; }
  elect+=("$(ms_since "$t0")")
  "$bin/mqadmin" raftAppend -b "$brokers" -m "after kill-all $k" --wait-ms 10000 >/dev/null
  append+=("$(ms_since "$t0")"); echo "kill-all $k: a leader after ${elect[-1]} ms, the first committed append after ${append[-1]} ms"
  until_true 60 caught_up
done

stats() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {m = (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2; printf "median %s ms, max %s ms", m, a[NR]}'; }
echo "exec to serving after a clean stop:   $(stats "${clean[@]}")"
echo "exec to serving after SIGKILL:        $(stats "${crash[@]}")"
echo "kill-all, exec to a leader:           $(stats "${elect[@]}")"
echo "kill-all, exec to a committed append: $(stats "${append[@]}")"
