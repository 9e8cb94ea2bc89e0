#!/usr/bin/env bash
# The simulator's share of CI (scripts/test.sh runs it): raftsim in release over a fixed set of seeds
# for 3- and 5-node groups, then the self-test that proves the checkers catch broken Raft rules.
#   RAFTSIM_SEEDS=N   seeds per cluster size (default 500; the release goal is 10000: see BENCHMARKS.md)
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${RAFTSIM_SEEDS:-500}
swift build -c release --product raftsim
sim=.build/release/raftsim
logs=.build/raftsim-logs
mkdir -p "$logs"

# Both sizes at once: one process per core.
"$sim" --seeds "1..$seeds" --nodes 3 >"$logs/nodes3.txt" 2>&1 &
p3=$!
"$sim" --seeds "1..$seeds" --nodes 5 >"$logs/nodes5.txt" 2>&1 &
p5=$!
status=0
wait "$p3" || status=1
wait "$p5" || status=1
for n in 3 5; do
  echo "raftsim, $n nodes, seeds 1..$seeds:"
  if grep -q FAILED "$logs/nodes$n.txt"; then grep -A 200 FAILED "$logs/nodes$n.txt" | head -150; fi
  tail -n 2 "$logs/nodes$n.txt" | sed 's/^/  /'
done
if [ "$status" -ne 0 ]; then
  echo "raftsim found failures (full output in $logs)" >&2
  exit 1
fi

# The checkers can fail: each rule broken on purpose must be caught within a bounded number of seeds.
# (Measured on 1000 seeds: see BENCHMARKS.md for how often each is caught.)
selftest() {
  local rule=$1 nodes=$2 bound=$3
  if "$sim" --seeds "1..$bound" --nodes "$nodes" --break "$rule" --stop-at-first-failure >"$logs/break-$rule-$nodes.txt" 2>&1; then
    echo "self-test FAILED: breaking $rule went unnoticed for $bound seeds of $nodes nodes" >&2
    return 1
  fi
  echo "self-test: breaking $rule ($nodes nodes) is caught: $(grep -m1 -o 'seed [0-9]* FAILED.*' "$logs/break-$rule-$nodes.txt" | cut -c1-160)"
}
selftest old-term-commit 3 20
selftest old-term-commit 5 20
selftest stale-vote 3 20
selftest stale-vote 5 20
selftest ack-before-persist 3 100
selftest own-before-sync 3 30
selftest never-sync-deferred 3 20
selftest never-sync-deferred 5 20
selftest ack-before-persist 5 50
