"""Our own bugs show as bugs; the peer's malformed input as the peer's ProtocolError.

A TypeError/KeyError raised by our code is not relabelled "malformed record
from the peer": the sender gets the exception itself, and a receiver tells
its sender that it failed internally (and keeps the traceback in its log).
"""
from __future__ import absolute_import, division, print_function

import pytest

from tests.adapter.resync_util import copy, make_image, mutate
from xen_remus_ext.errors import ProtocolError, ResyncError
from xen_remus_ext.resync import api, receiver

MiB = 1 << 20


@pytest.fixture
def pair(tmp_path):
    src = make_image(str(tmp_path / "src.img"), 2 * MiB)
    dst = copy(src, str(tmp_path / "dst.img"))
    mutate(dst, 2, seed=1)
    return src, dst


def test_a_bug_of_the_sender_is_not_blamed_on_the_receiver(pair, monkeypatch):
    src, dst = pair

    def broken(*a):
        raise KeyError("our own bug")
    monkeypatch.setattr(api.meta, "compare", broken)
    with pytest.raises(KeyError) as ei:
        api.resync(src, dst, mode="full")
    assert "our own bug" in str(ei.value)


def test_a_bug_of_the_receiver_reaches_the_sender_as_internal(pair, monkeypatch):
    src, dst = pair

    def broken(rate):
        raise TypeError("receiver bug")
    monkeypatch.setattr(receiver, "TokenBucket", broken)
    with pytest.raises(ResyncError) as ei:
        api.resync(src, dst, mode="full")      # local receiver thread: same process
    msg = str(ei.value)
    assert "receiver internal error: TypeError: receiver bug" in msg
    assert "malformed" not in msg and not isinstance(ei.value, ProtocolError)


def test_malformed_peer_input_is_still_a_protocol_error(pair):
    from xen_remus_ext.resync import protocol as P
    from xen_remus_ext.resync import meta
    src, dst = pair
    s, r = P.local_pair()
    import threading
    rec = receiver.Receiver(r, {"": dst})
    errors = []

    def serve():
        try:
            rec.run()
        except ResyncError as exc:
            errors.append(exc)
    t = threading.Thread(target=serve)
    t.start()
    s.send_json(P.HELLO, {"magic": P.MAGIC, "versions": [1], "digests": [], "nonce": "ab" * 16, "export": ""})
    s.recv_json(P.HELLO)
    s.recv_json(P.INFO)
    m = meta.ensure(src, 2 * MiB).to_dict()
    m["size"] = 1e400                           # JSON Infinity: int() of it overflows
    s.send_json(P.START, {"mode": "full", "block_size": 65536, "source": m, "salt": "00" * 16})
    with pytest.raises(ResyncError) as ei:
        s.recv_json(P.START)
    t.join(10)
    assert "START source" in str(ei.value)
    assert errors and isinstance(errors[0], ProtocolError)
