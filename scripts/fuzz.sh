#!/usr/bin/env bash
# Builds the libFuzzer targets of Fuzz/ (debug, fuzzer + address sanitizers) and runs each for
# SECONDS (default 60) on a copy of its committed seed corpus (Fuzz/Corpus/TARGET). A crash, a
# sanitizer report or a failed invariant leaves its input in $FUZZ_ARTIFACTS (default
# /tmp/raftmq-fuzz-artifacts) and fails the script; make such an input a regression seed or test.
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../Fuzz"
# Swift's own backtracer would fight libFuzzer's and ASan's handlers over a crash.
export SWIFT_BACKTRACE=enable=no
seconds=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(FuzzRemotingFrame FuzzConfig FuzzLogFormat FuzzRaftWire FuzzRecovery FuzzHAStream FuzzRaftCore FuzzAdminHTTP)
fi
artifacts=${FUZZ_ARTIFACTS:-/tmp/raftmq-fuzz-artifacts}
mkdir -p "$artifacts"
for t in "${targets[@]}"; do
  # The linker's harmless "Cannot export local symbol '__asan_report..." lines are filtered (TOOLCHAIN.md).
  swift build -c debug --product "$t" --sanitize fuzzer -Xswiftc -sanitize=fuzzer,address 2>&1 \
    | grep -v "Cannot export local symbol" | grep -E "error|warning: |Build of product" || true
  [ -x ".build/debug/$t" ] || { echo "building $t failed" >&2; exit 1; }
done
failed=0
for t in "${targets[@]}"; do
  work=$(mktemp -d /tmp/raftmq-fuzz-corpus.XXXXXX)
  cp -r "Corpus/$t/." "$work/" 2>/dev/null || true
  # Targets that need files (FuzzRecovery, FuzzHAStream) make them under TMPDIR; this one goes with $work.
  mkdir "$work.tmp"
  echo "== $t, $seconds s"
  if ! TMPDIR="$work.tmp/" ".build/debug/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$artifacts/$t-" "$work" >"$artifacts/$t.log" 2>&1; then
    echo "$t FAILED; input and log in $artifacts ($t-*, $t.log):" >&2
    grep -a -m3 "Fatal error\|ERROR: \|SUMMARY" "$artifacts/$t.log" >&2 || true
    failed=1
  fi
  grep -a "stat::number_of_executed_units\|stat::new_units_added" "$artifacts/$t.log" | tr '\n' ' '; echo
  rm -rf "$work" "$work.tmp"
done
exit $failed
