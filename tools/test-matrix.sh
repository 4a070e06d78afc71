#!/usr/bin/env bash
# tools/test-matrix.sh [--ends] [VERSION ...] -- `make test-matrix`
#
# Runs the suite (tests/, without tests/xen) on every pyenv interpreter present
# (2.7.x and 3.x: `pyenv versions --bare`), each in its own virtualenv
# .venv/pyenv-VERSION built by tools/venv.sh with the requirements that still
# install on it (requirements/test-py36.txt pins 3.6's).  --ends: only the
# oldest and the newest 3.x present (what .ci/run adds to `make test`).
# VERSIONs choose the interpreters instead.  MATRIX_PYTEST="-x tests/unit"
# replaces pytest's arguments (default: tests --ignore=tests/xen).  One line per interpreter with its time; exit 0 when
# every one passed.  Without pyenv there is nothing to run: SKIP, exit 0.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
ends=0
if [ "${1:-}" = --ends ]; then ends=1; shift; fi
if ! command -v pyenv >/dev/null 2>&1; then
  echo "SKIP: test-matrix: pyenv is not installed, so there are no interpreters to test"
  exit 0
fi
if [ $# -gt 0 ]; then
  versions="$*"
else
  versions=$(pyenv versions --bare 2>/dev/null | grep -E '^(2\.7|3\.[0-9]+)\.[0-9]+$' | sort -V)
  if [ "$ends" = 1 ]; then
    threes=$(echo "$versions" | grep '^3\.')
    versions=$(printf '%s\n%s\n' "$(echo "$threes" | head -n 1)" "$(echo "$threes" | tail -n 1)" | sort -uV)
  fi
fi
versions=$(echo $versions)
if [ -z "$versions" ]; then
  echo "SKIP: test-matrix: pyenv has no 2.7 or 3.x interpreter installed"
  exit 0
fi
echo "test-matrix: $versions"
rc=0
summary=()
t_all=$(date +%s)
for v in $versions; do
  t0=$(date +%s)
  venv=$(tools/venv.sh "pyenv-$v"); st=$?
  if [ $st -eq 3 ]; then
    summary+=("FAIL: python $v: pyenv lists it but it does not run"); rc=1; continue
  fi
  if [ $st -ne 0 ]; then
    summary+=("FAIL: python $v: its virtualenv did not build ($(( $(date +%s) - t0 )) s)"); rc=1; continue
  fi
  echo "=== python $v: $("$venv/bin/python" -V 2>&1), venv $(( $(date +%s) - t0 )) s ==="
  log=$(mktemp /tmp/test-matrix-renov.XXXXXX)
  # shellcheck disable=SC2086
  "$venv/bin/python" -m pytest -q -p no:cacheprovider ${MATRIX_PYTEST:-tests --ignore=tests/xen} 2>&1 | tee "$log"
  st=${PIPESTATUS[0]}
  last=$(grep -E '(passed|failed|error)' "$log" | tail -n 1 | sed 's/=//g; s/^ *//; s/ *$//')
  rm -f "$log"
  if [ "$st" -eq 0 ]; then
    summary+=("PASS: python $v: $last ($(( $(date +%s) - t0 )) s)")
  else
    summary+=("FAIL: python $v: ${last:-pytest exit $st} ($(( $(date +%s) - t0 )) s)"); rc=1
  fi
done
echo "=== test-matrix ($(( $(date +%s) - t_all )) s) ==="
printf '%s\n' "${summary[@]}"
exit $rc
