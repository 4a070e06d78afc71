"""Hostile peers on the resync TCP port: a real receiver (api.ResyncServer,
what ``xen-remus receive --listen`` runs) on 127.0.0.1, and raw TLS sockets
speaking the wire protocol (docs/protocol.md) wrongly on purpose.

Each case: refused with a clear log line, the target's bytes unchanged,
and the receiver still serving an honest sender afterwards.
"""
from __future__ import absolute_import, division, print_function

import binascii
import json
import logging
import os
import socket
import struct
import time

import pytest

from tests.adapter.resync_util import copy, make_image, mutate, same, write_key
from xen_remus_ext.resync import api, meta, tls
from xen_remus_ext.resync import protocol as P
from xen_remus_ext.resync.protocol import mac

SIZE = 1 << 20
KEY = b"0123456789abcdef0123456789abcdef"


@pytest.fixture
def rig(tmp_path, monkeypatch):
    monkeypatch.setenv("XEN_REMUS_STATE_DIR", str(tmp_path / "state"))
    key = write_key(str(tmp_path / "key"), KEY)
    src = make_image(str(tmp_path / "src.img"), SIZE)
    dst = copy(src, str(tmp_path / "dst.img"))
    mutate(src, 5, seed=3)
    other_src = make_image(str(tmp_path / "osrc.img"), SIZE)
    other = str(tmp_path / "other.img")
    with open(other, "wb") as f:
        f.truncate(SIZE)
    server = api.ResyncServer(("127.0.0.1", 0), key, {"d": dst, "o": other}).start()
    with open(dst, "rb") as f:
        before = f.read()

    class Rig(object):
        pass
    r = Rig()
    r.__dict__.update(key=key, src=src, dst=dst, other=other, other_src=other_src, server=server,
                      port=server.address[1], before=before)
    yield r
    server.stop()


def _unchanged(rig):
    with open(rig.dst, "rb") as f:
        return f.read() == rig.before


def _still_serving(rig):
    """An honest sender, on another export, gets a full and correct copy."""
    res = api.resync(rig.other_src, "tcp://127.0.0.1:%d/o" % rig.port, key_file=rig.key, mode="full")
    assert res.mode == "full"
    assert same(rig.other_src, rig.other)
    return True


def _connect(rig):
    """A TLS connection (the receiver's default), as a sender opens it; the
    certificate's fingerprint, which every MAC covers, goes to ``rig.binding``."""
    s = socket.create_connection(("127.0.0.1", rig.port), timeout=10)
    s, rig.binding = tls.client_wrap(s, "test")
    return s


def _send(sock, mtype, payload, length=None):
    n = len(payload) if length is None else length
    sock.sendall(P.HEADER.pack(mtype, 0, 0, n) + payload)


def _send_json(sock, mtype, obj):
    _send(sock, mtype, json.dumps(obj).encode("utf-8"))


def _recv(sock):
    hdr = b""
    while len(hdr) < P.HEADER.size:
        k = sock.recv(P.HEADER.size - len(hdr))
        if not k:
            return None, None
        hdr += k
    mtype, _, _, n = P.HEADER.unpack(hdr)
    body = b""
    while len(body) < n:
        k = sock.recv(n - len(body))
        if not k:
            break
        body += k
    return mtype, body


def _drain_until_closed(sock, timeout=10):
    """Records until the receiver closes; :returns: the ERROR text, if any."""
    sock.settimeout(timeout)
    err = None
    while True:
        try:
            mtype, body = _recv(sock)
        except socket.timeout:
            raise AssertionError("the receiver kept the connection open")
        except socket.error:
            return err
        if mtype is None:
            return err
        if mtype == P.ERROR:
            err = json.loads(body.decode("utf-8"))["error"]


def _hello(sock, export="d", nonce=None, **extra):
    nonce = nonce or os.urandom(16)
    obj = {"magic": P.MAGIC, "versions": [1], "digests": ["sha256"], "nonce": binascii.hexlify(nonce).decode(),
           "export": export}
    obj.update(extra)
    _send_json(sock, P.HELLO, obj)
    return nonce


def _authenticated(rig, export="d"):
    """A socket past HELLO/AUTH/INFO with the right key.  :returns: (sock, info)."""
    s = _connect(rig)
    nonce_c = _hello(s, export)
    mtype, body = _recv(s)
    assert mtype == P.HELLO
    nonce_s = binascii.unhexlify(json.loads(body.decode("utf-8"))["nonce"])
    _send_json(s, P.AUTH, {"mac": binascii.hexlify(mac(KEY, "client", nonce_s, nonce_c,
                                                       export.encode("utf-8"), rig.binding)).decode()})
    assert _recv(s)[0] == P.AUTH
    mtype, body = _recv(s)
    assert mtype == P.INFO
    return s, json.loads(body.decode("utf-8"))


def _start_full(rig, s, info):
    src = meta.ensure(rig.src, SIZE).to_dict()
    _send_json(s, P.START, {"mode": "full", "block_size": 65536, "source": src, "salt": "00" * 16,
                            "resume": False})
    mtype, body = _recv(s)
    assert mtype == P.START, body


def _log_has(caplog, *words):
    """The receiver logs after it closed the connection: wait a little."""
    deadline = time.time() + 5
    while True:
        text = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
        if all(w in text for w in words) or time.time() > deadline:
            return all(w in text for w in words), text
        time.sleep(0.02)


def test_wrong_key_is_refused(rig, caplog):
    caplog.set_level(logging.INFO)
    s = _connect(rig)
    nonce_c = _hello(s)
    mtype, body = _recv(s)
    nonce_s = binascii.unhexlify(json.loads(body.decode("utf-8"))["nonce"])
    bad = mac(b"not-the-key-at-all-not-the-key!!", "client", nonce_s, nonce_c, b"d", rig.binding)
    _send_json(s, P.AUTH, {"mac": binascii.hexlify(bad).decode()})
    err = _drain_until_closed(s)
    assert err and "authentication failed" in err
    ok, text = _log_has(caplog, "authentication failed", "127.0.0.1")
    assert ok, text
    assert _unchanged(rig) and _still_serving(rig)
    # one warning for the refused connection, not one per layer (the audit line comes last)
    deadline = time.time() + 5
    while not any("receive session end" in r.getMessage() for r in caplog.records) and time.time() < deadline:
        time.sleep(0.02)
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum("authentication failed" in m for m in warned) == 1, warned


def test_wrong_key_through_the_api(rig, tmp_path):
    bad = write_key(str(tmp_path / "bad.key"), b"another key entirely, 32 bytes!!")
    with pytest.raises(Exception) as exc:
        api.resync(rig.src, "tcp://127.0.0.1:%d/d" % rig.port, key_file=bad)
    assert "authentication" in str(exc.value) or "key" in str(exc.value)
    assert _unchanged(rig) and _still_serving(rig)


def test_replayed_handshake_is_refused(rig, caplog):
    """Record an honest client's HELLO and AUTH, replay them byte for byte."""
    s = _connect(rig)
    nonce_c = os.urandom(16)
    hello = {"magic": P.MAGIC, "versions": [1], "digests": ["sha256"],
             "nonce": binascii.hexlify(nonce_c).decode(), "export": "d"}
    _send_json(s, P.HELLO, hello)
    nonce_s = binascii.unhexlify(json.loads(_recv(s)[1].decode("utf-8"))["nonce"])
    auth = {"mac": binascii.hexlify(mac(KEY, "client", nonce_s, nonce_c, b"d", rig.binding)).decode()}
    _send_json(s, P.AUTH, auth)
    assert _recv(s)[0] == P.AUTH
    s.close()
    r = _connect(rig)
    _send_json(r, P.HELLO, hello)
    mtype, body = _recv(r)
    assert binascii.unhexlify(json.loads(body.decode("utf-8"))["nonce"]) != nonce_s   # fresh challenge
    _send_json(r, P.AUTH, auth)
    err = _drain_until_closed(r)
    assert err and "authentication failed" in err
    assert _log_has(caplog, "authentication failed")[0]
    assert _unchanged(rig) and _still_serving(rig)


@pytest.mark.parametrize("mtype,length", [(P.HELLO, 0xFFFFFFFF), (P.DATA, P.LIMITS[P.DATA] + 1),
                                          (P.HELLO, P.JSON_MAX + 1), (0x7E, 10)])
def test_oversized_negative_or_unknown_lengths_are_refused_before_reading(rig, caplog, mtype, length):
    """0xFFFFFFFF is -1 as a signed 32-bit length."""
    s = _connect(rig)
    s.sendall(P.HEADER.pack(mtype, 0, 0, length))      # no payload follows: nothing may wait for it
    err = _drain_until_closed(s)
    assert err and ("expected at most" in err or "known type" in err), err
    assert _log_has(caplog, "record")[0]
    assert _unchanged(rig) and _still_serving(rig)


@pytest.mark.parametrize("export", ["../d", "../../etc/passwd", "/etc/passwd", "d/../d", ".", ""])
def test_export_names_with_dotdot_are_refused(rig, caplog, export):
    with pytest.raises(Exception) as exc:
        _authenticated(rig, export)
    assert _log_has(caplog, "export")[0]
    assert "export" in str(exc.value) or "AssertionError" in repr(exc.value)
    assert not os.path.exists(os.path.join(os.path.dirname(rig.dst), "..", "d"))
    assert _unchanged(rig) and _still_serving(rig)


def test_export_name_cannot_be_given_with_a_slash_on_the_cli():
    from xen_remus_ext.cli.resync_cmd import parse_exports
    from xen_remus_ext.errors import ValidationError
    with pytest.raises(ValidationError):
        parse_exports(["../x=/tmp/x"])


@pytest.mark.parametrize("record", ["data-past-end", "data-huge-offset", "zero-past-end", "zero-wraps",
                                    "mark-past-end", "ranges-reversed"])
def test_writes_past_the_end_are_refused(rig, caplog, record):
    s, info = _authenticated(rig)
    assert info["size"] == SIZE
    _start_full(rig, s, info)
    if record == "data-past-end":
        _send(s, P.DATA, P.U64.pack(SIZE - 100) + b"X" * 4096)
    elif record == "data-huge-offset":
        _send(s, P.DATA, P.U64.pack((1 << 64) - 1) + b"X" * 16)
    elif record == "zero-past-end":
        _send(s, P.ZERO, P.U64U64.pack(SIZE - 4096, 8192))
    elif record == "zero-wraps":
        _send(s, P.ZERO, P.U64U64.pack(4096, (1 << 64) - 4096))
    elif record == "mark-past-end":
        _send(s, P.MARK, P.U64U64.pack(0, SIZE + 4096))
    else:
        _send(s, P.MARK, P.U64U64.pack(8192, 4096))
    err = _drain_until_closed(s)
    assert err and "expected" in err, err
    assert _log_has(caplog, "expected")[0]
    assert _unchanged(rig)
    m = meta.load(rig.dst)
    assert m is not None and not m.consistent        # an aborted write session never claims consistency
    assert _still_serving(rig)


def test_peer_that_stops_mid_record(rig, caplog):
    s, info = _authenticated(rig)
    _start_full(rig, s, info)
    s.sendall(P.HEADER.pack(P.DATA, 0, 0, 8 + 4096) + P.U64.pack(0) + b"Y" * 100)
    s.shutdown(socket.SHUT_WR)
    _drain_until_closed(s)
    deadline = time.time() + 5
    while time.time() < deadline and not _log_has(caplog, "connection closed")[0]:
        time.sleep(0.02)
    assert _log_has(caplog, "connection closed")[0] or any("went away" in r.getMessage() for r in caplog.records)
    assert _unchanged(rig)
    assert not meta.load(rig.dst).consistent
    assert _still_serving(rig)
    # and the interrupted target is brought up to date by an honest rerun
    api.resync(rig.src, "tcp://127.0.0.1:%d/d" % rig.port, key_file=rig.key)
    assert same(rig.src, rig.dst) and meta.load(rig.dst).consistent


def test_a_stalled_peer_does_not_block_others(rig):
    """A peer that sends half a header and then nothing keeps its own
    thread, not the receiver."""
    s = _connect(rig)
    s.sendall(P.HEADER.pack(P.HELLO, 0, 0, 50)[:5])
    try:
        assert _still_serving(rig)
        api.resync(rig.src, "tcp://127.0.0.1:%d/d" % rig.port, key_file=rig.key)
        assert same(rig.src, rig.dst)
    finally:
        s.close()


@pytest.mark.parametrize("hello", [
    {"magic": P.MAGIC, "versions": 5, "nonce": "00" * 16, "export": "d"},
    {"magic": P.MAGIC, "versions": [1], "digests": 7, "nonce": "00" * 16, "export": "d"},
    {"magic": P.MAGIC, "versions": [1], "nonce": 12345, "export": "d"},
    {"magic": P.MAGIC, "versions": [1], "nonce": "00" * 16, "export": ["d"]},
    {"magic": P.MAGIC, "versions": [[1]], "nonce": "00" * 16, "export": "d"},
    {"magic": P.MAGIC, "versions": [1], "nonce": "zz" * 16, "export": "d"},
    {"magic": P.MAGIC, "versions": [True], "nonce": "00" * 16, "export": "d"},
    {"magic": "something else", "versions": [1], "nonce": "00" * 16, "export": "d"},
])
def test_malformed_hello_fields_are_refused_cleanly(rig, caplog, hello):
    """Wrong JSON types: a clear refusal (ERROR record + log line), never a
    traceback in the connection thread."""
    s = _connect(rig)
    _send_json(s, P.HELLO, hello)
    err = None
    while True:
        mtype, body = _recv(s)
        if mtype is None:
            break
        if mtype == P.ERROR:
            err = json.loads(body.decode("utf-8"))["error"]
    assert err, "no ERROR record for %r" % (hello,)
    assert _log_has(caplog, "receiver")[0]
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert _unchanged(rig) and _still_serving(rig)


def test_bad_start_fields_are_refused_cleanly(rig, caplog):
    s, info = _authenticated(rig)
    _send_json(s, P.START, {"mode": "full", "block_size": 65536, "source": {"disk": 1, "size": "x"},
                            "salt": 5})
    err = _drain_until_closed(s)
    assert err and "expected" in err
    assert _unchanged(rig) and _still_serving(rig)


def test_header_struct_is_what_the_tests_assume():
    assert P.HEADER.format in ("!BBHI", b"!BBHI") and struct.calcsize("!BBHI") == 8
