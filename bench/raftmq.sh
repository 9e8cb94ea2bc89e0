#!/usr/bin/env bash
# RaftMQ in the peers' harness (../shared/bench, README "Adding our broker"): the Raft group of
# conf/dledger-local (n0..n2 on 127.0.0.1/.2/.3, client port 30911, HTTP 30913, peers 40911) and the
# three local nameservers (9876), through deploy/local/cluster.sh, fresh stores on every start,
# topic BenchTopic with 8 queues. FLUSH=SYNC_FLUSH (default; compare with etcd and RabbitMQ, which
# fsync) or FLUSH=ASYNC_FLUSH (compare with NATS, which does not). The load is the shared
# loadgen.py with our driver (bench/raftmq_loadgen.py). RAFTMQ_EXTRA_CONF adds key=value lines to
# every broker's configuration. Same contract as the peers' scripts:
# Usage: raftmq.sh start | stop | leader | start-node I | throughput LABEL [leader|spread]
#        raftmq.sh failover LABEL [KILLS] | raftmq.sh all [REPEATS]
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
PEERS_DIR=${PEERS_DIR:-$root/../shared/bench}
export PEERS_DIR
source "$PEERS_DIR/common.sh"
FLUSH=${FLUSH:-SYNC_FLUSH}
D=$PEERS_TMP/raftmq; O=$PEERS_OUT/raftmq-$FLUSH; mkdir -p "$D" "$O"
IPS=(127.0.0.1 127.0.0.2 127.0.0.3)
ENDPOINTS="127.0.0.1:30911,127.0.0.2:30911,127.0.0.3:30911"
bin=${RAFTMQ_BIN:-$root/.build/release}
cluster() { RAFTMQ_HOME=$D/home RAFTMQ_CONF=$D/conf RAFTMQ_BIN=$bin "$root/deploy/local/cluster.sh" "$@"; }

state() { curl -s --max-time 1 "http://${IPS[$1]}:30913/raft/state" 2>/dev/null || true; }
field() { sed -n "s/.*\"$2\":\"\{0,1\}\([^\",}]*\)\"\{0,1\}[,}].*/\1/p" <<<"$1" | head -n 1; }

cmd_start() {
  if [ -z "${RAFTMQ_BIN:-}" ]; then
    for product in mqnamesrv mqbroker mqadmin; do (cd "$root" && swift build -c release --product "$product" >/dev/null); done
  fi
  cmd_stop
  rm -rf "$D/home" "$D/conf"; mkdir -p "$D/conf"
  for n in 0 1 2; do
    sed "s/^flushDiskType=.*//" "$root/conf/dledger-local/broker-n$n.conf" >"$D/conf/broker-n$n.conf"
    echo "flushDiskType=$FLUSH" >>"$D/conf/broker-n$n.conf"
    # RAFTMQ_EXTRA_CONF: more key=value lines for every broker (e.g. "warmMapedFileEnable=false").
    [ -z "${RAFTMQ_EXTRA_CONF:-}" ] || printf '%s\n' "$RAFTMQ_EXTRA_CONF" >>"$D/conf/broker-n$n.conf"
  done
  (cd "$root" && cluster start) >"$D/start.log" 2>&1 || { log "raftmq did not start: $D/start.log"; return 1; }
  for k in $(seq 1 50); do
    "$bin/mqadmin" updateTopic -n "127.0.0.1:9876" -c RaftCluster -t BenchTopic -r 8 -w 8 >/dev/null 2>&1 && break
    sleep 0.2
  done
  log "raftmq ($FLUSH) up: leader $(cmd_leader)"
}

cmd_stop() { [ -d "$D/home" ] && (cd "$root" && cluster stop) >/dev/null 2>&1; return 0; }

cmd_leader() {  # "INDEX PID" of the group's leader
  local i s
  for i in 0 1 2; do
    s=$(state "$i")
    if [ "$(field "$s" role)" = leader ]; then echo "$i $(cat "$D/home/n$i.pid")"; return 0; fi
  done
  return 1
}

cmd_start_node() {  # restart node I; wait until it has the leader's commit index
  local i=$1 l target s
  (cd "$root" && cluster restart "n$i") >/dev/null 2>&1
  for k in $(seq 1 600); do
    read -r l _ < <(cmd_leader) || { sleep 0.1; continue; }
    target=$(field "$(state "$l")" commitIndex)
    s=$(state "$i")
    if [ -n "$target" ] && [ -n "$(field "$s" appliedIndex)" ] && [ "$(field "$s" appliedIndex)" -ge "$target" ] 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "n$i did not catch up within 60 s"; return 0
}

server_pids() { cat "$D"/home/n*.pid | paste -sd, ; }

cmd_throughput() {
  local label=${1:-raftmq} how=${2:-leader} eps=$ENDPOINTS li
  if [ "$how" = leader ]; then read -r li _ < <(cmd_leader); eps="${IPS[$li]}:30911"; fi
  RAFTMQ_BENCH_QUEUES=8 "$PY" "$here/raftmq_loadgen.py" --peer raftmq --endpoints "$eps" --label "raftmq $FLUSH send 1KiB R3 c64 ($how)" \
     --procs "${PROCS:-2}" --concurrency "${CONC:-64}" --duration "${DUR:-20}" --warmup 3 \
     --server-pids "$(server_pids)" --out "$O/$label.json" > /dev/null
  "$PY" -c 'import json,sys; j=json.load(open(sys.argv[1])); c=j["cpu"]; print(sys.argv[1], round(j["msgs_per_s"]), "msg/s p50", round(j["lat_ms"]["p50"] or 0,2), "p99", round(j["lat_ms"]["p99"] or 0,2), "err", j["errors"], "server us/msg", round(c["server_cpu_us_per_msg"] or 0), "client us/msg", round(c["client_cpu_us_per_msg"] or 0))' "$O/$label.json"
}

cmd_failover() {
  local label=${1:-raftmq-failover} kills=${2:-5}
  RAFTMQ_BENCH_QUEUES=8 "$PY" "$here/raftmq_loadgen.py" --peer raftmq --mode failover --endpoints "$ENDPOINTS" --label "raftmq $FLUSH failover" \
     --rate "${RATE:-200}" --kills "$kills" --steady 5 --attempt-timeout 1 \
     --leader-cmd "$0 leader" --restart-cmd "$0 start-node" --out "$O/$label.json" > /dev/null
}

cmd_all() {
  local R=${1:-3}
  for r in $(seq 1 "$R"); do
    for how in leader spread; do cmd_start; cmd_throughput "tp-$how.$r" "$how"; done
  done
  cmd_start; cmd_failover failover 5; cmd_stop
  "$PY" "$PEERS_DIR/summarize.py" runs "$O"/*.json
}

ensure_venv
c=${1:-}; shift || true
case "$c" in
  start) cmd_start;; stop) cmd_stop;; leader) cmd_leader;; start-node) cmd_start_node "$@";;
  throughput) cmd_throughput "$@";; failover) cmd_failover "$@";;
  all) cmd_all "$@";;
  *) sed -n 2,9p "$0"; exit 2;;
esac
