#!/usr/bin/env bash
# tools/venv.sh KIND -> prints the path of a ready virtualenv for KIND (py3|py27|lint),
# creating or refreshing it when its requirements changed.  Exit 3: interpreter missing.
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
  *) echo "usage: $0 py3|py27|lint" >&2; exit 2 ;;
esac
[ -n "$interp" ] && [ -x "$interp" ] || exit 3
stamp="$venv/.stamp"
want=$(cat "$req" "$top/setup.py" | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  rm -rf "$venv"
  mkdir -p "$top/.venv"
  if [ "$kind" = py27 ]; then
    # the stdlib venv does not exist on 2.7: virtualenv < 20.22 still creates 2.7 envs
    python3 -m virtualenv --version 2>/dev/null | grep -q '^virtualenv 20\.\(1[0-9]\|2[01]\)\.' \
      || python3 -m pip install -q 'virtualenv<20.22' >&2
    python3 -m virtualenv -q -p "$interp" "$venv" >&2
  else
    "$interp" -m venv "$venv" >&2
  fi
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req" >&2 2> >(grep -v -E 'WARNING: (Url|Location)|DEPRECATION' >&2)
  if [ "$kind" != lint ]; then
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e "$top" >&2 2> >(grep -v -E 'WARNING: (Url|Location)|DEPRECATION' >&2)
  fi
  echo "$want" > "$stamp"
fi
echo "$venv"
