"""Scenario a (xenstore half): the XenStore contract suite of
tests/adapter/test_contract_xenstore.py, run unchanged against Debian's
xenstored in a real dom0 through PyxsXenStore (python3-pyxs from Debian).

Only the ``pair`` fixture is replaced: both handles are PyxsXenStore on the
daemon's socket.  Keys the contract writes under /local/domain/<n> for n
with no such domain are removed afterwards, so that a later domain with
that id finds a clean directory.
"""
from __future__ import absolute_import, division, print_function

import os

import pytest

from tests.adapter.test_contract_xenstore import *  # noqa: F401,F403 (the contract's tests)
from xen_remus_ext.toolstack.xenstore import PyxsXenStore

SOCKET = os.environ.get("XENSTORED_PATH", "/var/run/xenstored/socket")


def _live_domids():
    import subprocess
    out = subprocess.check_output(["xl", "list"]).decode()
    return set(line.split()[1] for line in out.splitlines()[1:] if len(line.split()) > 1)


@pytest.fixture
def pair():  # noqa: F811 (replaces the contract's fixture on purpose)
    if not os.path.exists(SOCKET):
        pytest.fail("no xenstored socket at %s" % SOCKET)
    others = []

    def other():
        o = PyxsXenStore(SOCKET)
        others.append(o)
        return o
    store = PyxsXenStore(SOCKET)
    try:
        yield store, other
    finally:
        live = _live_domids()
        for domid in store.list("/local/domain"):
            if domid not in live:
                store.delete("/local/domain/%s" % domid)
        for o in others:
            o.close()
        store.close()


def test_real_daemon_answers():
    with PyxsXenStore(SOCKET) as xs:
        assert xs.read("/local/domain/0/name") == "Domain-0"
        assert "0" in xs.list("/local/domain")
