"""Transports: where a resync destination lives and how to reach its receiver.

``DEST`` forms (see docs/protocol.md):

- a local path: a :class:`receiver.Receiver` runs in a thread of this
  process, joined by :func:`protocol.local_pair`;
- ``HOST:PATH``: ``SSH... HOST xen-remus receive --stdio PATH`` through a
  pipe (``SSH`` is split like a shell would, as ``xl migrate -s``; the remote
  command can be replaced with ``$XEN_REMUS_REMOTE_CMD`` for tests);
- ``tcp://HOST:PORT/EXPORT``: a :class:`ResyncServer` (``xen-remus receive
  --listen``), authenticated with the shared key file.
"""
from __future__ import absolute_import, division, print_function

import logging
import os
import re
import select
import shlex
import socket
import subprocess
import sys
import threading
import time

from six.moves import shlex_quote

from xen_remus_ext.errors import ResyncError, XenRemusError
from xen_remus_ext.resync import protocol as P
from xen_remus_ext.resync import tls
from xen_remus_ext.resync.protocol import read_key_file
from xen_remus_ext.resync.receiver import Receiver

LOG = logging.getLogger(__name__)

_TCP = re.compile(r"^tcp://(\[[^\]]+\]|[^:/]+):(\d+)/([^/]+)$")


def parse_dest(dest):
    """:returns: ``("local", path)``, ``("ssh", host, path)`` or ``("tcp", host, port, export)``."""
    if dest.startswith("tcp://"):
        m = _TCP.match(dest)
        if not m:
            raise ResyncError("destination %r: expected tcp://HOST:PORT/EXPORT" % dest)
        return ("tcp", m.group(1).strip("[]"), int(m.group(2)), m.group(3))
    if dest.startswith("["):                     # [IPv6]:PATH
        host, sep, path = dest[1:].partition("]:")
        if not sep or not host or not path or "]" in host:
            raise ResyncError("destination %r: expected [ADDRESS]:PATH" % dest)
        return ("ssh", host, path)
    if ":" in dest and not dest.startswith("/") and not dest.startswith("."):
        host, path = dest.split(":", 1)
        if host and path:
            return ("ssh", host, path)
    return ("local", dest)


#: a TCP peer that acknowledges nothing for this long is dead (link cut,
#: host gone): keepalive probes while idle, TCP_USER_TIMEOUT while sending
DEAD_PEER_SECONDS = 30
#: a TCP sender must have authenticated within this many seconds of connecting
HANDSHAKE_SECONDS = 30
#: an authenticated TCP session in which nothing moved either way for this
#: long is dropped (its target stays inconsistent, its lock is released)
IDLE_SECONDS = 120
#: connections not yet authenticated, at most, in all and from one address
MAX_PREAUTH = 64
MAX_PREAUTH_PER_ADDRESS = 8
#: after accept() fails (EMFILE, ENFILE, ENOBUFS...): wait this long, doubling up to the maximum
ACCEPT_BACKOFF = (0.05, 2.0)
#: how often the listener checks deadlines
SWEEP_SECONDS = 0.25
_TCP_USER_TIMEOUT = getattr(socket, "TCP_USER_TIMEOUT", 18)


def tune_socket(sock):
    """TCP_NODELAY, and give up on a silent peer after :data:`DEAD_PEER_SECONDS`
    instead of blocking forever (and holding the target's lock)."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 4)):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, _TCP_USER_TIMEOUT, DEAD_PEER_SECONDS * 1000)
    except (IOError, OSError, socket.error):
        pass


def parse_listen(listen):
    """``"ADDR:PORT"`` (``[ADDR]:PORT`` for IPv6; no ADDR: 127.0.0.1) -> ``(addr, port)``.

    :raises ResyncError: no port, or a port outside 0-65535.
    """
    if isinstance(listen, tuple):
        return listen
    host, _, port = listen.rpartition(":")
    try:
        value = int(port)
    except ValueError:
        raise ResyncError("listen address %r: expected ADDR:PORT" % (listen,))
    if not 0 <= value <= 65535:
        raise ResyncError("listen address %r: expected a port from 0 to 65535, got %d" % (listen, value))
    return (host.strip("[]") or "127.0.0.1", value)


class Connection(object):
    """A channel to a receiver plus what must be cleaned up afterwards."""

    def __init__(self, chan, export, describe, cleanup=None, key=None, proc=None, binding=b""):
        self.chan = chan
        #: under TLS, the fingerprint of the receiver's certificate (authenticated with the key)
        self.binding = binding
        self.export = export
        self.describe = describe
        self.key = key
        self.proc = proc
        self._cleanup = cleanup

    def failure_hint(self):
        """A sentence explaining a lost connection (an ssh that exited), or None."""
        if self.proc is None:
            return None
        try:
            self.proc.stdin.close()
        except (IOError, OSError):
            pass
        for _ in range(50):
            if self.proc.poll() is not None:
                return "the %s (%s) exited with status %d" % (self.proc.label, " ".join(self.proc.args_shown),
                                                              self.proc.returncode)
            threading.Event().wait(0.02)
        return None

    def close(self):
        self.chan.close()
        if self._cleanup is not None:
            self._cleanup()
            self._cleanup = None


def connect(dest, ssh="ssh", key_file=None, local_process=False, plaintext=False):
    """Open a :class:`Connection` to the receiver of ``dest`` (no handshake yet).

    :param local_process: for a local ``dest``, run the receiver as a child
        process (``python -m xen_remus_ext receive --stdio``) instead of a
        thread: both ends then hash on their own core, which is what
        checksum and verify want; full and tracked prefer the thread, whose
        channel hands the data over without copying it.
    :param plaintext: a ``tcp://`` destination without TLS (the receiver
        must allow it with ``--plaintext``).
    """
    kind = parse_dest(dest)
    if kind[0] == "local":
        if local_process and sys.executable:     # (empty in some embedded interpreters)
            # -q: the sender reports the receiver's errors; no second copy on stderr
            argv = [sys.executable, "-m", "xen_remus_ext", "-q", "receive", "--stdio", kind[1]]
            return _connect_pipe(argv, kind[1], "local receiver")
        return _connect_local(kind[1])
    if kind[0] == "ssh":
        return _connect_ssh(kind[1], kind[2], ssh)
    key = read_key_file(key_file) if key_file else None
    if key is None:
        raise ResyncError("destination %s: a TCP receiver needs --key KEYFILE" % dest)
    host, port, export = kind[1:]
    try:
        sock = socket.create_connection((host, port), timeout=30)
    except (IOError, OSError, socket.error) as exc:
        raise ResyncError("destination %s: cannot connect: %s" % (dest, getattr(exc, "strerror", None) or exc))
    tune_socket(sock)
    binding = b""
    if not plaintext:
        sock, binding = tls.client_wrap(sock, dest)    # within the connect timeout
    sock.settimeout(None)
    return Connection(P.StreamChannel(sock=sock, peer="receiver %s:%d" % (host, port)), export, dest, key=key,
                      binding=binding)


def _connect_local(path):
    s_end, r_end = P.local_pair()
    recv = Receiver(r_end, {"": path})
    errors = []

    def serve():
        try:
            recv.run()
        except XenRemusError as exc:
            errors.append(exc)
        except Exception:      # a bug of ours; the sender was told, the traceback goes to the log
            LOG.exception("local receiver of %s failed", path)

    t = threading.Thread(target=serve, name="xre-local-receiver")
    t.daemon = True
    t.start()

    def cleanup():
        t.join()
    return Connection(s_end, "", path, cleanup)


def remote_command():
    cmd = os.environ.get("XEN_REMUS_REMOTE_CMD")
    return shlex.split(cmd) if cmd else ["xen-remus"]


def split_ssh(ssh):
    """``-s SSHCMD`` split like a shell would.

    :raises ResyncError: unbalanced quotes, or no command at all (ssh would
        otherwise run the host name as the command).
    """
    try:
        words = shlex.split(ssh)
    except ValueError as exc:
        raise ResyncError("ssh command %r: expected shell words, got %s" % (ssh, exc))
    if not words:
        raise ResyncError("ssh command: expected a command (e.g. ssh), got an empty one")
    return words


def check_host(host):
    """:returns: ``host``.

    :raises ResyncError: empty, or starting with ``-`` (ssh would take it for
        an option such as ``-oProxyCommand=...``, a command run here).
    """
    if not host or host.startswith("-") or any(c.isspace() for c in host):
        raise ResyncError("host %r: expected a host name or address (not empty, no leading '-', no spaces)"
                          % (host,))
    return host


def ssh_prefix(ssh, host):
    """``SSH... -- HOST``: the argv that runs words on ``host`` (the ``--``
    ends ssh's options, so that nothing after it is read as one)."""
    return split_ssh(ssh) + ["--", check_host(host)]


def remote_argv(ssh, host, words):
    """``SSH... -- HOST WORD...``: ``words`` run on ``host``, each shell-quoted
    because ssh joins them into one line for the remote shell."""
    return ssh_prefix(ssh, host) + [shlex_quote(w) for w in words]


def ssh_argv(ssh, host, path):
    """argv of the ssh receiver: ``SSH... -- HOST xen-remus receive --stdio PATH``."""
    return remote_argv(ssh, host, remote_command() + ["receive", "--stdio", path])


def _connect_ssh(host, path, ssh):
    return _connect_pipe(ssh_argv(ssh, host, path), "%s:%s" % (host, path), "receiver %s" % host)


def _connect_pipe(argv, describe, peer):
    LOG.debug("starting receiver: %s", argv)
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0, close_fds=True)
    except (IOError, OSError) as exc:
        raise ResyncError("%s: cannot start %r: %s" % (describe, argv[0], getattr(exc, "strerror", None) or exc))
    chan = P.StreamChannel(rfd=proc.stdout.fileno(), wfd=proc.stdin.fileno(), peer=peer)

    def cleanup():
        for f in (proc.stdin, proc.stdout):
            try:
                f.close()
            except (IOError, OSError):
                pass
        proc.wait()
    proc.args_shown = argv
    proc.label = "local receiver" if peer == "local receiver" else "remote receiver"
    return Connection(chan, "", describe, cleanup, proc=proc)


class _Watched(object):
    """A connection the listener keeps an eye on: its pre-authentication
    deadline, then its channel's last activity.  ``dup`` is a duplicate of
    its socket (the fd stays ours until the handler ends), through which the
    listener can shut the connection down from its own thread."""

    __slots__ = ("peer", "dup", "deadline", "chan", "authenticated", "dropped")

    def __init__(self, peer, dup, deadline):
        self.peer = peer
        self.dup = dup
        self.deadline = deadline
        self.chan = None
        self.authenticated = False
        self.dropped = False


class ResyncServer(object):
    """``xen-remus receive --listen``: a TCP receiver for named exports.

    :param listen: ``"ADDR:PORT"`` or ``(addr, port)``; port 0 picks one
        (read it back from :attr:`address`).
    :param key_file: root-only key file shared with the senders.
    :param exports: dict ``name -> path``.
    :param cert: the TLS certificate file (default :func:`tls.default_cert_path`;
        created when missing).
    :param plaintext: also accept senders without TLS.
    :param handshake_seconds: a sender must be authenticated this soon after
        connecting (a deadline, however slowly it trickles bytes).
    :param idle_seconds: an authenticated session with no record moving
        either way for this long is dropped.
    :param max_preauth: connections still authenticating, at most (and
        ``max_preauth_per_address`` from one address); more are closed at once.

    Lifecycle: constructed = bound and listening; :meth:`serve_forever`
    (or :meth:`start` for a background thread) accepts connections, one
    thread each; :meth:`stop` closes the listener and waits for the loop.
    """

    def __init__(self, listen, key_file, exports, cert=None, plaintext=False, handshake_seconds=HANDSHAKE_SECONDS,
                 idle_seconds=IDLE_SECONDS, max_preauth=MAX_PREAUTH, max_preauth_per_address=MAX_PREAUTH_PER_ADDRESS):
        self.key = read_key_file(key_file)
        self.exports = dict(exports)
        if not self.exports:
            raise ResyncError("receiver: expected at least one --export NAME=PATH, got none")
        self.tls = tls.ServerTLS(cert)
        self.plaintext = plaintext
        self.handshake_seconds = handshake_seconds
        self.idle_seconds = idle_seconds
        self.max_preauth = max_preauth
        self.max_preauth_per_address = max_preauth_per_address
        host, port = parse_listen(listen)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
        except (IOError, OSError, socket.error) as exc:
            self.sock.close()
            raise ResyncError("receiver: cannot listen on %s:%d: %s"
                              % (host, port, getattr(exc, "strerror", None) or exc))
        self.sock.listen(16)
        self.address = self.sock.getsockname()[:2]
        self._stopping = False
        self._thread = None
        self._rpipe, self._wpipe = os.pipe()
        self.sessions = 0
        self.refused = 0           # connections closed at once (too many still authenticating)
        self.dropped = 0           # connections closed by a deadline
        self._watched = {}
        self._wlock = threading.Lock()

    def serve_forever(self):
        backoff = 0.0
        try:
            while not self._stopping:
                ready = select.select([self.sock, self._rpipe], [], [], SWEEP_SECONDS)[0]
                self._sweep(time.time())
                if self._rpipe in ready or self._stopping:
                    break
                if self.sock not in ready:
                    continue
                try:
                    conn, peer = self.sock.accept()
                except (IOError, OSError, socket.error) as exc:
                    backoff = self._back_off(backoff, exc)
                    if backoff is None:
                        break
                    continue
                try:
                    dup = socket.fromfd(conn.fileno(), conn.family, conn.type)
                except (IOError, OSError, socket.error) as exc:
                    conn.close()
                    backoff = self._back_off(backoff, exc)
                    if backoff is None:
                        break
                    continue
                backoff = 0.0
                watched = self._admit(conn, peer, dup)
                if watched is None:
                    continue
                conn.settimeout(None)
                tune_socket(conn)
                t = threading.Thread(target=self._handle, args=(conn, peer, watched),
                                     name="xre-recv-%s" % (peer[1],))
                t.daemon = True
                t.start()
        finally:
            self.sock.close()
            os.close(self._rpipe)

    def _back_off(self, backoff, exc):
        """accept() failed (out of descriptors, buffers...): wait before the
        next try instead of spinning on a listener that stays readable.
        :returns: the next wait, or None when :meth:`stop` was called meanwhile."""
        if not backoff:
            LOG.warning("receiver: cannot accept a connection (%s); backing off",
                        getattr(exc, "strerror", None) or exc)
        backoff = min(ACCEPT_BACKOFF[1], max(ACCEPT_BACKOFF[0], backoff * 2))
        if select.select([self._rpipe], [], [], backoff)[0]:
            return None
        return backoff

    def _admit(self, conn, peer, dup):
        """Register a new connection, or close it at once when too many are
        still authenticating (in all, or from its address).  :returns: its
        :class:`_Watched` or None."""
        with self._wlock:
            pending = [w for w in self._watched.values() if not w.authenticated]
            same = sum(1 for w in pending if w.peer[0] == peer[0])
            if len(pending) >= self.max_preauth or same >= self.max_preauth_per_address:
                self.refused += 1
                refuse = True
            else:
                refuse = False
                watched = _Watched(peer, dup, time.time() + self.handshake_seconds)
                self._watched[id(watched)] = watched
        if refuse:
            if self.refused in (1, 10, 100) or self.refused % 1000 == 0:
                LOG.warning("receiver: %d connection(s) refused: too many still authenticating "
                            "(%d in all, %d from %s)", self.refused, len(pending), same, peer[0])
            for s in (conn, dup):
                s.close()
            return None
        return watched

    def _sweep(self, now):
        """Shut down connections past their deadline (authentication, or silence)."""
        with self._wlock:
            items = list(self._watched.values())
        for w in items:
            if w.dropped:
                continue
            if not w.authenticated and now > w.deadline:
                why = "not authenticated within %g s" % self.handshake_seconds
            elif w.authenticated and w.chan is not None and now - w.chan.last_activity > self.idle_seconds:
                why = "silent for %g s; the session is dropped, its target left inconsistent" % self.idle_seconds
            else:
                continue
            w.dropped = True
            self.dropped += 1
            LOG.warning("receiver: sender %s:%d: %s", w.peer[0], w.peer[1], why)
            try:
                w.dup.shutdown(socket.SHUT_RDWR)      # wakes the handler's blocked recv or send
            except (IOError, OSError, socket.error):
                pass

    def _handle(self, conn, peer, watched):
        self.sessions += 1
        conn.settimeout(self.handshake_seconds)      # and the listener enforces the whole deadline
        LOG.info("receive session start: sender %s:%d", peer[0], peer[1])
        try:
            try:
                sock, binding = self.tls.accept(conn, self.plaintext, "sender %s:%d" % peer[:2])
            except ResyncError as exc:
                LOG.warning("receiver: %s", exc)
                conn.close()
                return
            chan = P.StreamChannel(sock=sock, peer="sender %s:%d" % peer[:2])
            watched.chan = chan

            def authenticated():
                sock.settimeout(None)
                chan.last_activity = time.time()
                watched.authenticated = True
            try:
                Receiver(chan, self.exports, key=self.key, after_handshake=authenticated, binding=binding).run()
            except XenRemusError as exc:      # the receiver logged it as a warning already
                LOG.info("receive session end: sender %s:%d: failed: %s", peer[0], peer[1], exc)
            except Exception:      # a bug of ours; the sender was told, the traceback goes to the log
                LOG.exception("receiver: connection from %s:%d failed", peer[0], peer[1])
            else:
                LOG.info("receive session end: sender %s:%d: ok", peer[0], peer[1])
        finally:
            with self._wlock:
                self._watched.pop(id(watched), None)
            watched.dup.close()

    def start(self):
        self._thread = threading.Thread(target=self.serve_forever, name="xre-server")
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self):
        self._stopping = True
        try:
            os.write(self._wpipe, b"x")
        finally:
            if self._thread is not None:
                self._thread.join()
            os.close(self._wpipe)
