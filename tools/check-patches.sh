#!/usr/bin/env bash
# tools/check-patches.sh [--series xen-4.1|xen-4.4] [DIR]
#
# Applies patches/<series>/ to a COPY of the Xen tree DIR (the top of a Xen
# source tree, or its tools/python directory) with `quilt push -a` (or
# `patch -p1` in series order when quilt is missing), with no fuzz allowed,
# then byte-compiles the patched files with Python 2.7 when one is at hand,
# pops the series again (quilt), and applies patches/alt/ alone to a fresh
# copy.  DIR itself is never changed.
#
# The series is chosen from xen/Makefile (XEN_VERSION.XEN_SUBVERSION); for a
# bare tools/python directory, or with --series, each candidate is tried.
# Without DIR (plain `make check-patches`) it checks every RELEASE-4.1.x and
# RELEASE-4.4.x tag of the fetched Xen git mirror, extracting only the files
# the series touches.  Exit: 0 all applied, 1 a patch failed, 2 usage.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
mirror=${XEN_GIT:-/work/.mirror/xen-project+xen/repo}
series_arg=""
if [ "${1:-}" = "--series" ]; then series_arg=${2:?--series needs a name}; shift 2; fi
src=${1:-}

# CHECK_PATCHES_NO_QUILT=1 takes the patch -p1 route even where quilt exists
have_quilt() { [ -z "${CHECK_PATCHES_NO_QUILT:-}" ] && command -v quilt >/dev/null 2>&1; }

py27=""
for c in "$top/.venv/py27/bin/python" python2.7 python2; do
  if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; sys.exit(sys.version_info[0] != 2)' 2>/dev/null; then
    py27=$c; break
  fi
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

files_of() {  # the a/ paths a patch touches
  sed -n 's|^--- a/\([^[:space:]]*\).*|\1|p' "$@" | sort -u
}

copy_tree() {  # copy_tree SRC DEST: the tools/python part of SRC as DEST/tools/python
  local from=$1 to=$2
  mkdir -p "$to/tools"
  if [ -d "$from/tools/python/xen" ]; then
    cp -a "$from/tools/python" "$to/tools/python"
    [ -f "$from/xen/Makefile" ] && mkdir -p "$to/xen" && cp "$from/xen/Makefile" "$to/xen/Makefile"
  elif [ -d "$from/xen/xm" ]; then
    cp -a "$from" "$to/tools/python"
  else
    echo "check-patches: $from: expected a Xen tree (tools/python/xen) or tools/python, got neither" >&2
    return 2
  fi
}

apply_series() {  # apply_series TREE SERIES_DIR -> 0 ok
  local tree=$1 sdir=$2 p
  if have_quilt; then
    (cd "$tree" && QUILT_PATCHES="$sdir" QUILT_PC=.pc quilt push -a -q --fuzz=0 >"$tmp/log" 2>&1) || return 1
  else
    for p in $(grep -v '^#' "$sdir/series" | sed '/^$/d'); do
      patch -d "$tree" -p1 -N -s --fuzz=0 <"$sdir/$p" >"$tmp/log" 2>&1 || return 1
    done
  fi
}

check_compiles() {  # check_compiles TREE SERIES_DIR
  local tree=$1 sdir=$2 f
  [ -n "$py27" ] || { echo "  (no Python 2.7 here: patched files not byte-compiled)"; return 0; }
  for f in $(cd "$sdir" && files_of $(grep -v '^#' series | sed '/^$/d')); do
    "$py27" -c 'import sys, py_compile; py_compile.compile(sys.argv[1], doraise=True)' "$tree/$f" \
      || { echo "check-patches: $f does not compile after the series" >&2; return 1; }
  done
}

version_of() {  # version_of TREE -> 4.1 / 4.4 / ""
  local mk=$1/xen/Makefile
  [ -f "$mk" ] || return 0
  awk '/^export XEN_VERSION[[:space:]]*=/{v=$NF} /^export XEN_SUBVERSION[[:space:]]*=/{s=$NF} END{if(v!="")print v"."s}' "$mk"
}

check_tree() {  # check_tree DIR LABEL -> 0 ok
  local dir=$1 label=$2 candidates ver s tree n
  if [ -n "$series_arg" ]; then candidates=$series_arg
  else
    ver=$(version_of "$dir")
    if [ -n "$ver" ] && [ -d "$top/patches/xen-$ver" ]; then candidates=xen-$ver
    elif [ -n "$ver" ]; then
      echo "check-patches: $label is Xen $ver; patches/ has series for 4.1 and 4.4 only (xend left Xen in 4.5)" >&2
      return 1
    else candidates="xen-4.1 xen-4.4"; fi
  fi
  for s in $candidates; do
    [ -f "$top/patches/$s/series" ] || { echo "check-patches: no series patches/$s" >&2; return 2; }
    tree="$tmp/tree-$s"; rm -rf "$tree"
    copy_tree "$dir" "$tree" || return 2
    if apply_series "$tree" "$top/patches/$s"; then
      check_compiles "$tree" "$top/patches/$s" || return 1
      if have_quilt; then
        (cd "$tree" && QUILT_PATCHES="$top/patches/$s" QUILT_PC=.pc quilt pop -a -q >/dev/null 2>&1) \
          || { echo "check-patches: $label: quilt pop -a failed" >&2; return 1; }
      fi
      n=$(grep -v '^#' "$top/patches/$s/series" | sed '/^$/d' | wc -l)
      # the alternative one-line patch, alone, on a fresh copy
      rm -rf "$tree"; copy_tree "$dir" "$tree" >/dev/null
      patch -d "$tree" -p1 -N -s --fuzz=0 <"$top/patches/alt/${s}-xm-imported-commands.patch" >"$tmp/log" 2>&1 \
        || { echo "check-patches: $label: patches/alt/${s}-xm-imported-commands.patch failed:" >&2; cat "$tmp/log" >&2; return 1; }
      echo "ok: $label: patches/$s ($n patches, $(have_quilt && echo quilt || echo patch -p1), no fuzz) + alt$( [ -n "$py27" ] && echo '; compiled with Python 2.7')"
      return 0
    fi
    last_log=$(cat "$tmp/log")
  done
  echo "check-patches: $label: the series ($candidates) does not apply:" >&2
  echo "$last_log" >&2
  return 1
}

if [ -n "$src" ]; then
  [ -d "$src" ] || { echo "check-patches: $src: no such directory" >&2; exit 2; }
  check_tree "$src" "$src"
  exit $?
fi

if ! git --git-dir="$mirror" rev-parse -q --verify RELEASE-4.1.0 >/dev/null 2>&1; then
  echo "usage: make check-patches XEN_SRC=DIR   (no Xen git mirror at $mirror to check the release tags)" >&2
  exit 2
fi
rc=0
paths=$(cd "$top/patches" && files_of xen-4.*/*.patch alt/*.patch)
for tag in $(git --git-dir="$mirror" tag -l 'RELEASE-4.1.*' 'RELEASE-4.4.*'); do
  t="$tmp/tag-$tag"; mkdir -p "$t"
  git --git-dir="$mirror" archive "$tag" xen/Makefile $paths | tar -x -C "$t"
  mkdir -p "$t/tools/python/xen/xm"  # so copy_tree recognises the partial tree
  check_tree "$t" "$tag" || rc=1
  rm -rf "$t"
done
exit $rc
