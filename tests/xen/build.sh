#!/bin/bash
# tests/xen/build.sh -- build (or reuse) the lab's boot files and dom0 image.
#
#   build.sh rootfs   the Debian dom0 tree (mmdebstrap of dom0-packages.list)
#   build.sh image    rootfs + this working tree's package, dom0 scripts, PV guest
#
# Everything goes under $XENLAB_CACHE (default /var/cache/xen-remus-lab), keyed
# by a content hash of the inputs, so a second run with the same inputs reuses
# it.  Prints the image directory on stdout as its last line ("IMAGE <dir>").
# Exit status: 0 built or reused, 3 cannot build here (no mmdebstrap/QEMU or no
# Debian packages: the caller SKIPs), anything else: a real failure.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${XENLAB_CACHE:-/var/cache/xen-remus-lab}
SUITE=${XENLAB_SUITE:-bookworm}
APT_SOURCES=${XENLAB_APT_SOURCES:-/etc/apt/sources.list.d/debian.sources}
T0=$(date +%s)
say() { echo "build: [+$(( $(date +%s) - T0 ))s] $*" >&2; }
cannot() { echo "build: cannot build here: $*" >&2; exit 3; }

sha() { sha256sum | cut -c1-16; }

host_tools() {
  local want=() t
  command -v mmdebstrap >/dev/null || want+=(mmdebstrap)
  command -v qemu-system-x86_64 >/dev/null || want+=(qemu-system-x86)
  command -v cpio >/dev/null || want+=(cpio)
  command -v mke2fs >/dev/null || want+=(e2fsprogs)
  [ ${#want[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || cannot "not root and missing ${want[*]}"
  say "apt-get install ${want[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${want[@]}" \
    >/tmp/xen-remus-lab-apt.log 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 || true
         DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${want[@]}" \
           >/tmp/xen-remus-lab-apt.log 2>&1; } \
    || cannot "apt-get install ${want[*]} failed (see /tmp/xen-remus-lab-apt.log)"
  for t in mmdebstrap qemu-system-x86_64 cpio mke2fs; do
    command -v $t >/dev/null || cannot "$t still missing"; done
}

rootfs_key() { { echo "$SUITE v2"; grep -v '^#' "$HERE/dom0-packages.list"; cat "$HERE/apt-preferences"; } | sha; }

build_rootfs() {  # -> $CACHE/rootfs-<key>
  local key dir tmp pkgs
  key=$(rootfs_key); dir=$CACHE/rootfs-$key
  if [ -e "$dir/.complete" ]; then say "rootfs cached: $dir"; echo "$dir"; return; fi
  [ "$(id -u)" = 0 ] || cannot "mmdebstrap --mode=root needs root"
  [ -r "$APT_SOURCES" ] || cannot "no apt source file $APT_SOURCES"
  mkdir -p "$CACHE"; tmp=$CACHE/rootfs-$key.tmp; rm -rf "$tmp"
  pkgs=$(grep -v '^#' "$HERE/dom0-packages.list" | grep . | paste -sd,)
  say "mmdebstrap $SUITE ($pkgs)"
  if ! mmdebstrap --variant=minbase --mode=root --include="$pkgs" \
        --setup-hook="mkdir -p \"\$1/etc/apt/preferences.d\" && cp '$HERE/apt-preferences' \"\$1/etc/apt/preferences.d/xen-remus-lab\"" \
        --customize-hook='chroot "$1" apt-get clean' \
        "$SUITE" "$tmp" "$APT_SOURCES" >"$CACHE/mmdebstrap.log" 2>&1; then
    tail -5 "$CACHE/mmdebstrap.log" >&2; rm -rf "$tmp"
    cannot "mmdebstrap failed: Debian's packages cannot be had (log: $CACHE/mmdebstrap.log)"
  fi
  # PV live migration and Remus need log-dirty mode, i.e. shadow paging
  if ! grep -q '^CONFIG_SHADOW_PAGING=y' "$tmp"/boot/xen-*.config; then
    echo "build: Debian's Xen ($(ls "$tmp"/boot/xen-*.config)) has no shadow paging: PV guests cannot migrate" >&2
    rm -rf "$tmp"; exit 1
  fi
  touch "$tmp/.complete"; rm -rf "$dir"; mv "$tmp" "$dir"
  say "rootfs built: $dir ($(du -sh "$dir" | cut -f1))"; echo "$dir"
}

case ${1:-image} in
  rootfs) host_tools; build_rootfs ;;
  image) host_tools; ROOTFS=$(build_rootfs | tail -1); . "$HERE/build-image.sh" ;;
  *) echo "usage: build.sh rootfs|image" >&2; exit 2 ;;
esac
