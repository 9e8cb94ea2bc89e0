#!/usr/bin/env bash
# Put this VM's memory in a known state before a benchmark: write GIB GiB of zeros to a file in
# /dev/shm (tmpfs, no disk traffic) and delete it. On this VM the first write into a page of guest
# memory that nothing has used since boot costs 2.5-3 us per KiB (the host backs the page then),
# against 0.2-0.4 us per KiB for a page that was used and freed (BENCHMARKS.md, "The first touch of
# guest memory"). A benchmark's stores land in the page cache, so without this the first system
# (or variant) to run after a boot pays several times the others' kernel copy cost per message.
# Prints dd's rate: a few hundred MB/s means fresh memory was touched, several GB/s that it was not.
#   bench/pretouch.sh [GIB]      GIB defaults to 8 (more than one side-by-side round writes)
set -euo pipefail
gib=${1:-8}
case $gib in ''|*[!0-9]*) echo "usage: $0 [GIB]" >&2; exit 2 ;; esac
avail=$(df --output=avail -k /dev/shm | tail -n 1)
# Leave a quarter of /dev/shm free: never fill it (other programs may use it).
max=$((avail * 3 / 4 / 1024 / 1024))
[ "$gib" -le "$max" ] || gib=$max
[ "$gib" -gt 0 ] || { echo "pretouch: /dev/shm has no room, skipped" >&2; exit 0; }
f=$(mktemp /dev/shm/raftmq-pretouch.XXXXXX)
trap 'rm -f "$f"' EXIT
echo "pretouch: $gib GiB through /dev/shm: $(dd if=/dev/zero of="$f" bs=1M count=$((gib * 1024)) 2>&1 | tail -n 1)"
