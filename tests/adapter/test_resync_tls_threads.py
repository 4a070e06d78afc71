"""TLS connections used by several threads at once (tls.SharedTLS).

The receiver's digest and refine threads send while its main thread reads
the same connection.  OpenSSL does not promise that to be safe on one SSL
object, so no two threads may be inside one at the same time; and since a
waiting thread never holds the lock, full-duplex traffic cannot deadlock.
Real sockets on 127.0.0.1, a real ResyncServer, a real certificate.
"""
from __future__ import absolute_import, division, print_function

import hashlib
import os
import socket
import ssl
import threading

import pytest

from tests.adapter.resync_util import copy, make_image, mutate, same, write_key
from xen_remus_ext.resync import api, tls
from xen_remus_ext.resync.transport import ResyncServer

MiB = 1 << 20
#: the SSLSocket methods that enter the SSL object
ENTRIES = ("send", "sendall", "recv", "recv_into", "read", "write", "pending", "shutdown", "unwrap")


class Overlap(object):
    """Records, per SSL socket, the most threads that were inside it at once."""

    def __init__(self):
        self.lock = threading.Lock()
        self.inside = {}
        self.most = {}
        self.calls = 0

    def wrap(self, name, fn):
        spy = self

        def entry(sock, *args, **kwargs):
            me = threading.current_thread()
            with spy.lock:
                now = spy.inside.setdefault(id(sock), {})
                now[me] = now.get(me, 0) + 1          # 2.7's sendall calls send: one thread, nested
                spy.most[id(sock)] = max(spy.most.get(id(sock), 0), len(now))
                spy.calls += 1
            try:
                return fn(sock, *args, **kwargs)
            finally:
                with spy.lock:
                    now[me] -= 1
                    if not now[me]:
                        del now[me]
        entry.__name__ = name
        return entry


@pytest.fixture
def overlap(monkeypatch):
    spy = Overlap()
    for name in ENTRIES:
        fn = getattr(ssl.SSLSocket, name, None)
        if fn is not None:
            monkeypatch.setattr(ssl.SSLSocket, name, spy.wrap(name, fn))
    return spy


def test_one_thread_at_a_time_in_each_ssl_object(tmp_path, overlap):
    """A checksum resync with many differing blocks: the receiver's digest and
    refine threads send DIGESTS and FINE while its main thread reads DATA."""
    src = make_image(str(tmp_path / "src.img"), 16 * MiB)
    dst = copy(src, str(tmp_path / "dst.img"))
    mutate(dst, 200, seed=11)
    key = write_key(str(tmp_path / "key"))
    srv = ResyncServer("127.0.0.1:0", key, {"d": dst}, cert=str(tmp_path / "cert.pem")).start()
    try:
        res = api.resync(src, "tcp://127.0.0.1:%d/d" % srv.address[1], key_file=key, mode="checksum",
                         compress="none")
    finally:
        srv.stop()
    assert same(src, dst) and res.bytes_sent > MiB
    assert overlap.calls > 100 and len(overlap.most) == 2           # both ends' SSL objects were watched
    assert max(overlap.most.values()) == 1, overlap.most


def _tls_pair(tmp_path):
    server = tls.ServerTLS(str(tmp_path / "cert.pem"))
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    c = socket.create_connection(lsock.getsockname())
    a, _ = lsock.accept()
    lsock.close()
    for s in (a, c):   # small buffers: writes block often, so the waits are exercised
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("s", server.accept(a, False, "test peer")[0]))
    t.start()
    client, _ = tls.client_wrap(c, "test peer")
    t.join(30)
    return out["s"], client


def test_full_duplex_from_two_threads_a_side_does_not_deadlock(tmp_path):
    """Each end writes 24 MiB from one thread while another thread reads the
    peer's 24 MiB: with a lock held across a blocking write, both writers
    would wait for readers that wait for the lock."""
    server, client = _tls_pair(tmp_path)
    assert isinstance(server, tls.SharedTLS) and isinstance(client, tls.SharedTLS)
    total = 24 * MiB
    blobs = {"s": os.urandom(MiB), "c": os.urandom(MiB)}
    got = {}
    errors = []

    def writer(sock, name):
        try:
            for i in range(total // MiB):
                sock.sendall(memoryview(blobs[name])[i % 7:] if i % 2 else blobs[name])
        except Exception as exc:     # reported by the assertion below
            errors.append(exc)

    def reader(sock, name, expect):
        h = hashlib.sha256()
        buf = bytearray(65536)
        n = 0
        try:
            while n < expect:
                k = sock.recv_into(memoryview(buf), min(len(buf), expect - n))
                if not k:
                    break
                h.update(memoryview(buf)[:k])
                n += k
        except Exception as exc:
            errors.append(exc)
        got[name] = (n, h.hexdigest())

    def expected(name):
        h = hashlib.sha256()
        n = 0
        for i in range(total // MiB):
            piece = blobs[name][i % 7:] if i % 2 else blobs[name]
            h.update(piece)
            n += len(piece)
        return n, h.hexdigest()

    threads = [threading.Thread(target=writer, args=(server, "s")),
               threading.Thread(target=writer, args=(client, "c")),
               threading.Thread(target=reader, args=(client, "s", expected("s")[0])),
               threading.Thread(target=reader, args=(server, "c", expected("c")[0]))]
    for t in threads:
        t.daemon = True
        t.start()
    for t in threads:
        t.join(120)
    alive = [t for t in threads if t.is_alive()]
    for s in (server, client):
        s.shutdown(socket.SHUT_RDWR)
        s.close()
    assert not alive, "deadlocked"
    assert not errors, errors
    assert got["s"] == expected("s") and got["c"] == expected("c")


def test_a_timeout_bounds_each_wait(tmp_path):
    server, client = _tls_pair(tmp_path)
    try:
        client.settimeout(0.3)
        with pytest.raises(socket.timeout):
            client.recv_into(bytearray(10), 10)       # the peer sends nothing
        client.settimeout(None)
        server.sendall(b"hello")
        buf = bytearray(5)
        assert client.recv_into(memoryview(buf), 5) == 5 and bytes(buf) == b"hello"
    finally:
        for s in (server, client):
            s.close()
