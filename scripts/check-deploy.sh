#!/usr/bin/env bash
# Checks every file under deploy/ with the tool that reads it for real, and fails on any complaint:
#   systemd units      systemd-analyze verify (each unit, the broker template as an instance)
#   Dockerfile         dockerfile-parse + scripts/check_deploy.py (stages, COPY sources, exec forms)
#   compose.yaml       docker-compose config (Debian's docker-compose: the Compose file schema)
#   Kubernetes         kubernetes-validate --strict (the API's OpenAPI schemas, no cluster needed)
#   shell scripts      bash -n / sh -n, the ConfigMap's start script included
#   configurations     mqbroker -p / mqnamesrv -p on the ConfigMap's broker.conf and namesrv.conf
# Installs what it lacks: apt packages (systemd, docker-compose) and a Python venv under .build/.
# Usage: scripts/check-deploy.sh [BIN_DIR]   (BIN_DIR holds mqbroker and mqnamesrv; default: debug build)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bin="${1:-$(swift build --show-bin-path)}"

need=()
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v docker-compose >/dev/null || need+=(docker-compose)
python3 -c "import venv, ensurepip" 2>/dev/null || need+=(python3-venv)
if ((${#need[@]} > 0)); then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
venv="$root/.build/deploy-venv"
if [ ! -x "$venv/bin/kubernetes-validate" ] || ! "$venv/bin/python" -c "import dockerfile_parse" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q kubernetes-validate==1.37.0 dockerfile-parse==2.0.1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
check() {  # check NAME COMMAND...: runs it; any output or a non-zero status is a failure
  local name=$1; shift
  local out
  if out=$("$@" 2>&1) && [ -z "$out" ]; then
    echo "ok      $name"
  else
    echo "FAILED  $name"; printf '%s\n' "$out" | sed 's/^/        /'
    failed=1
  fi
}

# systemd: the units as installed, with ExecStart pointing at the built executables (verify checks
# that the program exists and is executable).
mkdir -p "$work/units"
for u in deploy/systemd/*.service; do
  name=$(basename "$u")
  sed -e "s|/usr/local/bin/mqbroker|$bin/mqbroker|g" -e "s|/usr/local/bin/mqnamesrv|$bin/mqnamesrv|g" "$u" > "$work/units/$name"
done
cp "$work/units/raftmq-broker@.service" "$work/units/raftmq-broker@broker-n0.service"
(cd "$work/units" && check "systemd units (systemd-analyze verify)" systemd-analyze verify ./raftmq-namesrv.service ./raftmq-broker@broker-n0.service)

check "Dockerfile (dockerfile-parse)" sh -c "'$venv/bin/python' scripts/check_deploy.py '$root' >/dev/null || '$venv/bin/python' scripts/check_deploy.py '$root'"
check "compose.yaml (docker-compose config)" docker-compose -f deploy/docker/compose.yaml config -q
check "Kubernetes manifests (kubernetes-validate --strict)" "$venv/bin/kubernetes-validate" --strict --quiet -k 1.30.0 deploy/kubernetes/raftmq.yaml

# The ConfigMap's files, out of the manifest.
"$venv/bin/python" - "$work" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open("deploy/kubernetes/raftmq.yaml")) if d]
cm = next(d for d in docs if d["kind"] == "ConfigMap")
for name, text in cm["data"].items():
    open(f"{sys.argv[1]}/{name}", "w").write(text)
PY
check "ConfigMap start-broker.sh (sh -n)" sh -n "$work/start-broker.sh"
check "ConfigMap broker.conf (mqbroker -p)" sh -c "POD_IP=10.0.0.7 RAFTMQ_SELF_ID=n1 '$bin/mqbroker' -c '$work/broker.conf' -p >/dev/null"
check "ConfigMap namesrv.conf (mqnamesrv -p)" sh -c "'$bin/mqnamesrv' -c '$work/namesrv.conf' -p >/dev/null"
for s in deploy/local/*.sh scripts/*.sh; do check "$s (bash -n)" bash -n "$s"; done

exit $failed
