"""TLS for the TCP transport (adapter: sockets, files, the openssl command).

The receiver holds a self-signed certificate (``xen-remus receive
--gen-cert``; created on first ``--listen`` when missing).  The sender does
not check it against any authority: instead both ends put the SHA-256 of the
certificate the sender saw into the HMAC challenge-response of the shared
key (docs/protocol.md, "Encryption").  A man in the middle who terminates
TLS with a certificate of its own therefore fails the authentication on
both sides, before any disk data or metadata crosses, unless it holds the
key.  Python's ``ssl`` has no PSK support on 2.7 (nor before 3.13), so the
key file keys the channel this way instead.

Both ends read and write one connection from several threads (the
receiver's digest and refine threads send while its main thread reads).
OpenSSL does not promise that one SSL object may be used from two threads
at once, so every TLS connection is a :class:`SharedTLS`: its socket is
non-blocking, each SSL call runs under one lock, and a thread that must
wait (no data to read, a full send buffer) waits in ``poll`` without the
lock.  No thread ever blocks while holding it, so a reader waiting for
data cannot stop the writer whose data the peer needs before it answers.

A sender speaks TLS first.  A receiver peeks at the first byte of a
connection: 0x16 opens a TLS handshake; anything else is a plaintext
sender, accepted only when the receiver runs with ``--plaintext``, and
otherwise answered with a plaintext ERROR record naming the reason.
"""
from __future__ import absolute_import, division, print_function

import errno
import hashlib
import logging
import os
import select
import socket
import ssl
import subprocess
import tempfile
import threading
import time

from xen_remus_ext.errors import ResyncError
from xen_remus_ext.paths import state_dir
from xen_remus_ext.resync import protocol as P

LOG = logging.getLogger(__name__)

#: the certificate's subject (it names nothing: the key file authenticates)
SUBJECT = "/CN=xen-remus receiver"


def default_cert_path():
    return os.path.join(state_dir(), "tls", "receiver.pem")


def fingerprint(der):
    """SHA-256 of a DER certificate (raw bytes)."""
    return hashlib.sha256(der).digest()


def pretty(fp):
    return ":".join("%02X" % c for c in bytearray(fp))


def _errtext(exc):
    return getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)


def gen_cert(path):
    """Write a new self-signed EC P-256 certificate and its key to ``path``
    (one PEM file, mode 0600, replaced atomically).

    Only the default path's directory (:func:`default_cert_path`, inside the
    state directory) is created when missing: the directory of a path given
    by the administrator must exist, so a typo creates nothing.

    :returns: the certificate's SHA-256 fingerprint (bytes).
    :raises ResyncError: openssl missing or failing, ``path`` not writable,
        or its directory missing.
    """
    d = os.path.dirname(os.path.abspath(path))
    try:
        if not os.path.isdir(d):
            if os.path.abspath(path) != os.path.abspath(default_cert_path()):
                raise ResyncError("certificate %s: expected its directory %s to exist, found none; "
                                  "create it first (nothing was created)" % (path, d))
            os.makedirs(d, 0o700)
        tmp = tempfile.mkdtemp(prefix=".xre-cert-", dir=d)
    except (IOError, OSError) as exc:
        raise ResyncError("certificate %s: cannot create: %s" % (path, _errtext(exc)))
    key, crt = os.path.join(tmp, "key.pem"), os.path.join(tmp, "cert.pem")
    argv = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "36500", "-subj", SUBJECT, "-keyout", key, "-out", crt]
    try:
        try:
            p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except (IOError, OSError) as exc:
            raise ResyncError("certificate %s: cannot run openssl (%s); install the openssl package"
                              % (path, _errtext(exc)))
        _, err = p.communicate()
        if p.returncode != 0:
            raise ResyncError("certificate %s: openssl req failed: %s" % (path, err.decode("utf-8", "replace").strip()))
        with open(crt, "rb") as f:
            cert_pem = f.read()
        with open(key, "rb") as f:
            key_pem = f.read()
        out = path + ".tmp"
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, cert_pem + key_pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(out, path)
    except (IOError, OSError) as exc:
        raise ResyncError("certificate %s: cannot write: %s" % (path, _errtext(exc)))
    finally:
        for f in (key, crt):
            if os.path.exists(f):
                os.unlink(f)
        os.rmdir(tmp)
    return fingerprint(ssl.PEM_cert_to_DER_cert(cert_pem.decode("ascii")))


#: OpenSSL 3's SSL_OP_IGNORE_UNEXPECTED_EOF (Python 2.7 lacks the name)
_IGNORE_UNEXPECTED_EOF = 1 << 7


def _harden(ctx):
    """TLS 1.2 or newer, no TLS compression."""
    if hasattr(ssl, "TLSVersion"):                     # 3.7+
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # novm
    else:
        ctx.options |= ssl.OP_NO_SSLv2 | ssl.OP_NO_SSLv3 | ssl.OP_NO_TLSv1 | ssl.OP_NO_TLSv1_1
    ctx.options |= getattr(ssl, "OP_NO_COMPRESSION", 0)
    if ssl.OPENSSL_VERSION_INFO >= (3,):
        # a peer that closes without close_notify reads as end of stream (as
        # Python 3.10+ does itself); the protocol ends every conversation with
        # explicit records, so a truncated stream is still an error
        ctx.options |= getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", _IGNORE_UNEXPECTED_EOF)
    return ctx


class SharedTLS(object):
    """A TLS socket that several threads may use at once (see above).

    Offers what :class:`protocol.StreamChannel` uses of a socket:
    ``sendall``, ``recv_into`` (and ``recv``), ``pending``, ``fileno``,
    ``settimeout``, ``shutdown`` and ``close``.  A timeout (default none) bounds each wait
    for the peer, as on a blocking socket (``socket.timeout``).
    """

    def __init__(self, tls_sock):
        self._s = tls_sock
        self._lock = threading.Lock()
        self._timeout = tls_sock.gettimeout()
        tls_sock.setblocking(False)

    def fileno(self):
        return self._s.fileno()

    def settimeout(self, seconds):
        self._timeout = seconds

    def gettimeout(self):
        return self._timeout

    def getpeercert(self, binary_form=False):
        with self._lock:
            return self._s.getpeercert(binary_form)

    def pending(self):
        """Decrypted bytes already waiting inside the SSL object."""
        with self._lock:
            return self._s.pending()

    def _wait(self, want, deadline):
        """Wait (without the lock) until the socket can be read (``want`` is
        "read") or written; :raises socket.timeout: past ``deadline``."""
        p = select.poll()
        p.register(self._s.fileno(), select.POLLIN if want == "read" else select.POLLOUT)
        while True:
            left = None if deadline is None else deadline - time.time()
            if left is not None and left <= 0:
                raise socket.timeout("timed out waiting for the peer")
            try:
                if p.poll(None if left is None else int(left * 1000) + 1):
                    return
            except (IOError, OSError, select.error) as exc:
                if (getattr(exc, "errno", None) or exc.args[0]) != errno.EINTR:
                    raise

    def _deadline(self):
        return None if self._timeout is None else time.time() + self._timeout

    def sendall(self, data):
        view = memoryview(data)
        deadline = self._deadline()
        while len(view):
            with self._lock:
                try:
                    # after a short write OpenSSL wants the same bytes again: the
                    # view starts where it stopped until the whole record is out
                    n = self._s.send(view)
                    want = "write"            # 2.7 answers 0 for "would block"
                except ssl.SSLWantWriteError:
                    n, want = 0, "write"
                except ssl.SSLWantReadError:
                    n, want = 0, "read"
            if n:
                view = view[n:]
                deadline = self._deadline()
            else:
                self._wait(want, deadline)

    def recv_into(self, view, nbytes=None):
        deadline = self._deadline()
        while True:
            with self._lock:
                try:
                    return self._s.recv_into(view, nbytes)
                except ssl.SSLWantReadError:
                    want = "read"
                except ssl.SSLWantWriteError:
                    want = "write"
            self._wait(want, deadline)

    def recv(self, nbytes):
        buf = bytearray(nbytes)
        return bytes(buf[:self.recv_into(memoryview(buf), nbytes)])

    def shutdown(self, how):
        with self._lock:
            self._s.shutdown(how)

    def close(self):
        with self._lock:
            self._s.close()


class ServerTLS(object):
    """The receiver's TLS context and the fingerprint of its certificate.

    :param path: the PEM file (certificate and key); created when missing.
    :raises ResyncError: unreadable, or not a certificate and its key.
    """

    def __init__(self, path=None):
        self.path = path or default_cert_path()
        if not os.path.exists(self.path):
            fp = gen_cert(self.path)
            LOG.info("receiver: created TLS certificate %s (SHA-256 %s)", self.path, pretty(fp))
        try:
            with open(self.path, "rb") as f:
                pem = f.read().decode("ascii")
            start = pem.index("-----BEGIN CERTIFICATE-----")
            end = pem.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")
            self.fingerprint = fingerprint(ssl.PEM_cert_to_DER_cert(pem[start:end]))
            ctx = ssl.SSLContext(getattr(ssl, "PROTOCOL_TLS_SERVER", None) or ssl.PROTOCOL_SSLv23)
            ctx.load_cert_chain(self.path)
        except (IOError, OSError, ValueError, UnicodeDecodeError, ssl.SSLError) as exc:
            raise ResyncError("certificate %s: expected a PEM certificate and its key (xen-remus receive "
                              "--gen-cert makes one), got: %s" % (self.path, _errtext(exc)))
        self.ctx = _harden(ctx)

    def accept(self, conn, plaintext_ok, peer):
        """Start TLS on an accepted connection, or let a plaintext one through.

        :returns: ``(socket, binding)``: a :class:`SharedTLS` and the
            certificate's fingerprint, or the plain socket and ``b""`` for a
            plaintext sender.
        :raises ResyncError: a plaintext sender without ``plaintext_ok`` (told
            so in a plaintext ERROR record), or a failed TLS handshake.
        """
        try:
            first = conn.recv(1, socket.MSG_PEEK)
        except (IOError, OSError, socket.error) as exc:
            raise ResyncError("%s: connection lost before the handshake (%s)" % (peer, _errtext(exc)))
        if not first:
            raise ResyncError("%s: closed the connection before the handshake" % peer)
        if bytearray(first)[0] != P.TLS_HANDSHAKE:
            if plaintext_ok:
                return conn, b""
            msg = P.encode_json({"error": "this receiver accepts only TLS connections; the sender asked for "
                                          "plaintext (--plaintext, or a sender without TLS)"})
            try:
                conn.sendall(P.HEADER.pack(P.ERROR, 0, 0, len(msg)) + msg)
            except (IOError, OSError, socket.error):
                pass
            raise ResyncError("%s: refused a plaintext connection (start the receiver with --plaintext to "
                              "allow it)" % peer)
        try:
            return SharedTLS(self.ctx.wrap_socket(conn, server_side=True)), self.fingerprint
        except (IOError, OSError, socket.error, ssl.SSLError) as exc:
            raise ResyncError("%s: TLS handshake failed: %s" % (peer, _errtext(exc)))


def client_wrap(sock, describe):
    """Start TLS on a connected socket.

    :returns: ``(SharedTLS, fingerprint of the receiver's certificate)``.
    :raises ResyncError: the handshake failed (e.g. a receiver without TLS).
    """
    ctx = ssl.SSLContext(getattr(ssl, "PROTOCOL_TLS_CLIENT", None) or ssl.PROTOCOL_SSLv23)
    ctx.check_hostname = False  # novm (2.7.9+); the key file authenticates the certificate (see above)
    ctx.verify_mode = ssl.CERT_NONE
    _harden(ctx)
    try:
        tls = ctx.wrap_socket(sock)
        der = tls.getpeercert(binary_form=True)
    except (IOError, OSError, socket.error, ssl.SSLError) as exc:
        sock.close()
        raise ResyncError("%s: TLS handshake failed (%s); a receiver started with --plaintext, or one "
                          "without TLS, needs --plaintext on this side too" % (describe, _errtext(exc)))
    if not der:
        tls.close()
        raise ResyncError("%s: TLS handshake: the receiver showed no certificate" % describe)
    return SharedTLS(tls), fingerprint(der)
