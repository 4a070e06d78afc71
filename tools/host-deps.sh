#!/usr/bin/env bash
# Installs the Debian packages the tests and benchmarks use, when root and missing.
# rsync (benchmark peer), openssh (ssh transport tests), openssl (TLS certificates), xenstore-utils (a real
# xenstore client against our xenstored double), xfsprogs (FIEMAP/reflink tracker),
# iproute2 (network namespaces), quilt (patch series check), Pacemaker's
# offline tools for the OCF agent's tests: pacemaker-cli-utils (crm_resource,
# crm_simulate, cibadmin), resource-agents (ocf-tester, ra-api-1.dtd),
# libxml2-utils (xmllint), crmsh and pcs (the crmsh and pcs examples of
# docs/pacemaker.md are run on an offline CIB; pcs needs no pcsd for that),
# libxen-dev and gcc (the xend lab builds Xen's own xen.lowlevel.xs against
# Debian's libxenstore; net-tools: the remus script lists its ifb devices with
# ifconfig), libnbd-bin and nbd-client (real
# NBD clients, for the disk-replication server's tests).  `make test-cluster`
# installs the daemons itself.
set -u
pkgs=(rsync openssh-client openssh-server openssl xenstore-utils xfsprogs iproute2 quilt
      pacemaker-cli-utils resource-agents libxml2-utils crmsh pcs libxen-dev gcc net-tools libnbd-bin nbd-client)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "host-deps: not root; tests needing ${missing[*]} will SKIP" >&2
  exit 0
fi
echo "host-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || true
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
  || echo "host-deps: apt-get install failed; dependent tests will SKIP" >&2
exit 0
