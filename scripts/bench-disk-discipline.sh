#!/usr/bin/env bash
# How the log file's layout changes group commit on this disk (bench/disk-discipline.c): a growing
# file, a fallocate'd one, one written with zeros beforehand, zeros kept ahead in the same file, and
# a zero-filled file while the next one is being zero-filled. Modes alternate within each round, so
# the shared disk's drift hits all alike. Writes up to 2 GiB under ./.build/disk-discipline.
#   scripts/bench-disk-discipline.sh [SECONDS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-3}
rounds=${2:-2}
dir=./.build/disk-discipline
mkdir -p "$dir"
trap 'rm -rf "$dir"' EXIT
# Any C compiler: the system's cc, or the clang that ships with the Swift toolchain.
compiler=${CC:-$(command -v cc || command -v clang || true)}
[ -n "$compiler" ] || { echo "needs a C compiler (cc or clang)" >&2; exit 1; }
"$compiler" -O2 -pthread -o "$dir/disk-discipline" bench/disk-discipline.c
for ((r = 1; r <= rounds; r++)); do
  echo "round $r"
  for mode in grow falloc zeroed ahead ahead-direct next; do
    if [ "$mode" = ahead-direct ]; then
      "$dir/disk-discipline" ahead "$seconds" "$dir" --ahead-direct | sed 's/^ahead /ahead+O_DIRECT/'
    else
      "$dir/disk-discipline" "$mode" "$seconds" "$dir"
    fi
  done
done
