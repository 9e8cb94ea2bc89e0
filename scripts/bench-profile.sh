#!/usr/bin/env bash
# Where the time goes: the local Raft group (conf/dledger-local, fresh stores, FLUSH=SYNC_FLUSH by
# default or ASYNC_FLUSH) under `mqbench produce` (1 KiB, 64 in flight), and during the middle of the
# run: the CPU each process used per acknowledged message (leader, each follower, the client, from
# /proc/PID/stat) and its threads' context switches per message (/proc/PID/task/*/status), malloc
# calls per message (a perf uprobe on libc's malloc, when perf can place one), and perf's top
# symbols of the leader and of a follower (cpu-clock samples, demangled).
#   [FLUSH=ASYNC_FLUSH] [BENCH=produce|raft-append] [MALLOC_STACKS=1] [KEEP=1] [PERF_HZ=499] scripts/bench-profile.sh [SECONDS]
# SECONDS defaults to 16; MALLOC_STACKS=1 adds the leader's malloc call sites; KEEP=1 keeps the
# perf data and logs (the directory is printed last); PERF_HZ sets perf's sampling rate.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-16}
flush=${FLUSH:-SYNC_FLUSH}
bench=${BENCH:-produce}
bin=${RAFTMQ_BIN:-.build/release}
if [ -z "${RAFTMQ_BIN:-}" ]; then
  for product in mqnamesrv mqbroker mqadmin mqbench; do swift build -c release --product "$product" >/dev/null; done
fi
work=$(mktemp -d /tmp/raftmq-profile.XXXXXX)
cluster=deploy/local/cluster.sh
cleanup() {
  RAFTMQ_HOME=$work/home RAFTMQ_BIN=$bin $cluster stop >/dev/null 2>&1 || true
  if [ -n "${KEEP:-}" ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
mkdir -p "$work/conf"
for n in 0 1 2; do
  sed "s/^flushDiskType=.*//" "conf/dledger-local/broker-n$n.conf" >"$work/conf/broker-n$n.conf"
  echo "flushDiskType=$flush" >>"$work/conf/broker-n$n.conf"
done
RAFTMQ_HOME=$work/home RAFTMQ_CONF=$work/conf RAFTMQ_BIN=$bin $cluster start >/dev/null
leader=""
for n in 0 1 2; do
  if curl -s --max-time 1 "http://127.0.0.$((n + 1)):30913/raft/state" | grep -q '"role":"leader"'; then leader=n$n; fi
done
follower=n0; [ "$leader" = n0 ] && follower=n1
lpid=$(cat "$work/home/$leader.pid"); fpid=$(cat "$work/home/$follower.pid")
pids=$(cat "$work/home"/n[012].pid | paste -sd,)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }   # utime + stime, clock ticks
# Context switches (voluntary and not) of every thread of the process.
switches() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {s += $2} END {print s + 0}'; }
hz=$(getconf CLK_TCK)
run=$seconds
[ -n "${MALLOC_STACKS:-}" ] && run=$(( seconds + 5 ))   # the third window must fall inside the run
if [ "$bench" = produce ]; then
  "$bin/mqbench" produce -n "127.0.0.1:9876;127.0.0.2:9876;127.0.0.3:9876" -t BenchTopic --size 1024 \
    --concurrency 64 --duration "$run" --warmup 1 --json >"$work/bench.json" 2>"$work/bench.err" &
else
  "$bin/mqbench" raft-append -b "127.0.0.1:30911;127.0.0.2:30911;127.0.0.3:30911" --size 1024 \
    --concurrency 64 --duration "$run" --warmup 1 --json >"$work/bench.json" 2>"$work/bench.err" &
fi
bpid=$!
# Two windows in the middle of the run: CPU per message and perf samples first, then malloc calls
# (a uprobe on every malloc slows the process; the two must not overlap).
window=$(( (seconds - 2) / 2 ))
sleep 2
declare -A c0 c1 s0 s1
for p in ${pids//,/ } $bpid; do c0[$p]=$(cpu "$p"); s0[$p]=$(switches "$p"); done
acked() { grep -o '^[0-9]* msgs/s\|^[0-9]* appends/s' "$work/bench.err" | awk '{s += $1} END {print s + 0}'; }
a0=$(acked)
perf record -q -F ${PERF_HZ:-499} -g -o "$work/leader.data" -p "$lpid" -- sleep "$window" >/dev/null 2>&1 &
rec1=$!
perf record -q -F ${PERF_HZ:-499} -g -o "$work/follower.data" -p "$fpid" -- sleep "$window" >/dev/null 2>&1 &
rec2=$!
wait $rec1 $rec2 || true
for p in ${pids//,/ } $bpid; do c1[$p]=$(cpu "$p"); s1[$p]=$(switches "$p"); done
a1=$(acked)
libc=$(ldd "$bin/mqbroker" | awk '/libc.so.6/ {print $3}')
m0=$(acked)
if [ -n "$libc" ] && perf probe -q -x "$libc" malloc >/dev/null 2>&1; then
  stats=()
  for p in ${pids//,/ } $bpid; do
    perf stat -x, -e probe_libc:malloc -p "$p" -o "$work/mallocs.$p" -- sleep "$window" >/dev/null 2>&1 &
    stats+=($!)
  done
  wait "${stats[@]}" || true
  # With MALLOC_STACKS=1: where the leader's mallocs come from (a third window, inclusive share).
  if [ -n "${MALLOC_STACKS:-}" ]; then
    perf record -q -e probe_libc:malloc -g -o "$work/mallocs.data" -p "$lpid" -- sleep 3 >/dev/null 2>&1 || true
  fi
  perf probe -q -d probe_libc:malloc >/dev/null 2>&1 || true
fi
m1=$(acked)
wait $bpid || true
echo "== $bench, $flush, 1 KiB, 64 in flight: $(cat "$work/bench.json")"
msgs=$(( a1 - a0 ))
echo "acknowledged in the ${window} s CPU window (from the progress lines, to the second): $msgs"
for p in ${pids//,/ } $bpid; do
  role=follower; [ "$p" = "$lpid" ] && role=leader; [ "$p" = "$bpid" ] && role=client
  used=$(( ${c1[$p]} - ${c0[$p]} ))
  sw=$(( ${s1[$p]} - ${s0[$p]} ))
  echo "$role pid $p: $(awk -v u="$used" -v hz="$hz" -v m="$msgs" -v sw="$sw" 'BEGIN { printf "%.2f CPU s, %.1f us per message, %.2f context switches per message", u / hz, (m > 0 ? u / hz / m * 1e6 : 0), (m > 0 ? sw / m : 0) }')"
done
total=0
for p in ${pids//,/ } $bpid; do
  [ -f "$work/mallocs.$p" ] || continue
  n=$(awk -F, '/malloc/ {print $1}' "$work/mallocs.$p")
  m=$(( m1 - m0 ))
  [ -n "$n" ] || continue
  total=$(( total + n ))
  echo "pid $p: $(awk -v n="$n" -v m="$m" 'BEGIN { printf "%.1f mallocs per message", (m > 0 ? n / m : 0) }')"
done
[ "$total" -gt 0 ] && echo "all four: $(awk -v n="$total" -v m="$(( m1 - m0 ))" 'BEGIN { printf "%.1f mallocs per message", (m > 0 ? n / m : 0) }')"
if [ -f "$work/mallocs.data" ]; then
  echo "== the leader's mallocs by caller (inclusive)"
  perf report -q -i "$work/mallocs.data" --children -g none --sort symbol --percent-limit 2 2>/dev/null | grep '%' | head -70 | swift demangle --simplified | cut -c1-160
fi
for who in leader follower; do
  echo "== top symbols, $who (self time)"
  perf report -q -i "$work/$who.data" --no-children -g none --sort dso,symbol --percent-limit 0.7 2>/dev/null | grep '%' | head -45 | swift demangle --simplified | cut -c1-200
done
