#!/usr/bin/env bash
# The unit suite beside busy loops that take the cores from it, as a loaded CI machine does
# (docs/testing.md): every test must still pass, only slower.
#   scripts/test-under-load.sh [LOOPS]   LOOPS busy shell loops (default 6), each ended after 300 s at most
set -euo pipefail
cd "$(dirname "$0")/.."
loops=${1:-6}
swift build --build-tests
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
for _ in $(seq "$loops"); do
  timeout 300 sh -c 'while :; do :; done' &
  pids+=("$!")
done
echo "unit suite beside $loops busy loops (pids ${pids[*]})"
swift test --skip-build --disable-xctest --skip RaftGroupProcessTests
