#!/usr/bin/env bash
# Installs the Debian packages RaftMQ needs to build and test, only those that are missing.
# Safe to run repeatedly; needs root (or sudo) only when something is missing.
set -euo pipefail

packages=(
  zlib1g-dev   # zlib's crc32: RocketMQ's message body checksum (CChecksum links -lz)
  libnghttp2-dev  # HTTP/2 (h2c) on the admin port (AdminHTTP)
  nghttp2-client  # nghttp and h2load, for the admin endpoint's tests and benchmarks
  curl            # deploy/local/cluster.sh reads /raft/state; tests use --http2-prior-knowledge
  pkg-config      # SwiftPM finds libnghttp2 through it
  python3-prometheus-client  # the /metrics test reads the exposition with Prometheus's own Python parser
  chromium        # the dashboard test loads the page in headless Chromium (scripts/dashboard_browser.py)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]} > 0)); then
  echo "installing: ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi

if ! command -v swift >/dev/null 2>&1; then
  echo "swift is not on PATH: RaftMQ needs Swift 6.1 or newer (this machine kind ships it in /opt/swift)" >&2
  exit 1
fi
