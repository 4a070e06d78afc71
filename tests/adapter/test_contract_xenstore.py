"""One XenStore contract, held by the real adapter and by the in-memory fake.

Pairs: PyxsXenStore (real pyxs 0.4.1) on the xenstored double's Unix socket,
and tests/fakes/fake_xenstore.FakeXenStore.  The double stands in for the C
xenstored (no hypervisor here); test_xenstored.py holds it to real clients.
"""
from __future__ import absolute_import, division, print_function

import errno
import os
import shutil
import tempfile
import threading

import pytest

from tests.fakes.fake_xenstore import FakeXenStore
from xen_remus_ext.errors import ValidationError, XenStoreError
from xen_remus_ext.sim.xenstored import XenstoredServer
from xen_remus_ext import status_keys as status
from xen_remus_ext.ports import run_transaction
from xen_remus_ext.toolstack.xenstore import PyxsXenStore


@pytest.fixture(params=["pyxs+xenstored-double", "fake"])
def pair(request):
    """:returns: (store, make_other) - a second handle on the same store."""
    if request.param == "fake":
        store = FakeXenStore()
        yield store, lambda: store
        return
    d = tempfile.mkdtemp(prefix="xsc")
    srv = XenstoredServer(os.path.join(d, "socket")).start()
    others = []

    def other():
        o = PyxsXenStore(srv.socket_path)
        others.append(o)
        return o
    store = PyxsXenStore(srv.socket_path)
    try:
        yield store, other
    finally:
        for o in others:
            o.close()
        store.close()
        srv.stop()
        shutil.rmtree(d, ignore_errors=True)


def test_read_write_text(pair):
    xs, _ = pair
    xs.write("/local/domain/3/name", "guest")
    value = xs.read("/local/domain/3/name")
    assert value == u"guest" and isinstance(value, type(u""))
    assert xs.read("/local/domain/3") == ""           # parent created empty
    assert xs.read("/nope", "dflt") == "dflt"
    with pytest.raises(XenStoreError) as err:
        xs.read("/nope")
    assert err.value.errno == errno.ENOENT
    assert "/nope" in str(err.value)


def test_empty_values(pair):
    """pyxs 0.4.1 refuses b"" itself; the adapter must still store it."""
    xs, _ = pair
    xs.write("/e/k", "full")
    xs.write("/e/k", "")
    assert xs.read("/e/k") == ""
    xs.write("/e/new", "")
    assert xs.exists("/e/new")


def test_list_delete_exists(pair):
    xs, _ = pair
    for name in ("b", "a", "c"):
        xs.write("/l/%s/x" % name, "1")
    # the order is the daemon's: C xenstored keeps creation order, oxenstored
    # (Debian's default, seen on real Xen 4.17 in tests/xen) sorts; callers must not rely on it
    assert sorted(xs.list("/l")) == ["a", "b", "c"]
    assert xs.list("/l/b/x") == []
    xs.delete("/l/a")
    assert sorted(xs.list("/l")) == ["b", "c"]
    assert not xs.exists("/l/a/x") and xs.exists("/l/b/x")
    xs.delete("/l/missing")                        # parent exists: no error
    with pytest.raises(XenStoreError) as err:
        xs.delete("/no/such")
    assert err.value.errno == errno.ENOENT
    with pytest.raises(XenStoreError) as err:
        xs.list("/no/such")
    assert err.value.errno == errno.ENOENT


def test_invalid_path_and_value(pair):
    xs, _ = pair
    with pytest.raises(ValidationError):
        xs.write("/bad path", "x")
    with pytest.raises(ValidationError):
        xs.write("/ok", "line\nbreak")


def test_transaction_commits_atomically(pair):
    xs, other = pair
    with xs.transaction() as tx:
        tx.write("/t/a", "1")
        tx.write("/t/b", "2")
        assert tx.read("/t/a") == "1"
        assert other().read("/t/a", "absent") == "absent"
    assert (xs.read("/t/a"), xs.read("/t/b")) == ("1", "2")


def test_transaction_conflict_is_eagain(pair):
    xs, other = pair
    xs.write("/c/k", "0")
    with pytest.raises(XenStoreError) as err:
        with xs.transaction() as tx:
            tx.read("/c/k")
            tx.write("/c/k", "mine")
            other().write("/c/k", "theirs")
    assert err.value.errno == errno.EAGAIN
    assert xs.read("/c/k") == "theirs"


def test_transaction_rolls_back_on_exception(pair):
    xs, _ = pair
    with pytest.raises(RuntimeError):
        with xs.transaction() as tx:
            tx.write("/rb/k", "1")
            raise RuntimeError("boom")
    assert not xs.exists("/rb/k")


def test_run_transaction_retries_until_commit(pair):
    xs, other = pair
    xs.write("/n", "0")
    o = other()
    calls = []

    def incr(tx):
        n = int(tx.read("/n"))
        if len(calls) < 2:           # somebody else increments meanwhile, twice
            o.write("/n", str(int(o.read("/n")) + 1))
        calls.append(n)
        tx.write("/n", str(n + 1))
        return n + 1
    assert run_transaction(xs, incr) == 3
    assert xs.read("/n") == "3"
    assert calls == [0, 1, 2]


def test_watch_fires_on_registration_and_subtree(pair):
    xs, other = pair
    xs.write("/w/a", "1")
    stream = xs.watch("/w", "tok")
    try:
        assert stream.next_event(5) == ("/w", "tok")
        o = other()
        o.write("/w/a/b", "2")
        o.write("/elsewhere", "3")
        o.delete("/w/a")
        assert stream.next_event(5) == ("/w/a/b", "tok")
        assert stream.next_event(5) == ("/w/a", "tok")
        assert stream.next_event(0.2) is None
    finally:
        stream.close()
    other().write("/w/c", "after close")
    assert stream.next_event(0.2) is None


def test_watch_from_another_thread(pair):
    xs, other = pair
    stream = xs.watch("/thr", "t")
    got = []
    try:
        assert stream.next_event(5) == ("/thr", "t")
        th = threading.Thread(target=lambda: got.append(stream.next_event(5)))
        th.start()
        other().write("/thr/x", "1")
        th.join(10)
    finally:
        stream.close()
    assert got == [("/thr/x", "t")]


def test_status_keys_roundtrip(pair):
    xs, _ = pair
    assert status.read_status(xs, 7) is None
    written = status.write_status(xs, 7, role="primary", state="protected", generation=0xabc,
                                  last_checkpoint=1795512345.1254, lag=12.4)
    assert written == {"role": "primary", "state": "protected", "generation": "0000000000000abc",
                       "last-checkpoint": "1795512345.125", "lag": "12"}
    assert xs.read("/local/domain/7/remus-ext/role") == "primary"
    st = status.read_status(xs, 7)
    assert st == status.RemusStatus(7, "primary", "protected", "0000000000000abc", 1795512345.125, 12)
    status.write_status(xs, 7, state="failed-over", role="backup")
    st = status.read_status(xs, 7)
    assert (st.role, st.state, st.lag) == ("backup", "failed-over", 12)
    with pytest.raises(ValidationError):
        status.write_status(xs, 7, role="boss")
    status.clear_status(xs, 7)
    assert status.read_status(xs, 7) is None
