#!/usr/bin/env bash
# RaftMQ beside etcd 3.4, NATS JetStream 2.9 and RabbitMQ 3.10 quorum queues on this machine, in one run, with the peers' Python
# harness (../shared/bench/loadgen.py; our driver: bench/raftmq_loadgen.py): 3 replicas on
# 127.0.0.1/.2/.3, 1 KiB, 64 in flight over 2 client processes, DUR seconds (default 20) after a 3 s
# warm-up, leader placement, a fresh cluster for every run, ROUNDS rounds (default 3) taking the
# systems in turn, then medians. RaftMQ runs twice a round: SYNC_FLUSH (to compare with etcd, which
# fsyncs) and ASYNC_FLUSH (with NATS, which does not). For each RaftMQ run the brokers' peak resident
# memory (VmHWM) is recorded too. RabbitMQ runs when rabbitmq-server is installed (apt-get install -y
# rabbitmq-server; its Erlang install is heavy), and is left out otherwise.
#   bench/side-by-side.sh [ROUNDS]        results: $PEERS_OUT/side-by-side/*.json and a table on stdout
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
PEERS_DIR=${PEERS_DIR:-$root/../shared/bench}
export PEERS_DIR
source "$PEERS_DIR/common.sh"
rounds=${1:-3}
out=$PEERS_OUT/side-by-side
mkdir -p "$out"
ensure_venv
command -v etcd >/dev/null && command -v nats-server >/dev/null || { echo "needs etcd and nats-server: apt-get install -y etcd-server etcd-client nats-server" >&2; exit 1; }
rss() {  # the peak resident memory of the running RaftMQ brokers, MiB, comma separated
  local p f list=""
  for f in "$PEERS_TMP"/raftmq/home/n[012].pid; do
    p=$(cat "$f")
    list="$list$(awk '/VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$p/status" 2>/dev/null),"
  done
  echo "${list%,}"
}
for r in $(seq 1 "$rounds"); do
  log "round $r of $rounds: etcd"
  "$PEERS_DIR/etcd.sh" start >/dev/null 2>&1 && "$PEERS_DIR/etcd.sh" throughput "side-$r" leader && cp "$PEERS_OUT/etcd/side-$r.json" "$out/etcd.$r.json"
  "$PEERS_DIR/etcd.sh" stop >/dev/null 2>&1
  log "round $r: nats"
  "$PEERS_DIR/nats.sh" start >/dev/null 2>&1 && "$PEERS_DIR/nats.sh" throughput "side-$r" leader && cp "$PEERS_OUT/nats/side-$r.json" "$out/nats.$r.json"
  "$PEERS_DIR/nats.sh" stop >/dev/null 2>&1
  if [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || [ -d /usr/lib/rabbitmq/lib ]; then
    log "round $r: rabbitmq"
    "$PEERS_DIR/rabbit.sh" start >/dev/null 2>&1 && "$PEERS_DIR/rabbit.sh" throughput "side-$r" leader && cp "$PEERS_OUT/rabbit/side-$r.json" "$out/rabbit.$r.json"
    "$PEERS_DIR/rabbit.sh" stop >/dev/null 2>&1
  fi
  for flush in SYNC_FLUSH ASYNC_FLUSH; do
    log "round $r: raftmq $flush"
    FLUSH=$flush "$here/raftmq.sh" start >/dev/null 2>&1 && FLUSH=$flush "$here/raftmq.sh" throughput "side-$r" leader \
      && cp "$PEERS_OUT/raftmq-$flush/side-$r.json" "$out/raftmq-$flush.$r.json" && echo "$(rss)" >"$out/raftmq-$flush.$r.rss"
    FLUSH=$flush "$here/raftmq.sh" stop
  done
done
"$PY" - "$out" <<'PY'
import glob, json, os, statistics, sys
d = sys.argv[1]
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None
rows = []
for name, label in [("etcd", "etcd 3.4 put (fsync)"), ("rabbit", "RabbitMQ 3.10 quorum queue (fsync, confirms)"), ("raftmq-SYNC_FLUSH", "RaftMQ SYNC_FLUSH"),
                    ("nats", "NATS JetStream R3 (no fsync)"), ("raftmq-ASYNC_FLUSH", "RaftMQ ASYNC_FLUSH")]:
    runs = [json.load(open(f)) for f in sorted(glob.glob(f"{d}/{name}.*.json"))]
    if not runs:
        continue
    rss = []
    for f in sorted(glob.glob(f"{d}/{name}.*.rss")):
        vals = [float(v) for v in open(f).read().strip().split(",") if v]
        if vals: rss.append(max(vals))
    rows.append((label, len(runs), med([r["msgs_per_s"] for r in runs]), [round(r["msgs_per_s"]) for r in runs],
                 med([r["lat_ms"]["p50"] for r in runs]), med([r["lat_ms"]["p99"] for r in runs]),
                 med([r["cpu"]["server_cpu_us_per_msg"] for r in runs]), med([r["cpu"]["client_cpu_us_per_msg"] for r in runs]),
                 max(rss) if rss else None, sum(r["errors"] for r in runs)))
print("| system | runs | msgs/s (median) | each run | p50 ms | p99 ms | server CPU us/msg | client CPU us/msg | broker peak RSS MiB | errors |")
print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|")
f = lambda v, n=1: "-" if v is None else f"{v:,.{n}f}"
for label, n, tp, each, p50, p99, scpu, ccpu, rss, err in rows:
    print(f"| {label} | {n} | {f(tp, 0)} | {' / '.join(f'{x:,}' for x in each)} | {f(p50)} | {f(p99)} | {f(scpu, 0)} | {f(ccpu, 0)} | {f(rss)} | {err} |")
PY
