#!/usr/bin/env bash
# Runs the suite on Python 3 and on Python 2.7 (xend's interpreter), each in its own venv.
# Arguments replace the default selection (e.g. tests/run.sh tests/unit/test_sxp.py -k quote).
# tests/xen/ runs inside a real dom0 (make test-xen), never on this host.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
rc=0
[ $# -gt 0 ] || set -- tests --ignore=tests/xen
for kind in py3 py27; do
  venv=$(tools/venv.sh "$kind"); st=$?
  if [ $st -eq 3 ]; then echo "SKIP: $kind interpreter not found (tests not run on $kind)"; continue; fi
  if [ $st -ne 0 ]; then echo "FAIL: could not build the $kind venv"; rc=1; continue; fi
  echo "=== $kind: $("$venv/bin/python" -V 2>&1) ==="
  "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"; st=$?
  [ $st -eq 0 ] || rc=1
done
exit $rc
