#!/usr/bin/env bash
# make test-xend: the real xend/xm of Xen 4.1.6.1 and 4.4.4 on two lab hosts
# (tests/xend/scenarios.py; docs/xend-lab.md).  Sources: ../shared/xen-src or XEN_SRC=DIR.
set -u
cd "$(dirname "$0")/../.."
start=$(date +%s)
finish() { echo "test-xend: $(( $(date +%s) - start )) s"; }
if [ "$(id -u)" != 0 ]; then
  echo "SKIP: test-xend: needs root (network and mount namespaces, mknod)"; finish; exit 0
fi
tools/host-deps.sh
if [ ! -f /usr/include/xenstore.h ]; then
  echo "SKIP: test-xend: Debian's libxen-dev (libxenstore) could not be installed"; finish; exit 0
fi
if ! command -v gcc >/dev/null; then
  echo "SKIP: test-xend: no C compiler for the tree's xen.lowlevel.xs"; finish; exit 0
fi
tools/venv.sh py27 >/dev/null; rc=$?
if [ $rc = 3 ]; then
  echo "SKIP: test-xend: no Python 2.7 (pyenv 2.7.18 or python2.7)"; finish; exit 0
fi
[ $rc = 0 ] || { echo "test-xend: the Python 2.7 venv failed"; finish; exit 1; }
py3=$(tools/venv.sh py3)/bin/python || exit 1
"$py3" tests/xend/scenarios.py "$@"
rc=$?
finish
exit $rc
