#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what is missing, builds, runs every test.
# .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
# The build trees of a clean clone take 1.3 GiB and the tests write their stores under /tmp. This
# disk is shared and has been seen with only 287 MiB free: say so up front, since running out later
# fails tests in ways that hide why.
for dir in . "${TMPDIR:-/tmp}"; do
  free_mib=$(df -Pm "$dir" | awk 'NR == 2 {print $4}')
  if [ "${free_mib:-0}" -lt 4096 ]; then
    echo "warning: only ${free_mib} MiB free under $dir (under 4 GiB): the build or the tests may run out of space" >&2
  fi
done
swift build --build-tests
# Every test is written with Swift Testing; --disable-xctest drops XCTest's empty "Executed 0 tests" lines.
swift test --skip-build --disable-xctest --skip RaftGroupProcessTests
# Real processes on 127.0.0.1-3, timed failover: alone, so the rest of the suite's load does not skew it.
swift test --skip-build --disable-xctest --filter RaftGroupProcessTests
# deploy/: systemd units, Dockerfile, compose file and Kubernetes manifests, each read by its own tool.
./scripts/check-deploy.sh "$(swift build --show-bin-path)"
# The deterministic cluster simulator in release: 500 seeds per cluster size and the broken-rule self-test.
./scripts/simulate.sh
# Every libFuzzer target of Fuzz/ for 30 s on its seed corpus (scripts/fuzz.sh runs them longer).
./scripts/fuzz.sh "${RAFTMQ_FUZZ_SECONDS:-30}"
# The fault-injection suite on real processes: the checker's self-test, then 120 s of faults.
./scripts/chaos.sh
