#!/usr/bin/env bash
# The fault-injection suite on real processes (mqbench chaos, RELIABILITY.md), short form for CI:
# first the checker's self-test (one planted defect per check, each must be caught), then a run of
# RAFTMQ_CHAOS_SECONDS (default 120) of faults from a random seed, printed for replay, then a
# shorter SYNC_FLUSH run of the faults that hit a leader's deferred syncs (a slow disk, a leader
# killed or cut off: RELIABILITY.md, the consumer group that missed 1 %), with 64 sends in flight
# (the default is 8) so that a turn's sends share entries while leaders fail. Any other arguments
# go to the second run (e.g. --seed N --flush SYNC_FLUSH).
#   scripts/chaos.sh                  # as CI runs it
#   RAFTMQ_CHAOS_SECONDS=3600 scripts/chaos.sh --flush SYNC_FLUSH --json   # the long run
set -euo pipefail
cd "$(dirname "$0")/.."
configuration="${RAFTMQ_CHAOS_CONFIGURATION:-debug}"
swift build -c "$configuration" --product mqbench >/dev/null
swift build -c "$configuration" --product mqbroker >/dev/null
swift build -c "$configuration" --product mqnamesrv >/dev/null
bin="$(swift build -c "$configuration" --show-bin-path)"
"$bin/mqbench" chaos --duration 8 --faults kill-follower --plant-defects | tail -1
"$bin/mqbench" chaos --duration "${RAFTMQ_CHAOS_SECONDS:-120}" "$@"
"$bin/mqbench" chaos --duration "${RAFTMQ_CHAOS_SYNC_SECONDS:-45}" --flush SYNC_FLUSH --concurrency 64 --faults slow-disk,kill-leader,isolate-leader,pause-leader
