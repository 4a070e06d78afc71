"""TLS on the TCP transport: on by default, keyed by the shared key file.

Real sockets on 127.0.0.1, a real receiver (ResyncServer, what ``receive
--listen`` runs), relays in threads that record or intercept the traffic.
Each refusal happens before any disk data crosses, with the target's bytes
and metadata untouched.
"""
from __future__ import absolute_import, division, print_function

import os
import select
import socket
import stat
import subprocess
import sys
import threading

import pytest

from tests.adapter.resync_util import copy, make_image, mutate, same, write_key
from xen_remus_ext.errors import ResyncError
from xen_remus_ext.resync import api, meta, tls
from xen_remus_ext.resync.transport import ResyncServer

MiB = 1 << 20
#: a line that occurs in the source image and never in TLS ciphertext
MARKER = b"xen-remus clear-text marker 0123456789 " * 100


@pytest.fixture
def rig(tmp_path):
    src = make_image(str(tmp_path / "src.img"), 2 * MiB)
    with open(src, "r+b") as f:
        f.seek(MiB)
        f.write(MARKER)
    dst = copy(src, str(tmp_path / "dst.img"))
    mutate(dst, 4, seed=9)
    with open(dst, "r+b") as f:
        f.seek(MiB)
        f.write(b"\0" * len(MARKER))
    key = write_key(str(tmp_path / "key"))
    srv = ResyncServer("127.0.0.1:0", key, {"d": dst}, cert=str(tmp_path / "cert.pem")).start()
    yield srv, src, dst, key, tmp_path
    srv.stop()


class Relay(object):
    """Accepts one connection at a time and forwards it to ``port``, keeping
    what went through.  ``wrap``: optional (client_side_sock, server_side_sock)
    -> the same pair, e.g. to terminate TLS in the middle."""

    def __init__(self, port, wrap=None):
        self.port = port
        self.wrap = wrap
        self.seen = bytearray()
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(4)
        self.address = self.lsock.getsockname()
        self.errors = []
        t = threading.Thread(target=self._serve)
        t.daemon = True
        t.start()

    def _serve(self):
        while True:
            try:
                a, _ = self.lsock.accept()
            except (OSError, socket.error):
                return
            b = socket.create_connection(("127.0.0.1", self.port))
            try:
                if self.wrap:
                    a, b = self.wrap(a, b)
                self._pump(a, b)
            except Exception as exc:  # noqa: BLE001 - a test relay reports, never dies silently
                self.errors.append(exc)
            finally:
                a.close()
                b.close()

    def _pump(self, a, b):
        peer = {a: b, b: a}
        while True:
            ready = [s for s in (a, b) if getattr(s, "pending", lambda: 0)()] or \
                select.select([a, b], [], [], 10)[0]
            if not ready:
                return
            for s in ready:
                try:
                    data = s.recv(65536)
                except (OSError, socket.error):
                    return
                if not data:
                    return
                self.seen.extend(data)
                peer[s].sendall(data)

    def close(self):
        self.lsock.close()


def url(port):
    return "tcp://127.0.0.1:%d/d" % port


def test_tcp_is_encrypted_by_default(rig):
    srv, src, dst, key, _ = rig
    relay = Relay(srv.address[1])
    try:
        # uncompressed, so that only TLS can hide the marker
        res = api.resync(src, url(relay.address[1]), key_file=key, mode="checksum", compress="none")
    finally:
        relay.close()
    assert same(src, dst) and res.bytes_sent > len(MARKER)
    assert bytes(MARKER[:64]) not in bytes(relay.seen)          # the marker crossed, encrypted
    assert bytearray(relay.seen)[0] == 0x16                       # a TLS handshake opened it
    assert meta.compare(meta.load(src), meta.load(dst)) == meta.IDENTICAL


def test_plaintext_only_when_both_ends_ask(rig, tmp_path):
    srv, src, dst, key, _ = rig
    before = open(dst, "rb").read()
    with pytest.raises(ResyncError) as ei:
        api.resync(src, url(srv.address[1]), key_file=key, plaintext=True)
    assert "accepts only TLS" in str(ei.value)
    assert open(dst, "rb").read() == before and meta.load(dst) is None
    # a receiver that allows it, and a relay that sees the clear text (uncompressed:
    # zstd would hide the marker as well as TLS does)
    open_srv = ResyncServer("127.0.0.1:0", key, {"d": dst}, cert=str(tmp_path / "cert.pem"), plaintext=True).start()
    relay = Relay(open_srv.address[1])
    try:
        api.resync(src, url(relay.address[1]), key_file=key, plaintext=True, mode="full", compress="none")
    finally:
        relay.close()
        open_srv.stop()
    assert same(src, dst) and bytes(MARKER[:64]) in bytes(relay.seen)


def test_wrong_key_refused_before_any_data(rig, tmp_path):
    srv, src, dst, key, _ = rig
    before = open(dst, "rb").read()
    bad = write_key(str(tmp_path / "bad"), b"not the receiver's key, 32 bytes")
    with pytest.raises(ResyncError) as ei:
        api.resync(src, url(srv.address[1]), key_file=bad, mode="full")
    assert "authentication failed" in str(ei.value)
    assert open(dst, "rb").read() == before and meta.load(dst) is None


def test_man_in_the_middle_with_its_own_certificate_is_refused(rig, tmp_path):
    """A relay terminating TLS with another certificate, connected onwards
    over TLS: both ends hold the right key, and still nothing crosses."""
    srv, src, dst, key, _ = rig
    before = open(dst, "rb").read()
    mitm = tls.ServerTLS(str(tmp_path / "mitm.pem"))
    assert mitm.fingerprint != srv.tls.fingerprint

    def intercept(a, b):
        a, _ = mitm.accept(a, False, "victim")
        b, _ = tls.client_wrap(b, "real receiver")
        return a, b
    relay = Relay(srv.address[1], wrap=intercept)
    try:
        with pytest.raises(ResyncError) as ei:
            api.resync(src, url(relay.address[1]), key_file=key, mode="full")
    finally:
        relay.close()
    assert "another TLS certificate" in str(ei.value) or "man in the middle" in str(ei.value)
    assert bytes(MARKER[:64]) not in bytes(relay.seen)
    assert open(dst, "rb").read() == before and meta.load(dst) is None


def test_sender_against_a_receiver_without_tls(tmp_path):
    """An older receiver answers a TLS ClientHello with a plaintext ERROR."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)

    def old_receiver():
        c, _ = lsock.accept()
        c.recv(1024)
        c.sendall(b"\x3f\0\0\0\0\0\0\x02{}")
        c.close()
    t = threading.Thread(target=old_receiver)
    t.daemon = True
    t.start()
    src = make_image(str(tmp_path / "src.img"), MiB)
    key = write_key(str(tmp_path / "key"))
    with pytest.raises(ResyncError) as ei:
        api.resync(src, url(lsock.getsockname()[1]), key_file=key)
    assert "TLS handshake failed" in str(ei.value) and "--plaintext" in str(ei.value)
    lsock.close()


def test_gen_cert_command_and_a_bad_certificate(tmp_path):
    path = str(tmp_path / "tls" / "r.pem")
    os.mkdir(str(tmp_path / "tls"))
    env = dict(os.environ, XEN_REMUS_STATE_DIR=str(tmp_path / "state"))
    out = subprocess.check_output([sys.executable, "-m", "xen_remus_ext", "receive", "--gen-cert",
                                   "--cert", path], env=env).decode("utf-8")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert tls.pretty(tls.ServerTLS(path).fingerprint) in out
    with open(path, "w") as f:
        f.write("not a certificate\n")
    key = write_key(str(tmp_path / "key"))
    with pytest.raises(ResyncError) as ei:
        ResyncServer("127.0.0.1:0", key, {"d": path}, cert=path)
    assert path in str(ei.value) and "--gen-cert" in str(ei.value)


def test_gen_cert_refuses_a_missing_directory(tmp_path):
    """An administrator's typo in --cert creates no directory."""
    path = str(tmp_path / "nonexist" / "x.pem")
    env = dict(os.environ, XEN_REMUS_STATE_DIR=str(tmp_path / "state"))
    p = subprocess.Popen([sys.executable, "-m", "xen_remus_ext", "receive", "--gen-cert", "--cert", path],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out, err = p.communicate()
    err = err.decode("utf-8", "replace")
    assert p.returncode == 1 and "Traceback" not in err
    assert path in err and "expected its directory %s to exist" % os.path.dirname(path) in err, err
    assert not os.path.exists(os.path.dirname(path))
    key = write_key(str(tmp_path / "key"))
    with pytest.raises(ResyncError) as ei:       # the listener's certificate path alike
        ResyncServer("127.0.0.1:0", key, {"d": key}, cert=path)
    assert os.path.dirname(path) in str(ei.value) and not os.path.exists(os.path.dirname(path))


def test_the_default_certificate_directory_is_created(tmp_path):
    env = dict(os.environ, XEN_REMUS_STATE_DIR=str(tmp_path / "state"))
    out = subprocess.check_output([sys.executable, "-m", "xen_remus_ext", "receive", "--gen-cert"],
                                  env=env).decode("utf-8")
    path = os.path.join(str(tmp_path / "state"), "tls", "receiver.pem")
    assert out.startswith(path) and stat.S_IMODE(os.stat(path).st_mode) == 0o600
