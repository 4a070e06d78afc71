#!/usr/bin/env bash
# tools/venv.sh KIND -> prints the path of a ready virtualenv for KIND (py3|py27|lint, or
# pyenv-VERSION: pyenv's interpreter VERSION, e.g. pyenv-3.6.15, for make test-matrix),
# creating or refreshing it when its requirements changed.  Exit 3: interpreter missing.
# Requirements: requirements/test-pyXY.txt when there is one for that X.Y (pinned for
# interpreters the newest releases dropped), else test-py27.txt or test-py3.txt; pip and
# setuptools lines in it are installed first.
set -euo pipefail
kind=$1
top=$(cd "$(dirname "$0")/.." && pwd)
venv="$top/.venv/$kind"
case $kind in
  py3|lint) interp=$(command -v python3 || true); req="$top/requirements/test-py3.txt"
            [ "$kind" = lint ] && req="$top/requirements/lint.txt" ;;
  py27) interp=""
        if command -v pyenv >/dev/null 2>&1 && p=$(pyenv prefix 2.7.18 2>/dev/null); then interp="$p/bin/python"; fi
        [ -x "$interp" ] || interp=$(command -v python2.7 || true)
        req="$top/requirements/test-py27.txt" ;;
  pyenv-*) ver=${kind#pyenv-}; interp=""
        if command -v pyenv >/dev/null 2>&1 && p=$(pyenv prefix "$ver" 2>/dev/null); then interp="$p/bin/python"; fi
        xy=$(echo "$ver" | cut -d. -f1,2 | tr -d .)
        case $ver in 2.*) req="$top/requirements/test-py27.txt" ;; *) req="$top/requirements/test-py3.txt" ;; esac
        [ -f "$top/requirements/test-py$xy.txt" ] && req="$top/requirements/test-py$xy.txt" ;;
  *) echo "usage: $0 py3|py27|lint|pyenv-VERSION" >&2; exit 2 ;;
esac
[ -n "$interp" ] && [ -x "$interp" ] || exit 3
stamp="$venv/.stamp"        # requirements: a change rebuilds the venv
pkgstamp="$venv/.pkgstamp"  # setup.py: a change only re-installs the package (no rebuild under running tests)
want=$(cat "$req" | sha256sum | cut -c1-16)
pkgwant=$(sha256sum < "$top/setup.py" | cut -c1-16)
quiet_pip() { "$venv/bin/python" -m pip install -q --disable-pip-version-check "$@" 2>&1 >&2 \
              | grep -v -E 'WARNING: (Url|Location)|DEPRECATION|is ignored: it is neither' >&2 || true; }
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  rm -rf "$venv"
  mkdir -p "$top/.venv"
  if [ "$kind" = py27 ] || "$interp" -c 'import sys; sys.exit(sys.version_info[0] != 2)' 2>/dev/null; then
    # the stdlib venv does not exist on 2.7: virtualenv < 20.22 still creates 2.7 envs
    python3 -m virtualenv --version 2>/dev/null | grep -q '^virtualenv 20\.\(1[0-9]\|2[01]\)\.' \
      || python3 -m pip install -q 'virtualenv<20.22' >&2
    python3 -m virtualenv -q -p "$interp" "$venv" >&2
  else
    "$interp" -m venv "$venv" >&2
  fi
  boot=$(grep -E '^(pip|setuptools)([<>=!~ ]|$)' "$req" || true)
  # shellcheck disable=SC2086
  [ -z "$boot" ] || quiet_pip --upgrade $boot
  quiet_pip -r "$req"
  probe='import six'; [ "$kind" = lint ] && probe='import vermin'
  "$venv/bin/python" -c "$probe" || { echo "venv $kind: requirements did not install" >&2; rm -rf "$venv"; exit 1; }
  echo "$want" > "$stamp"
  rm -f "$pkgstamp"
fi
if [ "$kind" != lint ] && { [ ! -f "$pkgstamp" ] || [ "$(cat "$pkgstamp")" != "$pkgwant" ]; }; then
  quiet_pip --no-deps -e "$top"
  echo "$pkgwant" > "$pkgstamp"
fi
echo "$venv"
