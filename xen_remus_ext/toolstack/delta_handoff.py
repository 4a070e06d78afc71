"""The final delta's hand-over from xend's migration hook to the failback.

On xend the final disk delta goes at device-migrate step 2, from xend's
``external-migration-tool`` (or the blktap override), while the domain is
suspended.  Opening the delta's transport there (ssh, the remote
``xen-remus receive`` starting, the handshake) took most of the suspend
window.  So the failback process, which waits in ``xm migrate`` meanwhile,
opens those connections before the migration and serves a Unix socket
(:class:`Server`, ``STATE/hook/DOM@HOST.delta.sock``) for the duration;
the hook asks it (:func:`request`) to send the delta over them, and only
when nobody answers there does it open connections itself.

Wire: the hook sends one line ``final-delta DOM HOST``; the server answers
one JSON line, ``{"ok": true, "delta": {...}}`` or ``{"ok": false,
"error": "..."}``, then closes.
"""
from __future__ import absolute_import, division, print_function

import errno
import json
import logging
import os
import socket
import threading

from xen_remus_ext.compat import to_bytes, to_text
from xen_remus_ext.errors import FailbackError, XenRemusError
from xen_remus_ext.paths import state_dir

LOG = logging.getLogger(__name__)

#: longest request line read
MAX_LINE = 4096


def _safe(name):
    return "".join(c if c.isalnum() or c in "-_.@" else "_" for c in name)


def socket_path(domname, host, base=None):
    return os.path.join(base or state_dir(), "hook", "%s@%s.delta.sock" % (_safe(domname), _safe(host)))


class HandoffLost(XenRemusError):
    """The server took the request and closed without an answer."""


def _read_line(sock):
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        buf += chunk
        if len(buf) > MAX_LINE * 16:
            break
    return buf


class Server(object):
    """Serves ``send()`` to the hook while the migration runs.

    :param send: callable returning the journal's delta record; raising
        :class:`XenRemusError` when the delta could not go
    """

    def __init__(self, domname, host, send, base=None):
        self.domname = domname
        self.host = host
        self.send = send
        self.path = socket_path(domname, host, base)
        self.sock = None
        self.thread = None
        self.stopping = False
        self.served = 0

    def __enter__(self):
        d = os.path.dirname(self.path)
        if not os.path.isdir(d):
            os.makedirs(d, 0o700)
        if os.path.exists(self.path):
            os.unlink(self.path)    # a killed run's; a live one would hold the journal's lock
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(self.path)
        os.chmod(self.path, 0o600)
        sock.listen(4)
        sock.settimeout(0.2)
        self.sock = sock
        self.thread = threading.Thread(target=self._loop, name="xre-delta-handoff")
        self.thread.daemon = True
        self.thread.start()
        LOG.info("%s: final delta served to the migration hook at %s", self.domname, self.path)
        return self

    def __exit__(self, *exc):
        self.stopping = True
        if self.thread is not None:
            self.thread.join(5)
        try:
            os.unlink(self.path)
        except OSError:
            pass
        if self.sock is not None:
            self.sock.close()
        return False

    def _loop(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except (socket.error, OSError):
                if self.stopping:
                    return
                continue
            try:
                self._one(conn)
            finally:
                conn.close()

    def _one(self, conn):
        conn.settimeout(30)
        try:
            words = to_text(_read_line(conn)).split()
        except (socket.error, OSError, UnicodeDecodeError) as exc:
            LOG.warning("%s: migration hook request unreadable: %s", self.domname, exc)
            return
        if words != ["final-delta", self.domname, self.host]:
            reply = {"ok": False, "error": "expected 'final-delta %s %s', got %r"
                     % (self.domname, self.host, " ".join(words)[:200])}
        else:
            try:
                reply = {"ok": True, "delta": self.send()}
                self.served += 1
            except XenRemusError as exc:
                reply = {"ok": False, "error": str(exc)}
            except Exception as exc:  # the thread's boundary: the hook must hear of it, not hang
                LOG.error("%s: final delta for the migration hook failed", self.domname, exc_info=True)
                reply = {"ok": False, "error": "%s: %s" % (type(exc).__name__, exc)}
        conn.settimeout(None)
        try:
            conn.sendall(to_bytes(json.dumps(reply)) + b"\n")
        except (socket.error, OSError) as exc:
            LOG.warning("%s: could not answer the migration hook: %s", self.domname, exc)


def request(domname, host, base=None):
    """Ask the failback process to send ``domname``'s final delta.

    :returns: its delta record, or None when no failback process serves one
        here (the caller then sends by itself)
    :raises FailbackError: it tried and the delta could not go
    :raises HandoffLost: it took the request and ended without an answer
        (the journal then says whether the delta went)
    """
    path = socket_path(domname, host, base)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            sock.connect(path)
        except (socket.error, OSError) as exc:
            if exc.errno in (errno.ENOENT, errno.ECONNREFUSED):
                return None
            raise
        sock.sendall(to_bytes("final-delta %s %s\n" % (domname, host)))
        line = _read_line(sock)
    except (socket.error, OSError) as exc:
        raise HandoffLost("%s: the failback process's final-delta socket %s: %s" % (domname, path, exc))
    finally:
        sock.close()
    if not line.endswith(b"\n"):
        raise HandoffLost("%s: the failback process closed %s without an answer" % (domname, path))
    try:
        reply = json.loads(to_text(line))
    except ValueError:
        raise HandoffLost("%s: the failback process answered %r on %s" % (domname, line[:200], path))
    if not reply.get("ok"):
        raise FailbackError("%s: final disk delta (sent by the failback process): %s"
                            % (domname, reply.get("error")), step="final-delta")
    return reply.get("delta")
