"""Hostile JSON in HELLO and START: the receiver answers with a clear error
(a XenRemusError, an ERROR record) and leaves the target untouched; never an
uncaught exception.  Runs a real Receiver on a real image file through an
in-process channel."""
from __future__ import absolute_import, division, print_function

import os
import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from xen_remus_ext.errors import XenRemusError
from xen_remus_ext.resync import protocol as P
from xen_remus_ext.resync.receiver import Receiver

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8)

HELLO_KEYS = ["magic", "versions", "digests", "nonce", "export"]
START_KEYS = ["mode", "block_size", "digest", "salt", "rate", "source", "discard_target", "resume"]
GOOD_HELLO = {"magic": P.MAGIC, "versions": [1], "digests": ["xxh3-128"], "nonce": "ab" * 16, "export": ""}


def run_receiver(path, records):
    s, r = P.local_pair()
    outcome = []

    def go():
        try:
            Receiver(r, {"": path}).run()
            outcome.append("ok")
        except XenRemusError as exc:
            outcome.append(exc)
    t = threading.Thread(target=go)
    t.start()
    for mtype, obj in records:
        try:
            s.send_json(mtype, obj)
        except XenRemusError:
            break
    s.close()
    t.join(10)
    assert not t.is_alive()
    assert outcome, "the receiver died of an exception other than XenRemusError"
    return outcome[0]


def image(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("fz") / "t.img")
    with open(path, "wb") as f:
        f.write(os.urandom(1 << 16))
    return path


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.sampled_from(HELLO_KEYS), json_values, max_size=5))
def test_hostile_hello(tmp_path_factory, fields):
    path = image(tmp_path_factory)
    before = open(path, "rb").read()
    hello = dict(GOOD_HELLO)
    hello.update(fields)
    run_receiver(path, [(P.HELLO, hello)])
    assert open(path, "rb").read() == before


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.sampled_from(START_KEYS), json_values, max_size=8))
def test_hostile_start(tmp_path_factory, fields):
    path = image(tmp_path_factory)
    before = open(path, "rb").read()
    out = run_receiver(path, [(P.HELLO, GOOD_HELLO), (P.START, fields)])
    assert out == "ok" or isinstance(out, XenRemusError)
    assert open(path, "rb").read() == before
