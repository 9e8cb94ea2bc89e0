#!/usr/bin/env bash
# The local cluster on one machine: three nameservers (conf/namesrv-local, 127.0.0.1-3:9876) and the
# Raft group of conf/dledger-local: n0 on 127.0.0.1, n1 on 127.0.0.2, n2 on 127.0.0.3. Data and logs go
# under $RAFTMQ_HOME (default ./.local-cluster in the source tree).
#
#   deploy/local/cluster.sh start          build if needed, start the nameservers and the three nodes,
#                                          wait for a leader, print clusterList and every /raft/state
#   deploy/local/cluster.sh status         every node's process and /raft/state
#   deploy/local/cluster.sh kill-leader    kill -9 the leader; print how long until a new one accepted an append
#   deploy/local/cluster.sh restart NODE   stop NODE (n0, n1, n2) with SIGTERM and start it again
#   deploy/local/cluster.sh stop           SIGTERM every node and nameserver, wait for each to exit
#
# Processes are found by the pid files this script writes, never by name.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
export RAFTMQ_HOME=${RAFTMQ_HOME:-.local-cluster}
# The processes' own pid files (mqshutdown reads them): RAFTMQ_RUN_DIR=.local-cluster/run mqshutdown broker
export RAFTMQ_RUN_DIR=${RAFTMQ_RUN_DIR:-$RAFTMQ_HOME/run}
mkdir -p "$RAFTMQ_HOME/logs"
bin=${RAFTMQ_BIN:-$root/.build/release}
# The directory of broker-n{0,1,2}.conf (benchmarks point it at copies with other settings).
confdir=${RAFTMQ_CONF:-conf/dledger-local}
nodes=(n0 n1 n2)
namesrvs=(ns1 ns2 ns3)
namesrv_addr='127.0.0.1:9876;127.0.0.2:9876;127.0.0.3:9876'

ip_of() { echo "127.0.0.$(( ${1#n} + 1 ))"; }
pidfile() { echo "$RAFTMQ_HOME/$1.pid"; }
state_url() { echo "http://$(ip_of "$1"):30913/raft/state"; }

# Whether PID runs: not gone and not a zombie. The nodes outlive this script, so their parent is
# init, which may reap an exited one seconds later (measured here: 1-2 s, more under load), and
# `kill -0` succeeds on a zombie.
alive() {
  local st
  st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [ -n "$st" ] && [ "$st" != Z ]
}

# The pid of NODE (n0.. or ns1..) if its pid file names a running mqbroker or mqnamesrv, else nothing.
running_pid() {
  local f pid
  f=$(pidfile "$1")
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "mq\(broker\|namesrv\)"; then
    echo "$pid"
  fi
}

start_namesrv() {
  local n=$1
  if [ -n "$(running_pid "$n")" ]; then return; fi
  HOME="$RAFTMQ_HOME/$n" nohup "$bin/mqnamesrv" -c "conf/namesrv-local/namesrv-${n#ns}.conf" >>"$RAFTMQ_HOME/logs/$n.log" 2>&1 </dev/null &
  echo $! >"$(pidfile "$n")"
  echo "started nameserver $n (pid $!, log $RAFTMQ_HOME/logs/$n.log)"
}

state() { curl -s --max-time 1 "$(state_url "$1")" 2>/dev/null || true; }
field() { sed -n "s/.*\"$2\":\"\{0,1\}\([^\",}]*\)\"\{0,1\}[,}].*/\1/p" <<<"$1" | head -n 1; }

summary() {
  local s
  s=$(state "$1")
  if [ -z "$s" ]; then echo "$1 ($(ip_of "$1")): no answer"; return; fi
  echo "$1 ($(ip_of "$1")): role=$(field "$s" role) term=$(field "$s" term) leader=$(field "$s" leaderId) lastIndex=$(field "$s" lastIndex) commitIndex=$(field "$s" commitIndex) brokerId=$(field "$s" brokerId)"
}

leader() {
  local n s
  for n in "${nodes[@]}"; do
    s=$(state "$n")
    if [ "$(field "$s" role)" = leader ]; then echo "$n"; return; fi
  done
}

start_node() {
  local n=$1
  if [ -n "$(running_pid "$n")" ]; then echo "$n already runs (pid $(running_pid "$n"))"; return; fi
  nohup "$bin/mqbroker" -c "$confdir/broker-$n.conf" >>"$RAFTMQ_HOME/logs/$n.log" 2>&1 </dev/null &
  echo $! >"$(pidfile "$n")"
  echo "started $n (pid $!, log $RAFTMQ_HOME/logs/$n.log)"
}

stop_node() {
  local n=$1 pid k
  pid=$(running_pid "$n")
  [ -n "$pid" ] || { echo "$n is not running"; return; }
  kill -TERM "$pid"
  for k in $(seq 1 100); do alive "$pid" || break; sleep 0.05; done
  if alive "$pid"; then echo "$n (pid $pid) did not exit within 5 s of SIGTERM" >&2; return 1; fi
  rm -f "$(pidfile "$n")"
  echo "stopped $n"
}

wait_for_leader() {
  local deadline=$(( $(date +%s) + ${1:-30} )) l
  while [ "$(date +%s)" -lt "$deadline" ]; do
    l=$(leader)
    if [ -n "$l" ]; then echo "$l"; return; fi
    sleep 0.05
  done
  return 1
}

case "${1:-}" in
  start)
    # Builds the default binaries when missing or older than the sources; binaries named by
    # RAFTMQ_BIN are the caller's, used as they are.
    for product in mqnamesrv mqbroker mqadmin mqbench; do
      if [ -n "${RAFTMQ_BIN:-}" ]; then
        [ -x "$bin/$product" ] || { echo "$bin/$product does not exist (RAFTMQ_BIN=$RAFTMQ_BIN)" >&2; exit 1; }
      elif [ ! -x "$bin/$product" ] || [ -n "$(find Sources Package.swift -newer "$bin/$product" -print -quit 2>/dev/null)" ]; then
        swift build -c release --product "$product"
      fi
    done
    for n in "${namesrvs[@]}"; do start_namesrv "$n"; done
    for n in "${nodes[@]}"; do start_node "$n"; done
    if l=$(wait_for_leader 30); then echo "leader: $l"; else echo "no leader within 30 s; see $RAFTMQ_HOME/logs" >&2; exit 1; fi
    for n in "${nodes[@]}"; do summary "$n"; done
    sleep 0.3   # the registrations follow the election
    "$bin/mqadmin" clusterList -n "$namesrv_addr" || true
    for n in "${nodes[@]}"; do echo "$n /raft/state: $(state "$n")"; done
    ;;
  status)
    for n in "${namesrvs[@]}"; do
      pid=$(running_pid "$n")
      if [ -n "$pid" ]; then echo "nameserver $n: pid $pid"; else echo "nameserver $n: not running"; fi
    done
    for n in "${nodes[@]}"; do
      pid=$(running_pid "$n")
      if [ -n "$pid" ]; then echo "$n: pid $pid"; else echo "$n: not running"; fi
      summary "$n"
    done
    "$bin/mqadmin" clusterList -n "$namesrv_addr" 2>/dev/null || true
    ;;
  kill-leader)
    l=$(leader) || true
    [ -n "$l" ] || { echo "no leader right now" >&2; exit 1; }
    pid=$(running_pid "$l")
    [ -n "$pid" ] || { echo "$l leads but its pid file is missing" >&2; exit 1; }
    others=()
    for n in "${nodes[@]}"; do [ "$n" = "$l" ] || others+=("$(ip_of "$n"):30911"); done
    survivors=$(IFS=';'; echo "${others[*]}")
    t0=$(date +%s%N)
    kill -9 "$pid"
    rm -f "$(pidfile "$l")"
    # The first append the survivors accept (mqadmin retries NOT_LEADER and refused connections).
    if out=$("$bin/mqadmin" raftAppend -b "$survivors" -m "after killing $l at $t0" --wait-ms 10000); then
      t1=$(date +%s%N)
      echo "killed the leader $l (pid $pid) with SIGKILL"
      echo "a new leader accepted an append after $(( (t1 - t0) / 1000000 )) ms: $out"
    else
      echo "killed the leader $l (pid $pid); no append was accepted within 10 s" >&2
      exit 1
    fi
    ;;
  restart)
    n=${2:-}
    [[ " ${nodes[*]} " == *" $n "* ]] || { echo "usage: $0 restart n0|n1|n2" >&2; exit 2; }
    stop_node "$n" || true
    start_node "$n"
    ;;
  stop)
    status=0
    for n in "${nodes[@]}"; do stop_node "$n" || status=1; done
    for n in "${namesrvs[@]}"; do stop_node "$n" || status=1; done
    exit $status
    ;;
  *)
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
