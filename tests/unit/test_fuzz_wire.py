"""Fuzzing the resync wire-protocol decoder (docs/protocol.md) with hypothesis.

Contract: random bytes on the wire end in whole records (known type, length
within the type's bound) or a ProtocolError; the payload decoders (JSON,
RANGES, DATA) return valid values or raise ProtocolError; a Receiver fed a
valid handshake then random records ends cleanly or with a XenRemusError,
within a time budget, and never writes outside its target's size.
"""
from __future__ import absolute_import, division, print_function

import os
import signal
import socket
import threading

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xen_remus_ext.errors import ProtocolError, XenRemusError
from xen_remus_ext.resync import meta
from xen_remus_ext.resync import protocol as P
from xen_remus_ext.resync.receiver import Receiver

FUZZ = settings(max_examples=80, deadline=None,
                suppress_health_check=[h for h in (getattr(HealthCheck, "too_slow", None),
                                                   getattr(HealthCheck, "function_scoped_fixture", None)) if h])
TYPES = sorted(P.LIMITS) + [0x00, 0x06, 0x7F, 0xFF]


class Hang(Exception):
    pass


def _alarm(*_):
    raise Hang()


class budget(object):
    def __init__(self, seconds=20):   # a hang never ends; 20 s tolerates a loaded machine
        self.seconds = seconds

    def __enter__(self):
        self.old = signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(self.seconds)

    def __exit__(self, *exc):
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self.old)


def record(mtype, payload, flags=0, reserved=0, length=None):
    return P.HEADER.pack(mtype, flags, reserved, len(payload) if length is None else length) + payload


records = st.builds(record, st.sampled_from(TYPES), st.binary(max_size=64),
                    st.sampled_from((0, 0, 0, 1, 255)), st.sampled_from((0, 0, 0, 1, 65535)),
                    st.one_of(st.none(), st.integers(0, 0xFFFFFFFF)))


@FUZZ
@given(st.lists(st.one_of(records, st.binary(max_size=40)), max_size=8))
def test_stream_decoder_gives_bounded_records_or_protocol_error(chunks):
    a, b = socket.socketpair()
    try:
        data = b"".join(chunks)
        t = threading.Thread(target=lambda: (a.sendall(data), a.shutdown(socket.SHUT_WR)))
        t.daemon = True
        t.start()
        chan = P.StreamChannel(sock=b, peer="fuzz")
        got = 0
        with budget():
            while True:
                try:
                    mtype, payload = chan.recv()
                except ProtocolError:
                    break
                assert mtype in P.LIMITS
                assert len(payload) <= P.LIMITS[mtype]
                got += P.HEADER.size + len(payload)
        assert got <= len(data)
        t.join(5)
    finally:
        a.close()
        b.close()


@FUZZ
@given(st.binary(max_size=200), st.integers(0, 1 << 40))
def test_ranges_decoder(payload, size):
    try:
        out = P.unpack_ranges(payload, size)
    except ProtocolError:
        return
    for s, e in out:
        assert 0 <= s < e <= size


@FUZZ
@given(st.binary(max_size=64))
def test_data_decoder(payload):
    try:
        off, data = P.split_data(payload)
    except ProtocolError:
        assert len(payload) < 8
        return
    assert off >= 0 and len(data) == len(payload) - 8


@FUZZ
@given(st.sampled_from(sorted(P.LIMITS)), st.one_of(st.binary(max_size=80),
                                                    st.text(max_size=40).map(lambda t: t.encode("utf-8"))))
def test_json_decoder(mtype, payload):
    try:
        obj = P.decode_json(mtype, payload)
    except ProtocolError:
        return
    assert isinstance(obj, dict)


SIZE = 1 << 16


def _session_records(draw_records):
    src = meta.DiskMeta("/fuzz/src", SIZE, True).to_dict()
    start = {"mode": "full", "block_size": 4096, "source": src, "salt": "00" * 16, "rate": 0,
             "discard_target": True, "resume": False}
    return [record(P.HELLO, P.encode_json({"magic": P.MAGIC, "versions": [1], "digests": [],
                                           "nonce": "ab" * 16, "export": ""})),
            record(P.START, P.encode_json(start))] + draw_records


body_records = st.one_of(
    st.builds(lambda off, n: record(P.DATA, P.U64.pack(off) + b"Z" * n),
              st.integers(0, (1 << 64) - 1), st.integers(0, 5000)),
    st.builds(lambda off, n: record(P.ZERO, P.U64U64.pack(off, n)),
              st.integers(0, (1 << 64) - 1), st.integers(0, (1 << 64) - 1)),
    st.builds(lambda s, e: record(P.MARK, P.U64U64.pack(s, e)), st.integers(0, 1 << 20), st.integers(0, 1 << 20)),
    st.builds(lambda b: record(P.END, b), st.sampled_from((b"{}", b'{"commit": true}', b"[]", b"nul", b""))),
    records)


@FUZZ
@given(st.lists(body_records, max_size=6))
def test_receiver_survives_random_records(tmp_path_factory, body):
    d = tmp_path_factory.mktemp("wire")
    os.environ["XEN_REMUS_STATE_DIR"] = str(d / "state")
    try:
        target = str(d / "t.img")
        with open(target, "wb") as f:
            f.truncate(SIZE)
        a, b = socket.socketpair()
        outcome = []

        def serve():
            try:
                Receiver(P.StreamChannel(sock=b, peer="fuzz"), {"": target}).run()
                outcome.append("ok")
            except XenRemusError as exc:
                outcome.append(exc)
        t = threading.Thread(target=serve)
        t.daemon = True
        t.start()
        try:
            a.sendall(b"".join(_session_records(body)))
        except socket.error:
            pass                     # the receiver refused and closed early
        a.shutdown(socket.SHUT_WR)
        t.join(10)
        assert not t.is_alive(), "the receiver hung"
        assert outcome, "the receiver died of an exception other than XenRemusError"
        assert os.path.getsize(target) == SIZE, "a write went past the end of the target"
        a.close()
    finally:
        os.environ.pop("XEN_REMUS_STATE_DIR", None)


def test_the_fuzzed_session_prefix_is_a_valid_one(tmp_path, monkeypatch):
    """Not vacuous: the same prefix with one in-bounds DATA and END commits."""
    monkeypatch.setenv("XEN_REMUS_STATE_DIR", str(tmp_path / "state"))
    target = str(tmp_path / "t.img")
    with open(target, "wb") as f:
        f.truncate(SIZE)
    a, b = socket.socketpair()
    out = []
    t = threading.Thread(target=lambda: out.append(Receiver(P.StreamChannel(sock=b), {"": target}).run()))
    t.start()
    a.sendall(b"".join(_session_records([record(P.DATA, P.U64.pack(4096) + b"Q" * 4096),
                                         record(P.END, b'{"commit": true}'),
                                         record(P.BYE, b"")])))
    t.join(10)
    a.close()
    assert out == [None]
    with open(target, "rb") as f:
        data = f.read()
    assert data[4096:8192] == b"Q" * 4096 and data[:4096] == b"\0" * 4096
    assert meta.load(target).consistent
