"""The three processes of disk replication for ``xl remus`` (adapter).

What ``xen-remus replicate serve|relay|backup`` runs: the sockets they
listen on and the children they start, around :mod:`nbd`, :mod:`relay` and
:mod:`replica`.  Each returns the process's exit status.
"""
from __future__ import absolute_import, division, print_function

import binascii
import errno
import hmac
import json
import os
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time

from xen_remus_ext.errors import ReplicationError
from xen_remus_ext.replication import guard, wire
from xen_remus_ext.replication.nbd import CaptureDisk, NbdServer
from xen_remus_ext.replication.relay import BackupRelay, PrimaryRelay, kill_process
from xen_remus_ext.replication.replica import Replica


def parse_listen(spec, option="--nbd"):
    """``unix:PATH`` -> ("unix", PATH); ``tcp:HOST:PORT`` -> ("tcp", HOST, PORT).
    Errors name ``option`` and the value given."""
    if spec.startswith("unix:") and len(spec) > 5:
        return ("unix", spec[5:])
    if spec.startswith("tcp:") and spec.count(":") == 2:
        _, host, port = spec.split(":")
        if not host:
            raise ReplicationError("%s %s: no host (tcp:HOST:PORT)" % (option, spec))
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ReplicationError("%s %s: the port must be a number from 1 to 65535" % (option, spec))
        return ("tcp", host, int(port))
    raise ReplicationError("%s %s: expected unix:PATH or tcp:HOST:PORT" % (option, spec))


def _claim_unix_path(path, option):
    """Make ``path`` free for a new socket: nothing there, or a stale socket
    of this user's (nobody listening), which is removed.  Anything else (a
    file, a directory, a live server, another user's socket) is refused."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return
        raise ReplicationError("%s %s: %s" % (option, path, exc.strerror))
    if not stat.S_ISSOCK(st.st_mode):
        raise ReplicationError("%s %s: exists and is not a socket; refusing to replace it" % (option, path))
    if st.st_uid != os.geteuid():
        raise ReplicationError("%s %s: a socket of uid %d, not ours; refusing to replace it"
                               % (option, path, st.st_uid))
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(5)
    try:
        probe.connect(path)
    except (OSError, socket.error) as exc:
        if exc.errno == errno.ENOENT:
            return
        if exc.errno != errno.ECONNREFUSED:
            raise ReplicationError("%s %s: cannot tell whether a server listens there: %s"
                                   % (option, path, os.strerror(exc.errno) if exc.errno else exc))
    else:
        raise ReplicationError("%s %s: a server is listening there already" % (option, path))
    finally:
        probe.close()
    os.unlink(path)


class Listener(object):
    """A listening socket for ``unix:PATH`` or ``tcp:HOST:PORT``; a unix
    socket's path is removed again by :meth:`close` if it is still ours."""

    def __init__(self, spec, option="--nbd"):
        where = parse_listen(spec, option)
        self.path = self._ident = None
        if where[0] == "unix":
            path = where[1]
            _claim_unix_path(path, option)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(path)
                st = os.lstat(path)
            except (OSError, socket.error) as exc:
                sock.close()
                raise ReplicationError("%s %s: %s" % (option, spec, os.strerror(exc.errno) if exc.errno else exc))
            self.path, self._ident = path, (st.st_dev, st.st_ino)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(where[1:])
            except (OSError, socket.error) as exc:
                sock.close()
                raise ReplicationError("%s %s: %s" % (option, spec, os.strerror(exc.errno) if exc.errno else exc))
        sock.listen(8)
        self.sock = sock

    def remove(self):
        """Remove the socket's path if it is still the one we bound."""
        if self.path is None:
            return
        try:
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == self._ident:
                os.unlink(self.path)
        except OSError:
            pass
        self.path = None


def listen(spec, option="--nbd"):
    """A listening socket for ``unix:PATH`` or ``tcp:HOST:PORT`` (see :class:`Listener`)."""
    return Listener(spec, option).sock


def write_report(path, obj):
    """``obj`` as JSON in ``path``, atomically (None: nothing)."""
    if path:
        with open(path + ".tmp", "w") as f:
            json.dump(obj, f, sort_keys=True)
            f.write("\n")
        os.rename(path + ".tmp", path)


def serve(disk_path, nbd, control, name="xvda", ready_file=None, on_ready=None):
    """Serve ``disk_path`` over NBD on ``nbd`` until SIGTERM, SIGHUP or
    SIGINT; then the socket paths and the ready file are removed.
    ``on_ready()`` runs once both sockets listen, before the ready file."""
    disk = CaptureDisk(disk_path)
    made = []
    # a flag, not an Event: a handler that took the Event's lock while the
    # main thread held it (entering wait) would deadlock
    stop = []
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *a: stop.append(1))
    server = None
    try:
        made.append(Listener(nbd, "--nbd"))
        made.append(Listener("unix:" + control, "--control"))
        server = NbdServer(disk, made[0].sock, made[1].sock, name=name).start()
        if on_ready is not None:
            on_ready()
        if ready_file:
            open(ready_file, "w").close()
        sys.stderr.write("xen-remus replicate: serving %s (%d bytes) on %s, control %s\n"
                         % (disk_path, disk.size, nbd, control))
        try:
            while not stop:
                time.sleep(0.25)
        except KeyboardInterrupt:
            pass
    finally:
        if server is not None:
            server.stop()
        for lst in made:
            lst.sock.close()
            lst.remove()
        if ready_file and server is not None:
            try:
                os.unlink(ready_file)
            except OSError:
                pass
    return 0


def _median(values):
    values = sorted(values)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else round((values[mid - 1] + values[mid]) / 2, 6)


def summary(stats):
    """The relay's statistics in brief: counts, and per checkpoint after the
    first (the live pre-copy) the median and longest cut hold (added to the
    guest's suspension), window (first byte of the checkpoint to its
    CHECKPOINT record, as the relay reads them) and acknowledgement latency."""
    cuts = (stats.get("cuts") or [])[1:]
    lat = (stats.get("ack_latency") or [])[1:]
    holds = [c["hold"] for c in cuts]
    windows = [c["window"] for c in cuts if "window" in c]
    return {"checkpoints": stats.get("checkpoints"), "acks": stats.get("acks"),
            "writes": stats.get("writes"), "write_bytes": stats.get("write_bytes"),
            "stream_bytes": stats.get("stream_bytes"),
            "cut_hold_median": _median(holds), "cut_hold_max": max(holds or [0]),
            "window_median": _median(windows), "window_max": max(windows or [0]),
            "ack_latency_median": _median(lat), "ack_latency_max": max(lat or [0])}


def query_server(control_path, timeout=10.0):
    """Ask the disk server on ``control_path`` what it serves, without
    attaching: :returns: ``{"path": ..., "size": ...}``."""
    from xen_remus_ext.replication import wire
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(control_path)
        sock.sendall(wire.hello_frame({"query": True}))
        dec = wire.Decoder("disk server %s" % control_path)
        while True:
            data = sock.recv(65536)
            if not data:
                raise ReplicationError("disk server %s closed the connection before answering" % control_path)
            frames = dec.feed(data)
            if frames:
                break
    except (OSError, socket.error) as exc:
        raise ReplicationError("disk server control socket %s: %s"
                               % (control_path, os.strerror(exc.errno) if getattr(exc, "errno", None) else exc))
    finally:
        sock.close()
    ftype, body = frames[0]
    info = wire.parse_hello(body, "disk server %s" % control_path) if ftype == wire.HELLO else {}
    if not info.get("path"):
        raise ReplicationError("disk server %s: expected HELLO naming the served disk, got %s"
                               % (control_path, wire.NAMES.get(ftype, ftype)))
    return info


#: how long the backup's end may take to offer its TCP port, and to be connected
TCP_HANDOFF = 120.0
#: TCP_USER_TIMEOUT (Linux; not named in Python 2.7's socket module)
_TCP_USER_TIMEOUT = getattr(socket, "TCP_USER_TIMEOUT", 18)


def link_socket_options(sock, timeout):
    """A link socket: no Nagle delay for the cut and the ACKs, and the
    kernel gives up on unacknowledged data only after ``timeout`` seconds
    (TCP_USER_TIMEOUT), however short the host's tcp_retries2: a stalled
    peer is the relays' heartbeat's to judge."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, _TCP_USER_TIMEOUT, int(timeout * 1000))
    except (OSError, socket.error) as exc:
        sys.stderr.write("xen-remus replicate: TCP_USER_TIMEOUT not set: %s\n" % exc)


def _read_offer(fd, argv, deadline):
    """The backup end's HELLO offering its TCP port, read from its stdout."""
    dec = wire.Decoder("the backup's end (%s)" % " ".join(argv[:3]))
    while True:
        left = deadline - time.time()
        ready = select.select([fd], [], [], max(0.0, left))[0] if left > 0 else []
        if not ready:
            raise ReplicationError("the backup's end (%s) offered no TCP port in %d s"
                                   % (" ".join(argv[:3]), TCP_HANDOFF))
        data = os.read(fd, 65536)
        if not data:
            raise ReplicationError("the backup's end (%s) exited before offering its TCP port"
                                   % " ".join(argv[:3]))
        frames = dec.feed(data)
        if frames:
            ftype, body = frames[0]
            offer = wire.parse_hello(body, "the backup's end") if ftype == wire.HELLO else {}
            if not (offer.get("port") and offer.get("token")):
                raise ReplicationError("the backup's end sent %s, not its TCP port"
                                       % wire.NAMES.get(ftype, ftype))
            return offer


def connect_link(offer, host, timeout):
    """Connect to the backup's offered port (its address, or ``host`` when it
    listens on every address) and present the token."""
    addr = offer.get("addr") or host
    if addr in ("0.0.0.0", "::"):
        addr = host
    try:
        sock = socket.create_connection((addr, int(offer["port"])), TCP_HANDOFF)
    except (OSError, socket.error) as exc:
        raise ReplicationError("link to the backup at %s port %s: %s"
                               % (addr, offer["port"], getattr(exc, "strerror", None) or exc))
    sock.settimeout(None)
    link_socket_options(sock, timeout)
    sock.sendall(wire.hello_frame({"token": offer["token"]}))
    return sock


def relay(backup_argv, control_path, baseline="full", timeout=3.0, attached_file=None, report=None,
          link="ssh", host=None):
    """The primary relay on fds 0 (xl's stream) and 1 (toward xl); starts
    ``backup_argv`` (ssh to the backup running ``replicate backup``).  With
    ``link="tcp"`` that command only starts the backup's end, which offers a
    TCP port on its stdout; the link is then a TCP connection to it, and the
    command's own connection may break without ending replication."""
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    child = subprocess.Popen(backup_argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    sock = None
    control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        control.connect(control_path)
        if link == "tcp":
            sock = connect_link(_read_offer(child.stdout.fileno(), backup_argv, time.time() + TCP_HANDOFF),
                                host, timeout)
    except (OSError, socket.error, ReplicationError) as exc:
        child.kill()
        child.wait()
        control.close()
        if isinstance(exc, ReplicationError):
            raise
        raise ReplicationError("disk server control socket %s: %s" % (control_path, exc))
    link_in, link_out = ((sock.fileno(), sock.fileno()) if sock is not None
                         else (child.stdout.fileno(), child.stdin.fileno()))
    written = [0.0]

    def attached(info):
        if attached_file:
            open(attached_file, "w").close()

    def progress(stats):
        if report and time.time() - written[0] >= 1.0:
            written[0] = time.time()
            write_report(report, dict(summary(stats), running=True))

    primary = PrimaryRelay(0, 1, link_in, link_out, control,
                           baseline=baseline, beat=min(0.2, timeout / 5), on_attached=attached,
                           on_ack=progress)
    failure = None
    try:
        stats = primary.run()
    except (OSError, IOError) as exc:
        if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ETIMEDOUT):
            raise
        stats, failure = None, "the link to the backup's end broke (%s)" % os.strerror(exc.errno)
    except ReplicationError as exc:
        stats, failure = None, str(exc)
    finally:
        write_report(report, dict(primary.stats, summary=summary(primary.stats)))
        sys.stderr.write("xen-remus replicate relay: %s\n" % json.dumps(summary(primary.stats)))
        if sock is not None:
            sock.close()
        try:
            child.stdin.close()
        except (OSError, IOError):
            pass
    rc = child.wait()
    if failure is not None:
        if rc and sock is None:
            failure += "; the backup's end (%s) exited with status %d: see its stderr" % (
                " ".join(backup_argv[:3]), rc)
        raise ReplicationError(failure)
    return 0 if stats else 1


def _listen_address(listen):
    """``--listen-tcp``: the address ssh reached this host at
    (``SSH_CONNECTION``), else every address; ``listen`` is the port."""
    conn = os.environ.get("SSH_CONNECTION", "").split()
    return (conn[2] if len(conn) == 4 else "0.0.0.0", int(listen))


def accept_link(port, timeout, out_fd=1):
    """Listen on a TCP port, offer it (with a one-time token) as a HELLO on
    ``out_fd``, and accept the primary relay's connection that presents the
    token; others are closed.  :returns: the connected socket."""
    addr = _listen_address(port)
    lst = socket.socket(socket.AF_INET6 if ":" in addr[0] else socket.AF_INET, socket.SOCK_STREAM)
    try:
        lst.bind(addr)
    except (OSError, socket.error) as exc:
        lst.close()
        raise ReplicationError("backup: cannot listen on %s port %d: %s"
                               % (addr[0], addr[1], getattr(exc, "strerror", None) or exc))
    lst.listen(4)
    token = binascii.hexlify(os.urandom(16)).decode("ascii")
    write_all_fd(out_fd, wire.hello_frame({"addr": addr[0], "port": lst.getsockname()[1], "token": token}))
    deadline = time.time() + TCP_HANDOFF
    try:
        while True:
            left = deadline - time.time()
            if left <= 0:
                raise ReplicationError("backup: the primary relay did not connect to port %d in %d s"
                                       % (lst.getsockname()[1], TCP_HANDOFF))
            lst.settimeout(left)
            try:
                conn, peer = lst.accept()
            except socket.timeout:
                continue
            if _token_ok(conn, token, deadline):
                conn.settimeout(None)
                link_socket_options(conn, timeout)
                return conn
            sys.stderr.write("xen-remus replicate backup: %s did not present the token; closed\n" % (peer,))
            conn.close()
    finally:
        lst.close()


def _token_ok(conn, token, deadline):
    dec = wire.Decoder("primary relay")
    try:
        while True:
            conn.settimeout(max(0.1, min(10.0, deadline - time.time())))
            data = conn.recv(4096)
            if not data:
                return False
            frames = dec.feed(data)
            if frames:
                break
    except (OSError, socket.error, ReplicationError):
        return False
    ftype, body = frames[0]
    if ftype != wire.HELLO or len(frames) > 1:
        return False
    try:
        got = wire.parse_hello(body, "primary relay").get("token")
    except ReplicationError:
        return False
    return isinstance(got, type(token)) and hmac.compare_digest(got.encode("ascii"), token.encode("ascii"))


def write_all_fd(fd, data):
    from xen_remus_ext.replication.relay import write_all
    write_all(fd, data)


def _say(text):
    """stderr, which may be an ssh connection that is gone: never fatal."""
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except (OSError, IOError, ValueError):
        pass


def default_spool(disk):
    """Where the uncommitted epochs of ``disk`` wait: ``DISK.spool`` beside
    an image file; for a block device (``/dev/vg/lv``: beside it is
    devtmpfs, memory) ``STATE/replicate/NAME.spool``."""
    try:
        st = os.stat(disk)
    except OSError:
        return disk + ".spool"
    if stat.S_ISREG(st.st_mode):
        return disk + ".spool"
    from xen_remus_ext.paths import state_dir
    where = os.path.join(state_dir(), "replicate")
    if not os.path.isdir(where):
        os.makedirs(where, 0o700)
    name = "".join(c if c.isalnum() or c in "-_.@" else "_" for c in os.path.abspath(disk).strip("/"))
    return os.path.join(where, name + ".spool")


def backup(receiver_argv, disk, spool=None, timeout=3.0, report=None, snapshot=None, listen_tcp=None):
    """The backup relay on fds 0/1 (the link), running ``receiver_argv``
    (``xl migrate-receive -r``); exits as the receiver did, 1 on ABORT.
    With ``listen_tcp`` (a port, 0: any) the link is the TCP connection
    offered on fd 1 (:func:`accept_link`); fds 0 and 1 are then left alone
    and their end (ssh's connection broke) ends nothing.

    ``report`` is written after every committed checkpoint and at the end.
    The receiver is killed, never left to read an end of stream, if this
    process dies or fails (:mod:`guard`)."""
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    sock = None
    if listen_tcp is not None:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        sock = accept_link(listen_tcp, timeout)
    replica = Replica(disk, spool or default_spool(disk))
    try:
        child = subprocess.Popen(receiver_argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 preexec_fn=guard.die_with_parent)
    except (OSError, ValueError) as exc:
        replica.close()
        raise ReplicationError("backup: cannot start the receiver %s: %s"
                               % (receiver_argv[0], getattr(exc, "strerror", None) or exc))
    child_in = os.dup(child.stdin.fileno())       # the relay closes it at failover
    child.stdin.close()
    guard_pid = [guard.hold_open(child_in)]

    def end_guard():
        if guard_pid:
            err = guard.end(guard_pid.pop())
            if err:
                _say("xen-remus replicate backup: %s\n" % err)

    def at_failover(rep):
        if snapshot:
            shutil.copyfile(disk, snapshot)
        end_guard()                  # xl may now read the end of its stream

    def kill_receiver():
        kill_process(child.pid)()
        end_guard()

    link_in, link_out = (sock.fileno(), sock.fileno()) if sock is not None else (0, 1)
    relay_ = BackupRelay(link_in, link_out, child_in, child.stdout.fileno(), replica, timeout=timeout,
                         kill_child=kill_receiver, on_failover=at_failover,
                         on_commit=lambda rep: write_report(report, rep))
    try:
        rep = relay_.run()
    except BaseException:
        kill_receiver()              # no failover from a state this relay did not finish
        raise
    finally:
        replica.close()
        if sock is not None:
            sock.close()
    rc = child.wait()
    end_guard()
    rep["receiver_exit"] = rc
    write_report(report, rep)
    _say("xen-remus replicate backup: %s\n" % json.dumps(rep, sort_keys=True))
    if rep.get("aborted"):
        return 1
    return rc
