"""Resync over real TCP on 127.0.0.1 against a ResyncServer (``receive --listen``).

(TLS itself, the default, is covered by test_resync_tls.py.)

Authentication (HMAC-SHA256 challenge-response), export names from the
receiver's own configuration only, and malformed / oversized /
unauthenticated input: a clear error, the connection closed, the target
untouched (bytes and metadata).
"""
from __future__ import absolute_import, division, print_function

import json
import os
import socket
import struct

import pytest

from tests.adapter.resync_util import copy, make_image, mutate, same, write_key
from xen_remus_ext.errors import ResyncError
from xen_remus_ext.resync import api, meta
from xen_remus_ext.resync import protocol as P
from xen_remus_ext.resync.transport import ResyncServer

MiB = 1 << 20


@pytest.fixture
def server(tmp_path):
    src = make_image(str(tmp_path / "src.img"), 4 * MiB)
    dst = copy(src, str(tmp_path / "dst.img"))
    key = write_key(str(tmp_path / "key"))
    # plaintext allowed: the raw-socket tests below speak the records in clear;
    # api.resync still uses TLS (its default)
    srv = ResyncServer("127.0.0.1:0", key, {"disk0": dst}, plaintext=True).start()
    yield srv, src, dst, key
    srv.stop()


def url(srv, export="disk0"):
    return "tcp://127.0.0.1:%d/%s" % (srv.address[1], export)


def test_tcp_checksum_and_full(server):
    srv, src, dst, key = server
    mutate(dst, 5, seed=2)
    res = api.resync(src, url(srv), key_file=key, verify=True)
    assert same(src, dst) and res.verified and res.mode == "checksum"
    assert res.bytes_sent < 2 * MiB
    mutate(dst, 3, seed=3)
    res = api.resync(src, url(srv), key_file=key, mode="full")
    assert same(src, dst) and res.bytes_sent >= 4 * MiB
    assert meta.compare(meta.load(src), meta.load(dst)) == meta.IDENTICAL


def test_wrong_key_rejected_target_untouched(server, tmp_path):
    srv, src, dst, key = server
    mutate(dst, 2, seed=1)
    before = open(dst, "rb").read()
    bad = write_key(str(tmp_path / "bad"), b"another-key-another-key-0000")
    with pytest.raises(ResyncError) as ei:
        api.resync(src, url(srv), key_file=bad, mode="full")
    assert "authentication failed" in str(ei.value)
    assert open(dst, "rb").read() == before and meta.load(dst) is None


def test_unknown_export_and_missing_key(server):
    srv, src, dst, key = server
    with pytest.raises(ResyncError) as ei:
        api.resync(src, url(srv, "nope"), key_file=key)
    assert "export" in str(ei.value)
    with pytest.raises(ResyncError) as ei:
        api.resync(src, url(srv), key_file=None)
    assert "--key" in str(ei.value)


def test_key_file_must_be_owner_only(tmp_path):
    key = write_key(str(tmp_path / "k"))
    os.chmod(key, 0o644)
    with pytest.raises(ResyncError) as ei:
        ResyncServer("127.0.0.1:0", key, {"a": "/dev/null"})
    assert "0644" in str(ei.value)


def raw(srv):
    s = socket.create_connection(("127.0.0.1", srv.address[1]), timeout=10)
    return s


def read_record(s):
    hdr = b""
    while len(hdr) < 8:
        b = s.recv(8 - len(hdr))
        if not b:
            return None, None
        hdr += b
    t, _, _, n = P.HEADER.unpack(hdr)
    body = b""
    while len(body) < n:
        b = s.recv(n - len(body))
        if not b:
            break
        body += b
    return t, body


def expect_error_then_close(s, word):
    t, body = read_record(s)
    while t is not None and t != P.ERROR:
        t, body = read_record(s)
    assert t == P.ERROR, "expected an ERROR record"
    assert word in json.loads(body.decode("utf-8"))["error"]
    assert s.recv(1) == b""          # and the connection is closed
    s.close()


def hello(export="disk0"):
    return P.encode_json({"magic": P.MAGIC, "versions": [1], "digests": ["xxh3-128"],
                          "nonce": "00" * 16, "export": export})


@pytest.mark.parametrize("garbage,word", [
    (struct.pack("!BBHI", 0x7E, 0, 0, 0), "known type"),
    (struct.pack("!BBHI", P.HELLO, 0, 0, 1 << 30), "at most"),
    (struct.pack("!BBHI", P.HELLO, 1, 0, 0), "flags"),
    (struct.pack("!BBHI", P.HELLO, 0, 0, 5) + b"{{{{{", "JSON"),
    (struct.pack("!BBHI", P.DATA, 0, 0, 16) + b"\0" * 16, "HELLO"),
])
def test_malformed_input_rejected_target_untouched(server, garbage, word):
    srv, src, dst, key = server
    before = open(dst, "rb").read()
    s = raw(srv)
    s.sendall(garbage)
    expect_error_then_close(s, word)
    assert open(dst, "rb").read() == before and meta.load(dst) is None


def test_unauthenticated_start_rejected(server):
    srv, src, dst, key = server
    before = open(dst, "rb").read()
    s = raw(srv)
    body = hello()
    s.sendall(P.HEADER.pack(P.HELLO, 0, 0, len(body)) + body)
    t, _ = read_record(s)
    assert t == P.HELLO
    start = P.encode_json({"mode": "full", "block_size": 65536})
    s.sendall(P.HEADER.pack(P.START, 0, 0, len(start)) + start)
    expect_error_then_close(s, "AUTH")
    assert open(dst, "rb").read() == before and meta.load(dst) is None


def test_data_beyond_the_end_rejected_before_writing(server):
    """An authenticated but malicious sender: DATA past the end of the export."""
    from xen_remus_ext.resync.sender import SenderSession
    from xen_remus_ext.resync.transport import connect
    srv, src, dst, key = server
    before = open(dst, "rb").read()
    conn = connect(url(srv), key_file=key)
    sess = SenderSession(conn)
    sess.handshake()
    m = meta.ensure(src, 4 * MiB)
    sess.chan.send_json(P.START, {"mode": "full", "block_size": 65536, "salt": "00" * 16,
                                  "source": m.to_dict(), "resume": False})
    sess.chan.recv_json(P.START)
    sess.chan.send(P.DATA, P.U64.pack(4 * MiB - 10), b"x" * 100)
    with pytest.raises(ResyncError) as ei:
        sess.chan.recv_json(P.RESULT)
    assert "end within" in str(ei.value)
    conn.close()
    assert open(dst, "rb").read() == before
    assert meta.load(dst).consistent is False      # marked before any write; never marked synced


def test_idle_stranger_is_dropped(server):
    srv, src, dst, key = server
    srv.handshake_seconds = 0.3
    s = raw(srv)
    s.settimeout(5)
    t, _ = read_record(s)          # nothing sent: the receiver gives up and closes
    assert t in (None, P.ERROR)
    s.close()


def test_dead_peer_detection_is_set():
    from xen_remus_ext.resync.transport import DEAD_PEER_SECONDS, tune_socket
    s = socket.socket()
    try:
        tune_socket(s)
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert s.getsockopt(socket.IPPROTO_TCP, getattr(socket, "TCP_USER_TIMEOUT", 18)) == DEAD_PEER_SECONDS * 1000
    finally:
        s.close()
