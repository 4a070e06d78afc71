#!/usr/bin/env bash
# tools/test-cluster.sh -- `make test-cluster`: a real two-node Corosync +
# Pacemaker cluster in network namespaces driving a simulated Remus pair
# through the OCF agent (tests/pacemaker/cluster.py).  Root only; installs
# the Debian packages it needs.  Prints one line per scenario and its time;
# "SKIP: reason" (exit 0) only where the cluster cannot be had at all.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
t0=$(date +%s)
done_in() { echo "test-cluster: $(( $(date +%s) - t0 )) s"; }
if [ "$(id -u)" != 0 ]; then
  echo "SKIP: test-cluster needs root (network namespaces, Pacemaker's daemons)"; exit 0
fi
pkgs=(pacemaker corosync pacemaker-cli-utils resource-agents libxml2-utils iproute2)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "test-cluster: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1
         apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; } \
    || { echo "SKIP: apt-get could not install ${missing[*]}"; done_in; exit 0; }
fi
for tool in pacemakerd corosync crm_mon cibadmin ip unshare; do
  command -v "$tool" >/dev/null || { echo "SKIP: $tool not found after installing ${pkgs[*]}"; exit 0; }
done
if ! ip netns add "pcmk$$-probe" 2>/dev/null; then
  echo "SKIP: cannot create network namespaces here"; exit 0
fi
ip netns delete "pcmk$$-probe"
venv=$(tools/venv.sh py3) || { echo "FAIL: could not build the py3 venv"; exit 1; }
"$venv/bin/python" -m tests.pacemaker.cluster "$@"
rc=$?
done_in
exit $rc
