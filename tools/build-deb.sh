#!/usr/bin/env bash
# tools/build-deb.sh [OUTDIR] -- builds the xen-remus-ext .deb (`make deb`).
#
# 1. Installs the missing Build-Depends of debian/control with apt-get (root).
# 2. Copies a clean tree: the files git tracks, as they are in the work tree
#    (DEB_FROM=head: exactly the last commit, through git archive); outside a
#    git checkout, everything but .venv, build products and caches.
# 3. Runs `dpkg-buildpackage -us -uc -b` there, without network access when
#    the machine allows it (unshare -n), and moves the .deb, .buildinfo and
#    .changes to OUTDIR (default dist/deb).  Prints the path of the .deb.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$top/dist/deb}
mkdir -p "$out"
out=$(cd "$out" && pwd)

say() { echo "build-deb: $*" >&2; }
die() { say "$*"; exit 1; }

for tool in dpkg-checkbuilddeps dpkg-parsechangelog; do
  command -v "$tool" >/dev/null || missing_dpkg_dev=1
done
if [ -n "${missing_dpkg_dev:-}" ] || ! command -v dpkg-buildpackage >/dev/null; then
  [ "$(id -u)" = 0 ] || die "dpkg-dev is missing and we are not root to install it"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dpkg-dev >&2 \
    || { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dpkg-dev >&2; }
fi

# --- 1. build dependencies -------------------------------------------------
unmet=$(cd "$top" && dpkg-checkbuilddeps 2>&1 >/dev/null | sed -n 's/^.*Unmet build dependencies: //p') || true
if [ -n "$unmet" ]; then
  # "debhelper-compat (= 13) dh-python" -> debhelper-compat dh-python
  pkgs=$(echo "$unmet" | sed -e 's/([^)]*)//g' -e 's/|[^ ]*//g' -e 's/:any//g')
  [ "$(id -u)" = 0 ] || die "unmet build dependencies ($unmet) and not root: install them first"
  say "installing build dependencies: $pkgs"
  # shellcheck disable=SC2086
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $pkgs >&2; then
    apt-get update -qq >&2
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $pkgs >&2
  fi
  (cd "$top" && dpkg-checkbuilddeps) || die "build dependencies still unmet after apt-get"
fi

# --- 2. a clean copy of the tree --------------------------------------------
version=$(cd "$top" && dpkg-parsechangelog -S Version)
source=$(cd "$top" && dpkg-parsechangelog -S Source)
work=$(mktemp -d /tmp/xen-remus-deb.XXXXXX)
trap 'rm -rf "$work"' EXIT
src="$work/$source-$version"
mkdir -p "$src"
if git -C "$top" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  if [ "${DEB_FROM:-worktree}" = head ]; then
    git -C "$top" archive --format=tar HEAD | tar -C "$src" -xf -
    say "source: git archive of $(git -C "$top" rev-parse --short HEAD)"
  else
    # tracked files with their work-tree contents; files deleted but not yet
    # committed are skipped
    (cd "$top" && git ls-files -z --cached | while IFS= read -r -d '' f; do
       [ -e "$f" ] || [ -L "$f" ] && printf '%s\0' "$f"; done) \
      | tar -C "$top" --null -T - -cf - | tar -C "$src" -xf -
    dirty=$(git -C "$top" status --porcelain --untracked-files=no -- . | wc -l)
    say "source: tracked files of the work tree ($dirty modified)"
  fi
else
  tar -C "$top" --exclude=./.venv --exclude=./.git --exclude=./dist --exclude=./build \
      --exclude='*.egg-info' --exclude=__pycache__ --exclude=.pytest_cache --exclude=.ruff_cache \
      -cf - . | tar -C "$src" -xf -
  say "source: copy of $top without .venv and build products"
fi
[ -f "$src/debian/control" ] || die "debian/control is not in the copied tree (not committed?)"

# --- 3. build ----------------------------------------------------------------
log="$out/build.log"
netns=()
if [ "${DEB_NETWORK:-}" != 1 ] && unshare -n true 2>/dev/null; then
  netns=(unshare -n)   # no network inside: proves the build is offline
fi
say "dpkg-buildpackage -us -uc -b ${netns[*]:+(offline: ${netns[*]})}; log: $log"
start=$(date +%s)
if ! (cd "$src" && "${netns[@]}" dpkg-buildpackage -us -uc -b) >"$log" 2>&1; then
  tail -n 40 "$log" >&2
  die "dpkg-buildpackage failed (full log: $log)"
fi
rm -f "$out/${source}_"*
for f in "$work/${source}_${version}"_*.deb "$work/${source}_${version}"_*.buildinfo \
         "$work/${source}_${version}"_*.changes; do
  [ -e "$f" ] && mv "$f" "$out/"
done
deb=$(ls "$out/${source}_${version}"_*.deb 2>/dev/null | head -n 1)
[ -n "$deb" ] || die "no .deb produced (log: $log)"
say "built in $(( $(date +%s) - start )) s: $deb"
echo "$deb"
