"""The three processes of disk replication for ``xl remus`` (adapter).

What ``xen-remus replicate serve|relay|backup`` runs: the sockets they
listen on and the children they start, around :mod:`nbd`, :mod:`relay` and
:mod:`replica`.  Each returns the process's exit status.
"""
from __future__ import absolute_import, division, print_function

import ctypes
import ctypes.util
import errno
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time

from xen_remus_ext.errors import ReplicationError
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


def serve(disk_path, nbd, control, name="xvda", ready_file=None):
    """Serve ``disk_path`` over NBD on ``nbd`` until SIGTERM, SIGHUP or
    SIGINT; then the socket paths and the ready file are removed."""
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


def summary(stats):
    cuts = stats.get("cuts") or []
    lat = stats.get("ack_latency") or []
    return {"checkpoints": stats.get("checkpoints"), "acks": stats.get("acks"),
            "writes": stats.get("writes"), "write_bytes": stats.get("write_bytes"),
            "stream_bytes": stats.get("stream_bytes"),
            "cut_hold_max": max([c["hold"] for c in cuts] or [0]),
            "ack_latency_max": max(lat or [0])}


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


def relay(backup_argv, control_path, baseline="full", timeout=3.0, attached_file=None, report=None):
    """The primary relay on fds 0 (xl's stream) and 1 (toward xl); starts
    ``backup_argv`` (ssh to the backup running ``replicate backup``)."""
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    child = subprocess.Popen(backup_argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        control.connect(control_path)
    except (OSError, socket.error) as exc:
        child.kill()
        child.wait()
        raise ReplicationError("disk server control socket %s: %s" % (control_path, exc))

    def attached(info):
        if attached_file:
            open(attached_file, "w").close()

    primary = PrimaryRelay(0, 1, child.stdout.fileno(), child.stdin.fileno(), control,
                           baseline=baseline, beat=min(0.2, timeout / 5), on_attached=attached)
    failure = None
    try:
        stats = primary.run()
    except (OSError, IOError) as exc:
        if exc.errno not in (errno.EPIPE, errno.ECONNRESET):
            raise
        stats, failure = None, "the link to the backup's end broke (%s)" % os.strerror(exc.errno)
    except ReplicationError as exc:
        stats, failure = None, str(exc)
    finally:
        write_report(report, primary.stats)
        sys.stderr.write("xen-remus replicate relay: %s\n" % json.dumps(summary(primary.stats)))
        try:
            child.stdin.close()
        except (OSError, IOError):
            pass
    rc = child.wait()
    if failure is not None:
        if rc:
            failure += "; the backup's end (%s) exited with status %d: see its stderr" % (
                " ".join(backup_argv[:3]), rc)
        raise ReplicationError(failure)
    return 0 if stats else 1


_PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """In the receiver's child: SIGKILL when the backup relay dies.  A relay
    that crashed between applying epoch N and handing CHECKPOINT_END N over
    must not leave a receiver that reads end-of-stream and resumes the guest
    from N-1 on disk N."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        os._exit(127)


def backup(receiver_argv, disk, spool=None, timeout=3.0, report=None, snapshot=None):
    """The backup relay on fds 0/1 (the link), running ``receiver_argv``
    (``xl migrate-receive -r``); exits as the receiver did, 1 on ABORT."""
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    replica = Replica(disk, spool or disk + ".spool")
    try:
        child = subprocess.Popen(receiver_argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 preexec_fn=_die_with_parent)
    except (OSError, ValueError) as exc:
        replica.close()
        raise ReplicationError("backup: cannot start the receiver %s: %s"
                               % (receiver_argv[0], getattr(exc, "strerror", None) or exc))
    child_in = os.dup(child.stdin.fileno())       # the relay closes it at failover
    child.stdin.close()

    def keep_copy(rep):
        if snapshot:
            shutil.copyfile(disk, snapshot)

    relay_ = BackupRelay(0, 1, child_in, child.stdout.fileno(), replica, timeout=timeout,
                         kill_child=kill_process(child.pid), on_failover=keep_copy)
    try:
        rep = relay_.run()
    finally:
        replica.close()
    rc = child.wait()
    rep["receiver_exit"] = rc
    write_report(report, rep)
    sys.stderr.write("xen-remus replicate backup: %s\n" % json.dumps(rep, sort_keys=True))
    if rep.get("aborted"):
        return 1
    return rc
